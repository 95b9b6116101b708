//! docker-compose.yml and Dockerfile, checked as far as possible without a container engine:
//! the YAML parses (PyYAML, an independent parser), builds name Dockerfiles that exist, every
//! `polos` command is a real subcommand, every example entrypoint is an example that exists and
//! is copied into the image.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use serde_json::Value;

use crate::common::python::pyyaml;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// docker-compose.yml as JSON, read by PyYAML (merge keys `<<:` resolved).
fn compose() -> Value {
    let out = std::process::Command::new("python3")
        .args([
            "-c",
            "import json, sys, yaml; json.dump(yaml.safe_load(open(sys.argv[1])), sys.stdout)",
        ])
        .arg(root().join("docker-compose.yml"))
        .env("PYTHONPATH", pyyaml())
        .env("PYTHONDONTWRITEBYTECODE", "1")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "docker-compose.yml does not parse: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

fn strings(v: &Value) -> Vec<String> {
    match v {
        Value::String(s) => s.split_whitespace().map(String::from).collect(),
        Value::Array(a) => a.iter().map(|x| x.as_str().unwrap().to_string()).collect(),
        other => panic!("expected a string or list, got {other}"),
    }
}

/// The example programs in examples/ (`examples/<name>.rs`).
fn examples() -> BTreeSet<String> {
    std::fs::read_dir(root().join("examples"))
        .unwrap()
        .filter_map(|e| {
            let name = e.unwrap().file_name().into_string().unwrap();
            name.strip_suffix(".rs").map(String::from)
        })
        .collect()
}

/// The Dockerfile(s) `build:` names, relative to the repository root.
fn dockerfile_of(build: &Value) -> PathBuf {
    match build {
        Value::String(context) => Path::new(context).join("Dockerfile"),
        Value::Object(b) => {
            let context = b.get("context").and_then(Value::as_str).unwrap_or(".");
            let file = b
                .get("dockerfile")
                .and_then(Value::as_str)
                .unwrap_or("Dockerfile");
            Path::new(context).join(file)
        }
        other => panic!("unexpected build: {other}"),
    }
}

/// Example binaries the Dockerfile copies out of the build stage: `(name, destination)`.
fn copied_examples(dockerfile: &str) -> Vec<(String, String)> {
    dockerfile
        .lines()
        .filter(|l| l.trim_start().starts_with("COPY --from=build"))
        .filter_map(|l| {
            let parts: Vec<&str> = l.split_whitespace().collect();
            let src = parts.get(2)?;
            let name = src.split("/examples/").nth(1)?;
            Some((name.to_string(), parts.last()?.to_string()))
        })
        .collect()
}

#[test]
fn compose_services_use_real_commands_and_examples() {
    let compose = compose();
    let services = compose["services"].as_object().expect("services");
    let dockerfile_text = std::fs::read_to_string(root().join("Dockerfile")).unwrap();
    let copied = copied_examples(&dockerfile_text);
    let examples = examples();

    // Every example the Dockerfile copies exists, and the build stage builds examples.
    assert!(!copied.is_empty(), "the Dockerfile copies no example");
    for (name, dest) in &copied {
        assert!(
            examples.contains(name),
            "Dockerfile copies examples/{name}, which does not exist"
        );
        assert_eq!(
            dest,
            &format!("/usr/local/bin/{name}"),
            "{name} lands off PATH"
        );
    }
    assert!(
        dockerfile_text.contains("--examples"),
        "the build stage must build the examples"
    );
    assert!(dockerfile_text
        .contains("COPY --from=build /src/target/release/polos /usr/local/bin/polos"));
    let ignore = std::fs::read_to_string(root().join(".dockerignore")).unwrap_or_default();
    assert!(
        ignore
            .lines()
            .any(|l| l.trim().trim_matches('/') == "target"),
        ".dockerignore must keep target/ out of the build context"
    );

    let nats = &services["nats"];
    let image = nats["image"].as_str().unwrap();
    assert!(
        image.starts_with(&format!("nats:{}", polos::nats::server::PINNED_VERSION)),
        "nats image {image} is not the pinned version"
    );
    assert!(
        strings(&nats["command"]).contains(&"-js".to_string()),
        "nats without JetStream"
    );

    let mut polos_services = 0;
    for (name, service) in services {
        if let Some(build) = service.get("build") {
            let file = dockerfile_of(build);
            assert!(
                root().join(&file).is_file(),
                "{name}: build file {} missing",
                file.display()
            );
        }
        if let Some(deps) = service.get("depends_on") {
            let deps: Vec<String> = match deps {
                Value::Object(m) => m.keys().cloned().collect(),
                other => strings(other),
            };
            for dep in deps {
                assert!(
                    services.contains_key(&dep),
                    "{name} depends on unknown service {dep}"
                );
            }
        }
        let is_polos = service.get("build").is_some()
            || service["image"]
                .as_str()
                .is_some_and(|i| i.starts_with("polos"));
        if !is_polos {
            continue;
        }
        polos_services += 1;
        if let Some(env) = service.get("environment").and_then(Value::as_object) {
            for (key, value) in env {
                if key == "POLOS_NATS__URL" || key == "NATS_URL" {
                    let host = value.as_str().unwrap().trim_start_matches("nats://");
                    let host = host.split(':').next().unwrap();
                    assert!(
                        services.contains_key(host),
                        "{name}: {key} names unknown host {host}"
                    );
                }
            }
        }
        match service.get("entrypoint") {
            Some(entrypoint) => {
                let program = strings(entrypoint)[0].clone();
                assert!(
                    examples.contains(&program),
                    "{name}: entrypoint {program} is no example in examples/"
                );
                assert!(
                    copied.iter().any(|(n, _)| n == &program),
                    "{name}: entrypoint {program} is not copied into the image"
                );
            }
            None => {
                let args = service.get("command").map(strings).unwrap_or_default();
                assert!(
                    !args.is_empty(),
                    "{name}: a polos service without a command"
                );
                let out = std::process::Command::new(env!("CARGO_BIN_EXE_polos"))
                    .args(&args)
                    .arg("--help")
                    .output()
                    .unwrap();
                assert!(
                    out.status.success(),
                    "{name}: `polos {}` is not a polos command: {}",
                    args.join(" "),
                    String::from_utf8_lossy(&out.stderr)
                );
            }
        }
    }
    assert!(
        polos_services >= 3,
        "expected streams, scheduler and worker services"
    );
}

/// The check can fail: a command that is no subcommand is caught.
#[test]
fn an_unknown_polos_command_fails_help() {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_polos"))
        .args(["schedulr", "--help"])
        .output()
        .unwrap();
    assert!(!out.status.success());
}
