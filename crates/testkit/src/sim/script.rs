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
    /// A request quota the provider announces in `x-ratelimit-*` headers and enforces
    /// with 429, like OpenAI's per-minute limits.
    pub quota: Option<QuotaScript>,
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
    /// Extra delay per request in flight beyond `capacity` when the request arrives,
    /// itself included: a provider that slows down as it queues work.
    #[serde(with = "adpa_resilience::duration")]
    pub per_in_flight: Duration,
    /// Requests in flight the provider serves without slowing down; 0 counts as 1.
    pub capacity: u32,
}

/// A request quota per window.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct QuotaScript {
    /// Requests allowed per window.
    pub requests: u64,
    /// Length of a window; the count starts again at each window.
    #[serde(with = "adpa_resilience::duration")]
    pub window: Duration,
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
    /// Writes a whole healthy stream as one HTTP chunk, as a provider that buffers its
    /// events does; `chunk_delay` then has no effect.
    pub one_chunk: bool,
}

impl Default for ResponseShape {
    fn default() -> Self {
        Self {
            chunks: 4,
            chunk_delay: Duration::ZERO,
            one_chunk: false,
        }
    }
}

/// One fault with when it applies.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(try_from = "FaultRepr", into = "FaultRepr")]
pub struct Fault {
    /// The fault itself.
    pub kind: FaultKind,
    /// Share of matching requests that get this fault, in `0.0..=1.0`.
    pub rate: f64,
    /// First request number (counting from 1) the fault applies to.
    pub from_request: Option<u64>,
    /// Last request number the fault applies to.
    pub until_request: Option<u64>,
    /// Requests it applies to by kind: `all`, `stream` or `complete`.
    pub applies_to: AppliesTo,
    /// The `model` a request must name for the fault to apply; any model when absent.
    pub model: Option<String>,
}

impl Fault {
    /// Creates a fault that applies to every request.
    pub fn always(kind: FaultKind) -> Self {
        Self {
            kind,
            rate: 1.0,
            from_request: None,
            until_request: None,
            applies_to: AppliesTo::All,
            model: None,
        }
    }
}

/// The written form of a [`Fault`]: one flat table, so that unknown keys are rejected
/// (serde cannot reject them through a flattened enum).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct FaultRepr {
    kind: FaultName,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    status: Option<u16>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    retry_after: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    retry_after_ms: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    body: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    after_chunks: Option<u32>,
    #[serde(default = "always")]
    rate: f64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    from_request: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    until_request: Option<u64>,
    #[serde(default)]
    applies_to: AppliesTo,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    model: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
enum FaultName {
    Status,
    Reset,
    Hang,
    Stall,
    Html502,
    TruncatedJson,
    NoDone,
    StreamError,
}

impl TryFrom<FaultRepr> for Fault {
    type Error = String;

    fn try_from(repr: FaultRepr) -> Result<Self, String> {
        let only_for = |set: bool, key: &str, kind: &str| {
            if set {
                Err(format!("`{key}` only applies to kind = \"{kind}\""))
            } else {
                Ok(())
            }
        };
        if repr.kind != FaultName::Status {
            only_for(repr.status.is_some(), "status", "status")?;
            only_for(repr.retry_after.is_some(), "retry_after", "status")?;
            only_for(repr.retry_after_ms.is_some(), "retry_after_ms", "status")?;
            only_for(repr.body.is_some(), "body", "status")?;
        }
        if !matches!(repr.kind, FaultName::Stall | FaultName::StreamError) {
            only_for(
                repr.after_chunks.is_some(),
                "after_chunks",
                "stall\" or \"stream_error",
            )?;
        }

        let kind = match repr.kind {
            FaultName::Status => FaultKind::Status {
                status: repr
                    .status
                    .ok_or("kind = \"status\" needs `status`, such as 503")?,
                retry_after: repr.retry_after,
                retry_after_ms: repr.retry_after_ms,
                body: repr.body,
            },
            FaultName::Reset => FaultKind::Reset,
            FaultName::Hang => FaultKind::Hang,
            FaultName::Stall => FaultKind::Stall {
                after_chunks: repr.after_chunks.unwrap_or(1),
            },
            FaultName::Html502 => FaultKind::Html502,
            FaultName::TruncatedJson => FaultKind::TruncatedJson,
            FaultName::NoDone => FaultKind::NoDone,
            FaultName::StreamError => FaultKind::StreamError {
                after_chunks: repr.after_chunks.unwrap_or(1),
            },
        };
        Ok(Self {
            kind,
            rate: repr.rate,
            from_request: repr.from_request,
            until_request: repr.until_request,
            applies_to: repr.applies_to,
            model: repr.model,
        })
    }
}

