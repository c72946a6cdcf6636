//! `paperclip.training_runs` and `paperclip.training_metrics` for `paperclip sql`.
//!
//! The schemas are fixed, so queries work the same with zero, one or many runs.

use std::sync::Arc;

use datafusion::arrow::datatypes::{DataType, Field, Schema};
use datafusion::arrow::json::reader::ReaderBuilder;
use datafusion::datasource::MemTable;
use serde::Serialize;

use super::record::{read_metric_rows, read_run_records};
use crate::error::Result;

fn runs_schema() -> Schema {
    let text = |name: &str, nullable: bool| Field::new(name, DataType::Utf8, nullable);
    let int = |name: &str| Field::new(name, DataType::Int64, false);
    Schema::new(vec![
        text("run_id", false),
        text("status", false),
        text("error", true),
        text("config_path", false),
        text("config_json", false),
        text("config_fingerprint", false),
        text("dataset", false),
        int("dataset_version"),
        text("dataset_fingerprint", false),
        text("code_version", false),
        text("model_config", false),
        text("initial_weights", true),
        int("parameters"),
        text("device", false),
        int("train_samples"),
        int("val_samples"),
        int("steps_done"),
        int("steps_total"),
        text("started_at", false),
        text("updated_at", false),
        text("resumed_from", true),
        text("last_checkpoint", true),
        text("best_checkpoint", true),
    ])
}

fn metrics_schema() -> Schema {
    Schema::new(vec![
        Field::new("run_id", DataType::Utf8, false),
        Field::new("step", DataType::Int64, false),
        Field::new("split", DataType::Utf8, false),
        Field::new("metric", DataType::Utf8, false),
        Field::new("value", DataType::Float64, false),
        Field::new("at", DataType::Utf8, false),
    ])
}

/// Builds a table from rows; a row that does not fit the schema is left out with a
/// warning, so one bad record cannot break every query.
fn table<T: Serialize>(schema: Schema, rows: &[T]) -> Result<Arc<MemTable>> {
    let schema = Arc::new(schema);
    let mut decoder = ReaderBuilder::new(Arc::clone(&schema)).build_decoder()?;
    let mut batches = Vec::new();
    for row in rows {
        if let Err(error) = decoder.serialize(std::slice::from_ref(row)) {
            tracing::warn!(%error, "training record left out of the SQL tables");
            // A failed row leaves the decoder in an unknown state; start a new one.
            decoder = ReaderBuilder::new(Arc::clone(&schema)).build_decoder()?;
            continue;
        }
        if let Some(batch) = decoder.flush()? {
            batches.push(batch);
        }
    }
    let batch = datafusion::arrow::compute::concat_batches(&schema, &batches)?;
    Ok(Arc::new(MemTable::try_new(schema, vec![vec![batch]])?))
}

/// Builds the two tables from `<data dir>/training/`.
pub fn training_tables(data_dir: &std::path::Path) -> Result<[(String, Arc<MemTable>); 2]> {
    Ok([
        (
            "training_runs".to_string(),
            table(runs_schema(), &read_run_records(data_dir))?,
        ),
        (
            "training_metrics".to_string(),
            table(metrics_schema(), &read_metric_rows(data_dir))?,
        ),
    ])
}
