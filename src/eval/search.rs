//! `embed` and `search`: an embeddings table per dataset version and checkpoint, and
//! text-to-image search over it.
//!
//! A search embeds its query with the checkpoint recorded in the table, after checking
//! that the weights file still has the recorded hash, so queries and images always come
//! from one model.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Instant;

use serde::Serialize;

use super::embeddings::{
    EmbeddedSample, EmbeddingsInfo, ImageIndex, exact_top_k, read_image_index, read_info,
    table_dir, write_table,
};
use super::error::{EvalError, io};
use super::model::{EvalModel, Matrix, ModelOptions};
use super::parse_dataset;
use crate::train::data::{SplitData, open_version};

/// Settings of `paperclip embed`.
#[derive(Debug, Clone)]
pub struct EmbedOptions {
    /// The paperclip data directory.
    pub data_dir: PathBuf,
    /// `NAME` or `NAME@N`.
    pub dataset: String,
    /// Splits to embed; every split of the version when empty.
    pub splits: Vec<String>,
    /// The sample field embedded as text.
    pub caption_field: String,
    /// The checkpoint.
    pub checkpoint: String,
    /// Vocabulary and resize settings.
    pub model: ModelOptions,
    /// Pairs per forward pass.
    pub batch_size: usize,
}

/// Embeds the splits and writes the table; returns its path and description.
/// `progress` gets the split, the samples done and the samples in the split.
pub async fn embed(
    options: &EmbedOptions,
    progress: &dyn Fn(&str, usize, usize),
) -> Result<(PathBuf, EmbeddingsInfo), EvalError> {
    let (name, version) = parse_dataset(&options.dataset)?;
    let record = open_version(&options.data_dir, name, version).await?;
    let checkpoint = absolute(&options.checkpoint);
    let model_options = ModelOptions {
        data_dir: Some(options.data_dir.clone()),
        ..options.model.clone()
    };
    let model = EvalModel::load(&checkpoint, &checkpoint, &model_options)?;

    let mut splits = options.splits.clone();
    if splits.is_empty() {
        splits = record.shards.iter().map(|s| s.split.clone()).collect();
    }
    splits.sort();
    splits.dedup();
    keep_covered_splits(
        &options.data_dir,
        &record.dataset,
        record.version,
        &model,
        &splits,
    )?;
    let mut samples = Vec::new();
    let (mut images, mut texts) = (Matrix::default(), Matrix::default());
    for split in &splits {
        let _span = tracing::info_span!("embed", split = %split).entered();
        let data = SplitData::load(
            &options.data_dir,
            &record,
            split,
            &options.caption_field,
            0,
            model.resize_px,
        )?;
        let total = data.samples.len();
        let (split_images, split_texts) =
            model.embed_split(&data, options.batch_size, &|done| {
                progress(split, done, total)
            })?;
        images.dim = split_images.dim;
        texts.dim = split_texts.dim;
        images.values.extend(split_images.values);
        texts.values.extend(split_texts.values);
        for (i, sample) in data.samples.iter().enumerate() {
            let metadata = data.metadata(i)?;
            samples.push(EmbeddedSample {
                key: sample.key.clone(),
                split: split.clone(),
                proposal_id: sample.proposal_id,
                target_name: metadata["target_name"].as_str().map(str::to_string),
                caption: sample.caption.clone(),
            });
        }
    }

    let info = EmbeddingsInfo {
        dataset: record.dataset.clone(),
        version: record.version,
        splits,
        caption_field: options.caption_field.clone(),
        checkpoint,
        weights_sha256: model.weights_sha256.clone(),
        vocabulary: Some(model.vocabulary.display().to_string()),
        resize_px: model.resize_px,
        dim: images.dim,
        created_at: chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
    };
    let path = write_table(&options.data_dir, &info, &samples, &images, &texts)?;
    Ok((path, info))
}

