//! `paperclip datasets gc`: removes the versions a retention policy expires without
//! breaking time travel to the versions it keeps.
//!
//! With dataset version `R` the oldest kept one (Delta version `K = R - 1`), gc removes:
//! 1. the `versions/v<N>/` folders of expired versions (`N < R`), by unlinking each
//!    folder's own entries: a shard that a kept version hard-links survives, and its bytes
//!    are counted as freed only when no other link remains;
//! 2. the samples table's Parquet data files that no Delta version from `K` on references
//!    (computed from those versions' file lists, not from Delta's time-based vacuum rule,
//!    and without Delta's `VACUUM` commits, which would shift the version numbers);
//! 3. the Delta log entries needed only by versions before `K`, after making sure a
//!    checkpoint of `K` exists (it is written when missing), so every kept version stays
//!    readable by paperclip and by other Delta readers.
//!
//! Order and crash safety: gc holds the dataset lock (a running pipeline makes it fail
//! with a message, and the reverse). It first adds the expired versions to `expired.json`
//! (atomically), so from then on no listing advertises them, and only then deletes. A gc
//! interrupted at any point leaves every kept version readable; the next gc finishes the
//! work. Everything gc would delete is computed before anything is deleted, and a dry run
//! stops there and reports the same plan.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::fmt;
use std::path::{Path, PathBuf};

use chrono::{DateTime, Utc};
use serde::Serialize;
use tracing::Instrument;

use super::delta_log::LogListing;
use super::retention::{
    ExpiredVersion, RetentionPolicy, Spelling, format_versions, load_expired, recorded_policy,
    save_expired,
};
use super::versions::{DatasetLock, DatasetPaths, VersionRecord, list_versions};
use crate::error::{PipelineError, Result};

/// How to run gc.
#[derive(Debug, Clone)]
pub struct GcOptions {
    /// Compute and report the plan; remove nothing.
    pub dry_run: bool,
    /// A policy from the command line; replaces the recorded one when set.
    pub policy: Option<RetentionPolicy>,
    /// The time `keep_days` is measured from.
    pub now: DateTime<Utc>,
}

/// Source of the policy gc applied.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum PolicySource {
    /// `--keep-last` / `--keep-days`.
    Flags,
    /// The `[retention]` section recorded by the dataset's last pipeline run.
    Pipeline,
    /// Neither: every version is kept.
    None,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum RemovedKind {
    VersionFolder,
    DeltaDataFile,
    DeltaLogFile,
}

/// One folder or file gc removes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RemovedItem {
    pub kind: RemovedKind,
    /// Path relative to the dataset folder.
    pub path: PathBuf,
    /// Bytes the removal frees: files still linked from elsewhere count zero.
    pub bytes_freed: u64,
}

/// Outcome of gc: what it removed, or with `dry_run` would remove.
#[derive(Debug, Clone, Serialize)]
pub struct GcReport {
    pub dataset: String,
    pub dry_run: bool,
    pub policy: RetentionPolicy,
    pub policy_source: PolicySource,
    pub kept_versions: Vec<u64>,
    /// Versions this gc expired (earlier ones are in `expired.json` already).
    pub expired_versions: Vec<ExpiredVersion>,
    pub removed: Vec<RemovedItem>,
    /// The Delta version gc checkpointed so the kept versions stay readable.
    pub checkpoint_delta_version: Option<u64>,
    pub bytes_freed: u64,
}

impl GcReport {
    /// Returns true when gc had nothing to do.
    pub fn is_noop(&self) -> bool {
        self.expired_versions.is_empty()
            && self.removed.is_empty()
            && self.checkpoint_delta_version.is_none()
    }
}

/// Applies the retention policy to a dataset; see the module documentation.
pub async fn collect_garbage(paths: &DatasetPaths, options: &GcOptions) -> Result<GcReport> {
    let span = tracing::info_span!("gc", dataset = %paths.name, dry_run = options.dry_run);
    async {
        if let Some(policy) = &options.policy {
            policy
                .check(Spelling::Flags)
                .map_err(PipelineError::Invalid)?;
        }
        let _lock = DatasetLock::acquire(paths)?;
        let plan = plan(paths, options).await?;
        if !options.dry_run {
            execute(paths, &plan).await?;
        }
        tracing::info!(
            expired = plan.report.expired_versions.len(),
            removed = plan.report.removed.len(),
            bytes_freed = plan.report.bytes_freed,
            "gc finished"
        );
        Ok(plan.report)
    }
    .instrument(span)
    .await
}

/// Everything gc will do, computed before anything is removed.
struct Plan {
    report: GcReport,
    /// The oldest kept Delta version; log entries before it go.
    keep_delta_version: u64,
}

