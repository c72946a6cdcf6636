//! Training data: the samples of one split of a published dataset version, turned into
//! batches of normalized pixels and token ids.
//!
//! Invariants:
//! - Every random choice of step `s` (which samples, which rotation, flip and crop, which
//!   caption chunk) is a pure function of the run's seed and `s`. Each epoch is one seeded
//!   permutation of the split, cut into whole batches (see [`train_indices`]). A run resumed at step `s` therefore sees exactly
//!   the batches the uninterrupted run would have seen, with no generator state to save.
//! - Shards are indexed once (member offsets); image bytes are read from the shard files
//!   when a batch needs them, so memory holds only the decoded images that fit in
//!   `decoded_cache_mib`, never the whole dataset's files.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::sync::mpsc::{Receiver, SyncSender, sync_channel};
use std::sync::{Arc, OnceLock};
use std::thread::JoinHandle;

use paperclip_clip::augment::{AugmentMode, RgbImage, augment_batch, resize_square};
use paperclip_clip::chunk::sample_chunk;
use paperclip_clip::rng::Rng;
use paperclip_clip::tokenizer::ClipTokenizer;
use rayon::prelude::*;
use serde_json::Value;

use super::error::TrainError;
use crate::dataset::diff::resolve_version;
use crate::dataset::versions::{DatasetPaths, VersionRecord};

/// Location of one sample's image in its shard, and its caption.
#[derive(Debug, Clone)]
pub struct SampleRef {
    /// Sample key.
    pub key: String,
    /// Proposal id from the sample metadata (0 when absent).
    pub proposal_id: i64,
    /// The caption field's text.
    pub caption: String,
    shard: Arc<PathBuf>,
    image_offset_bytes: u64,
    image_len_bytes: u64,
    metadata_offset_bytes: u64,
    metadata_len_bytes: u64,
}

/// One split of one dataset version.
#[derive(Debug)]
pub struct SplitData {
    /// Dataset name.
    pub dataset: String,
    /// Published version.
    pub version: u64,
    /// Split name.
    pub split: String,
    /// Samples in shard order.
    pub samples: Vec<SampleRef>,
    /// Images are padded to squares and resized to this side once, when decoded.
    resize_px: Option<usize>,
    cache: Option<Vec<OnceLock<Arc<RgbImage>>>>,
}

/// Opens a dataset version's manifest.
pub async fn open_version(
    data_dir: &Path,
    name: &str,
    version_text: &str,
) -> Result<VersionRecord, TrainError> {
    let paths = DatasetPaths::new(data_dir, name);
    if !paths.root.exists() {
        let known = crate::dataset::versions::list_datasets(data_dir)?;
        return Err(TrainError::Data(format!(
            "dataset {name:?} not found under {}; known datasets: {}. Publish it with \
             `paperclip run` or fix data.dataset",
            data_dir.display(),
            if known.is_empty() {
                "none".to_string()
            } else {
                known.join(", ")
            }
        )));
    }
    let version = resolve_version(&paths, version_text.trim_start_matches('@')).await?;
    let manifest = paths.version_dir(version).join("manifest.json");
    let text = std::fs::read_to_string(&manifest).map_err(|source| TrainError::Io {
        path: manifest.clone(),
        source,
    })?;
    serde_json::from_str(&text).map_err(|err| {
        TrainError::Data(format!(
            "manifest {} is not readable: {err}",
            manifest.display()
        ))
    })
}

impl SplitData {
    /// Indexes every shard of `split` in the version and reads each sample's caption field.
    pub fn load(
        data_dir: &Path,
        record: &VersionRecord,
        split: &str,
        caption_field: &str,
        decoded_cache_mib: u64,
        resize_px: Option<usize>,
    ) -> Result<Self, TrainError> {
        let paths = DatasetPaths::new(data_dir, &record.dataset);
        let shard_dir = paths.version_dir(record.version).join("shards");
        let mut samples = Vec::new();
        for shard in record.shards.iter().filter(|s| s.split == split) {
            let path = Arc::new(shard_dir.join(&shard.name));
            let indexed = index_shard(&path, caption_field)?;
            if indexed.len() != shard.samples {
                return Err(TrainError::Data(format!(
                    "shard {} holds {} samples, but the manifest of {}@{} lists {}; the file \
                     is cut or altered, run `paperclip datasets verify {}`",
                    path.display(),
                    indexed.len(),
                    record.dataset,
                    record.version,
                    shard.samples,
                    record.dataset
                )));
            }
            samples.extend(indexed);
        }
        if samples.is_empty() {
            let splits: BTreeMap<&str, usize> =
                record.shards.iter().fold(BTreeMap::new(), |mut acc, s| {
                    *acc.entry(s.split.as_str()).or_default() += s.samples;
                    acc
                });
            return Err(TrainError::Data(format!(
                "{}@{} has no samples in split {split:?}; splits with samples: {splits:?}",
                record.dataset, record.version
            )));
        }

        // Stored images are 512-pixel squares unless resized when decoded.
        let side_px = resize_px.unwrap_or(512) as u64;
        let decoded_mib = (samples.len() as u64 * side_px * side_px * 3).div_ceil(1 << 20);
        let cache = (decoded_mib <= decoded_cache_mib)
            .then(|| (0..samples.len()).map(|_| OnceLock::new()).collect());
        Ok(Self {
            dataset: record.dataset.clone(),
            version: record.version,
            split: split.to_string(),
            samples,
            resize_px,
            cache,
        })
    }

