//! Errors of the training stage; each names the value at fault and the fix.

use std::path::PathBuf;

use thiserror::Error;

/// Everything that stops a training run.
#[derive(Debug, Error)]
pub enum TrainError {
    /// A config file that cannot be used.
    #[error("invalid training config {}: {message}", path.display())]
    Config {
        /// The config file.
        path: PathBuf,
        /// What is wrong.
        message: String,
    },

    /// A file or folder could not be read or written.
    #[error("failed to access {}: {source}", path.display())]
    Io {
        /// The path.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },

    /// The dataset, its version or its samples cannot be used for training.
    #[error("{0}")]
    Data(String),

    /// The model could not be built, loaded or run.
    #[error(transparent)]
    Model(#[from] paperclip_clip::ClipError),

    /// The tokenizer's vocabulary could not be loaded.
    #[error(transparent)]
    Tokenizer(#[from] paperclip_clip::tokenizer::TokenizerError),

    /// The loss stopped being a finite number.
    #[error(
        "the training loss is {loss} at step {step} (samples {keys}); the run stopped. \
         Lower optimizer.lr, set optimizer.max_grad_norm, or check these samples"
    )]
    NonFiniteLoss {
        /// The 0-based step.
        step: u64,
        /// The loss value.
        loss: f64,
        /// Sample keys of the batch.
        keys: String,
    },

    /// A checkpoint that cannot be resumed from.
    #[error("cannot resume from {}: {message}", path.display())]
    Resume {
        /// The checkpoint folder.
        path: PathBuf,
        /// Why.
        message: String,
    },

    /// Reading the dataset failed in the dataset layer.
    #[error(transparent)]
    Dataset(Box<crate::error::PipelineError>),

    /// A tensor operation failed.
    #[error("tensor operation failed: {0}")]
    Candle(#[from] candle_core::Error),
}

impl From<crate::error::PipelineError> for TrainError {
    fn from(error: crate::error::PipelineError) -> Self {
        Self::Dataset(Box::new(error))
    }
}
