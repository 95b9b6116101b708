//! Identifier rules: workflow ids, schedule keys, schedule ids and run ids (README, "The contract").

use chrono::{DateTime, Utc};
use sha2::{Digest, Sha256};

use super::ValidationError;

/// The key a schedule gets when none is given: one system-wide schedule per workflow.
pub const DEFAULT_KEY: &str = "global";
/// Longest workflow id: it is a subject token, so it stays short.
pub const MAX_WORKFLOW_LEN: usize = 128;
/// Longest schedule key, in UTF-8 bytes.
pub const MAX_KEY_BYTES: usize = 256;

/// Checks a workflow id against `[A-Za-z0-9_-]{1,128}`.
///
/// Workflow ids become subject tokens (`polos.runs.<workflow>`) and KV key prefixes, so dots,
/// spaces and wildcards are refused rather than escaped.
///
/// ```
/// assert!(polos::model::validate_workflow("daily-report").is_ok());
/// assert!(polos::model::validate_workflow("daily.report").is_err());
/// ```
pub fn validate_workflow(workflow: &str) -> Result<(), ValidationError> {
    let err = |reason: String| ValidationError::InvalidWorkflow {
        workflow: truncate(workflow),
        reason,
    };
    if workflow.is_empty() {
        return Err(err("empty string".into()));
    }
    if workflow.len() > MAX_WORKFLOW_LEN {
        return Err(err(format!(
            "{} characters (more than {MAX_WORKFLOW_LEN})",
            workflow.chars().count()
        )));
    }
    if let Some(c) = workflow
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || *c == '_' || *c == '-'))
    {
        return Err(err(format!("character {c:?} is not allowed")));
    }
    Ok(())
}

/// Checks a schedule key: any non-empty UTF-8 string of at most 256 bytes.
pub fn validate_key(key: &str) -> Result<(), ValidationError> {
    if key.is_empty() {
        return Err(ValidationError::InvalidKey {
            key: String::new(),
            reason: "the key is empty".into(),
        });
    }
    if key.len() > MAX_KEY_BYTES {
        return Err(ValidationError::InvalidKey {
            key: truncate(key),
            reason: format!("the key is {} bytes (more than {MAX_KEY_BYTES})", key.len()),
        });
    }
    Ok(())
}

/// The deterministic schedule id: `sch_` + the first 130 bits of SHA-256(`workflow \0 key`) as
/// 26 lowercase RFC 4648 base32 characters.
///
/// Deterministic so that an upsert returns the same id, concurrent creates converge, and a
/// record written straight into KV has an id too.
///
/// ```
/// // Computed independently, with Python's standard library:
/// // "sch_" + base64.b32encode(hashlib.sha256(b"user-reminder\0user_123").digest())[:26].lower()
/// assert_eq!(
///     polos::model::schedule_id("user-reminder", "user_123"),
///     "sch_b6hmtckcfbl7uxw26s5ku4fmfq"
/// );
/// // The key is part of the hash: the workflow's `global` schedule has its own id.
/// assert_eq!(
///     polos::model::schedule_id("user-reminder", "global"),
///     "sch_z55vhhqnd2wdnqjke62xlhrf6x"
/// );
/// ```
pub fn schedule_id(workflow: &str, key: &str) -> String {
    let mut id = String::with_capacity(30);
    push_schedule_id(&mut id, workflow, key);
    id
}

/// Appends [`schedule_id`]`(workflow, key)` to `out` (the ticker reuses one buffer per fire).
pub(crate) fn push_schedule_id(out: &mut String, workflow: &str, key: &str) {
    let mut hasher = Sha256::new();
    hasher.update(workflow.as_bytes());
    hasher.update([0u8]);
    hasher.update(key.as_bytes());
    let digest = hasher.finalize();
    out.push_str("sch_");
    base32_lower_prefix(&digest, 26, out);
}

