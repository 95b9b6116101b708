//! Parsing the 5-field cron dialect of the README's "Cron and time zones" into [`Fields`].
//!
//! The grammar per field is a comma list of items; an item is `*`, `*/n`, `a`, `a-b`, `a-b/n` or
//! `a/n` (`a/n` = from `a` to the field's maximum in steps of `n`); values are numbers or, in the
//! month and day-of-week fields, three-letter names in any case. Every rejection names the field,
//! the offending value and what is allowed, and quotes the whole expression.

use super::error::CronError;
use super::fields::{Field, Fields, MONTH_NAMES};

/// The macros and the 5-field expression each stands for.
const MACROS: [(&str, &str); 7] = [
    ("@yearly", "0 0 1 1 *"),
    ("@annually", "0 0 1 1 *"),
    ("@monthly", "0 0 1 * *"),
    ("@weekly", "0 0 * * 0"),
    ("@daily", "0 0 * * *"),
    ("@midnight", "0 0 * * *"),
    ("@hourly", "0 * * * *"),
];

/// Parses `expr` and checks that it can fire at least once.
pub(crate) fn parse(expr: &str) -> Result<Fields, CronError> {
    let invalid = |message: String| CronError::InvalidCron {
        expr: expr.to_string(),
        message,
    };
    let trimmed = expr.trim();
    let body = if trimmed.starts_with('@') {
        expand_macro(trimmed).map_err(|m| invalid(format!("{m} in {expr:?}")))?
    } else {
        trimmed
    };
    let parts: Vec<&str> = body.split_whitespace().collect();
    if parts.len() != 5 {
        return Err(invalid(field_count_message(expr, parts.len())));
    }
    let mut fields = Fields::empty();
    for (field, text) in Field::ALL.into_iter().zip(parts) {
        parse_field(&mut fields, field, text).map_err(|m| invalid(format!("{m} in {expr:?}")))?;
    }
    check_can_fire(&fields).map_err(|m| invalid(format!("{m} in {expr:?}")))?;
    Ok(fields)
}

fn expand_macro(text: &str) -> Result<&'static str, String> {
    let lower = text.to_ascii_lowercase();
    if let Some((_, body)) = MACROS.iter().find(|(name, _)| *name == lower) {
        return Ok(body);
    }
    if lower == "@reboot" {
        return Err(
            "@reboot is not supported: schedules fire at times of day, not at start-up".into(),
        );
    }
    if lower.starts_with("@every") {
        return Err(format!(
            "{text:?} is not supported; write the interval as 5 fields (e.g. \"*/15 * * * *\")"
        ));
    }
    let names: Vec<&str> = MACROS.iter().map(|(n, _)| *n).collect();
    Err(format!(
        "unknown macro {text:?}; use one of {} or 5 fields",
        names.join(", ")
    ))
}

fn field_count_message(expr: &str, got: usize) -> String {
    let hint = match got {
        0 => return format!("the cron expression {expr:?} is empty; write 5 fields (minute hour day-of-month month day-of-week), e.g. \"0 9 * * *\""),
        6 | 7 => "; seconds and years are not supported",
        _ => "",
    };
    format!(
        "expected 5 fields (minute hour day-of-month month day-of-week) but got {got} in {expr:?}{hint}"
    )
}

fn parse_field(fields: &mut Fields, field: Field, text: &str) -> Result<(), String> {
    if text.starts_with('*') {
        fields.mark_star(field);
    }
    for item in text.split(',') {
        if item.is_empty() {
            return Err(format!(
                "{} {text:?} has an empty list item (a comma at the start or end, or two in a row)",
                field.name()
            ));
        }
        parse_item(fields, field, item)?;
    }
    Ok(())
}

fn parse_item(fields: &mut Fields, field: Field, item: &str) -> Result<(), String> {
    let (base, step) = match item.split_once('/') {
        Some((base, step_text)) => {
            if step_text.contains('/') {
                return Err(format!("{} {item:?} has more than one '/'", field.name()));
            }
            (base, Some(parse_step(field, step_text)?))
        }
        None => (item, None),
    };
    let (start, end) = if base == "*" {
        (field.min(), field.max())
    } else if base.is_empty() {
        return Err(format!(
            "{} {item:?} has nothing before '/'; write */n or a/n",
            field.name()
        ));
    } else if let Some((a, b)) = split_range(base) {
        let start = parse_value(field, a)?;
        let end = parse_value(field, b)?;
        if start > end {
            return Err(descending_message(field, a, b, start, end));
        }
        (start, end)
    } else {
        let value = parse_value(field, base)?;
        match step {
            // `a/n` runs from a to the end of the field.
            Some(_) => (value, field.max()),
            None => (value, value),
        }
    };
    let step = step.unwrap_or(1) as usize;
    for value in (start..=end).step_by(step) {
        fields.insert(field, value);
    }
    Ok(())
}

