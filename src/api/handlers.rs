//! One function per endpoint: decode, validate everything, then read or write the store.

use std::collections::HashMap;
use std::sync::Arc;

use async_nats::jetstream;
use chrono::Utc;

use super::counts::{Counts, Refusal};
use super::decode::decode;
use super::error::{ApiError, ErrorCode};
use super::registry::Registry;
use super::types::{
    BackfillReply, BackfillRequest, CancelReply, CancelRequest, DeleteReply, KeyRequest, ListReply,
    ListRequest, PauseRequest, RecentRun, ScheduleCounters, ScheduleView, TriggerReply,
    UpsertReply, UpsertRequest, WorkflowsReply, WorkflowsRequest, MAX_LIST_PAGE,
};
use crate::cron::{CronError, CronSchedule};
use crate::metrics::Metrics;
use crate::model::time::{format_instant, now_seconds, parse_instant};
use crate::model::{
    backfill_done, count_instants, payload, run_id_for, schedule_kv_key, validate_key,
    validate_workflow, Backfill, CancelRecord, Fire, Limits, ScheduleRecord, ScheduleSource,
    ScheduleState, Trigger, MAX_BACKFILL_INSTANTS, MAX_JITTER_SECS, MAX_PENDING_BACKFILLS,
};
use crate::store::{
    validate_run_id, CancelStore, InvalidEntry, OverlapStore, RunKey, RunStore, ScheduleStore,
    StoreError,
};

/// How many upcoming instants `upsert` and `get` reply with in `next`.
const NEXT_COUNT: usize = 5;
/// How many upcoming instants and recent runs `get` describes.
const DESCRIBE_COUNT: usize = 10;
/// How far back `get` looks for recent instants: runs are kept 30 days.
const RECENT_WINDOW: chrono::TimeDelta = chrono::TimeDelta::days(31);

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
    /// `polos_runs`: recent runs in `get`, a run's workflow and status in `run.cancel`.
    pub runs: RunStore,
    /// `polos_cancels`: where `run.cancel` asks.
    pub cancels: CancelStore,
    /// `polos_overlap`: skipped count, active and waiting runs in `get`.
    pub overlap: OverlapStore,
    /// Crons already parsed by upserts.
    pub crons: Crons,
}

/// The parsed crons of one zone, by expression.
type ByExpression = HashMap<Box<str>, Arc<CronSchedule>>;

/// Most crons [`Crons`] keeps; past it, it starts over (a cache, never a limit).
const MAX_CACHED_CRONS: usize = 1024;

/// Parsed crons by zone and expression. Most upserts repeat a few crons (every user's
/// `0 8 * * *`), and parsing one (fields, compiled form, zone lookup) was about 5 % of the
/// service's CPU per upsert (BENCHMARKS.md, "API"). Only valid crons are kept: a refusal is
/// parsed again, so its message is always the parser's own.
#[derive(Debug, Default)]
pub(crate) struct Crons {
    /// By zone, then expression (nested so that lookups need no key built per request).
    parsed: std::sync::Mutex<HashMap<Box<str>, ByExpression>>,
}

impl Crons {
    /// [`CronSchedule::parse`], from the cache when this cron was parsed before.
    fn parse(&self, expr: &str, timezone: &str) -> Result<Arc<CronSchedule>, CronError> {
        let lock = || self.parsed.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(cron) = lock().get(timezone).and_then(|m| m.get(expr)) {
            return Ok(cron.clone());
        }
        let cron = Arc::new(CronSchedule::parse(expr, timezone)?);
        let mut parsed = lock();
        if parsed.values().map(HashMap::len).sum::<usize>() >= MAX_CACHED_CRONS {
            parsed.clear();
        }
        parsed
            .entry(timezone.into())
            .or_default()
            .insert(expr.into(), cron.clone());
        Ok(cron)
    }
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
        .map_err(ApiError::from)
        .and_then(|()| CronSchedule::parse(&record.cron, &record.timezone).map_err(ApiError::from))
        // The same `code: message` text a refused upsert of this value would get.
        .map_err(|e| format!("{}: {}; fix it with an upsert", e.code.as_str(), e.message))
}

