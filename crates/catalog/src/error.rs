//! Errors returned by this crate. Problems inside an `abstracts.cat` record are not errors:
//! they become [`crate::CatalogSkip`] entries so one bad record never stops a catalog.

use thiserror::Error;

#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum CatalogError {
    #[error(
        "invalid cycle range {min_cycle}..={max_cycle}: the minimum is greater than the \
         maximum; pass the smaller cycle first"
    )]
    InvalidCycleRange { min_cycle: u32, max_cycle: u32 },

    #[error("unknown caption form '{value}'; expected one of: paper, clean")]
    UnknownCaptionForm { value: String },

    #[error("no '{section}' section found in Phase II file; expected {expected}")]
    Phase2MissingSection {
        section: &'static str,
        expected: &'static str,
    },

    #[error("empty '{section}' section at line {line} of Phase II file; expected {expected}")]
    Phase2EmptySection {
        section: &'static str,
        line: usize,
        expected: &'static str,
    },

    #[error("invalid {field} '{value}' at line {line} of Phase II file; expected {expected}")]
    Phase2InvalidValue {
        field: &'static str,
        value: String,
        line: usize,
        expected: String,
    },
}
