//! The workload of the fault suite: one workflow with three durable steps, run by worker
//! processes. Every execution of a step body appends one line to a file shared by all worker
//! processes (`O_APPEND`, one `write` per line), so side effects are counted outside the
//! processes that perform them, and a killed worker cannot take its count with it.
//!
//! Lines: `start <run_id> - <pid>` when the handler starts (informational: a redelivered run
//! starts again), `done <run_id> <step> <pid> <unix ms>` as the last act of a step body (the
//! side effect whose count must be exactly one; the time tells whether a repeat came after the
//! step's output was stored).

use std::collections::HashMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Duration;

use polos::model::SchedulePayload;
use polos::worker::{Worker, Workflow, WorkflowContext, WorkflowError};
use serde_json::json;

/// The workflow every schedule of the fault suite fires.
pub const WORKFLOW: &str = "faults";
/// Its steps, in order.
pub const STEPS: [&str; 3] = ["one", "two", "three"];
/// In a worker child's environment: the effects file. Its presence makes the entry point a worker.
/// (Not `POLOS_*`: the worker's configuration refuses unknown `POLOS_` keys.)
pub const EFFECTS_ENV: &str = "FAULT_SUITE_EFFECTS";
/// In a worker child's environment: how long step two works, in ms — the window in which a
/// worker kill lands mid-step, long before the step's side effect is written.
pub const STEP_MS_ENV: &str = "FAULT_SUITE_STEP_MS";

/// Appends `line` to `path` in one `write` on an `O_APPEND` descriptor: lines of concurrent
/// processes never interleave.
pub fn append(path: &Path, line: &str) {
    let mut file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .unwrap_or_else(|e| panic!("open effects file {}: {e}", path.display()));
    file.write_all(format!("{line}\n").as_bytes())
        .unwrap_or_else(|e| panic!("append to effects file {}: {e}", path.display()));
}

/// The fault suite's workflow: steps `one` (instant), `two` (works `step_two`), `three`.
pub fn workflow(effects: PathBuf, step_two: Duration) -> Workflow {
    Workflow::new(
        WORKFLOW,
        move |ctx: WorkflowContext, _payload: SchedulePayload| {
            let effects = effects.clone();
            async move {
                let run = ctx.run_id().to_string();
                let pid = std::process::id();
                append(&effects, &format!("start {run} - {pid}"));
                // One line per body execution, written when its side effect is done, naming
                // when the body began (unix ms): a body that began after its step's output
                // was stored would break "not run again once stored".
                let now = || chrono::Utc::now().timestamp_millis();
                let done = |step: &str, began: i64| {
                    append(&effects, &format!("done {run} {step} {pid} {began}"));
                };
                ctx.step
                    .run("one", || async {
                        done("one", now());
                        Ok::<_, WorkflowError>(1)
                    })
                    .await?;
                ctx.step
                    .run("two", || async {
                        let began = now();
                        tokio::time::sleep(step_two).await;
                        done("two", began);
                        Ok::<_, WorkflowError>(2)
                    })
                    .await?;
                ctx.step
                    .run("three", || async {
                        done("three", now());
                        Ok::<_, WorkflowError>(3)
                    })
                    .await?;
                Ok(json!({ "run_id": run }))
            }
        },
    )
}

/// The body of a worker child process: configured by `POLOS_*` like any worker binary, runs
/// until killed. A worker that stops on its own prints why and exits non-zero, which the
/// suite reports as a process that would have needed a restart.
pub async fn run_worker_child(effects: PathBuf) {
    let config = polos::config::Config::from_env().expect("worker child: POLOS_* configuration");
    polos::cli::init_logging(&config);
    let step_two = std::env::var(STEP_MS_ENV)
        .ok()
        .and_then(|ms| ms.parse().ok())
        .map_or(Duration::from_secs(3), Duration::from_millis);
    let client = polos::nats::connect(&config.nats)
        .await
        .expect("worker child: connect to NATS");
    let result = Worker::from_config(client, &config)
        .workflow(workflow(effects, step_two))
        .run(std::future::pending())
        .await;
    eprintln!("worker child: the worker stopped on its own: {result:?}");
    std::process::exit(3);
}

/// Step side effects and handler starts read back from the effects file.
#[derive(Debug, Default)]
pub struct Effects {
    /// `(run_id, step)` → when (unix ms) each execution of its body began.
    pub done: HashMap<(String, String), Vec<i64>>,
    /// `run_id` → how many times a handler started it.
    pub started: HashMap<String, usize>,
    /// Every handler start: (run id, worker pid).
    pub starts: Vec<(String, u32)>,
}

impl Effects {
    /// Reads `path` (missing file: nothing happened yet).
    pub fn read(path: &Path) -> Effects {
        let text = std::fs::read_to_string(path).unwrap_or_default();
        let mut effects = Effects::default();
        for line in text.lines() {
            let mut parts = line.split(' ');
            match (parts.next(), parts.next(), parts.next()) {
                (Some("start"), Some(run), _) => {
                    *effects.started.entry(run.to_string()).or_default() += 1;
                    let pid = line.rsplit(' ').next().and_then(|p| p.parse().ok());
                    effects.starts.push((run.to_string(), pid.unwrap_or(0)));
                }
                (Some("done"), Some(run), Some(step)) => {
                    let ms = line.rsplit(' ').next().and_then(|t| t.parse().ok());
                    effects
                        .done
                        .entry((run.to_string(), step.to_string()))
                        .or_default()
                        .push(ms.unwrap_or(0));
                }
                _ => panic!("effects file {}: unreadable line {line:?}", path.display()),
            }
        }
        effects
    }

    /// How many times step `step` of `run_id` ran to the end.
    pub fn count(&self, run_id: &str, step: &str) -> usize {
        self.began(run_id, step).len()
    }

    /// When each execution of step `step` of `run_id` began (unix ms).
    pub fn began(&self, run_id: &str, step: &str) -> &[i64] {
        self.done
            .get(&(run_id.to_string(), step.to_string()))
            .map_or(&[], Vec::as_slice)
    }
}
