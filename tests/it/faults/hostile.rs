//! Hostile requests through the running API service (issue 9, point 18): a real `polos
//! scheduler` process gets every hostile body on every endpoint, once as a plain publish and
//! once as a request. Each request gets an error reply with a documented code, nothing stored
//! changes (every bucket's and the fire stream's last sequence is the same after as before),
//! and the process is still running. Garbage straight in the buckets, with a scheduler and
//! workers running, is the fault suite's `Garbage` scenario.

use std::time::Duration;

use async_nats::jetstream;
use bytes::Bytes;

use crate::common::faults::garbage::deep;
use crate::common::faults::procs::{ChildEnv, Proc};
use crate::common::{within, TestEnv};

const SUBJECTS: &[&str] = &[
    "polos.schedules.upsert",
    "polos.schedules.get",
    "polos.schedules.list",
    "polos.schedules.delete",
    "polos.schedules.pause",
    "polos.schedules.resume",
    "polos.schedules.trigger",
    "polos.schedules.backfill",
    "polos.workflows.list",
    "polos.run.cancel",
];

/// Streams whose last sequence moves with any write.
const STREAMS: &[&str] = &[
    "KV_polos_schedules",
    "KV_polos_schedule_state",
    "KV_polos_workflows",
    "KV_polos_runs",
    "KV_polos_steps",
    "KV_polos_overlap",
    "KV_polos_cancels",
    "POLOS_RUNS",
];

