//! Every command that needs NATS fails fast against a dead URL, names the URL it tried and
//! says how to start a server.

use std::time::{Duration, Instant};

use crate::common::within;

/// A loopback URL where nothing listens (a port just released).
fn dead_url() -> String {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    drop(listener);
    format!("nats://127.0.0.1:{port}")
}

#[tokio::test]
async fn commands_against_a_dead_url_say_which_url_and_how_to_start_one() {
    let url = dead_url();
    for args in [
        vec!["schedules", "list"],
        vec!["runs", "list"],
        vec!["scheduler"],
        vec!["streams", "apply"],
        vec!["dev"],
    ] {
        let started = Instant::now();
        let out = within(
            "polos against a dead URL",
            tokio::process::Command::new(env!("CARGO_BIN_EXE_polos"))
                .args(&args)
                .arg("--nats-url")
                .arg(&url)
                .env_remove("POLOS_CONFIG")
                .kill_on_drop(true)
                .output(),
        )
        .await
        .unwrap();
        let what = format!("polos {}", args.join(" "));
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(4), "{what}: {stderr}");
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "{what} took {:?} to give up",
            started.elapsed()
        );
        assert!(
            stderr.contains(&url),
            "{what} does not name {url}: {stderr}"
        );
        assert!(
            stderr.contains("polos dev"),
            "{what} does not say how to start a server: {stderr}"
        );
        assert!(
            !stderr.contains("internal:"),
            "{what} shows an API code for a local problem: {stderr}"
        );
    }
}
