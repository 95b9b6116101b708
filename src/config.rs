//! Configuration: figment layers, lowest to highest priority —
//! defaults < `polos.toml` (path from `--config` or `POLOS_CONFIG`) < `POLOS_*` environment
//! variables (nested keys joined with `__`, e.g. `POLOS_NATS__URL`) < command-line flags.
//!
//! Every key is listed in the README with its environment variable; unknown keys are errors so a
//! typo never silently falls back to a default.

use std::path::{Path, PathBuf};
use std::time::Duration;

use figment::providers::{Env, Format, Serialized, Toml};
use figment::Figment;
use serde::{Deserialize, Serialize};
use thiserror::Error;

use crate::model::CatchupPolicy;

/// The whole configuration.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// How to reach NATS.
    pub nats: NatsConfig,
    /// How the JetStream buckets and streams are stored.
    pub storage: StorageConfig,
    /// Scheduler (ticker and leadership) settings.
    pub scheduler: SchedulerConfig,
    /// Worker settings.
    pub worker: WorkerConfig,
    /// Logging.
    pub log: LogConfig,
    /// The dashboard and `/metrics` of `polos scheduler` and `polos dev`.
    pub http: HttpConfig,
    /// What the schedules API accepts and the scheduler fires: request, key, cron and note
    /// sizes, schedules per workflow.
    pub limits: crate::model::Limits,
}

/// `[nats]`: server addresses and credentials.
///
/// Secrets (`password`, `token`, `nkey_seed`, and credentials inside `url`) are never shown:
/// `Debug` masks them, errors name the setting or file instead of the value, and URLs are
/// printed as `nats://user:***@host`. Each secret can come from a file instead (`*_file`), so it
/// need not sit in an environment variable or in `polos.toml`.
#[derive(Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct NatsConfig {
    /// Server URL(s), comma-separated (`nats://a:4222,nats://b:4222`). Empty means "none
    /// configured": `polos dev` then starts its own server, other commands use
    /// `nats://127.0.0.1:4222`. Credentials may be written into it, as the NATS tools accept:
    /// `nats://user:password@host:4222` or `nats://token@host:4222` (percent-encode `@`, `:`
    /// and `/` inside them).
    pub url: String,
    /// Additional server URLs (same as listing them in `url`).
    pub urls: Vec<String>,
    /// Connection name shown by `nats server report connections`.
    pub name: String,
    /// User for user/password auth.
    pub user: Option<String>,
    /// Password for user/password auth.
    #[serde(deserialize_with = "secret")]
    pub password: Option<String>,
    /// A file holding the password (one line; a trailing newline is ignored).
    pub password_file: Option<PathBuf>,
    /// Token auth.
    #[serde(deserialize_with = "secret")]
    pub token: Option<String>,
    /// A file holding the token.
    pub token_file: Option<PathBuf>,
    /// NKey seed (`SU…`) for nkey auth.
    #[serde(deserialize_with = "secret")]
    pub nkey_seed: Option<String>,
    /// A file holding the NKey seed (as written by `nk -gen user`).
    pub nkey_seed_file: Option<PathBuf>,
    /// Path of a `.creds` file (JWT + seed).
    pub creds_file: Option<PathBuf>,
    /// TLS settings.
    pub tls: TlsConfig,
    /// How long to wait for the first connection, in seconds.
    pub connect_timeout_secs: u64,
    /// Prefix of this connection's reply subjects. Empty: `_INBOX.<user>` when logging in with
    /// a user name, so a user may be limited to its own replies (`_INBOX.<user>.>`, as in
    /// `deploy/nats/permissions.conf`), else NATS's usual `_INBOX`.
    pub inbox_prefix: String,
}

/// Reads a secret of any scalar type as text, so a password like `12345` in `polos.toml` is
/// taken as written instead of failing with an error that would quote it.
fn secret<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Scalar {
        Text(String),
        Unsigned(u64),
        Signed(i64),
        Float(f64),
        Bool(bool),
    }
    let value: Option<Scalar> = Option::deserialize(d).map_err(|_| {
        serde::de::Error::custom("a secret must be a string (its value is not shown)")
    })?;
    Ok(value.map(|v| match v {
        Scalar::Text(s) => s,
        Scalar::Unsigned(n) => n.to_string(),
        Scalar::Signed(n) => n.to_string(),
        Scalar::Float(n) => n.to_string(),
        Scalar::Bool(b) => b.to_string(),
    }))
}

