//! Serving over HTTP: the address rules (loopback by default, a token for anything else), the
//! token check shared with the dashboard, and the `GET /metrics` route.

use std::collections::HashMap;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;

use axum::extract::{Query, Request, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use tokio::net::TcpListener;

use super::{bind, HttpAddr, HttpError, Metrics, OPENMETRICS_CONTENT_TYPE};

/// The cookie a browser keeps the token in after opening `/?token=…` once.
pub const TOKEN_COOKIE: &str = "polos_token";

/// `GET /metrics`: every metric in the OpenMetrics text format.
pub fn metrics_router(metrics: Metrics) -> Router {
    Router::new()
        .route("/metrics", get(encode))
        .with_state(metrics)
}

async fn encode(State(metrics): State<Metrics>) -> Response {
    (
        [(header::CONTENT_TYPE, OPENMETRICS_CONTENT_TYPE)],
        metrics.encode(),
    )
        .into_response()
}

/// Puts `router` behind `token` when one is set: a request must carry `Authorization: Bearer
/// <token>` (Prometheus' `authorization` setting), the [`TOKEN_COOKIE`] cookie, or `?token=` in
/// the URL (a browser then gets the cookie and is redirected to the same page without it).
pub fn require_token(router: Router, token: Option<&str>) -> Router {
    match token.filter(|t| !t.is_empty()) {
        Some(token) => router.layer(axum::middleware::from_fn_with_state(
            Arc::<str>::from(token),
            token_layer,
        )),
        None => router,
    }
}

/// Whether `request` carries `token` in its `Authorization` header or its cookie.
pub fn check_token(headers: &axum::http::HeaderMap, token: &str) -> bool {
    let bearer = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "));
    let cookie = headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .find_map(|c| c.trim().strip_prefix(TOKEN_COOKIE)?.strip_prefix('='));
    [bearer, cookie]
        .into_iter()
        .flatten()
        .any(|given| same(given.as_bytes(), token.as_bytes()))
}

async fn token_layer(State(token): State<Arc<str>>, request: Request, next: Next) -> Response {
    if check_token(request.headers(), &token) {
        return next.run(request).await;
    }
    let query = Query::<HashMap<String, String>>::try_from_uri(request.uri())
        .map(|q| q.0)
        .unwrap_or_default();
    if let Some(given) = query.get("token") {
        if same(given.as_bytes(), token.as_bytes()) {
            let rest: Vec<String> = query
                .iter()
                .filter(|(k, _)| k.as_str() != "token")
                .map(|(k, v)| format!("{k}={}", urlencode(v)))
                .collect();
            let mut location = request.uri().path().to_string();
            if !rest.is_empty() {
                location = format!("{location}?{}", rest.join("&"));
            }
            let cookie = format!("{TOKEN_COOKIE}={given}; HttpOnly; SameSite=Strict; Path=/");
            let mut response = StatusCode::SEE_OTHER.into_response();
            let headers = response.headers_mut();
            if let (Ok(loc), Ok(cookie)) = (
                HeaderValue::from_str(&location),
                HeaderValue::from_str(&cookie),
            ) {
                headers.insert(header::LOCATION, loc);
                headers.insert(header::SET_COOKIE, cookie);
            }
            return response;
        }
    }
    (
        StatusCode::UNAUTHORIZED,
        [(header::WWW_AUTHENTICATE, "Bearer")],
        "a token is required: open this page once with ?token=<http.token>, or send the header `Authorization: Bearer <http.token>`\n",
    )
        .into_response()
}

/// Compares without stopping at the first difference, so response timing does not reveal how
/// much of a guessed token was right.
fn same(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Percent-encodes everything but unreserved characters (RFC 3986).
pub(crate) fn urlencode(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for b in text.bytes() {
        if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// Serves `router` on `listener` until `shutdown` resolves.
pub(crate) async fn serve_router(
    listener: TcpListener,
    router: Router,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), HttpError> {
    let addr = listener
        .local_addr()
        .map(|a| a.to_string())
        .unwrap_or_default();
    axum::serve(listener, router)
        .with_graceful_shutdown(shutdown)
        .await
        .map_err(|source| HttpError::Serve { addr, source })
}

/// Serves `GET /metrics` of `metrics` on `addr` until `shutdown` resolves (a worker's
/// `worker.metrics_addr`). Returns once the port is bound with the address it is bound to and
/// the server task.
pub async fn serve_metrics(
    addr: &HttpAddr,
    token: Option<&str>,
    metrics: Metrics,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(SocketAddr, tokio::task::JoinHandle<Result<(), HttpError>>), HttpError> {
    let listener = bind(addr, token).await?;
    let local = listener.local_addr().map_err(|source| HttpError::Bind {
        addr: addr.to_string(),
        source,
    })?;
    let router = require_token(metrics_router(metrics), token);
    Ok((
        local,
        tokio::spawn(serve_router(listener, router, shutdown)),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses() {
        assert_eq!(
            HttpAddr::parse("8080").unwrap().to_string(),
            "127.0.0.1:8080"
        );
        assert_eq!(
            HttpAddr::parse("0.0.0.0:9000").unwrap().to_string(),
            "0.0.0.0:9000"
        );
        assert_eq!(HttpAddr::parse("[::1]:9").unwrap().to_string(), "[::1]:9");
        let e = HttpAddr::parse("host:").unwrap_err().to_string();
        assert!(e.contains("\"host:\"") && e.contains("PORT"), "{e}");
        assert!(HttpAddr::parse(":80").is_err());
    }

    #[tokio::test]
    async fn a_public_address_needs_a_token() {
        let public = HttpAddr::parse("0.0.0.0:0").unwrap();
        let e = bind(&public, None).await.unwrap_err().to_string();
        assert!(e.contains("http.token"), "{e}");
        assert!(
            bind(&public, Some("")).await.is_err(),
            "an empty token is none"
        );
        assert!(bind(&HttpAddr::parse("0").unwrap(), None).await.is_ok());
    }

    #[test]
    fn tokens_from_header_or_cookie() {
        let mut h = axum::http::HeaderMap::new();
        assert!(!check_token(&h, "t0k"));
        h.insert(
            header::COOKIE,
            HeaderValue::from_static("a=b; polos_token=t0k"),
        );
        assert!(check_token(&h, "t0k"));
        assert!(!check_token(&h, "t0"));
        let mut h = axum::http::HeaderMap::new();
        h.insert(
            header::AUTHORIZATION,
            HeaderValue::from_static("Bearer t0k"),
        );
        assert!(check_token(&h, "t0k"));
    }
}
