//! Server URLs with credentials in them (`nats://user:password@host:4222`, `nats://token@host`):
//! taking the credentials out before connecting, and showing URLs without their secrets.
//!
//! async-nats 0.51 ignores credentials in a URL (the server then answers "authorization
//! violation"), and every error or log line that prints a URL would print the password. So
//! credentials are split off once, here, and only [`redact`]ed URLs are ever displayed.

use std::str::FromStr;

use async_nats::ServerAddr;

/// Credentials found in a URL.
#[derive(Clone, PartialEq, Eq)]
pub enum UrlAuth {
    /// `nats://user:password@host`.
    UserPassword {
        /// The user, percent-decoded.
        user: String,
        /// The password, percent-decoded.
        password: String,
    },
    /// `nats://token@host`: a user part without a password is a token, as in the NATS tools.
    Token(String),
}

impl std::fmt::Debug for UrlAuth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            UrlAuth::UserPassword { user, .. } => write!(f, "UserPassword({user:?}, ***)"),
            UrlAuth::Token(_) => f.write_str("Token(***)"),
        }
    }
}

/// A URL that is not a NATS server address.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{url} is not a NATS server URL: {reason}; write it as nats://host:4222 (credentials as nats://user:password@host:4222)")]
pub struct BadUrl {
    /// The URL with its credentials masked.
    pub url: String,
    /// What is wrong with it.
    pub reason: String,
}

/// Splits `url` into a server address without credentials and the credentials it carried.
pub fn split_credentials(url: &str) -> Result<(ServerAddr, Option<UrlAuth>), BadUrl> {
    let bad = |reason: String| BadUrl {
        url: redact(url),
        reason,
    };
    // The parser's own message may quote the input; ours names the masked URL instead.
    let addr = ServerAddr::from_str(url).map_err(|e| bad(scrub(&e.to_string(), url)))?;
    let auth = match (addr.username(), addr.password()) {
        (Some(user), Some(password)) => Some(UrlAuth::UserPassword {
            user: percent_decode(user),
            password: percent_decode(password),
        }),
        (Some(token), None) => Some(UrlAuth::Token(percent_decode(token))),
        (None, Some(password)) => Some(UrlAuth::Token(percent_decode(password))),
        (None, None) => None,
    };
    if auth.is_none() {
        return Ok((addr, None));
    }
    let mut plain = addr.into_inner();
    if plain.set_username("").is_err() || plain.set_password(None).is_err() {
        return Err(bad("its credentials cannot be removed".into()));
    }
    let addr = ServerAddr::from_url(plain).map_err(|e| bad(e.to_string()))?;
    Ok((addr, auth))
}

/// `url` with any password or token replaced by `***`: `nats://user:***@host:4222`,
/// `nats://***@host:4222`. Works on text that does not parse as a URL too.
pub fn redact(url: &str) -> String {
    let (scheme, rest) = match url.find("://") {
        Some(i) => url.split_at(i + 3),
        None => ("", url),
    };
    let authority_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let (authority, path) = rest.split_at(authority_end);
    let Some(at) = authority.rfind('@') else {
        return url.to_string();
    };
    let (userinfo, host) = authority.split_at(at);
    let masked = match userinfo.split_once(':') {
        Some((user, _)) => format!("{user}:***"),
        None => "***".to_string(),
    };
    format!("{scheme}{masked}{host}{path}")
}

/// Every URL of a list, redacted and joined with commas (for messages).
pub fn redact_all(urls: &[String]) -> String {
    urls.iter().map(|u| redact(u)).collect::<Vec<_>>().join(",")
}

/// Removes `url`'s secret from `text` (a parser message that may quote its input).
fn scrub(text: &str, url: &str) -> String {
    if url.contains('@') {
        text.replace(url, &redact(url))
    } else {
        text.to_string()
    }
}

/// `%40` → `@` and so on; invalid escapes are kept as written.
fn percent_decode(text: &str) -> String {
    fn hex(b: u8) -> Option<u8> {
        char::from(b)
            .to_digit(16)
            .and_then(|d| u8::try_from(d).ok())
    }
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' && i + 2 < bytes.len() {
            if let (Some(hi), Some(lo)) = (hex(bytes[i + 1]), hex(bytes[i + 2])) {
                out.push(hi * 16 + lo);
                i += 3;
                continue;
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redacts_passwords_and_tokens() {
        assert_eq!(
            redact("nats://admin:s3cret@127.0.0.1:4222"),
            "nats://admin:***@127.0.0.1:4222"
        );
        assert_eq!(redact("nats://t0ken@host:4222"), "nats://***@host:4222");
        assert_eq!(redact("tls://u:p@h/x"), "tls://u:***@h/x");
        assert_eq!(redact("u:p@h:4222"), "u:***@h:4222");
        assert_eq!(redact("nats://host:4222"), "nats://host:4222");
        // A password containing `@` (unescaped): everything before the last `@` is masked.
        assert_eq!(redact("nats://u:p@ss@h"), "nats://u:***@h");
        assert_eq!(
            redact_all(&["nats://a:b@h1".into(), "nats://h2".into()]),
            "nats://a:***@h1,nats://h2"
        );
    }

    #[test]
    fn splits_credentials_off_the_address() {
        let (addr, auth) = split_credentials("nats://admin:p%40ss%3Aword@127.0.0.1:4222").unwrap();
        assert_eq!(addr.as_url_str(), "nats://127.0.0.1:4222");
        assert_eq!(
            auth,
            Some(UrlAuth::UserPassword {
                user: "admin".into(),
                password: "p@ss:word".into()
            })
        );
        let (addr, auth) = split_credentials("nats://t0ken@localhost:4222").unwrap();
        assert_eq!(addr.as_url_str(), "nats://localhost:4222");
        assert_eq!(auth, Some(UrlAuth::Token("t0ken".into())));
        let (addr, auth) = split_credentials("127.0.0.1:4222").unwrap();
        assert_eq!(addr.port(), 4222);
        assert_eq!(auth, None);
    }

    #[test]
    fn a_bad_url_error_does_not_repeat_its_password() {
        let e = split_credentials("http://admin:hunter2@host:4222").unwrap_err();
        let text = e.to_string();
        assert!(!text.contains("hunter2"), "{text}");
        assert!(text.contains("http://admin:***@host:4222"), "{text}");
    }

    #[test]
    fn debug_hides_url_secrets() {
        let auth = UrlAuth::UserPassword {
            user: "u".into(),
            password: "hunter2".into(),
        };
        assert!(!format!("{auth:?}").contains("hunter2"));
        assert!(!format!("{:?}", UrlAuth::Token("hunter2".into())).contains("hunter2"));
    }

    #[test]
    fn percent_decoding_keeps_bad_escapes() {
        assert_eq!(percent_decode("a%41b"), "aAb");
        assert_eq!(percent_decode("100%"), "100%");
        assert_eq!(percent_decode("%zz"), "%zz");
    }
}