impl std::fmt::Debug for NatsConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let masked = |s: &Option<String>| s.as_ref().map(|_| "***");
        f.debug_struct("NatsConfig")
            .field("url", &crate::nats::redact(&self.url))
            .field(
                "urls",
                &self
                    .urls
                    .iter()
                    .map(|u| crate::nats::redact(u))
                    .collect::<Vec<_>>(),
            )
            .field("name", &self.name)
            .field("user", &self.user)
            .field("password", &masked(&self.password))
            .field("password_file", &self.password_file)
            .field("token", &masked(&self.token))
            .field("token_file", &self.token_file)
            .field("nkey_seed", &masked(&self.nkey_seed))
            .field("nkey_seed_file", &self.nkey_seed_file)
            .field("creds_file", &self.creds_file)
            .field("tls", &self.tls)
            .field("connect_timeout_secs", &self.connect_timeout_secs)
            .field("inbox_prefix", &self.inbox_prefix)
            .finish()
    }
}

impl Default for NatsConfig {
    fn default() -> Self {
        NatsConfig {
            url: String::new(),
            urls: Vec::new(),
            name: "polos".into(),
            user: None,
            password: None,
            password_file: None,
            token: None,
            token_file: None,
            nkey_seed: None,
            nkey_seed_file: None,
            creds_file: None,
            tls: TlsConfig::default(),
            connect_timeout_secs: 5,
            inbox_prefix: String::new(),
        }
    }
}

/// The URL used when nothing is configured.
pub const DEFAULT_NATS_URL: &str = "nats://127.0.0.1:4222";

impl NatsConfig {
    /// Every configured server URL; `[DEFAULT_NATS_URL]` when none is.
    pub fn server_urls(&self) -> Vec<String> {
        let mut urls: Vec<String> = self
            .url
            .split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(String::from)
            .chain(self.urls.iter().cloned())
            .collect();
        if urls.is_empty() {
            urls.push(DEFAULT_NATS_URL.to_string());
        }
        urls
    }

    /// Whether any URL was configured (`polos dev` starts its own server otherwise).
    pub fn is_configured(&self) -> bool {
        !self.url.trim().is_empty() || !self.urls.is_empty()
    }
}

/// `[nats.tls]`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TlsConfig {
    /// Require TLS even if the server does not ask for it.
    pub required: bool,
    /// CA certificate (PEM) to verify the server with.
    pub ca: Option<PathBuf>,
    /// Client certificate (PEM) for mutual TLS.
    pub cert: Option<PathBuf>,
    /// Client key (PEM) for mutual TLS.
    pub key: Option<PathBuf>,
}

/// Where JetStream keeps data.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StorageKind {
    /// On disk: survives server restarts (the default).
    #[default]
    File,
    /// In memory: fast, lost on restart. For tests and benchmarks.
    Memory,
}

/// `[storage]`: how `streams apply` creates buckets and streams.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct StorageConfig {
    /// Replicas of every bucket and stream: 1 on a single server, 3 (or 5) on a cluster.
    pub replicas: usize,
    /// `file` or `memory`.
    pub kind: StorageKind,
}

impl Default for StorageConfig {
    fn default() -> Self {
        StorageConfig {
            replicas: 1,
            kind: StorageKind::File,
        }
    }
}

