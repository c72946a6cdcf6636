//! What the `_delta_log` folder of a samples table holds, read from a directory listing.
//!
//! A Delta table version `v` can be read when a checkpoint exists at `v`, or when commit
//! `v` exists and version `v - 1` can be read (commit 0 needs nothing before it). Log
//! cleanup (paperclip's gc, or another Delta tool) removes the oldest commits and
//! checkpoints, so the readable versions are a range that starts at the oldest checkpoint
//! whose later commits are all present. This module determines which versions can be read
//! without opening the table, so version lists never advertise a version whose log is gone.
//!
//! Invariant: only files whose names start with a 20-digit version are classified; anything
//! else in `_delta_log` (`_last_checkpoint`, temporary commit files, `_commits/`) is never
//! reported as removable.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use crate::error::{PipelineError, Result};

/// One versioned file of the Delta log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogFile {
    pub path: PathBuf,
    /// The highest table version the file describes; the file is needed only to read that
    /// version or older ones.
    pub version: u64,
    pub size_bytes: u64,
}

/// The commits and checkpoints present in a `_delta_log` folder.
#[derive(Debug, Clone, Default)]
pub struct LogListing {
    commits: BTreeSet<u64>,
    checkpoints: BTreeSet<u64>,
    files: Vec<LogFile>,
}

impl LogListing {
    /// Lists a log folder; a missing folder is an empty log.
    pub fn read(log_dir: &Path) -> Result<Self> {
        let mut listing = Self::default();
        let entries = match std::fs::read_dir(log_dir) {
            Ok(entries) => entries,
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => return Ok(listing),
            Err(error) => return Err(PipelineError::io(log_dir, error)),
        };
        for entry in entries {
            let entry = entry.map_err(|e| PipelineError::io(log_dir, e))?;
            let metadata = entry
                .metadata()
                .map_err(|e| PipelineError::io(entry.path(), e))?;
            if !metadata.is_file() {
                continue;
            }
            let name = entry.file_name().to_string_lossy().into_owned();
            listing.add(&name, entry.path(), metadata.len());
        }
        Ok(listing)
    }

    fn add(&mut self, name: &str, path: PathBuf, size_bytes: u64) {
        let Some((version, kind)) = parse_log_name(name) else {
            return;
        };
        match kind {
            LogKind::Commit => {
                self.commits.insert(version);
            }
            LogKind::Checkpoint => {
                self.checkpoints.insert(version);
            }
            LogKind::Other => {}
        }
        self.files.push(LogFile {
            path,
            version,
            size_bytes,
        });
    }

    /// Computes the table versions that can be read.
    pub fn readable_versions(&self) -> BTreeSet<u64> {
        let mut readable = BTreeSet::new();
        let mut previous: Option<u64> = None;
        for &version in self.commits.union(&self.checkpoints) {
            let chained =
                self.commits.contains(&version) && (version == 0 || previous == Some(version - 1));
            if self.checkpoints.contains(&version) || chained {
                readable.insert(version);
                previous = Some(version);
            }
        }
        readable
    }

    /// Returns true when the log contains no commit and no checkpoint.
    pub fn is_empty(&self) -> bool {
        self.commits.is_empty() && self.checkpoints.is_empty()
    }

    /// Returns true when table version `version` can be read.
    pub fn is_readable(&self, version: u64) -> bool {
        self.readable_versions().contains(&version)
    }

    /// Returns true when a checkpoint of table version `version` exists.
    pub fn has_checkpoint(&self, version: u64) -> bool {
        self.checkpoints.contains(&version)
    }

