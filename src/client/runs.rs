//! `polos::runs`: act on runs through the API.

use super::{ClientError, PolosClient};
use crate::model::names::API_RUN_CANCEL;

pub use crate::api::{CancelReply, CancelRequest};

/// Cancels run `run_id`: a running run stops at its next step boundary and is recorded
/// `cancelled` (not retried); a run that has not started is cancelled when it would start; a
/// finished run is left as it is (`cancel_requested: false` in the reply).
///
/// `workflow` is needed only for a run that has no record yet (not started); `reason` is
/// recorded in the run's `error`. Works wherever the run executes: the request is stored in
/// `polos_cancels`, which every worker of the workflow follows.
///
/// ```no_run
/// # async fn f(client: polos::PolosClient) -> Result<(), polos::client::ClientError> {
/// let reply = polos::runs::cancel(
///     &client,
///     "sch_4xv32vp3oro5c6puhza43mst5t-20261126T090000Z",
///     None,
///     Some("wrong input data"),
/// )
/// .await?;
/// println!("{} is {:?}", reply.run_id, reply.status);
/// # Ok(()) }
/// ```
pub async fn cancel(
    client: &PolosClient,
    run_id: &str,
    workflow: Option<&str>,
    reason: Option<&str>,
) -> Result<CancelReply, ClientError> {
    let request = CancelRequest {
        run_id: run_id.to_string(),
        workflow: workflow.map(str::to_string),
        reason: reason.map(str::to_string),
    };
    client.request(API_RUN_CANCEL, &request).await
}