    /// Returns whether decoded images are kept in memory after their first use.
    pub fn caches_decoded_images(&self) -> bool {
        self.cache.is_some()
    }

    /// Reads sample `index`'s metadata (its `.json` member) from the shard.
    pub fn metadata(&self, index: usize) -> Result<Value, TrainError> {
        let sample = &self.samples[index];
        let bytes = read_member(
            &sample.shard,
            sample.metadata_offset_bytes,
            sample.metadata_len_bytes,
        )?;
        serde_json::from_slice(&bytes).map_err(|err| {
            TrainError::Data(format!(
                "sample {} in {}: metadata is not JSON: {err}",
                sample.key,
                sample.shard.display()
            ))
        })
    }

    /// Returns the decoded image of sample `index`.
    pub fn image(&self, index: usize) -> Result<Arc<RgbImage>, TrainError> {
        if let Some(cache) = &self.cache
            && let Some(image) = cache[index].get()
        {
            return Ok(image.clone());
        }
        let mut image = decode(&self.samples[index])?;
        if let Some(side_px) = self.resize_px {
            image = resize_square(&image, side_px)?;
        }
        let image = Arc::new(image);
        if let Some(cache) = &self.cache {
            let _ = cache[index].set(image.clone());
        }
        Ok(image)
    }
}

