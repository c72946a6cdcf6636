//! The summary of a proposal abstract as a model must return it, and the checks every
//! model output passes before it counts as one.
//!
//! - [`schema`]: the [`Summary`] type, its bounds and the JSON Schema built from them,
//!   the committed schema file and the token budget the schema implies.
//! - [`json_text`]: a strict JSON reader that refuses repeated keys, and a scan of raw
//!   output for control characters and whitespace runs.
//! - [`validate`]: [`OutputChecker`], which turns a model's [`Completion`] into a
//!   [`Summary`] or a [`Rejection`] with a stable reason code.
//!
//! The crate contains no I/O and no model code, so the checks can be fuzzed on their own.

mod completion;
pub mod json_text;
pub mod schema;
pub mod validate;

pub use completion::{Completion, FinishReason};
pub use schema::{SchemaError, SchemaFile, Summary, SummaryField};
pub use validate::{OutputChecker, RejectReason, Rejection};