/// Rejects an embedding that would replace a table of the same checkpoint covering more
/// splits, since the rows of the splits left out would be lost.
fn keep_covered_splits(
    data_dir: &Path,
    dataset: &str,
    version: u64,
    model: &EvalModel,
    splits: &[String],
) -> Result<(), EvalError> {
    let existing = list_tables(data_dir, dataset, version)?
        .into_iter()
        .find(|(_, info)| info.weights_sha256 == model.weights_sha256);
    let Some((path, info)) = existing else {
        return Ok(());
    };
    let dropped: Vec<&str> = info
        .splits
        .iter()
        .filter(|s| !splits.contains(s))
        .map(String::as_str)
        .collect();
    if dropped.is_empty() {
        return Ok(());
    }
    Err(EvalError::Invalid(format!(
        "{} already holds the embeddings of split(s) {} for this checkpoint, which embedding \
         only {} would drop; add --split for each of them, or leave --split out to embed \
         every split",
        path.display(),
        dropped.join(", "),
        splits.join(", ")
    )))
}

/// Makes an existing path absolute, so a table found later still points at it; anything
/// else (a hub name) is returned unchanged.
fn absolute(text: &str) -> String {
    std::fs::canonicalize(text)
        .map(|p| p.display().to_string())
        .unwrap_or_else(|_| text.to_string())
}

/// Settings of `paperclip search`.
#[derive(Debug, Clone)]
pub struct SearchOptions {
    /// The paperclip data directory.
    pub data_dir: PathBuf,
    /// `NAME` or `NAME@N`.
    pub dataset: String,
    /// The text query.
    pub query: String,
    /// Hits to return.
    pub k: usize,
    /// Picks the table of this checkpoint when the version has several.
    pub checkpoint: Option<String>,
    /// Only images of this split.
    pub split: Option<String>,
}

/// One retrieved image.
#[derive(Debug, Clone, Serialize)]
pub struct SearchHit {
    /// 1 = most similar.
    pub rank: usize,
    /// Cosine similarity of the query and the image.
    pub similarity: f32,
    /// Sample key.
    pub key: String,
    /// Split.
    pub split: String,
    /// Proposal id.
    pub proposal_id: i64,
    /// Target name, when the sample has one.
    pub target_name: Option<String>,
    /// The sample's caption.
    pub caption: String,
}

/// The hits of one query.
#[derive(Debug, Clone, Serialize)]
pub struct SearchResult {
    /// The query.
    pub query: String,
    /// Dataset name.
    pub dataset: String,
    /// Dataset version.
    pub version: u64,
    /// The checkpoint that embedded the query and the images.
    pub checkpoint: String,
    /// The embeddings table searched.
    pub table: PathBuf,
    /// Images compared with the query.
    pub searched: usize,
    /// Time of the exact search alone, in milliseconds.
    pub search_ms: f64,
    /// Best first.
    pub hits: Vec<SearchHit>,
}

/// Finds the table, embeds the query with its checkpoint and returns the nearest images.
pub async fn search(options: &SearchOptions) -> Result<SearchResult, EvalError> {
    if options
        .query
        .chars()
        .all(|c| c.is_whitespace() || c.is_control())
    {
        return Err(EvalError::Invalid(
            "the query is empty; give the words to search for, for example \"strong lensing\""
                .into(),
        ));
    }
    let (name, version) = parse_dataset(&options.dataset)?;
    let record = open_version(&options.data_dir, name, version).await?;
    let path = find_table(options, &record.dataset, record.version)?;
    let index = read_image_index(&path)?;
    let model = query_model(&index.info, &path)?;
    let query = model.embed_texts(std::slice::from_ref(&options.query), 1)?;

    let clock = Instant::now();
    let (candidates, rows) = restrict_to_split(&index, options.split.as_deref())?;
    let top = exact_top_k(&candidates, query.row(0), options.k);
    let search_ms = clock.elapsed().as_secs_f64() * 1e3;

    let hits = top
        .into_iter()
        .enumerate()
        .map(|(rank, (row, similarity))| {
            let sample = &index.samples[rows.as_ref().map_or(row, |rows| rows[row])];
            SearchHit {
                rank: rank + 1,
                similarity,
                key: sample.key.clone(),
                split: sample.split.clone(),
                proposal_id: sample.proposal_id,
                target_name: sample.target_name.clone(),
                caption: sample.caption.clone(),
            }
        })
        .collect();
    Ok(SearchResult {
        query: options.query.clone(),
        dataset: record.dataset,
        version: record.version,
        checkpoint: index.info.checkpoint.clone(),
        table: path,
        searched: candidates.rows(),
        search_ms,
        hits,
    })
}

