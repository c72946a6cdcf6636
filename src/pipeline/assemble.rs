//! Builds the published samples table from the samples model's rows and the prepared
//! images, assigns keys, shards and members, and computes the dataset fingerprint.
//!
//! Invariants: rows are ordered by (split, key). Keys are unique across the dataset and
//! follow the shard key rule. The fingerprint depends only on the published rows, so two
//! runs over the same input give the same fingerprint.

use std::collections::HashSet;
use std::sync::Arc;

use datafusion::arrow::array::{ArrayRef, Int64Array, RecordBatch, StringArray, UInt32Array};
use datafusion::arrow::compute::{take, take_record_batch};
use datafusion::arrow::datatypes::{DataType, Field, Schema};
use sha2::{Digest, Sha256};

use super::materialize::PreparedOutcome;
use crate::error::{PipelineError, Result};

/// Per-row facts added to the model's columns.
#[derive(Debug, Clone)]
pub struct ImageFacts {
    pub row: usize,
    pub key: String,
    pub split: String,
    pub blob_sha256: String,
    pub blob_size_bytes: u64,
    pub image_sha256: String,
    pub image_size_bytes: u64,
    pub source_format: String,
    pub source_width_px: u32,
    pub source_height_px: u32,
    pub stretch: Option<String>,
}

impl ImageFacts {
    pub fn from_outcome(
        row: usize,
        key: String,
        split: String,
        blob_sha256: &str,
        blob_size_bytes: u64,
        outcome: &PreparedOutcome,
    ) -> Option<Self> {
        match outcome {
            PreparedOutcome::Ready {
                image_sha256,
                image_size_bytes,
                source_format,
                source_width_px,
                source_height_px,
                stretch,
                ..
            } => Some(Self {
                row,
                key,
                split,
                blob_sha256: blob_sha256.to_string(),
                blob_size_bytes,
                image_sha256: image_sha256.clone(),
                image_size_bytes: *image_size_bytes,
                source_format: source_format.clone(),
                source_width_px: *source_width_px,
                source_height_px: *source_height_px,
                stretch: stretch.clone(),
            }),
            PreparedOutcome::Rejected { .. } => None,
        }
    }
}

/// Builds a sample key `hst<proposal>_<obs_id>_<8 hex digits of the URI's SHA-256>`.
///
/// The URI hash keeps keys unique when one observation has several products. The obs_id is
/// lower-cased and stripped to ASCII letters and digits, so keys never contain dots.
pub fn sample_key(proposal_id: i64, obs_id: &str, data_uri: &str) -> String {
    let obs: String = obs_id
        .chars()
        .filter(char::is_ascii_alphanumeric)
        .map(|c| c.to_ascii_lowercase())
        .take(40)
        .collect();
    let uri_hash = hex::encode(&Sha256::digest(data_uri.as_bytes())[..4]);
    format!("hst{proposal_id}_{obs}_{uri_hash}")
}

/// The published table plus what is needed to write shards.
///
/// Captions and metadata JSON are not kept per row: shard writing serializes them again
/// from `batch`, one shard at a time, so memory does not grow with a copy of every
/// sample's JSON.
pub struct AssembledSamples {
    pub batch: RecordBatch,
    /// Per published row, in the order of `batch`: key, split and hashes.
    pub rows: Vec<AssembledRow>,
    pub fingerprint: String,
}

#[derive(Debug, Clone)]
pub struct AssembledRow {
    pub key: String,
    pub split: String,
    pub image_sha256: String,
    /// SHA-256 of the row's metadata JSON: equal values mean an unchanged sample.
    pub sample_sha256: String,
}

impl AssembledSamples {
    /// Returns the caption and metadata JSON of `rows` (indices into `batch`), in order:
    /// the same bytes that `sample_sha256` hashes.
    pub fn captions_and_metadata(&self, rows: &[usize]) -> Result<Vec<(String, Vec<u8>)>> {
        let indices = UInt32Array::from_iter_values(rows.iter().map(|&row| row as u32));
        let shard_rows = take_record_batch(&self.batch, &indices)?;
        let captions = shard_rows
            .column_by_name("caption")
            .and_then(|column| column.as_any().downcast_ref::<StringArray>())
            .ok_or_else(|| {
                PipelineError::Invalid("the published table has no text column named caption; the samples model must return one".into())
            })?;
        let lines = metadata_lines(&without_layout_columns(&shard_rows)?)?;
        Ok(lines
            .into_iter()
            .enumerate()
            .map(|(i, line)| (captions.value(i).to_string(), line))
            .collect())
    }
}

