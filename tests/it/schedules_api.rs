//! The schedules API end to end: the micro service `polos` served in-process against a real
//! nats-server, exercised through the Rust client and through raw NATS requests.

use std::time::Duration;

use async_nats::jetstream;
use bytes::Bytes;
use chrono::{Timelike, Utc};
use futures::StreamExt;
use polos::api::{ErrorCode, UpsertRequest};
use polos::client::ClientError;
use polos::model::{schedule_id, schedule_kv_key, ScheduleRecord, WorkflowRecord};
use polos::{schedules, PolosClient};
use serde_json::{json, Value};
use tokio::sync::oneshot;

use crate::common::{eventually, within, TestEnv};

/// A server with the streams applied and the API serving on its own connection.
pub struct ApiEnv {
    pub env: TestEnv,
    pub client: PolosClient,
    stop: Option<oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<()>>,
}

impl ApiEnv {
    pub async fn start() -> ApiEnv {
        ApiEnv::start_with(|_| {}).await
    }

    /// [`ApiEnv::start`] with the API's configuration changed by `configure`.
    pub async fn start_with(configure: impl FnOnce(&mut polos::config::Config)) -> ApiEnv {
        let env = TestEnv::start().await;
        let (stop, task) = serve_replica_with(&env, configure).await;
        let client = PolosClient::from_nats(env.connect().await);
        ApiEnv {
            env,
            client,
            stop: Some(stop),
            task: Some(task),
        }
    }

    pub async fn kv(&self, bucket: &str) -> jetstream::kv::Store {
        self.env.js.get_key_value(bucket).await.unwrap()
    }

    /// A raw request; returns (error status header, body JSON).
    pub async fn raw(&self, subject: &str, body: impl Into<Bytes>) -> (Option<String>, Value) {
        let reply = within(
            "raw request",
            self.env.client.request(subject.to_string(), body.into()),
        )
        .await
        .unwrap();
        let status = reply
            .headers
            .as_ref()
            .and_then(|h| h.get("Nats-Service-Error-Code"))
            .map(|v| v.as_str().to_string());
        let body = serde_json::from_slice(&reply.payload).unwrap_or(Value::Null);
        (status, body)
    }

    pub async fn stop(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(task) = self.task.take() {
            within("API shutdown", task).await.unwrap();
        }
    }
}

/// Starts one more API replica on its own connection; send on the sender to stop it.
pub async fn serve_replica(env: &TestEnv) -> (oneshot::Sender<()>, tokio::task::JoinHandle<()>) {
    serve_replica_with(env, |_| {}).await
}

/// [`serve_replica`] with the configuration changed by `configure`.
pub async fn serve_replica_with(
    env: &TestEnv,
    configure: impl FnOnce(&mut polos::config::Config),
) -> (oneshot::Sender<()>, tokio::task::JoinHandle<()>) {
    let mut config = env.config();
    configure(&mut config);
    serve_api(&config).await
}

/// The API served in-process on its own connection to `config`'s servers (one or a cluster);
/// send on the sender to stop it.
pub async fn serve_api(
    config: &polos::config::Config,
) -> (oneshot::Sender<()>, tokio::task::JoinHandle<()>) {
    let (stop, stopped) = oneshot::channel::<()>();
    let client = polos::nats::connect(&config.nats).await.unwrap();
    let server = polos::api::start(client, config).await.unwrap();
    let task = tokio::spawn(async move {
        server
            .run(async {
                let _ = stopped.await;
            })
            .await
            .unwrap();
    });
    (stop, task)
}

fn api_code(result: Result<impl std::fmt::Debug, ClientError>) -> ErrorCode {
    match result {
        Err(ClientError::Api { code, .. }) => code,
        other => panic!("expected an API error, got {other:?}"),
    }
}

async fn register(api: &ApiEnv, workflow: &str, schedulable: bool) {
    let record = WorkflowRecord {
        workflow: workflow.to_string(),
        schedulable,
        schedule: None,
        updated_at: Utc::now(),
    };
    api.kv("polos_workflows")
        .await
        .put(workflow, serde_json::to_vec(&record).unwrap().into())
        .await
        .unwrap();
}

/// The documentation's "Per-user schedules": `setup_user_schedule` for two users in two zones.
async fn seed_per_user_setup(api: &ApiEnv) -> Vec<String> {
    register(api, "daily-digest", true).await;
    let mut ids = Vec::new();
    for (user, zone) in [
        ("user_123", "America/New_York"),
        ("user_456", "Europe/London"),
    ] {
        let id = schedules::create(&api.client, "daily-digest", "0 8 * * *", zone, user)
            .await
            .unwrap();
        ids.push(id);
    }
    ids
}

#[tokio::test]
async fn seed_per_user_example_two_users_two_zones() {
    let api = ApiEnv::start().await;
    let ids = seed_per_user_setup(&api).await;
    assert_eq!(ids[0], schedule_id("daily-digest", "user_123"));
    assert_eq!(ids[1], schedule_id("daily-digest", "user_456"));
    assert_ne!(ids[0], ids[1]);
    for (user, zone) in [
        ("user_123", "America/New_York"),
        ("user_456", "Europe/London"),
    ] {
        let view = schedules::get(&api.client, "daily-digest", user)
            .await
            .unwrap();
        assert_eq!(view.record.key, user);
        assert_eq!(view.record.timezone, zone);
        assert_eq!(view.record.cron, "0 8 * * *");
        assert_eq!(view.next.len(), 5);
        assert!(view.next.windows(2).all(|w| w[0] < w[1]));
    }
    let list = schedules::list(&api.client, Some("daily-digest"))
        .await
        .unwrap();
    let keys: Vec<&str> = list
        .schedules
        .iter()
        .map(|s| s.record.key.as_str())
        .collect();
    assert_eq!(keys, ["user_123", "user_456"]);
    assert!(list.invalid.is_empty());
    api.stop().await;
}

