//! Headless Chromium for the dashboard tests: Debian's `chromium` package and its WebDriver
//! server `chromium-driver`, installed by the test set-up when missing (as nats-server is),
//! never silently skipped.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Mutex;

/// `$POLOS_CHROMIUM`, else `chromium` on the PATH; installs Debian's package with apt-get when
/// neither exists. Panics with how to install it when that is impossible.
pub fn chromium() -> PathBuf {
    static LOCK: Mutex<()> = Mutex::new(());
    let _guard = LOCK.lock().unwrap_or_else(|p| p.into_inner());
    if let Some(path) = std::env::var_os("POLOS_CHROMIUM") {
        return PathBuf::from(path);
    }
    if let Some(found) = which("chromium") {
        return found;
    }
    // As root (CI, the development machine) the package installs unattended.
    let installed = Command::new("sh")
        .args([
            "-c",
            "apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium",
        ])
        .status()
        .is_ok_and(|s| s.success());
    match which("chromium") {
        Some(found) if installed || found.exists() => found,
        _ => panic!(
            "the dashboard tests need Chromium and it could not be installed: run `apt-get install -y chromium` (Debian's package) as root, or set POLOS_CHROMIUM to a Chromium binary"
        ),
    }
}

/// `$POLOS_CHROMEDRIVER`, else `chromedriver` on the PATH; installs Debian's `chromium-driver`
/// (the WebDriver server of the same Chromium build) with apt-get when neither exists. Panics
/// with how to install it when that is impossible.
pub fn chromedriver() -> PathBuf {
    static LOCK: Mutex<()> = Mutex::new(());
    let _guard = LOCK.lock().unwrap_or_else(|p| p.into_inner());
    if let Some(path) = std::env::var_os("POLOS_CHROMEDRIVER") {
        return PathBuf::from(path);
    }
    if let Some(found) = which("chromedriver") {
        return found;
    }
    let installed = Command::new("sh")
        .args([
            "-c",
            "apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium-driver",
        ])
        .status()
        .is_ok_and(|s| s.success());
    match which("chromedriver") {
        Some(found) if installed || found.exists() => found,
        _ => panic!(
            "the dashboard tests need chromedriver and it could not be installed: run `apt-get install -y chromium-driver` (Debian's package, matching the `chromium` package) as root, or set POLOS_CHROMEDRIVER to a chromedriver binary of the same version as your Chromium"
        ),
    }
}

/// The flags every Chromium of the tests runs with, the profile directory aside.
pub const FLAGS: [&str; 9] = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--hide-scrollbars",
];

fn which(name: &str) -> Option<PathBuf> {
    std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|dir| dir.join(name))
            .find(|p| p.is_file())
    })
}

/// Chromium with the flags that make it work here: headless, no sandbox (root), no GPU, and
/// no background traffic (the machine has no network beyond loopback).
fn command(profile: &Path) -> tokio::process::Command {
    let mut c = tokio::process::Command::new(chromium());
    c.args(FLAGS)
        .arg(format!("--user-data-dir={}", profile.display()))
        .kill_on_drop(true);
    c
}

/// The DOM of `url` after Chromium loaded and rendered it.
pub async fn dump_dom(url: &str) -> String {
    let profile = tempfile::tempdir().unwrap();
    let out = crate::common::within(
        "chromium --dump-dom",
        command(profile.path()).arg("--dump-dom").arg(url).output(),
    )
    .await
    .unwrap();
    assert!(
        out.status.success(),
        "chromium failed on {url}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// A PNG of `url` at `width`×`height` into `file`.
pub async fn screenshot(url: &str, file: &Path, width: u32, height: u32) {
    let profile = tempfile::tempdir().unwrap();
    let out = crate::common::within(
        "chromium --screenshot",
        command(profile.path())
            .arg(format!("--window-size={width},{height}"))
            .arg(format!("--screenshot={}", file.display()))
            .arg(url)
            .output(),
    )
    .await
    .unwrap();
    assert!(
        out.status.success() && file.is_file(),
        "no screenshot of {url}"
    );
}
