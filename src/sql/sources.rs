//! Source tables that a curator declares in the pipeline file as `[sources.<name>]`: CSV,
//! Parquet and newline-delimited JSON files that models read like the input tables.
//!
//! Invariants:
//! - The column types of a CSV source come from its declared schema, never from inference.
//!   DataFusion 55 infers CSV types from the first 1,000 rows, types a column that is empty
//!   there as Null and then reads its later values as NULL. With the schema, such a column
//!   keeps the declared type, and a file with a header and no rows still has typed columns.
//!   Every CSV column is nullable, and an empty field is NULL.
//! - A Parquet or JSON source without a schema has the file's columns. DataFusion reads
//!   Parquet strings as `Utf8View` and infers JSON types from the first 1,000 lines, so
//!   declare a schema when a key may be missing or null in all of them. With a schema, the
//!   table has exactly the declared columns in the declared order. Each Parquet column must
//!   exist in the file with the declared type, and each JSON value must parse as its
//!   column's type (a key missing from a line is NULL).
//! - `VARCHAR` becomes Arrow `Utf8`, like the strings of the built-in input tables.
//! - Each source is read into memory when it is registered, so a bad row fails the model
//!   check that runs before any archive request. Read errors name the file and, for CSV
//!   and JSON, the line and the column.
//!
//! [`check_sources`] runs when the pipeline file is loaded and checks everything that needs
//! no data: table names, paths, options, type names and the CSV header line.

mod locate;

use std::path::Path;
use std::sync::Arc;

use datafusion::arrow::csv::reader::Format;
use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};
use datafusion::arrow::record_batch::RecordBatch;
use datafusion::logical_expr::{cast, ident};
use datafusion::prelude::SessionContext;
use datafusion::prelude::{CsvReadOptions, DataFrame, JsonReadOptions, ParquetReadOptions};
use sha2::{Digest, Sha256};

use super::engine::InputTable;
use crate::error::{PipelineError, Result};
use crate::pipeline::config::{SourceColumn, SourceFormat, SourceSection};
use crate::pipeline::{INPUT_TABLES, PipelineConfig};

/// SQL type names a schema may use and the Arrow type each becomes. The first name of each
/// Arrow type is the one error messages suggest.
const SQL_TYPES: [(&str, DataType); 16] = [
    ("BOOLEAN", DataType::Boolean),
    ("BOOL", DataType::Boolean),
    ("TINYINT", DataType::Int8),
    ("SMALLINT", DataType::Int16),
    ("INT", DataType::Int32),
    ("INTEGER", DataType::Int32),
    ("BIGINT", DataType::Int64),
    ("REAL", DataType::Float32),
    ("FLOAT", DataType::Float32),
    ("DOUBLE", DataType::Float64),
    ("DOUBLE PRECISION", DataType::Float64),
    ("VARCHAR", DataType::Utf8),
    ("TEXT", DataType::Utf8),
    ("STRING", DataType::Utf8),
    ("DATE", DataType::Date32),
    ("TIMESTAMP", DataType::Timestamp(TimeUnit::Nanosecond, None)),
];

/// Returns the tables models may read: the built-in input tables, then the sources.
pub fn input_tables(config: &PipelineConfig) -> Vec<&str> {
    INPUT_TABLES
        .iter()
        .copied()
        .chain(config.sources.keys().map(String::as_str))
        .collect()
}

/// Returns one fingerprint per source, as (`source <name>`, SHA-256 of the section's
/// settings and the file's bytes), so that a changed file or section can make the models
/// stale.
pub fn source_fingerprints(config: &PipelineConfig) -> Result<Vec<(String, String)>> {
    let mut fingerprints = Vec::with_capacity(config.sources.len());
    for (name, source) in &config.sources {
        let path = config.resolve(&source.path);
        let bytes = std::fs::read(&path).map_err(|error| PipelineError::io(&path, error))?;
        let settings = serde_json::to_vec(source).expect("source settings serialize");
        let mut hasher = Sha256::new();
        hasher.update(&settings);
        hasher.update([0]);
        hasher.update(&bytes);
        fingerprints.push((format!("source {name}"), hex::encode(hasher.finalize())));
    }
    Ok(fingerprints)
}

