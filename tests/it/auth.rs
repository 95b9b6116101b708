//! Every auth method of `[nats]` against a real server that requires it — user/password (also in
//! the URL and from a file), token, NKey, a JWT creds file, TLS with a private CA, mutual TLS —
//! and no secret in any error, log line or `--help` output.

use std::path::Path;
use std::process::Output;

use polos::config::{NatsConfig, TlsConfig};
use polos::nats::permissions::{render, Format, Role, Scope};
use polos::nats::server::{NatsServer, ServerOptions};
use polos::nats::{connect, ConnectError, Denials};
use polos::PolosClient;
use serde_json::{json, Value};

use crate::common::secure::{secret, write_file, Operator, Pki};
use crate::common::within;

fn server_with_args(args: &[&str]) -> NatsServer {
    NatsServer::start_with(ServerOptions {
        extra_args: args.iter().map(|a| a.to_string()).collect(),
        ..ServerOptions::default()
    })
    .unwrap()
}

fn server_with_conf(dir: &Path, conf: &str) -> NatsServer {
    NatsServer::start_with(ServerOptions {
        config_file: Some(write_file(dir, "server.conf", conf)),
        ..ServerOptions::default()
    })
    .unwrap()
}

fn config(url: &str) -> NatsConfig {
    NatsConfig {
        url: url.to_string(),
        connect_timeout_secs: 2,
        ..NatsConfig::default()
    }
}

/// Connects and proves the connection works with one round trip through the server.
async fn works(config: &NatsConfig) {
    let client = within("connect", connect(config))
        .await
        .unwrap_or_else(|e| panic!("connect failed: {e}"));
    within("flush", client.flush()).await.unwrap();
}

/// The refusal's text, checked to hold no `secret` in its `Display` or `Debug` form.
async fn refused(config: &NatsConfig, secret: &str) -> String {
    let e = within("connect", connect(config))
        .await
        .expect_err("the server should refuse");
    let (shown, debug) = (e.to_string(), format!("{e:?}"));
    assert!(!shown.contains(secret), "{shown}");
    assert!(!debug.contains(secret), "{debug}");
    shown
}

#[tokio::test]
async fn user_and_password_inline_in_the_url_and_from_a_file() {
    let password = format!("{}:@/x", secret("userpass"));
    let server = server_with_args(&["--user", "polos", "--pass", &password]);
    let port = server.port();
    let text = refused(&config(server.url()), &password).await;
    assert!(text.contains(server.url()), "{text}");
    assert!(text.contains("refused the credentials"), "{text}");

    let mut inline = config(server.url());
    inline.user = Some("polos".into());
    inline.password = Some(password.clone());
    works(&inline).await;

    // The issue's `nats://admin:admin@host` habit, with the characters a URL must escape.
    let escaped = password
        .replace(':', "%3A")
        .replace('@', "%40")
        .replace('/', "%2F");
    works(&config(&format!("nats://polos:{escaped}@127.0.0.1:{port}"))).await;

    let dir = tempfile::tempdir().unwrap();
    let mut from_file = config(server.url());
    from_file.user = Some("polos".into());
    from_file.password_file = Some(write_file(dir.path(), "pw", &format!("{password}\n")));
    works(&from_file).await;

    let wrong = format!("nats://polos:{}@127.0.0.1:{port}", secret("wrong"));
    let text = refused(&config(&wrong), &wrong).await;
    assert!(
        text.contains(&format!("nats://polos:***@127.0.0.1:{port}")),
        "{text}"
    );

    inline.password_file = from_file.password_file.clone();
    let text = refused(&inline, &password).await;
    assert!(
        text.contains("both nats.password and nats.password_file"),
        "{text}"
    );
    let mut user_only = config(server.url());
    user_only.user = Some("polos".into());
    assert!(refused(&user_only, &password)
        .await
        .contains("without a password"));
    let mut missing = config(server.url());
    missing.user = Some("polos".into());
    missing.password_file = Some(dir.path().join("nope"));
    assert!(refused(&missing, &password)
        .await
        .contains("nats.password_file"));
}

#[tokio::test]
async fn token_inline_in_the_url_and_from_a_file() {
    let token = secret("token");
    let server = server_with_args(&["--auth", &token]);
    refused(&config(server.url()), &token).await;
    let mut inline = config(server.url());
    inline.token = Some(token.clone());
    works(&inline).await;
    works(&config(&format!(
        "nats://{token}@127.0.0.1:{}",
        server.port()
    )))
    .await;
    let dir = tempfile::tempdir().unwrap();
    let mut from_file = config(server.url());
    from_file.token_file = Some(write_file(dir.path(), "token", &token));
    works(&from_file).await;
}

