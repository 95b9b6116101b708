//! `polos schedules …` as a user runs it: the real binary against an in-process API.

use std::process::Output;

use serde_json::Value;

use super::schedules_api::ApiEnv;
use crate::common::polos_cli;

async fn polos(api: &ApiEnv, args: &[&str]) -> Output {
    polos_cli(api.env.server.url(), args).await
}

/// `polos schedules create user-reminder "0 8 * * *"` at 08:00 Pacific for key `user_123`, plus
/// `extra` arguments.
async fn create_user_reminder(api: &ApiEnv, extra: &[&str]) -> Output {
    let mut args = vec![
        "schedules",
        "create",
        "user-reminder",
        "0 8 * * *",
        "--timezone",
        "America/Los_Angeles",
        "--key",
        "user_123",
    ];
    args.extend_from_slice(extra);
    polos(api, &args).await
}

fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

#[tokio::test]
async fn create_list_get_next_pause_trigger_delete() {
    let api = ApiEnv::start().await;
    let out = create_user_reminder(&api, &["--note", "hi"]).await;
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let text = stdout(&out);
    assert!(text.starts_with("Created schedule sch_"), "{text}");
    assert!(
        stderr(&out).contains("warning: no worker has registered"),
        "{}",
        stderr(&out)
    );

    let out = polos(
        &api,
        &[
            "schedules",
            "create",
            "other",
            "30 6 * * 1-5",
            "--key",
            "user 9",
        ],
    )
    .await;
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));

    let out = polos(&api, &["schedules", "list"]).await;
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let table = stdout(&out);
    let lines: Vec<&str> = table.lines().collect();
    assert_eq!(lines.len(), 3, "{table}");
    for column in ["WORKFLOW", "KEY", "CRON", "ZONE", "PAUSED", "NEXT FIRE"] {
        assert!(lines[0].contains(column), "{table}");
    }
    assert!(
        lines[1].starts_with("other") && lines[1].contains("user 9"),
        "{table}"
    );
    assert!(
        lines[2].contains("user-reminder") && lines[2].contains("America/Los_Angeles"),
        "{table}"
    );
    // The next fire is shown in the schedule's zone (Pacific time), not in UTC.
    assert!(
        lines[2].ends_with(" PST") || lines[2].ends_with(" PDT"),
        "{table}"
    );

    let out = polos(
        &api,
        &["schedules", "list", "--workflow", "user-reminder", "--json"],
    )
    .await;
    let json: Value = serde_json::from_str(&stdout(&out)).unwrap();
    assert_eq!(json["schedules"].as_array().unwrap().len(), 1);
    assert_eq!(json["schedules"][0]["key"], "user_123");

    let out = polos(
        &api,
        &["schedules", "get", "user-reminder", "--key", "user_123"],
    )
    .await;
    assert_eq!(out.status.code(), Some(0));
    assert!(stdout(&out).contains("note         hi"), "{}", stdout(&out));

    let out = polos(
        &api,
        &[
            "schedules",
            "next",
            "user-reminder",
            "--key",
            "user_123",
            "-n",
            "3",
            "--json",
        ],
    )
    .await;
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let next: Vec<String> = serde_json::from_str(&stdout(&out)).unwrap();
    assert_eq!(next.len(), 3);
    assert!(next.iter().all(|t| t.ends_with('Z')));

    let out = polos(
        &api,
        &[
            "schedules",
            "pause",
            "user-reminder",
            "--key",
            "user_123",
            "--json",
        ],
    )
    .await;
    let record: Value = serde_json::from_str(&stdout(&out)).unwrap();
    assert_eq!(record["paused"], true);
    let kv = api.kv("polos_schedules").await;
    let stored = || async {
        let raw = kv.get("user-reminder.user_123").await.unwrap().unwrap();
        serde_json::from_slice::<Value>(&raw).unwrap()
    };
    assert_eq!(stored().await["paused"], true, "pause reached the record");
    let out = polos(
        &api,
        &["schedules", "resume", "user-reminder", "--key", "user_123"],
    )
    .await;
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(
        stdout(&out).trim(),
        "Resumed schedule user-reminder / user_123",
        "{}",
        stderr(&out)
    );
    let record = stored().await;
    assert_eq!(record["paused"], false, "{record}");
    assert_eq!(
        record["note"], "hi",
        "resume without --note keeps the note: {record}"
    );
    assert_eq!(record["cron"], "0 8 * * *", "{record}");

    let out = polos(
        &api,
        &[
            "schedules",
            "trigger",
            "user-reminder",
            "--key",
            "user_123",
            "--json",
        ],
    )
    .await;
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let reply: Value = serde_json::from_str(&stdout(&out)).unwrap();
    assert!(reply["run_id"].as_str().unwrap().starts_with("sch_"));

    let out = polos(
        &api,
        &["schedules", "delete", "user-reminder", "--key", "user_123"],
    )
    .await;
    assert_eq!(out.status.code(), Some(0));
    let out = polos(
        &api,
        &["schedules", "delete", "user-reminder", "--key", "user_123"],
    )
    .await;
    assert_eq!(
        out.status.code(),
        Some(3),
        "deleting a missing schedule is not-found"
    );
    api.stop().await;
}

#[tokio::test]
async fn exit_codes_distinguish_invalid_not_found_and_unreachable() {
    let api = ApiEnv::start().await;
    let out = polos(&api, &["schedules", "create", "wf", "0 0 * * 8"]).await;
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("invalid_cron"), "{}", stderr(&out));

    let out = polos(
        &api,
        &[
            "schedules",
            "create",
            "wf",
            "0 8 * * *",
            "--timezone",
            "Mars/Base",
            "--json",
        ],
    )
    .await;
    assert_eq!(out.status.code(), Some(2));
    let json: Value = serde_json::from_str(&stdout(&out)).unwrap();
    assert_eq!(json["error"]["code"], "invalid_timezone");

    let out = polos(&api, &["schedules", "get", "wf", "--key", "nobody"]).await;
    assert_eq!(out.status.code(), Some(3));
    assert!(stderr(&out).contains("not_found"), "{}", stderr(&out));

    let out = polos(&api, &["schedules", "pause", "wf"]).await;
    assert_eq!(out.status.code(), Some(3));
    api.stop().await;

    // Nothing listens on this port once the probe socket is closed.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let out = polos_cli(&format!("nats://127.0.0.1:{port}"), &["schedules", "list"]).await;
    assert_eq!(out.status.code(), Some(4), "{}", stderr(&out));
    assert!(stderr(&out).contains("cannot connect"), "{}", stderr(&out));
}

#[tokio::test]
async fn list_shows_eight_am_pacific_for_a_pacific_eight_am_schedule() {
    let api = ApiEnv::start().await;
    let out = create_user_reminder(&api, &[]).await;
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let out = polos(&api, &["schedules", "list"]).await;
    let table = stdout(&out);
    let row = table.lines().nth(1).unwrap();
    assert!(row.contains(" 08:00 P"), "{table}");
    api.stop().await;
}