#[tokio::test]
async fn seed_per_user_schedules_fire_at_eight_in_each_users_zone() {
    let api = ApiEnv::start().await;
    seed_per_user_setup(&api).await;
    for (user, zone) in [
        ("user_123", chrono_tz::America::New_York),
        ("user_456", chrono_tz::Europe::London),
    ] {
        let view = schedules::get(&api.client, "daily-digest", user)
            .await
            .unwrap();
        for instant in &view.next {
            let local = instant.with_timezone(&zone);
            assert_eq!(
                (local.hour(), local.minute()),
                (8, 0),
                "{instant} in {zone}"
            );
        }
    }
    let list = schedules::list(&api.client, Some("daily-digest"))
        .await
        .unwrap();
    // 08:00 in New York and in London are different instants.
    assert_ne!(list.schedules[0].next, list.schedules[1].next);
    api.stop().await;
}

#[tokio::test]
async fn upsert_twice_keeps_the_id_and_one_record_with_the_new_cron() {
    let api = ApiEnv::start().await;
    register(&api, "user-notification", true).await;
    let first = schedules::upsert(
        &api.client,
        &UpsertRequest {
            timezone: "America/Chicago".into(),
            key: "user_789".into(),
            note: Some("noon".into()),
            ..UpsertRequest::new("user-notification", "0 12 * * *")
        },
    )
    .await
    .unwrap();
    assert!(first.created);
    assert_eq!(first.warning, None);
    assert_eq!(first.next.len(), 5);
    let kv = api.kv("polos_schedules").await;
    let kv_key = schedule_kv_key("user-notification", "user_789");
    let before: ScheduleRecord =
        serde_json::from_slice(&kv.get(&kv_key).await.unwrap().unwrap()).unwrap();
    let created_at = before.created_at.unwrap();
    assert_eq!(
        before.updated_at,
        Some(created_at),
        "a new record: updated = created"
    );
    // Instants have second precision: wait (bounded) for the wall clock's next second, so the
    // update below gets a later `updated_at` than the create.
    eventually("the next second", || async move {
        Utc::now().timestamp() > created_at.timestamp()
    })
    .await;

    let second = schedules::create(
        &api.client,
        "user-notification",
        "0 15 * * *",
        "America/Chicago",
        "user_789",
    )
    .await
    .unwrap();
    assert_eq!(second, first.schedule_id);

    let list = schedules::list(&api.client, None).await.unwrap();
    assert_eq!(list.schedules.len(), 1);
    let stored: Value = serde_json::from_slice(&kv.get(&kv_key).await.unwrap().unwrap()).unwrap();
    assert_eq!(stored["cron"], "0 15 * * *");
    assert_eq!(stored["schedule_id"], first.schedule_id.as_str());
    assert_eq!(stored["source"], "api");
    assert_eq!(
        stored["note"], "noon",
        "an update without note keeps the note"
    );
    assert_eq!(
        stored["created_at"],
        json!(polos::model::time::format_instant(
            before.created_at.unwrap()
        ))
    );
    let updated_at =
        polos::model::time::parse_instant(stored["updated_at"].as_str().unwrap()).unwrap();
    assert!(
        updated_at > created_at && updated_at <= Utc::now(),
        "updated_at {updated_at} after created_at {created_at}, not in the future"
    );
    let third = schedules::upsert(
        &api.client,
        &UpsertRequest {
            timezone: "America/Chicago".into(),
            key: "user_789".into(),
            ..UpsertRequest::new("user-notification", "0 15 * * *")
        },
    )
    .await
    .unwrap();
    assert!(!third.created);
    api.stop().await;
}

#[tokio::test]
async fn fifty_concurrent_upserts_of_one_key_converge() {
    let api = ApiEnv::start().await;
    register(&api, "race", true).await;
    let mut tasks = Vec::new();
    for i in 0..50u32 {
        let client = PolosClient::from_nats(api.env.connect().await);
        tasks.push(tokio::spawn(async move {
            let request = UpsertRequest {
                key: "shared".into(),
                note: Some(format!("writer {i}")),
                ..UpsertRequest::new("race", &format!("{i} 8 * * *"))
            };
            schedules::upsert(&client, &request).await.unwrap()
        }));
    }
    let mut replies = Vec::new();
    for task in tasks {
        replies.push(within("upsert", task).await.unwrap());
    }
    assert!(replies
        .iter()
        .all(|r| r.schedule_id == schedule_id("race", "shared")));
    assert_eq!(replies.iter().filter(|r| r.created).count(), 1);

    let list = schedules::list(&api.client, Some("race")).await.unwrap();
    assert_eq!(list.schedules.len(), 1);
    let record = &list.schedules[0].record;
    let minute: u32 = record.cron.split(' ').next().unwrap().parse().unwrap();
    assert!(minute < 50);
    // The stored value is exactly one write: its cron and note come from the same writer.
    assert_eq!(
        record.note.as_deref(),
        Some(format!("writer {minute}").as_str())
    );
    let keys: Vec<String> = api
        .kv("polos_schedules")
        .await
        .keys()
        .await
        .unwrap()
        .map(|k| k.unwrap())
        .collect()
        .await;
    assert_eq!(keys, ["race.shared"]);
    api.stop().await;
}

