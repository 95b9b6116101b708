//! Python with nats-py, for tests written against an independent client.

use std::path::{Path, PathBuf};
use std::process::Command;

/// The nats-py release the tests install (from PyPI).
pub const NATS_PY: &str = "nats-py==2.16.0";

/// The directory to put on `PYTHONPATH` so `import nats` finds nats-py; installs it into
/// `<tools dir>/py` with `python3 -m pip install --target` the first time.
///
/// Safe from many tests and processes at once: each installer works in its own scratch directory
/// and renames it into place; whoever loses the rename uses the winner's copy.
pub fn nats_py() -> PathBuf {
    static LOCK: std::sync::Mutex<()> = std::sync::Mutex::new(());
    let _guard = LOCK.lock().unwrap_or_else(|p| p.into_inner());
    let tools = std::path::absolute(polos::nats::server::tools_dir()).expect("tools dir");
    let target = tools.join("py");
    if target.join("nats").is_dir() {
        return target;
    }
    std::fs::create_dir_all(&tools).expect("create tools dir");
    let scratch = tempfile::tempdir_in(&tools).expect("scratch dir");
    let status = Command::new("python3")
        .args([
            "-m",
            "pip",
            "install",
            "--quiet",
            "--disable-pip-version-check",
            "--target",
        ])
        .arg(scratch.path())
        .arg(NATS_PY)
        .status()
        .expect("run python3 -m pip (is Python 3 installed?)");
    assert!(status.success(), "pip install {NATS_PY} failed: {status}");
    let staged = scratch.keep();
    if std::fs::rename(&staged, &target).is_err() {
        // Another process installed it first.
        let _ = std::fs::remove_dir_all(&staged);
    }
    assert!(
        target.join("nats").is_dir(),
        "nats-py is not in {}",
        target.display()
    );
    target
}

/// A `python3 <script> <args>` command with nats-py importable.
pub fn python(script: &Path) -> tokio::process::Command {
    let mut command = tokio::process::Command::new("python3");
    command
        .arg(script)
        .env("PYTHONPATH", nats_py())
        .env("PYTHONDONTWRITEBYTECODE", "1")
        .kill_on_drop(true);
    command
}