impl From<Fault> for FaultRepr {
    fn from(fault: Fault) -> Self {
        let mut repr = FaultRepr {
            kind: FaultName::Reset,
            status: None,
            retry_after: None,
            retry_after_ms: None,
            body: None,
            after_chunks: None,
            rate: fault.rate,
            from_request: fault.from_request,
            until_request: fault.until_request,
            applies_to: fault.applies_to,
            model: fault.model,
        };
        repr.kind = match fault.kind {
            FaultKind::Status {
                status,
                retry_after,
                retry_after_ms,
                body,
            } => {
                repr.status = Some(status);
                repr.retry_after = retry_after;
                repr.retry_after_ms = retry_after_ms;
                repr.body = body;
                FaultName::Status
            }
            FaultKind::Reset => FaultName::Reset,
            FaultKind::Hang => FaultName::Hang,
            FaultKind::Stall { after_chunks } => {
                repr.after_chunks = Some(after_chunks);
                FaultName::Stall
            }
            FaultKind::Html502 => FaultName::Html502,
            FaultKind::TruncatedJson => FaultName::TruncatedJson,
            FaultKind::NoDone => FaultName::NoDone,
            FaultKind::StreamError { after_chunks } => {
                repr.after_chunks = Some(after_chunks);
                FaultName::StreamError
            }
        };
        repr
    }
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
#[derive(Debug, Clone, PartialEq)]
pub enum FaultKind {
    /// An error status with the provider's JSON error body.
    Status {
        /// The HTTP status.
        status: u16,
        /// A `Retry-After` header value to send, verbatim.
        retry_after: Option<String>,
        /// A `retry-after-ms` header value to send.
        retry_after_ms: Option<u64>,
        /// A body to send instead of the default error body for the status.
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
        after_chunks: u32,
    },
    /// A 502 with an HTML page, as a proxy in front of a provider sends it.
    Html502,
    /// A 200 whose JSON body is cut in half.
    TruncatedJson,
    /// A stream that ends cleanly without its end marker (`data: [DONE]`, Anthropic's
    /// `message_stop`, Gemini's chunk with a `finishReason`).
    NoDone,
    /// A stream that sends `after_chunks` content chunks, then the provider's in-stream
    /// error event, and ends.
    StreamError {
        /// Content chunks sent before the error.
        after_chunks: u32,
    },
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
            Self::StreamError { .. } => "stream_error".to_owned(),
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

    /// Picks the fault for request number `request` (counting from 1) for `model`, if
    /// any.
    pub fn pick<R: Rng + ?Sized>(
        &self,
        request: u64,
        model: &str,
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
            let model_matches = fault.model.as_deref().is_none_or(|wanted| wanted == model);
            if !(in_window && kind_matches && model_matches) {
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
                script.pick(request, "m", false, &mut rng),
                Some(FaultKind::Status { status: 503, .. })
            ));
        }
    }

    #[test]
    fn window_limits_requests() {
        let script = script("[[faults]]\nkind = \"hang\"\nfrom_request = 3\nuntil_request = 4\n");
        let mut rng = SmallRng::seed_from_u64(1);
        let hit: Vec<u64> = (1..=6)
            .filter(|n| script.pick(*n, "m", false, &mut rng).is_some())
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
            match script.pick(request, "m", false, &mut rng) {
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
        assert!(script.pick(1, "m", false, &mut rng).is_none());
        assert_eq!(
            script.pick(1, "m", true, &mut rng),
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
    fn model_filter_limits_fault() {
        let script = script("[[faults]]\nkind = \"reset\"\nmodel = \"gpt-4\"\n");
        let mut rng = SmallRng::seed_from_u64(1);
        assert_eq!(
            script.pick(1, "gpt-4", false, &mut rng),
            Some(&FaultKind::Reset)
        );
        assert_eq!(script.pick(2, "llama2", false, &mut rng), None);
    }

    #[test]
    fn misplaced_keys_are_rejected() {
        let unknown = toml::from_str::<FaultScript>("[[faults]]\nkind = \"reset\"\nstatuss = 1\n");
        assert!(unknown
            .unwrap_err()
            .to_string()
            .contains("unknown field `statuss`"));
        let misplaced =
            toml::from_str::<FaultScript>("[[faults]]\nkind = \"reset\"\nstatus = 503\n");
        assert!(misplaced
            .unwrap_err()
            .to_string()
            .contains("only applies to kind = \"status\""));
        let missing = toml::from_str::<FaultScript>("[[faults]]\nkind = \"status\"\n");
        assert!(missing.unwrap_err().to_string().contains("needs `status`"));
    }

    #[test]
    fn json_round_trip() {
        let script = script("[[faults]]\nkind = \"stall\"\nafter_chunks = 2\nrate = 0.5\n[[faults]]\nkind = \"status\"\nstatus = 429\nretry_after = \"1\"\n");
        let json = serde_json::to_string(&script).unwrap();
        let back: FaultScript = serde_json::from_str(&json).unwrap();
        assert_eq!(back, script);
    }

    #[test]
    fn unknown_kind_is_rejected() {
        assert!(toml::from_str::<FaultScript>("[[faults]]\nkind = \"explode\"\n").is_err());
    }
}
