//! `polos::schedules`: create, read and manage schedules — the seed's `schedules` module.
//!
//! Each function is one request to the schedules API. Errors the service reports come back as
//! [`ClientError::Api`] with an [`ErrorCode`].

use super::{ClientError, PolosClient};
use crate::model::names::{
    API_DELETE, API_GET, API_LIST, API_PAUSE, API_RESUME, API_TRIGGER, API_UPSERT,
};
use crate::model::ScheduleRecord;

pub use crate::api::{
    DeleteReply, ErrorCode, KeyRequest, ListReply, ListRequest, PauseRequest, ScheduleView,
    TriggerReply, UpsertReply, UpsertRequest,
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

/// Creates or updates a schedule with every option (paused, note, catch-up) and returns the
/// full reply: id, whether it was created, the next 5 instants and any warning.
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
