//! One function per endpoint: decode, validate everything, then read or write the store.

use async_nats::jetstream;
use chrono::Utc;

use super::counts::{Counts, Refusal};
use super::decode::decode;
use super::error::{ApiError, ErrorCode};
use super::registry::Registry;
use super::types::{
    DeleteReply, KeyRequest, ListReply, ListRequest, PauseRequest, ScheduleView, TriggerReply,
    UpsertReply, UpsertRequest, WorkflowsReply, WorkflowsRequest, MAX_LIST_PAGE,
};
use crate::cron::CronSchedule;
use crate::metrics::Metrics;
use crate::model::time::now_seconds;
use crate::model::{
    payload, schedule_kv_key, validate_key, validate_workflow, Fire, Limits, ScheduleRecord,
    ScheduleSource, Trigger,
};
use crate::store::{InvalidEntry, ScheduleStore, StoreError};

/// How many upcoming instants `upsert` and `get` reply with.
const NEXT_COUNT: usize = 5;

/// The endpoints' shared handles.
#[derive(Debug)]
pub(crate) struct Handlers {
    /// The buckets.
    pub store: ScheduleStore,
    /// For publishing manual fires to `POLOS_RUNS`.
    pub js: jetstream::Context,
    /// Workflows known to be schedulable, so most upserts skip a KV read.
    pub registry: Registry,
    /// Where manual fires are counted (request counts are kept by the service).
    pub metrics: Metrics,
    /// `[limits]`: request, key, cron and note sizes, schedules per workflow.
    pub limits: Limits,
    /// Schedules per workflow, when `limits.max_schedules_per_workflow` is set.
    pub counts: Option<Counts>,
}

/// Checks a key against the contract and the configured limit.
fn check_key(limits: &Limits, key: &str) -> Result<(), ApiError> {
    validate_key(key)?;
    limits.check_key(key)?;
    Ok(())
}

/// Why a stored schedule cannot fire: a configured limit it breaks, or its cron or zone.
fn fireable(limits: &Limits, record: &ScheduleRecord) -> Result<CronSchedule, String> {
    limits
        .check_record(record)
        .map_err(|e| e.to_string())
        .and_then(|()| {
            CronSchedule::parse(&record.cron, &record.timezone).map_err(|e| e.to_string())
        })
        .map_err(|e| format!("{e}; fix it with an upsert"))
}

fn not_found(workflow: &str, key: &str) -> ApiError {
    ApiError::not_found(format!(
        "no schedule for workflow {workflow:?} with key {key:?}; create it with polos.schedules.upsert, or list existing ones with `polos schedules list --workflow {workflow}`"
    ))
}

impl Handlers {
    /// `polos.schedules.upsert`.
    pub async fn upsert(&self, body: &[u8]) -> Result<UpsertReply, ApiError> {
        let request: UpsertRequest = decode(body, &self.limits)?;
        validate_workflow(&request.workflow)?;
        check_key(&self.limits, &request.key)?;
        self.limits.check_note(request.note.as_deref())?;
        self.limits.check_cron(&request.cron)?;
        let cron = CronSchedule::parse(&request.cron, &request.timezone)?;
        // A workflow known to be schedulable needs no KV read; anything else is confirmed.
        let warning = if self.registry.is_schedulable(&request.workflow) {
            None
        } else {
            match self.store.workflow(&request.workflow).await? {
                Some(registration) if !registration.schedulable => {
                    return Err(ApiError::new(
                        ErrorCode::NotSchedulable,
                        format!(
                            "workflow {:?} is registered as not schedulable; declare it with schedule = true in the worker's code to create schedules for it through the API",
                            request.workflow
                        ),
                    ))
                }
                Some(_) => None,
                None => Some(format!(
                    "no worker has registered workflow {:?} yet; the schedule is stored and its fires wait in stream POLOS_RUNS until a worker for it runs",
                    request.workflow
                )),
            }
        };
        let reservation = self.admit(&request.workflow, &request.key).await?;
        let now = now_seconds();
        let upserted = self
            .store
            .upsert(&request.workflow, &request.key, |current| {
                let mut record = ScheduleRecord::new(
                    &request.workflow,
                    &request.key,
                    &request.cron,
                    &request.timezone,
                );
                record.source = ScheduleSource::Api;
                record.paused = request
                    .paused
                    .or(current.map(|c| c.paused))
                    .unwrap_or(false);
                record.note = request
                    .note
                    .clone()
                    .or_else(|| current.and_then(|c| c.note.clone()));
                record.catchup = request.catchup.or(current.and_then(|c| c.catchup));
                record.catchup_window_secs = request
                    .catchup_window_secs
                    .or(current.and_then(|c| c.catchup_window_secs));
                record.created_at = current.and_then(|c| c.created_at).or(Some(now));
                record.updated_at = Some(now);
                record
            })
            .await?;
        if let Some(reservation) = reservation.filter(|_| upserted.created) {
            reservation.stored();
        }
        Ok(UpsertReply {
            schedule_id: upserted.record.schedule_id,
            created: upserted.created,
            next: cron.upcoming(Utc::now(), NEXT_COUNT),
            warning,
            warnings: crate::cron::schedule_notes(&cron, Utc::now()),
        })
    }