/// Splits `a-b`; a leading `-` (a negative number) is not a range but a bad value.
fn split_range(base: &str) -> Option<(&str, &str)> {
    match base.split_once('-') {
        Some((a, b)) if !a.is_empty() => Some((a, b)),
        _ => None,
    }
}

fn descending_message(field: Field, a: &str, b: &str, start: u32, end: u32) -> String {
    let name = field.name();
    if field == Field::DayOfWeek && end == 0 {
        // FRI-SUN: Sunday can also be written 7, which makes the range ascending.
        return format!(
            "{name} range {a}-{b} is descending ({start}-{end}); Sunday is also 7, so write {start}-7"
        );
    }
    format!("{name} range {a}-{b} is descending ({start}-{end}); write the smaller value first ({end}-{start}) or use a list")
}

fn parse_step(field: Field, text: &str) -> Result<u32, String> {
    let name = field.name();
    let max = field.max();
    if text.is_empty() {
        return Err(format!("{name} step is missing after '/'; write e.g. */5"));
    }
    if !text.bytes().all(|b| b.is_ascii_digit()) {
        return Err(format!("{name} step {text:?} is not a number 1-{max}"));
    }
    match text.parse::<u32>() {
        Ok(step) if (1..=max).contains(&step) => Ok(step),
        _ => Err(format!("{name} step {text} is out of range 1-{max}")),
    }
}

fn parse_value(field: Field, text: &str) -> Result<u32, String> {
    let name = field.name();
    let (min, max) = (field.min(), field.max());
    if !text.is_empty() && text.bytes().all(|b| b.is_ascii_digit()) {
        return match text.parse::<u32>() {
            Ok(v) if (min..=max).contains(&v) => Ok(v),
            _ => Err(format!("{name} {text} is out of range {min}-{max}")),
        };
    }
    if let Some((names, first)) = field.names() {
        if let Some(i) = names.iter().position(|n| n.eq_ignore_ascii_case(text)) {
            return Ok(first + i as u32);
        }
    }
    let days = matches!(field, Field::DayOfMonth | Field::DayOfWeek);
    if days
        && text
            .chars()
            .any(|c| matches!(c, 'L' | 'l' | 'W' | 'w' | '#' | '?'))
    {
        return Err(format!(
            "{name} {text:?} uses the L/W/#/? extensions, which are not supported; list the days explicitly"
        ));
    }
    let allowed = match field {
        Field::Month => format!(
            "a number {min}-{max} or a name {}-{}",
            MONTH_NAMES[0], MONTH_NAMES[11]
        ),
        Field::DayOfWeek => format!("a number {min}-{max} (0 and 7 are Sunday) or a name SUN-SAT"),
        _ => format!("a number {min}-{max}"),
    };
    Err(format!("{name} {text:?} is not {allowed}"))
}

/// Days in each month at most (February 29 exists in leap years).
const MAX_DAYS: [u32; 13] = [0, 31, 29, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31];
/// Month names by number (index 0 unused), for messages and descriptions.
pub(super) const MONTH_LONG: [&str; 13] = [
    "",
    "January",
    "February",
    "March",
    "April",
    "May",
    "June",
    "July",
    "August",
    "September",
    "October",
    "November",
    "December",
];

/// Rejects expressions that never fire: the day-of-month set (when it decides the day) names no
/// day that exists in any of the months.
fn check_can_fire(fields: &Fields) -> Result<(), String> {
    if fields.days_or() && fields.dow != 0 {
        // Some weekday falls in every month, so the OR always fires.
        return Ok(());
    }
    let possible = (1..=12u32)
        .filter(|m| fields.months & (1 << m) != 0)
        .any(|m| (1..=MAX_DAYS[m as usize]).any(|d| fields.dom & (1 << d) != 0));
    if possible {
        return Ok(());
    }
    let days: Vec<String> = (1..=31u32)
        .filter(|d| fields.dom & (1 << d) != 0)
        .map(|d| d.to_string())
        .collect();
    let months: Vec<&str> = (1..=12usize)
        .filter(|m| fields.months & (1 << m) != 0)
        .map(|m| MONTH_LONG[m])
        .collect();
    Err(format!(
        "the expression can never fire: day-of-month {} never occurs in {}",
        days.join(","),
        join_or(&months)
    ))
}

