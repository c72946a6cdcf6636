//! Checks and normalizes the rows of the samples model before anything is downloaded.
//!
//! Guarantees after [`normalize`]: the required columns exist with canonical types
//! (integers as BIGINT, any string type as VARCHAR), contain no NULL, and `split` is
//! `train` or `val`, so every published row points at a shard that exists.

use std::collections::BTreeSet;

use datafusion::arrow::array::{Array, RecordBatch};
use datafusion::arrow::compute::cast;
use datafusion::arrow::datatypes::{DataType, Field, Schema};

use crate::error::{PipelineError, Result};
use crate::sql::{schema_error, string_column};

/// Split names that have shards.
pub const SPLITS: [&str; 2] = ["train", "val"];

/// Columns the pipeline reads from the samples model, with their canonical types.
const REQUIRED: [(&str, DataType); 6] = [
    ("proposal_id", DataType::Int64),
    ("obs_id", DataType::Utf8),
    ("data_uri", DataType::Utf8),
    ("split", DataType::Utf8),
    ("caption", DataType::Utf8),
    ("caption_form", DataType::Utf8),
];

/// Columns the pipeline reads when present.
const OPTIONAL: [(&str, DataType); 1] = [("size_bytes", DataType::Int64)];

/// Casts required and optional columns to canonical types and rejects unusable rows.
pub fn normalize(batch: RecordBatch, model: &str) -> Result<RecordBatch> {
    let batch = cast_columns(batch, model)?;
    for (column, _) in REQUIRED {
        let nulls = batch.column_by_name(column).map_or(0, |c| c.null_count());
        if nulls > 0 {
            return Err(problem(
                model,
                format!("column {column} is NULL in {nulls} row(s); every sample needs a value"),
            ));
        }
    }
    check_splits(&batch, model)?;
    Ok(batch)
}

fn cast_columns(batch: RecordBatch, model: &str) -> Result<RecordBatch> {
    let schema = batch.schema();
    let mut fields: Vec<Field> = Vec::with_capacity(schema.fields().len());
    let mut columns = Vec::with_capacity(schema.fields().len());

    for (field, column) in schema.fields().iter().zip(batch.columns()) {
        let target = REQUIRED
            .iter()
            .chain(OPTIONAL.iter())
            .find(|(name, _)| name == field.name())
            .map(|(_, data_type)| data_type);
        match target {
            Some(target) if field.data_type() != target => {
                if !castable(field.data_type(), target) {
                    return Err(schema_error(&batch, model, field.name(), &sql_type(target)));
                }
                columns.push(cast(column, target)?);
                fields.push(Field::new(
                    field.name(),
                    target.clone(),
                    field.is_nullable(),
                ));
            }
            _ => {
                columns.push(column.clone());
                fields.push(field.as_ref().clone());
            }
        }
    }
    for (name, data_type) in REQUIRED {
        if schema.field_with_name(name).is_err() {
            return Err(schema_error(&batch, model, name, &sql_type(&data_type)));
        }
    }
    Ok(RecordBatch::try_new(
        std::sync::Arc::new(Schema::new(fields)),
        columns,
    )?)
}

/// Only lossless widenings: any integer to BIGINT, any string type to VARCHAR.
fn castable(from: &DataType, to: &DataType) -> bool {
    match to {
        DataType::Int64 => from.is_integer() && *from != DataType::UInt64,
        DataType::Utf8 => matches!(from, DataType::Utf8View | DataType::LargeUtf8),
        _ => false,
    }
}

fn sql_type(data_type: &DataType) -> String {
    match data_type {
        DataType::Int64 => "BIGINT".to_string(),
        DataType::Utf8 => "VARCHAR".to_string(),
        other => other.to_string(),
    }
}

fn check_splits(batch: &RecordBatch, model: &str) -> Result<()> {
    let splits = string_column(batch, model, "split")?;
    let invalid: BTreeSet<&str> = splits
        .iter()
        .flatten()
        .filter(|value| !SPLITS.contains(value))
        .collect();
    if invalid.is_empty() {
        return Ok(());
    }
    let shown: Vec<String> = invalid.iter().take(5).map(|v| format!("{v:?}")).collect();
    Err(problem(
        model,
        format!(
            "column split has value(s) {}; use 'train' or 'val'",
            shown.join(", ")
        ),
    ))
}

fn problem(model: &str, problem: String) -> PipelineError {
    PipelineError::ModelOutput {
        model: model.to_string(),
        problem,
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use datafusion::arrow::array::{ArrayRef, Int32Array, StringArray, StringViewArray};

    use super::*;

    fn batch(split: &str, proposal: Option<i32>) -> RecordBatch {
        let columns: Vec<(&str, ArrayRef)> = vec![
            ("proposal_id", Arc::new(Int32Array::from(vec![proposal]))),
            ("obs_id", Arc::new(StringArray::from(vec!["o1"]))),
            ("data_uri", Arc::new(StringArray::from(vec!["mast:x"]))),
            ("split", Arc::new(StringArray::from(vec![split]))),
            ("caption", Arc::new(StringViewArray::from(vec!["c"]))),
            ("caption_form", Arc::new(StringArray::from(vec!["paper"]))),
        ];
        RecordBatch::try_from_iter(columns).unwrap()
    }

    #[test]
    fn integer_and_string_view_columns_are_widened() {
        let normalized = normalize(batch("train", Some(7)), "samples").unwrap();
        let schema = normalized.schema();
        assert_eq!(
            schema.field_with_name("proposal_id").unwrap().data_type(),
            &DataType::Int64
        );
        assert_eq!(
            schema.field_with_name("caption").unwrap().data_type(),
            &DataType::Utf8
        );
    }

    #[test]
    fn unknown_split_is_rejected() {
        let error = normalize(batch("test", Some(7)), "samples")
            .unwrap_err()
            .to_string();
        assert!(error.contains(r#""test""#), "{error}");
        assert!(error.contains("'train' or 'val'"), "{error}");
    }

    #[test]
    fn null_required_value_is_rejected() {
        let error = normalize(batch("val", None), "samples")
            .unwrap_err()
            .to_string();
        assert!(error.contains("proposal_id is NULL in 1 row"), "{error}");
    }

    #[test]
    fn missing_column_is_named() {
        let full = batch("val", Some(1));
        let without = full.project(&[0, 1, 2, 3, 5]).unwrap();
        let error = normalize(without, "samples").unwrap_err().to_string();
        assert!(
            error.contains("column caption (VARCHAR) is missing"),
            "{error}"
        );
    }
}