    /// `polos.schedules.get`.
    pub async fn get(&self, body: &[u8]) -> Result<ScheduleView, ApiError> {
        let request: KeyRequest = decode(body, &self.limits)?;
        validate_workflow(&request.workflow)?;
        validate_key(&request.key)?;
        let record = self.existing(&request.workflow, &request.key).await?;
        let state = self.store.state(&request.workflow, &request.key).await?;
        Ok(match fireable(&self.limits, &record) {
            Ok(cron) => ScheduleView {
                record,
                state,
                next: cron.upcoming(Utc::now(), NEXT_COUNT),
                error: None,
            },
            Err(error) => ScheduleView {
                record,
                state,
                next: Vec::new(),
                error: Some(error),
            },
        })
    }

    /// `polos.schedules.list`: valid schedules with their state and next instant; stored values
    /// that are not valid schedules (bad JSON, bad cron, bad zone) go to `invalid`. One page of
    /// at most `limit` entries in KV key order, after `after`.
    pub async fn list(&self, body: &[u8]) -> Result<ListReply, ApiError> {
        let request: ListRequest = decode(body, &self.limits)?;
        if let Some(workflow) = &request.workflow {
            validate_workflow(workflow)?;
        }
        let limit = match request.limit {
            None => MAX_LIST_PAGE,
            Some(0) => {
                return Err(ApiError::invalid_request(
                    "field \"limit\" must be at least 1; leave it out for the largest page",
                ))
            }
            Some(n) => n.min(MAX_LIST_PAGE),
        };
        let workflow = request.workflow.as_deref();
        let listing = self.store.list(workflow).await?;
        let mut states = self.store.states(workflow).await?;
        let now = Utc::now();
        // Valid and invalid entries share one KV key order, so pages never skip or repeat one.
        let mut entries: Vec<(String, Result<ScheduleView, InvalidEntry>)> = listing
            .invalid
            .into_iter()
            .map(|invalid| (invalid.kv_key.clone(), Err(invalid)))
            .collect();
        for record in listing.schedules {
            let kv_key = schedule_kv_key(&record.workflow, &record.key);
            let entry = match fireable(&self.limits, &record) {
                Ok(cron) => Ok(ScheduleView {
                    state: states.remove(&kv_key),
                    next: cron.next_after(now).into_iter().collect(),
                    error: None,
                    record,
                }),
                Err(error) => Err(InvalidEntry {
                    kv_key: kv_key.clone(),
                    error,
                }),
            };
            entries.push((kv_key, entry));
        }
        entries.sort_by(|a, b| a.0.cmp(&b.0));
        let mut reply = ListReply::default();
        let mut page = entries
            .into_iter()
            .filter(|(kv_key, _)| request.after.as_ref().is_none_or(|after| kv_key > after))
            .peekable();
        let mut taken = 0;
        while let Some((kv_key, entry)) = page.next() {
            match entry {
                Ok(view) => reply.schedules.push(view),
                Err(invalid) => reply.invalid.push(invalid),
            }
            taken += 1;
            if taken == limit && page.peek().is_some() {
                reply.next_after = Some(kv_key);
                break;
            }
        }
        Ok(reply)
    }

    /// `polos.schedules.delete`.
    pub async fn delete(&self, body: &[u8]) -> Result<DeleteReply, ApiError> {
        let request: KeyRequest = decode(body, &self.limits)?;
        validate_workflow(&request.workflow)?;
        validate_key(&request.key)?;
        let deleted = self.store.delete(&request.workflow, &request.key).await?;
        if let Some(counts) = &self.counts {
            counts.deleted(
                &request.workflow,
                &schedule_kv_key(&request.workflow, &request.key),
            );
        }
        Ok(DeleteReply { deleted })
    }

