//! The publish stage: shards, skips and the manifest of a new version, staged and then
//! made visible by one Delta commit.

use std::path::Path;
use std::sync::Arc;

use datafusion::arrow::array::{RecordBatch, StringArray};
use sha2::Digest as _;

use super::assemble::AssembledSamples;
use super::config::PipelineConfig;
use super::layout::{Layout, PreviousShards, ShardJob, plan_layout, read_previous};
use super::report::RunReport;
use super::skips::{Skip, count_by_reason};
use super::tables;
use crate::dataset::shards::{OwnedShardSample, ShardInfo, write_shard};
use crate::dataset::versions::{DatasetPaths, Lineage, VersionRecord, publish};
use crate::error::{PipelineError, Result};
use crate::store::blobs::{BlobStore, write_atomic};

/// Stages shards, skips and the manifest, then publishes them as the version after
/// `latest`, reusing the shards of `latest` whose samples are unchanged.
#[allow(clippy::too_many_arguments)]
pub(super) async fn publish_version(
    config: &PipelineConfig,
    paths: &DatasetPaths,
    store: &BlobStore,
    latest: Option<&VersionRecord>,
    assembled: AssembledSamples,
    lineage: Lineage,
    report: &RunReport,
) -> Result<()> {
    let run_id = report.run_id.as_str();
    let version = latest.map_or(1, |v| v.version + 1);
    let staging = paths.staging_dir(run_id);
    let shards_dir = staging.join("shards");
    std::fs::create_dir_all(&shards_dir).map_err(|e| PipelineError::io(&shards_dir, e))?;

    // A latest version that cannot be read (a lost data file) only costs the reuse of its
    // shards: every shard is written again.
    let previous = match latest {
        Some(record) => read_previous(paths, record).await.unwrap_or_else(|error| {
            tracing::warn!(version = record.version, %error, "cannot read the latest version; writing every shard");
            None
        }),
        None => None,
    };
    let layout = plan_layout(
        &assembled.rows,
        previous.as_ref(),
        config.shards.samples_per_shard,
    );
    let shards = write_shards(store, &shards_dir, &assembled, &layout, previous.as_ref())?;
    let batch = replace_shard_column(&assembled.batch, &layout.shard_of_row)?;
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
        stage_inputs: lineage.stage_inputs,
        archive_state: lineage.archive_state,
        released_before_mjd: lineage.released_before_mjd,
    };
    let manifest = serde_json::to_vec_pretty(&record).expect("VersionRecord serializes");
    write_atomic(&staging.join("manifest.json"), &manifest)?;

    publish(paths, &staging, batch, &record).await?;
    tracing::info!(
        version,
        samples = assembled.rows.len(),
        shards_reused = layout.reused_shards(),
        "published"
    );
    Ok(())
}

/// Links the reused shards and writes the new ones.
fn write_shards(
    store: &BlobStore,
    dir: &Path,
    assembled: &AssembledSamples,
    layout: &Layout,
    previous: Option<&PreviousShards>,
) -> Result<Vec<ShardInfo>> {
    let mut shards = Vec::new();
    for job in &layout.jobs {
        match job {
            ShardJob::Reuse { info, from, rows } => {
                if let Err(reason) = check_published_shard(from, info) {
                    // A damaged earlier file must not spread into the new version.
                    tracing::warn!(shard = %info.name, %reason, "rewriting instead of reusing");
                    shards.push(write_rows(
                        store,
                        dir,
                        assembled,
                        &info.name,
                        &info.split,
                        rows,
                    )?);
                    continue;
                }
                link_or_copy(from, &dir.join(&info.name))?;
                let mut info = info.clone();
                info.reused_from = info.reused_from.or(previous.map(|p| p.version));
                shards.push(info);
            }
            ShardJob::Write { name, split, rows } => {
                shards.push(write_rows(store, dir, assembled, name, split, rows)?);
            }
        }
    }
    shards.sort_by(|a, b| (&a.split, &a.name).cmp(&(&b.split, &b.name)));
    Ok(shards)
}

/// Writes `rows` of the assembled samples as the shard `name`.
fn write_rows(
    store: &BlobStore,
    dir: &Path,
    assembled: &AssembledSamples,
    name: &str,
    split: &str,
    rows: &[usize],
) -> Result<ShardInfo> {
    let texts = assembled.captions_and_metadata(rows)?;
    let mut samples = rows
        .iter()
        .zip(texts)
        .map(|(&row, (caption, metadata_json))| {
            let row = &assembled.rows[row];
            Ok(OwnedShardSample {
                key: row.key.clone(),
                jpeg: store.read_verified(&row.image_sha256)?,
                caption,
                metadata_json,
            })
        });
    write_shard(dir, name, split, &mut samples)
}

/// Checks that an earlier version's shard still has the size and SHA-256 its manifest
/// records; returns what differs.
fn check_published_shard(path: &Path, info: &ShardInfo) -> std::result::Result<(), String> {
    let bytes = std::fs::read(path).map_err(|e| format!("{}: {e}", path.display()))?;
    if bytes.len() as u64 != info.size_bytes {
        return Err(format!(
            "{} has {} bytes, its manifest says {}",
            path.display(),
            bytes.len(),
            info.size_bytes
        ));
    }
    let sha256 = hex::encode(sha2::Sha256::digest(&bytes));
    if sha256 != info.sha256 {
        return Err(format!(
            "{} has SHA-256 {sha256}, its manifest says {}",
            path.display(),
            info.sha256
        ));
    }
    Ok(())
}

/// Hard-links a published shard into the staged version; copies where links fail (for
/// example on file systems without them). Published files are never written again, so
/// sharing the inode is safe.
fn link_or_copy(from: &Path, to: &Path) -> Result<()> {
    if std::fs::hard_link(from, to).is_ok() {
        return Ok(());
    }
    std::fs::copy(from, to)
        .map(|_| ())
        .map_err(|e| PipelineError::io(from, e))
}

/// Returns the samples table with its `shard` column set to the final layout.
fn replace_shard_column(batch: &RecordBatch, shard_of_row: &[String]) -> Result<RecordBatch> {
    let index = batch.schema().index_of("shard")?;
    let mut columns = batch.columns().to_vec();
    columns[index] = Arc::new(StringArray::from_iter_values(shard_of_row));
    Ok(RecordBatch::try_new(batch.schema(), columns)?)
}

pub(crate) fn write_skips(path: &Path, skips: &[Skip]) -> Result<()> {
    let batch = tables::skips_batch(skips);
    let file = std::fs::File::create(path).map_err(|e| PipelineError::io(path, e))?;
    let mut writer = datafusion::parquet::arrow::ArrowWriter::try_new(file, batch.schema(), None)
        .map_err(|e| PipelineError::parquet_write(path, e))?;
    writer
        .write(&batch)
        .and_then(|()| writer.close().map(|_| ()))
        .map_err(|e| PipelineError::parquet_write(path, e))?;
    std::fs::File::open(path)
        .and_then(|file| file.sync_all())
        .map_err(|e| PipelineError::io(path, e))
}