/// Selects the image rows of one split, with their table rows; without a split, the whole
/// table.
fn restrict_to_split(
    index: &ImageIndex,
    split: Option<&str>,
) -> Result<(Matrix, Option<Vec<usize>>), EvalError> {
    let Some(split) = split else {
        return Ok((index.images.clone(), None));
    };
    let rows: Vec<usize> = (0..index.samples.len())
        .filter(|&i| index.samples[i].split == split)
        .collect();
    if rows.is_empty() {
        return Err(EvalError::Invalid(format!(
            "the embeddings table has no images of split {split:?}; it contains {}",
            index.info.splits.join(", ")
        )));
    }
    let mut matrix = Matrix {
        dim: index.images.dim,
        values: Vec::with_capacity(rows.len() * index.images.dim),
    };
    for &row in &rows {
        matrix.values.extend_from_slice(index.images.row(row));
    }
    Ok((matrix, Some(rows)))
}

/// Every table of a dataset version, with what it was made from.
pub fn list_tables(
    data_dir: &Path,
    dataset: &str,
    version: u64,
) -> Result<Vec<(PathBuf, EmbeddingsInfo)>, EvalError> {
    let dir = table_dir(data_dir, dataset, version);
    if !dir.is_dir() {
        return Ok(Vec::new());
    }
    let mut tables = Vec::new();
    for entry in std::fs::read_dir(&dir).map_err(|e| io(&dir, e))? {
        let path = entry.map_err(|e| io(&dir, e))?.path();
        if path.extension().is_some_and(|e| e == "parquet") {
            let info = read_info(&path)?;
            tables.push((path, info));
        }
    }
    tables.sort_by(|a, b| a.0.cmp(&b.0));
    Ok(tables)
}

fn find_table(options: &SearchOptions, dataset: &str, version: u64) -> Result<PathBuf, EvalError> {
    let tables = list_tables(&options.data_dir, dataset, version)?;
    let embed_hint = |checkpoint: &str| {
        format!("run `paperclip embed --checkpoint {checkpoint} --dataset {dataset}@{version}`")
    };
    if tables.is_empty() {
        return Err(EvalError::Invalid(format!(
            "{dataset}@{version} has no embeddings yet; {}",
            embed_hint(options.checkpoint.as_deref().unwrap_or("CHECKPOINT"))
        )));
    }
    let Some(wanted) = &options.checkpoint else {
        if let [(path, _)] = tables.as_slice() {
            return Ok(path.clone());
        }
        return Err(EvalError::Invalid(format!(
            "{dataset}@{version} has embeddings of {} checkpoints; pick one with --checkpoint: {}",
            tables.len(),
            tables
                .iter()
                .map(|(_, info)| info.checkpoint.clone())
                .collect::<Vec<_>>()
                .join(", ")
        )));
    };
    let given_sha256 = checkpoint_sha256(wanted);
    let prefix = wanted.to_ascii_lowercase();
    let is_hex = !prefix.is_empty() && prefix.chars().all(|c| c.is_ascii_hexdigit());
    if is_hex && prefix.len() < 12 && !Path::new(wanted).exists() {
        return Err(EvalError::Invalid(format!(
            "--checkpoint {wanted} looks like a weights hash prefix; give at least 12 hex \
             digits, as in the table names under {}",
            table_dir(&options.data_dir, dataset, version).display()
        )));
    }
    tables
        .iter()
        .find(|(_, info)| {
            info.checkpoint == absolute(wanted)
                || info.checkpoint == *wanted
                || given_sha256.as_deref() == Some(info.weights_sha256.as_str())
                || (is_hex && prefix.len() >= 12 && info.weights_sha256.starts_with(&prefix))
        })
        .map(|(path, _)| path.clone())
        .ok_or_else(|| {
            EvalError::Invalid(format!(
                "{dataset}@{version} has no embeddings of checkpoint {wanted}; {} (tables exist \
                 for: {})",
                embed_hint(wanted),
                tables
                    .iter()
                    .map(|(_, info)| format!(
                        "{} ({})",
                        info.checkpoint,
                        &info.weights_sha256[..12]
                    ))
                    .collect::<Vec<_>>()
                    .join(", ")
            ))
        })
}

