//! [`Secret`]: a setting that is never printed.

use std::fmt;

use serde::Deserialize;

/// A string that must never reach a log: a password, an API key, a signing
/// key. `Debug` and `Display` print `[redacted]`; [`Secret::expose`] is the
/// one, greppable, way to read it. It is deliberately not `Serialize`.
#[derive(Clone, PartialEq, Eq, Deserialize)]
#[serde(transparent)]
pub struct Secret(String);

impl Secret {
    /// Wraps a secret value.
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }

    /// The secret itself, for the one place that needs it (a connection
    /// string, a key comparison).
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// Whether the secret is empty, i.e. not configured.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl From<String> for Secret {
    fn from(value: String) -> Self {
        Self(value)
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[redacted]")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[redacted]")
    }
}