#[tokio::test]
async fn nkey_seed_inline_and_from_a_file() {
    let user = nkeys::KeyPair::new_user();
    let seed = user.seed().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let server = server_with_conf(
        dir.path(),
        &format!(
            "authorization {{ users = [ {{ nkey: {} }} ] }}\n",
            user.public_key()
        ),
    );
    let mut inline = config(server.url());
    inline.nkey_seed = Some(seed.clone());
    works(&inline).await;
    let mut from_file = config(server.url());
    from_file.nkey_seed_file = Some(write_file(dir.path(), "user.nk", &format!("{seed}\n")));
    works(&from_file).await;
    let other = nkeys::KeyPair::new_user().seed().unwrap();
    let mut wrong = config(server.url());
    wrong.nkey_seed = Some(other.clone());
    refused(&wrong, &other).await;
}

#[tokio::test]
async fn a_jwt_creds_file_and_the_role_claims_of_polos_permissions() {
    let operator = Operator::generate();
    let dir = tempfile::tempdir().unwrap();
    let server = server_with_conf(dir.path(), &operator.server_conf);

    // A user with every permission: JetStream works through the account (streams apply).
    let (creds, seed) = operator.user_creds("polos-admin", json!({}));
    let mut admin = config(server.url());
    admin.creds_file = Some(write_file(dir.path(), "admin.creds", &creds));
    let client = within("connect", connect(&admin)).await.unwrap();
    polos::nats::streams::apply(
        &async_nats::jetstream::new(client),
        &polos::config::StorageConfig::default(),
    )
    .await
    .unwrap();

    // A user whose JWT carries `polos permissions client --format jwt`: the API is allowed
    // (nobody serves it here, so "no scheduler answers"), a KV write is refused.
    let claim: Value =
        serde_json::from_str(&render(Role::Client, &Scope::All, None, Format::Jwt)).unwrap();
    let (creds, _) = operator.user_creds("polos-client", claim);
    let mut client_config = config(server.url());
    client_config.creds_file = Some(write_file(dir.path(), "client.creds", &creds));
    let nats = within("connect", connect(&client_config)).await.unwrap();
    let api = PolosClient::from_nats(nats.clone());
    let err = polos::schedules::list(&api, None).await.unwrap_err();
    assert!(
        matches!(err, polos::client::ClientError::NoService { .. }),
        "{err:?}"
    );
    let subject = "$KV.polos_schedules.daily-report.global";
    let denied = Denials::of(&nats)
        .guard(&[subject], nats.request(subject, "{}".into()))
        .await
        .unwrap_err();
    assert_eq!(
        denied.to_string(),
        format!("permission denied: publish to {subject}")
    );

    // A creds file whose content is broken is named by path; its contents never shown.
    let broken = write_file(
        dir.path(),
        "broken.creds",
        &format!("not a creds file {seed}\n"),
    );
    let mut bad = config(server.url());
    bad.creds_file = Some(broken.clone());
    let e = within("connect", connect(&bad)).await.unwrap_err();
    assert!(matches!(e, ConnectError::Creds { .. }), "{e:?}");
    assert!(e.to_string().contains(&broken.display().to_string()), "{e}");
    assert!(!format!("{e} {e:?}").contains(&seed));
}

fn tls_server(pki: &Pki, dir: &Path, verify: bool) -> NatsServer {
    let mut tls = format!(
        "tls {{\n  cert_file: \"{}\"\n  key_file: \"{}\"\n",
        pki.server_cert.display(),
        pki.server_key.display()
    );
    if verify {
        tls.push_str(&format!(
            "  ca_file: \"{}\"\n  verify: true\n",
            pki.ca.display()
        ));
    }
    tls.push_str("}\n");
    server_with_conf(dir, &tls)
}

#[tokio::test]
async fn tls_with_a_private_ca() {
    let pki = Pki::generate();
    let server = tls_server(&pki, pki.dir.path(), false);
    let text = refused(&config(server.url()), "-").await;
    assert!(text.contains("nats.tls.ca"), "{text}");
    let mut trusted = config(server.url());
    trusted.tls = TlsConfig {
        required: true,
        ca: Some(pki.ca.clone()),
        ..TlsConfig::default()
    };
    works(&trusted).await;
    // `tls://` asks for TLS by itself.
    let mut by_scheme = config(&format!("tls://127.0.0.1:{}", server.port()));
    by_scheme.tls.ca = Some(pki.ca.clone());
    works(&by_scheme).await;
}