/// Computes the SHA-256 of a checkpoint's weights file, when the checkpoint names one on
/// disk.
fn checkpoint_sha256(checkpoint: &str) -> Option<String> {
    let path = Path::new(checkpoint);
    let file = if path.is_dir() {
        path.join(paperclip_clip::checkpoint::WEIGHTS_FILE)
    } else {
        path.to_path_buf()
    };
    file.is_file()
        .then(|| super::model::file_sha256(&file).ok())
        .flatten()
}

/// Loads the table's checkpoint and checks that its weights are the ones embedded.
fn query_model(info: &EmbeddingsInfo, table: &Path) -> Result<EvalModel, EvalError> {
    let options = ModelOptions {
        vocabulary: info.vocabulary.as_ref().map(PathBuf::from),
        resize_px: info.resize_px,
        data_dir: None,
    };
    let recorded = Path::new(&info.checkpoint);
    if recorded.is_absolute() && !recorded.exists() {
        return Err(EvalError::Invalid(format!(
            "the checkpoint {} that {} was made with no longer exists; embed again with the \
             checkpoint's new location (`paperclip embed --checkpoint ...`)",
            info.checkpoint,
            table.display()
        )));
    }
    let model = EvalModel::load(&info.checkpoint, &info.checkpoint, &options)?;
    if model.weights_sha256 != info.weights_sha256 {
        return Err(EvalError::Invalid(format!(
            "checkpoint {} changed since {} was written (weights SHA-256 {} then, {} now); run \
             `paperclip embed` again",
            info.checkpoint,
            table.display(),
            &info.weights_sha256[..12],
            &model.weights_sha256[..12]
        )));
    }
    Ok(model)
}

/// Thumbnails of the hits, in hit order, read back from the version's shards.
pub async fn hit_thumbnails(
    data_dir: &Path,
    result: &SearchResult,
    caption_field: &str,
) -> Result<Vec<Vec<u8>>, EvalError> {
    let record = open_version(data_dir, &result.dataset, &result.version.to_string()).await?;
    let mut by_split: BTreeMap<&str, Vec<usize>> = BTreeMap::new();
    for (i, hit) in result.hits.iter().enumerate() {
        by_split.entry(hit.split.as_str()).or_default().push(i);
    }
    let mut thumbnails = vec![Vec::new(); result.hits.len()];
    for (split, hits) in by_split {
        let data = SplitData::load(data_dir, &record, split, caption_field, 0, None)?;
        let positions: BTreeMap<&str, usize> = data
            .samples
            .iter()
            .enumerate()
            .map(|(i, s)| (s.key.as_str(), i))
            .collect();
        for i in hits {
            let key = result.hits[i].key.as_str();
            let index = positions.get(key).ok_or_else(|| {
                EvalError::Invalid(format!(
                    "sample {key} of the embeddings table is not in {}@{}; run `paperclip \
                     embed` again",
                    result.dataset, result.version
                ))
            })?;
            thumbnails[i] = super::output::thumbnail_png(data.image(*index)?.as_ref())?;
        }
    }
    Ok(thumbnails)
}