/// Checks every `[sources.<name>]` section without reading data rows. Each message starts
/// with the section's name and ends with the fix.
pub fn check_sources(config: &PipelineConfig) -> Result<(), String> {
    for (name, source) in &config.sources {
        check_source(config, name, source)
            .map_err(|problem| format!("sources.{name}: {problem}"))?;
    }
    Ok(())
}

fn check_source(config: &PipelineConfig, name: &str, source: &SourceSection) -> Result<(), String> {
    check_table_name(config, name)?;
    let path = config.resolve(&source.path);
    if !path.is_file() {
        return Err(format!(
            "path = {:?} resolves to {}, which is not a file; paths are relative to the pipeline file",
            source.path.display(),
            path.display()
        ));
    }
    let delimiter = csv_delimiter(source)?;
    let schema = source.schema.as_deref().map(declared_schema).transpose()?;
    match (source.format, schema) {
        (SourceFormat::Csv, None) => Err(missing_csv_schema(source, &path, delimiter)),
        (SourceFormat::Csv, Some(schema)) if has_header(source) => {
            check_csv_header(&path, delimiter, &schema)
        }
        _ => Ok(()),
    }
}

/// Checks that a source name is usable unquoted in SQL and taken by no other table.
fn check_table_name(config: &PipelineConfig, name: &str) -> Result<(), String> {
    let valid = name.starts_with(|c: char| c.is_ascii_lowercase() || c == '_')
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_');
    if !valid {
        return Err(format!(
            "the table name {name:?} must be lowercase letters, digits and '_', not starting with a digit, so models can use it unquoted; rename the section"
        ));
    }
    if INPUT_TABLES.contains(&name) {
        return Err(format!(
            "{name} is a built-in input table; rename the section, e.g. [sources.{name}_extra]"
        ));
    }
    let clashing_model = config
        .sql
        .models
        .iter()
        .find(|model| super::model_name(model).is_ok_and(|model_name| model_name == name));
    if let Some(model) = clashing_model {
        return Err(format!(
            "the SQL model {} has the same name; rename the section or the model file",
            model.display()
        ));
    }
    Ok(())
}

fn has_header(source: &SourceSection) -> bool {
    source.has_header.unwrap_or(true)
}

/// Returns the CSV field separator, or explains why an option does not apply or is invalid.
fn csv_delimiter(source: &SourceSection) -> Result<u8, String> {
    if source.format != SourceFormat::Csv {
        for (key, given) in [
            ("has_header", source.has_header.is_some()),
            ("delimiter", source.delimiter.is_some()),
        ] {
            if given {
                return Err(format!("{key} applies only to CSV sources; remove it"));
            }
        }
    }
    let Some(delimiter) = source.delimiter.as_deref() else {
        return Ok(b',');
    };
    match delimiter.as_bytes() {
        [byte] if byte.is_ascii() && !matches!(byte, b'"' | b'\n' | b'\r') => Ok(*byte),
        _ => Err(format!(
            "delimiter = {delimiter:?} is invalid; use one ASCII character other than a quote or a line break, e.g. \",\", \";\" or \"\\t\""
        )),
    }
}

/// Builds the Arrow schema of declared columns, all of them nullable.
fn declared_schema(columns: &[SourceColumn]) -> Result<Schema, String> {
    if columns.is_empty() {
        return Err("schema is empty; list the file's columns in order".into());
    }
    let mut fields: Vec<Field> = Vec::with_capacity(columns.len());
    for column in columns {
        if column.name.is_empty() {
            return Err("schema has a column with an empty name; name every column".into());
        }
        if fields.iter().any(|field| field.name() == &column.name) {
            return Err(format!(
                "schema lists column {} twice; give each column its own name",
                column.name
            ));
        }
        let data_type = parse_sql_type(&column.sql_type).ok_or_else(|| {
            format!(
                "column {} has unknown type {:?}; use one of {}",
                column.name,
                column.sql_type,
                sql_type_names().join(", ")
            )
        })?;
        fields.push(Field::new(&column.name, data_type, true));
    }
    Ok(Schema::new(fields))
}

/// Returns the Arrow type of a SQL type name, ignoring case and repeated spaces.
pub fn parse_sql_type(name: &str) -> Option<DataType> {
    let normalized = name
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
        .to_ascii_uppercase();
    SQL_TYPES
        .iter()
        .find(|(sql_name, _)| *sql_name == normalized)
        .map(|(_, data_type)| data_type.clone())
}

