//! The verdict of a scenario, computed from outside every polos process: the run records in KV
//! `polos_runs`, the step side effects in the effects file, the fires and PubAcks the observer
//! saw, and the stream's own sequence counter.

use std::collections::HashMap;
use std::path::Path;
use std::time::Duration;

use async_nats::jetstream;
use chrono::{DateTime, Utc};
use futures::TryStreamExt;
use polos::model::time::format_instant;
use polos::model::{run_id_for, run_kv_key, schedule_id, step_kv_key};

use super::observer::Observer;
use super::workload::{Effects, STEPS, WORKFLOW};

/// One line of the README's "Guarantees, proven" table.
#[derive(Debug, Clone)]
pub struct Row {
    /// Scenario name.
    pub scenario: String,
    /// The faults injected, in order.
    pub faults: String,
    /// (schedule, instant) pairs whose instant fell inside the observation window.
    pub expected: usize,
    /// Of those, how many have a `completed` run record.
    pub completed: usize,
    /// Of those, how many were stored as fires more than once or ran a step body again after
    /// its output was stored (what the guarantee excludes).
    pub duplicated: usize,
    /// Of those, how many ran a step body more than once *before* its output was stored: the
    /// documented at-least-once of a step whose execution was cut off (a worker that lost the
    /// server mid-step for longer than `ack_wait`); shown, not a failure.
    pub rerun_before_stored: usize,
    /// Of those, how many have no `completed` run record.
    pub lost: usize,
}

impl Row {
    /// The Markdown table header matching [`Row::markdown`].
    pub const HEADER: &'static str = "| scenario | faults | instants expected | completed | duplicated | lost | step re-runs before stored (at least once) |\n|---|---|---|---|---|---|---|";

    /// The row as a Markdown table line.
    pub fn markdown(&self) -> String {
        format!(
            "| {} | {} | {} | {} | {} | {} | {} |",
            self.scenario,
            self.faults,
            self.expected,
            self.completed,
            self.duplicated,
            self.lost,
            self.rerun_before_stored
        )
    }
}

/// One expected (schedule, instant) and the names the contract derives from it.
#[derive(Debug, Clone)]
pub struct Expected {
    /// The schedule key (`k07`).
    pub key: String,
    /// The instant.
    pub instant: DateTime<Utc>,
    /// `<schedule_id>-<YYYYMMDDTHHMMSSZ>`.
    pub run_id: String,
    /// `<schedule_id>@<instant>`.
    pub msg_id: String,
}

/// Every (key, instant) pair.
pub fn expected(keys: &[String], instants: &[DateTime<Utc>]) -> Vec<Expected> {
    let mut out = Vec::new();
    for instant in instants {
        for key in keys {
            let sid = schedule_id(WORKFLOW, key);
            out.push(Expected {
                key: key.clone(),
                instant: *instant,
                run_id: run_id_for(&sid, *instant),
                msg_id: format!("{sid}@{}", format_instant(*instant)),
            });
        }
    }
    out
}

/// Run statuses (`"completed"`, …) of the expected runs, `None` where there is no record.
async fn statuses(runs: &jetstream::kv::Store, expected: &[Expected]) -> Vec<Option<String>> {
    let mut out = Vec::with_capacity(expected.len());
    for e in expected {
        let status = match runs.get(run_kv_key(WORKFLOW, &e.run_id)).await {
            Ok(Some(bytes)) => Some(
                serde_json::from_slice::<serde_json::Value>(&bytes)
                    .ok()
                    .and_then(|v| v["status"].as_str().map(str::to_string))
                    .unwrap_or_else(|| "unreadable".into()),
            ),
            Ok(None) => None,
            Err(e) => Some(format!("read error: {e}")),
        };
        out.push(status);
    }
    out
}

