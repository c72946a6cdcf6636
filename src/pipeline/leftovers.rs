//! Clean-up of what interrupted runs left behind, done by the next run under the lock.

use std::path::Path;

use crate::dataset::versions::DatasetPaths;

/// Age after which a partial download or temporary file counts as abandoned.
const ABANDONED_DOWNLOAD_SECS: u64 = 24 * 3600;

/// Deletes what interrupted runs left: this dataset's staging folders (safe, since the
/// dataset lock is held), embedded archives and cluster staging folders whose run has
/// ended, and partial downloads and
/// temporary files old enough that no live run can still be writing them. Failures are
/// logged, never fatal.
pub(super) fn remove_leftovers(paths: &DatasetPaths, data_dir: &Path) {
    let staging = paths.root.join("staging");
    if staging.is_dir()
        && let Err(error) = std::fs::remove_dir_all(&staging)
    {
        tracing::warn!(dir = %staging.display(), %error, "cannot remove staging files of an earlier run");
    }

    remove_old_files(&data_dir.join("blobs").join("tmp"), |_| true);
    // Atomic writes leave `.tmp*` siblings when a process dies between write and rename.
    let is_temporary = |name: &str| name.starts_with(".tmp");
    remove_old_files(&data_dir.join("prepared"), is_temporary);
    remove_old_files(&data_dir.join("runs"), is_temporary);
    remove_old_files(&paths.root, is_temporary);
    super::state::remove_unused_states(paths);
    crate::snapshots::embedded::remove_abandoned(data_dir);
    crate::sql::engine::remove_abandoned(&data_dir.join("staging"));
}

/// Deletes the samples table's data files that a commit interrupted after writing them
/// left. Safe while the dataset lock is held, since only a run holding it writes data
/// files. Failures are logged, never fatal.
pub(super) async fn remove_unreferenced_data_files(paths: &DatasetPaths) {
    let files = match crate::dataset::data_files::left_by_interrupted_commit(paths).await {
        Ok(files) => files,
        Err(error) => {
            tracing::warn!(%error, "cannot list the data files of an interrupted commit");
            return;
        }
    };
    for relative in files {
        let file = paths.samples_table().join(&relative);
        match std::fs::remove_file(&file) {
            Ok(()) => {
                tracing::info!(file = %file.display(), "removed the data file of an interrupted commit")
            }
            Err(error) => {
                tracing::warn!(file = %file.display(), %error, "cannot remove the data file of an interrupted commit")
            }
        }
    }
}

/// Deletes files of `dir` whose name matches and that are older than
/// [`ABANDONED_DOWNLOAD_SECS`].
fn remove_old_files(dir: &Path, name_matches: impl Fn(&str) -> bool) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        if !name_matches(&entry.file_name().to_string_lossy()) {
            continue;
        }
        let age_secs = entry
            .metadata()
            .and_then(|m| m.modified())
            .ok()
            .and_then(|modified| modified.elapsed().ok())
            .map_or(0, |age| age.as_secs());
        if age_secs > ABANDONED_DOWNLOAD_SECS
            && let Err(error) = std::fs::remove_file(entry.path())
        {
            tracing::warn!(file = %entry.path().display(), %error, "cannot remove an abandoned temporary file");
        }
    }
}
