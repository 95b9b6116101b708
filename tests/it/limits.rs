//! `[limits]` (issue 11, part 5): request size, key length, cron length, note length and
//! schedules per workflow — each at its boundary with literals (N passes, N + 1 is refused with
//! an error naming the limit and its setting), through the API, through the real `polos` CLI
//! against a real `polos scheduler`, and for values written straight into KV (the scheduler
//! does not fire them and says why in their state record).

use std::process::Stdio;
use std::sync::Arc;

use futures::StreamExt;
use polos::api::UpsertRequest;
use polos::model::{schedule_kv_key, Limits};
use polos::{schedules, PolosClient};
use serde_json::{json, Value};

use super::schedules_api::ApiEnv;
use super::ticker::{at, config, put, wait_state, FireLog, Running};
use crate::common::{eventually, polos_cli, within, TestEnv};

/// Small limits, so each boundary is a short literal.
fn small() -> Limits {
    Limits {
        max_request_bytes: 2000,
        max_key_bytes: 10,
        max_cron_bytes: 20,
        max_note_bytes: 5,
        max_schedules_per_workflow: 3,
    }
}

/// The API served with `limits`, on a fresh server.
async fn api_with(limits: Limits) -> ApiEnv {
    ApiEnv::start_with(move |config| config.limits = limits).await
}

/// Upserts `body` (a JSON object) and returns `Ok(reply)` or `Err((code, message))`.
async fn upsert(api: &ApiEnv, body: impl Into<bytes::Bytes>) -> Result<Value, (String, String)> {
    let (status, reply) = api.raw("polos.schedules.upsert", body).await;
    match status {
        None => Ok(reply),
        Some(_) => Err((
            reply["error"]["code"]
                .as_str()
                .unwrap_or_default()
                .to_string(),
            reply["error"]["message"]
                .as_str()
                .unwrap_or_default()
                .to_string(),
        )),
    }
}

fn refused(result: Result<Value, (String, String)>, code: &str, needles: &[&str]) {
    let (got, message) = result.expect_err("refused");
    assert_eq!(got, code, "{message}");
    for needle in needles {
        assert!(message.contains(needle), "{needle:?} missing in: {message}");
    }
}

/// The live keys of `workflow` in `polos_schedules`, read from KV.
async fn stored_keys(api: &ApiEnv, workflow: &str) -> usize {
    let kv = api.kv("polos_schedules").await;
    let prefix = format!("{workflow}.");
    let keys: Vec<String> = match kv.keys().await {
        Ok(keys) => keys.filter_map(|k| async { k.ok() }).collect().await,
        Err(_) => Vec::new(),
    };
    keys.iter().filter(|k| k.starts_with(&prefix)).count()
}

#[tokio::test]
async fn the_default_limits_at_their_boundaries() {
    let api = ApiEnv::start().await;
    // 64 KiB: padded with JSON whitespace, so no other limit is near.
    let head = r#"{"workflow":"wf","cron":"0 8 * * *","key":"req""#;
    let at_limit = format!("{head}{}}}", " ".repeat(65_536 - head.len() - 1));
    assert_eq!(at_limit.len(), 65_536);
    upsert(&api, at_limit).await.expect("65,536 bytes pass");
    let over = format!("{head}{}}}", " ".repeat(65_537 - head.len() - 1));
    refused(
        upsert(&api, over).await,
        "invalid_request",
        &[
            "the request is 65537 bytes, over the limit of 65536",
            "limits.max_request_bytes (POLOS_LIMITS__MAX_REQUEST_BYTES)",
        ],
    );

    let note = |n: usize| {
        json!({"workflow": "wf", "cron": "0 8 * * *", "key": "note", "note": "n".repeat(n)})
            .to_string()
    };
    upsert(&api, note(4096)).await.expect("a 4 KiB note passes");
    refused(
        upsert(&api, note(4097)).await,
        "invalid_request",
        &[
            "field \"note\" is 4097 bytes, over the limit of 4096",
            "limits.max_note_bytes",
        ],
    );

    let key =
        |n: usize| json!({"workflow": "wf", "cron": "0 8 * * *", "key": "k".repeat(n)}).to_string();
    upsert(&api, key(256)).await.expect("a 256-byte key passes");
    refused(upsert(&api, key(257)).await, "invalid_key", &["257 bytes"]);

    // Whitespace between the fields counts: "0" + spaces + "8 * * *".
    let cron = |n: usize| {
        let cron = format!("0{}8 * * *", " ".repeat(n - 8));
        assert_eq!(cron.len(), n);
        json!({"workflow": "wf", "cron": cron, "key": "cron"}).to_string()
    };
    upsert(&api, cron(512))
        .await
        .expect("a 512-byte cron passes");
    refused(
        upsert(&api, cron(513)).await,
        "invalid_cron",
        &[
            "is 513 bytes, over the limit of 512",
            "limits.max_cron_bytes (POLOS_LIMITS__MAX_CRON_BYTES)",
        ],
    );
    // Workflow ids: 128 characters (the contract's, not configurable: they are subject tokens).
    let workflow = |n: usize| json!({"workflow": "w".repeat(n), "cron": "0 8 * * *"}).to_string();
    upsert(&api, workflow(128))
        .await
        .expect("a 128-character workflow id passes");
    refused(
        upsert(&api, workflow(129)).await,
        "invalid_workflow",
        &["129 characters (more than 128)"],
    );
    assert_eq!(
        stored_keys(&api, "wf").await,
        4,
        "only the four that passed"
    );
    api.stop().await;
}