/// Returns the SQL name of an Arrow type, or the Arrow name when no SQL name maps to it.
fn sql_type_name(data_type: &DataType) -> String {
    sql_name(data_type).map_or_else(|| data_type.to_string(), str::to_string)
}

fn sql_name(data_type: &DataType) -> Option<&'static str> {
    SQL_TYPES
        .iter()
        .find(|(_, candidate)| candidate == data_type)
        .map(|(name, _)| *name)
}

fn sql_type_names() -> Vec<&'static str> {
    SQL_TYPES.iter().map(|(name, _)| *name).collect()
}

/// Builds the error for a CSV source without a schema, with a schema to start from.
fn missing_csv_schema(source: &SourceSection, path: &Path, delimiter: u8) -> String {
    let names = if has_header(source) {
        header_names(path, delimiter).unwrap_or_default()
    } else {
        Vec::new()
    };
    let example = if names.is_empty() {
        "schema = [{ name = \"target_name\", type = \"VARCHAR\" }, { name = \"n\", type = \"BIGINT\" }]"
            .to_string()
    } else {
        let columns: Vec<String> = names
            .iter()
            .map(|name| format!("{{ name = {name:?}, type = \"VARCHAR\" }}"))
            .collect();
        format!("schema = [{}] with each type corrected", columns.join(", "))
    };
    format!(
        "{} is a CSV file and needs a declared schema, because inferred types depend on the first 1,000 rows (a column that is empty there becomes type Null and loses its later values); list its columns in file order, e.g. {example}",
        path.display()
    )
}

/// Checks that the header line names the declared columns in the declared order.
fn check_csv_header(path: &Path, delimiter: u8, schema: &Schema) -> Result<(), String> {
    let header = header_names(path, delimiter)?;
    let declared: Vec<&str> = schema.fields().iter().map(|f| f.name().as_str()).collect();
    if header.is_empty() {
        return Err(format!(
            "{} is empty, but has_header is true; add the header line {}",
            path.display(),
            declared.join(",")
        ));
    }
    if header != declared {
        return Err(format!(
            "the header of {} names the columns {:?}, but the schema declares {:?}; list the schema's columns in the file's order under the header's names, or set has_header = false if the first line is data",
            path.display(),
            header,
            declared
        ));
    }
    Ok(())
}

/// Reads the column names on the first line of a CSV file (empty for an empty file).
fn header_names(path: &Path, delimiter: u8) -> Result<Vec<String>, String> {
    let file = std::fs::File::open(path)
        .map_err(|error| format!("failed to open {}: {error}", path.display()))?;
    let (schema, _) = Format::default()
        .with_header(true)
        .with_delimiter(delimiter)
        .infer_schema(std::io::BufReader::new(file), Some(0))
        .map_err(|error| format!("failed to read the header of {}: {error}", path.display()))?;
    let mut names: Vec<String> = schema.fields().iter().map(|f| f.name().clone()).collect();
    if let Some(first) = names.first_mut() {
        // A byte order mark is harmless to the reader, which skips the header line.
        *first = first.trim_start_matches('\u{feff}').to_string();
    }
    Ok(names)
}

/// Reads every source of the pipeline into memory and registers it under its name.
pub async fn register_sources(ctx: &SessionContext, config: &PipelineConfig) -> Result<()> {
    for table in read_sources(ctx, config).await? {
        let name = table.name.clone();
        ctx.register_table(name.as_str(), Arc::new(table.into_mem_table()?))?;
    }
    Ok(())
}

/// Reads every source of the pipeline into memory, one batch per source, with `ctx`'s
/// readers.
pub async fn read_sources(
    ctx: &SessionContext,
    config: &PipelineConfig,
) -> Result<Vec<InputTable>> {
    let mut tables = Vec::with_capacity(config.sources.len());
    for (name, source) in &config.sources {
        let path = config.resolve(&source.path);
        let (schema, batches) =
            read_source(ctx, source, &path)
                .await
                .map_err(|problem| PipelineError::Source {
                    table: name.clone(),
                    path: path.clone(),
                    problem,
                })?;
        let batch = datafusion::arrow::compute::concat_batches(&schema, &batches)?;
        tracing::debug!(table = %name, path = %path.display(), rows = batch.num_rows(), "read source table");
        tables.push(InputTable::new(name.clone(), batch));
    }
    Ok(tables)
}

