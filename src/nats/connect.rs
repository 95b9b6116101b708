//! Connecting to NATS with the configured servers and credentials.
//!
//! Credentials come from `[nats]` (inline, or from `*_file` settings) or from the URLs
//! themselves. No error or log line ever holds a secret: URLs are shown through
//! [`super::redact`], secret files are named by path, and the server's own auth error is
//! passed on as it is (it never repeats what was sent).

use std::path::{Path, PathBuf};
use std::time::Duration;

use async_nats::ServerAddr;
use thiserror::Error;

use super::denied::Recorder;
use super::url::{redact_all, split_credentials, BadUrl, UrlAuth};
use crate::config::NatsConfig;

/// The connection could not be made.
#[derive(Debug, Error)]
pub enum ConnectError {
    /// The creds file could not be read.
    #[error("cannot read NATS creds file {path}: {source}")]
    Creds {
        /// The configured path.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// A `*_file` secret could not be read.
    #[error("cannot read {setting} {path}: {source}")]
    SecretFile {
        /// The setting naming the file (`nats.password_file`).
        setting: &'static str,
        /// The configured path.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// A secret is configured twice, or half of a pair is missing.
    #[error("{0}")]
    Settings(String),
    /// A server URL does not parse.
    #[error(transparent)]
    Url(#[from] BadUrl),
    /// No server answered, or it refused the credentials.
    #[error("cannot connect to NATS at {urls}: {source}. {hint}")]
    Unreachable {
        /// The URLs that were tried, credentials masked.
        urls: String,
        /// The client's error.
        source: async_nats::ConnectError,
        /// What to check, depending on the error.
        hint: &'static str,
    },
}

/// Connects with every auth option of `[nats]` (user/password, token, nkey, creds, TLS, and
/// credentials written into the URL), and watches the connection for permission violations
/// (see [`super::Denials`]).
///
/// ```no_run
/// # async fn f() -> Result<(), Box<dyn std::error::Error>> {
/// let config = polos::config::Config::from_env()?;
/// let client = polos::nats::connect(&config.nats).await?;
/// # Ok(()) }
/// ```
pub async fn connect(config: &NatsConfig) -> Result<async_nats::Client, ConnectError> {
    let urls = config.server_urls();
    let (addrs, url_auth) = split_all(&urls)?;
    let mut options = async_nats::ConnectOptions::new()
        .name(&config.name)
        .connection_timeout(Duration::from_secs(config.connect_timeout_secs.max(1)));
    let user = config.user.clone();
    let password = secret(
        config.password.as_deref(),
        config.password_file.as_deref(),
        "nats.password",
        "nats.password_file",
    )?;
    let token = secret(
        config.token.as_deref(),
        config.token_file.as_deref(),
        "nats.token",
        "nats.token_file",
    )?;
    let seed = secret(
        config.nkey_seed.as_deref(),
        config.nkey_seed_file.as_deref(),
        "nats.nkey_seed",
        "nats.nkey_seed_file",
    )?;
    let configured = user.is_some() || password.is_some() || token.is_some();
    let login = match (&user, &url_auth) {
        (Some(user), _) => Some(user.clone()),
        (None, Some(UrlAuth::UserPassword { user, .. })) if !configured => Some(user.clone()),
        _ => None,
    };
    let inbox = inbox_prefix(&config.inbox_prefix, login.as_deref())?;
    let recorder = Recorder::new(&inbox);
    let events = recorder.clone();
    options = options
        .custom_inbox_prefix(inbox)
        .event_callback(move |event| {
            // Only refusals are taken from the events; the rest keeps async-nats' own logging.
            events.on_event(&event);
            async {}
        });
    match (user, password) {
        (Some(user), Some(password)) => {
            options = options.user_and_password(user, password);
        }
        (Some(_), None) => {
            return Err(ConnectError::Settings(
                "nats.user is set without a password; set nats.password or nats.password_file (POLOS_NATS__PASSWORD_FILE)".into(),
            ))
        }
        (None, Some(_)) => {
            return Err(ConnectError::Settings(
                "a NATS password is set without nats.user; set the user (POLOS_NATS__USER)".into(),
            ))
        }
        (None, None) => {}
    }
    if let Some(token) = token {
        options = options.token(token);
    }
    match url_auth {
        // Settings in `[nats]` are explicit and win over what a URL carries.
        Some(_) if configured => {}
        Some(UrlAuth::UserPassword { user, password }) => {
            options = options.user_and_password(user, password);
        }
        Some(UrlAuth::Token(token)) => options = options.token(token),
        None => {}
    }
    if let Some(seed) = seed {
        options = options.nkey(seed);
    }
    if let Some(path) = &config.creds_file {
        options = options
            .credentials_file(path)
            .await
            .map_err(|source| ConnectError::Creds {
                path: path.clone(),
                source: without_contents(source),
            })?;
    }
    if config.tls.required {
        options = options.require_tls(true);
    }
    if let Some(ca) = &config.tls.ca {
        options = options.add_root_certificates(ca.clone());
    }
    match (&config.tls.cert, &config.tls.key) {
        (Some(cert), Some(key)) => {
            options = options.add_client_certificate(cert.clone(), key.clone());
        }
        (None, None) => {}
        _ => {
            return Err(ConnectError::Settings(
                "mutual TLS needs both nats.tls.cert and nats.tls.key".into(),
            ))
        }
    }
    match options.connect(addrs).await {
        Ok(client) => {
            recorder.attach(&client);
            Ok(client)
        }
        Err(source) => Err(ConnectError::Unreachable {
            urls: redact_all(&urls),
            hint: hint(&source),
            source,
        }),
    }
}

/// The reply-subject prefix: the configured one, else `_INBOX.<user>` for a user whose name is a
/// plain subject, else `_INBOX`. A per-user prefix still matches the common `_INBOX.>`
/// permission, and lets a server confine each user to its own replies (`_INBOX.<user>.>`):
/// without it any user allowed `_INBOX.>` can read every other user's replies.
pub fn inbox_prefix(configured: &str, user: Option<&str>) -> Result<String, ConnectError> {
    let plain = |s: &str| {
        !s.is_empty()
            && s.split('.').all(|token| {
                !token.is_empty()
                    && token != "*"
                    && token != ">"
                    && !token.chars().any(|c| c.is_whitespace() || c.is_control())
            })
    };
    if !configured.is_empty() {
        if !plain(configured) {
            return Err(ConnectError::Settings(format!(
                "nats.inbox_prefix {configured:?} is not a plain subject; use tokens without spaces, `*` or `>`, e.g. _INBOX.my-service"
            )));
        }
        return Ok(configured.to_string());
    }
    // One token only: user `a` allowed `_INBOX.a.>` must not receive the replies of user `a.b`.
    Ok(match user {
        Some(user) if plain(user) && !user.contains('.') => format!("{DEFAULT_INBOX}.{user}"),
        _ => DEFAULT_INBOX.to_string(),
    })
}

/// NATS's usual reply-subject prefix.
pub const DEFAULT_INBOX: &str = "_INBOX";

/// Every URL without its credentials, and the one set of credentials they carry.
fn split_all(urls: &[String]) -> Result<(Vec<ServerAddr>, Option<UrlAuth>), ConnectError> {
    let mut addrs = Vec::with_capacity(urls.len());
    let mut found: Option<UrlAuth> = None;
    for url in urls {
        let (addr, auth) = split_credentials(url)?;
        if let Some(auth) = auth {
            if found.as_ref().is_some_and(|f| *f != auth) {
                return Err(ConnectError::Settings(format!(
                    "the NATS URLs {} carry different credentials; one connection logs in as one user, so write the same credentials in each URL or set nats.user/nats.password",
                    redact_all(urls)
                )));
            }
            found = Some(auth);
        }
        addrs.push(addr);
    }
    Ok((addrs, found))
}

/// The value of a secret set inline or in a file (not both).
fn secret(
    inline: Option<&str>,
    file: Option<&Path>,
    inline_name: &'static str,
    file_name: &'static str,
) -> Result<Option<String>, ConnectError> {
    match (inline, file) {
        (Some(_), Some(_)) => Err(ConnectError::Settings(format!(
            "both {inline_name} and {file_name} are set; keep one"
        ))),
        (Some(value), None) => Ok(Some(value.to_string())),
        (None, Some(path)) => {
            let text =
                std::fs::read_to_string(path).map_err(|source| ConnectError::SecretFile {
                    setting: file_name,
                    path: path.to_path_buf(),
                    source: without_contents(source),
                })?;
            let value = text.trim_end_matches(['\n', '\r']).to_string();
            if value.is_empty() {
                return Err(ConnectError::Settings(format!(
                    "{file_name} {} is empty",
                    path.display()
                )));
            }
            Ok(Some(value))
        }
        (None, None) => Ok(None),
    }
}

/// An I/O error reduced to its kind: errors about a file's contents (a malformed creds file)
/// may quote them, and those contents are secret.
fn without_contents(e: std::io::Error) -> std::io::Error {
    match e.kind() {
        std::io::ErrorKind::NotFound | std::io::ErrorKind::PermissionDenied => e,
        kind => std::io::Error::new(
            kind,
            "the file could not be used (its contents are not shown)",
        ),
    }
}

/// What to check for a failed connection.
fn hint(e: &async_nats::ConnectError) -> &'static str {
    use async_nats::ConnectErrorKind as K;
    // rustls' verdict (an unknown issuer, a name mismatch) arrives as an I/O error.
    let text = e.to_string().to_lowercase();
    if text.contains("certificate") || text.contains("tls") || text.contains("handshake") {
        return "The TLS handshake failed: check nats.tls.ca (the CA that signed the server's certificate) and, for mutual TLS, nats.tls.cert and nats.tls.key";
    }
    match e.kind() {
        K::AuthorizationViolation | K::Authentication => {
            "The server refused the credentials: check nats.user/nats.password (or the *_file settings), nats.token, nats.nkey_seed or nats.creds_file, or the credentials in the URL"
        }
        K::Tls => {
            "The TLS handshake failed: check nats.tls.ca (the CA that signed the server's certificate) and, for mutual TLS, nats.tls.cert and nats.tls.key"
        }
        _ => {
            "Is a server running there? Start one with `polos dev`, or set nats.url / POLOS_NATS__URL to your server"
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replies_come_to_the_users_own_inbox() {
        assert_eq!(
            inbox_prefix("", Some("polos-client")).unwrap(),
            "_INBOX.polos-client"
        );
        assert_eq!(inbox_prefix("", None).unwrap(), "_INBOX");
        assert_eq!(
            inbox_prefix("", Some("a.b")).unwrap(),
            "_INBOX",
            "one token only"
        );
        assert_eq!(inbox_prefix("", Some("a b")).unwrap(), "_INBOX");
        assert_eq!(inbox_prefix("_R.svc", Some("u")).unwrap(), "_R.svc");
        for bad in ["_INBOX.>", "a..b", "a b", "_INBOX.*"] {
            assert!(inbox_prefix(bad, None).is_err(), "{bad}");
        }
    }
}