/// Waits (bounded by `patience`) until every expected run is `completed`, then counts.
/// Returns the row's numbers and every problem found, by name.
pub async fn judge(
    js: &jetstream::Context,
    observer: &Observer,
    effects_path: &Path,
    expected: &[Expected],
    patience: Duration,
) -> Judged {
    let runs = js.get_key_value("polos_runs").await.expect("polos_runs");
    let steps = js.get_key_value("polos_steps").await.expect("polos_steps");
    let deadline = tokio::time::Instant::now() + patience;
    let mut seen = statuses(&runs, expected).await;
    while seen.iter().any(|s| s.as_deref() != Some("completed"))
        && tokio::time::Instant::now() < deadline
    {
        tokio::time::sleep(Duration::from_millis(500)).await;
        seen = statuses(&runs, expected).await;
    }
    let effects = Effects::read(effects_path);
    let stored = observer.stored_sequences();
    let mut problems = Vec::new();
    let (mut completed, mut duplicated, mut reruns) = (0, 0, 0);
    for (e, status) in expected.iter().zip(&seen) {
        let at = format_instant(e.instant);
        let is_completed = status.as_deref() == Some("completed");
        if is_completed {
            completed += 1;
        } else {
            problems.push(format!(
                "{} @ {at}: no completed run (record status: {})",
                e.key,
                status.as_deref().unwrap_or("absent")
            ));
        }
        let copies = stored.get(&e.msg_id).map_or(0, |s| s.len());
        let step_counts: Vec<usize> = STEPS.iter().map(|s| effects.count(&e.run_id, s)).collect();
        if copies > 1 || step_counts.iter().any(|&c| c > 1) {
            let after = after_stored(&steps, &effects, &e.run_id).await;
            if copies > 1 || after.iter().any(|&n| n > 0) {
                duplicated += 1;
                problems.push(format!(
                    "{} @ {at}: duplicated — stored {copies} times, step bodies ran {step_counts:?} times (one, two, three), {after:?} of them began more than 3 s after the step's output was stored",
                    e.key
                ));
            } else {
                reruns += 1;
                eprintln!(
                    "{} @ {at}: step bodies ran {step_counts:?} times (one, two, three), all before their output was stored (at least once)",
                    e.key
                );
            }
        }
        if is_completed && step_counts.contains(&0) {
            problems.push(format!(
                "{} @ {at}: completed but a step's side effect is missing: ran {step_counts:?} times",
                e.key
            ));
        }
    }
    let lost = expected.len() - completed;
    Judged {
        completed,
        duplicated,
        lost,
        rerun_before_stored: reruns,
        problems,
    }
}

/// What [`judge`] found.
pub struct Judged {
    /// Expected runs that completed.
    pub completed: usize,
    /// Stored twice, or a step body began after its output was stored.
    pub duplicated: usize,
    /// Expected runs without a completed record.
    pub lost: usize,
    /// Step bodies re-run before their output was stored (at least once).
    pub rerun_before_stored: usize,
    /// Every problem, by name.
    pub problems: Vec<String>,
}

/// Per step: how many executions of its body began well after its output was stored (server
/// time of the `polos_steps` entry; one machine, one clock). A repeat before that is the
/// at-least-once of an execution cut off before its store, or of two overlapping executions: an
/// execution that looked the step up a moment before the other stored it then runs the body just
/// after — hence the margin, far longer than a look-up followed by a claim check. One beginning
/// later than that re-ran a step whose result already existed.
async fn after_stored(steps: &jetstream::kv::Store, effects: &Effects, run_id: &str) -> Vec<usize> {
    let mut out = Vec::new();
    for step in STEPS {
        let stored_ms = match steps.entry(step_kv_key(run_id, step)).await {
            Ok(Some(entry)) => (entry.created.unix_timestamp_nanos() / 1_000_000) as i64,
            _ => i64::MAX,
        };
        out.push(
            effects
                .began(run_id, step)
                .iter()
                .filter(|&&ms| ms > stored_ms.saturating_add(RACE_MARGIN_MS))
                .count(),
        );
    }
    out
}

/// How long after a step's output was stored a racing execution may still begin its body (its
/// look-up came just before the store; then it checked its claim).
const RACE_MARGIN_MS: i64 = 3_000;

