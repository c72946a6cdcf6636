//! LLM summaries of proposal abstracts under a JSON schema: two short lists, the
//! astrophysical objects and phenomena and the science use cases, which become the caption
//! "objects; use cases".

pub mod backend;

pub use backend::{
    BackendError, Completion, CompletionRequest, FinishReason, Sampling, SummaryBackend,
};
