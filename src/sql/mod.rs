//! The SQL stage: a DataFusion session with the pipeline's input tables, the project's
//! functions, and the curator's SQL models.
//!
//! Each model file contains one `SELECT`, with comments and a trailing semicolon allowed.
//! The file stem names the view it defines, and later models can read earlier ones by that
//! name.
//! Models are lazy views: nothing runs until the samples model is collected.

mod coalesce;
pub mod engine;
pub mod graph;
pub mod server;
pub mod sources;
mod yielding;

use std::path::Path;
use std::sync::Arc;

use datafusion::arrow::array::{Array, ArrayRef, Float64Array, Int64Array, StringArray};
use datafusion::arrow::datatypes::DataType;
use datafusion::arrow::record_batch::RecordBatch;
use datafusion::common::cast::{as_int64_array, as_string_array};
use datafusion::execution::SessionStateBuilder;
use datafusion::logical_expr::{ColumnarValue, Volatility, create_udf};
use datafusion::prelude::{DataFrame, SQLOptions, SessionConfig, SessionContext};
use sha2::{Digest, Sha256};

use crate::error::{PipelineError, Result};

/// Creates a session with the project's scalar functions registered.
pub fn new_session() -> SessionContext {
    new_session_with_runtime(Arc::new(
        datafusion::execution::runtime_env::RuntimeEnv::default(),
    ))
}

/// Creates a session like [`new_session`] on the given runtime (a memory pool, say).
pub fn new_session_with_runtime(
    runtime: Arc<datafusion::execution::runtime_env::RuntimeEnv>,
) -> SessionContext {
    let state = SessionStateBuilder::new()
        .with_config(session_config())
        .with_runtime_env(runtime)
        .with_default_features()
        .with_physical_optimizer_rule(Arc::new(yielding::YieldingJoins))
        .build();
    let ctx = SessionContext::new_with_state(state);
    register_functions(&ctx);
    ctx
}

fn session_config() -> SessionConfig {
    SessionConfig::new()
        .with_information_schema(true)
        .with_target_partitions(
            std::thread::available_parallelism()
                .map(|n| n.get())
                .unwrap_or(2),
        )
}

/// Registers the project's scalar functions ([`functions`]) on `ctx`.
pub fn register_functions(ctx: &SessionContext) {
    for function in functions() {
        ctx.register_udf(function);
    }
}

/// The project's scalar functions, which every engine that runs the models must have.
pub fn functions() -> Vec<datafusion::logical_expr::ScalarUDF> {
    vec![seeded_uniform_udf(), coalesce::StringWinsCoalesce::udf()]
}

/// Options that accept only queries: no DDL (`CREATE`, `DROP`), no DML (`INSERT`,
/// `UPDATE`, `DELETE`, `COPY`) and no statements (`SET`, transactions). Published versions
/// are immutable, so neither models nor analysts may write through SQL.
pub fn read_only() -> SQLOptions {
    SQLOptions::new()
        .with_allow_ddl(false)
        .with_allow_dml(false)
        .with_allow_statements(false)
}

/// Plans a read-only query. A write is rejected with an error explaining that SQL is read-only.
pub async fn read_only_query(ctx: &SessionContext, sql: &str) -> Result<DataFrame> {
    ctx.sql_with_options(sql, read_only()).await.map_err(|error| {
        let text = error.to_string();
        let rejected_write = ["DDL not supported", "DML not supported", "Statement not supported"]
            .iter()
            .any(|marker| text.contains(marker));
        if rejected_write {
            PipelineError::Invalid(format!(
                "{text}; paperclip SQL is read-only (published versions never change), so only SELECT, WITH, EXPLAIN, SHOW and DESCRIBE are accepted"
            ))
        } else {
            PipelineError::Query(error)
        }
    })
}

/// Registers record batches as an in-memory table.
pub fn register_batch(ctx: &SessionContext, name: &str, batch: RecordBatch) -> Result<()> {
    ctx.register_batch(name, batch)?;
    Ok(())
}

