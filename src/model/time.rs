//! Instants in the contract: RFC 3339, UTC, `Z`, second precision (`2026-11-26T16:00:00Z`).
//!
//! Use with `#[serde(with = "crate::model::time::rfc3339")]` (or `rfc3339_opt` for nullable
//! fields) so every stored value has exactly one textual form.

use chrono::{DateTime, Datelike, SecondsFormat, SubsecRound, Timelike, Utc};

/// Formats an instant the contract's way, dropping sub-second digits.
///
/// ```
/// use chrono::TimeZone;
/// let t = chrono::Utc.with_ymd_and_hms(2026, 11, 26, 16, 0, 0).unwrap();
/// assert_eq!(polos::model::time::format_instant(t), "2026-11-26T16:00:00Z");
/// ```
pub fn format_instant(instant: DateTime<Utc>) -> String {
    let mut out = String::with_capacity(20);
    push_instant(&mut out, instant, true);
    out
}

/// Appends `instant` as `YYYY-MM-DDTHH:MM:SSZ` (`extended`) or `YYYYMMDDTHHMMSSZ` (the run id
/// form).
///
/// Written by hand because it runs several times per fire on the scheduler's hot path, where
/// chrono's general formatter cost more than the rest of building a fire. Years outside
/// 0..=9999 (which no cron fire reaches) fall back to chrono.
pub(crate) fn push_instant(out: &mut String, instant: DateTime<Utc>, extended: bool) {
    let t = instant.naive_utc();
    let year = t.year();
    if !(0..=9999).contains(&year) {
        let text = if extended {
            instant
                .trunc_subsecs(0)
                .to_rfc3339_opts(SecondsFormat::Secs, true)
        } else {
            instant.format("%Y%m%dT%H%M%SZ").to_string()
        };
        out.push_str(&text);
        return;
    }
    let (date_sep, time_sep) = if extended { ("-", ":") } else { ("", "") };
    push_digits(out, year as u32, 4);
    out.push_str(date_sep);
    push_digits(out, t.month(), 2);
    out.push_str(date_sep);
    push_digits(out, t.day(), 2);
    out.push('T');
    push_digits(out, t.hour(), 2);
    out.push_str(time_sep);
    push_digits(out, t.minute(), 2);
    out.push_str(time_sep);
    push_digits(out, t.second(), 2);
    out.push('Z');
}

fn push_digits(out: &mut String, value: u32, width: u32) {
    let mut divisor = 10u32.pow(width - 1);
    while divisor > 0 {
        out.push(char::from(b'0' + ((value / divisor) % 10) as u8));
        divisor /= 10;
    }
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
    use serde::{Deserializer, Serializer};

    /// Serializes as `YYYY-MM-DDTHH:MM:SSZ`.
    pub fn serialize<S: Serializer>(t: &DateTime<Utc>, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&super::format_instant(*t))
    }

    /// Accepts any RFC 3339 instant.
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<DateTime<Utc>, D::Error> {
        d.deserialize_str(InstantVisitor)
    }

    /// Parses the instant straight from the decoder's text: no `String` per instant (a cold
    /// start reads two or three per schedule, a million schedules at once).
    pub(super) struct InstantVisitor;

    impl serde::de::Visitor<'_> for InstantVisitor {
        type Value = DateTime<Utc>;

        // The same words a `String` field uses, so errors read as before.
        fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
            f.write_str("a string")
        }

        fn visit_str<E: serde::de::Error>(self, text: &str) -> Result<Self::Value, E> {
            super::parse_instant(text).map_err(|e| {
                E::custom(format!(
                    "{:?} is not an RFC 3339 instant ({e}); write e.g. 2026-11-26T16:00:00Z",
                    crate::model::error::shorten(text, 60)
                ))
            })
        }
    }
}

/// serde for a nullable instant.
pub mod rfc3339_opt {
    use chrono::{DateTime, Utc};
    use serde::{Deserializer, Serializer};

    /// Serializes `None` as `null`.
    pub fn serialize<S: Serializer>(t: &Option<DateTime<Utc>>, s: S) -> Result<S::Ok, S::Error> {
        match t {
            Some(t) => s.serialize_str(&super::format_instant(*t)),
            None => s.serialize_none(),
        }
    }

    /// Accepts `null`, a missing field (with `#[serde(default)]`) or an RFC 3339 instant.
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<DateTime<Utc>>, D::Error> {
        d.deserialize_option(OptionVisitor)
    }

    struct OptionVisitor;

    impl<'de> serde::de::Visitor<'de> for OptionVisitor {
        type Value = Option<DateTime<Utc>>;

        fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
            f.write_str("option")
        }

        fn visit_none<E: serde::de::Error>(self) -> Result<Self::Value, E> {
            Ok(None)
        }

        fn visit_unit<E: serde::de::Error>(self) -> Result<Self::Value, E> {
            Ok(None)
        }

        fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
            d.deserialize_str(super::rfc3339::InstantVisitor).map(Some)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;
    use proptest::prelude::*;

    proptest! {
        /// Checked against chrono's own RFC 3339 and strftime formatting.
        #[test]
        fn hand_written_format_matches_chrono(secs in -62_135_596_800i64..253_402_300_799i64, nanos in 0u32..1_000_000_000) {
            let t = Utc.timestamp_opt(secs, nanos).single().unwrap();
            prop_assert_eq!(format_instant(t), t.trunc_subsecs(0).to_rfc3339_opts(SecondsFormat::Secs, true));
            let mut compact = String::new();
            push_instant(&mut compact, t, false);
            prop_assert_eq!(compact, t.format("%Y%m%dT%H%M%SZ").to_string());
        }
    }

    #[test]
    fn extreme_years_fall_back_to_chrono() {
        let t = Utc.with_ymd_and_hms(12026, 1, 2, 3, 4, 5).unwrap();
        assert_eq!(
            format_instant(t),
            t.to_rfc3339_opts(SecondsFormat::Secs, true)
        );
    }
}
