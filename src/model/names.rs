//! The names of the contract (README, "The contract") in one place: buckets, the stream,
//! subjects and message headers. The scheduler, the API service, the client, the worker and the
//! permission sets all take them from here. (Limits and their defaults: [`super::limits`].)
//!
//! The integration tests spell these names out literally on purpose: a test that imported them
//! would still pass after a rename that breaks every other-language client.

/// KV bucket of schedule definitions, keyed `<workflow>.<encoded key>`.
pub const SCHEDULES_BUCKET: &str = "polos_schedules";
/// KV bucket of per-schedule state written by the scheduler, same keys as [`SCHEDULES_BUCKET`].
pub const SCHEDULE_STATE_BUCKET: &str = "polos_schedule_state";
/// KV bucket of workflow registrations written by workers, keyed `<workflow>`.
pub const WORKFLOWS_BUCKET: &str = "polos_workflows";
/// KV bucket of run records, keyed `<workflow>.<run_id>`.
pub const RUNS_BUCKET: &str = "polos_runs";
/// KV bucket of durable step results, keyed `<run_id>.<encoded step>`.
pub const STEPS_BUCKET: &str = "polos_steps";
/// KV bucket of the scheduler's lease, one key ([`LEASE_KEY`]); written by the ticker only.
pub const LEASES_BUCKET: &str = "polos_leases";
/// The key of the lease in [`LEASES_BUCKET`].
pub const LEASE_KEY: &str = "scheduler";
/// KV bucket of per-schedule overlap records (the run executing, runs waiting, skips), keyed
/// like [`SCHEDULES_BUCKET`]; written by workers.
pub const OVERLAP_BUCKET: &str = "polos_overlap";
/// KV bucket of run cancel requests, keyed `<workflow>.<run_id>`; written by the API and by
/// workers (`cancel_other`), followed by workers.
pub const CANCELS_BUCKET: &str = "polos_cancels";
/// Work-queue stream holding fires, subjects `polos.runs.<workflow>`.
pub const RUNS_STREAM: &str = "POLOS_RUNS";
/// Prefix of the runs stream subjects.
pub const RUNS_SUBJECT_PREFIX: &str = "polos.runs";
/// Every subject of the runs stream (what the stream captures and the scheduler publishes to).
pub const RUNS_SUBJECTS: &str = "polos.runs.>";

/// The subject a workflow's fires are published to: `polos.runs.<workflow>`.
pub fn runs_subject(workflow: &str) -> String {
    format!("{RUNS_SUBJECT_PREFIX}.{workflow}")
}

/// Name of the NATS micro service that serves the schedules API.
pub const SERVICE_NAME: &str = "polos";
/// `{"workflow","cron","timezone"?,"key"?,"paused"?,"note"?}` → `{"schedule_id","created","next"}`.
pub const API_UPSERT: &str = "polos.schedules.upsert";
/// `{"workflow","key"?}` → the record plus its state.
pub const API_GET: &str = "polos.schedules.get";
/// `{"workflow"?}` → `{"schedules":[...]}`.
pub const API_LIST: &str = "polos.schedules.list";
/// `{"workflow","key"?}` → `{"deleted":bool}`.
pub const API_DELETE: &str = "polos.schedules.delete";
/// `{"workflow","key"?,"note"?}` → the record.
pub const API_PAUSE: &str = "polos.schedules.pause";
/// `{"workflow","key"?,"note"?}` → the record.
pub const API_RESUME: &str = "polos.schedules.resume";
/// `{"workflow","key"?}` → `{"run_id"}`.
pub const API_TRIGGER: &str = "polos.schedules.trigger";
/// `{"run_id","workflow"?,"reason"?}` → `{"run_id","workflow","status","cancel_requested"}`.
///
/// Not under `polos.runs.`: that is the fire stream's subject space (a request there would be
/// stored as a fire of a workflow named `cancel`).
pub const API_RUN_CANCEL: &str = "polos.run.cancel";
/// `{"workflow","key"?,"from","to"}` → `{"schedule_id","seq","instants","first","last"}`.
pub const API_BACKFILL: &str = "polos.schedules.backfill";
/// `{}` → `{"workflows":[...]}`.
pub const API_WORKFLOWS_LIST: &str = "polos.workflows.list";
/// Every `polos.schedules.*` endpoint, for permission sets.
pub const API_SCHEDULES_ALL: &str = "polos.schedules.*";

/// Reply header of a refused API request: the error's message (NATS micro convention).
pub const HEADER_SERVICE_ERROR: &str = "Nats-Service-Error";
/// Reply header of a refused API request: the HTTP-like status (`400`, `404`, `409`, `500`).
pub const HEADER_SERVICE_ERROR_CODE: &str = "Nats-Service-Error-Code";

/// Message header carrying the de-duplication id `<schedule_id>@<timestamp>`.
pub const HEADER_MSG_ID: &str = "Nats-Msg-Id";
/// Message header carrying the run id.
pub const HEADER_RUN_ID: &str = "Polos-Run-Id";
/// Message header carrying the trigger: `schedule`, `catchup`, `manual` or `backfill`.
pub const HEADER_TRIGGER: &str = "Polos-Trigger";
