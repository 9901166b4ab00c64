use std::fmt;

/// A setting that is out of its valid range.
///
/// `field` is the setting's name as written in the config (`max_delay`), so callers can
/// prefix it with the table path they read it from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    /// Name of the invalid setting.
    pub field: &'static str,
    /// Description of the problem and of a valid value.
    pub reason: String,
}

impl ConfigError {
    pub(crate) fn new(field: &'static str, reason: impl Into<String>) -> Self {
        Self {
            field,
            reason: reason.into(),
        }
    }
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.field, self.reason)
    }
}

impl std::error::Error for ConfigError {}
