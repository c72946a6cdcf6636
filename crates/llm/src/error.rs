//! Errors of loading a model and generating with it.

use std::path::PathBuf;

use crate::tokenizer::TokenizerError;

/// Error of the in-process model: loading, running or constraining it.
#[derive(Debug, thiserror::Error)]
pub enum ModelError {
    /// The model file cannot be opened.
    #[error("cannot open the model file {path}: {source}; check the path")]
    Open {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// The model file is not a readable GGUF file.
    #[error(
        "cannot read the model file {path}: {detail}; it may be truncated or not a GGUF file: fetch it again"
    )]
    Read {
        /// The file.
        path: PathBuf,
        /// Description of the failure.
        detail: String,
    },
    /// The file contains a model this crate cannot run.
    #[error(
        "the model's architecture is {found:?}, but the in-process engine runs `gemma3` models only; use a Gemma 3 GGUF file, or an OpenAI-compatible server for other models"
    )]
    UnsupportedArchitecture {
        /// `general.architecture` of the file.
        found: String,
    },
    /// A required metadata key is absent or has the wrong type.
    #[error("the GGUF metadata key {key} is missing or has the wrong type; the file is incomplete")]
    MissingKey {
        /// The key.
        key: String,
    },
    /// A required tensor is absent.
    #[error("the tensor {name} is missing from {path}; the file is incomplete")]
    MissingTensor {
        /// The tensor name.
        name: String,
        /// The file.
        path: PathBuf,
    },
    /// `forward` was called with no token.
    #[error("no token to run the model on")]
    EmptyInput,
    /// The sequence does not fit the positions the model was loaded for.
    #[error(
        "the sequence needs {positions} positions, but the model was loaded for at most {max}; shorten the input or raise the maximum"
    )]
    TooLong {
        /// Positions needed.
        positions: usize,
        /// Positions available.
        max: usize,
    },
    /// The grammar engine rejected the schema or failed while decoding.
    #[error("the output grammar failed: {detail}")]
    Grammar {
        /// llguidance's message.
        detail: String,
    },
    /// A tensor operation failed.
    #[error("tensor computation failed: {0}")]
    Tensor(#[from] candle_core::Error),
    /// Building or using the tokenizer failed.
    #[error(transparent)]
    Tokenizer(#[from] TokenizerError),
    /// The thread pool for the model could not be built.
    #[error("cannot start {threads} model threads: {detail}")]
    Threads {
        /// Threads asked for.
        threads: usize,
        /// rayon's message.
        detail: String,
    },
}
