//! The main job: read a pipeline file and build a dataset version from the archive.

mod assemble;
pub mod config;
mod ingest;
mod layout;
mod materialize;
mod model_output;
mod publish;
pub mod refresh;
pub mod run;
pub mod skips;
pub mod stages;
pub mod state;
mod summarize;
mod tables;

pub use config::PipelineConfig;
pub use run::{NoProgress, Plan, PlanBasis, Progress, RunOptions, RunReport, check_models, run};
pub use tables::INPUT_TABLES;