#[tokio::test]
async fn configured_limits_at_their_boundaries_through_the_api() {
    let api = api_with(small()).await;
    let head = r#"{"workflow":"sizes","cron":"0 8 * * *","key":"r""#;
    let body = |n: usize| format!("{head}{}}}", " ".repeat(n - head.len() - 1));
    upsert(&api, body(2000)).await.expect("2,000 bytes pass");
    refused(
        upsert(&api, body(2001)).await,
        "invalid_request",
        &[
            "the request is 2001 bytes, over the limit of 2000",
            "POLOS_LIMITS__MAX_REQUEST_BYTES",
        ],
    );
    let with = |field: &str, value: &str| {
        let mut v = json!({"workflow": "sizes", "cron": "0 8 * * *", "key": "n"});
        v[field] = value.into();
        v.to_string()
    };
    upsert(&api, with("key", "0123456789"))
        .await
        .expect("a 10-byte key");
    refused(
        upsert(&api, with("key", "0123456789a")).await,
        "invalid_key",
        &[
            "is 11 bytes, over the limit of 10",
            "limits.max_key_bytes (POLOS_LIMITS__MAX_KEY_BYTES)",
        ],
    );
    upsert(&api, with("cron", "0,1,2,3,4,5  8 * * *"))
        .await
        .expect("a 20-byte cron");
    refused(
        upsert(&api, with("cron", "0,1,2,3,4,5   8 * * *")).await,
        "invalid_cron",
        &["is 21 bytes, over the limit of 20", "limits.max_cron_bytes"],
    );
    upsert(&api, with("note", "12345"))
        .await
        .expect("a 5-byte note");
    refused(
        upsert(&api, with("note", "123456")).await,
        "invalid_request",
        &[
            "field \"note\" is 6 bytes, over the limit of 5",
            "limits.max_note_bytes (POLOS_LIMITS__MAX_NOTE_BYTES)",
        ],
    );
    let (status, reply) = api
        .raw(
            "polos.schedules.pause",
            json!({"workflow": "sizes", "key": "n", "note": "123456"}).to_string(),
        )
        .await;
    assert_eq!(status.as_deref(), Some("400"), "{reply}");
    assert!(
        reply.to_string().contains("limits.max_note_bytes"),
        "{reply}"
    );

    // Schedules per workflow: 3 pass, the 4th is refused; updates are not creates.
    let create =
        |key: &str| json!({"workflow": "capped", "cron": "0 8 * * *", "key": key}).to_string();
    for key in ["a", "b", "c"] {
        upsert(&api, create(key)).await.expect("below the limit");
    }
    refused(
        upsert(&api, create("d")).await,
        "invalid_request",
        &[
            "workflow \"capped\" already has 3 schedules",
            "limits.max_schedules_per_workflow (POLOS_LIMITS__MAX_SCHEDULES_PER_WORKFLOW)",
        ],
    );
    let update = json!({"workflow": "capped", "cron": "30 9 * * *", "key": "a"}).to_string();
    let reply = upsert(&api, update).await.expect("an update at the limit");
    assert_eq!(reply["created"], false);
    upsert(
        &api,
        json!({"workflow": "other", "cron": "0 8 * * *"}).to_string(),
    )
    .await
    .expect("another workflow has its own count");
    assert_eq!(stored_keys(&api, "capped").await, 3);

    // A delete frees a place; a value written straight into KV takes it.
    let deleted = schedules::delete(&api.client, "capped", "b").await.unwrap();
    assert!(deleted);
    upsert(&api, create("d")).await.expect("a place was freed");
    schedules::delete(&api.client, "capped", "d").await.unwrap();
    put(&api.env, "capped", "direct", json!({"cron": "0 8 * * *"})).await;
    // The service sees the value some milliseconds after it is stored (`api/counts.rs`); a
    // create admitted before that is taken back, so each try is a create of a new key.
    let mut tries = 0;
    eventually("the value written into KV counts", || {
        tries += 1;
        let key = format!("e{tries}");
        let api = &api;
        async move {
            if upsert(api, create(&key)).await.is_err() {
                return true;
            }
            assert!(schedules::delete(&api.client, "capped", &key)
                .await
                .unwrap());
            false
        }
    })
    .await;
    assert_eq!(stored_keys(&api, "capped").await, 3);
    api.stop().await;
}

