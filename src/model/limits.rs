//! [`Limits`]: how large a request, a key, a cron expression and a note may be, and how many
//! schedules one workflow may have — the `[limits]` configuration section, and the checks the
//! API (on every request) and the scheduler (on every stored value) apply with it.
//!
//! Every refusal is a [`LimitError`] that names what was too large, by how much, and the
//! setting (with its environment variable) that would allow it.

use serde::{Deserialize, Serialize};
use thiserror::Error;

use super::error::shorten;
use super::{ScheduleRecord, MAX_KEY_BYTES};

/// `[limits]`: what the schedules API accepts and the scheduler fires.
///
/// The API refuses a request beyond a limit with an error naming the limit and its setting;
/// the scheduler treats a value written straight into KV beyond a limit as invalid (it does not
/// fire, and its state record says which limit it broke). Set the same limits on every
/// scheduler replica.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Limits {
    /// Largest API request body, in bytes. Every valid request is far smaller; the cap bounds
    /// the work one message can cause.
    pub max_request_bytes: usize,
    /// Longest schedule key, in UTF-8 bytes: at most 256, the contract's limit, which every
    /// reader of the buckets (other-language clients, older polos) accepts.
    pub max_key_bytes: usize,
    /// Longest cron expression, in bytes. Every minute, hour, day, month and weekday spelled
    /// out as lists comes to about 360 bytes.
    pub max_cron_bytes: usize,
    /// Longest `note`, in bytes.
    pub max_note_bytes: usize,
    /// Most schedules one workflow may have; a create beyond it is refused (updates and deletes
    /// are not). 0: no limit. Counted by the API service from a live view of the bucket.
    pub max_schedules_per_workflow: u64,
}

/// The default of `limits.max_request_bytes`: 64 KiB.
pub const DEFAULT_MAX_REQUEST_BYTES: usize = 64 * 1024;
/// The default of `limits.max_note_bytes`: 4 KiB.
pub const DEFAULT_MAX_NOTE_BYTES: usize = 4096;
/// The default of `limits.max_cron_bytes`.
pub const DEFAULT_MAX_CRON_BYTES: usize = 512;
/// The default of `limits.max_schedules_per_workflow`: the design's largest case (a million
/// per-user schedules) fits.
pub const DEFAULT_MAX_SCHEDULES_PER_WORKFLOW: u64 = 1_000_000;
/// The largest `limits.max_request_bytes`: nats-server's largest `max_payload` (64 MiB); a
/// larger request could never arrive.
pub const LARGEST_MAX_REQUEST_BYTES: usize = 64 * 1024 * 1024;
/// The smallest `limits.max_request_bytes`: below it a create with a long key and zone fails.
pub const SMALLEST_MAX_REQUEST_BYTES: usize = 1024;
/// The smallest `limits.max_cron_bytes`: the length of `* * * * *`.
pub const SMALLEST_MAX_CRON_BYTES: usize = 9;

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_request_bytes: DEFAULT_MAX_REQUEST_BYTES,
            max_key_bytes: MAX_KEY_BYTES,
            max_cron_bytes: DEFAULT_MAX_CRON_BYTES,
            max_note_bytes: DEFAULT_MAX_NOTE_BYTES,
            max_schedules_per_workflow: DEFAULT_MAX_SCHEDULES_PER_WORKFLOW,
        }
    }
}

/// One of the limits, for errors and for matching on which one was hit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Limit {
    /// `limits.max_request_bytes`.
    RequestBytes,
    /// `limits.max_key_bytes`.
    KeyBytes,
    /// `limits.max_cron_bytes`.
    CronBytes,
    /// `limits.max_note_bytes`.
    NoteBytes,
    /// `limits.max_schedules_per_workflow`.
    SchedulesPerWorkflow,
}

impl Limit {
    /// Every limit, in the order of the `[limits]` section.
    pub const ALL: [Limit; 5] = [
        Limit::RequestBytes,
        Limit::KeyBytes,
        Limit::CronBytes,
        Limit::NoteBytes,
        Limit::SchedulesPerWorkflow,
    ];

    /// The dotted configuration key (`limits.max_note_bytes`).
    pub fn setting(self) -> &'static str {
        match self {
            Limit::RequestBytes => "limits.max_request_bytes",
            Limit::KeyBytes => "limits.max_key_bytes",
            Limit::CronBytes => "limits.max_cron_bytes",
            Limit::NoteBytes => "limits.max_note_bytes",
            Limit::SchedulesPerWorkflow => "limits.max_schedules_per_workflow",
        }
    }

    /// The environment variable of the setting (`POLOS_LIMITS__MAX_NOTE_BYTES`).
    pub fn env(self) -> &'static str {
        match self {
            Limit::RequestBytes => "POLOS_LIMITS__MAX_REQUEST_BYTES",
            Limit::KeyBytes => "POLOS_LIMITS__MAX_KEY_BYTES",
            Limit::CronBytes => "POLOS_LIMITS__MAX_CRON_BYTES",
            Limit::NoteBytes => "POLOS_LIMITS__MAX_NOTE_BYTES",
            Limit::SchedulesPerWorkflow => "POLOS_LIMITS__MAX_SCHEDULES_PER_WORKFLOW",
        }
    }

    /// What to do instead of raising the limit.
    fn fix(self) -> &'static str {
        match self {
            Limit::RequestBytes => "send only the documented fields",
            Limit::KeyBytes => "use a shorter key (a user id, not a description)",
            Limit::CronBytes => {
                "write the expression with ranges and steps (`1-5`, `*/15`) instead of long lists"
            }
            Limit::NoteBytes => "shorten the note",
            Limit::SchedulesPerWorkflow => "delete schedules that are no longer needed",
        }
    }
}

