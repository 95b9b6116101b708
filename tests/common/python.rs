//! Python with nats-py (tests written against an independent client) and PyYAML (tests that
//! read YAML).

use std::path::{Path, PathBuf};
use std::process::Command;

/// The nats-py release the tests install (from PyPI).
pub const NATS_PY: &str = "nats-py==2.16.0";

/// PyYAML, for tests that read YAML files (docker-compose.yml) with an independent parser.
pub const PYYAML: &str = "PyYAML==6.0.3";

/// The Prometheus project's Python client, whose OpenMetrics parser checks `/metrics`.
pub const PROMETHEUS_CLIENT: &str = "prometheus-client==0.26.0";

/// The directory to put on `PYTHONPATH` so `import prometheus_client` works; installs it into
/// `<tools dir>/py-prometheus` the first time.
pub fn prometheus_client() -> PathBuf {
    pip_target(PROMETHEUS_CLIENT, "prometheus_client", "py-prometheus")
}

/// The directory to put on `PYTHONPATH` so `import nats` finds nats-py; installs it into
/// `<tools dir>/py` with `python3 -m pip install --target` the first time.
pub fn nats_py() -> PathBuf {
    pip_target(NATS_PY, "nats", "py")
}

/// The directory to put on `PYTHONPATH` so `import yaml` finds PyYAML; installs it into
/// `<tools dir>/py-yaml` the first time.
pub fn pyyaml() -> PathBuf {
    pip_target(PYYAML, "yaml", "py-yaml")
}

/// Installs `requirement` into `<tools dir>/<dir>` unless `<dir>/<module>` exists, and returns
/// that directory.
///
/// Safe from many tests and processes at once: each installer works in its own scratch directory
/// and renames it into place; whoever loses the rename uses the winner's copy.
fn pip_target(requirement: &str, module: &str, dir: &str) -> PathBuf {
    static LOCK: std::sync::Mutex<()> = std::sync::Mutex::new(());
    let _guard = LOCK.lock().unwrap_or_else(|p| p.into_inner());
    let tools = std::path::absolute(polos::nats::server::tools_dir()).expect("tools dir");
    let target = tools.join(dir);
    if target.join(module).is_dir() {
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
        .arg(requirement)
        .status()
        .expect("run python3 -m pip (is Python 3 installed?)");
    assert!(
        status.success(),
        "pip install {requirement} failed: {status}"
    );
    let staged = scratch.keep();
    if std::fs::rename(&staged, &target).is_err() {
        // Another process installed it first.
        let _ = std::fs::remove_dir_all(&staged);
    }
    assert!(
        target.join(module).is_dir(),
        "{requirement} is not in {}",
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