/// Registers each model as a view named after its file stem, in dependency order (see
/// [`graph`]). `input_tables` are the tables already registered that models may read.
pub async fn register_models(
    ctx: &SessionContext,
    model_paths: &[std::path::PathBuf],
    input_tables: &[&str],
) -> Result<()> {
    for model in graph::load_models(model_paths, input_tables)? {
        let (name, path) = (model.name, model.path);
        let statement = model.sql.trim().trim_end_matches(';');
        let frame = ctx
            .sql_with_options(statement, read_only())
            .await
            .map_err(|source| PipelineError::SqlModel {
                model: path.display().to_string(),
                source,
            })?;
        ctx.register_table(name.as_str(), frame.into_view())
            .map_err(|source| PipelineError::SqlModel {
                model: path.display().to_string(),
                source,
            })?;
        tracing::debug!(model = %name, path = %path.display(), "registered SQL model");
    }
    Ok(())
}

/// Derives a model's view name from its file name (`sql/samples.sql` -> `samples`).
pub fn model_name(path: &Path) -> Result<String> {
    let stem = path
        .file_stem()
        .and_then(|s| s.to_str())
        .filter(|s| {
            !s.is_empty()
                && s.chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
                && !s.starts_with(|c: char| c.is_ascii_digit())
        })
        .ok_or_else(|| {
            PipelineError::Invalid(format!(
                "SQL model file {} needs a name made of lower-case letters, digits and '_', not \
                 starting with a digit: it becomes the view name, and SQL folds unquoted names \
                 to lower case (rename it, for example to {})",
                path.display(),
                suggested_model_file_name(path)
            ))
        })?;
    Ok(stem.to_string())
}

/// Turns a file name into a valid model file name: lower case, other characters as `_`,
/// and `m_` before a leading digit.
fn suggested_model_file_name(path: &Path) -> String {
    let stem = path
        .file_stem()
        .map(|s| s.to_string_lossy().to_lowercase())
        .unwrap_or_default();
    let mut name: String = stem
        .chars()
        .map(|c| {
            if c.is_ascii_lowercase() || c.is_ascii_digit() {
                c
            } else {
                '_'
            }
        })
        .collect();
    if name.is_empty() || name.starts_with(|c: char| c.is_ascii_digit()) {
        name.insert_str(0, "m_");
    }
    format!("{name}.sql")
}

/// Collects a query into one batch (an empty batch with the query's schema when no rows).
pub async fn collect_one(ctx: &SessionContext, sql: &str) -> Result<RecordBatch> {
    let frame = ctx.sql(sql).await?;
    let schema = Arc::new(frame.schema().as_arrow().clone());
    let batches = frame.collect().await?;
    Ok(datafusion::arrow::compute::concat_batches(
        &schema, &batches,
    )?)
}

/// `seeded_uniform(seed BIGINT, key VARCHAR) -> DOUBLE`: a value in [0, 1) that depends only
/// on the seed and the key (the first 8 bytes of SHA-256 of `seed || ':' || key`).
///
/// Ordering rows by it gives a seeded random permutation that does not change when other
/// rows are added or removed, which is what makes sampling and the split stable across
/// refreshes.
pub fn seeded_uniform(seed: i64, key: &str) -> f64 {
    let mut hasher = Sha256::new();
    hasher.update(seed.to_string().as_bytes());
    hasher.update(b":");
    hasher.update(key.as_bytes());
    let digest = hasher.finalize();
    let mut prefix = [0u8; 8];
    prefix.copy_from_slice(&digest[..8]);
    // 53 high bits give every representable double in [0, 1) an equal chance.
    (u64::from_be_bytes(prefix) >> 11) as f64 / (1u64 << 53) as f64
}

fn seeded_uniform_udf() -> datafusion::logical_expr::ScalarUDF {
    create_udf(
        "seeded_uniform",
        vec![DataType::Int64, DataType::Utf8],
        DataType::Float64,
        Volatility::Immutable,
        Arc::new(|args: &[ColumnarValue]| {
            let rows = args
                .iter()
                .find_map(|a| match a {
                    ColumnarValue::Array(array) => Some(array.len()),
                    ColumnarValue::Scalar(_) => None,
                })
                .unwrap_or(1);
            let arrays = ColumnarValue::values_to_arrays(args)?;
            let seeds = as_int64_array(&arrays[0])?;
            let keys = as_string_array(&arrays[1])?;
            let values: Float64Array = (0..rows)
                .map(|i| {
                    (seeds.is_valid(i) && keys.is_valid(i))
                        .then(|| seeded_uniform(seeds.value(i), keys.value(i)))
                })
                .collect();
            Ok(ColumnarValue::Array(Arc::new(values) as ArrayRef))
        }),
    )
}