/// Many creates at once, one place left: exactly one gets it (one replica).
#[tokio::test]
async fn concurrent_creates_at_one_below_the_limit_admit_exactly_one() {
    let api = api_with(small()).await;
    for key in ["a", "b"] {
        schedules::create(&api.client, "crowd", "0 8 * * *", "UTC", key)
            .await
            .unwrap();
    }
    let clients: Vec<PolosClient> = futures::future::join_all(
        (0..4).map(|_| async { PolosClient::from_nats(api.env.connect().await) }),
    )
    .await;
    let results =
        futures::future::join_all((0..24).map(|i| {
            let client = clients[i % clients.len()].clone();
            async move {
                schedules::create(&client, "crowd", "0 8 * * *", "UTC", &format!("u{i}")).await
            }
        }))
        .await;
    let admitted = results.iter().filter(|r| r.is_ok()).count();
    assert_eq!(admitted, 1, "{results:?}");
    for refusal in results.iter().filter_map(|r| r.as_ref().err()) {
        assert!(
            refusal
                .to_string()
                .contains("limits.max_schedules_per_workflow"),
            "{refusal}"
        );
    }
    assert_eq!(stored_keys(&api, "crowd").await, 3, "counted in KV");
    api.stop().await;
}

/// Values written straight into KV beyond a limit do not fire; their state record, `get` and
/// `list` name the limit. Values at the limit fire.
#[tokio::test]
async fn values_in_kv_beyond_a_limit_are_invalid_and_say_which_limit() {
    let env = TestEnv::start().await;
    let mut log = FireLog::start(&env.js).await;
    let clock = polos::ticker::ManualClock::frozen(at("2026-05-01T07:59:30Z"));
    let mut config = config(&env);
    config.limits = small();
    let cron = "0 8 * * *";
    put(
        &env,
        "wf",
        "0123456789",
        json!({"cron": cron, "note": "12345"}),
    )
    .await;
    put(
        &env,
        "wf",
        "cron20",
        json!({"cron": "0  8 * * 1,2,3,4,5,6"}),
    )
    .await;
    put(
        &env,
        "wf",
        "longnote",
        json!({"cron": cron, "note": "123456"}),
    )
    .await;
    put(&env, "wf", "0123456789a", json!({"cron": cron})).await;
    put(
        &env,
        "wf",
        "cron21",
        json!({"cron": "0   8 * * 1,2,3,4,5,6"}),
    )
    .await;
    let mut ticker = Running::start(env.connect().await, &config, Arc::new(clock.clone()));
    ticker.wait_active().await;
    for (key, needle) in [
        (
            "longnote",
            "limits.max_note_bytes (POLOS_LIMITS__MAX_NOTE_BYTES)",
        ),
        (
            "0123456789a",
            "limits.max_key_bytes (POLOS_LIMITS__MAX_KEY_BYTES)",
        ),
        (
            "cron21",
            "limits.max_cron_bytes (POLOS_LIMITS__MAX_CRON_BYTES)",
        ),
    ] {
        wait_state(&env, "wf", key, &format!("the error of {key}"), |s| {
            s.error.as_deref().is_some_and(|e| e.contains(needle)) && s.next.is_none()
        })
        .await;
    }
    clock.set(at("2026-05-01T08:00:00Z"));
    let fired: Vec<String> = log
        .wait_for(2)
        .await
        .iter()
        .map(|r| r.fire.payload.key.clone())
        .collect();
    assert!(
        fired.contains(&"0123456789".to_string()) && fired.contains(&"cron20".to_string()),
        "{fired:?}"
    );

    // The API, with the same limits, shows the same values as invalid.
    let (stop, task) = super::schedules_api::serve_replica_with(&env, |c| c.limits = small()).await;
    let client = PolosClient::from_nats(env.connect().await);
    let view = schedules::get(&client, "wf", "longnote").await.unwrap();
    assert!(
        view.error
            .as_deref()
            .is_some_and(|e| e.contains("limits.max_note_bytes")),
        "{view:?}"
    );
    assert!(view.next.is_empty());
    let list = schedules::list(&client, Some("wf")).await.unwrap();
    let invalid: Vec<&str> = list.invalid.iter().map(|i| i.kv_key.as_str()).collect();
    for key in ["longnote", "0123456789a", "cron21"] {
        assert!(
            invalid.contains(&schedule_kv_key("wf", key).as_str()),
            "{invalid:?}"
        );
    }
    assert_eq!(list.schedules.len(), 2, "{list:?}");
    let _ = stop.send(());
    within("API stops", task).await.unwrap();
    ticker.stop().await;
}

