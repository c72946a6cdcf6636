//! CLIP for training on candle.
//!
//! - [`config`]: model geometry from presets, Hugging Face or open_clip configs;
//! - [`model`]: both towers with Hugging Face parameter names, built only from operations
//!   that have a backward pass (see [`nn`]);
//! - [`tokenizer`]: the CLIP byte-pair tokenizer from OpenAI's merges file;
//! - [`augment`]: training augmentation and CLIP normalization;
//! - [`chunk`]: sentence splitting and word-limited caption chunks;
//! - [`metrics`]: in-batch retrieval ranks and top-k accuracy;
//! - [`loss`]: symmetric InfoNCE, with the PAPERCLIP or the standard temperature and an
//!   optional same-group positives mode;
//! - [`optim`]: AdamW with PyTorch's arithmetic, warm-up schedules, gradient clipping;
//! - [`checkpoint`]: model directories `transformers` can load;
//! - [`rng`]: a seeded generator whose state can be saved for exact resumes.
//!
//! Parity with `transformers.CLIPModel` and PyTorch's AdamW is checked against golden
//! files in `tests/golden/` (see its README for the script that writes them).
#![warn(missing_docs)]

pub mod augment;
pub mod checkpoint;
pub mod chunk;
pub mod config;
pub mod error;
pub mod fused;
pub mod loss;
pub mod metrics;
pub mod model;
pub mod nn;
pub mod optim;
pub mod params;
pub mod rng;
pub mod search;
pub mod tokenizer;

pub use config::ClipConfig;
pub use error::ClipError;
pub use model::ClipModel;
