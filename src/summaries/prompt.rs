//! The prompt template: a versioned text file (`prompts/summary-v1.txt`) with one
//! placeholder, [`ABSTRACT_PLACEHOLDER`], replaced by the raw abstract.
//!
//! Invariants:
//! - a template contains the placeholder exactly once, because [`PromptTemplate::parse`]
//!   rejects any other template;
//! - rendering is one pass over the template, so braces or placeholder-like text inside an
//!   abstract (the catalog writes `{...}` for parentheses) are copied, never interpreted;
//! - a rendered prompt is at most [`MAX_PROMPT_BYTES`] bytes; a longer one is refused, so
//!   no request can crowd the server's context;
//! - the SHA-256 of the template file is part of every cache key, so editing the file makes
//!   every summary stale. Change wording in a new file (`summary-v2.txt`), not in place.

use sha2::{Digest, Sha256};

use super::error::SummaryError;

/// Path of the current template, relative to the repository root.
pub const PROMPT_PATH: &str = "prompts/summary-v1.txt";
/// The current template, as built into the binary.
pub const PROMPT_TEMPLATE: &str = include_str!("../../prompts/summary-v1.txt");
/// The placeholder the abstract replaces.
pub const ABSTRACT_PLACEHOLDER: &str = "{{abstract}}";
/// Largest rendered prompt, in bytes: the template (under 2 kB) plus an abstract of up to
/// about 14 kB, several times the longest abstract of the catalog samples (2.1 kB).
pub const MAX_PROMPT_BYTES: usize = 16_384;

/// A prompt template with its identity.
#[derive(Debug, Clone)]
pub struct PromptTemplate {
    /// Source of the template (its path), for messages and lineage.
    pub name: String,
    pub text: String,
    /// SHA-256 of the template bytes, hex.
    pub sha256: String,
}

/// Error of an abstract whose prompt would exceed [`MAX_PROMPT_BYTES`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "the prompt for this abstract would be {bytes} bytes, over the limit of {limit_bytes} bytes; the proposal keeps its abstract caption. Shorten the abstract in the catalog to summarize it"
)]
pub struct PromptTooLong {
    pub bytes: usize,
    pub limit_bytes: usize,
}

impl PromptTemplate {
    /// Returns the template's example output: its first line that parses as a summary.
    pub fn example(&self) -> Option<crate::summaries::schema::Summary> {
        self.text
            .lines()
            .find_map(|line| serde_json::from_str(line.trim()).ok())
    }

    /// Returns the template built into the binary.
    pub fn current() -> Self {
        Self::parse(PROMPT_PATH, PROMPT_TEMPLATE).expect("the built-in template is valid")
    }

    /// Checks a template text: the placeholder must occur exactly once.
    pub fn parse(name: &str, text: &str) -> Result<Self, SummaryError> {
        let count = text.matches(ABSTRACT_PLACEHOLDER).count();
        if count != 1 {
            return Err(SummaryError::Prompt {
                name: name.to_string(),
                problem: format!(
                    "it contains the placeholder {ABSTRACT_PLACEHOLDER} {count} times; put it exactly once where the abstract goes"
                ),
            });
        }
        Ok(Self {
            name: name.to_string(),
            text: text.to_string(),
            sha256: hex::encode(Sha256::digest(text.as_bytes())),
        })
    }

    /// Fills the placeholder with `abstract_raw`, unchanged.
    pub fn render(&self, abstract_raw: &str) -> Result<String, PromptTooLong> {
        let bytes = self.text.len() - ABSTRACT_PLACEHOLDER.len() + abstract_raw.len();
        if bytes > MAX_PROMPT_BYTES {
            return Err(PromptTooLong {
                bytes,
                limit_bytes: MAX_PROMPT_BYTES,
            });
        }
        let (before, after) = self
            .text
            .split_once(ABSTRACT_PLACEHOLDER)
            .expect("parse checked the placeholder");
        let mut prompt = String::with_capacity(bytes);
        prompt.push_str(before);
        prompt.push_str(abstract_raw);
        prompt.push_str(after);
        Ok(prompt)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use paperclip_summary::{Completion, FinishReason, OutputChecker, RejectReason, SchemaFile};

    #[test]
    fn current_template_states_the_rules() {
        let template = PromptTemplate::current();
        let text = template.text.to_lowercase();
        for needle in [
            "at most 5",
            "hubble",
            "hst",
            "acronym",
            "cycle numbers",
            "english",
            "80 words",
            "objects_and_phenomena",
            "science_use_cases",
            "json",
        ] {
            assert!(
                text.contains(needle),
                "the template does not mention {needle:?}"
            );
        }
        assert_eq!(template.sha256.len(), 64);
    }

    #[test]
    fn abstract_is_inserted_verbatim_once() {
        let template = PromptTemplate::parse("t", "A: \"{{abstract}}\" end").unwrap();
        let prompt = template.render(" {M 31} and {{abstract}} \n").unwrap();
        assert_eq!(prompt, "A: \" {M 31} and {{abstract}} \n\" end");
    }

    #[test]
    fn template_without_one_placeholder_is_refused() {
        for text in ["no placeholder", "{{abstract}} {{abstract}}"] {
            let error = PromptTemplate::parse("t.txt", text)
                .unwrap_err()
                .to_string();
            assert!(error.contains("t.txt"), "{error}");
            assert!(error.contains("exactly once"), "{error}");
        }
    }

    #[test]
    fn oversized_prompt_is_refused_with_its_size() {
        let template = PromptTemplate::parse("t", "{{abstract}}").unwrap();
        let error = template
            .render(&"x".repeat(MAX_PROMPT_BYTES + 1))
            .unwrap_err();
        assert_eq!(error.bytes, MAX_PROMPT_BYTES + 1);
        assert!(template.render(&"x".repeat(MAX_PROMPT_BYTES)).is_ok());
    }

    #[test]
    fn copying_the_prompt_example_is_rejected() {
        let prompt = PromptTemplate::current();
        let example = prompt.example().expect("the prompt has an example answer");
        let checker = OutputChecker::new(SchemaFile::committed().unwrap())
            .with_example(Some(example.clone()));
        let copied = serde_json::to_string(&example).unwrap();
        let rejection = checker
            .check(&completion(&copied, FinishReason::Stop), 4_800)
            .unwrap_err();
        assert_eq!(rejection.reason, RejectReason::CopiedExample);

        // One item in common with the example is a legitimate answer.
        let own = r#"{"objects_and_phenomena": ["protoplanetary disks", "Orion Nebula Cluster"], "science_use_cases": ["count disks in a young cluster"]}"#;
        assert!(
            checker
                .check(&completion(own, FinishReason::Stop), 4_800)
                .is_ok()
        );
    }

    fn completion(text: &str, finish_reason: FinishReason) -> Completion {
        Completion {
            text: text.to_string(),
            finish_reason,
            prompt_tokens: None,
            completion_tokens: None,
            elapsed_secs: 0.0,
        }
    }
}
