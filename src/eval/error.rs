//! Errors of evaluation, embedding and search.

use std::path::PathBuf;

use paperclip_clip::ClipError;

use crate::train::error::TrainError;

/// An evaluation, embedding or search failure.
#[derive(Debug, thiserror::Error)]
pub enum EvalError {
    /// Opening the dataset, the checkpoint or the vocabulary failed.
    #[error(transparent)]
    Train(#[from] TrainError),
    /// The model failed.
    #[error(transparent)]
    Clip(#[from] ClipError),
    /// A caption could not be tokenized.
    #[error(transparent)]
    Tokenizer(#[from] paperclip_clip::tokenizer::TokenizerError),
    /// A tensor operation failed.
    #[error(transparent)]
    Tensor(#[from] candle_core::Error),
    /// Reading or writing a file failed.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// Writing or reading an embeddings table failed.
    #[error("embeddings table {path}: {message}")]
    Table {
        /// The table's file.
        path: PathBuf,
        /// Description of the problem.
        message: String,
    },
    /// Drawing a plot failed.
    #[error("cannot draw {name}: {message}")]
    Plot {
        /// The plot.
        name: String,
        /// Description of the problem.
        message: String,
    },
    /// An argument or input is unusable; the message names it and the fix.
    #[error("{0}")]
    Invalid(String),
}

/// Wraps an I/O error with its path.
pub(crate) fn io(path: &std::path::Path, source: std::io::Error) -> EvalError {
    EvalError::Io {
        path: path.to_path_buf(),
        source,
    }
}