/// `[scheduler]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SchedulerConfig {
    /// Seconds a leadership lease lasts without renewal; a standby takes over after it expires.
    pub lease_ttl_secs: u64,
    /// Default catch-up policy for schedules that do not set one: `latest`, `all` or `skip`.
    pub catchup_policy: CatchupPolicy,
    /// Default catch-up window in seconds: missed instants older than this are not fired.
    pub catchup_window_secs: u64,
    /// Most fires one schedule gets from catch-up policy `all` at one takeover.
    pub catchup_max_fires: u32,
    /// Default jitter for schedules that do not set `jitter_secs`: each fire goes out a
    /// deterministic offset in `[0, jitter_secs)` after its instant (0: on the instant).
    pub jitter_secs: u64,
    /// Back-filled fires published per second at most, and only while no on-time fire waits.
    pub backfill_rate: u32,
}

impl Default for SchedulerConfig {
    fn default() -> Self {
        SchedulerConfig {
            lease_ttl_secs: 5,
            catchup_policy: CatchupPolicy::Latest,
            catchup_window_secs: 24 * 3600,
            catchup_max_fires: 100,
            jitter_secs: 0,
            backfill_rate: 100,
        }
    }
}

/// Longest accepted catch-up window: 100 years (an "unlimited" window that still fits the
/// calendar arithmetic).
pub const MAX_CATCHUP_WINDOW_SECS: u64 = 100 * 366 * 24 * 3600;
/// Longest accepted lease TTL: an hour (a standby waits this long after the leader dies).
pub const MAX_LEASE_TTL_SECS: u64 = 3600;
/// Most fires policy `all` may replay per schedule at one takeover.
pub const MAX_CATCHUP_FIRES: u32 = 10_000;
/// Highest `scheduler.backfill_rate` (fires per second).
pub const MAX_BACKFILL_RATE: u32 = 100_000;

impl SchedulerConfig {
    /// The lease TTL as a duration.
    pub fn lease_ttl(&self) -> Duration {
        Duration::from_secs(self.lease_ttl_secs)
    }

    /// Checks that every `[scheduler]` value can work, naming the key and its limits.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let setting = |key: &'static str, value: u64, why: String| ConfigError::Setting {
            key,
            env: env_var(key),
            value: value.to_string(),
            why,
        };
        if !(1..=MAX_LEASE_TTL_SECS).contains(&self.lease_ttl_secs) {
            return Err(setting(
                "scheduler.lease_ttl_secs",
                self.lease_ttl_secs,
                format!("must be between 1 and {MAX_LEASE_TTL_SECS} seconds"),
            ));
        }
        if self.catchup_window_secs > MAX_CATCHUP_WINDOW_SECS {
            return Err(setting(
                "scheduler.catchup_window_secs",
                self.catchup_window_secs,
                format!("must be at most {MAX_CATCHUP_WINDOW_SECS} seconds (100 years)"),
            ));
        }
        if !(1..=MAX_CATCHUP_FIRES).contains(&self.catchup_max_fires) {
            return Err(setting(
                "scheduler.catchup_max_fires",
                u64::from(self.catchup_max_fires),
                format!("must be between 1 and {MAX_CATCHUP_FIRES} (use catchup_policy = \"skip\" to fire none)"),
            ));
        }
        if self.jitter_secs > crate::model::MAX_JITTER_SECS {
            return Err(setting(
                "scheduler.jitter_secs",
                self.jitter_secs,
                format!(
                    "must be at most {} seconds (a day)",
                    crate::model::MAX_JITTER_SECS
                ),
            ));
        }
        if !(1..=MAX_BACKFILL_RATE).contains(&self.backfill_rate) {
            return Err(setting(
                "scheduler.backfill_rate",
                u64::from(self.backfill_rate),
                format!("must be between 1 and {MAX_BACKFILL_RATE} fires per second"),
            ));
        }
        Ok(())
    }
}

