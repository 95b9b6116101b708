//! The schedules store's compare-and-swap writes through `nats::Writer` (one ack subscription
//! for every concurrent write, BENCHMARKS.md "API"): no lost update, exactly one create, lost
//! races retried, refusals mapped to the same errors as before, and no write left hanging when
//! the server restarts under it.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_nats::HeaderMap;
use polos::api::UpsertRequest;
use polos::model::ScheduleRecord;
use polos::nats::{WriteError, Writer, ACK_TIMEOUT};
use polos::schedules;
use polos::store::{ScheduleStore, StoreError};

use super::schedules_api::ApiEnv;
use crate::common::{within, TestEnv};

/// The schedules stream's last sequence: every stored write moves it by one.
async fn last_sequence(env: &TestEnv) -> u64 {
    crate::common::stream_info(&env.js, "KV_polos_schedules")
        .await
        .state
        .last_sequence
}

fn expect_sequence(sequence: u64) -> HeaderMap {
    let mut headers = HeaderMap::new();
    headers.insert(
        "Nats-Expected-Last-Subject-Sequence",
        sequence.to_string().as_str(),
    );
    headers
}

/// 32 upserts of one workflow + key at once, through the API: one says `created`, all return
/// the same id, and the bucket holds exactly 32 new revisions (every update stored once, none
/// lost to a blind overwrite, none doubled by a retry).
#[tokio::test]
async fn concurrent_upserts_of_one_key_store_each_once_and_create_once() {
    let api = ApiEnv::start().await;
    let before = last_sequence(&api.env).await;
    let replies = futures::future::join_all((0..32).map(|i| {
        let client = api.client.clone();
        async move {
            let request = UpsertRequest {
                key: "same".into(),
                note: Some(format!("n{i}")),
                ..UpsertRequest::new("crowd", "0 8 * * *")
            };
            schedules::upsert(&client, &request).await
        }
    }))
    .await;
    let replies: Vec<_> = replies
        .into_iter()
        .map(|r| r.expect("every upsert is answered with success"))
        .collect();
    assert_eq!(replies.iter().filter(|r| r.created).count(), 1);
    assert!(replies
        .iter()
        .all(|r| r.schedule_id == replies[0].schedule_id));
    assert_eq!(
        last_sequence(&api.env).await - before,
        32,
        "one revision each"
    );
    api.stop().await;
}

/// 16 read-modify-write changes of one record at once, each appending its number to the note:
/// most lose compare-and-swap races and retry, and every number ends up in the note.
#[tokio::test]
async fn concurrent_changes_of_one_record_retry_and_lose_nothing() {
    let env = TestEnv::start().await;
    let store = ScheduleStore::open(&env.js).await.unwrap();
    let created = store
        .upsert("wf", "k", |_| {
            ScheduleRecord::new("wf", "k", "0 8 * * *", "UTC")
        })
        .await
        .unwrap();
    assert!(created.created);
    let before = last_sequence(&env).await;
    futures::future::join_all((0..16).map(|i| {
        let store = store.clone();
        async move {
            store
                .modify("wf", "k", |record| {
                    let note = record.note.take().unwrap_or_default();
                    record.note = Some(format!("{note}[{i}]"));
                })
                .await
                .unwrap()
                .expect("the record exists")
        }
    }))
    .await;
    let stored = store.get("wf", "k").await.unwrap().unwrap().record.unwrap();
    let note = stored.note.unwrap_or_default();
    for i in 0..16 {
        assert!(note.contains(&format!("[{i}]")), "[{i}] lost: {note}");
    }
    assert_eq!(last_sequence(&env).await - before, 16);
}

