//! Seeing polos work (issue 10): `/metrics` read by the Prometheus project's own parser, with
//! counters that move when a schedule fires and a run completes; logs that are plain text in a
//! file and JSON when asked; worker log lines inside the run's span; the dashboard in a real
//! headless Chromium.

use std::collections::HashMap;
use std::path::Path;
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use polos::config::{LogConfig, LogFormat};
use polos::metrics::{serve_metrics, HttpAddr, Metrics};
use polos::model::{schedule_kv_key, RunRecord, RunStatus, SchedulePayload};
use polos::ticker::Ticker;
use polos::worker::{Worker, Workflow, WorkflowContext, WorkflowError};
use serde_json::{json, Value};
use tokio::io::{AsyncBufReadExt, BufReader};

use super::ticker::{at, config, put, wait_state};
use crate::common::python::prometheus_client;
use crate::common::webdriver::Browser;
use crate::common::{chromium, eventually, http, polos_cli, within, TestEnv};

/// A workflow with two durable steps, so runs have steps to show and time.
async fn report(ctx: WorkflowContext, _p: SchedulePayload) -> Result<Value, WorkflowError> {
    let rows = ctx
        .step
        .run("fetch", || async {
            Ok::<_, WorkflowError>(json!({"rows": 3}))
        })
        .await?;
    tracing::info!("inside the handler");
    ctx.step
        .run("send", || async move {
            Ok::<_, WorkflowError>(json!({"sent": rows["rows"]}))
        })
        .await?;
    Ok(json!({"status": "done"}))
}