/// Selects the successful rows of the model output, appends the image columns and the
/// shard layout, and orders everything by (split, key).
pub fn assemble(
    model_batch: RecordBatch,
    model: &str,
    mut facts: Vec<ImageFacts>,
    samples_per_shard: usize,
) -> Result<AssembledSamples> {
    facts.sort_by(|a, b| (&a.split, &a.key).cmp(&(&b.split, &b.key)));
    check_unique_keys(&facts, model)?;

    let shards = assign_shards(&facts, samples_per_shard);
    let indices = UInt32Array::from_iter_values(facts.iter().map(|f| f.row as u32));
    let selected = take_consuming(model_batch, &indices)?;
    let batch = append_columns(&selected, &facts)?;
    let (sample_hashes, fingerprint) = metadata_hashes(&batch)?;
    let batch = append_layout_columns(&batch, &sample_hashes, &shards)?;

    let rows: Vec<AssembledRow> = facts
        .iter()
        .zip(sample_hashes)
        .map(|(fact, sample_sha256)| AssembledRow {
            key: fact.key.clone(),
            split: fact.split.clone(),
            image_sha256: fact.image_sha256.clone(),
            sample_sha256,
        })
        .collect();
    Ok(AssembledSamples {
        batch,
        rows,
        fingerprint,
    })
}

/// Reorders `batch` by `indices` one column at a time and frees each source column once
/// its copy exists, so memory peaks at one batch plus one column instead of two batches.
fn take_consuming(batch: RecordBatch, indices: &UInt32Array) -> Result<RecordBatch> {
    let (schema, columns, _) = batch.into_parts();
    let mut reordered = Vec::with_capacity(columns.len());
    for column in columns {
        reordered.push(take(column.as_ref(), indices, None)?);
    }
    Ok(RecordBatch::try_new(schema, reordered)?)
}

fn check_unique_keys(facts: &[ImageFacts], model: &str) -> Result<()> {
    let mut seen = HashSet::new();
    for fact in facts {
        if !seen.insert(fact.key.as_str()) {
            return Err(PipelineError::Invalid(format!(
                "SQL model {model} returned the same product twice (sample key {}); select each (proposal_id, data_uri) once",
                fact.key
            )));
        }
    }
    Ok(())
}

/// Shard name per row: rows of a split fill `<split>-00000.tar`, `<split>-00001.tar`, ...
fn assign_shards(facts: &[ImageFacts], samples_per_shard: usize) -> Vec<String> {
    let mut names = Vec::with_capacity(facts.len());
    let mut position_in_split = 0usize;
    for (i, fact) in facts.iter().enumerate() {
        if i > 0 && facts[i - 1].split != fact.split {
            position_in_split = 0;
        }
        names.push(format!(
            "{}-{:05}.tar",
            fact.split,
            position_in_split / samples_per_shard
        ));
        position_in_split += 1;
    }
    names
}

