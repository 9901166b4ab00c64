//! The fault script of a simulated provider: latency, stream shape and the faults to
//! inject, each with a rate and an optional window of request numbers.

use std::time::Duration;

use rand::Rng;
use serde::{Deserialize, Serialize};

/// The behaviour of a simulated provider: latency, response shape and faults.
///
/// ```
/// use adpa_testkit::sim::FaultScript;
///
/// let script: FaultScript = toml::from_str(r#"
///     [latency]
///     fixed = "20ms"
///
///     [[faults]]
///     kind = "status"
///     status = 429
///     retry_after = "2"
///     rate = 0.3
/// "#).unwrap();
/// assert_eq!(script.faults.len(), 1);
/// ```
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct FaultScript {
    /// Seed of the random draws, for runs that repeat exactly; random when absent.
    pub seed: Option<u64>,
    /// Delay before each response starts.
    pub latency: Latency,
    /// Shape of streamed and complete responses.
    pub response: ResponseShape,
    /// Faults, checked in order with one random draw per request: fault `i` is chosen
    /// when the draw falls in its share, so the rates of faults active for a request
    /// should add up to at most 1.
    pub faults: Vec<Fault>,
}

/// Delay before a response starts.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Latency {
    /// A fixed delay.
    #[serde(with = "adpa_resilience::duration")]
    pub fixed: Duration,
    /// Extra delay drawn uniformly from `0..=jitter`.
    #[serde(with = "adpa_resilience::duration")]
    pub jitter: Duration,
}

/// Shape of the responses.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ResponseShape {
    /// Content chunks of a streamed response (after the role chunk).
    pub chunks: u32,
    /// Delay between two streamed chunks.
    #[serde(with = "adpa_resilience::duration")]
    pub chunk_delay: Duration,
}

impl Default for ResponseShape {
    fn default() -> Self {
        Self {
            chunks: 4,
            chunk_delay: Duration::ZERO,
        }
    }
}

/// One fault with when it applies.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Fault {
    /// The fault itself.
    #[serde(flatten)]
    pub kind: FaultKind,
    /// Share of matching requests that get this fault, in `0.0..=1.0`.
    #[serde(default = "always")]
    pub rate: f64,
    /// First request number (counting from 1) the fault applies to.
    #[serde(default)]
    pub from_request: Option<u64>,
    /// Last request number the fault applies to.
    #[serde(default)]
    pub until_request: Option<u64>,
    /// Requests it applies to by kind: `all`, `stream` or `complete`.
    #[serde(default)]
    pub applies_to: AppliesTo,
}

fn always() -> f64 {
    1.0
}

/// The kinds of request a fault applies to.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AppliesTo {
    /// Every request.
    #[default]
    All,
    /// Streamed requests only.
    Stream,
    /// Non-streamed requests only.
    Complete,
}

/// A fault a simulated provider can inject.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum FaultKind {
    /// An error status with the provider's JSON error body.
    Status {
        /// The HTTP status.
        status: u16,
        /// A `Retry-After` header value to send, verbatim.
        #[serde(default)]
        retry_after: Option<String>,
        /// A `retry-after-ms` header value to send.
        #[serde(default)]
        retry_after_ms: Option<u64>,
        /// A body to send instead of the default error body for the status.
        #[serde(default)]
        body: Option<String>,
    },
    /// The connection is reset (TCP RST) after the request is read.
    Reset,
    /// No response at all; the connection stays open until the client closes it.
    Hang,
    /// The response stops after `after_chunks` content chunks (a stream) or after half
    /// the body (a complete response), and the connection stays open.
    Stall {
        /// Content chunks sent before the stall.
        #[serde(default = "one")]
        after_chunks: u32,
    },
    /// A 502 with an HTML page, as a proxy in front of a provider sends it.
    Html502,
    /// A 200 whose JSON body is cut in half.
    TruncatedJson,
    /// A stream that ends cleanly without `data: [DONE]`.
    NoDone,
}

fn one() -> u32 {
    1
}

impl FaultKind {
    /// Returns the label used in the provider's stats.
    pub fn label(&self) -> String {
        match self {
            Self::Status { status, .. } => format!("status_{status}"),
            Self::Reset => "reset".to_owned(),
            Self::Hang => "hang".to_owned(),
            Self::Stall { .. } => "stall".to_owned(),
            Self::Html502 => "html_502".to_owned(),
            Self::TruncatedJson => "truncated_json".to_owned(),
            Self::NoDone => "no_done".to_owned(),
        }
    }
}

