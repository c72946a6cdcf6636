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
        /// The 1-based step.
        step: u64,
        /// The loss value.
        loss: f64,
        /// Sample keys of the batch.
        keys: String,
    },

    /// The gradients stopped being finite numbers.
    #[error(
        "the gradient norm is {norm} at step {step} (samples {keys}); the run stopped. \
         Check optimizer.eps and optimizer.weight_decay, lower optimizer.lr, or set \
         optimizer.max_grad_norm"
    )]
    NonFiniteGradient {
        /// The 1-based step.
        step: u64,
        /// The global gradient norm.
        norm: f64,
        /// Sample keys of the batch.
        keys: String,
    },

    /// The parameters stopped being finite numbers; the checkpoint was not written.
    #[error(
        "parameter {name} holds a NaN or infinite value after step {step}, so its \
         checkpoint was not written; resume from an earlier checkpoint with a lower \
         optimizer.lr"
    )]
    NonFiniteParameter {
        /// The step after which the check ran.
        step: u64,
        /// The first parameter found.
        name: String,
    },

    /// A stop signal (Ctrl-C, SIGTERM) ended the run.
    #[error(
        "training stopped by a signal after step {step}{}",
        checkpoint.as_ref().map_or(String::new(), |dir| format!("; resume with --resume {}", dir.display()))
    )]
    Interrupted {
        /// Steps completed.
        step: u64,
        /// The checkpoint to resume from.
        checkpoint: Option<PathBuf>,
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
