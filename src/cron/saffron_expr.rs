//! Rendering [`Fields`] into saffron's dialect (ARCHITECTURE.md, "Cron": what saffron does
//! differently).
//!
//! saffron never sees the user's text. It gets explicit comma lists of single values — never a
//! range, so its descending-range bug cannot bite — with days of the week as names (it numbers
//! Sunday 1 and rejects 0). Its day rule is OR whenever neither day field is literally `*`; ours
//! is AND unless both are restricted. Where the two differ (AND with both sets partial) saffron
//! gets the day-of-month set only, and the caller filters weekdays itself ([`Compiled::dow_filter`]).

use super::fields::{Fields, ALL_DOM, ALL_DOW, DAY_NAMES};

/// saffron's compiled form plus what it cannot express.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(crate) struct Compiled {
    /// Matches a superset of our wall times (exact unless `dow_filter`).
    pub(crate) cron: saffron::Cron,
    /// saffron ignores the weekday set: candidates must also match `Fields::dow`.
    pub(crate) dow_filter: bool,
}

/// The saffron expression for `fields` and whether weekdays need filtering afterwards.
pub(crate) fn render(fields: &Fields) -> (String, bool) {
    let minutes = list(fields.minutes, 0..=59, u64::MAX >> 4, |v| v.to_string());
    let hours = list(u64::from(fields.hours), 0..=23, 0xFF_FFFF, |v| {
        v.to_string()
    });
    let months = list(u64::from(fields.months), 1..=12, 0x1FFE, |v| v.to_string());
    let dom_list = list(u64::from(fields.dom), 1..=31, u64::from(ALL_DOM), |v| {
        v.to_string()
    });
    let dow_list = list(u64::from(fields.dow), 0..=6, u64::from(ALL_DOW), |v| {
        DAY_NAMES[v as usize].to_string()
    });
    let (dom, dow, dow_filter) = if fields.days_or() {
        // Both restricted: saffron's OR is our OR. A full set renders as `*`, which under OR
        // would wrongly drop the other field, so spell it out.
        (
            explicit(fields.dom.into(), 1..=31, &dom_list, |v| v.to_string()),
            explicit(fields.dow.into(), 0..=6, &dow_list, |v| {
                DAY_NAMES[v as usize].to_string()
            }),
            false,
        )
    } else if fields.dow == ALL_DOW {
        (dom_list, "*".to_string(), false)
    } else if fields.dom == ALL_DOM {
        ("*".to_string(), dow_list, false)
    } else {
        // AND of two partial sets: saffron handles the month days, we filter weekdays.
        (dom_list, "*".to_string(), true)
    };
    (
        format!("{minutes} {hours} {dom} {months} {dow}"),
        dow_filter,
    )
}

fn list(
    bits: u64,
    range: std::ops::RangeInclusive<u32>,
    all: u64,
    name: impl Fn(u32) -> String,
) -> String {
    if bits == all {
        return "*".to_string();
    }
    range
        .filter(|v| bits & (1 << v) != 0)
        .map(name)
        .collect::<Vec<_>>()
        .join(",")
}

fn explicit(
    bits: u64,
    range: std::ops::RangeInclusive<u32>,
    rendered: &str,
    name: impl Fn(u32) -> String,
) -> String {
    if rendered != "*" {
        return rendered.to_string();
    }
    range
        .filter(|v| bits & (1 << v) != 0)
        .map(name)
        .collect::<Vec<_>>()
        .join(",")
}

/// Compiles `fields` into saffron. The rendered text is produced by us from valid sets, so a
/// saffron parse failure is a bug of this module, reported as text for the caller to wrap.
pub(crate) fn compile(fields: &Fields) -> Result<Compiled, String> {
    let (text, dow_filter) = render(fields);
    let cron: saffron::Cron = text
        .parse()
        .map_err(|e| format!("internal error: saffron rejected normalized {text:?}: {e}"))?;
    Ok(Compiled { cron, dow_filter })
}

#[cfg(test)]
mod tests {
    use super::super::parse::parse;
    use super::*;

    fn r(expr: &str) -> (String, bool) {
        render(&parse(expr).unwrap())
    }

    #[test]
    fn renders_lists_never_ranges() {
        assert_eq!(
            r("*/20 9-11 * * *"),
            ("0,20,40 9,10,11 * * *".into(), false)
        );
        assert_eq!(r("0 0 * JAN-MAR *"), ("0 0 * 1,2,3 *".into(), false));
        assert_eq!(r("@hourly"), ("0 * * * *".into(), false));
    }

    #[test]
    fn weekdays_become_names() {
        assert_eq!(r("0 0 * * 0"), ("0 0 * * SUN".into(), false));
        assert_eq!(r("0 0 * * 7"), ("0 0 * * SUN".into(), false));
        assert_eq!(r("0 0 * * 5-7"), ("0 0 * * SUN,FRI,SAT".into(), false));
    }

    #[test]
    fn day_modes() {
        // both restricted: OR, both lists
        assert_eq!(r("0 0 1 * MON"), ("0 0 1 * MON".into(), false));
        assert!(r("0 0 1-31 * MON").0.ends_with(" 1,2,3,4,5,6,7,8,9,10,11,12,13,14,15,16,17,18,19,20,21,22,23,24,25,26,27,28,29,30,31 * MON"));
        // AND with a full side: exact in saffron
        assert!(!r("0 0 */2 * *").1);
        assert_eq!(r("0 0 * * */2"), ("0 0 * * SUN,TUE,THU,SAT".into(), false));
        // AND of two partial sets: weekdays filtered by us
        assert_eq!(r("0 0 */10 * MON"), ("0 0 1,11,21,31 * *".into(), true));
    }

    #[test]
    fn every_rendering_compiles() {
        for expr in [
            "* * * * *",
            "0 0 1 * MON",
            "0 0 */2 * MON",
            "59 23 31 12 SAT,SUN",
            "@weekly",
        ] {
            compile(&parse(expr).unwrap()).unwrap();
        }
    }
}
