//! Errors of the CLIP crate. Each names the value at fault and what to do about it.

use std::path::PathBuf;

/// Everything that can go wrong while building, loading, running or saving a model.
#[derive(Debug, thiserror::Error)]
pub enum ClipError {
    /// A model config that cannot be used.
    #[error("model config {source_name}: {message}")]
    Config {
        /// The file or preset the config came from.
        source_name: String,
        /// What is wrong and how to fix it.
        message: String,
    },

    /// A preset name that does not exist.
    #[error("unknown model preset {name:?}; use one of {known}, or a config.json path")]
    UnknownPreset {
        /// The name given.
        name: String,
        /// The names that exist.
        known: String,
    },

    /// A file could not be read or written.
    #[error("{}: {message}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// The operating system's message.
        message: String,
    },

    /// A weights file lacks a tensor the model needs.
    #[error(
        "weights file {} has no tensor {name:?}; it does not look like a CLIP checkpoint with \
         Hugging Face tensor names (for example openai/clip-vit-base-patch16's model.safetensors)",
        path.display()
    )]
    MissingTensor {
        /// The weights file.
        path: PathBuf,
        /// The tensor name the model expected.
        name: String,
    },

    /// A tensor in a weights file has another shape than the config implies.
    #[error(
        "weights file {}: tensor {name:?} has shape {found:?} but the model config expects \
         {expected:?}; pass the config.json that belongs to these weights",
        path.display()
    )]
    ShapeMismatch {
        /// The weights file.
        path: PathBuf,
        /// The tensor name.
        name: String,
        /// The shape in the file.
        found: Vec<usize>,
        /// The shape the config gives.
        expected: Vec<usize>,
    },

    /// Inputs that do not fit the model.
    #[error("{0}")]
    Input(String),

    /// A tensor operation failed inside candle.
    #[error("tensor operation failed: {0}")]
    Candle(#[from] candle_core::Error),
}