#[tokio::test]
async fn mutual_tls() {
    let pki = Pki::generate();
    let server = tls_server(&pki, pki.dir.path(), true);
    let mut no_cert = config(server.url());
    no_cert.tls = TlsConfig {
        required: true,
        ca: Some(pki.ca.clone()),
        ..TlsConfig::default()
    };
    refused(&no_cert, "-").await;
    let mut half = no_cert.clone();
    half.tls.cert = Some(pki.client_cert.clone());
    assert!(refused(&half, "-")
        .await
        .contains("both nats.tls.cert and nats.tls.key"));
    let mut mutual = no_cert.clone();
    mutual.tls.cert = Some(pki.client_cert.clone());
    mutual.tls.key = Some(pki.client_key.clone());
    works(&mutual).await;
}

/// Runs the real `polos` with `args` and extra environment, capturing everything it prints.
async fn polos(args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut command = tokio::process::Command::new(env!("CARGO_BIN_EXE_polos"));
    command
        .args(args)
        .env_remove("POLOS_CONFIG")
        .env_remove("POLOS_NATS__URL")
        .kill_on_drop(true);
    for (k, v) in env {
        command.env(k, v);
    }
    within("polos", command.output()).await.unwrap()
}

fn printed(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

#[tokio::test]
async fn no_secret_in_any_output_of_the_cli() {
    let password = secret("cli");
    let token = secret("cli-token");
    let seed = nkeys::KeyPair::new_user().seed().unwrap();
    let server = server_with_args(&["-js", "--user", "polos", "--pass", &password]);
    let port = server.port();
    let good_url = format!("nats://polos:{password}@127.0.0.1:{port}");
    let wrong_password = secret("cli-wrong");
    let wrong_url = format!("nats://polos:{wrong_password}@127.0.0.1:{port}");
    let dir = tempfile::tempdir().unwrap();
    let password_file = write_file(dir.path(), "pw", &password);
    let secrets = [password.as_str(), &token, &seed, &wrong_password];
    let check = |what: &str, out: &Output| {
        let text = printed(out);
        for s in secrets {
            assert!(!text.contains(s), "{what} printed a secret:\n{text}");
        }
        text
    };

    // `--help` with every secret set in the environment.
    let secret_env = [
        ("POLOS_NATS__URL", good_url.as_str()),
        ("POLOS_NATS__PASSWORD", password.as_str()),
        ("POLOS_NATS__TOKEN", token.as_str()),
        ("POLOS_NATS__NKEY_SEED", seed.as_str()),
    ];
    for args in [
        &["--help"][..],
        &["schedules", "--help"],
        &["scheduler", "--help"],
        &["streams", "apply", "--help"],
        &["permissions", "--help"],
    ] {
        let out = polos(args, &secret_env).await;
        assert!(out.status.success());
        check(&format!("polos {}", args.join(" ")), &out);
    }

    // Refused credentials in the URL, logged at the most verbose level.
    let trace = ("POLOS_LOG__LEVEL", "trace");
    let out = polos(&["--nats-url", &wrong_url, "streams", "apply"], &[trace]).await;
    assert_eq!(out.status.code(), Some(4));
    let text = check("a refused URL", &out);
    assert!(
        text.contains(&format!("nats://polos:***@127.0.0.1:{port}")),
        "{text}"
    );
    assert!(text.contains("refused the credentials"), "{text}");

    // Accepted credentials: in the URL, and as user + password file; both at trace level.
    let out = polos(&["--nats-url", &good_url, "streams", "apply"], &[trace]).await;
    assert!(out.status.success(), "{}", printed(&out));
    check("streams apply with URL credentials", &out);
    let out = polos(
        &["schedules", "list"],
        &[
            trace,
            ("POLOS_NATS__URL", server.url()),
            ("POLOS_NATS__USER", "polos"),
            (
                "POLOS_NATS__PASSWORD_FILE",
                &password_file.display().to_string(),
            ),
        ],
    )
    .await;
    let text = check("schedules list with a password file", &out);
    assert!(text.contains("no polos scheduler answers"), "{text}");

    // A config file with a syntax error on its password line: the line is named, not quoted.
    let toml = write_file(
        dir.path(),
        "polos.toml",
        &format!("[nats]\nuser = \"polos\"\npassword = {password}\n"),
    );
    let out = polos(
        &["--config", &toml.display().to_string(), "schedules", "list"],
        &[],
    )
    .await;
    assert_eq!(out.status.code(), Some(2));
    let text = check("a malformed polos.toml", &out);
    assert!(text.contains("line 3"), "{text}");

    // A wrong token and seed from the environment are not echoed either.
    let out = polos(
        &["runs", "list"],
        &[
            trace,
            ("POLOS_NATS__URL", server.url()),
            ("POLOS_NATS__TOKEN", &token),
            ("POLOS_NATS__NKEY_SEED", &seed),
        ],
    )
    .await;
    assert_eq!(out.status.code(), Some(4));
    check("runs list with a wrong token and seed", &out);
}
