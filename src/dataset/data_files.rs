//! The samples table's data files: which ones exist, and which no Delta version
//! references. Two things leave such files: a commit interrupted after its data file was
//! written (a full disk, a killed process), and a version whose log entries were removed.
//! No reader sees them, but they take space. `datasets verify` reports them, gc removes
//! them, and the next run removes those of an interrupted commit under the dataset lock.

use std::collections::HashSet;
use std::path::Path;

use super::delta_log::LogListing;
use super::versions::DatasetPaths;
use crate::error::{PipelineError, Result};

/// Parquet files of the samples table (relative, `/`-separated) that no readable Delta
/// version from `from_delta_version` on references.
pub async fn unreferenced(
    paths: &DatasetPaths,
    listing: &LogListing,
    from_delta_version: u64,
) -> Result<Vec<String>> {
    let delta_versions: Vec<u64> = listing
        .readable_versions()
        .into_iter()
        .filter(|&v| v >= from_delta_version)
        .collect();
    let referenced = referenced(paths, &delta_versions).await?;
    let mut found = listed(&paths.samples_table())?;
    found.retain(|relative| !referenced.contains(relative));
    Ok(found)
}

/// Data files that a commit interrupted after writing them left: `part-*.parquet` files
/// at the top of the table folder, written no earlier than the latest commit, that it
/// does not reference. A file older than that commit is left alone, because a version
/// whose log entries were removed may have written it; gc decides about those.
pub async fn left_by_interrupted_commit(paths: &DatasetPaths) -> Result<Vec<String>> {
    let table_dir = paths.samples_table();
    let listing = LogListing::read(&paths.log_dir())?;
    let mut found = listed(&table_dir)?;
    found.retain(|relative| is_commit_data_file(relative));
    let Some(latest) = listing.readable_versions().last().copied() else {
        // Without a readable version, only an empty log means nothing was ever committed.
        return Ok(if listing.is_empty() {
            found
        } else {
            Vec::new()
        });
    };

    let commit = paths.log_dir().join(format!("{latest:020}.json"));
    let Some(committed_at) = modified(&commit) else {
        return Ok(Vec::new());
    };
    let referenced = referenced(paths, &[latest]).await?;
    Ok(found
        .into_iter()
        .filter(|relative| !referenced.contains(relative))
        .filter(|relative| modified(&table_dir.join(relative)).is_some_and(|t| t >= committed_at))
        .collect())
}

/// Returns true for a name that a commit of this unpartitioned table writes:
/// `part-*.parquet` at the top of the table folder. Anything else was put there by hand
/// and is left alone.
fn is_commit_data_file(relative: &str) -> bool {
    relative.starts_with("part-") && relative.ends_with(".parquet") && !relative.contains('/')
}

fn modified(path: &Path) -> Option<std::time::SystemTime> {
    std::fs::metadata(path).and_then(|m| m.modified()).ok()
}

/// Collects the data file paths (relative, `/`-separated) that any of `delta_versions`
/// references.
async fn referenced(paths: &DatasetPaths, delta_versions: &[u64]) -> Result<HashSet<String>> {
    let mut referenced = HashSet::new();
    let Some(&first) = delta_versions.first() else {
        return Ok(referenced);
    };
    let mut table = deltalake::open_table_with_version(paths.table_url()?, first)
        .await
        .map_err(|e| paths.delta_error(e))?;
    for &version in delta_versions {
        table
            .load_version(version)
            .await
            .map_err(|e| paths.delta_error(e))?;
        let files = table
            .get_files_by_partitions(&[])
            .await
            .map_err(|e| paths.delta_error(e))?;
        referenced.extend(files.iter().map(|p| p.as_ref().to_string()));
    }
    tracing::debug!(
        versions = delta_versions.len(),
        files = referenced.len(),
        "data files the kept versions reference"
    );
    Ok(referenced)
}

/// Lists the Parquet files under the table folder, as relative `/`-separated paths.
/// Hidden entries (`_delta_log`, `.`-files) are skipped. So are names with characters
/// other than ASCII letters, digits, `.`, `-`, `_` and `=`, because Delta stores those
/// percent-encoded and a plain comparison could miss a reference.
fn listed(table_dir: &Path) -> Result<Vec<String>> {
    let mut found = Vec::new();
    let mut pending = vec![(table_dir.to_path_buf(), String::new())];
    while let Some((dir, prefix)) = pending.pop() {
        let entries = match std::fs::read_dir(&dir) {
            Ok(entries) => entries,
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => continue,
            Err(error) => return Err(PipelineError::io(&dir, error)),
        };
        for entry in entries {
            let entry = entry.map_err(|e| PipelineError::io(&dir, e))?;
            let name = entry.file_name().to_string_lossy().into_owned();
            let plain = name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || ".-_=".contains(c));
            if name.starts_with(['_', '.']) || !plain {
                continue;
            }
            let relative = format!("{prefix}{name}");
            let file_type = entry
                .file_type()
                .map_err(|e| PipelineError::io(entry.path(), e))?;
            if file_type.is_dir() {
                pending.push((entry.path(), format!("{relative}/")));
            } else if file_type.is_file() && name.ends_with(".parquet") {
                found.push(relative);
            }
        }
    }
    found.sort();
    Ok(found)
}
