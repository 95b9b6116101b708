//! The pages, rendered from plain data (so they are tested without a server): schedules, one
//! schedule, runs, one run, the load ahead.

use std::fmt::Write;

use chrono::{DateTime, TimeDelta, Timelike, Utc};

use super::catalog::{Filter, Page, RowView, Summary};
use super::html::{duration, esc, json_block, local, q, relative, utc};
use super::load::{bar_chart, thousands, LoadAhead};
use super::runs::{RunFilter, RunPage, StepView};
use crate::model::{RunRecord, RunStatus};
use crate::store::ReadError;

/// Schedules per page.
pub const SCHEDULES_PER_PAGE: usize = 100;
/// Runs per page.
pub const RUNS_PER_PAGE: usize = 50;

fn status_text(s: RunStatus) -> &'static str {
    s.as_str()
}

fn schedule_href(workflow: &str, key: &str) -> String {
    format!("/schedule?workflow={}&key={}", q(workflow), q(key))
}

/// The header's one-line summary.
pub fn status_line(summary: &Summary, leader: &str) -> String {
    let loading = if summary.loaded { "" } else { " · loading…" };
    format!(
        "{} schedules · {} active · {} invalid · {}{loading}",
        thousands(summary.schedules as u64),
        thousands(summary.active as u64),
        thousands(summary.invalid as u64),
        esc(leader)
    )
}