fn join_or(items: &[&str]) -> String {
    match items {
        [] => String::new(),
        [one] => one.to_string(),
        [init @ .., last] => format!("{} or {last}", init.join(", ")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ok(expr: &str) -> Fields {
        parse(expr).unwrap_or_else(|e| panic!("{expr:?} should parse: {e}"))
    }

    fn err(expr: &str) -> String {
        match parse(expr) {
            Ok(f) => panic!("{expr:?} should be rejected, got {f:?}"),
            Err(e) => {
                assert!(matches!(e, CronError::InvalidCron { .. }), "{e:?}");
                let message = e.message().to_string();
                assert!(
                    message.contains(&format!("{expr:?}")),
                    "message {message:?} should quote the expression"
                );
                message
            }
        }
    }

    fn bits(values: &[u32]) -> u64 {
        values.iter().fold(0, |acc, v| acc | 1 << v)
    }

    #[test]
    fn star_and_steps() {
        let f = ok("*/15 */6 */10 */4 */2");
        assert_eq!(f.minutes, bits(&[0, 15, 30, 45]));
        assert_eq!(f.hours as u64, bits(&[0, 6, 12, 18]));
        assert_eq!(f.dom as u64, bits(&[1, 11, 21, 31]));
        assert_eq!(f.months as u64, bits(&[1, 5, 9]));
        assert_eq!(f.dow as u64, bits(&[0, 2, 4, 6]));
        assert!(f.is_interval());
        assert!(!f.days_or());
    }

    #[test]
    fn values_ranges_lists_and_a_slash_n() {
        let f = ok("5,10-12,50/4 1-23/11 3 2 1");
        assert_eq!(f.minutes, bits(&[5, 10, 11, 12, 50, 54, 58]));
        assert_eq!(f.hours as u64, bits(&[1, 12, 23]));
        assert_eq!(f.dom as u64, bits(&[3]));
        assert!(!f.is_interval());
        assert!(f.days_or());
    }

    #[test]
    fn names_in_any_case_and_in_ranges() {
        assert_eq!(ok("0 0 * jan-Mar mon-FRI"), ok("0 0 * 1-3 1-5"));
        assert_eq!(ok("0 0 * DEC sun"), ok("0 0 * 12 0"));
        assert_eq!(ok("0 0 * * SAT/2"), ok("0 0 * * 6"));
        assert_eq!(ok("0 0 * * Tue,thu"), ok("0 0 * * 2,4"));
    }

    #[test]
    fn zero_and_seven_are_sunday() {
        assert_eq!(ok("0 0 * * 0").dow, 1);
        assert_eq!(ok("0 0 * * 7").dow, 1);
        assert_eq!(ok("0 0 * * SUN").dow, 1);
        assert_eq!(ok("0 0 * * 5-7").dow, ok("0 0 * * FRI,SAT,SUN").dow);
        assert_eq!(ok("0 0 * * 0-7").dow, 0x7F);
    }

    #[test]
    fn macros_expand() {
        assert_eq!(ok("@yearly"), ok("0 0 1 1 *"));
        assert_eq!(ok("@annually"), ok("0 0 1 1 *"));
        assert_eq!(ok("@monthly"), ok("0 0 1 * *"));
        assert_eq!(ok("@weekly"), ok("0 0 * * 0"));
        assert_eq!(ok("@daily"), ok("0 0 * * *"));
        assert_eq!(ok("@midnight"), ok("0 0 * * *"));
        assert_eq!(ok("@hourly"), ok("0 * * * *"));
        assert_eq!(ok("@DAILY"), ok("0 0 * * *"));
        assert!(ok("@hourly").is_interval());
        assert!(!ok("@daily").is_interval());
    }

    #[test]
    fn star_prefix_flags() {
        let f = ok("0 0 */2 * MON");
        assert!(f.starts_with_star(Field::DayOfMonth));
        assert!(!f.days_or());
        let f = ok("0 0 1 * MON");
        assert!(f.days_or());
        let f = ok("*/5,7 9 * * *");
        assert!(f.is_interval());
        let f = ok("0 9-17 * * *");
        assert!(!f.is_interval());
    }

    #[test]
    fn out_of_range_values_name_field_value_and_range() {
        assert_eq!(
            err("0 0 * * 8"),
            "day-of-week 8 is out of range 0-7 in \"0 0 * * 8\""
        );
        assert!(err("60 * * * *").starts_with("minute 60 is out of range 0-59"));
        assert!(err("0 24 * * *").starts_with("hour 24 is out of range 0-23"));
        assert!(err("0 0 0 * *").starts_with("day-of-month 0 is out of range 1-31"));
        assert!(err("0 0 32 * *").starts_with("day-of-month 32 is out of range 1-31"));
        assert!(err("0 0 * 13 *").starts_with("month 13 is out of range 1-12"));
        assert!(err("0 0 * 0 *").starts_with("month 0 is out of range 1-12"));
        assert!(err("99999999999 * * * *").starts_with("minute 99999999999 is out of range 0-59"));
        assert!(err("0 1-25 * * *").starts_with("hour 25 is out of range 0-23"));
    }

    #[test]
    fn descending_ranges() {
        let m = err("0 5-2 * * *");
        assert!(m.starts_with("hour range 5-2 is descending"), "{m}");
        assert!(m.contains("2-5"), "{m}");
        let m = err("0 0 * * FRI-SUN");
        assert!(
            m.starts_with("day-of-week range FRI-SUN is descending"),
            "{m}"
        );
        assert!(m.contains("5-7"), "{m}");
        assert!(err("0 0 * NOV-FEB *").starts_with("month range NOV-FEB is descending"));
    }

    #[test]
    fn bad_steps() {
        assert!(err("*/0 * * * *").starts_with("minute step 0 is out of range 1-59"));
        assert!(err("0 */24 * * *").starts_with("hour step 24 is out of range 1-23"));
        assert!(err("*/ * * * *").starts_with("minute step is missing"));
        assert!(err("*/x * * * *").starts_with("minute step \"x\" is not a number"));
        assert!(err("*/2/3 * * * *").starts_with("minute \"*/2/3\" has more than one '/'"));
        assert!(err("/5 * * * *").starts_with("minute \"/5\" has nothing before '/'"));
    }

    #[test]
    fn empty_items() {
        assert!(err("1,,2 * * * *").starts_with("minute \"1,,2\" has an empty list item"));
        assert!(err("0 1, * * *").starts_with("hour \"1,\" has an empty list item"));
        assert!(err("0 0 ,1 * *").starts_with("day-of-month \",1\" has an empty list item"));
    }

    #[test]
    fn field_count() {
        let m = err("0 0 * *");
        assert!(m.starts_with("expected 5 fields"), "{m}");
        assert!(m.contains("got 4"), "{m}");
        let m = err("0 0 0 * * *");
        assert!(m.contains("got 6") && m.contains("seconds"), "{m}");
        assert!(err("").contains("empty"));
        assert!(err("   ").contains("empty"));
    }

    #[test]
    fn unknown_names_and_garbage() {
        assert!(
            err("0 0 * FOO *").starts_with("month \"FOO\" is not a number 1-12 or a name JAN-DEC")
        );
        assert!(err("0 0 * MON *").starts_with("month \"MON\" is not"));
        assert!(err("0 0 * * JAN").starts_with("day-of-week \"JAN\" is not a number 0-7"));
        assert!(err("0 0 * * MONDAY").starts_with("day-of-week \"MONDAY\" is not"));
        assert!(err("1x * * * *").starts_with("minute \"1x\" is not a number 0-59"));
        assert!(err("0 -1 * * *").starts_with("hour \"-1\" is not a number 0-23"));
        assert!(err("0 0 * * 1-").starts_with("day-of-week \"\" is not"));
        assert!(err("0 0 * * *%").starts_with("day-of-week \"*%\" is not"));
    }

    #[test]
    fn saffron_extensions_are_not_supported() {
        for expr in [
            "0 0 L * *",
            "0 0 15W * *",
            "0 0 LW * *",
            "0 0 * * 5L",
            "0 0 * * 1#2",
            "0 0 ? * MON",
        ] {
            let m = err(expr);
            assert!(m.contains("not supported"), "{expr}: {m}");
        }
        assert!(err("0 0 L * *").starts_with("day-of-month \"L\""));
        assert!(err("0 0 * * 1#2").starts_with("day-of-week \"1#2\""));
    }

    #[test]
    fn macros_unknown_or_unsupported() {
        let m = err("@fortnightly");
        assert!(
            m.starts_with("unknown macro \"@fortnightly\"") && m.contains("@hourly"),
            "{m}"
        );
        assert!(err("@reboot").contains("not supported"));
        assert!(err("@every 5m").contains("not supported"));
    }

    #[test]
    fn never_firing_expressions() {
        assert_eq!(
            err("0 0 30 2 *"),
            "the expression can never fire: day-of-month 30 never occurs in February in \"0 0 30 2 *\""
        );
        assert_eq!(
            err("0 0 31 4,6 *"),
            "the expression can never fire: day-of-month 31 never occurs in April or June in \"0 0 31 4,6 *\""
        );
        assert!(err("0 0 30,31 FEB *").contains("day-of-month 30,31 never occurs in February"));
        // A weekday rescues it (both restricted: OR), and Feb 29 exists in leap years.
        ok("0 0 30 2 MON");
        ok("0 0 29 2 *");
        // AND mode with `*`-started weekdays cannot rescue it.
        assert!(err("0 0 30 2 */2").contains("never"));
    }
}
