//! `polos dev` as a user runs it: the real binary in a fresh directory, with its own
//! nats-server child on a free port.

use std::path::{Path, PathBuf};
use std::process::{Output, Stdio};

use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};
use tokio::sync::mpsc;

use crate::common::{http, polos_cli, within};

/// A running `polos dev` and the lines it printed.
struct Dev {
    child: Child,
    lines: mpsc::UnboundedReceiver<String>,
    /// Everything read so far, for failure messages.
    seen: Vec<String>,
}

impl Dev {
    fn start(dir: &Path) -> Dev {
        let server = polos::nats::server::find_or_install().unwrap();
        let mut child = Command::new(env!("CARGO_BIN_EXE_polos"))
            .args(["dev", "--port", "0"])
            .current_dir(dir)
            .env("POLOS_NATS_SERVER", server)
            .env_remove("POLOS_CONFIG")
            .env_remove("POLOS_NATS__URL")
            .env("POLOS_LOG__LEVEL", "warn")
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .kill_on_drop(true)
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let (tx, lines) = mpsc::unbounded_channel();
        tokio::spawn(async move {
            let mut reader = BufReader::new(stdout).lines();
            while let Ok(Some(line)) = reader.next_line().await {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Dev {
            child,
            lines,
            seen: Vec::new(),
        }
    }

    /// The first line (from now on) matching `pred`; panics after the common bound.
    async fn line(&mut self, what: &str, pred: impl Fn(&str) -> bool) -> String {
        let seen = &mut self.seen;
        let lines = &mut self.lines;
        let found = tokio::time::timeout(crate::common::WAIT, async {
            while let Some(line) = lines.recv().await {
                seen.push(line.clone());
                if pred(&line) {
                    return Some(line);
                }
            }
            None
        })
        .await;
        match found {
            Ok(Some(line)) => line,
            _ => panic!(
                "polos dev never printed {what}; it printed:\n{}",
                self.seen.join("\n")
            ),
        }
    }

    /// The embedded server's URL, from the banner.
    async fn url(&mut self) -> String {
        let line = self
            .line("the NATS URL", |l| l.trim_start().starts_with("NATS "))
            .await;
        line.split_whitespace()
            .find(|w| w.starts_with("nats://"))
            .unwrap()
            .to_string()
    }

    /// Ctrl-C; returns the exit code.
    async fn interrupt(mut self) -> Option<i32> {
        let pid = self.child.id().unwrap();
        let status = std::process::Command::new("kill")
            .args(["-INT", &pid.to_string()])
            .status()
            .unwrap();
        assert!(status.success());
        let status = within("polos dev to exit after Ctrl-C", self.child.wait())
            .await
            .unwrap();
        status.code()
    }
}

/// The pid of the nats-server child, from the ports file it writes (`nats-server_<pid>.ports`).
fn server_pid(dir: &Path) -> u32 {
    let ports = dir.join(".polos/nats/ports");
    std::fs::read_dir(&ports)
        .unwrap()
        .filter_map(|e| e.ok())
        .find_map(|e| {
            e.file_name()
                .to_str()?
                .strip_prefix("nats-server_")?
                .strip_suffix(".ports")?
                .parse()
                .ok()
        })
        .unwrap_or_else(|| panic!("no ports file in {}", ports.display()))
}

fn alive(pid: u32) -> bool {
    // A zombie (exited, not yet reaped) counts as gone.
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => !stat.contains(") Z "),
        Err(_) => false,
    }
}

fn text(output: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

#[tokio::test]
async fn dev_runs_examples_stops_on_ctrl_c_and_keeps_its_data() {
    let dir = tempfile::tempdir().unwrap();
    let dir: PathBuf = dir.path().to_path_buf();

    let mut dev = Dev::start(&dir);
    let url = dev.url().await;
    let dashboard = dev
        .line("the dashboard URL", |l| {
            l.trim_start().starts_with("dashboard ")
        })
        .await;
    let dashboard = dashboard
        .split_whitespace()
        .find(|w| w.starts_with("http://127.0.0.1:"))
        .unwrap_or_else(|| panic!("no loopback URL in {dashboard:?}"))
        .to_string();
    dev.line("the example workflows", |l| {
        l.contains("workflows") && l.contains("daily-report") && l.contains("user-reminder")
    })
    .await;
    dev.line("the demo schedule", |l| {
        l.starts_with("demo: schedule sch_")
            && l.contains("polos --nats-url")
            && l.contains("schedules delete user-reminder --key dev-demo")
    })
    .await;
    let nats_pid = server_pid(&dir);
    assert!(alive(nats_pid));

    // A second `polos dev` on the same data would share the JetStream store: refused.
    let second = within(
        "a second polos dev to give up",
        Command::new(env!("CARGO_BIN_EXE_polos"))
            .args(["dev", "--port", "0"])
            .current_dir(&dir)
            .env_remove("POLOS_CONFIG")
            .env_remove("POLOS_NATS__URL")
            .kill_on_drop(true)
            .output(),
    )
    .await
    .unwrap();
    assert_eq!(second.status.code(), Some(4), "{}", text(&second));
    assert!(
        text(&second).contains("another polos dev"),
        "{}",
        text(&second)
    );

    // Fire the demo schedule now instead of waiting for the minute.
    let out = polos_cli(
        &url,
        &["schedules", "trigger", "user-reminder", "--key", "dev-demo"],
    )
    .await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let run_id = String::from_utf8_lossy(&out.stdout)
        .trim()
        .strip_prefix("Triggered run ")
        .unwrap()
        .to_string();
    let done = dev
        .line("the triggered run completing", |l| {
            l.contains(&run_id) && l.contains(" completed ")
        })
        .await;
    assert!(done.contains("user-reminder  dev-demo"), "{done}");
    assert!(done.contains(r#"output {"status":"sent"}"#), "{done}");

    // The dashboard shows the examples' schedules, the run and the load ahead; /metrics counts.
    let page = http::get(&format!("{dashboard}schedules")).await;
    assert_eq!(page.status, 200);
    for workflow in [
        "daily-report",
        "end-of-day-sync",
        "user-reminder",
        "morning-report",
    ] {
        assert!(
            page.body.contains(&format!("<td>{workflow}</td>")),
            "{workflow}: {}",
            page.body
        );
    }
    let page = http::get(&format!("{dashboard}runs")).await;
    assert!(page.body.contains(&run_id), "{}", page.body);
    let page = http::get(&format!("{dashboard}load")).await;
    assert!(page.body.contains(r#"<svg class="chart""#), "{}", page.body);
    let metrics = http::get(&format!("{dashboard}metrics")).await.body;
    assert!(
        metrics.contains(r#"polos_fires_total{workflow="user-reminder",trigger="manual"} 1"#),
        "{metrics}"
    );
    assert!(
        metrics.contains(r#"polos_runs_total{workflow="user-reminder",status="completed"}"#),
        "{metrics}"
    );

    // Something the second start must still have.
    let out = polos_cli(
        &url,
        &[
            "schedules",
            "create",
            "daily-digest",
            "0 8 * * *",
            "--key",
            "kept",
        ],
    )
    .await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));

    assert_eq!(dev.interrupt().await, Some(0), "polos dev exit code");
    assert!(
        !alive(nats_pid),
        "nats-server {nats_pid} outlived polos dev"
    );

    // Same directory again: the data is reused.
    let mut dev = Dev::start(&dir);
    let url = dev.url().await;
    dev.line("the demo schedule", |l| {
        l.starts_with("demo: schedule sch_")
    })
    .await;
    let out = polos_cli(&url, &["schedules", "get", "daily-digest", "--key", "kept"]).await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let out = polos_cli(&url, &["runs", "get", &run_id]).await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert!(text(&out).contains("completed"), "{}", text(&out));
    let nats_pid = server_pid(&dir);
    assert_eq!(dev.interrupt().await, Some(0), "polos dev exit code");
    assert!(
        !alive(nats_pid),
        "nats-server {nats_pid} outlived polos dev"
    );
}
