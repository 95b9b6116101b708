//! Hostile values for every bucket and hostile messages for the fire stream: what an operator's
//! typo, another language's client or a broken tool could put there with `nats kv put` or
//! `nats pub`. None of it may stop a scheduler or a worker.

use async_nats::jetstream;
use async_nats::HeaderMap;
use bytes::Bytes;

use super::workload::WORKFLOW;

/// JSON nested `depth` arrays deep (serde_json's recursion limit is 128).
pub fn deep(depth: usize) -> String {
    format!("{}{}", "[".repeat(depth), "]".repeat(depth))
}

/// Hostile values, each under its own key. Bytes, not strings: some are not UTF-8.
fn hostile_values() -> Vec<(&'static str, Vec<u8>)> {
    vec![
        ("not-json", b"{\"cron\": ".to_vec()),
        ("not-utf8", vec![0xff, 0xfe, b'{', 0xc3, 0x28, b'}']),
        ("empty", Vec::new()),
        ("array", b"[1,2,3]".to_vec()),
        ("deep", format!("{{\"cron\":{}}}", deep(100_000)).into_bytes()),
        (
            "huge-number",
            br#"{"cron":"* * * * *","catchup_window_secs":1e400,"fires":123456789012345678901234567890}"#
                .to_vec(),
        ),
        ("negative", br#"{"cron":"* * * * *","catchup_window_secs":-1}"#.to_vec()),
        ("bad-cron", br#"{"cron":"61 * * * *"}"#.to_vec()),
        ("bad-zone", br#"{"cron":"* * * * *","timezone":"Mars/Olympus_Mons"}"#.to_vec()),
        ("wrong-types", br#"{"cron":5,"paused":"yes","note":{}}"#.to_vec()),
        (
            "other-workflow",
            br#"{"cron":"* * * * *","workflow":"someone-else"}"#.to_vec(),
        ),
        // Close to NATS's 1 MiB message limit; an invalid cron quoted in full in an error
        // would make the error itself too large to store.
        (
            "big",
            format!("{{\"cron\":\"{}\"}}", "9".repeat(900 * 1024)).into_bytes(),
        ),
    ]
}

/// What [`put_everywhere`] did, for the verdict.
#[derive(Debug, Default)]
pub struct Planted {
    /// Keys in `polos_schedules` holding values that are not valid schedules: each must get an
    /// error in its state record.
    pub invalid_schedules: Vec<String>,
    /// Messages the stream stored from [`put_everywhere`] (not fires of any schedule).
    pub stream_messages: u64,
}

/// Puts hostile values into every polos bucket — including the live lease key and the state
/// of the valid schedule `victim_key` — and hostile messages onto `polos.runs.<workflow>`.
pub async fn put_everywhere(js: &jetstream::Context, victim_key: &str) -> Planted {
    let mut planted = Planted::default();
    let bucket = |name: &'static str| {
        let js = js.clone();
        async move { js.get_key_value(name).await.expect(name) }
    };
    let put = |kv: jetstream::kv::Store, key: String, value: Vec<u8>| async move {
        kv.put(&key, Bytes::from(value))
            .await
            .unwrap_or_else(|e| panic!("put garbage at {}/{key}: {e}", kv.name));
    };

    let schedules = bucket("polos_schedules").await;
    for (name, value) in hostile_values() {
        let key = format!("{WORKFLOW}.{name}");
        put(schedules.clone(), key.clone(), value).await;
        planted.invalid_schedules.push(key);
    }
    // KV keys that are no `<workflow>.<key>`: no dot; a key whose `=`-base64 is not UTF-8.
    for key in ["nodot", "faults.=_w"] {
        put(
            schedules.clone(),
            key.into(),
            br#"{"cron":"* * * * *"}"#.to_vec(),
        )
        .await;
        planted.invalid_schedules.push(key.into());
    }

    let state = bucket("polos_schedule_state").await;
    for (key, value) in [
        (
            format!("{WORKFLOW}.{victim_key}"),
            b"{\"next\": 42".to_vec(),
        ),
        (format!("{WORKFLOW}.nobody"), vec![0xff; 64]),
        (
            format!("{WORKFLOW}.deep-state"),
            format!("{{\"fires\":{}}}", deep(10_000)).into_bytes(),
        ),
    ] {
        put(state.clone(), key, value).await;
    }

    let workflows = bucket("polos_workflows").await;
    for (key, value) in [
        (
            WORKFLOW.to_string(),
            b"{\"schedulable\": \"maybe\"".to_vec(),
        ),
        ("garbage-wf".into(), vec![0xc3, 0x28]),
    ] {
        put(workflows.clone(), key, value).await;
    }

    let runs = bucket("polos_runs").await;
    for (key, value) in [
        (
            format!("{WORKFLOW}.garbage-20260101T000000Z"),
            b"not a run".to_vec(),
        ),
        (
            "garbage-wf.run".into(),
            format!("{{\"output\":{}}}", deep(10_000)).into_bytes(),
        ),
    ] {
        put(runs.clone(), key, value).await;
    }

    let steps = bucket("polos_steps").await;
    for (key, value) in [
        ("garbage-run.one".to_string(), br#"{"output":"#.to_vec()),
        ("garbage-run.two".into(), vec![0xff, 0x00, 0xfe]),
    ] {
        put(steps.clone(), key, value).await;
    }

    // The valid schedule's overlap record (its next run replaces it) and cancel requests that
    // are not cancel records (for no run that will fire).
    let overlap = bucket("polos_overlap").await;
    for (key, value) in [
        (
            format!("{WORKFLOW}.{victim_key}"),
            b"{\"active\": 7".to_vec(),
        ),
        (
            format!("{WORKFLOW}.deep-overlap"),
            format!("{{\"waiting\":{}}}", deep(10_000)).into_bytes(),
        ),
    ] {
        put(overlap.clone(), key, value).await;
    }
    let cancels = bucket("polos_cancels").await;
    for (key, value) in [
        (
            format!("{WORKFLOW}.garbage-20260101T000000Z"),
            b"not a cancel".to_vec(),
        ),
        ("garbage-wf.x".into(), vec![0xff, 0xfe]),
    ] {
        put(cancels.clone(), key, value).await;
    }

    let leases = bucket("polos_leases").await;
    for (key, value) in [
        // The live lease: the leader's next renewal finds garbage where its value was.
        (
            "scheduler".to_string(),
            b"{\"holder\": 7, \"ttl_secs\": -1".to_vec(),
        ),
        ("someone-else".into(), vec![0xff; 16]),
    ] {
        put(leases.clone(), key, value).await;
    }

    let subject = format!("polos.runs.{WORKFLOW}");
    let with = |pairs: &[(&str, &str)]| {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.insert(*k, *v);
        }
        h
    };
    let messages: Vec<(HeaderMap, Vec<u8>)> = vec![
        (HeaderMap::new(), b"garbage".to_vec()),
        (HeaderMap::new(), Vec::new()),
        (
            with(&[("Polos-Trigger", "schedule"), ("Polos-Run-Id", "../../etc/passwd")]),
            br#"{"timestamp":"2026-01-01T00:00:00Z","last_timestamp":null,"timezone":"UTC","schedule_id":"sch_x","key":"k","upcoming":"2026-01-01T00:01:00Z"}"#.to_vec(),
        ),
        (
            with(&[("Polos-Trigger", "bogus")]),
            br#"{"timestamp":"2026-01-01T00:00:00Z"}"#.to_vec(),
        ),
        (with(&[("Polos-Trigger", "schedule")]), vec![0xff, 0xfe, 0xfd]),
        (with(&[("Polos-Trigger", "schedule")]), deep(10_000).into_bytes()),
        (
            with(&[("Polos-Trigger", "manual")]),
            format!("{{\"timestamp\":\"{}\"}}", "9".repeat(512 * 1024)).into_bytes(),
        ),
    ];
    for (headers, body) in messages {
        js.publish_with_headers(subject.clone(), headers, Bytes::from(body))
            .await
            .expect("publish garbage")
            .await
            .expect("garbage stored");
        planted.stream_messages += 1;
    }
    planted
}

/// Keys in `planted.invalid_schedules` whose state record has no `error`: each is a schedule
/// the scheduler skipped without saying why where the README promises it does.
pub async fn invalid_without_error(js: &jetstream::Context, planted: &Planted) -> Vec<String> {
    let state = js
        .get_key_value("polos_schedule_state")
        .await
        .expect("polos_schedule_state");
    let mut missing = Vec::new();
    for key in &planted.invalid_schedules {
        let error = match state.get(key).await {
            Ok(Some(bytes)) => serde_json::from_slice::<serde_json::Value>(&bytes)
                .ok()
                .and_then(|v| v["error"].as_str().map(str::to_string)),
            _ => None,
        };
        if error.as_deref().is_none_or(str::is_empty) {
            missing.push(key.clone());
        }
    }
    missing
}