#[tokio::test]
async fn every_error_code_is_reached_by_a_real_request() {
    let api = ApiEnv::start().await;
    register(&api, "internal-only", false).await;

    let cases: Vec<(&str, Value, &str, &str)> = vec![
        (
            "polos.schedules.upsert",
            json!({"workflow": "wf", "cron": "0 0 * * 8"}),
            "invalid_cron",
            "400",
        ),
        (
            "polos.schedules.upsert",
            json!({"workflow": "wf", "cron": "0 8 * * *", "timezone": "Mars/Olympus"}),
            "invalid_timezone",
            "400",
        ),
        (
            "polos.schedules.upsert",
            json!({"workflow": "daily.report", "cron": "0 8 * * *"}),
            "invalid_workflow",
            "400",
        ),
        (
            "polos.schedules.upsert",
            json!({"workflow": "wf", "cron": "0 8 * * *", "key": ""}),
            "invalid_key",
            "400",
        ),
        (
            "polos.schedules.upsert",
            json!({"workflow": "internal-only", "cron": "0 8 * * *"}),
            "not_schedulable",
            "400",
        ),
        (
            "polos.schedules.upsert",
            json!({"workflow": "wf"}),
            "invalid_request",
            "400",
        ),
        (
            "polos.schedules.get",
            json!({"workflow": "wf", "key": "nobody"}),
            "not_found",
            "404",
        ),
        (
            "polos.schedules.pause",
            json!({"workflow": "wf"}),
            "not_found",
            "404",
        ),
        (
            "polos.schedules.resume",
            json!({"workflow": "wf"}),
            "not_found",
            "404",
        ),
        (
            "polos.schedules.trigger",
            json!({"workflow": "wf"}),
            "not_found",
            "404",
        ),
    ];
    for (subject, body, code, status) in cases {
        let (got_status, reply) = api.raw(subject, body.to_string()).await;
        assert_eq!(
            got_status.as_deref(),
            Some(status),
            "{subject} {body}: {reply}"
        );
        assert_eq!(reply["error"]["code"], code, "{subject} {body}: {reply}");
        let message = reply["error"]["message"].as_str().unwrap();
        assert!(message.len() > 20, "{message}");
    }
    let (_, reply) = api
        .raw(
            "polos.schedules.upsert",
            json!({"workflow": "internal-only", "cron": "0 8 * * *"}).to_string(),
        )
        .await;
    assert!(reply["error"]["message"]
        .as_str()
        .unwrap()
        .contains("schedule = true"));

    // Nothing was stored by any refused request.
    assert!(schedules::list(&api.client, None)
        .await
        .unwrap()
        .schedules
        .is_empty());

    // internal: KV/JetStream trouble. A trigger whose stream is gone cannot publish its fire.
    schedules::create(&api.client, "wf", "0 8 * * *", "UTC", "global")
        .await
        .unwrap();
    api.env.js.delete_stream("POLOS_RUNS").await.unwrap();
    let (status, reply) = api
        .raw(
            "polos.schedules.trigger",
            json!({"workflow": "wf"}).to_string(),
        )
        .await;
    assert_eq!(status.as_deref(), Some("500"), "{reply}");
    assert_eq!(reply["error"]["code"], "internal");
    assert_eq!(
        api_code(schedules::trigger(&api.client, "wf", "global").await),
        ErrorCode::Internal
    );
    // The client maps every code to its enum.
    assert_eq!(
        api_code(schedules::get(&api.client, "wf", "nobody").await),
        ErrorCode::NotFound
    );
    assert_eq!(
        api_code(schedules::create(&api.client, "wf", "61 * * * *", "UTC", "global").await),
        ErrorCode::InvalidCron
    );
    api.stop().await;
}

