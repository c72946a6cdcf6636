//! Evaluation of CLIP checkpoints on a dataset version: retrieval metrics over a whole
//! split in both directions, the original code's in-batch metric and similarity
//! histograms, written as JSON, Markdown and a self-contained HTML report.
//!
//! Every checkpoint is scored on the same pairs, in split order, with the same seed, so
//! the columns of a report compare like with like.

pub mod embeddings;
pub mod error;
pub mod judge;
pub mod labels;
pub mod metrics;
pub mod model;
pub mod output;
pub mod plots;
pub mod report;
pub mod search;
pub mod tfidf;

use std::collections::{BTreeSet, HashMap};
use std::path::PathBuf;

pub use error::EvalError;
pub use model::{EvalModel, Matrix, ModelOptions};
pub use report::EvalReport;

use crate::train::data::{SplitData, open_version};

/// Settings of `paperclip eval`.
#[derive(Debug, Clone)]
pub struct EvalOptions {
    /// The paperclip data directory.
    pub data_dir: PathBuf,
    /// `NAME` (latest version) or `NAME@N`.
    pub dataset: String,
    /// The split to score, usually `val`.
    pub split: String,
    /// The sample field used as the caption (`caption`, or another text field).
    pub caption_field: String,
    /// `(label, checkpoint)` pairs, in report order.
    pub checkpoints: Vec<(String, String)>,
    /// Vocabulary and resize settings shared by the checkpoints.
    pub model: ModelOptions,
    /// Pairs per forward pass.
    pub batch_size: usize,
    /// Seed of the in-batch order, the shuffled pairs and the example images.
    pub seed: u64,
    /// Labels of the description retrieval.
    pub labels: Vec<String>,
    /// Source of the labels, for the report: a file, or the PAPERCLIP paper's list.
    pub labels_source: String,
    /// Validation images shown with their best labels.
    pub examples: usize,
}

/// The report, plus what the HTML report draws from.
#[derive(Debug)]
pub struct Evaluation {
    /// Every metric.
    pub report: EvalReport,
    /// The evaluated split.
    pub data: SplitData,
    /// `(images, captions)` embeddings of each model, in report order.
    pub embeddings: Vec<(Matrix, Matrix)>,
}

/// Splits `NAME@N` into the name and the version text (`latest` without `@`).
pub fn parse_dataset(text: &str) -> Result<(&str, &str), EvalError> {
    let (name, version) = text.split_once('@').unwrap_or((text, "latest"));
    if name.is_empty() || version.is_empty() {
        return Err(EvalError::Invalid(format!(
            "dataset {text:?} is not NAME or NAME@VERSION; for example hst-paperclip@3"
        )));
    }
    Ok((name, version))
}

/// Embeds the split with every checkpoint and computes the report. `progress` gets the
/// model label, the pairs done and the pairs in all.
pub async fn evaluate(
    options: &EvalOptions,
    progress: &dyn Fn(&str, usize, usize),
) -> Result<Evaluation, EvalError> {
    if options.checkpoints.is_empty() {
        return Err(EvalError::Invalid(
            "no checkpoint to evaluate; give --checkpoint once, or more often to compare".into(),
        ));
    }
    let (name, version) = parse_dataset(&options.dataset)?;
    let record = open_version(&options.data_dir, name, version).await?;

    let model_options = ModelOptions {
        data_dir: Some(options.data_dir.clone()),
        ..options.model.clone()
    };
    let mut models = Vec::new();
    for (label, checkpoint) in &options.checkpoints {
        models.push(EvalModel::load(checkpoint, label, &model_options)?);
    }
    let resize_px = models[0].resize_px;
    if models.iter().any(|m| m.resize_px != resize_px) {
        return Err(EvalError::Invalid(format!(
            "the checkpoints were trained on images resized to different sides ({}); give \
             --resize-px to score them on the same images",
            models
                .iter()
                .map(|m| format!("{}: {}", m.label, model::resize_text(m.resize_px)))
                .collect::<Vec<_>>()
                .join(", ")
        )));
    }
    let data = SplitData::load(
        &options.data_dir,
        &record,
        &options.split,
        &options.caption_field,
        4096,
        resize_px,
    )?;

    check_pair_count(&data)?;

    let groups: Vec<i64> = data.samples.iter().map(|s| s.proposal_id).collect();
    let examples = labels::pick_examples(&data, options.examples, options.seed);
    let mut evals = Vec::new();
    let mut embeddings = Vec::new();
    let mut top_labels: Vec<Vec<Vec<labels::LabelScore>>> = vec![Vec::new(); examples.len()];
    for model in &models {
        let _span = tracing::info_span!("evaluate", checkpoint = %model.source).entered();
        let total = data.samples.len();
        let (images, texts) = model.embed_split(&data, options.batch_size, &|done| {
            progress(&model.label, done, total)
        })?;
        let sim =
            metrics::Similarities::new(images.dot_all(&texts)?).map_err(EvalError::Invalid)?;
        evals.push(report::model_eval(model, &sim, &groups, options.seed));
        if !examples.is_empty() {
            let label_embeddings = model.embed_texts(&options.labels, options.batch_size)?;
            for (slot, &i) in top_labels.iter_mut().zip(&examples) {
                slot.push(labels::top_labels(
                    &images,
                    i,
                    &options.labels,
                    &label_embeddings,
                    4,
                ));
            }
        }
        embeddings.push((images, texts));
    }
    let descriptions = examples
        .iter()
        .zip(top_labels)
        .map(|(&i, top_labels)| labels::Description {
            sample_index: i,
            key: data.samples[i].key.clone(),
            proposal_id: data.samples[i].proposal_id,
            caption: data.samples[i].caption.clone(),
            top_labels,
        })
        .collect();

    let report = EvalReport {
        dataset: record.dataset.clone(),
        version: record.version,
        split: options.split.clone(),
        caption_field: options.caption_field.clone(),
        samples: data.samples.len(),
        proposals: groups.iter().collect::<BTreeSet<_>>().len(),
        duplicate_captions: duplicate_captions(&data),
        seed: options.seed,
        code_version: env!("CARGO_PKG_VERSION").to_string(),
        created_at: chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
        models: evals,
        warnings: warnings(options, &data, &models).await?,
        labels: options.labels.len(),
        labels_source: options.labels_source.clone(),
        descriptions,
    };
    Ok(Evaluation {
        report,
        data,
        embeddings,
    })
}