/// Bodies no endpoint may accept.
fn hostile_bodies() -> Vec<(String, Vec<u8>)> {
    let mut seed = 0x9e37_79b9_7f4a_7c15u64;
    let mut random = |n: usize| -> Vec<u8> {
        (0..n)
            .map(|_| {
                seed ^= seed << 13;
                seed ^= seed >> 7;
                seed ^= seed << 17;
                (seed >> 24) as u8
            })
            .collect()
    };
    let key_257 = "k".repeat(257);
    vec![
        ("random 64 bytes".into(), random(64)),
        ("random 4 KiB".into(), random(4096)),
        ("truncated".into(), b"{\"workflow\":\"wf\",".to_vec()),
        ("array".into(), b"[1,2,3]".to_vec()),
        ("string".into(), b"\"wf\"".to_vec()),
        ("null".into(), b"null".to_vec()),
        (
            "invalid UTF-8".into(),
            b"{\"workflow\":\"w\xfff\",\"cron\":\"* * * * *\"}".to_vec(),
        ),
        (
            "lone surrogate".into(),
            br#"{"workflow":"\ud800","cron":"* * * * *"}"#.to_vec(),
        ),
        ("nesting 30,000 deep".into(), deep(30_000).into_bytes()),
        (
            "nesting in a field".into(),
            format!(r#"{{"workflow":"wf","cron":{}}}"#, deep(1_000)).into_bytes(),
        ),
        (
            "huge numbers".into(),
            br#"{"workflow":"wf","cron":"* * * * *","limit":1e400,"catchup_window_secs":18446744073709551616}"#.to_vec(),
        ),
        (
            "NUL in workflow".into(),
            br#"{"workflow":"w\u0000f","cron":"* * * * *","key":"u1"}"#.to_vec(),
        ),
        (
            "path as workflow".into(),
            br#"{"workflow":"../../etc","cron":"* * * * *"}"#.to_vec(),
        ),
        (
            "257-byte key".into(),
            format!(r#"{{"workflow":"wf","key":"{key_257}","cron":"* * * * *"}}"#).into_bytes(),
        ),
        (
            "path as zone".into(),
            br#"{"workflow":"wf","cron":"* * * * *","timezone":"../../../etc/localtime"}"#
                .to_vec(),
        ),
        (
            "60 KB cron".into(),
            format!(r#"{{"workflow":"wf","cron":"{}"}}"#, "9".repeat(60_000)).into_bytes(),
        ),
        (
            "64 KiB + 1".into(),
            format!(r#"{{"workflow":"wf","note":"{}"}}"#, "x".repeat(65_537)).into_bytes(),
        ),
        ("1 MB".into(), random(1_000_000)),
        (
            "path as run id".into(),
            br#"{"run_id":"../../etc/passwd","workflow":"wf"}"#.to_vec(),
        ),
        (
            "run id with a wildcard".into(),
            br#"{"run_id":"sch_aaaaaaaaaaaaaaaaaaaaaaaaaa-*","workflow":"a.b"}"#.to_vec(),
        ),
    ]
}

/// Last sequence of every polos stream.
async fn sequences(js: &jetstream::Context) -> Vec<(&'static str, u64)> {
    let mut out = Vec::new();
    for name in STREAMS {
        let mut stream = js.get_stream(*name).await.unwrap();
        out.push((*name, stream.info().await.unwrap().state.last_sequence));
    }
    out
}

#[tokio::test]
async fn hostile_requests_get_errors_and_change_nothing() {
    let env = TestEnv::start().await;
    let workflows = env.js.get_key_value("polos_workflows").await.unwrap();
    workflows
        .put(
            "wf",
            r#"{"workflow":"wf","schedulable":true,"schedule":null,"updated_at":"2026-01-01T00:00:00Z"}"#.into(),
        )
        .await
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let mut scheduler = Proc::scheduler(
        1,
        &ChildEnv {
            vars: vec![("POLOS_NATS__URL".into(), env.server.url().into())],
            dir: dir.path().into(),
            effects: dir.path().join("unused"),
            step_ms: 0,
        },
    );
    // A stored schedule gives delete, pause, resume and trigger something to hit.
    let valid = br#"{"workflow":"wf","key":"u1","cron":"0 0 1 1 *"}"#;
    within("the API answers", async {
        loop {
            if let Ok(m) = env
                .client
                .request("polos.schedules.upsert", Bytes::from_static(valid))
                .await
            {
                if m.headers.is_none() {
                    return;
                }
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    })
    .await;
    let state = env.js.get_key_value("polos_schedule_state").await.unwrap();
    within("the schedule armed", async {
        for attempt in 1u32.. {
            if let Ok(Some(v)) = state.get("wf.u1").await {
                if serde_json::from_slice::<serde_json::Value>(&v).unwrap()["next"].is_string() {
                    return;
                }
            }
            // A schedule created while the scheduler was still taking over gets its state
            // record at its first fire (a year away): upsert it again, now a live change,
            // whose state the leader writes at once.
            if attempt % 10 == 0 {
                let _ = env
                    .client
                    .request("polos.schedules.upsert", Bytes::from_static(valid))
                    .await;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    })
    .await;
    let before = sequences(&env.js).await;

    let codes = [
        "invalid_request",
        "invalid_cron",
        "invalid_timezone",
        "invalid_workflow",
        "invalid_key",
        "not_schedulable",
        "not_found",
    ];
    let mut refused = 0;
    for (label, body) in hostile_bodies() {
        for subject in SUBJECTS {
            let body = Bytes::from(body.clone());
            // A plain publish is applied like a request; the request after it with the same
            // body lands on the same write queue, so its reply means the publish was handled.
            env.client.publish(*subject, body.clone()).await.unwrap();
            let reply = within(&format!("{subject} answers {label}"), async {
                env.client.request(*subject, body.clone()).await
            })
            .await
            .unwrap_or_else(|e| panic!("{subject} with {label}: no reply: {e}"));
            let status = reply
                .headers
                .as_ref()
                .and_then(|h| h.get("Nats-Service-Error-Code"))
                .map(|v| v.as_str().to_string());
            let text = String::from_utf8_lossy(&reply.payload);
            assert!(
                matches!(status.as_deref(), Some("400") | Some("404")),
                "{subject} with {label}: status {status:?}, reply {text}"
            );
            let v: serde_json::Value = serde_json::from_slice(&reply.payload)
                .unwrap_or_else(|e| panic!("{subject} with {label}: reply not JSON ({e}): {text}"));
            let code = v["error"]["code"].as_str().unwrap_or_default();
            let message = v["error"]["message"].as_str().unwrap_or_default();
            assert!(codes.contains(&code), "{subject} with {label}: {text}");
            assert!(!message.is_empty(), "{subject} with {label}: {text}");
            assert!(
                reply.payload.len() <= body.len().min(64 * 1024) + 1024,
                "{subject} with {label}: a {} byte reply to a {} byte request",
                reply.payload.len(),
                body.len()
            );
            refused += 1;
        }
    }
    assert_eq!(refused, hostile_bodies().len() * SUBJECTS.len());
    let after = sequences(&env.js).await;
    assert_eq!(before, after, "a hostile request changed what is stored");
    assert!(
        scheduler.exit_status().is_none(),
        "the scheduler exited:\n{}",
        scheduler.log_tail(40)
    );
}
