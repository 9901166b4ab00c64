//! Serde support for durations written as human strings such as `"500ms"` or `"30s"`.
//!
//! Use it as `#[serde(with = "adpa_resilience::duration")]` on a `Duration` field.

use std::fmt;
use std::time::Duration;

use serde::de::{self, Visitor};
use serde::{Deserializer, Serializer};

/// Parses a human duration such as `"250ms"`, `"30s"`, `"5m"` or `"1h 30m"`.
///
/// # Errors
///
/// Returns a message naming the value and the expected form when it does not parse.
pub fn parse(text: &str) -> Result<Duration, String> {
    humantime::parse_duration(text.trim()).map_err(|err| {
        format!("invalid duration {text:?} ({err}); write it like \"500ms\", \"30s\" or \"5m\"")
    })
}

/// Deserializes a duration from a human string.
///
/// # Errors
///
/// Fails on a number or on a string that is not a duration, with a message that shows
/// the expected form.
pub fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Duration, D::Error> {
    deserializer.deserialize_any(DurationVisitor)
}

/// Serializes a duration as a human string, the form [`deserialize`] reads.
///
/// # Errors
///
/// Only fails when the serializer itself fails.
pub fn serialize<S: Serializer>(value: &Duration, serializer: S) -> Result<S::Ok, S::Error> {
    serializer.collect_str(&humantime::format_duration(*value))
}

struct DurationVisitor;

impl Visitor<'_> for DurationVisitor {
    type Value = Duration;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a duration string such as \"500ms\" or \"30s\"")
    }

    fn visit_str<E: de::Error>(self, value: &str) -> Result<Duration, E> {
        parse(value).map_err(E::custom)
    }

    fn visit_i64<E: de::Error>(self, value: i64) -> Result<Duration, E> {
        Err(E::custom(format!(
            "a duration needs a unit: write \"{value}s\" or \"{value}ms\" instead of {value}"
        )))
    }

    fn visit_u64<E: de::Error>(self, value: u64) -> Result<Duration, E> {
        self.visit_i64(value as i64)
    }

    fn visit_f64<E: de::Error>(self, value: f64) -> Result<Duration, E> {
        Err(E::custom(format!(
            "a duration needs a unit: write \"{value}s\" instead of {value}"
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(serde::Deserialize)]
    struct Holder {
        #[serde(with = "super")]
        value: Duration,
    }

    #[test]
    fn parses_human_strings() {
        assert_eq!(parse("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse("30s"), Ok(Duration::from_secs(30)));
        assert_eq!(parse(" 5m "), Ok(Duration::from_secs(300)));
    }

    #[test]
    fn deserializes_field() {
        let holder: Holder = toml::from_str("value = \"250ms\"").unwrap();
        assert_eq!(holder.value, Duration::from_millis(250));
    }

    #[test]
    fn bare_number_names_the_fix() {
        let err = toml::from_str::<Holder>("value = 30")
            .err()
            .map(|e| e.to_string());
        let message = err.unwrap_or_default();
        assert!(message.contains("\"30s\""), "{message}");
    }

    #[test]
    fn unit_typo_is_rejected() {
        let err = toml::from_str::<Holder>("value = \"30x\"")
            .err()
            .map(|e| e.to_string());
        assert!(err.is_some());
        let err = toml::from_str::<Holder>("value = \"thirty\"")
            .err()
            .map(|e| e.to_string());
        assert!(err.unwrap_or_default().contains("invalid duration"));
    }
}
