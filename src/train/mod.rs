//! The training stage: fine-tunes CLIP on a published dataset version.
//!
//! Data flow: [`config`] (the TOML file) → [`resolve`] (geometry, weights, vocabulary)
//! → `preflight` (resume compatibility, the run lock, data checks) → [`data`] (shards
//! of one version → augmented, tokenized batches, prefetched) → [`trainer`] (steps,
//! validation) → [`checkpoints`] (Hugging Face model folders plus
//! optimizer state) and [`record`] (the run record and metrics, queryable with SQL).
//! [`report`] holds the options, reports and observer a session exchanges with its caller.
//! The model, loss and optimizer live in the `paperclip-clip` crate.

pub mod checkpoints;
pub mod config;
pub mod data;
pub mod error;
mod preflight;
pub mod record;
pub mod report;
pub mod resolve;
pub mod synthetic;
pub mod tables;
pub mod trainer;

pub use config::TrainConfig;
pub use error::TrainError;
pub use trainer::{TrainObserver, TrainOptions, TrainOutcome, train};
