//! Embedding tables: the image and caption embeddings of a dataset version under one
//! checkpoint, as a Parquet file with the sample keys, and exact nearest-neighbour search
//! over them.
//!
//! Layout: `<data dir>/embeddings/<dataset>/v<N>/<first 12 hex digits of the weights
//! SHA-256>.parquet`. The file's key-value metadata records the checkpoint, its weights
//! hash, the vocabulary and the image resize, so a search embeds its query with the same
//! model. Files are written under a temporary name and renamed, so a reader sees a whole
//! table or none.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use datafusion::arrow::array::{
    Array, ArrayRef, FixedSizeListArray, Float32Array, Int64Array, RecordBatch, StringArray,
};
use datafusion::arrow::datatypes::{DataType, Field, Schema};
use datafusion::parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use datafusion::parquet::arrow::{ArrowWriter, ProjectionMask};
use datafusion::parquet::file::metadata::KeyValue;
use datafusion::parquet::file::properties::WriterProperties;
use serde::{Deserialize, Serialize};

use super::error::{EvalError, io};
use super::model::Matrix;

/// Provenance of an embeddings table, stored in its Parquet metadata.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EmbeddingsInfo {
    /// Dataset name.
    pub dataset: String,
    /// Dataset version.
    pub version: u64,
    /// Splits embedded.
    pub splits: Vec<String>,
    /// The sample field embedded as text.
    pub caption_field: String,
    /// The checkpoint as given, made absolute when it is a path.
    pub checkpoint: String,
    /// SHA-256 of the weights file.
    pub weights_sha256: String,
    /// The vocabulary file used, when one was given or recorded.
    pub vocabulary: Option<String>,
    /// Resize before the crop, if any.
    pub resize_px: Option<usize>,
    /// Width of each embedding.
    pub dim: usize,
    /// RFC 3339 time the table was written.
    pub created_at: String,
}

/// The metadata key holding [`EmbeddingsInfo`] as JSON.
const INFO_KEY: &str = "paperclip.embeddings";

/// One embedded sample.
#[derive(Debug, Clone, PartialEq)]
pub struct EmbeddedSample {
    /// Sample key.
    pub key: String,
    /// Split.
    pub split: String,
    /// Proposal id.
    pub proposal_id: i64,
    /// Target name from the sample metadata, when it has one.
    pub target_name: Option<String>,
    /// The embedded caption.
    pub caption: String,
}

/// The table's folder for one dataset version.
pub fn table_dir(data_dir: &Path, dataset: &str, version: u64) -> PathBuf {
    data_dir
        .join("embeddings")
        .join(dataset)
        .join(format!("v{version}"))
}

/// Returns the table's file for one checkpoint.
pub fn table_path(data_dir: &Path, info: &EmbeddingsInfo) -> PathBuf {
    table_dir(data_dir, &info.dataset, info.version)
        .join(format!("{}.parquet", &info.weights_sha256[..12]))
}

fn schema(dim: usize) -> Arc<Schema> {
    let vector = DataType::FixedSizeList(
        Arc::new(Field::new("item", DataType::Float32, false)),
        dim as i32,
    );
    Arc::new(Schema::new(vec![
        Field::new("key", DataType::Utf8, false),
        Field::new("split", DataType::Utf8, false),
        Field::new("proposal_id", DataType::Int64, false),
        Field::new("target_name", DataType::Utf8, true),
        Field::new("caption", DataType::Utf8, false),
        Field::new("image_embedding", vector.clone(), false),
        Field::new("text_embedding", vector, false),
    ]))
}

fn vectors(matrix: &Matrix) -> Result<ArrayRef, EvalError> {
    let values = Arc::new(Float32Array::from(matrix.values.clone()));
    let field = Arc::new(Field::new("item", DataType::Float32, false));
    FixedSizeListArray::try_new(field, matrix.dim as i32, values, None)
        .map(|array| Arc::new(array) as ArrayRef)
        .map_err(|e| EvalError::Invalid(format!("embeddings do not form a table: {e}")))
}