/// Reads a shard's member headers: offsets of the images, the metadata of each sample.
fn index_shard(path: &Arc<PathBuf>, caption_field: &str) -> Result<Vec<SampleRef>, TrainError> {
    let file = File::open(path.as_path()).map_err(|source| TrainError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    let mut archive = tar::Archive::new(file);
    let entries = archive.entries().map_err(|source| TrainError::Io {
        path: path.to_path_buf(),
        source,
    })?;

    let mut images: BTreeMap<String, (u64, u64)> = BTreeMap::new();
    let mut metadata: Vec<(String, Vec<u8>, (u64, u64))> = Vec::new();
    for entry in entries {
        let mut entry = entry.map_err(|source| TrainError::Io {
            path: path.to_path_buf(),
            source,
        })?;
        let name = entry
            .path()
            .map(|p| p.to_string_lossy().into_owned())
            .unwrap_or_default();
        let (key, extension) = crate::dataset::shards::split_member_name(&name);
        let key = key.to_string();
        match extension {
            "jpg" | "jpeg" | "png" => {
                images.insert(key, (entry.raw_file_position(), entry.size()));
            }
            "json" => {
                let position = (entry.raw_file_position(), entry.size());
                let mut bytes = Vec::new();
                entry
                    .read_to_end(&mut bytes)
                    .map_err(|source| TrainError::Io {
                        path: path.to_path_buf(),
                        source,
                    })?;
                metadata.push((key, bytes, position));
            }
            _ => {}
        }
    }

    metadata
        .into_iter()
        .map(
            |(key, bytes, (metadata_offset_bytes, metadata_len_bytes))| {
                let (offset, len) = images.get(&key).copied().ok_or_else(|| {
                    TrainError::Data(format!(
                        "shard {} has metadata for sample {key} but no image; run `paperclip \
                     datasets verify` on the dataset",
                        path.display()
                    ))
                })?;
                let (caption, proposal_id) = read_metadata(&bytes, caption_field, &key, path)?;
                Ok(SampleRef {
                    key,
                    proposal_id,
                    caption,
                    shard: path.clone(),
                    image_offset_bytes: offset,
                    image_len_bytes: len,
                    metadata_offset_bytes,
                    metadata_len_bytes,
                })
            },
        )
        .collect()
}

fn read_metadata(
    bytes: &[u8],
    caption_field: &str,
    key: &str,
    shard: &Path,
) -> Result<(String, i64), TrainError> {
    let value: Value = serde_json::from_slice(bytes).map_err(|err| {
        TrainError::Data(format!(
            "sample {key} in {}: metadata is not JSON: {err}",
            shard.display()
        ))
    })?;
    let caption = match value.get(caption_field) {
        Some(Value::String(text)) => text.clone(),
        Some(Value::Null) => String::new(),
        _ => {
            let fields: Vec<&str> = value
                .as_object()
                .map(|o| {
                    o.iter()
                        .filter(|(_, v)| v.is_string())
                        .map(|(k, _)| k.as_str())
                        .collect()
                })
                .unwrap_or_default();
            return Err(TrainError::Data(format!(
                "sample {key} in {} has no text field {caption_field:?}; choose one of: {} \
                 (data.caption_field in a training config, --caption-field or \
                 --abstract-field on the command line)",
                shard.display(),
                fields.join(", ")
            )));
        }
    };
    let proposal_id = value
        .get("proposal_id")
        .and_then(Value::as_i64)
        .unwrap_or(0);
    Ok((caption, proposal_id))
}

/// Reads `len_bytes` bytes at `offset_bytes` of a shard file.
fn read_member(path: &Path, offset_bytes: u64, len_bytes: u64) -> Result<Vec<u8>, TrainError> {
    let io = |source| TrainError::Io {
        path: path.to_path_buf(),
        source,
    };
    let mut file = File::open(path).map_err(io)?;
    file.seek(SeekFrom::Start(offset_bytes)).map_err(io)?;
    let mut bytes = vec![0u8; len_bytes as usize];
    file.read_exact(&mut bytes).map_err(io)?;
    Ok(bytes)
}

fn decode(sample: &SampleRef) -> Result<RgbImage, TrainError> {
    let path = sample.shard.as_path();
    let bytes = read_member(path, sample.image_offset_bytes, sample.image_len_bytes)?;

    let image = image::load_from_memory(&bytes).map_err(|err| {
        TrainError::Data(format!(
            "image of sample {} in {} cannot be decoded: {err}",
            sample.key,
            path.display()
        ))
    })?;
    let rgb = image.to_rgb8();
    let (width, height) = rgb.dimensions();
    Ok(RgbImage::new(
        width as usize,
        height as usize,
        rgb.into_raw(),
    )?)
}

/// Recipe that assembles one batch from a split.
#[derive(Debug, Clone)]
pub struct BatchRecipe {
    /// Pairs per batch.
    pub batch_size: usize,
    /// Run seed.
    pub seed: u64,
    /// Image augmentation.
    pub augment: AugmentMode,
    /// Crop side (the model's image size).
    pub crop_px: usize,
    /// Caption chunking in words.
    pub chunk_words: Option<usize>,
    /// Token context length.
    pub context_length: usize,
}

/// A batch ready for the model.
#[derive(Debug)]
pub struct Batch {
    /// The 0-based step (training) or batch number (validation).
    pub step: u64,
    /// `[batch, 3, crop, crop]` normalized pixels.
    pub pixels: Vec<f32>,
    /// `[batch, context]` token ids.
    pub ids: Vec<u32>,
    /// Proposal ids, for same-proposal positives.
    pub groups: Vec<i64>,
    /// Sample keys, for error messages.
    pub keys: Vec<String>,
}

/// Sample indices of training step `step`.
///
/// Each epoch is a seeded permutation of the split cut into `len / batch_size` whole
/// batches; the `len % batch_size` samples left at the end of a permutation sit that epoch
/// out, so no batch contains a sample twice. A split smaller than one batch is the exception:
/// its batches run through the permutations one after the other and repeat samples.
pub fn train_indices(len: usize, batch_size: usize, seed: u64, step: u64) -> Vec<usize> {
    let permutation = |epoch: u64| {
        let mut order: Vec<usize> = (0..len).collect();
        Rng::derived(seed, &format!("epoch-{epoch}")).shuffle(&mut order);
        order
    };
    if len >= batch_size {
        let per_epoch = (len / batch_size) as u64;
        let order = permutation(step / per_epoch);
        let start = (step % per_epoch) as usize * batch_size;
        return order[start..start + batch_size].to_vec();
    }
    let mut permutations: BTreeMap<u64, Vec<usize>> = BTreeMap::new();
    let start = step * batch_size as u64;
    (0..batch_size as u64)
        .map(|i| {
            let position = start + i;
            let epoch = position / len as u64;
            let order = permutations
                .entry(epoch)
                .or_insert_with(|| permutation(epoch));
            order[(position % len as u64) as usize]
        })
        .collect()
}

/// Builds the batch of the given sample indices; `purpose` separates the random streams
/// of training and validation.
pub fn build_batch(
    data: &SplitData,
    tokenizer: &ClipTokenizer,
    recipe: &BatchRecipe,
    indices: &[usize],
    step: u64,
    purpose: &str,
) -> Result<Batch, TrainError> {
    let images: Vec<Arc<RgbImage>> = indices
        .par_iter()
        .map(|&i| data.image(i))
        .collect::<Result<_, _>>()?;
    let refs: Vec<&RgbImage> = images.iter().map(Arc::as_ref).collect();
    let mut augment_rng = Rng::derived(recipe.seed, &format!("{purpose}-augment-{step}"));
    let pixels = augment_batch(
        &refs,
        recipe.augment,
        recipe.crop_px,
        None,
        &mut augment_rng,
    )?;

    let mut caption_rng = Rng::derived(recipe.seed, &format!("{purpose}-captions-{step}"));
    let mut ids = Vec::with_capacity(indices.len() * recipe.context_length);
    for &i in indices {
        let caption = &data.samples[i].caption;
        let text = match recipe.chunk_words {
            Some(words) => sample_chunk(caption, words, &mut caption_rng),
            None => caption.clone(),
        };
        ids.extend(tokenizer.encode_padded(&text, recipe.context_length)?);
    }

    Ok(Batch {
        step,
        pixels,
        ids,
        groups: indices
            .iter()
            .map(|&i| data.samples[i].proposal_id)
            .collect(),
        keys: indices
            .iter()
            .map(|&i| data.samples[i].key.clone())
            .collect(),
    })
}

/// Builds training batches ahead of the training loop on a background thread.
pub struct Prefetcher {
    receiver: Receiver<Result<Batch, TrainError>>,
    handle: Option<JoinHandle<()>>,
}

impl Prefetcher {
    /// Starts producing batches for steps `first_step..end_step`, at most `depth` ahead.
    pub fn start(
        data: Arc<SplitData>,
        tokenizer: Arc<ClipTokenizer>,
        recipe: BatchRecipe,
        (first_step, end_step): (u64, u64),
        threads: usize,
        depth: usize,
    ) -> Result<Self, TrainError> {
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .thread_name(|i| format!("paperclip-loader-{i}"))
            .build()
            .map_err(|err| TrainError::Data(format!("cannot start loader threads: {err}")))?;
        let (sender, receiver) = sync_channel(depth.max(1));
        let handle = std::thread::Builder::new()
            .name("paperclip-prefetch".into())
            .spawn(move || {
                produce(
                    &pool, &data, &tokenizer, &recipe, first_step, end_step, &sender,
                )
            })
            .map_err(|source| TrainError::Io {
                path: PathBuf::from("<prefetch thread>"),
                source,
            })?;
        Ok(Self {
            receiver,
            handle: Some(handle),
        })
    }

    /// Returns the next batch in step order, or `None` after the last step.
    pub fn next_batch(&self) -> Option<Result<Batch, TrainError>> {
        self.receiver.recv().ok()
    }
}

impl Drop for Prefetcher {
    fn drop(&mut self) {
        // Dropping the receiver makes the producer's next send fail, which ends it.
        let (_, empty) = sync_channel(0);
        drop(std::mem::replace(&mut self.receiver, empty));
        if let Some(handle) = self.handle.take() {
            let _ = handle.join();
        }
    }
}

fn produce(
    pool: &rayon::ThreadPool,
    data: &SplitData,
    tokenizer: &ClipTokenizer,
    recipe: &BatchRecipe,
    first_step: u64,
    end_step: u64,
    sender: &SyncSender<Result<Batch, TrainError>>,
) {
    for step in first_step..end_step {
        let indices = train_indices(data.samples.len(), recipe.batch_size, recipe.seed, step);
        let batch = pool.install(|| build_batch(data, tokenizer, recipe, &indices, step, "train"));
        let failed = batch.is_err();
        if sender.send(batch).is_err() || failed {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::train_indices;

    #[test]
    fn train_indices_never_repeat_within_batch() {
        for step in 0..50 {
            let mut batch = train_indices(10, 4, 3, step);
            batch.sort_unstable();
            batch.dedup();
            assert_eq!(batch.len(), 4, "step {step}");
        }
    }

    #[test]
    fn train_indices_cut_whole_batches_per_epoch() {
        let first: Vec<usize> = (0..2).flat_map(|s| train_indices(10, 4, 3, s)).collect();
        let mut seen = first.clone();
        seen.sort_unstable();
        seen.dedup();
        assert_eq!(seen.len(), 8);
        // Step 2 starts the second epoch with another permutation.
        assert_ne!(train_indices(10, 4, 3, 2), train_indices(10, 4, 3, 0));
    }
}
