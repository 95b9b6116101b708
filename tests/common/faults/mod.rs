//! The fault harness: real processes, real faults, a verdict from outside.
//!
//! A scenario runs `polos scheduler` replicas (the real binary, configured by `POLOS_*`), worker
//! processes (this test binary re-executed) and a nats-server or a 3-node cluster, injects one
//! fault per minute boundary while many schedules fire, and then counts — from KV, the stream,
//! a core subscription and a file the step bodies append to — whether every expected
//! (schedule, instant) ran exactly once and whether every process is still alive.
//!
//! | file | what |
//! |---|---|
//! | `workload` | the workflow (three durable steps) and the effects file its step bodies append to |
//! | `procs` | child processes with stderr in files: kill -9, SIGSTOP/SIGCONT, exit checks |
//! | `topology` | one nats-server or a 3-node cluster; kill, restart, clean restart, stream leaders |
//! | `observer` | core subscriptions that see every fire published and the stream's PubAck to it |
//! | `garbage` | hostile values for every bucket and hostile messages for the fire subject |
//! | `scenario` | the faults, their timing against minute boundaries, one scenario's run |
//! | `verdict` | expected pairs; completed, duplicated, lost; the stream against the run records |

pub mod garbage;
pub mod observer;
pub mod procs;
pub mod scenario;
pub mod topology;
pub mod verdict;
pub mod workload;

pub use scenario::{Fault, Scenario};
pub use topology::Topology;
pub use verdict::Row;

/// Runs `scenarios` at once (each on its own servers; they mostly wait for minute boundaries),
/// prints the result table and every failed scenario's logs, and fails if any guarantee broke.
///
/// `POLOS_FAULTS_ONLY=<text>` keeps only the scenarios whose name contains `<text>` (to look
/// at one while fixing it); `POLOS_FAULTS_REPORT=<path>` also writes the table to a file;
/// `POLOS_FAULTS_KEEP=1` keeps every scenario's directory (process logs, effects file), not
/// only those of failed scenarios.
pub async fn run_all(mut scenarios: Vec<Scenario>) {
    if let Ok(only) = std::env::var("POLOS_FAULTS_ONLY") {
        scenarios.retain(|s| s.name.contains(&only));
        assert!(
            !scenarios.is_empty(),
            "POLOS_FAULTS_ONLY={only:?} matches no scenario"
        );
    }
    let names: Vec<String> = scenarios.iter().map(|s| s.name.clone()).collect();
    let total = names.len();
    let handles: Vec<_> = scenarios
        .into_iter()
        .map(|s| tokio::spawn(s.run()))
        .collect();
    let mut rows = Vec::new();
    let mut failures = Vec::new();
    for (name, handle) in names.into_iter().zip(handles) {
        match handle.await {
            Ok(outcome) => {
                if outcome.problems.is_empty() && !outcome.diagnostics.is_empty() {
                    eprintln!("scenario {name}: {}", outcome.diagnostics.trim());
                }
                if !outcome.problems.is_empty() {
                    failures.push(format!(
                        "scenario {name}:\n  {}\n{}",
                        outcome.problems.join("\n  "),
                        outcome.diagnostics
                    ));
                }
                rows.push(outcome.row);
            }
            Err(e) => failures.push(format!("scenario {name} panicked: {e}")),
        }
    }
    let mut table = format!("\n{}\n", Row::HEADER);
    for row in &rows {
        table.push_str(&row.markdown());
        table.push('\n');
    }
    eprintln!("{table}");
    if let Ok(path) = std::env::var("POLOS_FAULTS_REPORT") {
        let _ = std::fs::write(&path, &table);
    }
    assert!(
        failures.is_empty(),
        "{} of {} scenarios broke a guarantee:\n\n{}\n{table}",
        failures.len(),
        total,
        failures.join("\n\n")
    );
}
