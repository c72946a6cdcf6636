//! The publish stage: shards, skips and the manifest of a new version, staged and then
//! made visible by one Delta commit.

use std::path::Path;

use super::assemble::AssembledSamples;
use super::config::PipelineConfig;
use super::run::RunReport;
use super::skips::{Skip, count_by_reason};
use super::tables;
use crate::dataset::shards::{OwnedShardSample, ShardInfo, write_split};
use crate::dataset::versions::{DatasetPaths, VersionRecord, publish};
use crate::error::{PipelineError, Result};
use crate::store::blobs::{BlobStore, write_atomic};

/// Stages shards, skips and the manifest, then publishes them as `version`.
#[allow(clippy::too_many_arguments)]
pub(super) async fn publish_version(
    config: &PipelineConfig,
    paths: &DatasetPaths,
    store: &BlobStore,
    version: u64,
    assembled: AssembledSamples,
    report: &RunReport,
) -> Result<()> {
    let run_id = report.run_id.as_str();
    let staging = paths.staging_dir(run_id);
    let shards_dir = staging.join("shards");
    std::fs::create_dir_all(&shards_dir).map_err(|e| PipelineError::io(&shards_dir, e))?;

    let shards = write_shards(config, store, &shards_dir, &assembled)?;
    write_skips(&staging.join("skips.parquet"), &report.skips)?;

    let record = VersionRecord {
        dataset: config.dataset.name.clone(),
        version,
        created_at: chrono::Utc::now().to_rfc3339(),
        run_id: run_id.to_string(),
        pipeline_sha256: config.file_sha256.clone(),
        fingerprint: assembled.fingerprint.clone(),
        counts: report.counts.clone(),
        skips_by_reason: count_by_reason(&report.skips),
        shards,
    };
    let manifest = serde_json::to_vec_pretty(&record).expect("VersionRecord serializes");
    write_atomic(&staging.join("manifest.json"), &manifest)?;

    publish(paths, &staging, assembled.batch, &record).await?;
    tracing::info!(version, samples = assembled.rows.len(), "published");
    Ok(())
}

fn write_shards(
    config: &PipelineConfig,
    store: &BlobStore,
    dir: &Path,
    assembled: &AssembledSamples,
) -> Result<Vec<ShardInfo>> {
    let mut shards = Vec::new();
    for split in ["train", "val"] {
        let mut samples = assembled
            .rows
            .iter()
            .filter(|row| row.split == split)
            .map(|row| {
                Ok(OwnedShardSample {
                    key: row.key.clone(),
                    jpeg: store.read_verified(&row.image_sha256)?,
                    caption: row.caption.clone(),
                    metadata_json: row.metadata_json.clone(),
                })
            });
        shards.extend(write_split(
            dir,
            split,
            &mut samples,
            config.shards.samples_per_shard,
        )?);
    }
    Ok(shards)
}

fn write_skips(path: &Path, skips: &[Skip]) -> Result<()> {
    let batch = tables::skips_batch(skips);
    let file = std::fs::File::create(path).map_err(|e| PipelineError::io(path, e))?;
    let mut writer =
        datafusion::parquet::arrow::ArrowWriter::try_new(file, batch.schema(), None)
            .map_err(|e| PipelineError::Invalid(format!("cannot write {}: {e}", path.display())))?;
    writer
        .write(&batch)
        .and_then(|()| writer.close().map(|_| ()))
        .map_err(|e| PipelineError::Invalid(format!("cannot write {}: {e}", path.display())))?;
    std::fs::File::open(path)
        .and_then(|file| file.sync_all())
        .map_err(|e| PipelineError::io(path, e))
}
