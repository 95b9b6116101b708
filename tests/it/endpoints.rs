//! Every HTTP endpoint polos serves (issue 11, part 6) — the dashboard and `/metrics` of
//! `polos scheduler --http` and of `polos dev`, and a worker's `worker.metrics_addr` — listens
//! on 127.0.0.1 unless told otherwise, refuses to listen anywhere else without `http.token`,
//! and then answers only requests that carry the token.
//!
//! Where a socket listens is read from outside the process, in `/proc/net/tcp{,6}`.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::path::Path;
use std::process::Stdio;

use polos::model::SchedulePayload;
use polos::worker::{Worker, Workflow, WorkflowContext, WorkflowError};
use serde_json::Value;
use tokio::io::{AsyncBufReadExt, BufReader};

use crate::common::{http, within, TestEnv};

/// The addresses a TCP socket listens on at `port`, from the kernel's tables.
fn listening_on(port: u16) -> Vec<IpAddr> {
    let mut found = Vec::new();
    for (table, v6) in [("/proc/net/tcp", false), ("/proc/net/tcp6", true)] {
        let Ok(text) = std::fs::read_to_string(table) else {
            continue;
        };
        for line in text.lines().skip(1) {
            let fields: Vec<&str> = line.split_whitespace().collect();
            // `sl local_address rem_address st …`; state 0A is LISTEN.
            let (Some(local), Some("0A")) = (fields.get(1), fields.get(3).copied()) else {
                continue;
            };
            let Some((ip, p)) = local.split_once(':') else {
                continue;
            };
            if u16::from_str_radix(p, 16).ok() != Some(port) {
                continue;
            }
            // The kernel prints each 32-bit word of the address in host (little-endian) order.
            let words: Vec<[u8; 4]> = (0..ip.len() / 8)
                .map(|i| {
                    u32::from_str_radix(&ip[i * 8..i * 8 + 8], 16)
                        .unwrap()
                        .to_le_bytes()
                })
                .collect();
            found.push(if v6 {
                let bytes: Vec<u8> = words.concat();
                IpAddr::V6(Ipv6Addr::from(<[u8; 16]>::try_from(bytes).unwrap()))
            } else {
                IpAddr::V4(Ipv4Addr::from(words[0]))
            });
        }
    }
    found
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Checks that `base` (`http://127.0.0.1:<port>/`) refuses pages and `/metrics` without
/// `token`, serves them with it, and that a browser logs in once with `?token=`.
async fn needs_the_token(base: &str, token: &str) {
    for path in ["metrics", "schedules"] {
        let refused = http::get(&format!("{base}{path}")).await;
        assert_eq!(
            refused.status, 401,
            "{path} without the token: {}",
            refused.body
        );
        let wrong = http::request(
            "GET",
            &format!("{base}{path}"),
            &[("Authorization", "Bearer not-it")],
            None,
        )
        .await;
        assert_eq!(wrong.status, 401, "{path} with a wrong token");
        let bearer = format!("Bearer {token}");
        let ok = http::request(
            "GET",
            &format!("{base}{path}"),
            &[("Authorization", &bearer)],
            None,
        )
        .await;
        assert_eq!(ok.status, 200, "{path} with the token: {}", ok.body);
    }
    let login = http::get(&format!("{base}schedules?token={token}")).await;
    assert_eq!(login.status, 303);
    assert!(login.headers["set-cookie"].starts_with("polos_token="));
}

/// `polos <args>` in `dir` with `env`, stdout read line by line.
struct Polos {
    child: tokio::process::Child,
    lines: tokio::io::Lines<BufReader<tokio::process::ChildStdout>>,
}

impl Polos {
    fn start(dir: &Path, args: &[&str], env: &[(&str, &str)]) -> Polos {
        let mut command = tokio::process::Command::new(env!("CARGO_BIN_EXE_polos"));
        command
            .args(args)
            .current_dir(dir)
            .env_remove("POLOS_CONFIG")
            .env_remove("POLOS_NATS__URL")
            .env_remove("POLOS_HTTP__TOKEN")
            .env_remove("POLOS_HTTP__ADDR")
            .env("POLOS_LOG__LEVEL", "warn")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        for (k, v) in env {
            command.env(k, v);
        }
        let mut child = command.spawn().unwrap();
        let lines = BufReader::new(child.stdout.take().unwrap()).lines();
        Polos { child, lines }
    }

    /// The first `http://…/` URL it prints.
    async fn dashboard_url(&mut self) -> String {
        within("the dashboard URL on stdout", async {
            loop {
                let line = self
                    .lines
                    .next_line()
                    .await
                    .unwrap()
                    .expect("polos exited without printing a dashboard URL");
                if let Some(url) = line.split_whitespace().find(|w| w.starts_with("http://")) {
                    return url.to_string();
                }
            }
        })
        .await
    }

    /// Ctrl-C, and waits for it to exit (`polos dev` stops its nats-server first).
    async fn interrupt(mut self) {
        let pid = self.child.id().unwrap();
        let status = std::process::Command::new("kill")
            .args(["-INT", &pid.to_string()])
            .status()
            .unwrap();
        assert!(status.success());
        within("polos exits after Ctrl-C", self.child.wait())
            .await
            .unwrap();
    }

    /// Waits for it to exit by itself: (exit code, stderr).
    async fn exit(mut self) -> (Option<i32>, String) {
        let status = within("polos exits", self.child.wait()).await.unwrap();
        let mut stderr = String::new();
        if let Some(mut pipe) = self.child.stderr.take() {
            use tokio::io::AsyncReadExt;
            pipe.read_to_string(&mut stderr).await.unwrap();
        }
        (status.code(), stderr)
    }
}

impl Drop for Polos {
    /// A test that fails half-way still stops it with Ctrl-C, so `polos dev` stops its own
    /// nats-server (in a process group of its own, which a SIGKILL would leave behind); a
    /// process that does not stop within seconds is killed.
    fn drop(&mut self) {
        let Some(pid) = self.child.id() else {
            return;
        };
        let _ = std::process::Command::new("kill")
            .args(["-INT", &pid.to_string()])
            .status();
        for _ in 0..100 {
            if !matches!(self.child.try_wait(), Ok(None)) {
                return;
            }
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
        let _ = self.child.start_kill();
    }
}

fn port_of(url: &str) -> u16 {
    url.trim_end_matches('/')
        .rsplit(':')
        .next()
        .unwrap()
        .parse()
        .unwrap()
}

const LOOPBACK: IpAddr = IpAddr::V4(Ipv4Addr::LOCALHOST);
const ANY: IpAddr = IpAddr::V4(Ipv4Addr::UNSPECIFIED);

#[tokio::test]
async fn the_scheduler_dashboard_listens_on_loopback_and_needs_a_token_elsewhere() {
    let env = TestEnv::start().await;
    let url = env.server.url().to_string();
    let dir = tempfile::tempdir().unwrap();

    // A bare port is a port on 127.0.0.1.
    let port = free_port();
    let mut scheduler = Polos::start(
        dir.path(),
        &["--nats-url", &url, "scheduler", "--http", &port.to_string()],
        &[],
    );
    let base = scheduler.dashboard_url().await;
    assert_eq!(port_of(&base), port);
    assert_eq!(listening_on(port), [LOOPBACK]);
    assert_eq!(http::get(&format!("{base}metrics")).await.status, 200);
    scheduler.interrupt().await;

    // Any other address without a token: refused before anything listens.
    let port = free_port();
    let addr = format!("0.0.0.0:{port}");
    let refused = Polos::start(
        dir.path(),
        &["--nats-url", &url, "scheduler", "--http", &addr],
        &[],
    );
    let (code, stderr) = refused.exit().await;
    assert_eq!(code, Some(2), "{stderr}");
    assert!(
        stderr.contains("0.0.0.0") && stderr.contains("http.token / POLOS_HTTP__TOKEN"),
        "{stderr}"
    );
    assert!(listening_on(port).is_empty());

    // With a token (from the environment, as the config key would give it): served, locked.
    let mut scheduler = Polos::start(
        dir.path(),
        &["--nats-url", &url, "scheduler"],
        &[
            ("POLOS_HTTP__ADDR", &addr),
            ("POLOS_HTTP__TOKEN", "s3cret-t0ken"),
        ],
    );
    let base = scheduler.dashboard_url().await;
    assert_eq!(listening_on(port), [ANY]);
    let local = format!("http://127.0.0.1:{}/", port_of(&base));
    needs_the_token(&local, "s3cret-t0ken").await;
    scheduler.interrupt().await;
}

async fn idle(_ctx: WorkflowContext, _p: SchedulePayload) -> Result<Value, WorkflowError> {
    Ok(Value::Null)
}

#[tokio::test]
async fn a_workers_metrics_listen_on_loopback_and_need_a_token_elsewhere() {
    let env = TestEnv::start().await;
    let run = |metrics_addr: String, token: Option<&str>| {
        let mut config = env.config();
        config.worker.metrics_addr = metrics_addr;
        config.http.token = token.map(str::to_string);
        let client = env.client.clone();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(async move {
            Worker::from_config(client, &config)
                .workflow(Workflow::new("idle", idle))
                .run(async {
                    let _ = stopped.await;
                })
                .await
        });
        (stop, task)
    };
    let wait_listening = |port: u16| async move {
        within("the metrics port listens", async {
            loop {
                let found = listening_on(port);
                if !found.is_empty() {
                    return found;
                }
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
            }
        })
        .await
    };

    // `worker.metrics_addr = "PORT"`: 127.0.0.1 only, no token needed there.
    let port = free_port();
    let (stop, task) = run(port.to_string(), None);
    assert_eq!(wait_listening(port).await, [LOOPBACK]);
    let metrics = http::get(&format!("http://127.0.0.1:{port}/metrics")).await;
    assert_eq!(metrics.status, 200);
    assert!(
        metrics.body.contains("polos_build_info"),
        "{}",
        metrics.body
    );
    let _ = stop.send(());
    within("worker stops", task).await.unwrap().unwrap();

    // Another address without a token: the worker does not start, and says why.
    let port = free_port();
    let (_stop, task) = run(format!("0.0.0.0:{port}"), None);
    let e = within("the worker refuses", task)
        .await
        .unwrap()
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("worker.metrics_addr") && e.contains("http.token / POLOS_HTTP__TOKEN"),
        "{e}"
    );
    assert!(listening_on(port).is_empty());

    // With `http.token`: listening everywhere, answering only with the token.
    let port = free_port();
    let (stop, task) = run(format!("0.0.0.0:{port}"), Some("w0rker-t0ken"));
    assert_eq!(wait_listening(port).await, [ANY]);
    let url = format!("http://127.0.0.1:{port}/metrics");
    assert_eq!(http::get(&url).await.status, 401);
    let ok = http::request(
        "GET",
        &url,
        &[("Authorization", "Bearer w0rker-t0ken")],
        None,
    )
    .await;
    assert_eq!(ok.status, 200);
    let _ = stop.send(());
    within("worker stops", task).await.unwrap().unwrap();
}

#[tokio::test]
async fn polos_dev_listens_on_loopback_and_needs_a_token_elsewhere() {
    let server = polos::nats::server::find_or_install().unwrap();
    let server = server.to_str().unwrap();

    // The default address: 127.0.0.1.
    let dir = tempfile::tempdir().unwrap();
    let mut dev = Polos::start(
        dir.path(),
        &["dev", "--port", "0", "--http", "0"],
        &[("POLOS_NATS_SERVER", server)],
    );
    let base = dev.dashboard_url().await;
    assert_eq!(listening_on(port_of(&base)), [LOOPBACK]);
    assert_eq!(http::get(&format!("{base}metrics")).await.status, 200);
    dev.interrupt().await;

    // Another address without a token: refused, nothing listens.
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let addr = format!("0.0.0.0:{port}");
    let refused = Polos::start(
        dir.path(),
        &["dev", "--port", "0", "--http", &addr],
        &[("POLOS_NATS_SERVER", server)],
    );
    let (code, stderr) = refused.exit().await;
    assert_ne!(code, Some(0), "{stderr}");
    assert!(
        stderr.contains("http.token / POLOS_HTTP__TOKEN"),
        "{stderr}"
    );
    assert!(listening_on(port).is_empty());

    // With a token: served everywhere, locked.
    let dir = tempfile::tempdir().unwrap();
    let mut dev = Polos::start(
        dir.path(),
        &["dev", "--port", "0", "--http", &addr],
        &[
            ("POLOS_NATS_SERVER", server),
            ("POLOS_HTTP__TOKEN", "d3v-t0ken"),
        ],
    );
    let base = dev.dashboard_url().await;
    assert_eq!(port_of(&base), port);
    assert_eq!(listening_on(port), [ANY]);
    needs_the_token(&format!("http://127.0.0.1:{port}/"), "d3v-t0ken").await;
    dev.interrupt().await;
}