/// A request or stored value beyond one of the [`Limits`].
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub struct LimitError {
    /// Which limit.
    pub limit: Limit,
    /// What was too large, as the message names it (`the note`, `the key "…"`); for
    /// [`Limit::SchedulesPerWorkflow`] the workflow id.
    pub what: String,
    /// Its size in bytes, or for [`Limit::SchedulesPerWorkflow`] the schedules it has.
    pub value: u64,
    /// The configured limit.
    pub max: u64,
}

impl std::fmt::Display for LimitError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let limit = self.limit;
        match limit {
            Limit::SchedulesPerWorkflow => write!(
                f,
                "workflow {:?} already has {} schedules, the limit set by {} ({}) on the scheduler",
                self.what,
                self.value,
                limit.setting(),
                limit.env()
            )?,
            _ => write!(
                f,
                "{} is {} bytes, over the limit of {} set by {} ({}) on the scheduler",
                self.what,
                self.value,
                self.max,
                limit.setting(),
                limit.env()
            )?,
        }
        write!(f, "; {}, or raise the limit", limit.fix())?;
        if limit == Limit::KeyBytes {
            write!(f, " (to at most {MAX_KEY_BYTES}, the contract's limit)")?;
        }
        Ok(())
    }
}

/// A `[limits]` setting that cannot work (a key limit above the contract's, say).
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[error("{} = {value} ({}) {why}", .limit.setting(), .limit.env())]
pub struct InvalidLimit {
    /// Which setting.
    pub limit: Limit,
    /// The value given.
    pub value: String,
    /// The accepted range, and why.
    pub why: String,
}

/// `usize` as `u64` for messages; every size here is far below `u64::MAX`.
fn wide(n: usize) -> u64 {
    u64::try_from(n).unwrap_or(u64::MAX)
}

impl Limits {
    fn check(
        &self,
        limit: Limit,
        what: impl FnOnce() -> String,
        value: usize,
    ) -> Result<(), LimitError> {
        let max = match limit {
            Limit::RequestBytes => self.max_request_bytes,
            Limit::KeyBytes => self.max_key_bytes,
            Limit::CronBytes => self.max_cron_bytes,
            Limit::NoteBytes => self.max_note_bytes,
            // Counted by `check_schedule_count`, never by size.
            Limit::SchedulesPerWorkflow => return Ok(()),
        };
        if value <= max {
            return Ok(());
        }
        Err(LimitError {
            limit,
            what: what(),
            value: wide(value),
            max: wide(max),
        })
    }

    /// A request body of `len` bytes.
    pub fn check_request(&self, len: usize) -> Result<(), LimitError> {
        self.check(Limit::RequestBytes, || "the request".into(), len)
    }

    /// A schedule key (the contract's own 256-byte limit is checked by
    /// [`validate_key`](super::validate_key)).
    pub fn check_key(&self, key: &str) -> Result<(), LimitError> {
        self.check(
            Limit::KeyBytes,
            || format!("field \"key\" ({:?})", shorten(key, 40)),
            key.len(),
        )
    }

    /// A cron expression.
    pub fn check_cron(&self, cron: &str) -> Result<(), LimitError> {
        self.check(
            Limit::CronBytes,
            || format!("field \"cron\" ({:?})", shorten(cron, 40)),
            cron.len(),
        )
    }

    /// A note, when there is one.
    pub fn check_note(&self, note: Option<&str>) -> Result<(), LimitError> {
        self.check_free_text("note", note)
    }

    /// Free text held to the note's limit (a note, a cancel request's `reason`), when there is
    /// one; the refusal names `field`.
    pub fn check_free_text(&self, field: &str, text: Option<&str>) -> Result<(), LimitError> {
        match text {
            Some(text) => self.check(Limit::NoteBytes, || format!("field {field:?}"), text.len()),
            None => Ok(()),
        }
    }

    /// Whether `workflow`, which has `existing` schedules, may get one more.
    pub fn check_schedule_count(&self, workflow: &str, existing: u64) -> Result<(), LimitError> {
        let max = self.max_schedules_per_workflow;
        if max == 0 || existing < max {
            return Ok(());
        }
        Err(LimitError {
            limit: Limit::SchedulesPerWorkflow,
            what: workflow.to_string(),
            value: existing,
            max,
        })
    }

    /// Every size limit a stored schedule value must keep: key, cron and note. (The request
    /// size does not apply to stored values, and the schedule count is the API's admission
    /// check: see the README's Limits section.)
    pub fn check_record(&self, record: &ScheduleRecord) -> Result<(), LimitError> {
        self.check_stored(&record.key, &record.cron, record.note.as_deref())
    }