#[tokio::test]
async fn hostile_inputs_are_refused_and_odd_keys_round_trip() {
    let api = ApiEnv::start().await;
    let upsert = "polos.schedules.upsert";
    let refused: Vec<(String, &str, &str)> = vec![
        (
            "{\"workflow\":\"wf\",".to_string(),
            "invalid_request",
            "not valid JSON",
        ),
        (
            "not json at all".to_string(),
            "invalid_request",
            "not valid JSON",
        ),
        ("[]".to_string(), "invalid_request", "JSON object"),
        (
            json!({"workflow": "wf", "cron": 8}).to_string(),
            "invalid_request",
            "\"cron\" must be a string",
        ),
        (
            json!({"workflow": 1, "cron": "* * * * *"}).to_string(),
            "invalid_request",
            "\"workflow\" must be a string",
        ),
        (
            json!({"workflow": "wf", "cron": "* * * * *", "paused": "yes"}).to_string(),
            "invalid_request",
            "\"paused\" must be a boolean",
        ),
        (
            json!({"workflow": "wf", "cron": "* * * * *", "key": 5}).to_string(),
            "invalid_request",
            "\"key\" must be a string",
        ),
        (
            json!({"workflow": "wf", "cron": "* * * * *", "crn": "x"}).to_string(),
            "invalid_request",
            "unknown field \"crn\"",
        ),
        (
            json!({"workflow": "wf", "cron": "* * * * *", "note": "n".repeat(1024 * 1024 - 100)})
                .to_string(),
            "invalid_request",
            "too large",
        ),
        (
            json!({"workflow": "wf", "cron": "* * * * *", "note": "n".repeat(5000)}).to_string(),
            "invalid_request",
            "\"note\"",
        ),
        (
            json!({"workflow": "wf", "cron": "* * * * *", "key": ""}).to_string(),
            "invalid_key",
            "empty",
        ),
        (
            json!({"workflow": "wf", "cron": "* * * * *", "key": "k".repeat(300)}).to_string(),
            "invalid_key",
            "300 bytes",
        ),
        (
            json!({"workflow": "", "cron": "* * * * *"}).to_string(),
            "invalid_workflow",
            "empty",
        ),
        (
            json!({"workflow": "a b", "cron": "* * * * *"}).to_string(),
            "invalid_workflow",
            "' '",
        ),
    ];
    for (body, code, needle) in &refused {
        assert!(body.len() < 1024 * 1024, "stays under the NATS max payload");
        let (status, reply) = api.raw(upsert, body.clone()).await;
        let shown = &body[..body.len().min(80)];
        assert_eq!(status.as_deref(), Some("400"), "{shown}: {reply}");
        assert_eq!(reply["error"]["code"], *code, "{shown}: {reply}");
        let message = reply["error"]["message"].as_str().unwrap();
        assert!(message.contains(needle), "{shown}: {message}");
    }
    assert!(schedules::list(&api.client, None)
        .await
        .unwrap()
        .schedules
        .is_empty());
    let kv = api.kv("polos_schedules").await;
    assert_eq!(kv.keys().await.unwrap().count().await, 0, "nothing stored");

    // Keys that are not KV-safe are stored encoded and come back verbatim.
    let odd = [
        "user@example.com",
        "with spaces",
        "a.b.c",
        "..",
        "trailing.",
        "ünïcødé ✓",
        "日本語",
        "tab\there\nnewline",
        "nul\0byte",
        "=looks-encoded",
        "*",
        ">",
        &"k".repeat(256),
    ];
    for key in odd {
        let id = schedules::create(&api.client, "wf", "0 8 * * *", "UTC", key)
            .await
            .unwrap();
        assert_eq!(id, schedule_id("wf", key));
        let view = schedules::get(&api.client, "wf", key).await.unwrap();
        assert_eq!(view.record.key, key);
        let raw = kv.get(schedule_kv_key("wf", key)).await.unwrap().unwrap();
        let stored: Value = serde_json::from_slice(&raw).unwrap();
        assert_eq!(stored["key"], key);
    }
    let list = schedules::list(&api.client, Some("wf")).await.unwrap();
    let mut listed: Vec<&str> = list
        .schedules
        .iter()
        .map(|s| s.record.key.as_str())
        .collect();
    let mut expected = odd.to_vec();
    listed.sort_unstable();
    expected.sort_unstable();
    assert_eq!(listed, expected);
    api.stop().await;
}

