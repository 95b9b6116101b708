//! `polos::schedules`: create, read and manage schedules — the documented Python API's `schedules` module.
//!
//! Each function is one request to the schedules API. Errors the service reports come back as
//! [`ClientError::Api`] with an [`ErrorCode`].

use super::{ClientError, PolosClient};
use crate::model::names::{
    API_BACKFILL, API_DELETE, API_GET, API_LIST, API_PAUSE, API_RESUME, API_TRIGGER, API_UPSERT,
};
use crate::model::ScheduleRecord;

pub use crate::api::{
    BackfillReply, BackfillRequest, DeleteReply, ErrorCode, KeyRequest, ListReply, ListRequest,
    PauseRequest, ScheduleView, TriggerReply, UpsertReply, UpsertRequest,
};

/// Creates or updates the schedule of `workflow` + `key` and returns its schedule id.
///
/// Calling it again with the same workflow and key updates that schedule (same id). Use
/// `key = "global"` for the one system-wide schedule of a workflow, a user id for per-user
/// schedules.
///
/// ```no_run
/// # async fn f(client: polos::PolosClient) -> Result<(), polos::client::ClientError> {
/// let schedule_id = polos::schedules::create(
///     &client,
///     "daily-digest",
///     "0 8 * * *",
///     "Europe/London",
///     "user_456",
/// )
/// .await?;
/// # Ok(()) }
/// ```
pub async fn create(
    client: &PolosClient,
    workflow: &str,
    cron: &str,
    timezone: &str,
    key: &str,
) -> Result<String, ClientError> {
    let request = UpsertRequest {
        timezone: timezone.to_string(),
        key: key.to_string(),
        ..UpsertRequest::new(workflow, cron)
    };
    Ok(upsert(client, &request).await?.schedule_id)
}

/// Creates or updates a schedule with every option (paused, note, catch-up, jitter, start and
/// end, max runs) and returns the full reply: id, whether it was created, the next 5 instants
/// and any warning.
///
/// ```no_run
/// # async fn f(client: polos::PolosClient) -> Result<(), polos::client::ClientError> {
/// use polos::schedules::UpsertRequest;
/// // Every user's 08:00 spread over 10 minutes; a trial that ends after 14 reminders.
/// let request = UpsertRequest {
///     key: "user_123".into(),
///     jitter_secs: Some(600),
///     max_runs: Some(14),
///     ..UpsertRequest::new("user-reminder", "0 8 * * *")
/// };
/// polos::schedules::upsert(&client, &request).await?;
/// # Ok(()) }
/// ```
pub async fn upsert(
    client: &PolosClient,
    request: &UpsertRequest,
) -> Result<UpsertReply, ClientError> {
    client.request(API_UPSERT, request).await
}

/// The schedule of `workflow` + `key` with its scheduler state and next 5 instants.
/// `ErrorCode::NotFound` when there is none.
pub async fn get(
    client: &PolosClient,
    workflow: &str,
    key: &str,
) -> Result<ScheduleView, ClientError> {
    client.request(API_GET, &key_request(workflow, key)).await
}

/// Every schedule, or every schedule of `workflow`, in KV key order; stored values that are not
/// valid schedules are listed in `invalid` rather than failing the call. Follows the API's pages
/// until the end, so the reply never has `next_after`.
pub async fn list(client: &PolosClient, workflow: Option<&str>) -> Result<ListReply, ClientError> {
    let mut request = ListRequest {
        workflow: workflow.map(str::to_string),
        ..ListRequest::default()
    };
    let mut all = ListReply::default();
    loop {
        let page: ListReply = client.request(API_LIST, &request).await?;
        all.schedules.extend(page.schedules);
        all.invalid.extend(page.invalid);
        match page.next_after {
            Some(after) => request.after = Some(after),
            None => return Ok(all),
        }
    }
}

/// Deletes a schedule; returns whether it existed.
pub async fn delete(client: &PolosClient, workflow: &str, key: &str) -> Result<bool, ClientError> {
    let reply: DeleteReply = client
        .request(API_DELETE, &key_request(workflow, key))
        .await?;
    Ok(reply.deleted)
}

/// Pauses a schedule (it keeps its definition but does not fire); `note` replaces its note.
pub async fn pause(
    client: &PolosClient,
    workflow: &str,
    key: &str,
    note: Option<&str>,
) -> Result<ScheduleRecord, ClientError> {
    set_paused(client, API_PAUSE, workflow, key, note).await
}

/// Resumes a paused schedule: it fires from now on, without catching up the paused time.
pub async fn resume(
    client: &PolosClient,
    workflow: &str,
    key: &str,
    note: Option<&str>,
) -> Result<ScheduleRecord, ClientError> {
    set_paused(client, API_RESUME, workflow, key, note).await
}

/// Pause and resume take the same request and reply; only the endpoint differs.
async fn set_paused(
    client: &PolosClient,
    subject: &str,
    workflow: &str,
    key: &str,
    note: Option<&str>,
) -> Result<ScheduleRecord, ClientError> {
    client
        .request(subject, &pause_request(workflow, key, note))
        .await
}

/// Fires a schedule once now, outside its cron; returns the run id.
pub async fn trigger(
    client: &PolosClient,
    workflow: &str,
    key: &str,
) -> Result<String, ClientError> {
    let reply: TriggerReply = client
        .request(API_TRIGGER, &key_request(workflow, key))
        .await?;
    Ok(reply.run_id)
}

/// Back-fills a schedule: every instant of its cron from `from` to `to` (RFC 3339, both
/// inclusive, `to` not in the future) fires once, with trigger `backfill` and the run id a
/// scheduled fire of that instant has, so instants that already ran are not run again. The
/// scheduler works the request off behind on-time fires, also across a failover; the reply says
/// how many instants it covers. At most 10,000 instants per request.
///
/// ```no_run
/// # async fn f(client: polos::PolosClient) -> Result<(), polos::client::ClientError> {
/// let reply = polos::schedules::backfill(
///     &client,
///     "daily-report",
///     "global",
///     "2026-05-01T00:00:00Z",
///     "2026-05-07T23:59:59Z",
/// )
/// .await?;
/// println!("{} instants, {} to {}", reply.instants, reply.first, reply.last);
/// # Ok(()) }
/// ```
pub async fn backfill(
    client: &PolosClient,
    workflow: &str,
    key: &str,
    from: &str,
    to: &str,
) -> Result<BackfillReply, ClientError> {
    let request = BackfillRequest {
        workflow: workflow.to_string(),
        key: key.to_string(),
        from: from.to_string(),
        to: to.to_string(),
    };
    client.request(API_BACKFILL, &request).await
}

fn key_request(workflow: &str, key: &str) -> KeyRequest {
    KeyRequest {
        workflow: workflow.to_string(),
        key: key.to_string(),
    }
}

fn pause_request(workflow: &str, key: &str, note: Option<&str>) -> PauseRequest {
    PauseRequest {
        workflow: workflow.to_string(),
        key: key.to_string(),
        note: note.map(str::to_string),
    }
}
