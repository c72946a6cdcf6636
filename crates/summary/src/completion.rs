//! The output of a model backend: the raw text and the reason generation stopped.

use serde::{Deserialize, Serialize};

/// Reason generation stopped.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FinishReason {
    /// The model ended the output itself.
    Stop,
    /// The token budget ran out; the text is cut and never counts as a success.
    Length,
    /// Anything else the backend reported, verbatim.
    Other(String),
}

/// Raw output of a backend.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Completion {
    pub text: String,
    pub finish_reason: FinishReason,
    pub prompt_tokens: Option<u32>,
    pub completion_tokens: Option<u32>,
    pub elapsed_secs: f64,
}