/// After the stream has drained, the stream must have stored no more fires than there are run
/// records (plus `other_messages` the test itself published): a check the observer cannot miss
/// by being disconnected. Returns a problem when it fails or the stream does not drain.
pub async fn stream_matches_runs(
    js: &jetstream::Context,
    other_messages: u64,
    patience: Duration,
) -> Option<String> {
    let runs = js.get_key_value("polos_runs").await.expect("polos_runs");
    let deadline = tokio::time::Instant::now() + patience;
    let mut last = String::new();
    loop {
        if tokio::time::Instant::now() > deadline {
            return Some(format!(
                "POLOS_RUNS did not drain within {patience:?}: {last}"
            ));
        }
        let before = match stream_state(js).await {
            Ok(s) => s,
            Err(e) => {
                last = e;
                tokio::time::sleep(Duration::from_millis(500)).await;
                continue;
            }
        };
        if before.0 != 0 {
            last = format!(
                "{} messages still in the stream, the first: {}",
                before.0,
                first_message(js).await
            );
            tokio::time::sleep(Duration::from_millis(500)).await;
            continue;
        }
        let run_records = match run_record_count(&runs).await {
            Ok(n) => n,
            Err(e) => {
                last = e;
                continue;
            }
        };
        let after = stream_state(js).await.unwrap_or((u64::MAX, 0));
        if after != before {
            // A fire arrived meanwhile: count again.
            continue;
        }
        let stored = before.1;
        let accounted = run_records + other_messages;
        return (stored > accounted).then(|| {
            format!(
                "POLOS_RUNS stored {stored} messages but there are {run_records} run records (+ {other_messages} test messages): {} fires were stored more than once",
                stored - accounted
            )
        });
    }
}

/// The subject and headers of the oldest message in `POLOS_RUNS`: which fire is stuck.
async fn first_message(js: &jetstream::Context) -> String {
    let Ok(mut stream) = js.get_stream("POLOS_RUNS").await else {
        return "(stream unreadable)".into();
    };
    let Ok(info) = stream.info().await else {
        return "(stream unreadable)".into();
    };
    let first = info.state.first_sequence;
    match stream.get_raw_message(first).await {
        Ok(m) => {
            let headers = m
                .headers
                .iter()
                .map(|(k, v)| {
                    format!(
                        "{k}: {}",
                        v.iter().map(|v| v.as_str()).collect::<Vec<_>>().join(",")
                    )
                })
                .collect::<Vec<_>>()
                .join("; ");
            format!(
                "seq {first} on {} [{headers}] body {:?}",
                m.subject,
                String::from_utf8_lossy(&m.payload[..m.payload.len().min(120)])
            )
        }
        Err(e) => format!("(seq {first} unreadable: {e})"),
    }
}

/// (messages in the stream, last sequence).
async fn stream_state(js: &jetstream::Context) -> Result<(u64, u64), String> {
    let mut stream = js
        .get_stream("POLOS_RUNS")
        .await
        .map_err(|e| e.to_string())?;
    let info = stream.info().await.map_err(|e| e.to_string())?;
    Ok((info.state.messages, info.state.last_sequence))
}

/// Run records of the fault workflow (`faults.sch_…`), so test garbage is not counted.
async fn run_record_count(runs: &jetstream::kv::Store) -> Result<u64, String> {
    let keys: Vec<String> = runs
        .keys()
        .await
        .map_err(|e| e.to_string())?
        .try_collect()
        .await
        .map_err(|e| e.to_string())?;
    let prefix = format!("{WORKFLOW}.sch_");
    Ok(keys.iter().filter(|k| k.starts_with(&prefix)).count() as u64)
}

/// How often each trigger was published for the expected instants (diagnostics).
pub fn triggers(observer: &Observer, expected: &[Expected]) -> HashMap<String, usize> {
    let wanted: std::collections::HashSet<&str> =
        expected.iter().map(|e| e.msg_id.as_str()).collect();
    let mut out = HashMap::new();
    for p in observer.publishes() {
        if wanted.contains(p.msg_id.as_str()) {
            *out.entry(p.trigger).or_default() += 1;
        }
    }
    out
}