impl FaultScript {
    /// Checks rates and windows.
    ///
    /// # Errors
    ///
    /// Returns a message naming the fault by its position.
    pub fn validate(&self) -> Result<(), String> {
        for (index, fault) in self.faults.iter().enumerate() {
            if !(0.0..=1.0).contains(&fault.rate) {
                return Err(format!(
                    "faults[{index}].rate must be in 0.0..=1.0, got {}",
                    fault.rate
                ));
            }
            if let (Some(from), Some(until)) = (fault.from_request, fault.until_request) {
                if from > until {
                    return Err(format!(
                        "faults[{index}]: from_request ({from}) is after until_request ({until})"
                    ));
                }
            }
            if let FaultKind::Status { status, .. } = fault.kind {
                if !(100..=599).contains(&status) {
                    return Err(format!(
                        "faults[{index}].status must be 100..=599, got {status}"
                    ));
                }
            }
        }
        Ok(())
    }

    /// Picks the fault for request number `request` (counting from 1), if any.
    pub fn pick<R: Rng + ?Sized>(
        &self,
        request: u64,
        stream: bool,
        rng: &mut R,
    ) -> Option<&FaultKind> {
        let draw: f64 = rng.random();
        let mut share = 0.0;
        for fault in &self.faults {
            let in_window = fault.from_request.is_none_or(|from| request >= from)
                && fault.until_request.is_none_or(|until| request <= until);
            let kind_matches = match fault.applies_to {
                AppliesTo::All => true,
                AppliesTo::Stream => stream,
                AppliesTo::Complete => !stream,
            };
            if !(in_window && kind_matches) {
                continue;
            }
            share += fault.rate;
            if draw < share {
                return Some(&fault.kind);
            }
        }
        None
    }

    /// Draws the latency of one response.
    pub fn latency<R: Rng + ?Sized>(&self, rng: &mut R) -> Duration {
        let jitter = if self.latency.jitter.is_zero() {
            Duration::ZERO
        } else {
            rng.random_range(Duration::ZERO..=self.latency.jitter)
        };
        self.latency.fixed + jitter
    }
}

#[cfg(test)]
mod tests {
    use rand::rngs::SmallRng;
    use rand::SeedableRng;

    use super::*;

    fn script(text: &str) -> FaultScript {
        let script: FaultScript = toml::from_str(text).unwrap();
        script.validate().unwrap();
        script
    }

    #[test]
    fn full_rate_fault_always_applies() {
        let script = script("[[faults]]\nkind = \"status\"\nstatus = 503\n");
        let mut rng = SmallRng::seed_from_u64(1);
        for request in 1..100 {
            assert!(matches!(
                script.pick(request, false, &mut rng),
                Some(FaultKind::Status { status: 503, .. })
            ));
        }
    }

    #[test]
    fn window_limits_requests() {
        let script = script("[[faults]]\nkind = \"hang\"\nfrom_request = 3\nuntil_request = 4\n");
        let mut rng = SmallRng::seed_from_u64(1);
        let hit: Vec<u64> = (1..=6)
            .filter(|n| script.pick(*n, false, &mut rng).is_some())
            .collect();
        assert_eq!(hit, [3, 4]);
    }

    #[test]
    fn rates_split_requests() {
        let script = script(
            "[[faults]]\nkind = \"reset\"\nrate = 0.25\n[[faults]]\nkind = \"hang\"\nrate = 0.25\n",
        );
        let mut rng = SmallRng::seed_from_u64(9);
        let (mut resets, mut hangs) = (0, 0);
        for request in 1..=10_000 {
            match script.pick(request, false, &mut rng) {
                Some(FaultKind::Reset) => resets += 1,
                Some(FaultKind::Hang) => hangs += 1,
                _ => {}
            }
        }
        assert!((2_200..2_800).contains(&resets), "{resets}");
        assert!((2_200..2_800).contains(&hangs), "{hangs}");
    }

    #[test]
    fn applies_to_filters_by_kind() {
        let script = script("[[faults]]\nkind = \"stall\"\napplies_to = \"stream\"\n");
        let mut rng = SmallRng::seed_from_u64(1);
        assert!(script.pick(1, false, &mut rng).is_none());
        assert_eq!(
            script.pick(1, true, &mut rng),
            Some(&FaultKind::Stall { after_chunks: 1 })
        );
    }

    #[test]
    fn bad_rate_is_named() {
        let script: FaultScript =
            toml::from_str("[[faults]]\nkind = \"reset\"\nrate = 2.0\n").unwrap();
        assert!(script.validate().unwrap_err().contains("faults[0].rate"));
    }

    #[test]
    fn unknown_kind_is_rejected() {
        assert!(toml::from_str::<FaultScript>("[[faults]]\nkind = \"explode\"\n").is_err());
    }
}
