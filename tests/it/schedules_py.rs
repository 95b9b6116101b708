//! The documentation's API sections from another language: nats-py (installed from PyPI by the test
//! set-up) talks plain NATS to the API served in-process.

use std::sync::Arc;

use super::schedules_api::ApiEnv;
use super::ticker::{config, Running};
use crate::common::python::python;
use crate::common::within;

#[tokio::test]
async fn nats_py_upserts_reads_kv_and_gets_a_clear_error() {
    let api = ApiEnv::start().await;
    // A scheduler too, so the script sees the fires of its back-fill request.
    let mut ticker = Running::start(
        api.env.connect().await,
        &config(&api.env),
        Arc::new(polos::ticker::SystemClock),
    );
    ticker.wait_active().await;
    let script = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/py/schedules_api.py");
    let mut command = python(&script);
    command.arg(api.env.server.url());
    let output = within("python script", command.output()).await.unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "script failed\nstdout:\n{stdout}\nstderr:\n{stderr}"
    );
    for line in [
        "upsert ok sch_",
        "kv get ok",
        "bad cron ok invalid_cron",
        "publish ok sch_",
        "get ok",
        "policies ok buffer_one",
        "describe ok",
        "cancel ok",
        "policies ok 10 4120",
        "backfill ok 3",
        "ALL OK",
    ] {
        assert!(stdout.contains(line), "missing {line:?} in\n{stdout}");
    }
    ticker.stop().await;
    api.stop().await;
}
