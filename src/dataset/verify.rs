//! `paperclip datasets verify`: checks every published version against its record.
//!
//! Reading is manifest-driven: the shards a version has are the ones its record lists, so a
//! missing, truncated, altered or unlisted file is reported instead of guessed around.

use std::fmt;
use std::sync::Arc;

use datafusion::prelude::SessionContext;
use serde::Serialize;

use super::shards::read_shard;
use super::versions::{DatasetPaths, VersionRecord, list_versions, open_version};
use crate::error::Result;
use crate::store::blobs::hash_file;

/// One disagreement between a version's files and its record.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Problem {
    pub version: u64,
    pub item: String,
    pub detail: String,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "v{} {}: {}", self.version, self.item, self.detail)
    }
}

/// Verifies every version of a dataset; an empty list means everything matches.
pub async fn verify_dataset(paths: &DatasetPaths) -> Result<Vec<Problem>> {
    let mut problems = Vec::new();
    for record in list_versions(paths).await? {
        verify_shards(paths, &record, &mut problems);
        verify_row_count(paths, &record, &mut problems).await?;
    }
    Ok(problems)
}

fn verify_shards(paths: &DatasetPaths, record: &VersionRecord, problems: &mut Vec<Problem>) {
    let shard_dir = paths.version_dir(record.version).join("shards");
    let mut report = |item: &str, detail: String| {
        problems.push(Problem {
            version: record.version,
            item: item.to_string(),
            detail,
        });
    };

    for shard in &record.shards {
        let path = shard_dir.join(&shard.name);
        let (sha256, size_bytes) = match hash_file(&path) {
            Ok(found) => found,
            Err(error) => {
                report(&shard.name, format!("cannot be read: {error}"));
                continue;
            }
        };
        if size_bytes != shard.size_bytes || sha256 != shard.sha256 {
            report(
                &shard.name,
                format!(
                    "has {size_bytes} bytes and sha256 {sha256}, the manifest says {} bytes and {}",
                    shard.size_bytes, shard.sha256
                ),
            );
            continue;
        }
        match read_shard(&path) {
            Ok(samples) if samples.len() != shard.samples => report(
                &shard.name,
                format!(
                    "holds {} samples, the manifest says {}",
                    samples.len(),
                    shard.samples
                ),
            ),
            Ok(_) => {}
            Err(error) => report(&shard.name, error.to_string()),
        }
    }

    let listed: Vec<&str> = record.shards.iter().map(|s| s.name.as_str()).collect();
    if let Ok(entries) = std::fs::read_dir(&shard_dir) {
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            if name.ends_with(".tar") && !listed.contains(&name.as_str()) {
                report(&name, "is not listed in the version record".to_string());
            }
        }
    }
}

async fn verify_row_count(
    paths: &DatasetPaths,
    record: &VersionRecord,
    problems: &mut Vec<Problem>,
) -> Result<()> {
    let table = open_version(paths, record.version).await?;
    let provider = table.table_provider().await?;
    let rows = SessionContext::new()
        .read_table(Arc::clone(&provider))?
        .count()
        .await? as u64;
    let expected = record.counts.get("samples").copied().unwrap_or(0);
    if rows != expected {
        problems.push(Problem {
            version: record.version,
            item: "samples table".to_string(),
            detail: format!("has {rows} rows at this version, the record says {expected}"),
        });
    }
    Ok(())
}