fn workflow_options(workflows: &[(String, usize)], selected: Option<&str>) -> String {
    let mut out = String::from(r#"<option value="">all</option>"#);
    for (w, n) in workflows {
        let sel = if selected == Some(w.as_str()) {
            " selected"
        } else {
            ""
        };
        let _ = write!(
            out,
            r#"<option value="{w}"{sel}>{w} ({n})</option>"#,
            w = esc(w)
        );
    }
    out
}

/// `/schedules`: the filter form, one page of schedules, the pager.
pub fn schedules(
    filter: &Filter,
    page: &Page,
    workflows: &[(String, usize)],
    after: Option<&str>,
    now: DateTime<Utc>,
) -> String {
    let mut b = String::new();
    let _ = write!(
        b,
        r#"<form class="filters" method="get" action="/schedules">
<label>workflow<select name="workflow">{options}</select></label>
<label>key contains<input name="key" value="{key}" placeholder="user_123"></label>
<label><span><input type="checkbox" name="invalid" value="1"{checked}> invalid only</span></label>
<button type="submit">Filter</button></form>"#,
        options = workflow_options(workflows, filter.workflow.as_deref()),
        key = esc(filter.key.as_deref().unwrap_or("")),
        checked = if filter.invalid_only { " checked" } else { "" },
    );
    let shown = page.rows.len();
    let _ = write!(
        b,
        r#"<p class="muted">{} matching · showing {shown}{from}</p>"#,
        thousands(page.matching as u64),
        from = after
            .map(|a| format!(" after {}", esc(a)))
            .unwrap_or_default(),
    );
    b.push_str(
        r#"<table id="schedules"><thead><tr><th>workflow</th><th>key</th><th>cron</th><th>zone</th><th>state</th><th>next fire (its zone)</th><th>next fire (UTC)</th><th class="num">fires</th><th class="num">missed</th><th>last fire</th></tr></thead><tbody>"#,
    );
    for view in &page.rows {
        b.push_str(&schedule_row(view, now));
    }
    b.push_str("</tbody></table>");
    let base = format!(
        "/schedules?workflow={}&key={}{}",
        q(filter.workflow.as_deref().unwrap_or("")),
        q(filter.key.as_deref().unwrap_or("")),
        if filter.invalid_only {
            "&invalid=1"
        } else {
            ""
        }
    );
    b.push_str(r#"<div class="pager">"#);
    if after.is_some() {
        let _ = write!(b, r#"<a href="{}">« first page</a>"#, esc(&base));
    }
    if let Some(next) = &page.next_after {
        let _ = write!(
            b,
            r#"<a href="{}" rel="next">next page »</a>"#,
            esc(&format!("{base}&after={}", q(next)))
        );
    }
    b.push_str("</div>");
    b
}

fn schedule_row(view: &RowView, now: DateTime<Utc>) -> String {
    let record = match &view.row.record {
        Ok(r) => r,
        Err(why) => {
            let (workflow, key) = view
                .row
                .kv_key
                .split_once('.')
                .unwrap_or((view.row.kv_key.as_str(), ""));
            return format!(
                r#"<tr class="invalid" data-kv-key="{k}"><td>{w}</td><td class="mono">{key}</td><td colspan="8"><span class="badge invalid">invalid</span> <span class="error">{e}</span></td></tr>"#,
                k = esc(&view.row.kv_key),
                w = esc(workflow),
                key = esc(key),
                e = esc(why)
            );
        }
    };
    let state = view.state.as_ref();
    let ended = state.and_then(|s| s.ended);
    let (badge, next_zone, next_utc) = match (&view.row.cron, record.paused) {
        _ if ended.is_some() => (
            r#"<span class="badge">ended</span>"#,
            "—".to_string(),
            "—".to_string(),
        ),
        (_, true) => (
            r#"<span class="badge paused">paused</span>"#,
            "—".to_string(),
            "—".to_string(),
        ),
        (Some(cron), false) => match cron.next_after(now) {
            Some(t) => (
                r#"<span class="badge active">active</span>"#,
                format!(
                    "{} <span class=\"muted small\">{}</span>",
                    esc(&local(t, cron.timezone())),
                    relative(t, now)
                ),
                utc(t),
            ),
            None => (
                r#"<span class="badge">never</span>"#,
                "—".into(),
                "—".into(),
            ),
        },
        (None, false) => (
            r#"<span class="badge invalid">invalid</span>"#,
            "—".into(),
            "—".into(),
        ),
    };
    let last = state
        .and_then(|s| s.last_timestamp)
        .map_or_else(|| "—".to_string(), utc);
    format!(
        r#"<tr data-kv-key="{kv}"><td>{w}</td><td><a class="mono" href="{href}">{key}</a></td><td><code>{cron}</code></td><td>{tz}</td><td>{badge}</td><td>{next_zone}</td><td class="mono">{next_utc}</td><td class="num">{fires}</td><td class="num">{missed}</td><td class="mono">{last}</td></tr>"#,
        kv = esc(&view.row.kv_key),
        w = esc(&record.workflow),
        href = esc(&schedule_href(&record.workflow, &record.key)),
        key = esc(&record.key),
        cron = esc(&record.cron),
        tz = esc(&record.timezone),
        fires = state.map_or(0, |s| s.fires),
        missed = state.map_or(0, |s| s.missed),
    )
}

/// `/schedule`: one schedule with its description, notes, next fires, actions and runs.
pub fn schedule(view: &RowView, runs: &Result<RunPage, ReadError>, now: DateTime<Utc>) -> String {
    let mut b = String::new();
    let record = match &view.row.record {
        Ok(r) => r,
        Err(why) => {
            let (workflow, key) = view.row.kv_key.split_once('.').unwrap_or_default();
            let _ = write!(
                b,
                r#"<p><span class="badge invalid">invalid</span> <span class="error">{}</span></p><p class="muted">KV key <code>{}</code> in <code>polos_schedules</code>. It never fires; overwrite it with an upsert or delete it.</p>"#,
                esc(why),
                esc(&view.row.kv_key)
            );
            b.push_str(&actions(workflow, key, None));
            return b;
        }
    };
    let state = view.state.as_ref();
    let description = view
        .row
        .cron
        .as_ref()
        .map(|c| crate::cron::describe(c))
        .unwrap_or_default();
    let _ = write!(
        b,
        r#"<p class="lead" id="description">{}</p><dl class="facts">
<dt>schedule id</dt><dd class="mono">{}</dd>
<dt>workflow</dt><dd><a href="/runs?workflow={}">{}</a></dd>
<dt>key</dt><dd class="mono">{}</dd>
<dt>cron</dt><dd><code>{}</code> ({})</dd>
<dt>zone</dt><dd>{}</dd>
<dt>state</dt><dd id="state">{}</dd>
<dt>source</dt><dd>{}</dd>
<dt>note</dt><dd>{}</dd>
<dt>catch-up</dt><dd>{}</dd>
<dt>created · updated</dt><dd class="mono">{} · {}</dd>
<dt>fires · missed</dt><dd>{} · {}</dd>
<dt>last fire</dt><dd class="mono">{}</dd>
<dt>last run</dt><dd>{}</dd>
</dl>"#,
        esc(&description),
        esc(&record.schedule_id),
        q(&record.workflow),
        esc(&record.workflow),
        esc(&record.key),
        esc(&record.cron),
        if view.row.cron.as_ref().is_some_and(|c| c.is_interval()) {
            "interval schedule"
        } else {
            "fixed-time schedule"
        },
        esc(&record.timezone),
        match (state.and_then(|s| s.ended), record.paused) {
            (Some(crate::model::Ended::EndAt), _) =>
                r#"<span class="badge">ended</span> past its end_at"#,
            (Some(crate::model::Ended::MaxRuns), _) =>
                r#"<span class="badge">ended</span> fired max_runs times"#,
            (None, true) => r#"<span class="badge paused">paused</span>"#,
            (None, false) => r#"<span class="badge active">active</span>"#,
        },
        match record.source {
            crate::model::ScheduleSource::Api => "api",
            crate::model::ScheduleSource::Inline => "inline (declared in a worker's code)",
        },
        esc(record.note.as_deref().unwrap_or("—")),
        match (record.catchup, record.catchup_window_secs) {
            (None, None) => "scheduler default".to_string(),
            (p, w) => format!(
                "{} {}",
                p.map_or("default policy", |p| match p {
                    crate::model::CatchupPolicy::Latest => "latest",
                    crate::model::CatchupPolicy::All => "all",
                    crate::model::CatchupPolicy::Skip => "skip",
                }),
                w.map(|w| format!("within {w} s")).unwrap_or_default()
            ),
        },
        record.created_at.map_or_else(|| "—".into(), utc),
        record.updated_at.map_or_else(|| "—".into(), utc),
        state.map_or(0, |s| s.fires),
        state.map_or(0, |s| s.missed),
        state
            .and_then(|s| s.last_timestamp)
            .map_or_else(|| "—".into(), utc),
        state.and_then(|s| s.last_run_id.as_ref()).map_or_else(
            || "—".into(),
            |id| format!(r#"<a class="mono" href="/runs/{}">{}</a>"#, q(id), esc(id))
        ),
    );
    if let Some(error) = state.and_then(|s| s.error.as_ref()) {
        let _ = write!(b, r#"<p class="error">scheduler: {}</p>"#, esc(error));
    }
    let mut policies = Vec::new();
    if let Some(jitter) = record.jitter_secs {
        policies.push(format!("jitter {jitter} s"));
    }
    if let Some(start) = record.start_at {
        policies.push(format!("from {}", utc(start)));
    }
    if let Some(end) = record.end_at {
        policies.push(format!("until {}", utc(end)));
    }
    if let Some(max) = record.max_runs {
        policies.push(format!("at most {max} runs"));
    }
    if let Some(n) = state.map(|s| s.backfilled).filter(|n| *n > 0) {
        policies.push(format!("{n} back-filled"));
    }
    if !record.backfills.is_empty() {
        policies.push(format!(
            "{} back-fill request(s) stored",
            record.backfills.len()
        ));
    }
    if !policies.is_empty() {
        let _ = write!(b, r#"<p id="policies">{}</p>"#, esc(&policies.join(" · ")));
    }
    b.push_str(&actions(&record.workflow, &record.key, Some(record.paused)));
    if let Some(cron) = &view.row.cron {
        let notes = crate::cron::schedule_notes(cron, now);
        b.push_str("<h2>Notes</h2>");
        if notes.is_empty() {
            b.push_str(r#"<p class="muted">No daylight-saving change in the next 12 months touches this schedule.</p>"#);
        } else {
            b.push_str(r#"<ul class="notes" id="notes">"#);
            for n in notes {
                let _ = write!(b, "<li>{}</li>", esc(&n));
            }
            b.push_str("</ul>");
        }
        let _ = write!(
            b,
            r#"<h2>Next 10 fires{}</h2><table id="next"><thead><tr><th>#</th><th>in {}</th><th>UTC</th><th></th></tr></thead><tbody>"#,
            if record.paused { " (when resumed)" } else { "" },
            esc(&record.timezone)
        );
        for (i, t) in cron.upcoming(now, 10).into_iter().enumerate() {
            let _ = write!(
                b,
                r#"<tr><td>{}</td><td>{}</td><td class="mono">{}</td><td class="muted">{}</td></tr>"#,
                i + 1,
                esc(&local(t, cron.timezone())),
                utc(t),
                relative(t, now)
            );
        }
        b.push_str("</tbody></table>");
    }
    b.push_str("<h2>Recent runs</h2>");
    b.push_str(&runs_table(runs, now));
    b
}

/// Pause or resume, trigger and delete: HTML forms posting to the dashboard, which sends the
/// same API requests as the CLI (validated by the `polos` service).
fn actions(workflow: &str, key: &str, paused: Option<bool>) -> String {
    let form = |action: &str, label: &str, class: &str| {
        format!(
            r#"<form method="post" action="/schedule/{action}"><input type="hidden" name="workflow" value="{w}"><input type="hidden" name="key" value="{k}"><button type="submit" id="{action}" class="{class}">{label}</button></form>"#,
            w = esc(workflow),
            k = esc(key)
        )
    };
    let mut out = String::from(r#"<div class="actions">"#);
    match paused {
        Some(true) => out.push_str(&form("resume", "Resume", "")),
        Some(false) => out.push_str(&form("pause", "Pause", "")),
        None => {}
    }
    if paused.is_some() {
        out.push_str(&form("trigger", "Trigger now", ""));
    }
    out.push_str(&form("delete", "Delete", "danger"));
    out.push_str("</div>");
    out
}

fn runs_table(runs: &Result<RunPage, ReadError>, now: DateTime<Utc>) -> String {
    let page = match runs {
        Ok(page) => page,
        Err(e) => {
            return format!(
                r#"<p class="error">cannot read polos_runs: {}</p>"#,
                esc(&e.to_string())
            )
        }
    };
    if page.runs.is_empty() {
        return r#"<p class="muted">No runs.</p>"#.to_string();
    }
    let mut b = String::from(
        r#"<table id="runs"><thead><tr><th>run</th><th>workflow</th><th>key</th><th>trigger</th><th>status</th><th class="num">attempt</th><th>scheduled for</th><th>started</th><th class="num">duration</th></tr></thead><tbody>"#,
    );
    for r in &page.runs {
        let _ = write!(
            b,
            r#"<tr><td><a class="mono" href="/runs/{id_q}">{id}</a></td><td>{w}</td><td class="mono">{k}</td><td>{t}</td><td><span class="badge {s}">{s}</span></td><td class="num">{a}</td><td class="mono">{sf}</td><td class="muted">{st}</td><td class="num">{d}</td></tr>"#,
            id_q = q(&r.run_id),
            id = esc(&r.run_id),
            w = esc(&r.workflow),
            k = esc(&r.key),
            t = r.trigger.as_str(),
            s = status_text(r.status),
            a = r.attempt,
            sf = utc(r.scheduled_for),
            st = relative(r.started_at, now),
            d = r
                .finished_at
                .map_or_else(|| "—".to_string(), |f| duration(r.started_at, f)),
        );
    }
    b.push_str("</tbody></table>");
    b
}

/// `/runs`: the filter form, one page of runs, the pager.
pub fn runs(
    filter: &RunFilter,
    page: &Result<RunPage, ReadError>,
    workflows: &[(String, usize)],
    now: DateTime<Utc>,
) -> String {
    let status = filter.status.map(status_text);
    let mut options = String::from(r#"<option value="">any</option>"#);
    for s in ["running", "completed", "failed"] {
        let sel = if status == Some(s) { " selected" } else { "" };
        let _ = write!(options, r#"<option value="{s}"{sel}>{s}</option>"#);
    }
    let mut b = format!(
        r#"<form class="filters" method="get" action="/runs"><label>workflow<select name="workflow">{}</select></label><label>status<select name="status">{options}</select></label><button type="submit">Filter</button></form>"#,
        workflow_options(workflows, filter.workflow.as_deref())
    );
    b.push_str(&runs_table(page, now));
    if let Ok(RunPage {
        before: Some(before),
        ..
    }) = page
    {
        let _ = write!(
            b,
            r#"<div class="pager"><a href="/runs?workflow={}&status={}&before={before}" rel="next">older runs »</a></div>"#,
            q(filter.workflow.as_deref().unwrap_or("")),
            status.unwrap_or("")
        );
    }
    b
}

/// `/runs/<run_id>`: status, attempts, timing, output or error, each step with its output.
pub fn run(record: &RunRecord, steps: &[StepView], now: DateTime<Utc>) -> String {
    let mut b = String::new();
    let _ = write!(
        b,
        r#"<dl class="facts">
<dt>status</dt><dd><span class="badge {s}" id="run-status">{s}</span></dd>
<dt>workflow</dt><dd><a href="/runs?workflow={wq}">{w}</a></dd>
<dt>schedule</dt><dd><a href="{sched}">{key}</a> <span class="muted mono">{sid}</span></dd>
<dt>trigger</dt><dd>{trigger}</dd>
<dt>attempt</dt><dd>{attempt}</dd>
<dt>scheduled for</dt><dd class="mono">{sf}</dd>
<dt>started</dt><dd class="mono">{started} <span class="muted">{ago}</span></dd>
<dt>finished</dt><dd class="mono">{finished}</dd>
<dt>duration</dt><dd>{d}</dd>
</dl>"#,
        s = status_text(record.status),
        wq = q(&record.workflow),
        w = esc(&record.workflow),
        sched = esc(&schedule_href(&record.workflow, &record.key)),
        key = esc(&record.key),
        sid = esc(&record.schedule_id),
        trigger = record.trigger.as_str(),
        attempt = record.attempt,
        sf = utc(record.scheduled_for),
        started = utc(record.started_at),
        ago = relative(record.started_at, now),
        finished = record.finished_at.map_or_else(|| "—".into(), utc),
        d = record
            .finished_at
            .map_or_else(|| "—".to_string(), |f| duration(record.started_at, f)),
    );
    if let Some(error) = &record.error {
        let label = if record.status == RunStatus::Running {
            "error of the previous attempt"
        } else {
            "error"
        };
        let _ = write!(
            b,
            r#"<h2>{label}</h2><pre class="error" id="run-error">{}</pre>"#,
            esc(error)
        );
    }
    if let Some(output) = &record.output {
        b.push_str("<h2>Output</h2>");
        b.push_str(&json_block(output));
    }
    let _ = write!(b, "<h2>Steps ({})</h2>", steps.len());
    if steps.is_empty() {
        b.push_str(r#"<p class="muted">No completed steps.</p>"#);
        return b;
    }
    b.push_str(r#"<table id="steps"><thead><tr><th>#</th><th>step</th><th>completed</th><th>output</th></tr></thead><tbody>"#);
    for (i, step) in steps.iter().enumerate() {
        let (done, output) = match &step.record {
            Ok(r) => (utc(r.completed_at), json_block(&r.output)),
            Err(e) => (
                "—".to_string(),
                format!(r#"<span class="error">{}</span>"#, esc(e)),
            ),
        };
        let _ = write!(
            b,
            r#"<tr><td>{}</td><td class="mono step-name">{}</td><td class="mono">{done}</td><td>{output}</td></tr>"#,
            i + 1,
            esc(&step.name)
        );
    }
    b.push_str("</tbody></table>");
    b
}

/// A bar chart of `values`, bar `i` counting the fires from `start + i × step`: its tooltip is
/// that moment formatted with `format`, its axis label whatever `tick` says for it.
fn timeline(
    title: &str,
    values: &[u64],
    (start, step): (DateTime<Utc>, TimeDelta),
    format: &str,
    tick: impl Fn(DateTime<Utc>) -> Option<String>,
) -> String {
    let at = |i: usize| start + step * i32::try_from(i).unwrap_or(i32::MAX);
    bar_chart(
        title,
        values,
        |i, v| format!("{} UTC: {} fires", at(i).format(format), thousands(v)),
        |i| tick(at(i)),
    )
}

/// `/load`: fires per minute over 24 hours and per hour over 7 days, and the busiest minutes.
pub fn load(load: &LoadAhead, active: usize, now: DateTime<Utc>) -> String {
    let mut b = String::new();
    let day_total: u64 = load.per_minute.iter().sum();
    let week_total: u64 = load.per_hour.iter().sum();
    let _ = write!(
        b,
        r#"<p>{} active schedules fire <strong>{}</strong> times in the next 24 hours and {} times in the next 7 days. Times are UTC.</p>"#,
        thousands(active as u64),
        thousands(day_total),
        thousands(week_total)
    );
    if load.partial {
        b.push_str(r#"<p class="error">Too many distinct frequent crons to count them all: later bars are undercounted.</p>"#);
    }
    let peaks = load.peaks(10);
    if let Some((t, n)) = peaks.first() {
        let _ = write!(
            b,
            r#"<p id="peak">Busiest minute: <strong>{} UTC</strong> ({}) with <strong>{}</strong> fires.</p>"#,
            t.format("%Y-%m-%d %H:%M"),
            relative(*t, now),
            thousands(*n)
        );
    }
    b.push_str("<h2>Next 24 hours, fires per minute</h2>");
    b.push_str(&timeline(
        "fires per minute over the next 24 hours",
        &load.per_minute,
        (load.minute_start, TimeDelta::minutes(1)),
        "%H:%M",
        |t| (t.minute() == 0 && t.hour() % 3 == 0).then(|| t.format("%H:%M").to_string()),
    ));
    b.push_str("<h2>Next 7 days, fires per hour</h2>");
    b.push_str(&timeline(
        "fires per hour over the next 7 days",
        &load.per_hour,
        (load.hour_start, TimeDelta::hours(1)),
        "%a %d %H:00",
        |t| (t.hour() == 0).then(|| t.format("%a %d").to_string()),
    ));
    b.push_str("<h2>Busiest minutes (next 24 hours)</h2>");
    if peaks.is_empty() {
        b.push_str(r#"<p class="muted">Nothing fires in the next 24 hours.</p>"#);
        return b;
    }
    b.push_str(r#"<table id="peaks"><thead><tr><th>minute (UTC)</th><th></th><th class="num">fires</th></tr></thead><tbody>"#);
    for (t, n) in peaks {
        let _ = write!(
            b,
            r#"<tr><td class="mono">{}</td><td class="muted">{}</td><td class="num">{}</td></tr>"#,
            t.format("%Y-%m-%d %H:%M"),
            relative(t, now),
            thousands(n)
        );
    }
    b.push_str("</tbody></table>");
    b
}

/// A page for a request that cannot be answered: what was wrong and where to go.
pub fn problem(message: &str) -> String {
    format!(
        r#"<p class="error">{}</p><p><a href="/schedules">all schedules</a> · <a href="/runs">all runs</a></p>"#,
        esc(message)
    )
}

#[cfg(test)]
mod tests {
    use chrono::TimeZone;

    use super::*;
    use crate::web::catalog::Catalog;

    #[test]
    fn schedule_rows_show_zone_and_utc_and_invalid_reasons() {
        let c = Catalog::from_values(&[
            (
                "daily-digest.user_1",
                r#"{"cron":"0 8 * * *","timezone":"America/New_York"}"#,
            ),
            ("daily-digest.user_2", r#"{"cron":"0 8 * * 9"}"#),
            ("daily-digest.=!!", "{}"),
        ]);
        let now = Utc.with_ymd_and_hms(2026, 11, 30, 5, 0, 0).unwrap();
        let page = c.page(&Filter::default(), None, 10);
        let html = schedules(&Filter::default(), &page, &c.workflows(), None, now);
        assert!(html.contains("2026-11-30 08:00 EST"), "{html}");
        assert!(html.contains("2026-11-30T13:00:00Z"), "{html}");
        assert!(html.contains("day-of-week 9 is out of range"), "{html}");
        assert!(html.contains("&lt;workflow&gt;"), "{html}");
        assert!(!html.contains("<workflow>"), "text is escaped: {html}");
    }
}
