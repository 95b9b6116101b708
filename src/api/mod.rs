//! The schedules API: the NATS micro service `polos` (design §3), hosted by `polos scheduler`.
//!
//! Every replica joins the same queue group, so a request is answered by exactly one of them.
//! Validation lives only here (the Rust client, the CLI and other-language clients all send plain
//! requests), and a request is validated completely before anything is written.

mod decode;
mod error;
mod handlers;
mod registry;
mod service;
mod types;

pub use crate::store::InvalidEntry;
pub use error::{ApiError, ErrorCode, ServeError};
pub use service::{serve, start, ApiServer, MAX_NOTE_BYTES, MAX_REQUEST_BYTES};
pub use types::{
    DeleteReply, KeyRequest, ListReply, ListRequest, PauseRequest, ScheduleView, TriggerReply,
    UpsertReply, UpsertRequest, WorkflowsReply, WorkflowsRequest, MAX_LIST_PAGE,
};
