//! The recovery strategy: what to do after an attempt failed, by error class.

use crate::error::ErrorClass;

/// The engine's next step after a failed attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Recovery {
    /// Retry the same target after backoff, then fail over once retries run out.
    Retry,
    /// Move to the next target at once.
    Failover,
    /// Return the error to the client: another target would fail the same way.
    Fail,
}

/// Returns the default recovery for an error class.
pub fn recovery_for(class: ErrorClass) -> Recovery {
    match class {
        ErrorClass::Network
        | ErrorClass::Timeout
        | ErrorClass::RateLimited
        | ErrorClass::Server
        | ErrorClass::Overloaded => Recovery::Retry,
        ErrorClass::QuotaExhausted
        | ErrorClass::Auth
        | ErrorClass::NotFound
        | ErrorClass::ContextLength
        | ErrorClass::State
        | ErrorClass::Resource => Recovery::Failover,
        ErrorClass::InvalidRequest | ErrorClass::ContentFilter => Recovery::Fail,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn client_errors_fail_at_once() {
        assert_eq!(recovery_for(ErrorClass::InvalidRequest), Recovery::Fail);
        assert_eq!(recovery_for(ErrorClass::Auth), Recovery::Failover);
        assert_eq!(recovery_for(ErrorClass::NotFound), Recovery::Failover);
        assert_eq!(recovery_for(ErrorClass::Overloaded), Recovery::Retry);
        assert_eq!(recovery_for(ErrorClass::RateLimited), Recovery::Retry);
    }
}