/// Polls `f` every 50 ms until it returns a value; panics after the common bound.
async fn until<T, F, Fut>(what: &str, mut f: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    within(what, async {
        loop {
            if let Some(v) = f().await {
                return v;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await
}

/// A port nothing listens on right now.
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// `GET <base>metrics`, parsed by `prometheus_client`'s OpenMetrics parser: sample → value.
async fn scrape(base: &str) -> HashMap<String, f64> {
    let response = http::get(&format!("{base}metrics")).await;
    assert_eq!(response.status, 200, "{}", response.body);
    assert!(
        response.headers["content-type"].starts_with("application/openmetrics-text"),
        "{:?}",
        response.headers
    );
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/py/parse_metrics.py");
    let mut child = tokio::process::Command::new("python3")
        .arg(script)
        .env("PYTHONPATH", prometheus_client())
        .env("PYTHONDONTWRITEBYTECODE", "1")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    use tokio::io::AsyncWriteExt;
    let mut stdin = child.stdin.take().unwrap();
    stdin.write_all(response.body.as_bytes()).await.unwrap();
    drop(stdin);
    let out = within("the metrics parser", child.wait_with_output())
        .await
        .unwrap();
    assert!(
        out.status.success(),
        "prometheus_client refused the exposition: {}\n{}",
        String::from_utf8_lossy(&out.stderr),
        response.body
    );
    let parsed: Value = serde_json::from_slice(&out.stdout).unwrap();
    parsed["samples"]
        .as_object()
        .unwrap()
        .iter()
        .map(|(k, v)| (k.clone(), v.as_f64().unwrap()))
        .collect()
}

fn sample(samples: &HashMap<String, f64>, name: &str) -> f64 {
    samples.get(name).copied().unwrap_or(0.0)
}

#[tokio::test]
async fn metrics_move_when_a_schedule_fires_and_its_run_completes() {
    let env = TestEnv::start().await;
    let clock = polos::ticker::ManualClock::frozen(at("2026-05-01T08:59:30Z"));
    put(&env, "report", "global", json!({"cron": "0 9 * * *"})).await;

    // The scheduler's registry, served the way `polos scheduler --http` serves it.
    let scheduler_metrics = Metrics::new();
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let stopped = move || {
        let mut rx = stop_rx.clone();
        async move {
            let _ = rx.wait_for(|s| *s).await;
        }
    };
    let (addr, _http) = serve_metrics(
        &HttpAddr::parse("0").unwrap(),
        None,
        scheduler_metrics.clone(),
        stopped(),
    )
    .await
    .unwrap();
    let scheduler = format!("http://{addr}/");
    let ticker = Ticker::new(env.client.clone(), &config(&env))
        .clock(Arc::new(clock.clone()))
        .metrics(scheduler_metrics);
    let mut status = ticker.status();
    let ticker = tokio::spawn(ticker.run(stopped()));
    within(
        "ticker active",
        status.wait_for(|s| s.active && s.schedules == 1),
    )
    .await
    .unwrap();

    // A worker with its own endpoint (`worker.metrics_addr`).
    let worker_port = free_port();
    let worker = Worker::new(env.client.clone())
        .workflow(Workflow::new("report", report))
        .metrics_addr(&format!("127.0.0.1:{worker_port}"));
    let worker = tokio::spawn(worker.run(stopped()));
    let worker_url = format!("http://127.0.0.1:{worker_port}/");
    eventually("the worker's /metrics answers", || async {
        tokio::net::TcpStream::connect(("127.0.0.1", worker_port))
            .await
            .is_ok()
    })
    .await;

    let fires = r#"polos_fires_total{trigger="schedule",workflow="report"}"#;
    let completed = r#"polos_runs_total{status="completed",workflow="report"}"#;
    let before = scrape(&scheduler).await;
    assert_eq!(sample(&before, fires), 0.0);
    assert_eq!(sample(&before, "polos_scheduler_leading{}"), 1.0);
    assert_eq!(sample(&before, "polos_schedules_loaded{}"), 1.0);
    assert_eq!(sample(&scrape(&worker_url).await, completed), 0.0);

    clock.set(at("2026-05-01T09:00:00Z"));
    wait_state(&env, "report", "global", "the 09:00 fire", |s| s.fires == 1).await;
    let after = scrape(&scheduler).await;
    assert_eq!(sample(&after, fires), 1.0, "{after:#?}");
    assert_eq!(
        sample(
            &after,
            r#"polos_fire_lateness_seconds_count{trigger="schedule"}"#
        ),
        1.0
    );
    assert_eq!(
        sample(&after, r#"polos_fire_duplicates_total{workflow="report"}"#),
        0.0
    );

    let worker_samples = until("the worker counts the completed run", || {
        let url = worker_url.clone();
        async move {
            let samples = scrape(&url).await;
            (sample(&samples, completed) == 1.0).then_some(samples)
        }
    })
    .await;
    let steps = |step: &str| {
        sample(
            &worker_samples,
            &format!(r#"polos_step_duration_seconds_count{{step="{step}",workflow="report"}}"#),
        )
    };
    assert_eq!((steps("fetch"), steps("send")), (1.0, 1.0));
    assert_eq!(
        sample(
            &worker_samples,
            r#"polos_runs_in_flight{workflow="report"}"#
        ),
        0.0
    );
    // The run really completed (checked outside the process's own counters).
    let runs = env.js.get_key_value("polos_runs").await.unwrap();
    let run_id = polos::model::run_id_for(
        &polos::model::schedule_id("report", "global"),
        at("2026-05-01T09:00:00Z"),
    );
    let record: RunRecord = serde_json::from_slice(
        &runs
            .get(polos::model::run_kv_key("report", &run_id))
            .await
            .unwrap()
            .unwrap(),
    )
    .unwrap();
    assert_eq!(record.status, RunStatus::Completed);

    let _ = stop_tx.send(true);
    within("ticker stops", ticker).await.unwrap().unwrap();
    within("worker stops", worker).await.unwrap().unwrap();
}

/// A running `polos scheduler --http 127.0.0.1:0` with its stderr in a file.
struct Scheduler {
    child: tokio::process::Child,
    url: String,
    log: std::path::PathBuf,
    _dir: tempfile::TempDir,
}

impl Scheduler {
    async fn start(nats: &str, extra_env: &[(&str, &str)]) -> Scheduler {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("scheduler.log");
        let mut command = tokio::process::Command::new(env!("CARGO_BIN_EXE_polos"));
        command
            .args(["--nats-url", nats, "scheduler", "--http", "127.0.0.1:0"])
            .current_dir(dir.path())
            .env_remove("POLOS_CONFIG")
            .env_remove("NO_COLOR")
            .env("POLOS_LOG__LEVEL", "info")
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(&log).unwrap())
            .kill_on_drop(true);
        for (k, v) in extra_env {
            command.env(k, v);
        }
        let mut child = command.spawn().unwrap();
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        let line = within("the dashboard URL on stdout", lines.next_line())
            .await
            .unwrap()
            .expect("polos scheduler printed nothing");
        let url = line
            .split_whitespace()
            .find(|w| w.starts_with("http://"))
            .unwrap_or_else(|| panic!("no URL in {line:?}"))
            .to_string();
        Scheduler {
            child,
            url,
            log,
            _dir: dir,
        }
    }

    /// SIGTERM, then the log it wrote.
    async fn stop(mut self) -> String {
        let pid = self.child.id().unwrap();
        std::process::Command::new("kill")
            .args(["-TERM", &pid.to_string()])
            .status()
            .unwrap();
        let status = within("polos scheduler exits", self.child.wait())
            .await
            .unwrap();
        let log = std::fs::read_to_string(&self.log).unwrap();
        // Exit 0, not death by the signal: SIGTERM stops it cleanly however early it comes.
        assert_eq!(status.code(), Some(0), "{status}: {log}");
        log
    }
}

#[tokio::test]
async fn the_scheduler_binary_serves_metrics_and_logs_plain_text_to_a_file() {
    let env = TestEnv::start().await;
    let url = env.server.url().to_string();
    let scheduler = Scheduler::start(&url, &[]).await;
    let out = polos_cli(&url, &["schedules", "create", "report", "0 9 * * *"]).await;
    assert!(out.status.success(), "{out:?}");
    let bad = polos_cli(&url, &["schedules", "create", "report", "0 25 * * *"]).await;
    assert_eq!(bad.status.code(), Some(2));
    let before = scrape(&scheduler.url).await;
    let manual = r#"polos_fires_total{trigger="manual",workflow="report"}"#;
    assert_eq!(sample(&before, manual), 0.0);
    let out = polos_cli(&url, &["schedules", "trigger", "report"]).await;
    assert!(out.status.success(), "{out:?}");
    let after = scrape(&scheduler.url).await;
    assert_eq!(sample(&after, manual), 1.0);
    let requests = |endpoint: &str, code: &str| {
        sample(
            &after,
            &format!(r#"polos_api_requests_total{{code="{code}",endpoint="{endpoint}"}}"#),
        )
    };
    assert_eq!(requests("schedules.upsert", "ok"), 1.0);
    assert_eq!(requests("schedules.upsert", "invalid_cron"), 1.0);
    assert_eq!(requests("schedules.trigger", "ok"), 1.0);
    assert_eq!(
        sample(
            &after,
            r#"polos_api_request_duration_seconds_count{endpoint="schedules.upsert"}"#
        ),
        2.0
    );

    let log = scheduler.stop().await;
    assert!(log.contains("scheduler ticker starting"), "{log}");
    assert!(
        !log.contains('\u{1b}'),
        "ANSI escapes in a log written to a file:\n{log}"
    );
}

/// A supervisor may stop the scheduler the moment it has started. Before the signal handlers
/// were installed eagerly, about one SIGTERM in three sent right after the dashboard URL was
/// printed killed the process outright (no lease release, no state flush): twenty in a row
/// then pass by chance about once in 3,000. bash sends each signal the moment it reads the
/// line (a builtin `kill`, no process spawned in between).
#[tokio::test]
async fn sigterm_right_after_start_stops_the_scheduler_cleanly() {
    let env = TestEnv::start().await;
    let script = r#"
        bad=0
        for i in $(seq 1 20); do
          coproc P { exec "$POLOS" --nats-url "$URL" scheduler --http 127.0.0.1:0 2>/dev/null; }
          pid=$P_PID
          read -r line <&"${P[0]}"
          kill -TERM "$pid"
          wait "$pid" || bad=$((bad+1))
        done
        echo "killed=$bad"
    "#;
    let out = within(
        "20 schedulers started and stopped",
        tokio::process::Command::new("bash")
            .args(["-c", script])
            .env("POLOS", env!("CARGO_BIN_EXE_polos"))
            .env("URL", env.server.url())
            .env_remove("POLOS_CONFIG")
            .env("POLOS_LOG__LEVEL", "warn")
            .kill_on_drop(true)
            .output(),
    )
    .await
    .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(text.trim(), "killed=0", "{text}");
}

#[tokio::test]
async fn json_logs_are_one_object_per_line() {
    let env = TestEnv::start().await;
    let scheduler = Scheduler::start(env.server.url(), &[("POLOS_LOG__FORMAT", "json")]).await;
    let log = scheduler.stop().await;
    let lines: Vec<&str> = log.lines().collect();
    assert!(lines.len() >= 3, "{log}");
    for line in lines {
        let v: Value = serde_json::from_str(line)
            .unwrap_or_else(|e| panic!("not one JSON object per line ({e}): {line:?}"));
        assert!(v["level"].is_string() && v["message"].is_string(), "{line}");
    }
    assert!(
        log.contains(r#""message":"scheduler ticker starting""#),
        "{log}"
    );
}

/// Captured log output.
#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl std::io::Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for Captured {
    type Writer = Captured;
    fn make_writer(&'a self) -> Self::Writer {
        self.clone()
    }
}

// A current-thread runtime (the default): every task runs on this thread, under this
// thread's subscriber.
#[tokio::test]
async fn worker_log_lines_carry_workflow_run_id_and_attempt() {
    let captured = Captured::default();
    let log = LogConfig {
        level: "info,async_nats=warn".into(),
        format: LogFormat::Json,
    };
    let _guard =
        tracing::subscriber::set_default(polos::cli::log_subscriber(&log, captured.clone(), false));
    let env = TestEnv::start().await;
    let (stop_tx, mut stop_rx) = tokio::sync::watch::channel(false);
    let worker = Worker::new(env.client.clone())
        .workflow(Workflow::new("report", report))
        .run(async move {
            let _ = stop_rx.wait_for(|s| *s).await;
        });
    let worker = tokio::spawn(worker);
    let fire = polos::model::Fire::manual(
        "report",
        polos::model::payload(
            &polos::model::ScheduleRecord::new("report", "global", "0 9 * * *", "UTC"),
            chrono::Utc::now(),
            None,
            chrono::Utc::now(),
        ),
    );
    env.js
        .publish_with_headers(fire.subject(), fire.headers(), fire.body())
        .await
        .unwrap()
        .await
        .unwrap();
    let runs = env.js.get_key_value("polos_runs").await.unwrap();
    let key = polos::model::run_kv_key("report", &fire.run_id);
    eventually("the run completes", || {
        let (runs, key) = (runs.clone(), key.clone());
        async move {
            runs.get(key).await.ok().flatten().is_some_and(|v| {
                serde_json::from_slice::<RunRecord>(&v)
                    .is_ok_and(|r| r.status == RunStatus::Completed)
            })
        }
    })
    .await;
    let _ = stop_tx.send(true);
    within("worker stops", worker).await.unwrap().unwrap();

    let text = String::from_utf8(captured.0.lock().unwrap().clone()).unwrap();
    let line = text
        .lines()
        .find(|l| l.contains("inside the handler"))
        .unwrap_or_else(|| panic!("the handler's line is missing:\n{text}"));
    let v: Value = serde_json::from_str(line).unwrap();
    assert_eq!(v["span"]["name"], "run", "{line}");
    assert_eq!(v["span"]["workflow"], "report", "{line}");
    assert_eq!(v["span"]["run_id"], fire.run_id.as_str(), "{line}");
    assert_eq!(v["span"]["attempt"], 1, "{line}");
}

#[tokio::test]
async fn the_dashboard_in_headless_chromium() {
    let env = TestEnv::start().await;
    let config = env.config();
    let metrics = Metrics::new();
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let stopped = move || {
        let mut rx = stop_rx.clone();
        async move {
            let _ = rx.wait_for(|s| *s).await;
        }
    };
    let scheduler = polos::scheduler::Service::new(env.client.clone(), &config)
        .metrics(metrics.clone())
        .run(stopped());
    let worker = tokio::spawn(
        Worker::new(env.client.clone())
            .workflow(Workflow::new("digest", report).schedulable())
            .metrics(metrics.clone())
            .run(stopped()),
    );
    let dashboard = polos::web::Dashboard::start(env.client.clone(), metrics)
        .await
        .unwrap();
    let listener = polos::metrics::bind(&HttpAddr::parse("0").unwrap(), None)
        .await
        .unwrap();
    let base = format!("http://{}/", listener.local_addr().unwrap());
    let web = tokio::spawn(polos::web::serve(listener, dashboard, None, stopped()));

    let body = async {
        // A schedule created through the API appears with its next fire in its zone and in UTC.
        let api = polos::PolosClient::from_nats(env.client.clone());
        until("the API answers", || {
            let api = api.clone();
            async move {
                polos::schedules::create(&api, "digest", "30 2 * * *", "America/New_York", "user_1")
                    .await
                    .ok()
            }
        })
        .await;
        let cron = polos::cron::CronSchedule::parse("30 2 * * *", "America/New_York").unwrap();
        let next = cron.next_after(chrono::Utc::now()).unwrap();
        let local = next
            .with_timezone(&chrono_tz::America::New_York)
            .format("%Y-%m-%d %H:%M %Z")
            .to_string();
        let dom = until("the schedule appears in the list", || {
            let base = base.clone();
            async move {
                let dom = chromium::dump_dom(&format!("{base}schedules")).await;
                dom.contains(r#"data-kv-key="digest.user_1""#)
                    .then_some(dom)
            }
        })
        .await;
        let row = &dom[dom.find(r#"data-kv-key="digest.user_1""#).unwrap()..];
        let row = &row[..row.find("</tr>").unwrap()];
        assert!(row.contains(&local), "next fire {local} missing in {row}");
        assert!(
            row.contains(&polos::model::time::format_instant(next)),
            "{row}"
        );

        // One schedule: plain English, DST notes, next fires.
        let page = format!("{base}schedule?workflow=digest&key=user_1");
        let dom = chromium::dump_dom(&page).await;
        assert!(
            dom.contains("At 02:30 every day, America/New_York time."),
            "{dom}"
        );
        assert!(
            dom.contains("02:30 does not exist on") && dom.contains("fires at 03:00"),
            "{dom}"
        );

        // A real browser presses the buttons: Pause, Resume, Trigger now. Each posts its form
        // from the page (with the browser's own Origin and Sec-Fetch-Site headers), follows the
        // redirect back to the schedule, and changes KV.
        let browser = Browser::start().await;
        browser.goto(&page).await;
        let kv = env.js.get_key_value("polos_schedules").await.unwrap();
        let stored = || async {
            let value = kv
                .get(schedule_kv_key("digest", "user_1"))
                .await
                .unwrap()
                .unwrap();
            serde_json::from_slice::<Value>(&value).unwrap()
        };
        assert_eq!(stored().await["paused"], false);
        let after_pause = browser
            .press("#pause", r#"<span class="badge paused">paused</span>"#)
            .await;
        assert!(
            after_pause.contains("paused: it fires no more"),
            "{after_pause}"
        );
        assert!(
            browser.url().await.starts_with(&format!("{base}schedule?")),
            "back on the schedule's page"
        );
        assert_eq!(stored().await["paused"], true, "Pause pauses it in KV");

        let after_resume = browser
            .press("#resume", "resumed: it fires from its next instant on")
            .await;
        assert!(after_resume.contains(r#"id="pause""#), "{after_resume}");
        assert_eq!(stored().await["paused"], false, "Resume resumes it in KV");

        // "Trigger now" starts a run: the page names it, and the worker completes it.
        let after_trigger = browser.press("#trigger", "triggered: run ").await;
        let at = after_trigger.find("triggered: run ").unwrap() + "triggered: run ".len();
        let run_id: String = after_trigger[at..]
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '_' || *c == '-')
            .collect();
        let runs = env.js.get_key_value("polos_runs").await.unwrap();
        until("the triggered run completes", || {
            let runs = runs.clone();
            let key = polos::model::run_kv_key("digest", &run_id);
            async move {
                let value = runs.get(&key).await.unwrap()?;
                let r: RunRecord = serde_json::from_slice(&value).unwrap();
                (r.status == RunStatus::Completed).then_some(())
            }
        })
        .await;

        // "Delete" removes it from KV and goes back to the list.
        browser.press("#delete", "deleted digest / user_1").await;
        assert!(browser
            .url()
            .await
            .starts_with(&format!("{base}schedules?")));
        assert!(
            kv.get(schedule_kv_key("digest", "user_1"))
                .await
                .unwrap()
                .is_none(),
            "Delete deletes it in KV"
        );
        browser.quit().await;

        let dom = chromium::dump_dom(&format!("{base}runs/{run_id}")).await;
        assert!(dom.contains(r#"id="run-status">completed"#), "{dom}");
        let steps = &dom[dom.find(r#"id="steps""#).unwrap()..];
        assert!(
            steps.find(">fetch<").unwrap() < steps.find(">send<").unwrap(),
            "steps in order: {steps}"
        );
        assert!(steps.contains(r#""rows": 3"#), "{steps}");
        let dom = chromium::dump_dom(&format!("{base}runs")).await;
        assert!(dom.contains(&run_id), "{dom}");

        // The load ahead renders its charts (the deleted schedule counts for nothing).
        let dom = chromium::dump_dom(&format!("{base}load")).await;
        assert!(dom.contains(r#"<svg class="chart""#), "{dom}");
        assert!(dom.contains("0 active schedules"), "{dom}");

        let _ = stop_tx.send(true);
    };
    // Every wait inside `body` is bounded; the scheduler stops when `body` sends the stop.
    let (scheduler, ()) = tokio::join!(scheduler, body);
    scheduler.unwrap();
    within("worker stops", worker).await.unwrap().unwrap();
    within("dashboard stops", web).await.unwrap().unwrap();
}

#[tokio::test]
async fn a_dashboard_on_another_address_needs_its_token() {
    let env = TestEnv::start().await;
    let dashboard = polos::web::Dashboard::start(env.client.clone(), Metrics::new())
        .await
        .unwrap();
    let listener = polos::metrics::bind(&HttpAddr::parse("0").unwrap(), Some("s3cret"))
        .await
        .unwrap();
    let base = format!("http://{}/", listener.local_addr().unwrap());
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let web = tokio::spawn(polos::web::serve(
        listener,
        dashboard,
        Some("s3cret"),
        async {
            let _ = stopped.await;
        },
    ));
    assert_eq!(http::get(&format!("{base}schedules")).await.status, 401);
    assert_eq!(http::get(&format!("{base}metrics")).await.status, 401);
    let authorized = http::request(
        "GET",
        &format!("{base}metrics"),
        &[("Authorization", "Bearer s3cret")],
        None,
    )
    .await;
    assert_eq!(authorized.status, 200);
    let login = http::get(&format!("{base}schedules?token=s3cret")).await;
    assert_eq!(login.status, 303);
    let cookie = login.headers["set-cookie"]
        .split(';')
        .next()
        .unwrap()
        .to_string();
    let page = http::request(
        "GET",
        &format!("{base}schedules"),
        &[("Cookie", &cookie)],
        None,
    )
    .await;
    assert_eq!(page.status, 200);
    assert!(page.body.contains("<h1>Schedules</h1>"));
    let _ = stop.send(());
    within("dashboard stops", web).await.unwrap().unwrap();
    let _ = Duration::ZERO;
}

// Current-thread runtime: the ticker's tasks log under this thread's subscriber.
#[tokio::test]
async fn one_info_line_per_round_of_fires_and_none_per_fire() {
    let captured = Captured::default();
    let log = LogConfig {
        level: "polos=info".into(),
        format: LogFormat::Json,
    };
    let _guard =
        tracing::subscriber::set_default(polos::cli::log_subscriber(&log, captured.clone(), false));
    let env = TestEnv::start().await;
    let clock = polos::ticker::ManualClock::frozen(at("2026-05-01T08:59:30Z"));
    for key in ["a", "b", "c"] {
        put(&env, "digest", key, json!({"cron": "0 9 * * *"})).await;
    }
    let ticker = Ticker::new(env.client.clone(), &config(&env)).clock(Arc::new(clock.clone()));
    let mut status = ticker.status();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let ticker = tokio::spawn(ticker.run(async {
        let _ = stopped.await;
    }));
    within(
        "ticker active",
        status.wait_for(|s| s.active && s.schedules == 3),
    )
    .await
    .unwrap();
    clock.set(at("2026-05-01T09:00:00Z"));
    within("three fires", status.wait_for(|s| s.fires == 3))
        .await
        .unwrap();
    let _ = stop.send(());
    within("ticker stops", ticker).await.unwrap().unwrap();

    let text = String::from_utf8(captured.0.lock().unwrap().clone()).unwrap();
    let lines: Vec<Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let rounds: Vec<&Value> = lines
        .iter()
        .filter(|v| v["message"] == "fired a round")
        .collect();
    assert_eq!(rounds.len(), 1, "{text}");
    assert_eq!(rounds[0]["fires"], 3, "{text}");
    assert_eq!(rounds[0]["first"], "2026-05-01T09:00:00Z", "{text}");
    assert_eq!(rounds[0]["last"], "2026-05-01T09:00:00Z", "{text}");
    assert!(rounds[0]["worst_late_ms"].is_number(), "{text}");
    assert!(
        !lines.iter().any(|v| v["message"] == "fired"),
        "a line per fire at info:\n{text}"
    );
}

#[tokio::test]
async fn dst_notes_and_plain_english_in_the_cli_and_the_upsert_reply() {
    let env = TestEnv::start().await;
    let api = polos::api::start(env.client.clone(), &env.config())
        .await
        .unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let api = tokio::spawn(api.run(async {
        let _ = stopped.await;
    }));
    let upsert = |cron: &str, tz: &str, key: &str| {
        let body = json!({"workflow": "digest", "cron": cron, "timezone": tz, "key": key});
        let client = env.client.clone();
        async move {
            let reply = client
                .request("polos.schedules.upsert", body.to_string().into())
                .await
                .unwrap();
            serde_json::from_slice::<Value>(&reply.payload).unwrap()
        }
    };
    // As any client sees it: an additive `warnings` list of strings.
    let reply = upsert("30 2 * * *", "America/New_York", "u1").await;
    let warnings: Vec<&str> = reply["warnings"]
        .as_array()
        .unwrap_or_else(|| panic!("no warnings in {reply}"))
        .iter()
        .map(|w| w.as_str().unwrap())
        .collect();
    assert!(
        warnings
            .iter()
            .any(|w| w.starts_with("02:30 does not exist on ")
                && w.ends_with(" in America/New_York: fires at 03:00")),
        "{reply}"
    );
    let reply = upsert("* * * * *", "UTC", "u2").await;
    assert!(
        reply["warnings"][0]
            .as_str()
            .unwrap()
            .contains("events or queues"),
        "{reply}"
    );
    let reply = upsert("0 12 * * *", "UTC", "u3").await;
    assert!(reply.get("warnings").is_none(), "nothing to say: {reply}");

    let url = env.server.url();
    let out = polos_cli(
        url,
        &[
            "schedules",
            "create",
            "digest",
            "30 2 * * *",
            "--timezone",
            "America/New_York",
            "--key",
            "u4",
        ],
    )
    .await;
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{out:?}");
    assert!(
        text.contains("At 02:30 every day, America/New_York time."),
        "{text}"
    );
    assert!(text.contains("note: 02:30 does not exist on "), "{text}");
    let out = polos_cli(url, &["schedules", "get", "digest", "--key", "u4"]).await;
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("At 02:30 every day, America/New_York time."),
        "{text}"
    );
    assert!(
        text.contains("notes        02:30 does not exist on "),
        "{text}"
    );

    let _ = stop.send(());
    within("API stops", api).await.unwrap().unwrap();
}