/// Reads a required Int64 column, or names the model and the expected type.
pub fn int64_column<'a>(
    batch: &'a RecordBatch,
    model: &str,
    column: &str,
) -> Result<&'a Int64Array> {
    batch
        .column_by_name(column)
        .and_then(|c| c.as_any().downcast_ref::<Int64Array>())
        .ok_or_else(|| schema_error(batch, model, column, "BIGINT"))
}

/// Reads a required Utf8 column, or names the model and the expected type.
pub fn string_column<'a>(
    batch: &'a RecordBatch,
    model: &str,
    column: &str,
) -> Result<&'a StringArray> {
    batch
        .column_by_name(column)
        .and_then(|c| c.as_any().downcast_ref::<StringArray>())
        .ok_or_else(|| schema_error(batch, model, column, "VARCHAR"))
}

/// Builds the error for a required column that is missing or has another type.
pub fn schema_error(
    batch: &RecordBatch,
    model: &str,
    column: &str,
    expected: &str,
) -> PipelineError {
    let problem = match batch.schema().field_with_name(column) {
        Ok(field) => format!(
            "column {column} has type {}, expected {expected}; cast it in the SELECT list",
            field.data_type()
        ),
        Err(_) => format!("column {column} ({expected}) is missing; add it to the SELECT list"),
    };
    PipelineError::ModelOutput {
        model: model.to_string(),
        problem,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seeded_uniform_is_stable_and_in_range() {
        let a = seeded_uniform(42, "mast:HST/product/a.jpg");
        assert_eq!(a, seeded_uniform(42, "mast:HST/product/a.jpg"));
        assert_ne!(a, seeded_uniform(43, "mast:HST/product/a.jpg"));
        for i in 0..1000 {
            let v = seeded_uniform(7, &i.to_string());
            assert!((0.0..1.0).contains(&v), "{v}");
        }
    }

    #[test]
    fn seeded_uniform_is_roughly_uniform() {
        let below = (0..10_000)
            .filter(|i| seeded_uniform(1, &i.to_string()) < 0.1)
            .count();
        assert!((800..1200).contains(&below), "{below} of 10000 below 0.1");
    }

    #[tokio::test]
    async fn udf_runs_in_sql() {
        let ctx = new_session();
        let batch = collect_one(&ctx, "SELECT seeded_uniform(42, 'x') AS u")
            .await
            .unwrap();
        let column = batch
            .column(0)
            .as_any()
            .downcast_ref::<Float64Array>()
            .unwrap();
        assert_eq!(column.value(0), seeded_uniform(42, "x"));
    }

    #[test]
    fn model_names_come_from_file_stems() {
        assert_eq!(model_name(Path::new("sql/samples.sql")).unwrap(), "samples");
        assert!(model_name(Path::new("sql/my-model.sql")).is_err());
        assert!(model_name(Path::new("sql/1x.sql")).is_err());
        let upper = model_name(Path::new("sql/MySamples.sql")).unwrap_err();
        assert!(upper.to_string().contains("to mysamples.sql)"), "{upper}");
        let dashed = model_name(Path::new("sql/My-Samples.sql")).unwrap_err();
        assert!(
            dashed.to_string().contains("to my_samples.sql)"),
            "{dashed}"
        );
        let digit = model_name(Path::new("sql/2024 cut.sql")).unwrap_err();
        assert!(digit.to_string().contains("to m_2024_cut.sql)"), "{digit}");
        let suggested = ["my_samples", "m_2024_cut"];
        assert!(
            suggested
                .iter()
                .all(|stem| model_name(Path::new(&format!("{stem}.sql"))).is_ok())
        );
    }
}

#[cfg(test)]
mod read_only_tests {
    use super::*;

    #[tokio::test]
    async fn writes_are_rejected() {
        let ctx = new_session();
        ctx.sql("CREATE TABLE t AS VALUES (1)")
            .await
            .unwrap()
            .collect()
            .await
            .unwrap();
        for statement in [
            "INSERT INTO t VALUES (2)",
            "CREATE TABLE u AS VALUES (1)",
            "DROP TABLE t",
            "COPY (SELECT 1) TO '/tmp/paperclip-should-not-exist.csv'",
            "SET datafusion.execution.batch_size = 1",
        ] {
            let error = read_only_query(&ctx, statement)
                .await
                .unwrap_err()
                .to_string();
            assert!(error.contains("read-only"), "{statement}: {error}");
        }
        assert!(read_only_query(&ctx, "SELECT * FROM t").await.is_ok());
    }
}
