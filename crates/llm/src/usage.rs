//! Token usage as providers report it.

use serde::{Deserialize, Serialize};

/// Tokens a completion used, in OpenAI's `usage` shape.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Usage {
    /// Tokens of the prompt.
    #[serde(default)]
    pub prompt_tokens: u64,
    /// Tokens of the generated completion.
    #[serde(default)]
    pub completion_tokens: u64,
    /// Sum of both, as the provider reported it.
    #[serde(default)]
    pub total_tokens: u64,
}
