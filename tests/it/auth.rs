//! The `[nats]` auth options reach a real server that requires them.

use polos::config::NatsConfig;
use polos::nats::server::{NatsServer, ServerOptions};
use polos::nats::{connect, ConnectError};

fn server_requiring(args: &[&str]) -> NatsServer {
    NatsServer::start_with(ServerOptions {
        extra_args: args.iter().map(|a| a.to_string()).collect(),
        ..ServerOptions::default()
    })
    .unwrap()
}

#[tokio::test]
async fn user_and_password() {
    let server = server_requiring(&["--user", "polos", "--pass", "s3cret"]);
    let mut config = NatsConfig {
        url: server.url().to_string(),
        connect_timeout_secs: 2,
        ..NatsConfig::default()
    };
    let refused = connect(&config).await.unwrap_err();
    assert!(matches!(refused, ConnectError::Unreachable { .. }));
    assert!(refused.to_string().contains(server.url()), "{refused}");

    config.user = Some("polos".into());
    config.password = Some("s3cret".into());
    let client = connect(&config).await.unwrap();
    client.flush().await.unwrap();

    config.password = Some("wrong".into());
    assert!(connect(&config).await.is_err());
}

#[tokio::test]
async fn token() {
    let server = server_requiring(&["--auth", "t0ken"]);
    let mut config = NatsConfig {
        url: server.url().to_string(),
        connect_timeout_secs: 2,
        ..NatsConfig::default()
    };
    assert!(connect(&config).await.is_err());
    config.token = Some("t0ken".into());
    let client = connect(&config).await.unwrap();
    client.flush().await.unwrap();
}

#[tokio::test]
async fn missing_creds_file_is_named() {
    let config = NatsConfig {
        creds_file: Some("/nonexistent/polos.creds".into()),
        ..NatsConfig::default()
    };
    let err = connect(&config).await.unwrap_err();
    assert!(
        err.to_string().contains("/nonexistent/polos.creds"),
        "{err}"
    );
}