/// The writer maps the stream's answers: stored at a sequence, a wrong last sequence (a lost
/// compare-and-swap), and no stream at all.
#[tokio::test]
async fn the_writer_maps_acks_conflicts_and_missing_streams() {
    let env = TestEnv::start().await;
    let writer = Writer::new(env.connect().await).await.unwrap();
    let subject = "$KV.polos_schedules.wf.direct";
    let first = writer
        .publish(subject, expect_sequence(0), "{}".into())
        .await
        .unwrap();
    assert_eq!(first, last_sequence(&env).await);
    let conflict = writer
        .publish(subject, expect_sequence(0), "{}".into())
        .await
        .expect_err("the key exists");
    assert!(conflict.is_wrong_last_sequence(), "{conflict}");
    assert!(
        conflict.to_string().contains("wrong last sequence"),
        "{conflict}"
    );
    let second = writer
        .publish(subject, expect_sequence(first), "{}".into())
        .await
        .unwrap();
    assert_eq!(second, first + 1);
    let started = Instant::now();
    let nobody = writer
        .publish("no.stream.here", HeaderMap::new(), "{}".into())
        .await
        .expect_err("no stream takes it");
    assert!(
        matches!(nobody, WriteError::NoResponders { .. }),
        "{nobody}"
    );
    assert!(started.elapsed() < ACK_TIMEOUT, "answered, not timed out");
}

/// A write the stream refuses (over the bucket's maximum message size) is the same store
/// error as before: `Write`, naming the bucket, the key and the server's reason; through the
/// API it is `internal`.
#[tokio::test]
async fn a_refused_write_names_the_bucket_the_key_and_the_reason() {
    let api = ApiEnv::start().await;
    let mut config = crate::common::stream_info(&api.env.js, "KV_polos_schedules")
        .await
        .config;
    config.max_message_size = 100;
    api.env.js.update_stream(config).await.unwrap();
    let store = ScheduleStore::open(&api.env.js).await.unwrap();
    let refused = store
        .upsert("wf", "big", |_| {
            ScheduleRecord::new("wf", "big", "0 8 * * *", "UTC")
        })
        .await
        .expect_err("over the stream's max message size");
    assert!(
        matches!(&refused, StoreError::Write { bucket: "polos_schedules", kv_key, .. } if kv_key == "wf.big"),
        "{refused:?}"
    );
    let text = refused.to_string();
    assert!(
        text.starts_with("cannot write polos_schedules wf.big: ")
            && text.contains("message size exceeds maximum allowed"),
        "{text}"
    );
    let through_api = schedules::create(&api.client, "wf", "0 8 * * *", "UTC", "big")
        .await
        .expect_err("refused through the API too");
    assert!(
        through_api.to_string().contains("internal")
            && through_api
                .to_string()
                .contains("message size exceeds maximum allowed"),
        "{through_api}"
    );
    api.stop().await;
}

/// Writes in flight while the server restarts all end — stored or failed — within the ack
/// timeout plus the reconnect; every write reported stored is in the bucket afterwards, and
/// the writer works again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writes_end_when_the_server_restarts_under_them() {
    let mut env = TestEnv::start().await;
    let store = ScheduleStore::open(&env.js).await.unwrap();
    let done = Arc::new(AtomicUsize::new(0));
    let writes: Vec<_> = (0..2000)
        .map(|i| {
            let (store, done) = (store.clone(), done.clone());
            tokio::spawn(async move {
                let key = format!("k{i}");
                let stored = store
                    .upsert("wf", &key, |_| {
                        ScheduleRecord::new("wf", &key, "0 8 * * *", "UTC")
                    })
                    .await
                    .is_ok();
                done.fetch_add(1, Ordering::SeqCst);
                (key, stored)
            })
        })
        .collect();
    within("the first writes are stored", async {
        while done.load(Ordering::SeqCst) < 20 {
            tokio::task::yield_now().await;
        }
    })
    .await;
    env.server.restart().unwrap();
    let outcomes = within(
        "every write in flight during the restart ends",
        futures::future::join_all(writes),
    )
    .await;
    let outcomes: Vec<(String, bool)> = outcomes.into_iter().map(Result::unwrap).collect();
    let failed = outcomes.iter().filter(|(_, stored)| !stored).count();
    assert!(failed < outcomes.len(), "some writes were stored");
    within("a write after the restart", async {
        while store
            .upsert("wf", "after", |_| {
                ScheduleRecord::new("wf", "after", "0 8 * * *", "UTC")
            })
            .await
            .is_err()
        {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    })
    .await;
    for (key, _) in outcomes.iter().filter(|(_, stored)| *stored) {
        assert!(
            store.get("wf", key).await.unwrap().is_some(),
            "{key} was reported stored but is not in the bucket"
        );
    }
    eprintln!(
        "{failed} of {} writes failed across the restart",
        outcomes.len()
    );
}