    /// [`Limits::check_record`] of a record's key, cron and note.
    pub(crate) fn check_stored(
        &self,
        key: &str,
        cron: &str,
        note: Option<&str>,
    ) -> Result<(), LimitError> {
        self.check_key(key)?;
        self.check_cron(cron)?;
        self.check_note(note)
    }

    /// Checks that the limits can work, naming the setting that cannot.
    pub fn validate(&self) -> Result<(), InvalidLimit> {
        let refuse = |limit: Limit, value: usize, why: String| {
            Err(InvalidLimit {
                limit,
                value: value.to_string(),
                why,
            })
        };
        if !(SMALLEST_MAX_REQUEST_BYTES..=LARGEST_MAX_REQUEST_BYTES)
            .contains(&self.max_request_bytes)
        {
            return refuse(
                Limit::RequestBytes,
                self.max_request_bytes,
                format!("must be between {SMALLEST_MAX_REQUEST_BYTES} and {LARGEST_MAX_REQUEST_BYTES} bytes (nats-server's largest max_payload)"),
            );
        }
        if !(1..=MAX_KEY_BYTES).contains(&self.max_key_bytes) {
            return refuse(
                Limit::KeyBytes,
                self.max_key_bytes,
                format!("must be between 1 and {MAX_KEY_BYTES} bytes: the contract promises every reader of the buckets keys of at most {MAX_KEY_BYTES} bytes, so a limit may only be lower"),
            );
        }
        if self.max_cron_bytes < SMALLEST_MAX_CRON_BYTES {
            return refuse(
                Limit::CronBytes,
                self.max_cron_bytes,
                format!("must be at least {SMALLEST_MAX_CRON_BYTES} bytes (the length of \"* * * * *\")"),
            );
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_boundary_passes_and_one_more_is_refused() {
        let limits = Limits {
            max_request_bytes: 2000,
            max_key_bytes: 10,
            max_cron_bytes: 12,
            max_note_bytes: 5,
            max_schedules_per_workflow: 3,
        };
        assert!(limits.check_request(2000).is_ok());
        assert!(limits.check_request(2001).is_err());
        assert!(limits.check_key("0123456789").is_ok());
        assert!(limits.check_key("0123456789a").is_err());
        assert!(limits.check_cron("0 8 * * 1-5").is_ok()); // 11 bytes
        assert!(limits.check_cron("0 8 * * 1,2,3").is_err()); // 13 bytes
        assert!(limits.check_note(Some("12345")).is_ok());
        assert!(limits.check_note(Some("123456")).is_err());
        assert!(limits.check_note(None).is_ok());
        assert!(limits.check_schedule_count("wf", 2).is_ok());
        assert!(limits.check_schedule_count("wf", 3).is_err());
        let unlimited = Limits {
            max_schedules_per_workflow: 0,
            ..limits
        };
        assert!(unlimited.check_schedule_count("wf", u64::MAX).is_ok());
    }

    #[test]
    fn a_refusal_names_the_value_the_limit_and_the_setting() {
        let limits = Limits {
            max_note_bytes: 5,
            max_schedules_per_workflow: 3,
            max_key_bytes: 4,
            ..Limits::default()
        };
        let e = limits.check_note(Some("123456")).unwrap_err().to_string();
        assert_eq!(
            e,
            "field \"note\" is 6 bytes, over the limit of 5 set by limits.max_note_bytes (POLOS_LIMITS__MAX_NOTE_BYTES) on the scheduler; shorten the note, or raise the limit"
        );
        let e = limits
            .check_schedule_count("wf", 3)
            .unwrap_err()
            .to_string();
        assert!(
            e.starts_with("workflow \"wf\" already has 3 schedules, the limit set by limits.max_schedules_per_workflow (POLOS_LIMITS__MAX_SCHEDULES_PER_WORKFLOW) on the scheduler; delete schedules"),
            "{e}"
        );
        let e = limits.check_key("user_1").unwrap_err().to_string();
        assert!(
            e.contains("(\"user_1\") is 6 bytes") && e.contains("at most 256"),
            "{e}"
        );
    }

    #[test]
    fn a_key_limit_above_the_contract_is_refused() {
        let mut limits = Limits::default();
        assert_eq!(limits.validate(), Ok(()));
        limits.max_key_bytes = 257;
        let e = limits.validate().unwrap_err();
        assert_eq!((e.limit, e.value.as_str()), (Limit::KeyBytes, "257"));
        assert!(e.to_string().starts_with("limits.max_key_bytes = 257 (POLOS_LIMITS__MAX_KEY_BYTES) must be between 1 and 256 bytes: the contract"), "{e}");
        limits.max_key_bytes = 256;
        limits.max_request_bytes = 1023;
        assert_eq!(limits.validate().unwrap_err().limit, Limit::RequestBytes);
        limits.max_request_bytes = 1024;
        limits.max_cron_bytes = 8;
        assert_eq!(limits.validate().unwrap_err().limit, Limit::CronBytes);
    }
}
