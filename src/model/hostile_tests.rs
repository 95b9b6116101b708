//! Hostile input for every decoder of stored values and fire messages (issue 9, point 18):
//! random bytes, random JSON shaped like each record, deep nesting past serde_json's recursion
//! limit, numbers out of every range, invalid UTF-8, lone surrogates and 1 MiB values. Every
//! decoder must return an error that names the problem in bounded length — the scheduler writes
//! it into a state record, which has to fit in one NATS message — and must never panic.

use async_nats::HeaderMap;
use proptest::prelude::*;
use serde_json::Value;

use super::{
    decode_key, split_schedule_kv_key, CancelRecord, Fire, OverlapRecord, RunRecord,
    ScheduleRecord, ScheduleState, StepRecord, WorkflowRecord,
};
use crate::ticker::LeaseValue;

/// Longest error message a decoder may produce, whatever the value's size. (KV keys and
/// subjects are bounded by the server's 4 KiB control line, so a message quoting one fits.)
const MAX_MESSAGE: usize = 8192;

/// One decoder: its name and a function returning its error message, if it refuses `bytes`.
type Decoder = (&'static str, fn(&[u8]) -> Option<String>);

fn message<T, E: std::fmt::Display>(r: Result<T, E>) -> Option<String> {
    r.err().map(|e| e.to_string())
}

/// Each record's decoder, in the order of [`VALID`].
const DECODERS: &[Decoder] = &[
    ("ScheduleRecord", |b| {
        message(ScheduleRecord::from_kv("wf.global", b))
    }),
    ("ScheduleState", |b| {
        message(serde_json::from_slice::<ScheduleState>(b))
    }),
    ("WorkflowRecord", |b| {
        message(serde_json::from_slice::<WorkflowRecord>(b))
    }),
    ("RunRecord", |b| {
        message(serde_json::from_slice::<RunRecord>(b))
    }),
    ("StepRecord", |b| {
        message(serde_json::from_slice::<StepRecord>(b))
    }),
    ("LeaseValue", |b| {
        message(serde_json::from_slice::<LeaseValue>(b))
    }),
    ("OverlapRecord", |b| {
        message(serde_json::from_slice::<OverlapRecord>(b))
    }),
    ("CancelRecord", |b| {
        message(serde_json::from_slice::<CancelRecord>(b))
    }),
    ("Fire", |b| {
        let mut headers = HeaderMap::new();
        headers.insert("Polos-Trigger", "schedule");
        message(Fire::from_message("polos.runs.wf", Some(&headers), b))
    }),
];

/// Runs every decoder on `bytes` (as the value under `kv_key`, and as a fire body on a valid
/// subject with valid headers); returns each error's message.
/// How many decoders [`decode_all`] runs (its array's length, so the count cannot drift).
const ALL_DECODERS: usize = 11;

fn decode_all(kv_key: &str, bytes: &[u8]) -> Vec<String> {
    let mut headers = HeaderMap::new();
    headers.insert("Polos-Trigger", "schedule");
    headers.insert(
        "Polos-Run-Id",
        "sch_aaaaaaaaaaaaaaaaaaaaaaaaaa-20260101T000000Z",
    );
    let each: [Option<String>; ALL_DECODERS] = [
        message(ScheduleRecord::from_kv(kv_key, bytes)),
        message(ScheduleRecord::from_kv_without_id(kv_key, bytes)),
        message(serde_json::from_slice::<ScheduleState>(bytes)),
        message(serde_json::from_slice::<WorkflowRecord>(bytes)),
        message(serde_json::from_slice::<RunRecord>(bytes)),
        message(serde_json::from_slice::<StepRecord>(bytes)),
        message(serde_json::from_slice::<LeaseValue>(bytes)),
        message(serde_json::from_slice::<OverlapRecord>(bytes)),
        message(serde_json::from_slice::<CancelRecord>(bytes)),
        message(Fire::from_message("polos.runs.wf", Some(&headers), bytes)),
        message(Fire::from_message("polos.runs.wf", None, bytes)),
    ];
    each.into_iter().flatten().collect()
}

fn assert_clear(messages: &[String], what: &str) {
    for m in messages {
        assert!(!m.trim().is_empty(), "{what}: empty error message");
        assert!(
            m.len() <= MAX_MESSAGE,
            "{what}: a {} byte error message (limit {MAX_MESSAGE}): {}…",
            m.len(),
            &m[..m.char_indices().nth(300).map_or(m.len(), |(i, _)| i)]
        );
    }
}

/// Every field name any record has, so random objects hit real fields with wrong values.
const FIELDS: &[&str] = &[
    "schedule_id",
    "workflow",
    "key",
    "cron",
    "timezone",
    "paused",
    "note",
    "source",
    "created_at",
    "updated_at",
    "catchup",
    "catchup_window_secs",
    "last_timestamp",
    "next",
    "fires",
    "missed",
    "last_run_id",
    "error",
    "schedulable",
    "schedule",
    "run_id",
    "trigger",
    "scheduled_for",
    "status",
    "attempt",
    "started_at",
    "finished_at",
    "output",
    "completed_at",
    "overlap",
    "pause_on_failure",
    "yielded_to",
    "active",
    "waiting",
    "skipped",
    "fire_seq",
    "since",
    "requested_at",
    "reason",
    "holder",
    "ttl_secs",
    "renewed_at",
    "timestamp",
    "upcoming",
];

fn json_leaf() -> impl Strategy<Value = Value> {
    prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        any::<f64>().prop_map(Value::from),
        ".{0,40}".prop_map(Value::from),
        Just(Value::from("2026-11-26T16:00:00Z")),
        Just(Value::from("* * * * *")),
        prop::sample::select(vec![
            "api",
            "inline",
            "latest",
            "all",
            "skip",
            "completed",
            "schedule",
            "catchup",
            "manual",
            "running",
            "failed"
        ])
        .prop_map(Value::from),
    ]
}

