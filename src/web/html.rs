//! HTML helpers: escaping, the page frame, small formatting pieces shared by the pages.

use chrono::{DateTime, Utc};
use chrono_tz::Tz;

/// The stylesheet, served at `/assets/style.css` (no CDN: the dashboard works offline).
pub const STYLE: &str = include_str!("assets/style.css");
/// The icon, served at `/assets/icon.svg`.
pub const ICON: &str = include_str!("assets/icon.svg");

/// Escapes text for an HTML element or a quoted attribute.
pub fn esc(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// Escapes a query-string value.
pub fn q(text: &str) -> String {
    crate::metrics::urlencode(text)
}

/// Which section a page belongs to (highlighted in the navigation).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Section {
    /// Schedules and one schedule.
    Schedules,
    /// Runs and one run.
    Runs,
    /// The load ahead.
    Load,
}

/// A whole page: navigation, a status line, an optional flash message, the body.
pub fn page(
    title: &str,
    section: Section,
    status: &str,
    flash: Option<&str>,
    body: &str,
) -> String {
    let link = |s: Section, href: &str, text: &str| {
        let class = if s == section {
            " class=\"active\""
        } else {
            ""
        };
        format!(r#"<a href="{href}"{class}>{text}</a>"#)
    };
    let flash = flash
        .map(|f| format!(r#"<p class="flash" role="status">{}</p>"#, esc(f)))
        .unwrap_or_default();
    format!(
        r#"<!doctype html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">
<title>{title} · polos</title><link rel="stylesheet" href="/assets/style.css"><link rel="icon" href="/assets/icon.svg"></head>
<body><header><a class="brand" href="/schedules"><img src="/assets/icon.svg" alt="" width="20" height="20">polos</a><nav>{s}{r}{l}<a href="/metrics">metrics</a></nav><span class="status">{status}</span></header>
<main>{flash}<h1>{title}</h1>
{body}</main></body></html>
"#,
        title = esc(title),
        s = link(Section::Schedules, "/schedules", "Schedules"),
        r = link(Section::Runs, "/runs", "Runs"),
        l = link(Section::Load, "/load", "Load ahead"),
    )
}

/// An instant in a zone: `2026-12-01 08:00 PST`.
pub fn local(t: DateTime<Utc>, tz: Tz) -> String {
    t.with_timezone(&tz).format("%Y-%m-%d %H:%M %Z").to_string()
}

/// An instant in UTC: `2026-12-01T16:00:00Z`.
pub fn utc(t: DateTime<Utc>) -> String {
    crate::model::time::format_instant(t)
}

/// `in 3 h 10 min`, `2 d 4 h ago`.
pub fn relative(t: DateTime<Utc>, now: DateTime<Utc>) -> String {
    let secs = (t - now).num_seconds();
    let a = secs.unsigned_abs();
    let text = if a < 60 {
        format!("{a} s")
    } else if a < 3600 {
        format!("{} min", a / 60)
    } else if a < 86_400 {
        format!("{} h {} min", a / 3600, (a % 3600) / 60)
    } else {
        format!("{} d {} h", a / 86_400, (a % 86_400) / 3600)
    };
    if secs >= 0 {
        format!("in {text}")
    } else {
        format!("{text} ago")
    }
}

/// A duration between two instants: `1.2 s`, `3 min 4 s`.
pub fn duration(from: DateTime<Utc>, to: DateTime<Utc>) -> String {
    let ms = (to - from).num_milliseconds().max(0);
    if ms < 10_000 {
        format!("{:.1} s", ms as f64 / 1000.0)
    } else if ms < 3_600_000 {
        format!("{} min {} s", ms / 60_000, (ms % 60_000) / 1000)
    } else {
        format!("{} h {} min", ms / 3_600_000, (ms % 3_600_000) / 60_000)
    }
}

/// JSON, pretty, escaped, in a `<pre>`.
pub fn json_block(value: &serde_json::Value) -> String {
    let text = serde_json::to_string_pretty(value).unwrap_or_else(|_| value.to_string());
    format!("<pre class=\"json\">{}</pre>", esc(&text))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escaping() {
        assert_eq!(
            esc(r#"<a href="x">'&'</a>"#),
            "&lt;a href=&quot;x&quot;&gt;&#39;&amp;&#39;&lt;/a&gt;"
        );
    }
}