fn append_columns(selected: &RecordBatch, facts: &[ImageFacts]) -> Result<RecordBatch> {
    let mut fields: Vec<Field> = vec![Field::new("key", DataType::Utf8, false)];
    let mut columns: Vec<ArrayRef> = vec![Arc::new(StringArray::from_iter_values(
        facts.iter().map(|f| f.key.as_str()),
    ))];
    for (field, column) in selected.schema().fields().iter().zip(selected.columns()) {
        if field.name() == "key" {
            continue;
        }
        fields.push(field.as_ref().clone());
        columns.push(column.clone());
    }

    let text = |values: Vec<&str>| -> ArrayRef { Arc::new(StringArray::from_iter_values(values)) };
    let int = |values: Vec<i64>| -> ArrayRef { Arc::new(Int64Array::from(values)) };
    let extra: Vec<(&str, DataType, bool, ArrayRef)> = vec![
        (
            "blob_sha256",
            DataType::Utf8,
            false,
            text(facts.iter().map(|f| f.blob_sha256.as_str()).collect()),
        ),
        (
            "blob_size_bytes",
            DataType::Int64,
            false,
            int(facts.iter().map(|f| f.blob_size_bytes as i64).collect()),
        ),
        (
            "source_format",
            DataType::Utf8,
            false,
            text(facts.iter().map(|f| f.source_format.as_str()).collect()),
        ),
        (
            "source_width_px",
            DataType::Int64,
            false,
            int(facts.iter().map(|f| i64::from(f.source_width_px)).collect()),
        ),
        (
            "source_height_px",
            DataType::Int64,
            false,
            int(facts
                .iter()
                .map(|f| i64::from(f.source_height_px))
                .collect()),
        ),
        (
            "stretch",
            DataType::Utf8,
            true,
            Arc::new(
                facts
                    .iter()
                    .map(|f| f.stretch.as_deref())
                    .collect::<StringArray>(),
            ),
        ),
        (
            "image_sha256",
            DataType::Utf8,
            false,
            text(facts.iter().map(|f| f.image_sha256.as_str()).collect()),
        ),
        (
            "image_size_bytes",
            DataType::Int64,
            false,
            int(facts.iter().map(|f| f.image_size_bytes as i64).collect()),
        ),
        (
            "member",
            DataType::Utf8,
            false,
            Arc::new(StringArray::from_iter_values(
                facts.iter().map(|f| format!("{}.jpg", f.key)),
            )),
        ),
    ];
    for (name, data_type, nullable, column) in extra {
        if selected.schema().field_with_name(name).is_ok() {
            return Err(PipelineError::Invalid(format!(
                "the samples model returns a column named {name}, which the pipeline adds itself; rename it"
            )));
        }
        fields.push(Field::new(name, data_type, nullable));
        columns.push(column);
    }
    Ok(RecordBatch::try_new(
        Arc::new(Schema::new(fields)),
        columns,
    )?)
}

/// Columns that describe where a sample is stored rather than what it is. They are left
/// out of the sample's JSON and the fingerprint, so a sample moved to another shard is
/// unchanged.
pub const LAYOUT_COLUMNS: [&str; 2] = ["sample_sha256", "shard"];

/// Appends `sample_sha256` (of the sample's JSON) and `shard`.
fn append_layout_columns(
    batch: &RecordBatch,
    sample_hashes: &[String],
    shards: &[String],
) -> Result<RecordBatch> {
    for name in LAYOUT_COLUMNS {
        if batch.schema().field_with_name(name).is_ok() {
            return Err(PipelineError::Invalid(format!(
                "the samples model returns a column named {name}, which the pipeline adds itself; rename it"
            )));
        }
    }
    let mut fields: Vec<Field> = batch
        .schema()
        .fields()
        .iter()
        .map(|f| f.as_ref().clone())
        .collect();
    let mut columns = batch.columns().to_vec();
    fields.push(Field::new("sample_sha256", DataType::Utf8, false));
    columns.push(Arc::new(StringArray::from_iter_values(sample_hashes)));
    fields.push(Field::new("shard", DataType::Utf8, false));
    columns.push(Arc::new(StringArray::from_iter_values(shards)));
    Ok(RecordBatch::try_new(
        Arc::new(Schema::new(fields)),
        columns,
    )?)
}

/// Serializes each row as one JSON object with every column of the published table.
fn metadata_lines(batch: &RecordBatch) -> Result<Vec<Vec<u8>>> {
    let mut buffer = Vec::new();
    {
        // Explicit nulls: a missing position is `"s_ra": null`, not an absent key.
        let mut writer = datafusion::arrow::json::WriterBuilder::new()
            .with_explicit_nulls(true)
            .build::<_, datafusion::arrow::json::writer::LineDelimited>(&mut buffer);
        writer.write(batch)?;
        writer.finish()?;
    }
    let lines: Vec<Vec<u8>> = buffer
        .split(|b| *b == b'\n')
        .filter(|line| !line.is_empty())
        .map(<[u8]>::to_vec)
        .collect();
    if lines.len() != batch.num_rows() {
        return Err(PipelineError::Invalid(format!(
            "metadata serialization produced {} lines for {} rows",
            lines.len(),
            batch.num_rows()
        )));
    }
    Ok(lines)
}

/// Rows serialized at once by [`metadata_hashes`], which bounds the JSON held in memory.
const METADATA_CHUNK_ROWS: usize = 4096;