/// Writes the table and returns its path.
pub fn write_table(
    data_dir: &Path,
    info: &EmbeddingsInfo,
    samples: &[EmbeddedSample],
    images: &Matrix,
    texts: &Matrix,
) -> Result<PathBuf, EvalError> {
    let path = table_path(data_dir, info);
    let table_error = |message: String| EvalError::Table {
        path: path.clone(),
        message,
    };
    let columns: Vec<ArrayRef> = vec![
        Arc::new(StringArray::from_iter_values(
            samples.iter().map(|s| &s.key),
        )),
        Arc::new(StringArray::from_iter_values(
            samples.iter().map(|s| &s.split),
        )),
        Arc::new(Int64Array::from_iter_values(
            samples.iter().map(|s| s.proposal_id),
        )),
        Arc::new(StringArray::from_iter(
            samples.iter().map(|s| s.target_name.as_deref()),
        )),
        Arc::new(StringArray::from_iter_values(
            samples.iter().map(|s| &s.caption),
        )),
        vectors(images)?,
        vectors(texts)?,
    ];
    let batch =
        RecordBatch::try_new(schema(info.dim), columns).map_err(|e| table_error(e.to_string()))?;

    let dir = path.parent().expect("table path has a folder");
    std::fs::create_dir_all(dir).map_err(|e| io(dir, e))?;
    let tmp = path.with_extension("parquet.tmp");
    let file = File::create(&tmp).map_err(|e| io(&tmp, e))?;
    let info_json = serde_json::to_string(info).map_err(|e| table_error(e.to_string()))?;
    let properties = WriterProperties::builder()
        .set_key_value_metadata(Some(vec![KeyValue::new(INFO_KEY.to_string(), info_json)]))
        .build();
    let mut writer = ArrowWriter::try_new(file, batch.schema(), Some(properties))
        .map_err(|e| table_error(e.to_string()))?;
    writer
        .write(&batch)
        .map_err(|e| table_error(e.to_string()))?;
    writer
        .into_inner()
        .and_then(|file| file.sync_all().map_err(Into::into))
        .map_err(|e| table_error(e.to_string()))?;
    std::fs::rename(&tmp, &path).map_err(|e| io(&path, e))?;
    Ok(path)
}

/// Reads a table's [`EmbeddingsInfo`] without reading its rows.
pub fn read_info(path: &Path) -> Result<EmbeddingsInfo, EvalError> {
    let builder = open(path)?;
    info_of(path, &builder)
}

fn open(path: &Path) -> Result<ParquetRecordBatchReaderBuilder<File>, EvalError> {
    let file = File::open(path).map_err(|e| io(path, e))?;
    ParquetRecordBatchReaderBuilder::try_new(file).map_err(|e| EvalError::Table {
        path: path.to_path_buf(),
        message: format!(
            "not a readable Parquet file ({e}); write it again with `paperclip embed`"
        ),
    })
}

fn info_of(
    path: &Path,
    builder: &ParquetRecordBatchReaderBuilder<File>,
) -> Result<EmbeddingsInfo, EvalError> {
    builder
        .metadata()
        .file_metadata()
        .key_value_metadata()
        .and_then(|pairs| pairs.iter().find(|kv| kv.key == INFO_KEY))
        .and_then(|kv| kv.value.as_deref())
        .and_then(|json| serde_json::from_str(json).ok())
        .ok_or_else(|| EvalError::Table {
            path: path.to_path_buf(),
            message: "has no paperclip metadata; write it with `paperclip embed`".into(),
        })
}

/// An embeddings table in memory: the samples and their image embeddings.
#[derive(Debug)]
pub struct ImageIndex {
    /// Provenance of the table.
    pub info: EmbeddingsInfo,
    /// The samples, in table order.
    pub samples: Vec<EmbeddedSample>,
    /// Their image embeddings.
    pub images: Matrix,
}