async fn plan(paths: &DatasetPaths, options: &GcOptions) -> Result<Plan> {
    let (policy, policy_source) = resolve_policy(paths, options)?;
    let versions = list_versions(paths).await?;
    let Some(first_kept) = policy.first_kept(&versions, options.now) else {
        return Err(PipelineError::Invalid(format!(
            "dataset {} has no readable version, so gc removes nothing; run `paperclip datasets verify {}` to see why",
            paths.name, paths.name
        )));
    };
    let listing = LogListing::read(&paths.log_dir())?;
    let keep_delta_version = first_kept - 1;

    let mut expired = expire_by_policy(&versions, first_kept, &policy, options.now);
    expired.extend(expire_unreadable(
        paths,
        &listing,
        &versions,
        &load_expired(paths)?,
        options.now,
    )?);
    expired.sort_by_key(|e| e.version);

    let mut removed = version_folders(paths, &expired)?;
    removed.extend(unreferenced_data_files(paths, &listing, keep_delta_version).await?);
    let checkpoint_delta_version = (keep_delta_version > 0
        && !listing.has_checkpoint(keep_delta_version))
    .then_some(keep_delta_version);
    for file in listing.files_before(keep_delta_version) {
        removed.push(item(paths, RemovedKind::DeltaLogFile, &file.path));
    }
    let bytes_freed = count_freed_bytes(paths, &mut removed);

    Ok(Plan {
        report: GcReport {
            dataset: paths.name.clone(),
            dry_run: options.dry_run,
            policy,
            policy_source,
            kept_versions: versions
                .iter()
                .map(|v| v.version)
                .filter(|&v| v >= first_kept)
                .collect(),
            expired_versions: expired,
            removed,
            checkpoint_delta_version,
            bytes_freed,
        },
        keep_delta_version,
    })
}

fn resolve_policy(
    paths: &DatasetPaths,
    options: &GcOptions,
) -> Result<(RetentionPolicy, PolicySource)> {
    if let Some(policy) = options.policy {
        return Ok((policy, PolicySource::Flags));
    }
    match recorded_policy(paths)? {
        Some(policy) if !policy.keeps_everything() => Ok((policy, PolicySource::Pipeline)),
        _ => Ok((RetentionPolicy::default(), PolicySource::None)),
    }
}

/// Expires the published versions older than the first kept one.
fn expire_by_policy(
    versions: &[VersionRecord],
    first_kept: u64,
    policy: &RetentionPolicy,
    now: DateTime<Utc>,
) -> Vec<ExpiredVersion> {
    versions
        .iter()
        .filter(|v| v.version < first_kept)
        .map(|v| ExpiredVersion {
            version: v.version,
            created_at: Some(v.created_at.clone()),
            expired_at: now.to_rfc3339(),
            reason: format!("retention ({policy})"),
        })
        .collect()
}

/// Version folders older than every readable version whose Delta log entries were removed
/// outside paperclip (their versions can no longer be read), and that gc has not recorded.
fn expire_unreadable(
    paths: &DatasetPaths,
    listing: &LogListing,
    versions: &[VersionRecord],
    already_expired: &[ExpiredVersion],
    now: DateTime<Utc>,
) -> Result<Vec<ExpiredVersion>> {
    let Some(oldest_readable) = versions.first().map(|v| v.version) else {
        return Ok(Vec::new());
    };
    let readable = listing.readable_versions();
    let mut expired = Vec::new();
    for version in version_folder_numbers(paths)? {
        let unreadable = version < oldest_readable && !readable.contains(&(version - 1));
        if unreadable && !already_expired.iter().any(|e| e.version == version) {
            expired.push(ExpiredVersion {
                version,
                created_at: manifest_created_at(&paths.version_dir(version)),
                expired_at: now.to_rfc3339(),
                reason: "gc after its Delta log entries were removed outside paperclip".to_string(),
            });
        }
    }
    Ok(expired)
}

/// Lists the numbers of the `versions/v<N>` folders, sorted.
fn version_folder_numbers(paths: &DatasetPaths) -> Result<BTreeSet<u64>> {
    let dir = paths.root.join("versions");
    let entries = match std::fs::read_dir(&dir) {
        Ok(entries) => entries,
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => return Ok(BTreeSet::new()),
        Err(error) => return Err(PipelineError::io(&dir, error)),
    };
    Ok(entries
        .flatten()
        .filter_map(|e| {
            let name = e.file_name().to_string_lossy().into_owned();
            name.strip_prefix('v')?.parse::<u64>().ok()
        })
        .filter(|&n| n >= 1)
        .collect())
}

fn manifest_created_at(version_dir: &Path) -> Option<String> {
    let bytes = std::fs::read(version_dir.join("manifest.json")).ok()?;
    let manifest: serde_json::Value = serde_json::from_slice(&bytes).ok()?;
    manifest.get("created_at")?.as_str().map(str::to_string)
}

