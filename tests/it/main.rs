//! Integration tests, in one binary so DataFusion and Delta are linked once.

mod ballista;
mod cli;
mod clock;
mod crash;
mod e2e;
mod eval;
mod faults;
mod gc;
mod judge;
mod llm_http;
mod object_storage;
mod real_data;
mod refresh;
mod schedule;
mod sql_files;
mod sql_server;
mod summaries;
mod support;
mod synth;
mod train;
mod user_reports;
