//! Errors of the pipeline library. Each message names the value that failed and what to do;
//! the CLI adds context with `anyhow` and turns them into exit codes.

use std::path::PathBuf;

use thiserror::Error;

#[derive(Debug, Error)]
pub enum PipelineError {
    #[error("failed to access {path}: {source}{}", storage_advice(.source))]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    #[error("cannot run the saved plan: {0}")]
    PlanOutdated(String),

    #[error("invalid pipeline file {path}: {message}")]
    Config { path: PathBuf, message: String },

    #[error(transparent)]
    Archive(#[from] paperclip_archive::ArchiveError),

    #[error("SQL model {model} failed: {source}")]
    SqlModel {
        model: String,
        #[source]
        source: datafusion::error::DataFusionError,
    },

    #[error("Arrow operation failed: {0}")]
    Arrow(#[from] datafusion::arrow::error::ArrowError),

    #[error("query failed: {0}")]
    Query(#[from] datafusion::error::DataFusionError),

    #[error("uploading to {url} failed: {source}{}", upload_advice(.source))]
    Upload {
        /// The store's URL, which never contains credentials.
        url: String,
        source: Box<PipelineError>,
    },

    #[error("object store {url} failed: {source}")]
    ObjectStore {
        /// The store's URL, which never contains credentials.
        url: String,
        #[source]
        source: object_store::Error,
    },

    #[error("Delta table {path} failed: {source}{}", storage_advice(.source))]
    Delta {
        path: PathBuf,
        #[source]
        source: deltalake::DeltaTableError,
    },

    #[error("cannot write {path}: {source}{}", storage_advice(.source))]
    ParquetWrite {
        path: PathBuf,
        #[source]
        source: datafusion::parquet::errors::ParquetError,
    },

    #[error("failed to read source table {table} from {path}: {problem}")]
    Source {
        table: String,
        path: PathBuf,
        problem: String,
    },

    #[error("the rows of SQL model {model} are unusable: {problem}")]
    ModelOutput { model: String, problem: String },

    #[error("dataset {name:?} not found in {data_dir}; known datasets: {known}")]
    DatasetNotFound {
        name: String,
        data_dir: PathBuf,
        known: String,
    },

    #[error("dataset {name:?} has no version {version}; published versions: {known}")]
    VersionNotFound {
        name: String,
        version: String,
        known: String,
    },

    #[error("version {version} of {name} {why}; available: {available}")]
    VersionUnavailable {
        name: String,
        version: u64,
        /// Completes the sentence: "was removed by retention (keep_last = 3)".
        why: String,
        available: String,
    },

    #[error(
        "dataset {name:?} is locked by another running paperclip process ({lock_path}); wait for it to finish (the lock is released when that process exits)"
    )]
    Locked { name: String, lock_path: PathBuf },

    #[error("blob {sha256} in {path} is corrupt: {detail}; delete the file and run again")]
    CorruptBlob {
        sha256: String,
        path: PathBuf,
        detail: String,
    },

    /// The run did its work (its version, if any, is published) but its run record
    /// could not be written.
    #[error("{outcome}, but the record of the run cannot be written: {source}")]
    RunNotRecorded {
        /// The outcome that begins the message, such as "version 2 of hst-paperclip was
        /// published".
        outcome: String,
        #[source]
        source: Box<PipelineError>,
    },

    #[error(transparent)]
    Summaries(Box<crate::summaries::SummaryError>),

    #[error("{doing}: {source}")]
    Ballista {
        /// The failed operation, with the address it concerned.
        doing: String,
        #[source]
        source: Box<ballista_core::error::BallistaError>,
    },

    #[error("{0}")]
    Invalid(String),
}

impl From<crate::summaries::SummaryError> for PipelineError {
    fn from(error: crate::summaries::SummaryError) -> Self {
        Self::Summaries(Box::new(error))
    }
}

impl PipelineError {
    pub fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Self::Io {
            path: path.into(),
            source,
        }
    }

    pub fn parquet_write(
        path: impl Into<PathBuf>,
        source: datafusion::parquet::errors::ParquetError,
    ) -> Self {
        Self::ParquetWrite {
            path: path.into(),
            source,
        }
    }
}

pub type Result<T, E = PipelineError> = std::result::Result<T, E>;

/// Returns the fix for a failed file operation whose cause, anywhere in `error`'s chain of
/// sources, the user can remove: a full disk, a folder the user may not write or a
/// read-only mount. Returns an empty string for other causes.
pub fn storage_advice(error: &(dyn std::error::Error + 'static)) -> &'static str {
    use std::io::ErrorKind;

    let mut cause = Some(error);
    while let Some(error) = cause {
        if let Some(io) = error.downcast_ref::<std::io::Error>() {
            match io.kind() {
                ErrorKind::StorageFull | ErrorKind::QuotaExceeded => {
                    return "; the file system is full: free space on it, then run the command again";
                }
                ErrorKind::PermissionDenied => {
                    return "; permission denied: give the user running paperclip write access to that folder (check its owner and mode), then run the command again";
                }
                ErrorKind::ReadOnlyFilesystem => {
                    return "; the file system is mounted read-only: remount it writable or use a data directory on another one, then run the command again";
                }
                _ => {}
            }
            // An I/O error that wraps another error reports it here, not as its source.
            if let Some(inner) = io.get_ref() {
                cause = Some(inner);
                continue;
            }
        }
        cause = error.source();
    }
    ""
}

/// Returns the fix for an upload error and what the next run does. A conflict with
/// another writer, or missing credentials, is not retried by itself.
fn upload_advice(source: &PipelineError) -> String {
    let PipelineError::ObjectStore { source, .. } = source else {
        return ". The versions stay published in the data directory".into();
    };
    let text = source.to_string();
    let hints = [
        ("SignatureDoesNotMatch", "check AWS_SECRET_ACCESS_KEY"),
        ("InvalidAccessKeyId", "check AWS_ACCESS_KEY_ID"),
        (
            "403 Forbidden",
            "check the credentials and the bucket's permissions",
        ),
        (
            "NoSuchBucket",
            "create the bucket, or fix the bucket name in storage.url",
        ),
        ("InvalidBucketName", "fix the bucket name in storage.url"),
        (
            "URL scheme is not allowed",
            "set AWS_ALLOW_HTTP=true for an http:// AWS_ENDPOINT",
        ),
        (
            "Connection refused",
            "check AWS_ENDPOINT and that the server is running",
        ),
    ];
    let hint = hints
        .iter()
        .find(|(marker, _)| text.contains(marker))
        .map_or(String::new(), |(_, hint)| format!(". Fix: {hint}"));
    format!(
        "{hint}. The versions stay published in the data directory, and the next run uploads them"
    )
}

pub use paperclip_pipeline_file::suggest_known_field;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn storage_errors_name_the_fix() {
        let full = PipelineError::io("/data/blobs/tmp", std::io::Error::from_raw_os_error(28));
        let message = full.to_string();
        assert!(
            message.starts_with("failed to access /data/blobs/tmp: "),
            "{message}"
        );
        assert!(message.contains("free space on it"), "{message}");

        let denied = std::io::Error::from(std::io::ErrorKind::PermissionDenied);
        let wrapped = std::io::Error::other(denied);
        assert!(storage_advice(&wrapped).contains("permission denied"));
        let read_only = std::io::Error::from(std::io::ErrorKind::ReadOnlyFilesystem);
        assert!(storage_advice(&read_only).contains("remount it writable"));
        let other = std::io::Error::from(std::io::ErrorKind::InvalidData);
        assert_eq!(storage_advice(&other), "");
    }
}
