//! Decoding request bodies with messages that name the field, the expected type and the fix.
//!
//! serde's own errors say "invalid type: integer `5`, expected a string at line 1 column 30";
//! a user of another language needs "field \"cron\" must be a string". So each request type
//! lists its fields once ([`ApiRequest::FIELDS`], checked against the struct by a unit test),
//! the body is checked against that list, and only then handed to serde.

use serde::de::DeserializeOwned;
use serde_json::{Map, Value};

use super::error::ApiError;
use super::service::MAX_REQUEST_BYTES;

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

/// Checks and decodes a request body. Every failure is `invalid_request`.
pub(crate) fn decode<T: ApiRequest>(body: &[u8]) -> Result<T, ApiError> {
    if body.len() > MAX_REQUEST_BYTES {
        return Err(ApiError::invalid_request(format!(
            "request too large: {} bytes, the limit is {MAX_REQUEST_BYTES}; send only the documented fields, e.g. {}",
            body.len(),
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
        decode::<UpsertRequest>(body.as_bytes())
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
        assert_eq!(decode::<ListRequest>(b"").unwrap(), ListRequest::default());
    }

    #[test]
    fn too_large() {
        let body = format!(
            r#"{{"workflow":"wf","cron":"* * * * *","note":"{}"}}"#,
            "x".repeat(MAX_REQUEST_BYTES)
        );
        let e = upsert(&body).unwrap_err();
        assert!(e.message.starts_with("request too large"), "{e}");
    }
}
