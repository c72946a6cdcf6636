//! `paperclip datasets verify`: checks every published version against its record.
//!
//! Reading is manifest-driven: the shards a version has are the ones its record lists, so a
//! missing, truncated, altered or unlisted file is reported instead of guessed around.

use std::fmt;
use std::sync::Arc;

use datafusion::prelude::SessionContext;
use futures::StreamExt;
use serde::Serialize;

use super::delta_log::LogListing;
use super::retention::{ExpiredVersion, load_expired};
use super::shards::read_shard;
use super::versions::{DatasetPaths, VersionRecord, list_versions, open_version, version_provider};
use crate::error::Result;
use crate::store::blobs::hash_file;

/// One disagreement between a version's files and its record.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Problem {
    /// The version the problem belongs to; 0 for problems of the dataset as a whole.
    pub version: u64,
    pub item: String,
    pub detail: String,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.version {
            0 => write!(f, "{}: {}", self.item, self.detail),
            version => write!(f, "v{version} {}: {}", self.item, self.detail),
        }
    }
}

/// Verifies every version of a dataset; an empty list means everything matches.
pub async fn verify_dataset(paths: &DatasetPaths) -> Result<Vec<Problem>> {
    let mut problems = Vec::new();
    let records = list_versions(paths).await?;
    if records.is_empty() {
        problems.push(Problem {
            version: 0,
            item: "samples table".to_string(),
            detail: "holds no readable published version".to_string(),
        });
    }
    for record in &records {
        verify_version_files(paths, record, &mut problems);
        verify_shards(paths, record, &mut problems);
        verify_row_count(paths, record, &mut problems).await;
    }
    let expired = load_expired(paths).unwrap_or_else(|error| {
        problems.push(Problem {
            version: 0,
            item: "expired.json".to_string(),
            detail: error.to_string(),
        });
        Vec::new()
    });
    verify_no_stray_versions(paths, &records, &expired, &mut problems);
    verify_no_stray_data_files(paths, &mut problems).await?;
    Ok(problems)
}

/// A cheap check of one version for a run that would otherwise call it up to date: every
/// shard and every Delta data file it lists exists with its recorded size. Returns what is
/// missing or has the wrong size. `datasets verify` is the thorough check.
pub async fn missing_files(paths: &DatasetPaths, record: &VersionRecord) -> Result<Option<String>> {
    let shard_dir = paths.version_dir(record.version).join("shards");
    for shard in &record.shards {
        let path = shard_dir.join(&shard.name);
        if file_size(&path) != Some(shard.size_bytes) {
            return Ok(Some(format!(
                "shard {} is missing or has the wrong size",
                path.display()
            )));
        }
    }

    let table = open_version(paths, record.version).await?;
    let snapshot = table.snapshot().map_err(|e| paths.delta_error(e))?;
    for file in snapshot.log_data().iter() {
        let path = paths
            .samples_table()
            .join(file.object_store_path().as_ref());
        if file_size(&path) != u64::try_from(file.size()).ok() {
            return Ok(Some(format!(
                "Delta data file {} is missing or has the wrong size",
                path.display()
            )));
        }
    }
    Ok(None)
}

fn file_size(path: &std::path::Path) -> Option<u64> {
    std::fs::metadata(path).ok().map(|m| m.len())
}

/// Checks the manifest (it must equal the record in the Delta commit), the skips file (it
/// must be readable Parquet) and that the version folder contains nothing else.
fn verify_version_files(paths: &DatasetPaths, record: &VersionRecord, problems: &mut Vec<Problem>) {
    let dir = paths.version_dir(record.version);
    let mut report = |item: &str, detail: String| {
        problems.push(Problem {
            version: record.version,
            item: item.to_string(),
            detail,
        });
    };

    match std::fs::read(dir.join("manifest.json")) {
        Err(error) => report("manifest.json", format!("cannot be read: {error}")),
        Ok(bytes) => match serde_json::from_slice::<VersionRecord>(&bytes) {
            Err(error) => report("manifest.json", format!("is not a version record: {error}")),
            Ok(manifest) if manifest != *record => report(
                "manifest.json",
                "differs from the version record in the Delta commit".to_string(),
            ),
            Ok(_) => {}
        },
    }

    let skips_path = dir.join("skips.parquet");
    let readable = std::fs::File::open(&skips_path)
        .map_err(|e| e.to_string())
        .and_then(|file| {
            datafusion::parquet::file::reader::SerializedFileReader::new(file)
                .map(|_| ())
                .map_err(|e| e.to_string())
        });
    if let Err(error) = readable {
        report("skips.parquet", format!("is not readable Parquet: {error}"));
    }

    if let Ok(entries) = std::fs::read_dir(&dir) {
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            if !["manifest.json", "skips.parquet", "shards"].contains(&name.as_str()) {
                report(&name, "is not part of a published version; paperclip never writes it there, so move or delete it by hand".to_string());
            }
        }
    }
}