/// The folders of every expired version (recorded earlier or now) that still exist.
fn version_folders(paths: &DatasetPaths, expired: &[ExpiredVersion]) -> Result<Vec<RemovedItem>> {
    let mut numbers: BTreeSet<u64> = load_expired(paths)?.iter().map(|e| e.version).collect();
    numbers.extend(expired.iter().map(|e| e.version));
    Ok(numbers
        .into_iter()
        .map(|n| paths.version_dir(n))
        .filter(|dir| dir.symlink_metadata().is_ok())
        .map(|dir| item(paths, RemovedKind::VersionFolder, &dir))
        .collect())
}

fn item(paths: &DatasetPaths, kind: RemovedKind, path: &Path) -> RemovedItem {
    RemovedItem {
        kind,
        path: path.strip_prefix(&paths.root).unwrap_or(path).to_path_buf(),
        bytes_freed: 0,
    }
}

/// Parquet files in the samples table that no readable Delta version from
/// `keep_delta_version` on references.
async fn unreferenced_data_files(
    paths: &DatasetPaths,
    listing: &LogListing,
    keep_delta_version: u64,
) -> Result<Vec<RemovedItem>> {
    let table_dir = paths.samples_table();
    let unreferenced = super::data_files::unreferenced(paths, listing, keep_delta_version).await?;
    Ok(unreferenced
        .iter()
        .map(|relative| item(paths, RemovedKind::DeltaDataFile, &table_dir.join(relative)))
        .collect())
}

/// Fills in each item's freed bytes and returns the total. A file's bytes are freed only
/// when the plan removes all of its hard links; they count once, for the first item.
fn count_freed_bytes(paths: &DatasetPaths, removed: &mut [RemovedItem]) -> u64 {
    let files_per_item: Vec<Vec<FileId>> = removed
        .iter()
        .map(|item| files_under(&paths.root.join(&item.path)))
        .collect();
    let mut links_removed: HashMap<(u64, u64), u64> = HashMap::new();
    for file in files_per_item.iter().flatten() {
        *links_removed.entry(file.inode).or_default() += 1;
    }

    let mut counted = HashSet::new();
    let mut total = 0;
    for (item, files) in removed.iter_mut().zip(&files_per_item) {
        for file in files {
            let all_links_go = links_removed[&file.inode] >= file.links;
            if all_links_go && counted.insert(file.inode) {
                item.bytes_freed += file.size_bytes;
            }
        }
        total += item.bytes_freed;
    }
    total
}

struct FileId {
    /// (device, inode), or a unique stand-in where the platform has none.
    inode: (u64, u64),
    links: u64,
    size_bytes: u64,
}

/// Lists the regular files at or under `path`, without following symbolic links.
fn files_under(path: &Path) -> Vec<FileId> {
    let Ok(metadata) = path.symlink_metadata() else {
        return Vec::new();
    };
    if metadata.is_dir() {
        let Ok(entries) = std::fs::read_dir(path) else {
            return Vec::new();
        };
        return entries
            .flatten()
            .flat_map(|e| files_under(&e.path()))
            .collect();
    }
    if !metadata.is_file() {
        return Vec::new();
    }
    vec![file_id(path, &metadata)]
}

#[cfg(unix)]
fn file_id(_path: &Path, metadata: &std::fs::Metadata) -> FileId {
    use std::os::unix::fs::MetadataExt;
    FileId {
        inode: (metadata.dev(), metadata.ino()),
        links: metadata.nlink(),
        size_bytes: metadata.len(),
    }
}

#[cfg(not(unix))]
fn file_id(path: &Path, metadata: &std::fs::Metadata) -> FileId {
    use std::hash::{Hash, Hasher};
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    path.hash(&mut hasher);
    FileId {
        inode: (0, hasher.finish()),
        links: 1,
        size_bytes: metadata.len(),
    }
}

/// Carries out a plan: records the expiry, checkpoints, then deletes.
async fn execute(paths: &DatasetPaths, plan: &Plan) -> Result<()> {
    let report = &plan.report;
    if !report.expired_versions.is_empty() {
        save_expired(paths, &report.expired_versions)?;
    }
    if let Some(version) = report.checkpoint_delta_version {
        write_checkpoint(paths, version).await?;
    }
    let has_log_files = report
        .removed
        .iter()
        .any(|r| r.kind == RemovedKind::DeltaLogFile);
    if has_log_files {
        ensure_checkpoint(paths, plan.keep_delta_version)?;
    }
    for removed in &report.removed {
        remove(&paths.root.join(&removed.path))?;
    }
    for dir in [
        paths.log_dir(),
        paths.samples_table(),
        paths.root.join("versions"),
    ] {
        if dir.is_dir() {
            crate::store::blobs::sync_dir(&dir)?;
        }
    }
    Ok(())
}

