//! The JetStream definitions in `streams/*.json`, and `polos streams apply`.
//!
//! The files are in the JSON form of the JetStream API (async-nats' own `stream::Config`), so
//! operators can read them next to `nats stream info`. They are compiled into the binary so an
//! installed `polos` can apply them without the source tree. Applying is idempotent: a missing
//! stream is created, a differing one updated, an equal one left alone.

use async_nats::jetstream::{self, stream};
use serde_json::Value;
use thiserror::Error;

use crate::config::{StorageConfig, StorageKind};

/// `(file name, contents)` of every definition, in the order they are applied.
pub const DEFINITIONS: &[(&str, &str)] = &[
    (
        "kv_polos_schedules.json",
        include_str!("../../streams/kv_polos_schedules.json"),
    ),
    (
        "kv_polos_schedule_state.json",
        include_str!("../../streams/kv_polos_schedule_state.json"),
    ),
    (
        "kv_polos_workflows.json",
        include_str!("../../streams/kv_polos_workflows.json"),
    ),
    (
        "kv_polos_runs.json",
        include_str!("../../streams/kv_polos_runs.json"),
    ),
    (
        "kv_polos_steps.json",
        include_str!("../../streams/kv_polos_steps.json"),
    ),
    (
        "kv_polos_leases.json",
        include_str!("../../streams/kv_polos_leases.json"),
    ),
    (
        "kv_polos_overlap.json",
        include_str!("../../streams/kv_polos_overlap.json"),
    ),
    (
        "kv_polos_cancels.json",
        include_str!("../../streams/kv_polos_cancels.json"),
    ),
    (
        "polos_runs.json",
        include_str!("../../streams/polos_runs.json"),
    ),
];

/// What `apply` did to one stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// It did not exist and was created.
    Created,
    /// It existed with other settings and was updated.
    Updated,
    /// It already matched.
    Unchanged,
}

/// Applying the definitions failed.
#[derive(Debug, Error)]
pub enum StreamsError {
    /// A bundled definition does not parse (a build defect, caught by the unit test below).
    #[error("streams/{file} is not a valid stream config: {source}")]
    Definition {
        /// The file.
        file: &'static str,
        /// The parse error.
        source: serde_json::Error,
    },
    /// The server refused a create or update (for example 3 replicas on a single server).
    #[error("cannot apply stream {stream}: {source}")]
    Server {
        /// The stream name.
        stream: String,
        /// The server's error.
        source: async_nats::Error,
    },
}

/// Parses every bundled definition with the replicas and storage of `storage` applied.
pub fn definitions(storage: &StorageConfig) -> Result<Vec<(Value, stream::Config)>, StreamsError> {
    DEFINITIONS
        .iter()
        .map(|(file, text)| {
            let mut raw: Value = serde_json::from_str(text)
                .map_err(|source| StreamsError::Definition { file, source })?;
            raw["num_replicas"] = Value::from(storage.replicas.max(1));
            raw["storage"] = Value::from(match storage.kind {
                StorageKind::File => "file",
                StorageKind::Memory => "memory",
            });
            let config: stream::Config = serde_json::from_value(raw.clone())
                .map_err(|source| StreamsError::Definition { file, source })?;
            Ok((raw, config))
        })
        .collect()
}

/// Creates or updates every stream and bucket; returns what happened to each, by name.
pub async fn apply(
    js: &jetstream::Context,
    storage: &StorageConfig,
) -> Result<Vec<(String, Outcome)>, StreamsError> {
    let mut outcomes = Vec::new();
    for (raw, config) in definitions(storage)? {
        let name = config.name.clone();
        let server_err = |e: async_nats::Error| StreamsError::Server {
            stream: name.clone(),
            source: e,
        };
        let outcome = match js.get_stream(&name).await {
            Ok(mut existing) => {
                let info = existing.info().await.map_err(|e| server_err(e.into()))?;
                if matches_definition(&raw, &info.config) {
                    Outcome::Unchanged
                } else {
                    js.update_stream(config)
                        .await
                        .map_err(|e| server_err(e.into()))?;
                    Outcome::Updated
                }
            }
            Err(e) if is_not_found(&e) => {
                js.create_stream(config)
                    .await
                    .map_err(|e| server_err(e.into()))?;
                Outcome::Created
            }
            Err(e) => return Err(server_err(e.into())),
        };
        outcomes.push((name, outcome));
    }
    Ok(outcomes)
}

fn is_not_found(e: &jetstream::context::GetStreamError) -> bool {
    matches!(e.kind(), jetstream::context::GetStreamErrorKind::JetStream(js)
        if js.error_code() == jetstream::ErrorCode::STREAM_NOT_FOUND)
}

/// Whether every field the definition sets has that value on the server. Fields the file leaves
/// out keep whatever the server defaulted them to.
fn matches_definition(definition: &Value, current: &stream::Config) -> bool {
    let Ok(current) = serde_json::to_value(current) else {
        return false;
    };
    let Some(fields) = definition.as_object() else {
        return false;
    };
    fields.iter().all(|(field, wanted)| {
        let have = current.get(field).unwrap_or(&Value::Null);
        have == wanted || (is_zero_like(wanted) && is_zero_like(have))
    })
}

/// async-nats skips default-valued fields when serializing, so `0`/`false`/absent are one value.
fn is_zero_like(v: &Value) -> bool {
    matches!(v, Value::Null | Value::Bool(false)) || v.as_i64() == Some(0) || v.as_str() == Some("")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bundled_definitions_parse_and_take_storage_settings() {
        let storage = StorageConfig {
            replicas: 3,
            kind: StorageKind::Memory,
        };
        let defs = definitions(&storage).unwrap();
        assert_eq!(defs.len(), DEFINITIONS.len());
        for (_, c) in &defs {
            assert_eq!(c.num_replicas, 3);
            assert_eq!(c.storage, stream::StorageType::Memory);
        }
        let runs = defs.iter().find(|(_, c)| c.name == "POLOS_RUNS").unwrap();
        assert_eq!(runs.1.retention, stream::RetentionPolicy::WorkQueue);
        assert_eq!(runs.1.subjects, ["polos.runs.>"]);
        let schedules = defs
            .iter()
            .find(|(_, c)| c.name == "KV_polos_schedules")
            .unwrap();
        assert_eq!(schedules.1.max_messages_per_subject, 5);
    }
}
