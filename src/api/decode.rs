//! Decoding request bodies with messages that name the field, the expected type and the fix.
//!
//! serde's own errors say "invalid type: integer `5`, expected a string at line 1 column 30";
//! a user of another language needs "field \"cron\" must be a string". So each request type
//! lists its fields once ([`ApiRequest::FIELDS`], checked against the struct by a unit test),
//! the body is checked against that list, and only then handed to serde.

use serde::de::DeserializeOwned;
use serde_json::{Map, Value};

use super::error::ApiError;
use crate::model::Limits;

/// The JSON type a field must have.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Kind {
    /// A string.
    String,
    /// `true` or `false`.
    Bool,
    /// A non-negative integer.
    Uint,
    /// One of these strings.
    OneOf(&'static [&'static str]),
}

impl Kind {
    fn describe(self) -> String {
        match self {
            Kind::String => "a string".into(),
            Kind::Bool => "a boolean (true or false)".into(),
            Kind::Uint => "a non-negative integer".into(),
            Kind::OneOf(values) => format!("one of the strings {}", values.join(", ")),
        }
    }

    fn accepts(self, value: &Value) -> bool {
        match self {
            Kind::String => value.is_string(),
            Kind::Bool => value.is_boolean(),
            Kind::Uint => value.is_u64(),
            Kind::OneOf(values) => value.as_str().is_some_and(|s| values.contains(&s)),
        }
    }
}

/// One field of a request body.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Field {
    /// The JSON name.
    pub name: &'static str,
    /// Its type.
    pub kind: Kind,
    /// Whether a request without it is refused.
    pub required: bool,
}

impl Field {
    pub(crate) const fn required(name: &'static str, kind: Kind) -> Field {
        Field {
            name,
            kind,
            required: true,
        }
    }

    pub(crate) const fn optional(name: &'static str, kind: Kind) -> Field {
        Field {
            name,
            kind,
            required: false,
        }
    }
}

/// A request body type with its field list.
pub(crate) trait ApiRequest: DeserializeOwned {
    /// Every field the body may have.
    const FIELDS: &'static [Field];
    /// A valid body, quoted in error messages.
    const EXAMPLE: &'static str;
    /// Whether an empty body means `{}` (for requests without required fields).
    const EMPTY_OK: bool = false;
}

/// Checks and decodes a request body of at most `limits.max_request_bytes`. Every failure is
/// `invalid_request`.
pub(crate) fn decode<T: ApiRequest>(body: &[u8], limits: &Limits) -> Result<T, ApiError> {
    if let Err(e) = limits.check_request(body.len()) {
        return Err(ApiError::invalid_request(format!(
            "request too large: {e}; a valid request looks like {}",
            T::EXAMPLE
        )));
    }
    if body.iter().all(u8::is_ascii_whitespace) {
        if T::EMPTY_OK {
            return from_map(Map::new());
        }
        return Err(ApiError::invalid_request(format!(
            "empty request; send a JSON object like {}",
            T::EXAMPLE
        )));
    }
    let value: Value = serde_json::from_slice(body).map_err(|e| {
        ApiError::invalid_request(format!(
            "request is not valid JSON ({e}); send a JSON object like {}",
            T::EXAMPLE
        ))
    })?;
    let Value::Object(mut map) = value else {
        return Err(ApiError::invalid_request(format!(
            "request must be a JSON object, got {}; send e.g. {}",
            type_name(&value),
            T::EXAMPLE
        )));
    };
    if let Some(unknown) = map
        .keys()
        .find(|k| !T::FIELDS.iter().any(|f| f.name == k.as_str()))
    {
        let allowed: Vec<&str> = T::FIELDS.iter().map(|f| f.name).collect();
        return Err(ApiError::invalid_request(format!(
            "unknown field {:?}; the allowed fields are: {}",
            short(unknown),
            if allowed.is_empty() {
                "none".to_string()
            } else {
                allowed.join(", ")
            }
        )));
    }
    for field in T::FIELDS {
        match map.get(field.name) {
            None | Some(Value::Null) if field.required => {
                return Err(ApiError::invalid_request(format!(
                    "field {:?} is required: {}; e.g. {}",
                    field.name,
                    field.kind.describe(),
                    T::EXAMPLE
                )))
            }
            // An explicit null is the same as leaving an optional field out.
            Some(Value::Null) => {
                map.remove(field.name);
            }
            Some(value) if !field.kind.accepts(value) => {
                return Err(ApiError::invalid_request(format!(
                    "field {:?} must be {}, got {}",
                    field.name,
                    field.kind.describe(),
                    describe_value(value)
                )))
            }
            _ => {}
        }
    }
    from_map(map)
}