fn json_value() -> impl Strategy<Value = Value> {
    json_leaf().prop_recursive(4, 48, 8, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(Value::from),
            prop::collection::btree_map(
                prop_oneof![
                    prop::sample::select(FIELDS).prop_map(str::to_string),
                    ".{0,12}"
                ],
                inner,
                0..8
            )
            .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

/// An object over the records' field names with random values: each record's type checks
/// meet every wrong type.
fn record_like() -> impl Strategy<Value = Value> {
    prop::collection::btree_map(prop::sample::select(FIELDS), json_value(), 0..12)
        .prop_map(|m| Value::Object(m.into_iter().map(|(k, v)| (k.to_string(), v)).collect()))
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn random_bytes_give_clear_errors(bytes in prop::collection::vec(any::<u8>(), 0..1024)) {
        assert_clear(&decode_all("wf.k", &bytes), "random bytes");
    }

    #[test]
    fn random_json_gives_clear_errors(value in json_value()) {
        let bytes = serde_json::to_vec(&value).unwrap();
        assert_clear(&decode_all("wf.k", &bytes), &format!("{value}"));
    }

    #[test]
    fn record_shaped_json_gives_clear_errors(value in record_like()) {
        let bytes = serde_json::to_vec(&value).unwrap();
        assert_clear(&decode_all("wf.global", &bytes), &format!("{value}"));
    }

    #[test]
    fn mutated_valid_values_give_clear_errors(
        at in any::<prop::sample::Index>(),
        junk in prop::collection::vec(any::<u8>(), 1..16),
    ) {
        for valid in VALID {
            let mut bytes = valid.as_bytes().to_vec();
            let i = at.index(bytes.len() + 1);
            bytes.splice(i..i, junk.iter().copied());
            assert_clear(&decode_all("wf.global", &bytes), valid);
        }
    }

    /// KV keys come from `nats kv put` too: any text either splits into a valid workflow and
    /// key or is refused, and what splits re-encodes to itself.
    #[test]
    fn random_kv_keys_split_or_are_refused(kv_key in "[-/_=.a-zA-Z0-9]{0,40}|.{0,40}") {
        if let Some((workflow, key)) = split_schedule_kv_key(&kv_key) {
            prop_assert_eq!(super::schedule_kv_key(&workflow, &key), kv_key.clone());
        }
        let _ = decode_key(&kv_key);
        assert_clear(&decode_all(&kv_key, br#"{"cron":"* * * * *"}"#), &kv_key);
    }

    #[test]
    fn fire_messages_from_anyone_give_clear_errors(
        subject in "polos\\.runs\\..{0,20}|.{0,30}",
        // NATS header values cannot hold CR or LF (async-nats refuses to build them).
        trigger in "[^\r\n]{0,12}",
        run_id in "[^\r\n]{0,40}",
        body in json_value(),
    ) {
        let mut headers = HeaderMap::new();
        headers.insert("Polos-Trigger", trigger.as_str());
        headers.insert("Polos-Run-Id", run_id.as_str());
        let body = serde_json::to_vec(&body).unwrap();
        if let Err(e) = Fire::from_message(&subject, Some(&headers), &body) {
            assert_clear(&[e.to_string()], &subject);
        }
    }
}

/// A valid value of each record, in the order of [`DECODERS`].
const VALID: &[&str] = &[
    r#"{"cron":"0 8 * * *","timezone":"America/Los_Angeles","paused":false,"source":"api","created_at":"2026-01-01T00:00:00Z","catchup":"all","catchup_window_secs":60}"#,
    r#"{"last_timestamp":"2026-01-01T00:00:00Z","next":"2026-01-01T00:01:00Z","fires":1,"missed":0,"last_run_id":"r","error":null}"#,
    r#"{"workflow":"wf","schedulable":true,"schedule":{"cron":"* * * * *","timezone":"UTC"},"updated_at":"2026-01-01T00:00:00Z"}"#,
    r#"{"run_id":"r","workflow":"wf","schedule_id":"s","key":"k","trigger":"schedule","scheduled_for":"2026-01-01T00:00:00Z","status":"completed","attempt":1,"started_at":"2026-01-01T00:00:00Z","finished_at":null,"output":{"a":[1]},"error":null}"#,
    r#"{"output":[1,2,{"x":null}],"completed_at":"2026-01-01T00:00:00Z"}"#,
    r#"{"holder":"1-abc","ttl_secs":5,"renewed_at":"2026-01-01T00:00:00Z"}"#,
    r#"{"active":{"run_id":"r","scheduled_for":"2026-01-01T00:00:00Z","fire_seq":7,"since":"2026-01-01T00:00:01Z"},"waiting":[{"run_id":"q","scheduled_for":"2026-01-01T00:01:00Z","fire_seq":8}],"skipped":2,"updated_at":"2026-01-01T00:00:01Z"}"#,
    r#"{"run_id":"r","workflow":"wf","requested_at":"2026-01-01T00:00:00Z","reason":"stop"}"#,
    r#"{"timestamp":"2026-01-01T00:00:00Z","last_timestamp":null,"timezone":"UTC","schedule_id":"s","key":"k","upcoming":"2026-01-01T00:01:00Z"}"#,
];

fn deep(depth: usize) -> String {
    format!("{}{}", "[".repeat(depth), "]".repeat(depth))
}

#[test]
fn valid_values_decode() {
    for ((name, decoder), valid) in DECODERS.iter().zip(VALID) {
        assert_eq!(decoder(valid.as_bytes()), None, "{name}: {valid}");
    }
}

#[test]
fn nesting_past_the_recursion_limit_is_an_error_not_a_stack_overflow() {
    for depth in [129, 1_000, 100_000] {
        let nested = deep(depth);
        let objects = format!("{}1{}", r#"{"a":"#.repeat(depth), "}".repeat(depth));
        let errors = decode_all("wf.k", nested.as_bytes());
        assert_eq!(
            errors.len(),
            ALL_DECODERS,
            "depth {depth}: every decoder refuses it"
        );
        assert_clear(&errors, &format!("depth {depth}"));
        // `{"a":…}` is a valid ScheduleState (every field defaults, unknown ones are ignored).
        assert_clear(
            &decode_all("wf.k", objects.as_bytes()),
            &format!("depth {depth}"),
        );
        // Inside a field the decoder reads: refused. Inside one it ignores: no overflow either.
        for (decoder, body) in [
            (0, format!(r#"{{"cron":"* * * * *","note":{nested}}}"#)),
            (
                4,
                format!(r#"{{"output":{nested},"completed_at":"2026-01-01T00:00:00Z"}}"#),
            ),
            (5, format!(r#"{{"holder":{nested}}}"#)),
            (
                3,
                VALID[3].replace(r#""output":{"a":[1]}"#, &format!(r#""output":{nested}"#)),
            ),
        ] {
            let (name, decode) = DECODERS[decoder];
            let error =
                decode(body.as_bytes()).unwrap_or_else(|| panic!("{name} accepted depth {depth}"));
            assert_clear(&[error], name);
            assert_clear(
                &decode_all("wf.k", body.as_bytes()),
                &format!("depth {depth}"),
            );
        }
    }
}

#[test]
fn numbers_out_of_range_are_errors() {
    for (decoder, body) in [
        (
            0,
            r#"{"cron":"* * * * *","catchup_window_secs":18446744073709551616}"#,
        ),
        (0, r#"{"cron":"* * * * *","catchup_window_secs":-1}"#),
        (0, r#"{"cron":"* * * * *","catchup_window_secs":1e400}"#),
        (0, r#"{"cron":"* * * * *","catchup_window_secs":1.5}"#),
        (1, r#"{"fires":18446744073709551616}"#),
        (1, r#"{"missed":-1}"#),
        (
            5,
            r#"{"holder":"h","ttl_secs":1e400,"renewed_at":"2026-01-01T00:00:00Z"}"#,
        ),
    ] {
        let (name, decode) = DECODERS[decoder];
        let error = decode(body.as_bytes()).unwrap_or_else(|| panic!("{name} accepted {body}"));
        assert_clear(&[error], body);
        assert_clear(&decode_all("wf.k", body.as_bytes()), body);
    }
    let run = VALID[3].replace(r#""attempt":1"#, r#""attempt":4294967296"#);
    assert!(DECODERS[3].1(run.as_bytes()).is_some());
}

#[test]
fn invalid_utf8_and_lone_surrogates_are_errors() {
    for ((name, decode), valid) in DECODERS.iter().zip(VALID) {
        let mut bytes = valid.as_bytes().to_vec();
        // Inside the last string value, a field this decoder reads: a byte that never
        // starts UTF-8.
        let quote = bytes.iter().rposition(|b| *b == b'"').unwrap();
        bytes.insert(quote, 0xff);
        let error = decode(&bytes).unwrap_or_else(|| panic!("{name} accepted invalid UTF-8"));
        assert_clear(&[error], name);
    }
    let surrogate = r#"{"cron":"\ud800","timezone":"\udfff"}"#;
    assert!(ScheduleRecord::from_kv("wf.k", surrogate.as_bytes()).is_err());
    let key = String::from_utf8_lossy(&[b'w', b'f', b'.', 0xff]).into_owned();
    assert!(ScheduleRecord::from_kv(&key, br#"{"cron":"* * * * *"}"#).is_err());
}

#[test]
fn instants_at_the_edges_are_errors_or_values_never_panics() {
    for instant in [
        "9999-12-31T23:59:60Z",
        "0000-01-01T00:00:00Z",
        "+275760-09-13T00:00:00Z",
        "2026-02-30T00:00:00Z",
        "2026-01-01T00:00:00+99:99",
        "",
    ] {
        let body = format!(r#"{{"output":1,"completed_at":"{instant}"}}"#);
        if let Ok(step) = serde_json::from_slice::<StepRecord>(body.as_bytes()) {
            // What decodes must also encode.
            assert!(serde_json::to_vec(&step).is_ok(), "{instant}");
        }
    }
}

/// 1 MiB values — the size of a NATS message — in every field an error could quote. The
/// errors of polos's own decoders (`ScheduleRecord::from_kv`, whose message the scheduler
/// stores in the state record, and `Fire::from_message`) stay short; serde's own message for
/// the records read with plain `serde_json::from_slice` quotes a wrong-typed string whole —
/// no panic, but their readers should shorten it before storing or logging it.
#[test]
fn one_mib_values_give_bounded_errors() {
    let mib = 1024 * 1024;
    let garbage: Vec<u8> = (0..mib).map(|i| (i * 7919 % 251) as u8).collect();
    assert_clear(&decode_all("wf.k", &garbage), "1 MiB of bytes");
    let long = "x".repeat(mib);
    let mut headers = HeaderMap::new();
    headers.insert("Polos-Trigger", "schedule");
    for field in FIELDS {
        let body = format!(r#"{{"cron":"* * * * *","{field}":"{long}"}}"#);
        let ours = [
            message(ScheduleRecord::from_kv("wf.k", body.as_bytes())),
            message(Fire::from_message(
                "polos.runs.wf",
                Some(&headers),
                body.as_bytes(),
            )),
        ];
        assert_clear(
            &ours.into_iter().flatten().collect::<Vec<_>>(),
            &format!("1 MiB {field}"),
        );
        for (name, decode) in DECODERS {
            if let Some(m) = decode(body.as_bytes()) {
                assert!(
                    !m.trim().is_empty(),
                    "{name}: empty error for a 1 MiB {field}"
                );
            }
        }
    }
    let long_key = format!("wf.{}", "k".repeat(4000));
    assert_clear(&decode_all(&long_key, VALID[0].as_bytes()), "4 KiB KV key");
    let mut headers = HeaderMap::new();
    headers.insert("Polos-Trigger", long.as_str());
    if let Err(e) = Fire::from_message("polos.runs.wf", Some(&headers), VALID[6].as_bytes()) {
        assert_clear(&[e.to_string()], "1 MiB trigger header");
    }
    let subject = format!("polos.runs.{}", "w".repeat(4000));
    if let Err(e) = Fire::from_message(&subject, None, VALID[6].as_bytes()) {
        assert_clear(&[e.to_string()], "4 KiB subject");
    }
}
