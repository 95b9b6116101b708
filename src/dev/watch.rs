//! [`RunPrinter`]: one line per run status change, from a watch on KV `polos_runs`.

use std::collections::HashMap;

use futures::StreamExt;

use super::DevError;
use crate::model::names::RUNS_BUCKET;
use crate::model::{RunRecord, RunStatus};
use crate::store::{RunStore, StoreError};

/// Turns `polos_runs` updates into printable lines, skipping updates that change neither the
/// status nor the attempt (so each run prints `running`, maybe a retry, then its outcome).
#[derive(Debug, Default)]
pub struct RunPrinter {
    /// Last (status, attempt) printed per run id.
    seen: HashMap<String, (RunStatus, u32)>,
}

impl RunPrinter {
    /// The line for `record`, or `None` when nothing a user would notice changed.
    ///
    /// Format: `HH:MM:SSZ  <workflow>  <key>  <run id>  <status>  attempt <n>  [output|error]`.
    pub fn line(&mut self, record: &RunRecord) -> Option<String> {
        let now = (record.status, record.attempt);
        if self.seen.get(&record.run_id) == Some(&now) {
            return None;
        }
        self.seen.insert(record.run_id.clone(), now);
        let at = record.finished_at.unwrap_or(record.started_at);
        let detail = match record.status {
            RunStatus::Running => String::new(),
            RunStatus::Completed => match &record.output {
                Some(v) => format!("  output {v}"),
                None => String::new(),
            },
            RunStatus::Failed | RunStatus::Cancelled => {
                format!("  error {}", record.error.as_deref().unwrap_or("?"))
            }
            RunStatus::Skipped => format!(
                "  yielded to {}",
                record.yielded_to.as_deref().unwrap_or("?")
            ),
        };
        let retry = match (record.status, &record.error) {
            (RunStatus::Running, Some(e)) if record.attempt > 1 => format!("  (last error: {e})"),
            _ => String::new(),
        };
        Some(format!(
            "{}  {}  {}  {}  {}  attempt {}{detail}{retry}",
            at.format("%H:%M:%SZ"),
            record.workflow,
            record.key,
            record.run_id,
            status_text(record.status),
            record.attempt,
        ))
    }
}

fn status_text(status: RunStatus) -> &'static str {
    status.as_str()
}

/// Prints a line for every run status change from now on, until the watch ends.
pub(super) async fn print_runs(js: &async_nats::jetstream::Context) -> Result<(), DevError> {
    let fail = |source: StoreError| DevError::Watch {
        bucket: RUNS_BUCKET,
        source,
    };
    let runs = RunStore::open(js).await.map_err(fail)?;
    let mut updates = runs.watch().await.map_err(fail)?;
    let mut printer = RunPrinter::default();
    while let Some(update) = updates.next().await {
        let record = match update {
            Ok(record) => record,
            // A record another version wrote differently is skipped rather than stopping the watch.
            Err(StoreError::BadValue { .. }) => continue,
            Err(e) => return Err(fail(e)),
        };
        if let Some(line) = printer.line(&record) {
            println!("{line}");
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use chrono::TimeZone;

    use super::*;
    use crate::model::Trigger;

    fn record(status: RunStatus, attempt: u32) -> RunRecord {
        let at = chrono::Utc
            .with_ymd_and_hms(2026, 11, 25, 19, 7, 0)
            .unwrap();
        RunRecord {
            run_id: "sch_x-20261125T190700Z".into(),
            workflow: "user-reminder".into(),
            schedule_id: "sch_x".into(),
            key: "dev-demo".into(),
            trigger: Trigger::Schedule,
            scheduled_for: at,
            status,
            attempt,
            started_at: at,
            finished_at: (status != RunStatus::Running).then_some(at),
            output: (status == RunStatus::Completed).then(|| serde_json::json!({"status": "sent"})),
            error: (attempt > 1).then(|| "boom".to_string()),
            fire_seq: None,
            yielded_to: None,
        }
    }

    #[test]
    fn one_line_per_status_or_attempt_change() {
        let mut printer = RunPrinter::default();
        assert_eq!(
            printer.line(&record(RunStatus::Running, 1)).unwrap(),
            "19:07:00Z  user-reminder  dev-demo  sch_x-20261125T190700Z  running  attempt 1"
        );
        assert_eq!(printer.line(&record(RunStatus::Running, 1)), None);
        let retry = printer.line(&record(RunStatus::Running, 2)).unwrap();
        assert!(
            retry.ends_with("running  attempt 2  (last error: boom)"),
            "{retry}"
        );
        let done = printer.line(&record(RunStatus::Completed, 2)).unwrap();
        assert!(
            done.ends_with(r#"completed  attempt 2  output {"status":"sent"}"#),
            "{done}"
        );
    }
}
