//! [`HttpAddr`] and [`bind`]: where an HTTP endpoint listens, and the rule that an address
//! other machines can reach needs a token. Plain tokio, so a worker parses and checks its
//! `metrics_addr` the same way whether or not this build serves HTTP (feature `http`).

use std::net::SocketAddr;

use tokio::net::TcpListener;

use super::HttpError;

/// Where to listen: `PORT` (on 127.0.0.1) or `HOST:PORT`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpAddr {
    /// Host name or IP literal (IPv6 without brackets).
    host: String,
    /// The port; 0 picks a free one.
    port: u16,
}

impl HttpAddr {
    /// Parses `PORT`, `HOST:PORT` or `[IPv6]:PORT`.
    ///
    /// ```
    /// let a = polos::metrics::HttpAddr::parse("4280").unwrap();
    /// assert_eq!(a.to_string(), "127.0.0.1:4280");
    /// assert!(polos::metrics::HttpAddr::parse("0.0.0.0:http").is_err());
    /// ```
    pub fn parse(text: &str) -> Result<HttpAddr, HttpError> {
        let bad = |reason: &str| HttpError::BadAddr {
            addr: text.to_string(),
            reason: reason.to_string(),
        };
        let text = text.trim();
        let (host, port) = match text.rsplit_once(':') {
            None => ("127.0.0.1", text),
            Some((host, port)) => (host.trim_start_matches('[').trim_end_matches(']'), port),
        };
        if host.is_empty() {
            return Err(bad("the host is empty"));
        }
        let port = port
            .parse::<u16>()
            .map_err(|_| bad("the port is not a number from 0 to 65535"))?;
        Ok(HttpAddr {
            host: host.to_string(),
            port,
        })
    }

    /// The same host on another port.
    pub fn with_port(&self, port: u16) -> HttpAddr {
        HttpAddr {
            host: self.host.clone(),
            port,
        }
    }

    /// The port (0 = any free one).
    pub fn port(&self) -> u16 {
        self.port
    }
}

impl std::fmt::Display for HttpAddr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.host.contains(':') {
            write!(f, "[{}]:{}", self.host, self.port)
        } else {
            write!(f, "{}:{}", self.host, self.port)
        }
    }
}

/// Binds `addr`. An address other machines can reach needs a non-empty `token`: without one,
/// anyone on the network could pause, trigger and delete schedules.
pub async fn bind(addr: &HttpAddr, token: Option<&str>) -> Result<TcpListener, HttpError> {
    let text = addr.to_string();
    let resolved: Vec<SocketAddr> = tokio::net::lookup_host((addr.host.as_str(), addr.port))
        .await
        .map_err(|e| HttpError::BadAddr {
            addr: text.clone(),
            reason: format!("cannot resolve the host: {e}"),
        })?
        .collect();
    let has_token = token.is_some_and(|t| !t.is_empty());
    if !has_token && (resolved.is_empty() || resolved.iter().any(|a| !a.ip().is_loopback())) {
        return Err(HttpError::TokenRequired { addr: text });
    }
    TcpListener::bind(resolved.as_slice())
        .await
        .map_err(|source| HttpError::Bind { addr: text, source })
}