/// Reports version folders that no readable Delta commit published, saying whether gc
/// removed the version or its Delta log entries are gone.
fn verify_no_stray_versions(
    paths: &DatasetPaths,
    records: &[VersionRecord],
    expired: &[ExpiredVersion],
    problems: &mut Vec<Problem>,
) {
    let oldest = records.first().map(|r| r.version);
    let Ok(entries) = std::fs::read_dir(paths.root.join("versions")) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let number = name.strip_prefix('v').and_then(|n| n.parse::<u64>().ok());
        if number.is_some_and(|n| records.iter().any(|r| r.version == n)) {
            continue;
        }
        let gc = format!("run `paperclip datasets gc {}` to remove it", paths.name);
        let entry = number.and_then(|n| expired.iter().find(|e| e.version == n));
        let detail = match (number, entry) {
            (Some(n), Some(entry)) => {
                format!("belongs to v{n}, which was removed by {}; {gc}", entry.reason)
            }
            (Some(n), None) if oldest.is_some_and(|oldest| n < oldest) => format!(
                "belongs to v{n}, whose Delta log entries were removed, so it cannot be read; {gc}"
            ),
            _ => "is not a published version (an interrupted run leaves one; the next run replaces it)".to_string(),
        };
        problems.push(Problem {
            version: 0,
            item: format!("versions/{name}"),
            detail,
        });
    }
}

/// Reports the samples table's data files that no readable Delta version references.
async fn verify_no_stray_data_files(
    paths: &DatasetPaths,
    problems: &mut Vec<Problem>,
) -> Result<()> {
    let listing = LogListing::read(&paths.log_dir())?;
    for relative in super::data_files::unreferenced(paths, &listing, 0).await? {
        problems.push(Problem {
            version: 0,
            item: format!("samples/{relative}"),
            detail: format!(
                "is a data file no readable version references (left by an interrupted commit or by a version whose log entries were removed); run `paperclip datasets gc {}` to remove it",
                paths.name
            ),
        });
    }
    Ok(())
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
            if !listed.contains(&name.as_str()) {
                report(&name, "is not listed in the version record; paperclip never writes it there, so move or delete it by hand".to_string());
            }
        }
    }
}

/// Counts the rows by reading the table's data files (not their statistics), so a missing,
/// replaced or damaged data file is found.
async fn verify_row_count(
    paths: &DatasetPaths,
    record: &VersionRecord,
    problems: &mut Vec<Problem>,
) {
    let expected = record.counts.get("samples").copied().unwrap_or(0);
    let detail = match count_rows(paths, record.version).await {
        Ok(rows) if rows == expected => return,
        Ok(rows) => format!("has {rows} rows at this version, the record says {expected}"),
        Err(error) => format!("cannot be read at this version: {error}"),
    };
    problems.push(Problem {
        version: record.version,
        item: "samples table".to_string(),
        detail,
    });
}

/// Decodes every column of the version, batch by batch, so damage anywhere in a data file
/// (not only in the column that is counted) is found, as a query would find it.
async fn count_rows(paths: &DatasetPaths, version: u64) -> Result<u64> {
    let ctx = SessionContext::new();
    let provider = version_provider(paths, version, &ctx).await?;
    let mut stream = ctx
        .read_table(Arc::clone(&provider))?
        .execute_stream()
        .await?;
    let mut rows = 0;
    while let Some(batch) = stream.next().await {
        rows += batch?.num_rows() as u64;
    }
    Ok(rows)
}
