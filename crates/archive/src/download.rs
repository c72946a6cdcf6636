//! Downloads of data products through `GET /api/v0.1/Download/file?uri=...`.
//!
//! The body is streamed into a temporary file in the destination directory
//! while its SHA-256 is computed, then synced to disk. The size is checked
//! against `Content-Length` (when sent) and against the caller's expected
//! size (when given). On a mismatch the whole file is fetched again, because
//! the server may not support ranged requests. The data URI is validated
//! before any request, so a URI with `..`, a backslash or an absolute path
//! never reaches the network or the file system.

use std::path::{Path, PathBuf};

use futures::StreamExt;
use sha2::{Digest, Sha256};
use tokio::io::AsyncWriteExt;
use tracing::Instrument;
use url::Url;

use crate::client::{Counters, Failure, MastClient, RequestContext, RetryMode, body_excerpt};
use crate::error::ArchiveError;
use crate::ids::DataUri;

/// Path of the download endpoint, relative to the base URL.
pub const DOWNLOAD_PATH: &str = "api/v0.1/Download/file";

/// A completed download.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Download {
    /// Temporary file in the destination directory holding the bytes. The
    /// caller owns it and moves or deletes it.
    pub temp_path: PathBuf,
    pub size_bytes: u64,
    /// Lowercase hex SHA-256 of the bytes.
    pub sha256_hex: String,
}

impl MastClient {
    /// Downloads `data_uri` into a temporary file in `dest_dir`, retrying on
    /// size mismatches and transient failures.
    pub async fn download(
        &self,
        data_uri: &str,
        dest_dir: &Path,
        expected_size_bytes: Option<u64>,
    ) -> Result<Download, ArchiveError> {
        let uri = DataUri::parse(data_uri)?;
        let url = self.download_url(&uri);
        let context = RequestContext::transfer("Download/file", &format!("uri={uri}"));
        let span = tracing::info_span!("mast_download", data_uri = %uri, expected_size_bytes);
        self.with_retries(&context, RetryMode::Retry, || {
            self.download_once(&url, dest_dir, expected_size_bytes)
        })
        .instrument(span)
        .await
    }

    /// Returns the download URL of `uri` (the URI is percent-encoded).
    pub fn download_url(&self, uri: &DataUri) -> Url {
        let mut url = self.endpoint(DOWNLOAD_PATH);
        url.query_pairs_mut().append_pair("uri", uri.as_str());
        url
    }

    async fn download_once(
        &self,
        url: &Url,
        dest_dir: &Path,
        expected_size_bytes: Option<u64>,
    ) -> Result<Download, Failure> {
        Counters::add(&self.counters.requests, 1);
        let response = self
            .http
            .get(url.clone())
            .timeout(self.request_timeout())
            .send()
            .await
            .map_err(Failure::from_reqwest)?;
        let status = response.status();
        if !status.is_success() {
            let body = response.bytes().await.unwrap_or_default();
            return Err(Failure::Status {
                status: status.as_u16(),
                body_excerpt: body_excerpt(&body),
            });
        }
        let content_length = response.content_length();

        let (std_file, temp_path) = tempfile::Builder::new()
            .prefix(".paperclip-download-")
            .suffix(".part")
            .tempfile_in(dest_dir)
            .map_err(|err| {
                Failure::Fatal(ArchiveError::io(
                    "create a temporary file in",
                    dest_dir,
                    err,
                ))
            })?
            .into_parts();
        let mut file = tokio::fs::File::from_std(std_file);
        let fatal_write =
            |err| Failure::Fatal(ArchiveError::io("write", temp_path.to_path_buf(), err));

        let mut hasher = Sha256::new();
        let mut size_bytes: u64 = 0;
        let mut stream = response.bytes_stream();
        while let Some(chunk) = stream.next().await {
            let chunk = chunk.map_err(Failure::from_reqwest)?;
            Counters::add(&self.counters.bytes_downloaded, chunk.len() as u64);
            hasher.update(&chunk);
            size_bytes += chunk.len() as u64;
            file.write_all(&chunk).await.map_err(fatal_write)?;
        }
        file.flush().await.map_err(fatal_write)?;
        file.sync_all().await.map_err(fatal_write)?;

        check_size(size_bytes, content_length, "Content-Length")?;
        check_size(size_bytes, expected_size_bytes, "expected_size_bytes")?;

        let temp_path = temp_path.keep().map_err(|err| {
            Failure::Fatal(ArchiveError::io("keep", err.path.to_path_buf(), err.error))
        })?;
        Ok(Download {
            temp_path,
            size_bytes,
            sha256_hex: hex::encode(hasher.finalize()),
        })
    }
}

fn check_size(
    actual_bytes: u64,
    expected_bytes: Option<u64>,
    source_of_expectation: &'static str,
) -> Result<(), Failure> {
    match expected_bytes {
        Some(expected_bytes) if expected_bytes != actual_bytes => Err(Failure::SizeMismatch {
            expected_bytes,
            actual_bytes,
            source_of_expectation,
        }),
        _ => Ok(()),
    }
}