    /// Lists the table versions with a commit file, oldest first.
    pub fn commits(&self) -> impl Iterator<Item = u64> + '_ {
        self.commits.iter().copied()
    }

    /// The newest table version with a commit file.
    pub fn latest_commit(&self) -> Option<u64> {
        self.commits.last().copied()
    }

    /// Log files needed only by table versions older than `version`, oldest first.
    pub fn files_before(&self, version: u64) -> Vec<LogFile> {
        let mut files: Vec<LogFile> = self
            .files
            .iter()
            .filter(|file| file.version < version)
            .cloned()
            .collect();
        files.sort_by(|a, b| (a.version, &a.path).cmp(&(b.version, &b.path)));
        files
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum LogKind {
    Commit,
    Checkpoint,
    /// Checksums, log compactions and other files that describe one version.
    Other,
}

/// Parses `<20 digits>.json`, `<20 digits>.checkpoint[...].parquet`, `<20 digits>.crc` and
/// `<20 digits>.<20 digits>.compacted.json` (covering the second version).
fn parse_log_name(name: &str) -> Option<(u64, LogKind)> {
    let (digits, rest) = name.split_at_checked(20)?;
    let rest = rest.strip_prefix('.')?;
    if !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let version: u64 = digits.parse().ok()?;
    if rest == "json" {
        return Some((version, LogKind::Commit));
    }
    if rest.starts_with("checkpoint") {
        return Some((version, LogKind::Checkpoint));
    }
    if let Some(compacted) = rest.strip_suffix(".compacted.json") {
        let end: u64 = compacted.parse().ok()?;
        return Some((end.max(version), LogKind::Other));
    }
    Some((version, LogKind::Other))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn readable(listing: &LogListing) -> Vec<u64> {
        listing.readable_versions().into_iter().collect()
    }

    fn listing(names: &[&str]) -> LogListing {
        let mut listing = LogListing::default();
        for name in names {
            listing.add(name, PathBuf::from(name), 1);
        }
        listing
    }

    fn commit(version: u64) -> String {
        format!("{version:020}.json")
    }

    fn checkpoint(version: u64) -> String {
        format!("{version:020}.checkpoint.parquet")
    }

    #[test]
    fn full_log_is_readable_from_zero() {
        let names: Vec<String> = (0..5).map(commit).collect();
        let names: Vec<&str> = names.iter().map(String::as_str).collect();
        assert_eq!(readable(&listing(&names)), [0, 1, 2, 3, 4]);
    }

    #[test]
    fn cleaned_log_is_readable_from_its_checkpoint() {
        let mut names: Vec<String> = (150..155).map(commit).collect();
        names.push(checkpoint(150));
        names.push("_last_checkpoint".to_string());
        let names: Vec<&str> = names.iter().map(String::as_str).collect();
        let listing = listing(&names);
        assert_eq!(readable(&listing), [150, 151, 152, 153, 154]);
        assert!(!listing.is_readable(149));
        assert_eq!(listing.latest_commit(), Some(154));
    }

    #[test]
    fn commits_without_a_checkpoint_below_them_are_unreadable() {
        let mut names: Vec<String> = (145..155).map(commit).collect();
        names.push(checkpoint(150));
        let names: Vec<&str> = names.iter().map(String::as_str).collect();
        assert_eq!(readable(&listing(&names)), [150, 151, 152, 153, 154]);
    }

    #[test]
    fn commit_gap_breaks_the_chain() {
        let names = [commit(0), commit(1), commit(3)];
        let names: Vec<&str> = names.iter().map(String::as_str).collect();
        assert_eq!(readable(&listing(&names)), [0, 1]);
    }

    #[test]
    fn files_before_a_version_skip_unversioned_names() {
        let names = [
            commit(0),
            checkpoint(0),
            format!("{:020}.crc", 1),
            format!("{:020}.{:020}.compacted.json", 0, 2),
            commit(2),
            "_last_checkpoint".to_string(),
            "_commit_1234.json.tmp".to_string(),
        ];
        let names: Vec<&str> = names.iter().map(String::as_str).collect();
        let before: Vec<String> = listing(&names)
            .files_before(2)
            .into_iter()
            .map(|f| f.path.display().to_string())
            .collect();
        assert_eq!(
            before,
            [
                "00000000000000000000.checkpoint.parquet",
                "00000000000000000000.json",
                "00000000000000000001.crc",
            ]
        );
    }
}