/// The counters of `get`. `backfilled` is `null` where the state record has no `backfilled`
/// field: none back-filled yet (the record leaves it out at zero) or a scheduler older than
/// back-fill.
fn counters(state: Option<&ScheduleState>, skipped: u64) -> ScheduleCounters {
    let backfilled = state.map(|s| s.backfilled).filter(|n| *n > 0);
    ScheduleCounters {
        fired: state.map_or(0, |s| s.fires),
        missed: state.map_or(0, |s| s.missed),
        skipped,
        backfilled,
    }
}

/// The last `count` instants of `cron` at or before `until`, newest first, looking back at most
/// [`RECENT_WINDOW`]. The window grows from one hour by ×8 until it holds `count` instants, so
/// a minutely cron costs a few dozen steps and a monthly one a few hundred.
fn recent_instants(
    cron: &CronSchedule,
    until: chrono::DateTime<Utc>,
    count: usize,
) -> Vec<chrono::DateTime<Utc>> {
    let mut span = chrono::TimeDelta::hours(1);
    loop {
        let span_now = span.min(RECENT_WINDOW);
        let from = until - span_now;
        let mut found = Vec::new();
        let mut at = from;
        while let Some(next) = cron.next_after(at) {
            if next > until {
                break;
            }
            found.push(next);
            if found.len() > count {
                found.remove(0);
            }
            at = next;
        }
        if found.len() >= count || span_now >= RECENT_WINDOW {
            found.reverse();
            found.truncate(count);
            return found;
        }
        span = span * 8;
    }
}

/// An instant field: RFC 3339 with any offset, truncated to the second like every stored
/// instant.
fn instant_field(field: &str, text: &str) -> Result<chrono::DateTime<Utc>, ApiError> {
    use chrono::SubsecRound;
    parse_instant(text).map(|t| t.trunc_subsecs(0)).map_err(|e| {
        ApiError::invalid_request(format!(
            "field {field:?} is not an RFC 3339 instant ({e}): {:?}; write e.g. \"2026-05-01T08:00:00Z\"",
            text.chars().take(64).collect::<String>()
        ))
    })
}

/// A bound of an upsert: absent keeps the stored one (`None`), `""` removes it (`Some(None)`).
fn bound_field(
    field: &str,
    text: Option<&str>,
) -> Result<Option<Option<chrono::DateTime<Utc>>>, ApiError> {
    match text {
        None => Ok(None),
        Some("") => Ok(Some(None)),
        Some(text) => instant_field(field, text).map(|t| Some(Some(t))),
    }
}