fn from_map<T: ApiRequest>(map: Map<String, Value>) -> Result<T, ApiError> {
    // The checks above make this infallible for the request types; keep serde's word otherwise.
    serde_json::from_value(Value::Object(map)).map_err(|e| {
        ApiError::invalid_request(format!("{e}; send a JSON object like {}", T::EXAMPLE))
    })
}

/// Shortens quoted user input so a huge value does not become a huge error message.
fn short(text: &str) -> String {
    const LIMIT: usize = 80;
    if text.len() <= LIMIT {
        return text.to_string();
    }
    let mut end = LIMIT;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &text[..end])
}

fn type_name(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

fn describe_value(value: &Value) -> String {
    match value {
        Value::Array(_) | Value::Object(_) => type_name(value).to_string(),
        other => {
            let text = other.to_string();
            format!("{} ({})", type_name(value), short(&text))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::{ErrorCode, ListRequest, UpsertRequest};

    fn upsert(body: &str) -> Result<UpsertRequest, ApiError> {
        decode::<UpsertRequest>(body.as_bytes(), &Limits::default())
    }

    #[test]
    fn messages_name_the_field_and_type() {
        let e = upsert(r#"{"workflow":"wf","cron":5}"#).unwrap_err();
        assert_eq!(e.code, ErrorCode::InvalidRequest);
        assert!(
            e.message
                .contains("\"cron\" must be a string, got a number (5)"),
            "{e}"
        );
        let e = upsert(r#"{"workflow":"wf","cron":"* * * * *","paused":"yes"}"#).unwrap_err();
        assert!(e.message.contains("\"paused\" must be a boolean"), "{e}");
        let e = upsert(r#"{"workflow":"wf"}"#).unwrap_err();
        assert!(e.message.contains("\"cron\" is required"), "{e}");
        let e = upsert(r#"{"workflow":"wf","cron":"* * * * *","timezon":"UTC"}"#).unwrap_err();
        assert!(e.message.contains("unknown field \"timezon\""), "{e}");
        let e = upsert(r#"{"workflow":"wf","cron":"* * * * *","catchup":"never"}"#).unwrap_err();
        assert!(e.message.contains("latest, all, skip"), "{e}");
        let e = upsert("[1]").unwrap_err();
        assert!(
            e.message.contains("must be a JSON object, got an array"),
            "{e}"
        );
        let e = upsert("{nope").unwrap_err();
        assert!(e.message.contains("not valid JSON"), "{e}");
        let e = upsert("").unwrap_err();
        assert!(e.message.contains("empty request"), "{e}");
    }

    #[test]
    fn defaults_and_nulls() {
        let r =
            upsert(r#"{"workflow":"wf","cron":"0 8 * * *","timezone":null,"note":null}"#).unwrap();
        assert_eq!(r.timezone, "UTC");
        assert_eq!(r.key, "global");
        assert_eq!(r.note, None);
        assert_eq!(
            decode::<ListRequest>(b"", &Limits::default()).unwrap(),
            ListRequest::default()
        );
    }

    #[test]
    fn too_large() {
        let body = format!(
            r#"{{"workflow":"wf","cron":"* * * * *","note":"{}"}}"#,
            "x".repeat(64 * 1024)
        );
        let e = upsert(&body).unwrap_err();
        assert!(e.message.starts_with("request too large"), "{e}");
    }
}

/// Hostile request bodies (issue 9, point 18): random bytes, random JSON over the request
/// fields, deep nesting, numbers out of range, invalid UTF-8, lone surrogates, huge bodies.
/// Every one is refused as `invalid_request` with a short message — or, when it happens to be
/// a valid request, decoded — and nothing panics.
#[cfg(test)]
mod hostile_tests {
    use proptest::prelude::*;
    use serde_json::Value;

    use super::*;
    use crate::api::{
        BackfillRequest, CancelRequest, ErrorCode, KeyRequest, ListRequest, PauseRequest,
        UpsertRequest, WorkflowsRequest,
    };

    /// Longest message a refusal may carry: the request is at most 64 KiB, but the reply quotes
    /// only short excerpts of it.
    const MAX_MESSAGE: usize = 1024;

    /// How many request types [`refusals`] decodes (its array's length, so the count cannot
    /// drift from the list).
    const REQUEST_TYPES: usize = 7;

    /// Decodes `body` as every request type; returns each refusal.
    fn refusals(body: &[u8]) -> Vec<ApiError> {
        let each: [Option<ApiError>; REQUEST_TYPES] = [
            decode::<UpsertRequest>(body, &Limits::default()).err(),
            decode::<KeyRequest>(body, &Limits::default()).err(),
            decode::<PauseRequest>(body, &Limits::default()).err(),
            decode::<ListRequest>(body, &Limits::default()).err(),
            decode::<WorkflowsRequest>(body, &Limits::default()).err(),
            decode::<CancelRequest>(body, &Limits::default()).err(),
            decode::<BackfillRequest>(body, &Limits::default()).err(),
        ];
        each.into_iter().flatten().collect()
    }

    fn assert_clear(errors: &[ApiError], what: &str) {
        for e in errors {
            assert_eq!(e.code, ErrorCode::InvalidRequest, "{what}: {e}");
            assert!(!e.message.trim().is_empty(), "{what}: empty message");
            assert!(
                e.message.len() <= MAX_MESSAGE,
                "{what}: a {} byte message: {}",
                e.message.len(),
                e.message.chars().take(300).collect::<String>()
            );
        }
    }

    const NAMES: &[&str] = &[
        "workflow",
        "cron",
        "timezone",
        "key",
        "paused",
        "note",
        "catchup",
        "catchup_window_secs",
        "after",
        "limit",
        "overlap",
        "pause_on_failure",
        "run_id",
        "reason",
    ];

    fn leaf() -> impl Strategy<Value = Value> {
        prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::from),
            any::<i64>().prop_map(Value::from),
            any::<u64>().prop_map(Value::from),
            any::<f64>().prop_map(Value::from),
            ".{0,30}".prop_map(Value::from),
            prop::sample::select(vec![
                "wf",
                "* * * * *",
                "UTC",
                "latest",
                "all",
                "skip",
                "buffer_one"
            ])
            .prop_map(Value::from),
        ]
    }

    fn value() -> impl Strategy<Value = Value> {
        leaf().prop_recursive(4, 32, 6, |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..5).prop_map(Value::from),
                prop::collection::btree_map(".{0,8}", inner, 0..5)
                    .prop_map(|m| Value::Object(m.into_iter().collect())),
            ]
        })
    }

    /// Objects over the request fields (and a stranger) with values of every type.
    fn request_like() -> impl Strategy<Value = Value> {
        prop::collection::btree_map(
            prop_oneof![
                8 => prop::sample::select(NAMES).prop_map(str::to_string),
                1 => ".{0,12}",
            ],
            value(),
            0..8,
        )
        .prop_map(|m| Value::Object(m.into_iter().collect()))
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(512))]

        #[test]
        fn random_bytes_are_refused_clearly(body in prop::collection::vec(any::<u8>(), 0..2048)) {
            assert_clear(&refusals(&body), "random bytes");
        }

        #[test]
        fn random_requests_are_refused_clearly_or_decoded(request in request_like()) {
            let body = serde_json::to_vec(&request).unwrap();
            assert_clear(&refusals(&body), &request.to_string());
        }

        #[test]
        fn mutated_examples_are_refused_clearly_or_decoded(
            at in any::<prop::sample::Index>(),
            junk in prop::collection::vec(any::<u8>(), 1..8),
        ) {
            for example in [UpsertRequest::EXAMPLE, KeyRequest::EXAMPLE, PauseRequest::EXAMPLE, ListRequest::EXAMPLE, CancelRequest::EXAMPLE] {
                let mut body = example.as_bytes().to_vec();
                let i = at.index(body.len() + 1);
                body.splice(i..i, junk.iter().copied());
                assert_clear(&refusals(&body), example);
            }
        }
    }

    #[test]
    fn deep_nesting_is_refused_not_a_stack_overflow() {
        for depth in [129, 10_000, 30_000] {
            let arrays = format!("{}{}", "[".repeat(depth), "]".repeat(depth));
            let objects = format!("{}1{}", r#"{"a":"#.repeat(depth), "}".repeat(depth));
            let in_field = format!(r#"{{"workflow":"wf","cron":"* * * * *","note":{arrays}}}"#);
            for body in [arrays, objects, in_field] {
                let errors = refusals(body.as_bytes());
                assert_eq!(
                    errors.len(),
                    REQUEST_TYPES,
                    "depth {depth}: every request type refuses it"
                );
                assert_clear(&errors, &format!("depth {depth}"));
            }
        }
    }

    #[test]
    fn numbers_out_of_range_are_refused() {
        for body in [
            r#"{"limit":18446744073709551616}"#,
            r#"{"limit":-1}"#,
            r#"{"limit":1e400}"#,
            r#"{"limit":1.0}"#,
            r#"{"workflow":"wf","cron":"* * * * *","catchup_window_secs":-5}"#,
            r#"{"workflow":"wf","cron":"* * * * *","catchup_window_secs":1e19}"#,
        ] {
            let errors = refusals(body.as_bytes());
            assert_eq!(
                errors.len(),
                REQUEST_TYPES,
                "{body}: every request type refuses it"
            );
            assert_clear(&errors, body);
        }
    }

    #[test]
    fn invalid_utf8_and_lone_surrogates_are_refused() {
        for body in [
            &b"{\"workflow\":\"w\xfff\",\"cron\":\"* * * * *\"}"[..],
            b"{\"workflow\":\"wf\",\"cron\":\"* * * * *\",\"note\":\"\xc3\x28\"}",
            br#"{"workflow":"\ud800","cron":"* * * * *"}"#,
            b"\xef\xbb\xbf{}",
        ] {
            let errors = refusals(body);
            assert_eq!(
                errors.len(),
                REQUEST_TYPES,
                "{}",
                String::from_utf8_lossy(body)
            );
            assert_clear(&errors, &String::from_utf8_lossy(body));
        }
    }

    /// 64 KiB is the documented limit, written here as a literal: a body of 64 KiB decodes,
    /// one byte more is refused.
    #[test]
    fn the_64_kib_limit_and_a_1_mib_body() {
        let prefix = r#"{"workflow":"wf","cron":"* * * * *","note":""#;
        let pad = 64 * 1024 - prefix.len() - 2;
        let at_limit = format!(r#"{prefix}{}"}}"#, "x".repeat(pad));
        assert_eq!(at_limit.len(), 65_536);
        assert!(decode::<UpsertRequest>(at_limit.as_bytes(), &Limits::default()).is_ok());
        let over = format!(r#"{prefix}{}"}}"#, "x".repeat(pad + 1));
        let errors = refusals(over.as_bytes());
        assert_eq!(errors.len(), REQUEST_TYPES);
        assert_clear(&errors, "64 KiB + 1");
        let mib = vec![b'['; 1024 * 1024];
        assert_clear(&refusals(&mib), "1 MiB");
    }

    #[test]
    fn long_unknown_field_names_and_values_are_quoted_short() {
        let name = "n".repeat(60_000);
        let body = format!(r#"{{"{name}":1}}"#);
        assert_clear(&refusals(body.as_bytes()), "60 KB field name");
        let value = "v".repeat(60_000);
        let body = format!(r#"{{"workflow":"wf","cron":"* * * * *","paused":"{value}"}}"#);
        assert_clear(&refusals(body.as_bytes()), "60 KB wrong-typed value");
    }
}
