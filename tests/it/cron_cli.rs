//! `polos cron next` as a user runs it: the real binary, its stdout, stderr and exit code.

use std::process::{Command, Output};

fn polos(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_polos"))
        .args(args)
        .output()
        .unwrap()
}

fn next_json(expr: &str, tz: &str, after: &str, n: &str) -> Vec<String> {
    let out = polos(&[
        "cron",
        "next",
        expr,
        "--timezone",
        tz,
        "--after",
        after,
        "-n",
        n,
        "--json",
    ]);
    assert!(out.status.success(), "{out:?}");
    serde_json::from_slice(&out.stdout).unwrap()
}

#[test]
fn spring_gap_fixed_time_fires_at_end_of_gap() {
    assert_eq!(
        next_json(
            "30 2 * * *",
            "America/New_York",
            "2026-03-07T12:00:00Z",
            "2"
        ),
        ["2026-03-08T07:00:00Z", "2026-03-09T06:30:00Z"]
    );
}

#[test]
fn autumn_fold_hourly_stays_hourly() {
    assert_eq!(
        next_json("0 * * * *", "America/New_York", "2026-11-01T04:30:00Z", "4"),
        [
            "2026-11-01T05:00:00Z",
            "2026-11-01T06:00:00Z",
            "2026-11-01T07:00:00Z",
            "2026-11-01T08:00:00Z"
        ]
    );
}

#[test]
fn autumn_fold_fixed_time_fires_once() {
    assert_eq!(
        next_json(
            "30 1 * * *",
            "America/New_York",
            "2026-10-31T12:00:00Z",
            "2"
        ),
        ["2026-11-01T05:30:00Z", "2026-11-02T06:30:00Z"]
    );
}

#[test]
fn table_shows_utc_and_local_wall_time() {
    let out = polos(&[
        "cron",
        "next",
        "30 2 * * *",
        "--timezone",
        "America/New_York",
        "--after",
        "2026-03-07T12:00:00Z",
        "-n",
        "1",
    ]);
    assert!(out.status.success(), "{out:?}");
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(
        text.contains("2026-03-08T07:00:00Z  2026-03-08 03:00:00 Sun EDT (-04:00)"),
        "{text}"
    );
}

#[test]
fn invalid_input_exits_2_with_message_on_stderr() {
    let out = polos(&["cron", "next", "0 0 * * 8", "--json"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(out.stdout.is_empty());
    let err = String::from_utf8(out.stderr).unwrap();
    assert!(
        err.contains("day-of-week 8 is out of range 0-7 in \"0 0 * * 8\""),
        "{err}"
    );

    let out = polos(&["cron", "next", "0 0 * * *", "--timezone", "Europe/Lundon"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(out.stdout.is_empty());
    assert!(String::from_utf8(out.stderr)
        .unwrap()
        .contains("unknown time zone \"Europe/Lundon\""));

    let out = polos(&["cron", "next", "0 0 * * *", "--after", "tomorrow"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8(out.stderr).unwrap().contains("--after"));
}