async fn write_checkpoint(paths: &DatasetPaths, delta_version: u64) -> Result<()> {
    let table = deltalake::open_table_with_version(paths.table_url()?, delta_version)
        .await
        .map_err(|e| paths.delta_error(e))?;
    deltalake::checkpoints::create_checkpoint(&table, None)
        .await
        .map_err(|e| paths.delta_error(e))?;
    tracing::info!(delta_version, "checkpoint written");
    Ok(())
}

/// Rejects the removal of log entries unless a checkpoint of the oldest kept Delta version
/// is on disk. A `_last_checkpoint` hint that points at an older checkpoint is deleted,
/// because the cleanup removes that checkpoint; readers then list the log folder instead.
fn ensure_checkpoint(paths: &DatasetPaths, keep_delta_version: u64) -> Result<()> {
    if !LogListing::read(&paths.log_dir())?.has_checkpoint(keep_delta_version) {
        return Err(PipelineError::Invalid(format!(
            "no checkpoint of Delta version {keep_delta_version} in {} after writing one, so no log entry was removed; run gc again, and `paperclip datasets verify {}` if it fails again",
            paths.log_dir().display(),
            paths.name
        )));
    }
    let hint_path = paths.log_dir().join("_last_checkpoint");
    let hint_version = std::fs::read(&hint_path)
        .ok()
        .and_then(|bytes| serde_json::from_slice::<serde_json::Value>(&bytes).ok())
        .and_then(|hint| hint.get("version")?.as_u64());
    if hint_version.is_some_and(|v| v < keep_delta_version) {
        remove(&hint_path)?;
    }
    Ok(())
}

/// Removes a file, or a folder with everything in it, by unlinking its own entries.
fn remove(path: &Path) -> Result<()> {
    let result = match path.symlink_metadata() {
        Ok(metadata) if metadata.is_dir() => std::fs::remove_dir_all(path),
        Ok(_) => std::fs::remove_file(path),
        Err(error) => Err(error),
    };
    match result {
        Ok(()) => Ok(()),
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(error) => Err(PipelineError::io(path, error)),
    }
}

impl fmt::Display for GcReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.write_policy(f)?;
        if self.is_noop() {
            return write!(f, "nothing to remove");
        }
        let (remove, write, free) = if self.dry_run {
            ("would remove", "would write", "would free")
        } else {
            ("removed", "wrote", "freed")
        };
        if !self.expired_versions.is_empty() {
            let numbers: Vec<u64> = self.expired_versions.iter().map(|e| e.version).collect();
            writeln!(f, "expired {}", format_versions(&numbers))?;
        }
        self.write_removed(f, remove)?;
        if let Some(version) = self.checkpoint_delta_version {
            writeln!(
                f,
                "{write} a checkpoint of Delta version {version} (dataset v{}) so the kept versions stay readable",
                version + 1
            )?;
        }
        write!(f, "{free} {} bytes", self.bytes_freed)?;
        if self.dry_run {
            write!(f, "\ndry run: nothing was removed")?;
        }
        Ok(())
    }
}

impl GcReport {
    fn write_policy(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let source = match self.policy_source {
            PolicySource::Flags => "from the command line",
            PolicySource::Pipeline => "recorded by the pipeline",
            PolicySource::None => {
                "no [retention] recorded; pass --keep-last or --keep-days to expire versions"
            }
        };
        writeln!(
            f,
            "{}: {} ({source}); keeping {}",
            self.dataset,
            self.policy,
            format_versions(&self.kept_versions)
        )
    }

    /// Writes one line per version folder and one total per kind of Delta file.
    fn write_removed(&self, f: &mut fmt::Formatter<'_>, remove: &str) -> fmt::Result {
        let folders = self
            .removed
            .iter()
            .filter(|r| r.kind == RemovedKind::VersionFolder);
        for folder in folders {
            writeln!(
                f,
                "{remove} {} ({} bytes freed)",
                folder.path.display(),
                folder.bytes_freed
            )?;
        }

        for (kind, what) in [
            (RemovedKind::DeltaDataFile, "Delta data file(s)"),
            (RemovedKind::DeltaLogFile, "Delta log file(s)"),
        ] {
            let items: Vec<&RemovedItem> = self.removed.iter().filter(|r| r.kind == kind).collect();
            if !items.is_empty() {
                let bytes: u64 = items.iter().map(|r| r.bytes_freed).sum();
                writeln!(f, "{remove} {} {what} ({bytes} bytes)", items.len())?;
            }
        }
        Ok(())
    }
}