    /// `polos.schedules.pause` (`paused = true`) and `.resume` (`paused = false`).
    pub async fn set_paused(&self, body: &[u8], paused: bool) -> Result<ScheduleRecord, ApiError> {
        let request: PauseRequest = decode(body, &self.limits)?;
        validate_workflow(&request.workflow)?;
        validate_key(&request.key)?;
        self.limits.check_note(request.note.as_deref())?;
        self.store
            .set_paused(
                &request.workflow,
                &request.key,
                paused,
                request.note.as_deref(),
                now_seconds(),
            )
            .await?
            .ok_or_else(|| not_found(&request.workflow, &request.key))
    }

    /// `polos.schedules.trigger`: one manual fire now, outside the cron.
    pub async fn trigger(&self, body: &[u8]) -> Result<TriggerReply, ApiError> {
        let request: KeyRequest = decode(body, &self.limits)?;
        validate_workflow(&request.workflow)?;
        validate_key(&request.key)?;
        let record = self.existing(&request.workflow, &request.key).await?;
        self.limits.check_record(&record).map_err(|e| {
            let mut error = ApiError::from(e);
            error.message = format!(
                "the stored schedule cannot fire: {}; fix it with an upsert",
                error.message
            );
            error
        })?;
        let cron = CronSchedule::parse(&record.cron, &record.timezone).map_err(|e| {
            let mut error = ApiError::from(e);
            error.message = format!(
                "the stored schedule cannot fire: {}; fix it with an upsert",
                error.message
            );
            error
        })?;
        let last = self
            .store
            .state(&request.workflow, &request.key)
            .await?
            .and_then(|s| s.last_timestamp);
        let now = now_seconds();
        let upcoming = cron.next_after(now).unwrap_or(now);
        let fire = Fire::manual(&record.workflow, payload(&record, now, last, upcoming));
        let publish = |e: String| {
            ApiError::internal(format!(
                "cannot publish the fire to {}: {e}; check that stream POLOS_RUNS exists (`polos streams apply`)",
                fire.subject()
            ))
        };
        let subject = fire.subject();
        let published = async {
            self.js
                .publish_with_headers(subject.clone(), fire.headers(), fire.body())
                .await
                .map_err(|e| publish(e.to_string()))?
                .await
                .map_err(|e| publish(e.to_string()))
        };
        self.store
            .denials()
            .guard(&[&subject], published)
            .await
            .map_err(|denied| ApiError::from(StoreError::Denied(denied)))??;
        self.metrics.fired(
            &fire.workflow,
            Trigger::Manual,
            chrono::TimeDelta::zero(),
            false,
        );
        Ok(TriggerReply {
            run_id: fire.run_id,
        })
    }

    /// `polos.workflows.list`.
    pub async fn workflows(&self, body: &[u8]) -> Result<WorkflowsReply, ApiError> {
        let WorkflowsRequest {} = decode(body, &self.limits)?;
        let (workflows, invalid) = self.store.workflows().await?;
        Ok(WorkflowsReply { workflows, invalid })
    }

    /// Admits a create under `limits.max_schedules_per_workflow`: `None` when no count is kept
    /// or the key is live (an update), else a reservation to confirm once stored.
    async fn admit(
        &self,
        workflow: &str,
        key: &str,
    ) -> Result<Option<super::counts::Reservation>, ApiError> {
        let Some(counts) = &self.counts else {
            return Ok(None);
        };
        match counts.admit(workflow, &schedule_kv_key(workflow, key)).await {
            Ok(reservation) => Ok(reservation),
            // The view may not have seen a create of this very key on another replica yet:
            // an update of a live schedule is never refused.
            Err(Refusal::Limit(_)) if self.store.get(workflow, key).await?.is_some() => Ok(None),
            Err(Refusal::Limit(e)) => Err(e.into()),
            Err(Refusal::Loading) => Err(ApiError::internal(format!(
                "the schedules of workflow {workflow:?} are still being counted (limits.max_schedules_per_workflow, the service just started); retry in a moment"
            ))),
        }
    }

    /// The readable record of an existing schedule, `not_found` when there is none.
    async fn existing(&self, workflow: &str, key: &str) -> Result<ScheduleRecord, ApiError> {
        let stored = self
            .store
            .get(workflow, key)
            .await?
            .ok_or_else(|| not_found(workflow, key))?;
        stored.record.map_err(|e| {
            ApiError::internal(format!(
                "the stored value is not a valid schedule: {e}; overwrite it with an upsert or delete it"
            ))
        })
    }
}
