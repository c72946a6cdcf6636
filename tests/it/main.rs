//! Integration tests, in one binary so DataFusion and Delta are linked once.

mod cli;
mod crash;
mod e2e;
mod real_data;
mod sql_files;
mod support;
