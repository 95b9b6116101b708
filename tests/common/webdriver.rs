//! A real browser the tests can press buttons in: headless Chromium driven by `chromedriver`
//! over the W3C WebDriver protocol (plain HTTP + JSON, so no client library is needed).
//!
//! Each [`Browser`] runs its own chromedriver on a free loopback port with its own profile
//! directory, and kills it on drop.

use std::process::Stdio;
use std::time::Duration;

use serde_json::{json, Value};

use super::chromium::{chromedriver, chromium, FLAGS};
use super::{http, within};

/// The W3C identifier of an element reference in WebDriver replies.
const ELEMENT: &str = "element-6066-11e4-a52e-4a5d4a5d4a5d";

/// One WebDriver session in headless Chromium.
pub struct Browser {
    /// chromedriver; killed on drop (it ends its Chromium with it).
    driver: tokio::process::Child,
    /// `http://127.0.0.1:<port>/session/<id>`.
    session: String,
    /// The browser profile, removed on drop.
    _profile: tempfile::TempDir,
}

/// Sends a WebDriver command; returns its `value`, panicking with the driver's error.
async fn command(method: &str, url: &str, body: Option<Value>) -> Value {
    let response = http::request(
        method,
        url,
        &[("Content-Type", "application/json")],
        body.map(|b| b.to_string()),
    )
    .await;
    let reply: Value = serde_json::from_str(&response.body).unwrap_or_else(|e| {
        panic!(
            "chromedriver sent no JSON for {method} {url} ({e}): {}",
            response.body
        )
    });
    assert_eq!(
        response.status, 200,
        "chromedriver refused {method} {url}: {reply}"
    );
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
                    && http::get(&format!("{base}/status"))
                        .await
                        .body
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
            driver,
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

    /// Ends the session and the browser.
    pub async fn quit(mut self) {
        let _ = http::request("DELETE", &self.session, &[], None).await;
        let _ = self.driver.kill().await;
    }
}
