use polos::config::StorageConfig;
use polos::nats::server::NatsServer;
use polos::nats::streams::{apply, Outcome, DEFINITIONS};

use crate::common::{stream_info, TestCluster, TestEnv};

#[tokio::test]
async fn apply_twice_changes_nothing_the_second_time() {
    let server = NatsServer::start().unwrap();
    let client = async_nats::connect(server.url()).await.unwrap();
    let js = async_nats::jetstream::new(client);
    let storage = StorageConfig::default();

    let first = apply(&js, &storage).await.unwrap();
    assert_eq!(first.len(), DEFINITIONS.len());
    assert!(
        first.iter().all(|(_, o)| *o == Outcome::Created),
        "{first:?}"
    );

    let second = apply(&js, &storage).await.unwrap();
    assert!(
        second.iter().all(|(_, o)| *o == Outcome::Unchanged),
        "{second:?}"
    );

    // The KV buckets are real KV buckets for any client.
    let kv = js.get_key_value("polos_schedules").await.unwrap();
    assert_eq!(kv.status().await.unwrap().history(), 5);
}

#[tokio::test]
async fn apply_updates_a_drifted_stream() {
    let env = TestEnv::start().await;
    let mut config = stream_info(&env.js, "POLOS_RUNS").await.config;
    config.duplicate_window = std::time::Duration::from_secs(30);
    env.js.update_stream(config).await.unwrap();
    let outcomes = apply(&env.js, &StorageConfig::default()).await.unwrap();
    let runs = outcomes.iter().find(|(n, _)| n == "POLOS_RUNS").unwrap();
    assert_eq!(runs.1, Outcome::Updated);
    let info = stream_info(&env.js, "POLOS_RUNS").await.config;
    assert_eq!(info.duplicate_window, std::time::Duration::from_secs(120));
}

#[tokio::test]
async fn cluster_gets_three_replicas() {
    let c = TestCluster::start().await;
    let info = stream_info(&c.js, "KV_polos_schedules").await;
    assert_eq!(info.config.num_replicas, 3);
    let again = apply(
        &c.js,
        &StorageConfig {
            replicas: 3,
            ..Default::default()
        },
    )
    .await
    .unwrap();
    assert!(
        again.iter().all(|(_, o)| *o == Outcome::Unchanged),
        "{again:?}"
    );
}