/// Reads the samples and image embeddings of a table.
pub fn read_image_index(path: &Path) -> Result<ImageIndex, EvalError> {
    let builder = open(path)?;
    let info = info_of(path, &builder)?;
    let table_error = |message: String| EvalError::Table {
        path: path.to_path_buf(),
        message,
    };
    // Every column but the caption embeddings, which a search never reads.
    let roots: Vec<usize> = builder
        .schema()
        .fields()
        .iter()
        .enumerate()
        .filter(|(_, field)| field.name() != "text_embedding")
        .map(|(i, _)| i)
        .collect();
    let mask = ProjectionMask::roots(builder.parquet_schema(), roots);
    let reader = builder
        .with_projection(mask)
        .build()
        .map_err(|e| table_error(e.to_string()))?;
    let mut samples = Vec::new();
    let mut images = Matrix {
        dim: info.dim,
        values: Vec::new(),
    };
    for batch in reader {
        let batch = batch.map_err(|e| table_error(e.to_string()))?;
        let column = |name: &str| {
            batch
                .column_by_name(name)
                .ok_or_else(|| table_error(format!("has no column {name}")))
        };
        let text = |name: &str| -> Result<StringArray, EvalError> {
            column(name)?
                .as_any()
                .downcast_ref::<StringArray>()
                .cloned()
                .ok_or_else(|| table_error(format!("column {name} is not text")))
        };
        let (keys, splits, targets, captions) = (
            text("key")?,
            text("split")?,
            text("target_name")?,
            text("caption")?,
        );
        let proposals = column("proposal_id")?
            .as_any()
            .downcast_ref::<Int64Array>()
            .cloned()
            .ok_or_else(|| table_error("column proposal_id is not Int64".into()))?;
        let vectors = column("image_embedding")?
            .as_any()
            .downcast_ref::<FixedSizeListArray>()
            .cloned()
            .ok_or_else(|| table_error("column image_embedding is not a vector".into()))?;
        let values = vectors
            .values()
            .as_any()
            .downcast_ref::<Float32Array>()
            .ok_or_else(|| table_error("image_embedding holds no Float32 values".into()))?;
        images.values.extend_from_slice(values.values());
        for i in 0..batch.num_rows() {
            samples.push(EmbeddedSample {
                key: keys.value(i).to_string(),
                split: splits.value(i).to_string(),
                proposal_id: proposals.value(i),
                target_name: (!targets.is_null(i)).then(|| targets.value(i).to_string()),
                caption: captions.value(i).to_string(),
            });
        }
    }
    Ok(ImageIndex {
        info,
        samples,
        images,
    })
}

/// Returns the `k` rows of `matrix` with the largest dot product with `query`, best first;
/// equal scores keep table order.
pub fn exact_top_k(matrix: &Matrix, query: &[f32], k: usize) -> Vec<(usize, f32)> {
    paperclip_clip::search::top_k_dot(&matrix.values, matrix.dim, query, k)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn info(dim: usize) -> EmbeddingsInfo {
        EmbeddingsInfo {
            dataset: "d".into(),
            version: 3,
            splits: vec!["val".into()],
            caption_field: "caption".into(),
            checkpoint: "/models/x".into(),
            weights_sha256: "ab".repeat(32),
            vocabulary: None,
            resize_px: Some(80),
            dim,
            created_at: "2026-12-05T00:00:00Z".into(),
        }
    }

    #[test]
    fn table_round_trips() {
        let dir = tempfile::tempdir().unwrap();
        let samples = vec![
            EmbeddedSample {
                key: "a".into(),
                split: "val".into(),
                proposal_id: 7,
                target_name: Some("M31".into()),
                caption: "x".into(),
            },
            EmbeddedSample {
                key: "b".into(),
                split: "val".into(),
                proposal_id: 8,
                target_name: None,
                caption: "y".into(),
            },
        ];
        let images = Matrix {
            dim: 2,
            values: vec![1.0, 0.0, 0.0, 1.0],
        };
        let path = write_table(dir.path(), &info(2), &samples, &images, &images).unwrap();
        assert!(path.ends_with("embeddings/d/v3/abababababab.parquet"));
        let index = read_image_index(&path).unwrap();
        assert_eq!(index.info, info(2));
        assert_eq!(index.samples, samples);
        assert_eq!(index.images, images);
    }
}
