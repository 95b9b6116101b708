//! A real browser the tests can press buttons in: headless Chromium driven by `chromedriver`
//! over the W3C WebDriver protocol (plain HTTP + JSON, so no client library is needed).
//!
//! Each [`Browser`] runs its own chromedriver on a free loopback port with its own profile
//! directory, and kills it on drop.

use std::process::Stdio;
use std::time::Duration;

use serde_json::{json, Value};

use super::chromium::{chromedriver, chromium, FLAGS};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::within;

/// The W3C identifier of an element reference in WebDriver replies.
const ELEMENT: &str = "element-6066-11e4-a52e-4f735466cecf";

/// One WebDriver session in headless Chromium.
pub struct Browser {
    /// chromedriver; killed on drop.
    _driver: tokio::process::Child,
    /// `http://127.0.0.1:<port>/session/<id>`.
    session: String,
    /// The browser profile, removed on drop.
    _profile: tempfile::TempDir,
}

/// One HTTP exchange with chromedriver: (status, body). chromedriver keeps connections open
/// whatever the request asks, so the body is read by its `Content-Length`, not to the end.
async fn exchange(method: &str, url: &str, body: Option<&str>) -> (u16, String) {
    let rest = url.strip_prefix("http://").expect("http:// URL");
    let (host, path) = rest
        .split_once('/')
        .map_or((rest, "/".to_string()), |(h, p)| (h, format!("/{p}")));
    within(&format!("chromedriver: {method} {path}"), async {
        let mut stream = tokio::net::TcpStream::connect(host).await.unwrap();
        let body = body.unwrap_or_default();
        let head = format!(
            "{method} {path} HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
            body.len()
        );
        stream.write_all(head.as_bytes()).await.unwrap();
        stream.write_all(body.as_bytes()).await.unwrap();
        let mut raw = Vec::new();
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            let n = stream.read(&mut buf).await.unwrap();
            assert!(n > 0, "chromedriver closed the connection early");
            raw.extend_from_slice(&buf[..n]);
            let Some(end) = raw.windows(4).position(|w| w == b"\r\n\r\n") else {
                continue;
            };
            let head = String::from_utf8_lossy(&raw[..end]).to_string();
            let length: usize = head
                .lines()
                .filter_map(|l| l.split_once(':'))
                .find(|(k, _)| k.trim().eq_ignore_ascii_case("content-length"))
                .and_then(|(_, v)| v.trim().parse().ok())
                .unwrap_or(0);
            if raw.len() < end + 4 + length {
                continue;
            }
            let status = head
                .split_whitespace()
                .nth(1)
                .and_then(|s| s.parse().ok())
                .unwrap_or(0);
            let body = String::from_utf8_lossy(&raw[end + 4..end + 4 + length]).to_string();
            return (status, body);
        }
    })
    .await
}

/// Sends a WebDriver command; returns its `value`, panicking with the driver's error.
async fn command(method: &str, url: &str, body: Option<Value>) -> Value {
    let body = body.map(|b| b.to_string());
    let (status, text) = exchange(method, url, body.as_deref()).await;
    let reply: Value = serde_json::from_str(&text)
        .unwrap_or_else(|e| panic!("chromedriver sent no JSON for {method} {url} ({e}): {text}"));
    assert_eq!(status, 200, "chromedriver refused {method} {url}: {reply}");
    reply["value"].clone()
}