/// Notes what limits the numbers: a split too small for some metrics, and checkpoints
/// trained on pairs of this split.
async fn warnings(
    options: &EvalOptions,
    data: &SplitData,
    models: &[EvalModel],
) -> Result<Vec<String>, EvalError> {
    let n = data.samples.len();
    let mut warnings = Vec::new();
    if n < report::IN_BATCH_SIZE {
        warnings.push(format!(
            "the split has {}, fewer than a batch of {}: the in-batch metric uses one batch \
             of {n}, and top-k% is n/a where k·N is below 1",
            report::count(n, "pair"),
            report::IN_BATCH_SIZE
        ));
    }
    if n < 2 {
        warnings.push("with one pair, the shuffled pairs are the matched pairs".into());
    }
    for model in models {
        let overlap = training_overlap(&options.data_dir, &options.caption_field, data, model);
        warnings.extend(overlap.await?);
    }
    Ok(warnings)
}

/// Says when `model` was trained on proposals of the split `data`; `text_field` is a
/// sample field the training version's samples have, to read them.
pub(crate) async fn training_overlap(
    data_dir: &std::path::Path,
    text_field: &str,
    data: &SplitData,
    model: &EvalModel,
) -> Result<Option<String>, EvalError> {
    let Some(origin) = &model.origin else {
        return Ok(None);
    };
    if origin.dataset != data.dataset {
        return Ok(None);
    }
    if origin.dataset_version == data.version {
        // Splits of one version are proposal-disjoint, so only the training split overlaps.
        return Ok((data.split == origin.train_split).then(|| {
            format!(
                "{} was trained on this split ({} of {}@{})",
                model.label, origin.train_split, origin.dataset, origin.dataset_version
            )
        }));
    }
    let record = open_version(
        data_dir,
        &origin.dataset,
        &origin.dataset_version.to_string(),
    )
    .await;
    let Ok(record) = record else {
        return Ok(Some(format!(
            "{} was trained on {}@{}, which is no longer readable, so its overlap with this \
             split is unknown",
            model.label, origin.dataset, origin.dataset_version
        )));
    };
    let Ok(trained) = SplitData::load(data_dir, &record, &origin.train_split, text_field, 0, None)
    else {
        return Ok(Some(format!(
            "{} was trained on split {} of {}@{}, which could not be read, so its overlap \
             with this split is unknown",
            model.label, origin.train_split, origin.dataset, origin.dataset_version
        )));
    };
    let trained: BTreeSet<i64> = trained.samples.iter().map(|s| s.proposal_id).collect();
    let evaluated: BTreeSet<i64> = data.samples.iter().map(|s| s.proposal_id).collect();
    let shared = evaluated.intersection(&trained).count();
    Ok((shared > 0).then(|| {
        format!(
            "{} of the {} of this split were in the training split of {}@{}, which {} was \
             trained on",
            shared,
            report::count(evaluated.len(), "proposal"),
            origin.dataset,
            origin.dataset_version,
            model.label
        )
    }))
}

/// Most pairs one evaluation scores: its N×N similarity matrix of f32 is then at most
/// 3.6 GB.
pub const MAX_PAIRS: usize = 30_000;

// TODO: compute ranks in blocks of rows and columns instead of holding the whole N×N
// matrix, which would lift MAX_PAIRS.
fn check_pair_count(data: &SplitData) -> Result<(), EvalError> {
    let n = data.samples.len();
    if n <= MAX_PAIRS {
        return Ok(());
    }
    Err(EvalError::Invalid(format!(
        "split {:?} of {}@{} has {n} pairs, more than the {MAX_PAIRS} an evaluation holds in \
         memory (its similarity matrix would take {:.1} GB); evaluate the validation split",
        data.split,
        data.dataset,
        data.version,
        (n * n * 4) as f64 / 1e9
    )))
}

/// Pairs whose caption text equals another pair's.
fn duplicate_captions(data: &SplitData) -> usize {
    let mut counts: HashMap<&str, usize> = HashMap::new();
    for sample in &data.samples {
        *counts.entry(sample.caption.as_str()).or_default() += 1;
    }
    counts.values().filter(|&&n| n > 1).sum()
}
