use std::time::Duration;

use polos::config::StorageConfig;
use polos::nats::server::{NatsCluster, NatsServer};
use polos::nats::streams::{apply, Outcome, DEFINITIONS};

use crate::common::{eventually, polos_cli, stream_info, within, TestCluster, TestEnv};

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

/// The contract keeps runs and steps 30 days: their buckets expire entries after exactly
/// 2,592,000 s, written here as a literal. Nothing else expires (a schedule, its state, a
/// registration, the lease or a waiting fire never ages out). `polos streams apply` puts a
/// drifted retention back.
#[tokio::test]
async fn runs_and_steps_are_kept_30_days_and_nothing_else_expires() {
    const THIRTY_DAYS: Duration = Duration::from_secs(2_592_000);
    let env = TestEnv::start().await;
    for stream in ["KV_polos_runs", "KV_polos_steps"] {
        let config = stream_info(&env.js, stream).await.config;
        assert_eq!(config.max_age, THIRTY_DAYS, "{stream}");
    }
    let kv = env.js.get_key_value("polos_runs").await.unwrap();
    assert_eq!(kv.status().await.unwrap().max_age(), THIRTY_DAYS);
    for stream in [
        "KV_polos_schedules",
        "KV_polos_schedule_state",
        "KV_polos_workflows",
        "KV_polos_leases",
        "POLOS_RUNS",
    ] {
        let config = stream_info(&env.js, stream).await.config;
        assert_eq!(config.max_age, Duration::ZERO, "{stream} must not expire");
    }

    // An operator shortened one and removed the other; the real binary puts both back.
    for (stream, max_age) in [
        ("KV_polos_runs", Duration::from_secs(3600)),
        ("KV_polos_steps", Duration::ZERO),
    ] {
        let mut config = stream_info(&env.js, stream).await.config;
        config.max_age = max_age;
        env.js.update_stream(config).await.unwrap();
    }
    let out = polos_cli(env.server.url(), &["streams", "apply"]).await;
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for stream in ["KV_polos_runs", "KV_polos_steps"] {
        let config = stream_info(&env.js, stream).await.config;
        assert_eq!(config.max_age, THIRTY_DAYS, "{stream} after streams apply");
    }
}

/// A deployment that grew from one server into a 3-node cluster: every bucket and the stream
/// were created with 1 replica, then `POLOS_STORAGE__REPLICAS=3 polos streams apply` (the real
/// binary) moves each to 3 replicas, and everything stored before is still there.
#[tokio::test]
async fn streams_apply_moves_r1_to_r3_on_a_cluster_and_keeps_the_data() {
    let cluster = NatsCluster::start(3).unwrap();
    let client = async_nats::connect(cluster.urls()).await.unwrap();
    let js = async_nats::jetstream::new(client);
    eventually("R1 streams applied on the cluster", || {
        let js = js.clone();
        async move { apply(&js, &StorageConfig::default()).await.is_ok() }
    })
    .await;
    let names: Vec<String> = DEFINITIONS
        .iter()
        .map(|(_, text)| {
            let raw: serde_json::Value = serde_json::from_str(text).unwrap();
            raw["name"].as_str().unwrap().to_string()
        })
        .collect();
    // Every definition file is embedded: the count comes from the directory, not a literal.
    let files = std::fs::read_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/streams"))
        .unwrap()
        .filter(|f| {
            f.as_ref()
                .is_ok_and(|f| f.path().extension().is_some_and(|e| e == "json"))
        })
        .count();
    assert_eq!(names.len(), files);
    for name in &names {
        assert_eq!(
            stream_info(&js, name).await.config.num_replicas,
            1,
            "{name}"
        );
    }
    // Data in every bucket and in the stream.
    let buckets: Vec<&str> = names.iter().filter_map(|n| n.strip_prefix("KV_")).collect();
    assert_eq!(
        buckets.len(),
        files - 1,
        "every definition but POLOS_RUNS is a bucket"
    );
    for bucket in &buckets {
        let kv = js.get_key_value(*bucket).await.unwrap();
        kv.put("probe", format!("kept in {bucket}").into())
            .await
            .unwrap();
    }
    js.publish("polos.runs.probe", "a waiting fire".into())
        .await
        .unwrap()
        .await
        .unwrap();

    let urls = cluster.urls().join(",");
    let out = within(
        "polos streams apply",
        tokio::process::Command::new(env!("CARGO_BIN_EXE_polos"))
            .args(["--nats-url", &urls, "streams", "apply"])
            .env_remove("POLOS_CONFIG")
            .env("POLOS_STORAGE__REPLICAS", "3")
            .env("POLOS_LOG__LEVEL", "warn")
            .kill_on_drop(true)
            .output(),
    )
    .await
    .unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );

    for name in &names {
        eventually(&format!("{name} on 3 current replicas"), || {
            let js = js.clone();
            async move {
                let info = stream_info(&js, name).await;
                let peers = info
                    .cluster
                    .as_ref()
                    .map(|c| c.replicas.iter().filter(|r| r.current).count())
                    .unwrap_or(0);
                info.config.num_replicas == 3 && peers == 2
            }
        })
        .await;
    }
    for bucket in &buckets {
        let kv = js.get_key_value(*bucket).await.unwrap();
        let value = kv.get("probe").await.unwrap();
        assert_eq!(
            value.as_deref(),
            Some(format!("kept in {bucket}").as_bytes()),
            "{bucket}"
        );
    }
    let runs = stream_info(&js, "POLOS_RUNS").await;
    assert_eq!(runs.state.messages, 1, "the waiting fire is kept");
    // Applying again with 3 replicas changes nothing.
    let again = apply(
        &js,
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