/// The environment variable of a dotted config key (`scheduler.lease_ttl_secs` →
/// `POLOS_SCHEDULER__LEASE_TTL_SECS`), for error messages.
fn env_var(key: &'static str) -> &'static str {
    match key {
        "scheduler.lease_ttl_secs" => "POLOS_SCHEDULER__LEASE_TTL_SECS",
        "scheduler.catchup_window_secs" => "POLOS_SCHEDULER__CATCHUP_WINDOW_SECS",
        "scheduler.catchup_max_fires" => "POLOS_SCHEDULER__CATCHUP_MAX_FIRES",
        "scheduler.jitter_secs" => "POLOS_SCHEDULER__JITTER_SECS",
        "scheduler.backfill_rate" => "POLOS_SCHEDULER__BACKFILL_RATE",
        _ => "",
    }
}

/// `[worker]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct WorkerConfig {
    /// Most runs one worker process executes at once (per workflow).
    pub concurrency: usize,
    /// Attempts before a run is recorded `failed` and terminated.
    pub max_attempts: u32,
    /// Seconds the server waits for an ack before redelivering; long runs send in-progress acks.
    pub ack_wait_secs: u64,
    /// First retry delay in seconds; doubles per attempt.
    pub retry_backoff_secs: u64,
    /// Seconds a stopping worker waits for in-flight runs before releasing them to other
    /// workers (they resume from their last completed step).
    pub shutdown_timeout_secs: u64,
    /// Where this worker serves `GET /metrics` (`PORT` on 127.0.0.1, or `HOST:PORT`; a
    /// non-loopback address needs `http.token`). Empty: no endpoint.
    pub metrics_addr: String,
    /// Seconds one attempt of a run may take before it is cancelled and retried, for workflows
    /// that set no `Workflow::timeout`; a hung run cannot hold its slot forever.
    pub run_timeout_secs: u64,
}

impl Default for WorkerConfig {
    fn default() -> Self {
        WorkerConfig {
            concurrency: 16,
            max_attempts: 3,
            ack_wait_secs: 30,
            retry_backoff_secs: 1,
            shutdown_timeout_secs: 30,
            metrics_addr: String::new(),
            run_timeout_secs: 3600,
        }
    }
}

/// `[http]`: the dashboard and `/metrics`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HttpConfig {
    /// Where `polos scheduler` serves the dashboard and `/metrics` (`PORT` on 127.0.0.1, or
    /// `HOST:PORT`). Empty: not served (`--http ADDR` turns it on). `polos dev` always serves
    /// them, here or on 127.0.0.1:4280 (a free port when taken).
    pub addr: String,
    /// Required for an address other machines can reach: browsers open the dashboard once with
    /// `?token=…`, Prometheus sends `Authorization: Bearer …`.
    pub token: Option<String>,
}

/// Log output format.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LogFormat {
    /// Human-readable lines.
    #[default]
    Text,
    /// One JSON object per line.
    Json,
}

/// `[log]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LogConfig {
    /// A tracing filter: `info`, `debug`, `polos=debug,async_nats=warn`, … The default keeps
    /// the client library's per-connection lines out of CLI output.
    pub level: String,
    /// `text` or `json`.
    pub format: LogFormat,
}

impl Default for LogConfig {
    fn default() -> Self {
        LogConfig {
            level: "info,async_nats=warn".into(),
            format: LogFormat::Text,
        }
    }
}