/// A `polos scheduler` process with `limits` in its environment; killed on drop.
struct Scheduler {
    child: tokio::process::Child,
    _dir: tempfile::TempDir,
}

impl Scheduler {
    async fn start(url: &str, limits: &[(&str, &str)]) -> Scheduler {
        let dir = tempfile::tempdir().unwrap();
        let mut command = tokio::process::Command::new(env!("CARGO_BIN_EXE_polos"));
        command
            .args(["--nats-url", url, "scheduler"])
            .current_dir(dir.path())
            .env_remove("POLOS_CONFIG")
            .env("POLOS_LOG__LEVEL", "warn")
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .kill_on_drop(true);
        for (k, v) in limits {
            command.env(k, v);
        }
        let child = command.spawn().unwrap();
        let nats = async_nats::connect(url).await.unwrap();
        let client = PolosClient::from_nats(nats);
        eventually("the scheduler's API answers", || {
            let client = client.clone();
            async move { schedules::list(&client, None).await.is_ok() }
        })
        .await;
        Scheduler { child, _dir: dir }
    }

    async fn stop(mut self) {
        self.child.kill().await.unwrap();
    }
}

/// Runs the CLI; `Ok(stdout)` on success, `Err(stderr)` on exit code 2 (invalid input).
async fn cli(url: &str, args: &[&str]) -> Result<String, String> {
    let out = polos_cli(url, args).await;
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    let stderr = String::from_utf8_lossy(&out.stderr).to_string();
    match out.status.code() {
        Some(0) => Ok(stdout),
        Some(2) => Err(stderr),
        other => panic!("exit {other:?}: {stdout}{stderr}"),
    }
}

fn names(result: Result<String, String>, needles: &[&str]) {
    let stderr = result.expect_err("refused");
    for needle in needles {
        assert!(stderr.contains(needle), "{needle:?} missing in: {stderr}");
    }
}

