//! The main job: read a pipeline file and build a dataset version from the archive.

mod assemble;
pub mod config;
mod ingest;
mod layout;
mod leftovers;
mod materialize;
mod model_output;
pub mod plan;
pub(crate) mod publish;
pub mod refresh;
pub mod report;
pub mod run;
pub mod skips;
pub mod stages;
pub mod state;
mod summarize;
mod tables;
mod unmatched;

pub use config::PipelineConfig;
pub(crate) use materialize::cluster::image_udf;
pub use plan::{Plan, PlanBasis};
pub use report::RunReport;
pub use run::{NoProgress, Progress, RunOptions, check_models, run};
pub use tables::INPUT_TABLES;
