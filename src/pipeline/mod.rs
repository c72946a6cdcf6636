//! The main job: read a pipeline file and build a dataset version from the archive.

mod assemble;
pub mod config;
mod ingest;
mod materialize;
mod model_output;
mod publish;
pub mod run;
pub mod skips;
mod tables;

pub use config::PipelineConfig;
pub use run::{NoProgress, Progress, RunOptions, RunReport, check_models, run};
pub use tables::INPUT_TABLES;