/// The README's limits, as literals, through the API: a request of 64 KiB is served and one
/// byte more is refused; a note of 4 KiB (counted in bytes) is stored and one byte more is
/// refused; a workflow id of 128 characters is accepted and 129 refused; a key of 256 bytes is
/// accepted and 257 refused. Nothing refused is stored.
#[tokio::test]
async fn limits_hold_at_their_documented_boundaries() {
    let api = ApiEnv::start().await;
    let upsert = "polos.schedules.upsert";
    let kv = api.kv("polos_schedules").await;
    let stored = |key: String| {
        let kv = kv.clone();
        async move {
            kv.get(key)
                .await
                .unwrap()
                .map(|raw| serde_json::from_slice::<Value>(&raw).unwrap())
        }
    };

    // 64 KiB = 65,536 bytes, made up with JSON whitespace.
    let padded = |key: &str, len: usize| {
        let head = format!(r#"{{"workflow":"wf","cron":"0 8 * * *","key":"{key}""#);
        let body = format!("{head}{}}}", " ".repeat(len - head.len() - 1));
        assert_eq!(body.len(), len);
        body
    };
    let (status, reply) = api.raw(upsert, padded("at-limit", 65_536)).await;
    assert_eq!(status, None, "{reply}");
    assert_eq!(reply["schedule_id"], schedule_id("wf", "at-limit"));
    assert!(stored("wf.at-limit".into()).await.is_some());
    let (status, reply) = api.raw(upsert, padded("over-limit", 65_537)).await;
    assert_eq!(status.as_deref(), Some("400"), "{reply}");
    assert_eq!(reply["error"]["code"], "invalid_request");
    let message = reply["error"]["message"].as_str().unwrap();
    assert!(
        message.contains("too large") && message.contains("65537") && message.contains("65536"),
        "{message}"
    );
    assert!(stored("wf.over-limit".into()).await.is_none());

    // 4 KiB = 4,096 bytes of note: 2,048 two-byte characters.
    let note = "é".repeat(2048);
    let body = json!({"workflow": "wf", "cron": "0 8 * * *", "key": "noted", "note": note});
    let (status, reply) = api.raw(upsert, body.to_string()).await;
    assert_eq!(status, None, "{reply}");
    assert_eq!(
        stored("wf.noted".into()).await.unwrap()["note"],
        note.as_str()
    );
    for over in [format!("{note}x"), "é".repeat(2049)] {
        // 4,097 and 4,098 bytes (the second is only 2,049 characters: bytes are counted).
        let body = json!({"workflow": "wf", "cron": "0 9 * * *", "key": "noted", "note": over});
        let (status, reply) = api.raw(upsert, body.to_string()).await;
        assert_eq!(status.as_deref(), Some("400"), "{reply}");
        assert_eq!(reply["error"]["code"], "invalid_request");
        let message = reply["error"]["message"].as_str().unwrap();
        assert!(
            message.contains("\"note\"") && message.contains("4096"),
            "{message}"
        );
        let (status, reply) = api
            .raw(
                "polos.schedules.pause",
                json!({"workflow": "wf", "key": "noted", "note": over}).to_string(),
            )
            .await;
        assert_eq!(status.as_deref(), Some("400"), "{reply}");
    }
    let kept = stored("wf.noted".into()).await.unwrap();
    assert_eq!(
        (kept["cron"].as_str(), kept["paused"].as_bool()),
        (Some("0 8 * * *"), Some(false))
    );

    // Workflow ids: 128 characters, then 129.
    let longest = "w".repeat(128);
    let id = schedules::create(&api.client, &longest, "0 8 * * *", "UTC", "global")
        .await
        .unwrap();
    assert_eq!(id, schedule_id(&longest, "global"));
    assert!(stored(format!("{longest}.global")).await.is_some());
    let too_long = "w".repeat(129);
    let (status, reply) = api
        .raw(
            upsert,
            json!({"workflow": too_long, "cron": "0 8 * * *"}).to_string(),
        )
        .await;
    assert_eq!(status.as_deref(), Some("400"), "{reply}");
    assert_eq!(reply["error"]["code"], "invalid_workflow");
    let message = reply["error"]["message"].as_str().unwrap();
    assert!(
        message.contains("129") && message.contains("128"),
        "{message}"
    );
    assert!(stored(format!("{too_long}.global")).await.is_none());

    // Keys: 256 bytes, then 257.
    let key = "k".repeat(256);
    schedules::create(&api.client, "wf", "0 8 * * *", "UTC", &key)
        .await
        .unwrap();
    let (status, reply) = api
        .raw(
            upsert,
            json!({"workflow": "wf", "cron": "0 8 * * *", "key": "k".repeat(257)}).to_string(),
        )
        .await;
    assert_eq!(status.as_deref(), Some("400"), "{reply}");
    assert_eq!(reply["error"]["code"], "invalid_key");
    assert!(reply["error"]["message"]
        .as_str()
        .unwrap()
        .contains("257 bytes"));

    let mut keys: Vec<String> = kv.keys().await.unwrap().map(|k| k.unwrap()).collect().await;
    keys.sort();
    let mut expected = vec![
        format!("wf.{key}"),
        "wf.at-limit".to_string(),
        "wf.noted".to_string(),
        format!("{longest}.global"),
    ];
    expected.sort();
    assert_eq!(keys, expected, "only the accepted requests stored anything");
    api.stop().await;
}

#[tokio::test]
async fn a_plain_publish_is_applied_in_order() {
    let api = ApiEnv::start().await;
    let publisher = api.env.connect().await;
    for hour in 1..=9 {
        let body = json!({"workflow": "fire-and-forget", "cron": format!("0 {hour} * * *")});
        publisher
            .publish("polos.schedules.upsert", body.to_string().into())
            .await
            .unwrap();
    }
    // An invalid one without a reply subject is refused quietly and changes nothing.
    publisher
        .publish("polos.schedules.upsert", "{oops".into())
        .await
        .unwrap();
    publisher.flush().await.unwrap();
    let client = api.client.clone();
    eventually("the last published cron is stored", || {
        let client = client.clone();
        async move {
            matches!(schedules::get(&client, "fire-and-forget", "global").await,
                Ok(view) if view.record.cron == "0 9 * * *")
        }
    })
    .await;
    api.stop().await;
}

#[tokio::test]
async fn values_written_straight_into_kv_are_schedules_and_bad_ones_are_reported() {
    let api = ApiEnv::start().await;
    let kv = api.kv("polos_schedules").await;
    kv.put(
        "user-reminder.user_123",
        r#"{"cron":"0 8 * * *","timezone":"America/Los_Angeles"}"#.into(),
    )
    .await
    .unwrap();
    kv.put("user-reminder.minimal", r#"{"cron":"0 8 * * *"}"#.into())
        .await
        .unwrap();
    kv.put("user-reminder.broken", "not json".into())
        .await
        .unwrap();
    kv.put("user-reminder.badcron", r#"{"cron":"0 0 * * 8"}"#.into())
        .await
        .unwrap();
    kv.put(
        "user-reminder.badzone",
        r#"{"cron":"0 8 * * *","timezone":"Nowhere/City"}"#.into(),
    )
    .await
    .unwrap();

    let list = schedules::list(&api.client, None).await.unwrap();
    let keys: Vec<&str> = list
        .schedules
        .iter()
        .map(|s| s.record.key.as_str())
        .collect();
    assert_eq!(keys, ["minimal", "user_123"]);
    let hand = &list.schedules[1];
    assert_eq!(
        hand.record.schedule_id,
        schedule_id("user-reminder", "user_123")
    );
    assert_eq!(hand.record.workflow, "user-reminder");
    assert!(!hand.record.paused);
    assert_eq!(list.schedules[0].record.timezone, "UTC");
    let bad: Vec<&str> = list.invalid.iter().map(|i| i.kv_key.as_str()).collect();
    assert_eq!(
        bad,
        [
            "user-reminder.badcron",
            "user-reminder.badzone",
            "user-reminder.broken"
        ]
    );
    assert!(
        list.invalid[0].error.contains("invalid_cron"),
        "{:?}",
        list.invalid
    );
    assert!(
        list.invalid[1].error.contains("invalid_timezone"),
        "{:?}",
        list.invalid
    );

    let view = schedules::get(&api.client, "user-reminder", "user_123")
        .await
        .unwrap();
    assert_eq!(view.next.len(), 5);
    let view = schedules::get(&api.client, "user-reminder", "badcron")
        .await
        .unwrap();
    assert!(view.next.is_empty());
    assert!(view.error.unwrap().contains("invalid_cron"));
    // An upsert repairs a broken value in place.
    let reply = schedules::upsert(
        &api.client,
        &UpsertRequest {
            key: "broken".into(),
            ..UpsertRequest::new("user-reminder", "0 9 * * *")
        },
    )
    .await
    .unwrap();
    assert!(!reply.created);
    assert_eq!(
        schedules::get(&api.client, "user-reminder", "broken")
            .await
            .unwrap()
            .record
            .cron,
        "0 9 * * *"
    );
    api.stop().await;
}

#[tokio::test]
async fn pause_resume_trigger_delete_and_workflows() {
    let api = ApiEnv::start().await;
    let warned = schedules::upsert(
        &api.client,
        &UpsertRequest::new("cleanup-task", "0 3 * * *"),
    )
    .await
    .unwrap();
    assert!(warned.warning.unwrap().contains("no worker has registered"));
    register(&api, "cleanup-task", true).await;

    let paused = schedules::pause(&api.client, "cleanup-task", "global", Some("maintenance"))
        .await
        .unwrap();
    assert!(paused.paused);
    assert_eq!(paused.note.as_deref(), Some("maintenance"));
    // An upsert without `paused` keeps it paused.
    schedules::create(&api.client, "cleanup-task", "0 4 * * *", "UTC", "global")
        .await
        .unwrap();
    assert!(
        schedules::get(&api.client, "cleanup-task", "global")
            .await
            .unwrap()
            .record
            .paused
    );
    let resumed = schedules::resume(&api.client, "cleanup-task", "global", None)
        .await
        .unwrap();
    assert!(!resumed.paused);
    assert_eq!(resumed.note.as_deref(), Some("maintenance"));

    let mut consumer_messages = api
        .env
        .js
        .get_stream("POLOS_RUNS")
        .await
        .unwrap()
        .create_consumer(jetstream::consumer::pull::Config {
            filter_subject: "polos.runs.cleanup-task".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .messages()
        .await
        .unwrap();
    let run_id = schedules::trigger(&api.client, "cleanup-task", "global")
        .await
        .unwrap();
    let sid = schedule_id("cleanup-task", "global");
    assert!(run_id.starts_with(&format!("{sid}-m")), "{run_id}");
    let message = within("manual fire", consumer_messages.next())
        .await
        .unwrap()
        .unwrap();
    let fire = polos::model::Fire::from_message(
        message.subject.as_str(),
        message.headers.as_ref(),
        &message.payload,
    )
    .unwrap();
    assert_eq!(fire.run_id, run_id);
    assert_eq!(fire.trigger, polos::model::Trigger::Manual);
    assert_eq!(fire.payload.schedule_id, sid);
    assert_eq!(fire.payload.key, "global");
    assert!(fire.payload.upcoming > fire.payload.timestamp);
    assert_eq!(fire.payload.upcoming.hour(), 4);

    let workflows = api.client.workflows().await.unwrap();
    assert_eq!(workflows.workflows.len(), 1);
    assert!(workflows.workflows[0].schedulable);

    assert!(schedules::delete(&api.client, "cleanup-task", "global")
        .await
        .unwrap());
    assert!(!schedules::delete(&api.client, "cleanup-task", "global")
        .await
        .unwrap());
    assert_eq!(
        api_code(schedules::get(&api.client, "cleanup-task", "global").await),
        ErrorCode::NotFound
    );
    // Re-creating a deleted schedule is a create again.
    let again = schedules::upsert(
        &api.client,
        &UpsertRequest::new("cleanup-task", "0 3 * * *"),
    )
    .await
    .unwrap();
    assert!(again.created);
    api.stop().await;
}

#[tokio::test]
async fn replicas_share_the_queue_group_and_the_service_is_discoverable() {
    let api = ApiEnv::start().await;
    let (stop, task) = serve_replica(&api.env).await;
    for i in 0..20 {
        schedules::create(&api.client, "wf", "0 8 * * *", "UTC", &format!("k{i}"))
            .await
            .unwrap();
    }
    // Each request was answered by exactly one replica: the request counts add up to 20.
    let inbox = api.env.client.new_inbox();
    let mut replies = api.env.client.subscribe(inbox.clone()).await.unwrap();
    api.env
        .client
        .publish_with_reply("$SRV.STATS.polos", inbox, Bytes::new())
        .await
        .unwrap();
    let mut total = 0;
    let mut services = 0;
    while services < 2 {
        let message = within("stats replies", replies.next()).await.unwrap();
        let stats: Value = serde_json::from_slice(&message.payload).unwrap();
        assert_eq!(stats["name"], "polos");
        for endpoint in stats["endpoints"].as_array().unwrap() {
            assert_eq!(endpoint["queue_group"], "q");
            if endpoint["subject"] == "polos.schedules.upsert" {
                total += endpoint["num_requests"].as_u64().unwrap();
            }
        }
        services += 1;
    }
    assert_eq!(total, 20);
    let info = api
        .env
        .client
        .request("$SRV.INFO.polos", Bytes::new())
        .await
        .unwrap();
    let info: Value = serde_json::from_slice(&info.payload).unwrap();
    let mut subjects: Vec<&str> = info["endpoints"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["subject"].as_str().unwrap())
        .collect();
    subjects.sort_unstable();
    assert_eq!(
        subjects,
        [
            "polos.run.cancel",
            "polos.schedules.backfill",
            "polos.schedules.delete",
            "polos.schedules.get",
            "polos.schedules.list",
            "polos.schedules.pause",
            "polos.schedules.resume",
            "polos.schedules.trigger",
            "polos.schedules.upsert",
            "polos.workflows.list",
        ]
    );
    let _ = stop.send(());
    within("replica shutdown", task).await.unwrap();
    // The remaining replica still answers.
    assert_eq!(
        schedules::list(&api.client, Some("wf"))
            .await
            .unwrap()
            .schedules
            .len(),
        20
    );
    api.stop().await;
}

#[tokio::test]
async fn a_stopped_api_is_reported_as_no_service() {
    let env = TestEnv::start().await;
    let (stop, task) = serve_replica(&env).await;
    let client = PolosClient::from_nats(env.connect().await).with_timeout(Duration::from_secs(2));
    schedules::create(&client, "wf", "0 8 * * *", "UTC", "global")
        .await
        .unwrap();
    let _ = stop.send(());
    within("API shutdown", task).await.unwrap();
    // Once the service unsubscribed, the server reports no responders.
    let result = schedules::get(&client, "wf", "global").await;
    assert!(
        matches!(result, Err(ClientError::NoService { .. })),
        "{result:?}"
    );
}

#[tokio::test]
async fn list_replies_are_pages_that_fit_in_a_message_and_the_client_follows_them() {
    let api = ApiEnv::start().await;
    let kv = api.kv("polos_schedules").await;
    // Long keys make big entries: 1,100 of them are far more than one 1 MiB message holds.
    let puts = (0..1100).map(|i| {
        let kv = kv.clone();
        async move {
            let key = format!("user-{i:04}-{}", "x".repeat(200));
            kv.put(
                schedule_kv_key("bulk", &key),
                r#"{"cron":"0 8 * * *","note":"bulk"}"#.into(),
            )
            .await
            .unwrap();
        }
    });
    futures::future::join_all(puts).await;
    kv.put("bulk.0000-broken", "{".into()).await.unwrap();

    let (status, first) = api
        .raw(
            "polos.schedules.list",
            json!({"workflow": "bulk"}).to_string(),
        )
        .await;
    assert_eq!(status, None, "{first}");
    assert_eq!(first["schedules"].as_array().unwrap().len(), 499);
    assert_eq!(first["invalid"][0]["kv_key"], "bulk.0000-broken");
    let after = first["next_after"].as_str().unwrap().to_string();
    let (_, second) = api
        .raw(
            "polos.schedules.list",
            json!({"workflow": "bulk", "after": after, "limit": 3}).to_string(),
        )
        .await;
    let keys: Vec<&str> = second["schedules"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["key"].as_str().unwrap())
        .collect();
    assert_eq!(keys.len(), 3);
    assert!(keys[0].starts_with("user-0499-"), "{keys:?}");

    let all = schedules::list(&api.client, Some("bulk")).await.unwrap();
    assert_eq!(all.schedules.len(), 1100);
    assert_eq!(all.invalid.len(), 1);
    assert_eq!(all.next_after, None);
    let mut keys: Vec<&str> = all
        .schedules
        .iter()
        .map(|s| s.record.key.as_str())
        .collect();
    keys.dedup();
    assert_eq!(keys.len(), 1100, "no entry twice");
    api.stop().await;
}

/// `limit` above 500 is served as 500 (the documented largest page), never as a larger reply;
/// `limit` 0 is refused.
#[tokio::test]
async fn a_list_limit_above_500_gives_pages_of_500() {
    let api = ApiEnv::start().await;
    let kv = api.kv("polos_schedules").await;
    let puts = (0..501).map(|i| {
        let kv = kv.clone();
        async move {
            kv.put(format!("many.k{i:03}"), r#"{"cron":"0 8 * * *"}"#.into())
                .await
                .unwrap();
        }
    });
    futures::future::join_all(puts).await;
    for limit in [501, 1000, u64::from(u32::MAX)] {
        let (status, page) = api
            .raw(
                "polos.schedules.list",
                json!({"workflow": "many", "limit": limit}).to_string(),
            )
            .await;
        assert_eq!(status, None, "{page}");
        assert_eq!(
            page["schedules"].as_array().unwrap().len(),
            500,
            "limit {limit}"
        );
        assert_eq!(page["schedules"][499]["key"], "k499");
        assert_eq!(page["next_after"], "many.k499", "limit {limit}");
        let (_, rest) = api
            .raw(
                "polos.schedules.list",
                json!({"workflow": "many", "limit": limit, "after": "many.k499"}).to_string(),
            )
            .await;
        assert_eq!(rest["schedules"].as_array().unwrap().len(), 1);
        assert_eq!(rest["schedules"][0]["key"], "k500");
        assert!(rest.get("next_after").is_none(), "{rest}");
    }
    let (status, reply) = api
        .raw(
            "polos.schedules.list",
            json!({"workflow": "many", "limit": 0}).to_string(),
        )
        .await;
    assert_eq!(status.as_deref(), Some("400"), "{reply}");
    assert!(reply["error"]["message"]
        .as_str()
        .unwrap()
        .contains("\"limit\""));
    api.stop().await;
}

/// `workflows.list` carries, beside the registrations, every stored value that is not one (with
/// the reason) instead of failing the whole listing.
#[tokio::test]
async fn workflows_list_reports_values_that_are_not_registrations() {
    let api = ApiEnv::start().await;
    register(&api, "good", true).await;
    let kv = api.kv("polos_workflows").await;
    kv.put("broken", "not json".into()).await.unwrap();
    kv.put(
        "wrong-type",
        r#"{"workflow":"wrong-type","schedulable":"yes"}"#.into(),
    )
    .await
    .unwrap();
    let (status, reply) = api.raw("polos.workflows.list", "{}").await;
    assert_eq!(status, None, "{reply}");
    let names: Vec<&str> = reply["workflows"]
        .as_array()
        .unwrap()
        .iter()
        .map(|w| w["workflow"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["good"], "{reply}");
    let invalid = reply["invalid"].as_array().unwrap();
    let keys: Vec<&str> = invalid
        .iter()
        .map(|i| i["kv_key"].as_str().unwrap())
        .collect();
    assert_eq!(keys, ["broken", "wrong-type"], "{reply}");
    // Each reason names the value and what is wrong with it.
    for (entry, why) in invalid.iter().zip(["expected ident", "expected a boolean"]) {
        let error = entry["error"].as_str().unwrap();
        let kv_key = entry["kv_key"].as_str().unwrap();
        assert!(
            error.contains(&format!("{kv_key:?}"))
                && error.contains("not a workflow registration")
                && error.contains(why),
            "{reply}"
        );
    }
    // The Rust client reads the same.
    let listed = api.client.workflows().await.unwrap();
    assert_eq!(listed.workflows.len(), 1);
    assert_eq!(listed.invalid.len(), 2);
    api.stop().await;
}

/// A manual trigger's `Nats-Msg-Id` is its run id (a contract extension), so two triggers in
/// the same second are two runs, and neither is de-duplicated against a scheduled fire.
#[tokio::test]
async fn a_manual_triggers_msg_id_is_its_run_id() {
    let api = ApiEnv::start().await;
    schedules::create(&api.client, "manual", "* * * * *", "UTC", "global")
        .await
        .unwrap();
    let first = schedules::trigger(&api.client, "manual", "global")
        .await
        .unwrap();
    let second = schedules::trigger(&api.client, "manual", "global")
        .await
        .unwrap();
    assert_ne!(first, second);
    let mut stream = api.env.js.get_stream("POLOS_RUNS").await.unwrap();
    assert_eq!(
        stream.info().await.unwrap().state.messages,
        2,
        "both stored"
    );
    for (seq, run_id) in [(1, &first), (2, &second)] {
        let message = stream.get_raw_message(seq).await.unwrap();
        let header = |name: &str| {
            message
                .headers
                .get(name)
                .map(|v| v.as_str().to_string())
                .unwrap_or_default()
        };
        assert_eq!(&header("Nats-Msg-Id"), run_id);
        assert_eq!(&header("Polos-Run-Id"), run_id);
        assert_eq!(header("Polos-Trigger"), "manual");
        assert_eq!(message.subject.as_str(), "polos.runs.manual");
    }
    api.stop().await;
}

#[tokio::test]
async fn a_workflow_registered_as_not_schedulable_is_refused_once_the_change_is_seen() {
    let api = ApiEnv::start().await;
    register(&api, "flip", true).await;
    let reply = schedules::upsert(&api.client, &UpsertRequest::new("flip", "0 8 * * *"))
        .await
        .unwrap();
    assert_eq!(reply.warning, None);
    register(&api, "flip", false).await;
    let client = api.client.clone();
    eventually(
        "upserts of a no-longer-schedulable workflow are refused",
        || {
            let client = client.clone();
            async move {
                schedules::create(&client, "flip", "0 9 * * *", "UTC", "global")
                    .await
                    .is_err_and(|e| e.code() == Some(ErrorCode::NotSchedulable))
            }
        },
    )
    .await;
    // The refused upserts changed nothing.
    let view = schedules::get(&api.client, "flip", "global").await.unwrap();
    assert_eq!(view.record.cron, "0 8 * * *");
    api.stop().await;
}

/// One rule for a removed key (ARCHITECTURE.md, "One reader, one tombstone rule"): a key whose
/// latest message is a server marker (`Nats-Marker-Reason`, as nats-server writes when a key
/// ages out) is absent for `get` and for `list` alike — not listed as an invalid value.
#[tokio::test]
async fn a_key_removed_by_a_server_marker_is_absent_everywhere() {
    let api = ApiEnv::start().await;
    register(&api, "marked", true).await;
    for key in ["gone", "kept"] {
        schedules::create(&api.client, "marked", "0 9 * * *", "UTC", key)
            .await
            .unwrap();
    }
    let mut headers = async_nats::HeaderMap::new();
    headers.insert("Nats-Marker-Reason", "MaxAge");
    api.env
        .js
        .publish_with_headers(
            format!("$KV.polos_schedules.{}", schedule_kv_key("marked", "gone")),
            headers,
            Bytes::new(),
        )
        .await
        .unwrap()
        .await
        .unwrap();
    assert_eq!(
        api_code(schedules::get(&api.client, "marked", "gone").await),
        ErrorCode::NotFound
    );
    let list = schedules::list(&api.client, Some("marked")).await.unwrap();
    let keys: Vec<&str> = list
        .schedules
        .iter()
        .map(|s| s.record.key.as_str())
        .collect();
    assert_eq!(keys, ["kept"]);
    assert!(list.invalid.is_empty(), "{:?}", list.invalid);
    api.stop().await;
}