/// Reads one source completely, returning the table's schema and rows.
async fn read_source(
    ctx: &SessionContext,
    source: &SourceSection,
    path: &Path,
) -> Result<(SchemaRef, Vec<RecordBatch>), String> {
    let frame = plan_source(ctx, source, path).await?;
    let schema: SchemaRef = Arc::new(frame.schema().as_arrow().clone());
    match frame.collect().await {
        Ok(batches) => Ok((schema, batches)),
        Err(error) => {
            Err(locate_problem(source, path, &schema).unwrap_or_else(|| error.to_string()))
        }
    }
}

/// Plans the scan of one source with the options and schema its section declares.
async fn plan_source(
    ctx: &SessionContext,
    source: &SourceSection,
    path: &Path,
) -> Result<DataFrame, String> {
    let location = path.to_str().ok_or_else(|| {
        format!(
            "the path {} is not valid UTF-8; rename the file",
            path.display()
        )
    })?;
    let declared = source.schema.as_deref().map(declared_schema).transpose()?;
    let delimiter = csv_delimiter(source)?;
    let planned = match (source.format, declared.as_ref()) {
        (SourceFormat::Csv, None) => return Err(missing_csv_schema(source, path, delimiter)),
        (SourceFormat::Csv, Some(schema)) => {
            let options = CsvReadOptions::new()
                .schema(schema)
                .has_header(has_header(source))
                .delimiter(delimiter)
                .newlines_in_values(true)
                .file_extension("");
            ctx.read_csv(location, options).await
        }
        (SourceFormat::Json, schema) => {
            let mut options = JsonReadOptions::default().file_extension("");
            if let Some(schema) = schema {
                options = options.schema(schema);
            }
            ctx.read_json(location, options).await
        }
        (SourceFormat::Parquet, schema) => {
            let options = ParquetReadOptions::new().file_extension("");
            let frame = ctx
                .read_parquet(location, options)
                .await
                .map_err(|error| error.to_string())?;
            return select_declared(frame, schema, path);
        }
    };
    planned.map_err(|error| error.to_string())
}

/// Narrows a Parquet file's columns to the declared ones, after checking that each exists
/// with the declared type. Any string type matches `VARCHAR`, and any timestamp without a
/// time zone matches `TIMESTAMP`.
fn select_declared(
    frame: DataFrame,
    declared: Option<&Schema>,
    path: &Path,
) -> Result<DataFrame, String> {
    let Some(declared) = declared else {
        return Ok(frame);
    };
    let file_schema = frame.schema().as_arrow().clone();
    let mut columns = Vec::with_capacity(declared.fields().len());
    for field in declared.fields() {
        let Ok(found) = file_schema.field_with_name(field.name()) else {
            let names: Vec<&str> = file_schema
                .fields()
                .iter()
                .map(|f| f.name().as_str())
                .collect();
            return Err(format!(
                "the schema declares column {}, which {} does not have; its columns are {}",
                field.name(),
                path.display(),
                names.join(", ")
            ));
        };
        if !same_kind(found.data_type(), field.data_type()) {
            let declare = sql_name(found.data_type())
                .map(|name| format!("declare it as {name} or "))
                .unwrap_or_default();
            return Err(format!(
                "column {} has type {} in the file, but the schema declares {}; {declare}remove the schema to take the file's types",
                field.name(),
                found.data_type(),
                sql_type_name(field.data_type()),
            ));
        }
        columns.push(cast(ident(field.name()), field.data_type().clone()).alias(field.name()));
    }
    frame.select(columns).map_err(|error| error.to_string())
}

fn same_kind(file: &DataType, declared: &DataType) -> bool {
    let string =
        |t: &DataType| matches!(t, DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View);
    let naive_timestamp = |t: &DataType| matches!(t, DataType::Timestamp(_, None));
    file == declared
        || (string(file) && string(declared))
        || (naive_timestamp(file) && naive_timestamp(declared))
}

/// Describes the line and column behind a failed read, or returns `None` for Parquet and
/// when no bad row is found.
fn locate_problem(source: &SourceSection, path: &Path, schema: &Schema) -> Option<String> {
    match source.format {
        SourceFormat::Csv => {
            let delimiter = csv_delimiter(source).ok()?;
            locate::csv_problem(path, delimiter, has_header(source), schema)
        }
        SourceFormat::Json => locate::json_problem(path, schema),
        SourceFormat::Parquet => None,
    }
}

#[cfg(test)]
mod tests;