/// The next `n` instants the schedule fires at: after now and its `start_at`, up to its
/// `end_at`, no more than its `max_runs` leaves (nominal instants: jitter publishes each a
/// little later).
fn upcoming(
    record: &ScheduleRecord,
    cron: &CronSchedule,
    state: Option<&ScheduleState>,
    n: usize,
) -> Vec<chrono::DateTime<Utc>> {
    let fired = state.map_or(0, |s| s.fires);
    let left = record.max_runs.map_or(n, |max| {
        usize::try_from(max.saturating_sub(fired)).unwrap_or(n)
    });
    let now = Utc::now();
    let after = record
        .start_at
        .map_or(now, |start| now.max(start - chrono::Duration::seconds(1)));
    cron.upcoming(after, n.min(left))
        .into_iter()
        .filter(|t| record.end_at.is_none_or(|end| *t <= end))
        .collect()
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
        let cron = self.crons.parse(&request.cron, &request.timezone)?;
        if let Some(jitter) = request.jitter_secs.filter(|j| *j > MAX_JITTER_SECS) {
            return Err(ApiError::invalid_request(format!(
                "field \"jitter_secs\" is {jitter}, the limit is {MAX_JITTER_SECS} (a day); a fire is never delayed past the schedule's next instant anyway"
            )));
        }
        let start_at = bound_field("start_at", request.start_at.as_deref())?;
        let end_at = bound_field("end_at", request.end_at.as_deref())?;
        if let (Some(Some(start)), Some(Some(end))) = (start_at, end_at) {
            if end <= start {
                return Err(ApiError::invalid_request(format!(
                    "\"end_at\" ({}) must be after \"start_at\" ({}); the schedule would never fire",
                    format_instant(end),
                    format_instant(start)
                )));
            }
        }
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
                record.overlap = request.overlap.or(current.and_then(|c| c.overlap));
                record.pause_on_failure = request
                    .pause_on_failure
                    .or(current.and_then(|c| c.pause_on_failure));
                record.jitter_secs = request.jitter_secs.or(current.and_then(|c| c.jitter_secs));
                record.start_at = start_at.unwrap_or(current.and_then(|c| c.start_at));
                record.end_at = end_at.unwrap_or(current.and_then(|c| c.end_at));
                record.max_runs = match request.max_runs {
                    Some(0) => None,
                    Some(n) => Some(n),
                    None => current.and_then(|c| c.max_runs),
                };
                // Back-fills are requested through their own endpoint; an upsert keeps them.
                record.backfills = current.map(|c| c.backfills.clone()).unwrap_or_default();
                record.created_at = current.and_then(|c| c.created_at).or(Some(now));
                record.updated_at = Some(now);
                record
            })
            .await?;
        if let Some(reservation) = reservation.filter(|_| upserted.created) {
            reservation.stored();
        }
        let mut warnings = crate::cron::schedule_notes(&cron, Utc::now());
        if let Some(end) = upserted.record.end_at.filter(|end| *end < Utc::now()) {
            warnings.push(format!(
                "end_at {} is in the past: the schedule is stored but does not fire",
                format_instant(end)
            ));
        }
        Ok(UpsertReply {
            next: upcoming(&upserted.record, &cron, None, NEXT_COUNT),
            schedule_id: upserted.record.schedule_id,
            created: upserted.created,
            warning,
            warnings,
        })
    }

    /// `polos.schedules.get`: the record, its state, the next fires, the last runs, counters
    /// and the runs the overlap policy holds.
    pub async fn get(&self, body: &[u8]) -> Result<ScheduleView, ApiError> {
        let request: KeyRequest = decode(body, &self.limits)?;
        validate_workflow(&request.workflow)?;
        validate_key(&request.key)?;
        let record = self.existing(&request.workflow, &request.key).await?;
        let state = self.store.state(&request.workflow, &request.key).await?;
        let overlap = self
            .guarded(self.overlap.get(&request.workflow, &request.key))
            .await?;
        let now = Utc::now();
        let mut view = match fireable(&self.limits, &record) {
            Ok(cron) => {
                let recent = self
                    .recent_runs(&record, &cron, state.as_ref(), now)
                    .await?;
                let next_fires = upcoming(&record, &cron, state.as_ref(), DESCRIBE_COUNT);
                let mut view = ScheduleView::basic(
                    record,
                    state.clone(),
                    next_fires.iter().copied().take(NEXT_COUNT).collect(),
                    None,
                );
                view.next_fires = next_fires;
                view.recent_runs = recent;
                view
            }
            Err(error) => ScheduleView::basic(record, state.clone(), Vec::new(), Some(error)),
        };
        view.counters = Some(counters(state.as_ref(), overlap.record.skipped));
        view.active_run = overlap.record.active;
        view.waiting_runs = overlap.record.waiting;
        Ok(view)
    }

    /// The last [`DESCRIBE_COUNT`] instants of the cron up to the schedule's last fire (or now),
    /// newest first, each with its run record: every run id of a scheduled instant is known
    /// from the instant, so this is one read per instant, whatever else `polos_runs` holds.
    async fn recent_runs(
        &self,
        record: &ScheduleRecord,
        cron: &CronSchedule,
        state: Option<&ScheduleState>,
        now: chrono::DateTime<Utc>,
    ) -> Result<Vec<RecentRun>, ApiError> {
        let until = state
            .and_then(|s| s.last_timestamp)
            .map_or(now, |last| last.min(now));
        let instants = recent_instants(cron, until, DESCRIBE_COUNT);
        let reads = instants.iter().map(|instant| {
            let run_id = run_id_for(&record.schedule_id, *instant);
            async move {
                let found = match RunKey::new(&record.workflow, &run_id) {
                    // A value that is not a run record is shown as "no record", not a failure.
                    Ok(key) => {
                        self.guarded(async {
                            match self.runs.get(&key).await {
                                Err(e) if e.is_permanent() => Ok(None),
                                other => other,
                            }
                        })
                        .await
                    }
                    Err(_) => Ok(None),
                };
                (run_id, *instant, found)
            }
        });
        let mut recent = Vec::with_capacity(instants.len());
        for (run_id, scheduled_for, found) in futures::future::join_all(reads).await {
            let run = found?.map(|stored| stored.record);
            recent.push(RecentRun {
                run_id,
                scheduled_for,
                status: run.as_ref().map(|r| r.status),
                trigger: run.as_ref().map(|r| r.trigger),
                started_at: run.as_ref().map(|r| r.started_at),
                finished_at: run.as_ref().and_then(|r| r.finished_at),
                attempt: run.as_ref().map(|r| r.attempt),
                yielded_to: run.and_then(|r| r.yielded_to),
            });
        }
        Ok(recent)
    }

    /// `polos.run.cancel`: a running run stops at its next step boundary; one not started yet
    /// is cancelled when it would start; a finished one is left as it is.
    pub async fn cancel(&self, body: &[u8]) -> Result<CancelReply, ApiError> {
        let request: CancelRequest = decode(body, &self.limits)?;
        validate_run_id(&request.run_id).map_err(|e| ApiError::invalid_request(e.to_string()))?;
        if let Some(workflow) = &request.workflow {
            validate_workflow(workflow)?;
        }
        self.limits
            .check_free_text("reason", request.reason.as_deref())?;
        let workflow = match &request.workflow {
            Some(workflow) => workflow.clone(),
            None => match self.guarded(self.runs.find(&request.run_id)).await? {
                Some(found) => found.workflow,
                None => {
                    return Err(ApiError::not_found(format!(
                        "run {} has no record (it has not started, or is older than 30 days); to cancel it before it starts, also send its \"workflow\" (`polos runs cancel {} --workflow <workflow>`)",
                        request.run_id, request.run_id
                    )))
                }
            },
        };
        let key = RunKey::new(&workflow, &request.run_id)
            .map_err(|e| ApiError::invalid_request(e.to_string()))?;
        let status = self
            .guarded(self.runs.get(&key))
            .await?
            .map(|stored| stored.record.status);
        if status.is_some_and(|s| s.is_finished()) {
            return Ok(CancelReply {
                run_id: request.run_id,
                workflow,
                status,
                cancel_requested: false,
            });
        }
        let cancel = CancelRecord {
            run_id: request.run_id.clone(),
            workflow: workflow.clone(),
            requested_at: now_seconds(),
            reason: request.reason,
        };
        self.guarded(self.cancels.request(&key, &cancel)).await?;
        Ok(CancelReply {
            run_id: request.run_id,
            workflow,
            status,
            cancel_requested: true,
        })
    }

    /// A run-store call that fails at once, naming the subject, when NATS refuses it.
    async fn guarded<T>(
        &self,
        call: impl std::future::Future<Output = Result<T, StoreError>>,
    ) -> Result<T, ApiError> {
        self.store
            .denials()
            .guard_any(call)
            .await
            .map_err(|denied| ApiError::from(StoreError::Denied(denied)))?
            .map_err(|e| ApiError::internal(e.to_string()))
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
        // Valid and invalid entries share one KV key order, so pages never skip or repeat one.
        let mut entries: Vec<(String, Result<ScheduleView, InvalidEntry>)> = listing
            .invalid
            .into_iter()
            .map(|invalid| (invalid.kv_key.clone(), Err(invalid)))
            .collect();
        for record in listing.schedules {
            let kv_key = schedule_kv_key(&record.workflow, &record.key);
            let entry = match fireable(&self.limits, &record) {
                Ok(cron) => {
                    let state = states.remove(&kv_key);
                    let next = upcoming(&record, &cron, state.as_ref(), 1);
                    Ok(ScheduleView::basic(record, state, next, None))
                }
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
        // The code stays the one the same input gets at upsert; the message says it is stored.
        let cannot_fire = |error: ApiError| ApiError {
            message: format!(
                "the stored schedule cannot fire: {}; fix it with an upsert",
                error.message
            ),
            ..error
        };
        self.limits
            .check_record(&record)
            .map_err(|e| cannot_fire(e.into()))?;
        let cron = CronSchedule::parse(&record.cron, &record.timezone)
            .map_err(|e| cannot_fire(e.into()))?;
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

    /// `polos.schedules.backfill`: queues every instant of the cron in `[from, to]` for the
    /// scheduler, which fires them behind on-time fires. Stored in the schedule record (its
    /// `backfills`), so a scheduler failover continues the work.
    pub async fn backfill(&self, body: &[u8]) -> Result<BackfillReply, ApiError> {
        let request: BackfillRequest = decode(body, &self.limits)?;
        validate_workflow(&request.workflow)?;
        validate_key(&request.key)?;
        let from = instant_field("from", &request.from)?;
        let to = instant_field("to", &request.to)?;
        if from >= to {
            return Err(ApiError::invalid_request(format!(
                "\"from\" ({}) must be before \"to\" ({})",
                format_instant(from),
                format_instant(to)
            )));
        }
        let now = now_seconds();
        if to > now {
            return Err(ApiError::invalid_request(format!(
                "\"to\" ({}) is in the future; a back-fill covers past instants only (the scheduler fires the rest): use a \"to\" up to now ({})",
                format_instant(to),
                format_instant(now)
            )));
        }
        let record = self.existing(&request.workflow, &request.key).await?;
        let cron = CronSchedule::parse(&record.cron, &record.timezone).map_err(|e| {
            ApiError::invalid_request(format!(
                "the stored schedule cannot fire: {e}; fix it with an upsert"
            ))
        })?;
        let next_after = |t| cron.next_after(t);
        let (instants, first, last) = count_instants(from, to, MAX_BACKFILL_INSTANTS, next_after);
        let (Some(first), Some(last)) = (first, last) else {
            return Err(ApiError::invalid_request(format!(
                "no instant of \"{}\" in {} falls between {} and {}; nothing to back-fill",
                record.cron,
                record.timezone,
                format_instant(from),
                format_instant(to)
            )));
        };
        if instants > MAX_BACKFILL_INSTANTS {
            return Err(ApiError::invalid_request(format!(
                "{} to {} holds more than {MAX_BACKFILL_INSTANTS} instants of \"{}\"; split it into ranges of at most {MAX_BACKFILL_INSTANTS} instants",
                format_instant(from),
                format_instant(to),
                record.cron
            )));
        }
        let progress = self
            .store
            .state(&request.workflow, &request.key)
            .await?
            .and_then(|s| s.backfill);
        let mut seq = 0;
        let modified = self
            .store
            .modify(&request.workflow, &request.key, |r| {
                // Requests the scheduler finished are dropped as new ones come in.
                r.backfills
                    .retain(|b| !backfill_done(b, progress, now, next_after));
                seq = 0;
                if r.backfills.len() >= MAX_PENDING_BACKFILLS {
                    return;
                }
                // Above every request ever made, done ones included, so none is taken as done.
                seq = r
                    .backfills
                    .iter()
                    .map(|b| b.seq)
                    .chain(progress.map(|p| p.seq))
                    .max()
                    .unwrap_or(0)
                    + 1;
                r.backfills.push(Backfill {
                    seq,
                    from,
                    to,
                    requested_at: Some(now),
                });
            })
            .await?;
        if modified.is_none() {
            return Err(not_found(&request.workflow, &request.key));
        }
        if seq == 0 {
            return Err(ApiError::invalid_request(format!(
                "{MAX_PENDING_BACKFILLS} back-fills of this schedule are still being worked off; wait for them (`polos schedules get {} --key {}` shows the progress)",
                request.workflow, request.key
            )));
        }
        Ok(BackfillReply {
            schedule_id: record.schedule_id,
            seq,
            instants,
            first,
            last,
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_cron_cache_gives_the_parsers_answers_and_stays_bounded() {
        let crons = Crons::default();
        let first = crons.parse("0 8 * * *", "America/New_York").unwrap();
        let again = crons.parse("0 8 * * *", "America/New_York").unwrap();
        assert!(Arc::ptr_eq(&first, &again), "parsed once");
        assert_eq!(
            *first,
            CronSchedule::parse("0 8 * * *", "America/New_York").unwrap()
        );
        // One expression in two zones is two schedules.
        let utc = crons.parse("0 8 * * *", "UTC").unwrap();
        assert_ne!(*utc, *first);
        // A refusal is never cached: the same text every time, from the parser itself.
        for _ in 0..2 {
            assert_eq!(
                crons.parse("0 0 * * 8", "UTC").unwrap_err().to_string(),
                CronSchedule::parse("0 0 * * 8", "UTC")
                    .unwrap_err()
                    .to_string()
            );
        }
        for minute in 0..60 {
            for hour in 0..24 {
                crons
                    .parse(&format!("{minute} {hour} * * *"), "UTC")
                    .unwrap();
            }
        }
        let held: usize = crons
            .parsed
            .lock()
            .unwrap()
            .values()
            .map(HashMap::len)
            .sum();
        assert!(held <= MAX_CACHED_CRONS, "{held}");
    }
}