/// Returns each row's metadata SHA-256 and the dataset fingerprint: the SHA-256 of every
/// row's metadata JSON followed by a newline, in published order. Serializes the rows a
/// chunk at a time and keeps only the hashes.
fn metadata_hashes(batch: &RecordBatch) -> Result<(Vec<String>, String)> {
    let mut hashes = Vec::with_capacity(batch.num_rows());
    let mut fingerprint = Sha256::new();

    for offset in (0..batch.num_rows()).step_by(METADATA_CHUNK_ROWS) {
        let length = METADATA_CHUNK_ROWS.min(batch.num_rows() - offset);
        for line in metadata_lines(&batch.slice(offset, length))? {
            hashes.push(hex::encode(Sha256::digest(&line)));
            fingerprint.update(&line);
            fingerprint.update(b"\n");
        }
    }
    Ok((hashes, hex::encode(fingerprint.finalize())))
}

/// Drops the columns that [`append_layout_columns`] added, giving the columns that the
/// metadata JSON covers.
fn without_layout_columns(batch: &RecordBatch) -> Result<RecordBatch> {
    let schema = batch.schema();
    let metadata_columns: Vec<usize> = (0..schema.fields().len())
        .filter(|&i| !LAYOUT_COLUMNS.contains(&schema.field(i).name().as_str()))
        .collect();
    Ok(batch.project(&metadata_columns)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_have_no_dots_and_differ_per_uri() {
        let a = sample_key(13012, "JBZ504EOQ", "mast:HST/product/jbz504eoq_raw.fits");
        let b = sample_key(13012, "JBZ504EOQ", "mast:HST/product/jbz504eoq_flt.fits");
        assert!(a.starts_with("hst13012_jbz504eoq_"), "{a}");
        assert_ne!(a, b);
        assert!(crate::dataset::shards::validate_key(&a).is_ok());
        let odd = sample_key(1, "a.b/c d", "mast:x");
        assert!(crate::dataset::shards::validate_key(&odd).is_ok(), "{odd}");
    }

    fn fact(row: usize, key: &str, split: &str) -> ImageFacts {
        ImageFacts {
            row,
            key: key.into(),
            split: split.into(),
            blob_sha256: "b".repeat(64),
            blob_size_bytes: 10,
            image_sha256: "c".repeat(64),
            image_size_bytes: 5,
            source_format: "jpeg".into(),
            source_width_px: 100,
            source_height_px: 80,
            stretch: None,
        }
    }

    #[test]
    fn shards_restart_numbering_per_split() {
        let facts = vec![
            fact(0, "a", "train"),
            fact(1, "b", "train"),
            fact(2, "c", "train"),
            fact(3, "d", "val"),
        ];
        let shards = assign_shards(&facts, 2);
        assert_eq!(
            shards,
            [
                "train-00000.tar",
                "train-00000.tar",
                "train-00001.tar",
                "val-00000.tar"
            ]
        );
    }

    #[test]
    fn duplicate_keys_are_rejected() {
        let facts = vec![fact(0, "a", "train"), fact(1, "a", "train")];
        let error = check_unique_keys(&facts, "samples")
            .unwrap_err()
            .to_string();
        assert!(error.contains("sample key a"), "{error}");
    }

    #[test]
    fn chunked_hashes_match_whole_batch() {
        let rows = METADATA_CHUNK_ROWS + 5;
        let batch = RecordBatch::try_from_iter([
            (
                "key",
                Arc::new(StringArray::from_iter_values(
                    (0..rows).map(|i| format!("k{i}")),
                )) as ArrayRef,
            ),
            (
                "caption",
                Arc::new(StringArray::from_iter_values(
                    (0..rows).map(|i| format!("c \"{i}\"")),
                )) as ArrayRef,
            ),
        ])
        .unwrap();

        let (hashes, fingerprint) = metadata_hashes(&batch).unwrap();

        let lines = metadata_lines(&batch).unwrap();
        assert_eq!(hashes.len(), rows);
        assert_eq!(
            hashes[rows - 1],
            hex::encode(Sha256::digest(&lines[rows - 1]))
        );
        let mut whole = Sha256::new();
        for line in &lines {
            whole.update(line);
            whole.update(b"\n");
        }
        assert_eq!(fingerprint, hex::encode(whole.finalize()));
    }
}