#[tokio::test]
async fn configured_limits_at_their_boundaries_through_the_cli() {
    let env = TestEnv::start().await;
    let url = env.server.url().to_string();
    let scheduler = Scheduler::start(
        &url,
        &[
            ("POLOS_LIMITS__MAX_KEY_BYTES", "10"),
            ("POLOS_LIMITS__MAX_CRON_BYTES", "20"),
            ("POLOS_LIMITS__MAX_NOTE_BYTES", "5"),
            ("POLOS_LIMITS__MAX_SCHEDULES_PER_WORKFLOW", "3"),
        ],
    )
    .await;
    let create = |key: &'static str, cron: &'static str, note: &'static str| {
        let url = url.clone();
        async move {
            let mut args = vec!["schedules", "create", "cli", cron, "--key", key];
            if !note.is_empty() {
                args.extend(["--note", note]);
            }
            cli(&url, &args).await
        }
    };
    create("0123456789", "0 8 * * *", "")
        .await
        .expect("a 10-byte key");
    names(
        create("0123456789a", "0 8 * * *", "").await,
        &[
            "invalid_key",
            "is 11 bytes, over the limit of 10",
            "limits.max_key_bytes (POLOS_LIMITS__MAX_KEY_BYTES)",
        ],
    );
    create("c", "0,1,2,3,4,5  8 * * *", "")
        .await
        .expect("a 20-byte cron");
    names(
        create("c", "0,1,2,3,4,5   8 * * *", "").await,
        &[
            "invalid_cron",
            "is 21 bytes, over the limit of 20",
            "limits.max_cron_bytes (POLOS_LIMITS__MAX_CRON_BYTES)",
        ],
    );
    create("n", "0 8 * * *", "12345")
        .await
        .expect("a 5-byte note");
    names(
        create("n", "0 8 * * *", "123456").await,
        &[
            "field \"note\" is 6 bytes, over the limit of 5",
            "limits.max_note_bytes (POLOS_LIMITS__MAX_NOTE_BYTES)",
        ],
    );
    // Three schedules of `cli` exist: the fourth is refused, an update is not.
    names(
        create("fourth", "0 8 * * *", "").await,
        &[
            "workflow \"cli\" already has 3 schedules",
            "POLOS_LIMITS__MAX_SCHEDULES_PER_WORKFLOW",
        ],
    );
    let updated = create("n", "30 9 * * *", "").await.expect("an update");
    assert!(updated.contains("Updated"), "{updated}");
    scheduler.stop().await;

    // The request size, on a scheduler with only that limit lowered. A core subscription sees
    // the bytes the CLI sends.
    let scheduler = Scheduler::start(&url, &[("POLOS_LIMITS__MAX_REQUEST_BYTES", "2000")]).await;
    let mut spy = env
        .client
        .subscribe("polos.schedules.upsert")
        .await
        .unwrap();
    env.client.flush().await.unwrap();
    let base = serde_json::to_vec(&UpsertRequest {
        key: "big".into(),
        note: Some(String::new()),
        ..UpsertRequest::new("sized", "0 8 * * *")
    })
    .unwrap()
    .len();
    for (size, passes) in [(2000, true), (2001, false)] {
        let note = "x".repeat(size - base);
        let result = cli(
            &url,
            &[
                "schedules",
                "create",
                "sized",
                "0 8 * * *",
                "--key",
                "big",
                "--note",
                &note,
            ],
        )
        .await;
        let sent = within("the CLI's request", spy.next()).await.unwrap();
        assert_eq!(sent.payload.len(), size, "the CLI sent {size} bytes");
        if passes {
            result.expect("2,000 bytes pass");
        } else {
            names(
                result,
                &[
                    "the request is 2001 bytes, over the limit of 2000",
                    "limits.max_request_bytes (POLOS_LIMITS__MAX_REQUEST_BYTES)",
                ],
            );
        }
    }
    scheduler.stop().await;
}

/// The count follows a steady stream of creates with one consumer from start to end (every
/// restart of its follower would leave another consumer on the bucket's stream for a minute),
/// and a value written straight into KV in the middle of it counts.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_count_follows_a_write_load_without_starting_over() {
    let api = api_with(Limits {
        max_schedules_per_workflow: 4002,
        ..Limits::default()
    })
    .await;
    let mut load =
        futures::stream::iter(0..4000)
            .map(|i| {
                let client = api.client.clone();
                async move {
                    schedules::create(&client, "load", "0 8 * * *", "UTC", &format!("u{i}")).await
                }
            })
            .buffer_unordered(64);
    let mut done = 0;
    while let Some(created) = load.next().await {
        created.expect("below the limit");
        done += 1;
        if done == 2000 {
            put(&api.env, "load", "direct", json!({"cron": "0 8 * * *"})).await;
        }
    }
    drop(load);
    let consumers = crate::common::stream_info(&api.env.js, "KV_polos_schedules")
        .await
        .state
        .consumer_count;
    assert_eq!(consumers, 1, "the count's follower started over");
    assert_eq!(stored_keys(&api, "load").await, 4001);
    // 4,000 creates and the direct value: one place is left, whoever comes first takes it.
    eventually("the direct value counts", || async {
        let first = schedules::create(&api.client, "load", "0 8 * * *", "UTC", "x1").await;
        let second = schedules::create(&api.client, "load", "0 8 * * *", "UTC", "x2").await;
        let refused = second.is_err_and(|e| e.to_string().contains("max_schedules_per_workflow"));
        if !refused {
            for key in ["x1", "x2"] {
                schedules::delete(&api.client, "load", key).await.unwrap();
            }
        }
        first.is_ok() && refused
    })
    .await;
    api.stop().await;
}
