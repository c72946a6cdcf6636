//! Errors of the summary stage that stop it: an unusable prompt template or schema, a
//! cache that cannot be read or written, invalid settings. A single abstract whose summary
//! fails is never an error; it becomes a rejected or failed record (see [`super::validate`]).

use std::path::PathBuf;

use thiserror::Error;

#[derive(Debug, Error)]
pub enum SummaryError {
    #[error("the prompt template {name} is unusable: {problem}")]
    Prompt { name: String, problem: String },

    #[error(transparent)]
    Schema(#[from] paperclip_summary::SchemaError),

    #[error("invalid summary settings: {0}")]
    Settings(String),

    #[error(
        "the summary cache {path} failed: {source}; check the data directory, or move the folder away to start an empty cache"
    )]
    Delta {
        path: PathBuf,
        #[source]
        source: deltalake::DeltaTableError,
    },

    #[error(
        "the summary cache {path} is unreadable: {problem}; move the folder away to start an empty cache"
    )]
    CacheData { path: PathBuf, problem: String },

    #[error("failed to access {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    #[error("query of the summary cache failed: {0}")]
    Query(#[from] datafusion::error::DataFusionError),

    #[error("Arrow operation on summary rows failed: {0}")]
    Arrow(#[from] datafusion::arrow::error::ArrowError),
}
