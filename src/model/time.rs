//! Instants in the contract: RFC 3339, UTC, `Z`, second precision (`2026-11-26T16:00:00Z`).
//!
//! Use with `#[serde(with = "crate::model::time::rfc3339")]` (or `rfc3339_opt` for nullable
//! fields) so every stored value has exactly one textual form.

use chrono::{DateTime, SecondsFormat, SubsecRound, Utc};

/// Formats an instant the contract's way, dropping sub-second digits.
///
/// ```
/// use chrono::TimeZone;
/// let t = chrono::Utc.with_ymd_and_hms(2026, 11, 26, 16, 0, 0).unwrap();
/// assert_eq!(polos::model::time::format_instant(t), "2026-11-26T16:00:00Z");
/// ```
pub fn format_instant(instant: DateTime<Utc>) -> String {
    instant
        .trunc_subsecs(0)
        .to_rfc3339_opts(SecondsFormat::Secs, true)
}

/// Parses any RFC 3339 instant (any offset) into UTC. Sub-seconds are kept; callers that store the
/// value truncate through [`format_instant`].
pub fn parse_instant(text: &str) -> Result<DateTime<Utc>, chrono::ParseError> {
    DateTime::parse_from_rfc3339(text).map(|t| t.with_timezone(&Utc))
}

/// The current time truncated to the second, as stored in records.
pub fn now_seconds() -> DateTime<Utc> {
    Utc::now().trunc_subsecs(0)
}

/// serde for a required instant.
pub mod rfc3339 {
    use chrono::{DateTime, Utc};
    use serde::{Deserialize, Deserializer, Serializer};

    /// Serializes as `YYYY-MM-DDTHH:MM:SSZ`.
    pub fn serialize<S: Serializer>(t: &DateTime<Utc>, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&super::format_instant(*t))
    }

    /// Accepts any RFC 3339 instant.
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<DateTime<Utc>, D::Error> {
        let text = String::deserialize(d)?;
        super::parse_instant(&text).map_err(|e| {
            serde::de::Error::custom(format!(
                "{text:?} is not an RFC 3339 instant ({e}); write e.g. 2026-11-26T16:00:00Z"
            ))
        })
    }
}

/// serde for a nullable instant.
pub mod rfc3339_opt {
    use chrono::{DateTime, Utc};
    use serde::{Deserialize, Deserializer, Serializer};

    /// Serializes `None` as `null`.
    pub fn serialize<S: Serializer>(t: &Option<DateTime<Utc>>, s: S) -> Result<S::Ok, S::Error> {
        match t {
            Some(t) => s.serialize_str(&super::format_instant(*t)),
            None => s.serialize_none(),
        }
    }

    /// Accepts `null`, a missing field (with `#[serde(default)]`) or an RFC 3339 instant.
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<DateTime<Utc>>, D::Error> {
        match Option::<String>::deserialize(d)? {
            None => Ok(None),
            Some(text) => super::parse_instant(&text).map(Some).map_err(|e| {
                serde::de::Error::custom(format!(
                    "{text:?} is not an RFC 3339 instant ({e}); write e.g. 2026-11-26T16:00:00Z"
                ))
            }),
        }
    }
}
