//! [`MainError`]: what a small program's `main` returns so a failure prints as a sentence.

use std::fmt;

/// Any error, for `fn main() -> Result<(), MainError>`: `?` converts every error type, and
/// when `main` returns it Rust prints `Error: <message>` (its `Display`) instead of a `Debug`
/// dump of nested enums.
///
/// ```no_run
/// #[tokio::main]
/// async fn main() -> Result<(), polos::client::MainError> {
///     let (_config, _nats) = polos::client::connect_from_env().await?;
///     Ok(())
/// }
/// ```
pub struct MainError(Box<dyn std::error::Error + Send + Sync>);

// Deliberately no `impl Error for MainError`: it would overlap with this blanket `From`.
impl<E: std::error::Error + Send + Sync + 'static> From<E> for MainError {
    fn from(e: E) -> Self {
        MainError(Box::new(e))
    }
}

impl fmt::Debug for MainError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // polos errors already carry their cause in the message; other errors get it appended.
        write!(f, "{}", self.0)?;
        let own = self.0.to_string();
        let mut source = self.0.source();
        while let Some(cause) = source {
            let text = cause.to_string();
            if !own.contains(&text) {
                write!(f, ": {text}")?;
            }
            source = cause.source();
        }
        Ok(())
    }
}

impl fmt::Display for MainError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self, f)
    }
}