/// The run id of a scheduled (or catch-up) fire: `<schedule_id>-<YYYYMMDDTHHMMSSZ>`.
///
/// Derived from the instant so that a late duplicate of the same fire finds its run already
/// completed.
pub fn run_id_for(schedule_id: &str, scheduled_for: DateTime<Utc>) -> String {
    let mut id = String::with_capacity(schedule_id.len() + 17);
    id.push_str(schedule_id);
    id.push('-');
    super::time::push_instant(&mut id, scheduled_for, false);
    id
}

/// The run id of a manual trigger: `<schedule_id>-m<nuid>`, unique per trigger.
pub fn manual_run_id(schedule_id: &str) -> String {
    format!("{schedule_id}-m{}", nuid::next())
}

const BASE32_ALPHABET: &[u8; 32] = b"abcdefghijklmnopqrstuvwxyz234567";

fn base32_lower_prefix(bytes: &[u8], chars: usize, out: &mut String) {
    let mut buffer: u32 = 0;
    let mut bits = 0u32;
    let mut written = 0;
    for &byte in bytes {
        buffer = (buffer << 8) | u32::from(byte);
        bits += 8;
        while bits >= 5 {
            bits -= 5;
            let index = ((buffer >> bits) & 0x1f) as usize;
            out.push(char::from(BASE32_ALPHABET[index]));
            written += 1;
            if written == chars {
                return;
            }
        }
    }
}

/// Shortens user input quoted in error messages so a 1 MiB key does not become a 1 MiB log line.
pub(crate) fn truncate(s: &str) -> String {
    const LIMIT: usize = 300;
    if s.len() <= LIMIT {
        return s.to_string();
    }
    let mut end = LIMIT;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &s[..end])
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    #[test]
    fn workflow_ids() {
        for ok in [
            "a",
            "daily-report",
            "end_of_day_sync",
            "A9",
            &"x".repeat(128),
        ] {
            assert!(validate_workflow(ok).is_ok(), "{ok}");
        }
        for bad in ["", "a.b", "a b", "a*", "a>", "é", &"x".repeat(129), "a/b"] {
            let e = validate_workflow(bad).unwrap_err();
            assert!(
                matches!(e, ValidationError::InvalidWorkflow { .. }),
                "{bad}"
            );
        }
    }

    #[test]
    fn keys() {
        assert!(validate_key("user_123").is_ok());
        assert!(validate_key("ü @ . x").is_ok());
        assert!(validate_key(&"k".repeat(256)).is_ok());
        assert!(matches!(
            validate_key(""),
            Err(ValidationError::InvalidKey { .. })
        ));
        assert!(matches!(
            validate_key(&"k".repeat(257)),
            Err(ValidationError::InvalidKey { .. })
        ));
        // 86 three-byte characters = 258 bytes: the limit is bytes, not characters.
        assert!(validate_key(&"€".repeat(86)).is_err());
    }

    #[test]
    fn schedule_id_is_sha256_base32() {
        // Independent check, computed outside Rust:
        // python3 -c "import base64,hashlib;print(base64.b32encode(
        //   hashlib.sha256(b'wf\0global').digest()).decode().lower()[:26])"
        assert_eq!(
            schedule_id("wf", "global"),
            "sch_75kzkam7helbf5gveseghys5y5"
        );
        assert_ne!(schedule_id("wf", "a"), schedule_id("wf", "b"));
        // The separator keeps ("ab","c") and ("a","bc") apart.
        assert_ne!(schedule_id("ab", "c"), schedule_id("a", "bc"));
        let id = schedule_id("wf", "global");
        assert!(id[4..]
            .chars()
            .all(|c| c.is_ascii_lowercase() || ('2'..='7').contains(&c)));
    }

    #[test]
    fn run_ids() {
        let t = Utc
            .with_ymd_and_hms(2026, 11, 26, 16, 0, 0)
            .single()
            .unwrap();
        assert_eq!(run_id_for("sch_x", t), "sch_x-20261126T160000Z");
        let a = manual_run_id("sch_x");
        assert!(a.starts_with("sch_x-m"));
        assert_ne!(a, manual_run_id("sch_x"));
    }
}