/// A parse error's text without the quoted lines of the file (`3 | password = …`): the line
/// and column are kept, the line's content may be a secret and is not shown.
fn without_source_lines(text: &str) -> String {
    text.lines()
        .map(|line| match line.split_once(" | ") {
            Some((number, _)) if number.trim().parse::<u32>().is_ok() => {
                format!("{number} | (line not shown: it may hold a secret)")
            }
            _ => line.to_string(),
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// Secret settings read from the environment as they are (figment key, variable).
const SECRET_VARIABLES: [(&str, &str); 3] = [
    ("nats__password", "POLOS_NATS__PASSWORD"),
    ("nats__token", "POLOS_NATS__TOKEN"),
    ("nats__nkey_seed", "POLOS_NATS__NKEY_SEED"),
];

/// A configuration that cannot be loaded.
#[derive(Debug, Error)]
pub enum ConfigError {
    /// The file named by `--config`/`POLOS_CONFIG` does not exist.
    #[error("config file {0} does not exist; create it or drop --config / POLOS_CONFIG")]
    MissingFile(PathBuf),
    /// A value is malformed or a key is unknown.
    #[error("invalid configuration: {}", without_source_lines(&.0.to_string()))]
    Invalid(#[from] Box<figment::Error>),
    /// A value parses but cannot work (out of its range).
    #[error("invalid configuration: {key} = {value} ({env}) {why}")]
    Setting {
        /// The dotted key (`scheduler.lease_ttl_secs`).
        key: &'static str,
        /// Its environment variable.
        env: &'static str,
        /// The value given.
        value: String,
        /// The accepted range.
        why: String,
    },
    /// A secret variable holds bytes that are not UTF-8 (its value is not shown).
    #[error("environment variable {0} is not valid UTF-8; secrets must be text")]
    NotUnicode(&'static str),
}

impl Config {
    /// Loads defaults < `polos.toml` < `POLOS_*` env < `overrides` (the command-line flags).
    ///
    /// `path` is `--config`; when `None`, `POLOS_CONFIG` is used, then `./polos.toml` if present.
    /// An explicitly named file must exist.
    pub fn load(path: Option<&Path>, overrides: Figment) -> Result<Config, ConfigError> {
        let explicit = path
            .map(Path::to_path_buf)
            .or_else(|| std::env::var_os("POLOS_CONFIG").map(PathBuf::from));
        let toml = match &explicit {
            Some(p) if !p.is_file() => return Err(ConfigError::MissingFile(p.clone())),
            Some(p) => Toml::file_exact(p),
            None => Toml::file("polos.toml"),
        };
        let mut ignored = vec!["config", "nats_server", "tools_dir"];
        ignored.extend(SECRET_VARIABLES.iter().map(|(key, _)| *key));
        let mut config: Config = Figment::from(Serialized::defaults(Config::default()))
            .merge(toml)
            .merge(Env::prefixed("POLOS_").ignore(&ignored).split("__"))
            .merge(overrides)
            .extract()
            .map_err(|e| ConfigError::Invalid(Box::new(e)))?;
        // figment parses environment values (`0123` becomes the number 123, `a,b` a list):
        // secrets are taken byte for byte instead.
        for (key, variable) in SECRET_VARIABLES {
            if let Some(value) = std::env::var_os(variable) {
                let value = value
                    .into_string()
                    .map_err(|_| ConfigError::NotUnicode(variable))?;
                let slot = match key {
                    "nats__password" => &mut config.nats.password,
                    "nats__token" => &mut config.nats.token,
                    _ => &mut config.nats.nkey_seed,
                };
                *slot = Some(value);
            }
        }
        config.scheduler.validate()?;
        config.limits.validate().map_err(|e| ConfigError::Setting {
            key: e.limit.setting(),
            env: e.limit.env(),
            value: e.value,
            why: e.why,
        })?;
        Ok(config)
    }

    /// Loads from defaults and environment only (handy in examples and tests).
    pub fn from_env() -> Result<Config, ConfigError> {
        Config::load(None, Figment::new())
    }
}

#[cfg(test)]
#[allow(clippy::result_large_err)] // figment::Jail's closure signature, not ours
mod tests {
    use super::*;
    use figment::Jail;

    #[test]
    fn layers_in_order() {
        Jail::expect_with(|jail| {
            jail.create_file(
                "polos.toml",
                "[nats]\nurl = \"nats://file:4222\"\n[worker]\nmax_attempts = 7\nconcurrency = 2\n",
            )?;
            jail.set_env("POLOS_WORKER__MAX_ATTEMPTS", "9");
            jail.set_env("POLOS_STORAGE__REPLICAS", "3");
            let overrides = Figment::new().merge(Serialized::default("worker.concurrency", 5));
            let c = Config::load(None, overrides).map_err(|e| e.to_string())?;
            assert_eq!(c.nats.url, "nats://file:4222");
            assert_eq!(c.worker.max_attempts, 9, "env beats file");
            assert_eq!(c.worker.concurrency, 5, "flags beat env");
            assert_eq!(c.storage.replicas, 3);
            assert_eq!(c.scheduler.lease_ttl_secs, 5, "defaults fill the rest");
            Ok(())
        });
    }

    #[test]
    fn unknown_keys_and_missing_files_are_errors() {
        Jail::expect_with(|jail| {
            jail.create_file("polos.toml", "[worker]\nmax_atempts = 3\n")?;
            let e = Config::load(None, Figment::new()).unwrap_err().to_string();
            assert!(e.contains("max_atempts"), "{e}");
            let e = Config::load(Some(Path::new("nope.toml")), Figment::new()).unwrap_err();
            assert!(e.to_string().contains("nope.toml"));
            Ok(())
        });
    }

    #[test]
    fn every_key_and_its_variable_is_documented_in_the_readme() {
        fn leaves(prefix: &str, value: &serde_json::Value, out: &mut Vec<String>) {
            match value.as_object() {
                Some(map) => {
                    for (k, v) in map {
                        let path = if prefix.is_empty() {
                            k.clone()
                        } else {
                            format!("{prefix}.{k}")
                        };
                        leaves(&path, v, out);
                    }
                }
                None => out.push(prefix.to_string()),
            }
        }
        let readme = include_str!("../README.md");
        let mut keys = Vec::new();
        leaves(
            "",
            &serde_json::to_value(Config::default()).unwrap(),
            &mut keys,
        );
        assert!(keys.len() > 20, "{keys:?}");
        for key in keys {
            let var = format!("POLOS_{}", key.replace('.', "__").to_uppercase());
            assert!(
                readme.contains(&format!("`{key}`")),
                "README does not document `{key}`"
            );
            assert!(
                readme.contains(&format!("`{var}`")),
                "README does not name `{var}`"
            );
        }
    }

    #[test]
    fn out_of_range_scheduler_settings_are_refused_with_key_and_variable() {
        Jail::expect_with(|jail| {
            jail.set_env(
                "POLOS_SCHEDULER__CATCHUP_WINDOW_SECS",
                "18446744073709551615",
            );
            let e = Config::load(None, Figment::new()).unwrap_err().to_string();
            assert!(
                e.contains("scheduler.catchup_window_secs")
                    && e.contains("POLOS_SCHEDULER__CATCHUP_WINDOW_SECS")
                    && e.contains("100 years"),
                "{e}"
            );
            jail.set_env("POLOS_SCHEDULER__CATCHUP_WINDOW_SECS", "60");
            jail.set_env("POLOS_SCHEDULER__LEASE_TTL_SECS", "0");
            let e = Config::load(None, Figment::new()).unwrap_err().to_string();
            assert!(e.contains("scheduler.lease_ttl_secs"), "{e}");
            jail.set_env("POLOS_SCHEDULER__LEASE_TTL_SECS", "2");
            jail.set_env("POLOS_SCHEDULER__CATCHUP_MAX_FIRES", "0");
            let e = Config::load(None, Figment::new()).unwrap_err().to_string();
            assert!(e.contains("catchup_max_fires") && e.contains("skip"), "{e}");
            jail.set_env("POLOS_SCHEDULER__CATCHUP_MAX_FIRES", "5");
            jail.set_env("POLOS_SCHEDULER__JITTER_SECS", "86401");
            let e = Config::load(None, Figment::new()).unwrap_err().to_string();
            assert!(
                e.contains("scheduler.jitter_secs") && e.contains("POLOS_SCHEDULER__JITTER_SECS"),
                "{e}"
            );
            jail.set_env("POLOS_SCHEDULER__JITTER_SECS", "86400");
            jail.set_env("POLOS_SCHEDULER__BACKFILL_RATE", "0");
            let e = Config::load(None, Figment::new()).unwrap_err().to_string();
            assert!(e.contains("POLOS_SCHEDULER__BACKFILL_RATE"), "{e}");
            jail.set_env("POLOS_SCHEDULER__BACKFILL_RATE", "7");
            let c = Config::load(None, Figment::new()).unwrap();
            assert_eq!(
                (c.scheduler.jitter_secs, c.scheduler.backfill_rate),
                (86400, 7)
            );
            Ok(())
        });
    }

    #[test]
    fn limits_are_read_and_a_key_limit_above_the_contract_is_refused() {
        Jail::expect_with(|jail| {
            jail.create_file("polos.toml", "[limits]\nmax_note_bytes = 100\n")?;
            jail.set_env("POLOS_LIMITS__MAX_SCHEDULES_PER_WORKFLOW", "5");
            let c = Config::load(None, Figment::new()).map_err(|e| e.to_string())?;
            assert_eq!(c.limits.max_note_bytes, 100);
            assert_eq!(c.limits.max_schedules_per_workflow, 5);
            assert_eq!(
                c.limits.max_key_bytes, 256,
                "the contract's limit by default"
            );
            jail.set_env("POLOS_LIMITS__MAX_KEY_BYTES", "257");
            let e = Config::load(None, Figment::new()).unwrap_err().to_string();
            assert!(
                e.contains("limits.max_key_bytes = 257 (POLOS_LIMITS__MAX_KEY_BYTES)")
                    && e.contains("may only be lower"),
                "{e}"
            );
            Ok(())
        });
    }

    #[test]
    fn secrets_are_taken_as_written_and_never_shown() {
        Jail::expect_with(|jail| {
            jail.create_file(
                "polos.toml",
                "[nats]\nuser = \"u\"\npassword = 12345\nurl = \"nats://u:hunter2@h:4222\"\n",
            )?;
            let c = Config::load(None, Figment::new()).map_err(|e| e.to_string())?;
            assert_eq!(
                c.nats.password.as_deref(),
                Some("12345"),
                "a number is text"
            );
            // Environment values are not parsed: a leading zero or a comma stays.
            jail.set_env("POLOS_NATS__PASSWORD", "0123");
            jail.set_env("POLOS_NATS__TOKEN", "a,b");
            jail.set_env("POLOS_NATS__NKEY_SEED", "[SUxyz");
            jail.set_env("POLOS_NATS__PASSWORD", "[1, 2]");
            let c = Config::load(None, Figment::new()).map_err(|e| e.to_string())?;
            assert_eq!(c.nats.password.as_deref(), Some("[1, 2]"), "not a list");
            jail.set_env("POLOS_NATS__PASSWORD", "0123");
            let c = Config::load(None, Figment::new()).map_err(|e| e.to_string())?;
            assert_eq!(c.nats.password.as_deref(), Some("0123"));
            assert_eq!(c.nats.token.as_deref(), Some("a,b"));
            assert_eq!(c.nats.nkey_seed.as_deref(), Some("[SUxyz"));
            let shown = format!("{c:?}");
            for secret in ["0123", "a,b", "SUxyz", "hunter2"] {
                assert!(!shown.contains(secret), "{secret} in {shown}");
            }
            assert!(shown.contains("nats://u:***@h:4222"), "{shown}");
            Ok(())
        });
    }

    #[test]
    fn a_syntax_error_names_the_line_but_does_not_quote_it() {
        Jail::expect_with(|jail| {
            jail.create_file(
                "polos.toml",
                "[nats]\nuser = \"u\"\npassword = hunter2secret\n",
            )?;
            let e = Config::load(None, Figment::new()).unwrap_err().to_string();
            assert!(!e.contains("hunter2secret"), "{e}");
            assert!(e.contains("line 3"), "{e}");
            Ok(())
        });
    }

    #[test]
    fn a_secret_of_the_wrong_shape_is_refused_without_its_value() {
        Jail::expect_with(|jail| {
            jail.create_file("polos.toml", "[nats]\ntoken = [\"hunter2\"]\n")?;
            let e = Config::load(None, Figment::new()).unwrap_err().to_string();
            assert!(!e.contains("hunter2"), "{e}");
            assert!(e.contains("token"), "{e}");
            Ok(())
        });
    }

    #[test]
    fn urls_from_both_keys() {
        let n = NatsConfig {
            url: "nats://a:1, nats://b:2".into(),
            urls: vec!["nats://c:3".into()],
            ..NatsConfig::default()
        };
        assert_eq!(n.server_urls(), ["nats://a:1", "nats://b:2", "nats://c:3"]);
        assert_eq!(NatsConfig::default().server_urls(), [DEFAULT_NATS_URL]);
    }
}
