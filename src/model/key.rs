//! How schedule keys (and step names) are written inside KV keys.
//!
//! A key that is already a safe KV key fragment — it matches `[A-Za-z0-9_-][A-Za-z0-9_./-]*`,
//! has no `..` and does not end in `.` — is written verbatim, so `nats kv get polos_schedules
//! user-reminder.user_123` works as a user would guess. Anything else is written as `=` followed
//! by base64url (no padding) of its UTF-8 bytes. `=` can never start a verbatim key, so decoding
//! is unambiguous.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;

/// Encodes a schedule key (or step name) for use inside a KV key.
///
/// ```
/// assert_eq!(polos::model::encode_key("user_123"), "user_123");
/// assert_eq!(polos::model::encode_key("a b"), "=YSBi");
/// ```
pub fn encode_key(key: &str) -> String {
    if is_verbatim(key) {
        key.to_string()
    } else {
        let mut out = String::with_capacity(1 + key.len().div_ceil(3) * 4);
        out.push('=');
        URL_SAFE_NO_PAD.encode_string(key.as_bytes(), &mut out);
        out
    }
}

/// Decodes what [`encode_key`] produced. Returns `None` for text that no key encodes to.
pub fn decode_key(encoded: &str) -> Option<String> {
    decode_key_cow(encoded).map(std::borrow::Cow::into_owned)
}

/// [`decode_key`] without copying a verbatim key (the ticker decodes one per fire).
pub(crate) fn decode_key_cow(encoded: &str) -> Option<std::borrow::Cow<'_, str>> {
    match encoded.strip_prefix('=') {
        Some(b64) => {
            let bytes = URL_SAFE_NO_PAD.decode(b64).ok()?;
            let key = String::from_utf8(bytes).ok()?;
            // Only the canonical form decodes: a verbatim-safe key is never base64-encoded.
            (!is_verbatim(&key) && !key.is_empty()).then_some(std::borrow::Cow::Owned(key))
        }
        None => is_verbatim(encoded).then_some(std::borrow::Cow::Borrowed(encoded)),
    }
}

/// `<workflow>.<encoded key>`: the key of a schedule in `polos_schedules` and
/// `polos_schedule_state`.
pub fn schedule_kv_key(workflow: &str, key: &str) -> String {
    format!("{workflow}.{}", encode_key(key))
}

/// Splits a `polos_schedules` KV key back into `(workflow, key)`. `None` when the KV key was not
/// written by [`schedule_kv_key`] (for example garbage put there by hand).
pub fn split_schedule_kv_key(kv_key: &str) -> Option<(String, String)> {
    split_schedule_kv_key_cow(kv_key)
        .map(|(workflow, key)| (workflow.to_string(), key.into_owned()))
}

/// [`split_schedule_kv_key`] without copying: the workflow and a verbatim key are slices of
/// the KV key.
pub(crate) fn split_schedule_kv_key_cow(kv_key: &str) -> Option<(&str, std::borrow::Cow<'_, str>)> {
    let (workflow, encoded) = kv_key.split_once('.')?;
    super::validate_workflow(workflow).ok()?;
    let key = decode_key_cow(encoded)?;
    super::validate_key(&key).ok()?;
    Some((workflow, key))
}

/// `<workflow>.<run_id>`: the key of a run in `polos_runs`.
pub fn run_kv_key(workflow: &str, run_id: &str) -> String {
    format!("{workflow}.{run_id}")
}

/// `<run_id>.<encoded step name>`: the key of a step result in `polos_steps`.
pub fn step_kv_key(run_id: &str, step: &str) -> String {
    format!("{run_id}.{}", encode_key(step))
}

fn is_verbatim(key: &str) -> bool {
    let bytes = key.as_bytes();
    let Some(&first) = bytes.first() else {
        return false;
    };
    let head_ok = first.is_ascii_alphanumeric() || first == b'_' || first == b'-';
    head_ok
        && bytes
            .iter()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'/' | b'-'))
        && !key.contains("..")
        && !key.ends_with('.')
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn verbatim_and_encoded_forms() {
        for k in ["global", "user_123", "a.b", "a/b", "-x", "_", "user-1.2/3"] {
            assert_eq!(encode_key(k), k);
        }
        for k in [
            ".a", "a.", "a..b", "a b", "ü", "a@b", "=x", "/a", "a:b", "*", ">",
        ] {
            let e = encode_key(k);
            assert!(e.starts_with('='), "{k} -> {e}");
            assert_eq!(decode_key(&e).as_deref(), Some(k));
        }
        // Independent check: python3 -c "import base64;print(base64.urlsafe_b64encode('ü @'.encode()))"
        assert_eq!(encode_key("ü @"), "=w7wgQA");
    }

    #[test]
    fn non_canonical_forms_do_not_decode() {
        assert_eq!(decode_key("=Z2xvYmFs"), None); // base64 of "global", which is verbatim
        assert_eq!(decode_key("a..b"), None);
        assert_eq!(decode_key("=!!"), None);
        assert_eq!(decode_key(""), None);
    }

    #[test]
    fn kv_keys() {
        assert_eq!(
            schedule_kv_key("user-reminder", "user_123"),
            "user-reminder.user_123"
        );
        assert_eq!(
            split_schedule_kv_key("user-reminder.user.123"),
            Some(("user-reminder".into(), "user.123".into()))
        );
        assert_eq!(split_schedule_kv_key("nodot"), None);
        assert_eq!(split_schedule_kv_key("bad*wf.key"), None);
        assert_eq!(
            step_kv_key("sch_a-20260101T000000Z", "send email"),
            "sch_a-20260101T000000Z.=c2VuZCBlbWFpbA"
        );
    }

    fn kv_key_charset_ok(s: &str) -> bool {
        s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'/' | b'_' | b'=' | b'.'))
            && !s.starts_with('.')
            && !s.ends_with('.')
    }

    proptest! {
        #[test]
        fn every_key_round_trips(key in "\\PC{1,80}") {
            let encoded = encode_key(&key);
            prop_assert!(kv_key_charset_ok(&encoded), "{encoded}");
            prop_assert_eq!(decode_key(&encoded), Some(key.clone()));
            let kv = schedule_kv_key("wf", &key);
            prop_assert_eq!(split_schedule_kv_key(&kv), Some(("wf".to_string(), key)));
        }

        #[test]
        fn any_unicode_including_controls_round_trips(key in proptest::collection::vec(any::<char>(), 1..40)) {
            let key: String = key.into_iter().collect();
            prop_assert_eq!(decode_key(&encode_key(&key)), Some(key));
        }

        #[test]
        fn ascii_keys_round_trip(key in "[ -~]{1,60}") {
            let encoded = encode_key(&key);
            prop_assert!(kv_key_charset_ok(&encoded));
            prop_assert_eq!(decode_key(&encoded), Some(key));
        }
    }
}
