//! LLM summaries of proposal abstracts under a JSON schema: two short lists, the
//! astrophysical objects and phenomena and the science use cases, which become the caption
//! "objects; use cases".
//!
//! Parts, in the order a summary goes through them:
//! - [`prompt`]: the versioned prompt template, filled with the raw abstract;
//! - [`schema`]: the [`Summary`] type, the JSON Schema generated from it and committed as
//!   `schemas/summary.schema.json`, and the token budget its bounds imply;
//! - [`backend`]: the interface to a language model; [`local`] implements it with a GGUF
//!   model run in this process, [`http`] with OpenAI-compatible servers;
//! - [`validate`] (with [`json_text`]): the checks every output must pass;
//! - [`cache`]: every outcome, keyed by abstract, model, prompt, schema and sampling;
//! - [`stage`]: summaries for many proposals with bounded concurrency, retries and the
//!   cache; [`table`] turns the outcomes into the `summaries` table SQL models read.
//!
//! Invariant: no output becomes a caption without passing [`validate`], and the SHA-256 of
//! the prompt template and of the schema file are part of every cache key and cache row.

pub mod backend;
pub mod cache;
mod error;
pub mod http;
pub mod local;
pub mod prompt;
pub mod stage;
pub mod table;

pub use paperclip_summary::{json_text, schema, validate};

pub use backend::{
    BackendError, Completion, CompletionRequest, FinishReason, Sampling, SummaryBackend,
};
pub use cache::{SummaryCache, SummaryKey, SummaryRecord, SummaryStatus};
pub use error::SummaryError;
pub use schema::Summary;
pub use stage::{ProposalSummary, ProposalText, StageOutcome, StageSettings, Summarizer};
