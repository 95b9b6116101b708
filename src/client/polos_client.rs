//! [`PolosClient`]: a NATS connection plus the request settings of the schedules API.

use std::time::Duration;

use async_nats::RequestErrorKind;
use serde::de::DeserializeOwned;
use serde::Serialize;

use super::ClientError;
use crate::api::{ApiError, ErrorCode, WorkflowsReply, WorkflowsRequest};
use crate::config::Config;
use crate::model::names::{API_WORKFLOWS_LIST, HEADER_SERVICE_ERROR, HEADER_SERVICE_ERROR_CODE};
use crate::nats::Denials;

/// How long a request waits for the service's reply unless [`PolosClient::with_timeout`] says
/// otherwise.
pub const DEFAULT_REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// A handle to the polos API; cheap to clone (it shares one NATS connection).
#[derive(Debug, Clone)]
pub struct PolosClient {
    /// The connection requests go over.
    nats: async_nats::Client,
    /// How long each request waits for its reply.
    timeout: Duration,
    /// Refusals on the connection: a request NATS refuses fails at once instead of timing out.
    denials: Denials,
}

impl PolosClient {
    /// Connects with `[nats]` of `config` (servers, credentials, TLS).
    pub async fn connect(config: &Config) -> Result<PolosClient, ClientError> {
        Ok(PolosClient::from_nats(
            crate::nats::connect(&config.nats).await?,
        ))
    }

    /// Loads the configuration (defaults, `polos.toml`, `POLOS_*` variables) and connects: the
    /// Rust spelling of the documented Python API's `PolosClient()`.
    pub async fn from_env() -> Result<PolosClient, ClientError> {
        PolosClient::connect(&Config::from_env()?).await
    }

    /// Uses a connection the program already has.
    pub fn from_nats(nats: async_nats::Client) -> PolosClient {
        PolosClient {
            denials: Denials::of(&nats),
            nats,
            timeout: DEFAULT_REQUEST_TIMEOUT,
        }
    }

    /// The same client with another request timeout.
    pub fn with_timeout(mut self, timeout: Duration) -> PolosClient {
        self.timeout = timeout;
        self
    }

    /// The underlying NATS connection.
    pub fn nats(&self) -> &async_nats::Client {
        &self.nats
    }

    /// Every workflow a worker registered (`polos.workflows.list`).
    pub async fn workflows(&self) -> Result<WorkflowsReply, ClientError> {
        self.request(API_WORKFLOWS_LIST, &WorkflowsRequest {}).await
    }

    /// Sends `body` to `subject` and decodes the reply, turning micro error replies into
    /// [`ClientError::Api`].
    pub(crate) async fn request<Req: Serialize, Rep: DeserializeOwned>(
        &self,
        subject: &str,
        body: &Req,
    ) -> Result<Rep, ClientError> {
        let payload = serde_json::to_vec(body).map_err(|source| ClientError::Reply {
            subject: subject.to_string(),
            source,
        })?;
        let request = async_nats::Request::new()
            .payload(payload.into())
            .timeout(Some(self.timeout));
        let reply = self
            .denials
            .guard(
                &[subject],
                self.nats.send_request(subject.to_string(), request),
            )
            .await
            .map_err(|denied| ClientError::Denied { denied })?
            .map_err(|source| match source.kind() {
                RequestErrorKind::NoResponders => ClientError::NoService {
                    subject: subject.to_string(),
                },
                RequestErrorKind::TimedOut => ClientError::Timeout {
                    subject: subject.to_string(),
                    timeout: self.timeout,
                },
                _ => ClientError::Request {
                    subject: subject.to_string(),
                    source,
                },
            })?;
        if let Some(status) = reply
            .headers
            .as_ref()
            .and_then(|h| h.get(HEADER_SERVICE_ERROR_CODE))
        {
            return Err(api_error(
                status.as_str(),
                reply
                    .headers
                    .as_ref()
                    .and_then(|h| h.get(HEADER_SERVICE_ERROR))
                    .map(|v| v.as_str().to_string()),
                &reply.payload,
            ));
        }
        serde_json::from_slice(&reply.payload).map_err(|source| ClientError::Reply {
            subject: subject.to_string(),
            source,
        })
    }
}

/// The error of a micro error reply: the JSON body when it has one, else the headers.
fn api_error(status: &str, header: Option<String>, body: &[u8]) -> ClientError {
    #[derive(serde::Deserialize)]
    struct Body {
        error: ApiError,
    }
    if let Ok(Body { error }) = serde_json::from_slice::<Body>(body) {
        return ClientError::Api {
            code: error.code,
            message: error.message,
        };
    }
    let code = match status {
        "404" => ErrorCode::NotFound,
        "400" => ErrorCode::InvalidRequest,
        _ => ErrorCode::Internal,
    };
    ClientError::Api {
        code,
        message: header.unwrap_or_else(|| format!("the service answered with error {status}")),
    }
}