impl Browser {
    /// Starts chromedriver and opens a headless Chromium session.
    pub async fn start() -> Browser {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let driver = tokio::process::Command::new(chromedriver())
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .expect("start chromedriver");
        let base = format!("http://127.0.0.1:{port}");
        within("chromedriver is ready", async {
            loop {
                let up = tokio::net::TcpStream::connect(("127.0.0.1", port))
                    .await
                    .is_ok();
                if up
                    && exchange("GET", &format!("{base}/status"), None)
                        .await
                        .1
                        .contains("\"ready\":true")
                {
                    return;
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        })
        .await;
        let profile = tempfile::tempdir().unwrap();
        let mut args: Vec<String> = FLAGS.iter().map(|f| f.to_string()).collect();
        args.push(format!("--user-data-dir={}", profile.path().display()));
        args.push("--window-size=1200,900".into());
        let session = command(
            "POST",
            &format!("{base}/session"),
            Some(json!({"capabilities": {"alwaysMatch": {
                "browserName": "chrome",
                "pageLoadStrategy": "normal",
                "goog:chromeOptions": {"binary": chromium(), "args": args},
            }}})),
        )
        .await;
        let id = session["sessionId"]
            .as_str()
            .unwrap_or_else(|| panic!("no session id in {session}"));
        Browser {
            _driver: driver,
            session: format!("{base}/session/{id}"),
            _profile: profile,
        }
    }

    /// Loads `url` and waits until it is loaded.
    pub async fn goto(&self, url: &str) {
        command(
            "POST",
            &format!("{}/url", self.session),
            Some(json!({ "url": url })),
        )
        .await;
    }

    /// The URL the browser shows now.
    pub async fn url(&self) -> String {
        command("GET", &format!("{}/url", self.session), None)
            .await
            .as_str()
            .unwrap_or_default()
            .to_string()
    }

    /// The current page's DOM, serialized.
    pub async fn source(&self) -> String {
        command("GET", &format!("{}/source", self.session), None)
            .await
            .as_str()
            .unwrap_or_default()
            .to_string()
    }

    /// Clicks the element matching the CSS `selector`, as a user would with the mouse (the
    /// driver scrolls to it, checks that it is visible and not covered, then clicks). A click
    /// that submits a form returns once the resulting page has loaded.
    pub async fn click(&self, selector: &str) {
        let found = command(
            "POST",
            &format!("{}/element", self.session),
            Some(json!({"using": "css selector", "value": selector})),
        )
        .await;
        let element = found[ELEMENT]
            .as_str()
            .unwrap_or_else(|| panic!("no element {selector}: {found}"));
        command(
            "POST",
            &format!("{}/element/{element}/click", self.session),
            Some(json!({})),
        )
        .await;
    }

    /// Clicks `selector` and waits until the page it leads to contains `expect`; returns that
    /// page's DOM. Panics with the page the browser shows when it never does (a refused form,
    /// an error page), so a failure says what the user would have seen.
    pub async fn press(&self, selector: &str, expect: &str) -> String {
        self.click(selector).await;
        let mut shown = String::new();
        let found = tokio::time::timeout(super::WAIT, async {
            loop {
                shown = self.source().await;
                if shown.contains(expect) {
                    return;
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        })
        .await;
        if found.is_err() {
            panic!(
                "after pressing {selector}, the browser never showed {expect:?}; it shows {}:\n{shown}",
                self.url().await
            );
        }
        shown
    }

    /// Ends the session and the browser.
    pub async fn quit(self) {
        exchange("DELETE", &self.session, None).await;
        // chromedriver answers before Chromium has exited; give it the moment it needs.
        within("Chromium exits", async {
            while !self.browser_pids().is_empty() {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        })
        .await;
    }

    /// The Chromium processes of this session: those started with its profile directory.
    fn browser_pids(&self) -> Vec<i32> {
        let marker = format!("--user-data-dir={}", self._profile.path().display());
        let Ok(entries) = std::fs::read_dir("/proc") else {
            return Vec::new();
        };
        entries
            .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<i32>().ok())
            .filter(|pid| {
                std::fs::read(format!("/proc/{pid}/cmdline"))
                    .is_ok_and(|c| String::from_utf8_lossy(&c).contains(&marker))
            })
            .collect()
    }
}

impl Drop for Browser {
    /// A test that fails half-way leaves no browser behind: chromedriver dies with the test
    /// (`kill_on_drop`), and the Chromium processes of this profile are killed by their pid.
    fn drop(&mut self) {
        for pid in self.browser_pids() {
            let _ = std::process::Command::new("kill")
                .args(["-KILL", &pid.to_string()])
                .status();
        }
    }
}
