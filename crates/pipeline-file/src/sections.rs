//! The sections of the pipeline file, with their defaults.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DatasetSection {
    /// Dataset name, used as the SQL catalog name and the directory name.
    pub name: String,
    #[serde(default)]
    pub description: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ArchiveSection {
    /// MAST Portal API base URL.
    pub base_url: String,
    /// Proposal abstracts catalog (`abstracts.cat` format), or one Phase II `.pro` file:
    /// an http(s) URL or a path relative to the pipeline file.
    pub catalog: String,
    pub request_timeout_secs: u64,
    pub max_retries: u32,
    pub page_size: u32,
    pub proposals_per_query: usize,
    pub products_batch_size: usize,
    pub download_concurrency: usize,
}

impl ArchiveSection {
    /// Returns true when `catalog` is an http(s) URL; otherwise it is a path relative to
    /// the pipeline file.
    pub fn catalog_is_url(&self) -> bool {
        self.catalog.starts_with("http://") || self.catalog.starts_with("https://")
    }
}

impl Default for ArchiveSection {
    fn default() -> Self {
        Self {
            base_url: "https://mast.stsci.edu".to_string(),
            catalog: "https://archive.stsci.edu/hst/abstracts.cat".to_string(),
            request_timeout_secs: 600,
            max_retries: 5,
            page_size: 50_000,
            proposals_per_query: 50,
            products_batch_size: 200,
            download_concurrency: 8,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SelectionSection {
    /// Lowest proposal cycle kept, inclusive.
    pub min_cycle: u32,
    /// Highest proposal cycle kept, inclusive.
    pub max_cycle: u32,
    /// Upper bound on images per proposal, sampled without replacement.
    pub max_images_per_proposal: u32,
    /// Seed of the per-proposal image sampling and of the train/validation split.
    pub seed: u64,
    /// Fraction of proposals assigned to the validation split.
    pub val_fraction: f64,
    /// Use science FITS images for proposals that have no matching preview.
    pub fits_fallback: bool,
}

impl Default for SelectionSection {
    fn default() -> Self {
        Self {
            min_cycle: 0,
            max_cycle: 31,
            max_images_per_proposal: 20,
            seed: 42,
            val_fraction: 0.1,
            fits_fallback: false,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ImagesSection {
    /// Side of the square output image; the longest source side is scaled to it.
    pub size_px: u32,
    pub jpeg_quality: u8,
    /// Stretch applied to FITS pixel values: `asinh` or `zscale`.
    pub stretch: String,
    /// Sources whose shorter side is below this are skipped as too small.
    pub min_source_px: u32,
    /// Sources whose long side exceeds this many times the short side are skipped; unset
    /// keeps every aspect ratio, as the original method did.
    pub max_aspect_ratio: Option<f64>,
    /// Sources with more pixels than this are skipped before decoding, so a hostile header
    /// cannot exhaust memory.
    pub max_source_pixels: u64,
    /// Images decoded, resized and encoded at once, each on its own thread; unset uses
    /// one per CPU core. Downloads run beside them, up to `archive.download_concurrency`.
    /// It changes no output, so the image stage's inputs leave it out.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub threads: Option<usize>,
}

/// Largest accepted `images.threads`.
pub const MAX_IMAGE_THREADS: usize = 1024;

impl ImagesSection {
    /// Returns how many preparations run at once: `threads`, or the CPU cores available.
    pub fn worker_threads(&self) -> usize {
        self.threads.unwrap_or_else(|| {
            std::thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get)
        })
    }
}

impl Default for ImagesSection {
    fn default() -> Self {
        Self {
            size_px: 512,
            jpeg_quality: 95,
            stretch: "asinh".to_string(),
            min_source_px: 16,
            max_aspect_ratio: None,
            max_source_pixels: 200_000_000,
            threads: None,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CaptionsSection {
    /// `paper` (`Category: X. <abstract>` exactly as the original code built it), `clean`,
    /// or `summary` (the LLM summary "objects; use cases", which needs `[summaries]`; a
    /// proposal without one gets its `paper` caption).
    pub form: String,
}

/// The caption form that uses the LLM summaries.
pub const SUMMARY_CAPTION_FORM: &str = "summary";

impl Default for CaptionsSection {
    fn default() -> Self {
        Self {
            form: "paper".to_string(),
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ShardsSection {
    pub samples_per_shard: usize,
}

impl Default for ShardsSection {
    fn default() -> Self {
        Self {
            samples_per_shard: 1000,
        }
    }
}

/// How a run on top of an earlier one decides what to query again.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RefreshSection {
    /// Days before the last covered release date that each refresh queries again, to
    /// catch observations the archive lists late.
    pub lookback_days: f64,
    /// Days after which a run queries every proposal again (a full refresh) so that
    /// observations withdrawn from the archive are noticed; 0 turns this off.
    pub full_refresh_every_days: f64,
}

impl Default for RefreshSection {
    fn default() -> Self {
        Self {
            lookback_days: 7.0,
            full_refresh_every_days: 30.0,
        }
    }
}

/// `[retention]`: which versions `paperclip datasets gc` keeps. A version is kept when
/// either rule keeps it, and the latest version always is; with neither rule set, every
/// version is kept. `paperclip run` records the section for gc (see
/// `paperclip::dataset::retention`).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RetentionSection {
    /// Keep the newest `keep_last` versions.
    pub keep_last: Option<u64>,
    /// Keep versions created less than `keep_days` days ago.
    pub keep_days: Option<u64>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SqlSection {
    /// SQL model files run in order; each file's stem names the view it defines.
    pub models: Vec<PathBuf>,
    /// The model whose rows become the dataset's samples.
    pub samples_model: String,
    /// The model that returns every product the image rules accept, with an `obsid`
    /// column. When set, each observation none of whose products it returns is reported
    /// as `no_matching_products`; without it, that status is per proposal.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub candidates_model: Option<String>,
}

/// `[sources.<name>]`: a CSV, Parquet or newline-delimited JSON file that models read as
/// the table `<name>`. Checked at load time and read by `paperclip::sql::sources`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SourceSection {
    /// The data file, relative to the pipeline file.
    pub path: PathBuf,
    pub format: SourceFormat,
    /// Columns in file order. Required for CSV; for Parquet and JSON the file's columns are
    /// checked against it and the table has exactly these columns.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub schema: Option<Vec<SourceColumn>>,
    /// CSV only: whether the first line names the columns (default true).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub has_header: Option<bool>,
    /// CSV only: the field separator, one ASCII character (default `","`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub delimiter: Option<String>,
}

/// File format of a source table.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SourceFormat {
    Csv,
    Parquet,
    /// Newline-delimited JSON: one object per line.
    Json,
}

/// One declared column of a source table, e.g. `{ name = "class", type = "VARCHAR" }`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SourceColumn {
    pub name: String,
    /// SQL type name, e.g. `BIGINT`, `DOUBLE`, `VARCHAR`, `DATE`.
    #[serde(rename = "type")]
    pub sql_type: String,
}

/// `[schedule]`: when `paperclip serve` refreshes the dataset. Checked at load time by
/// `paperclip::schedule::Schedule::from_section`, which also documents the DST rules.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ScheduleSection {
    /// Standard 5-field cron expression (minute hour day-of-month month day-of-week),
    /// read in `time_zone`; e.g. `"0 3 * * *"` is 03:00 every day.
    pub cron: Option<String>,
    /// IANA time zone of `cron`, e.g. `"Europe/Berlin"` or `"UTC"`; required with `cron`.
    pub time_zone: Option<String>,
    /// Wait after a failed run before it is tried again.
    pub retry_delay_secs: u64,
    /// Retries of a failed run before the refresh waits for its next due time.
    pub max_retries: u32,
}

impl Default for ScheduleSection {
    fn default() -> Self {
        Self {
            cron: None,
            time_zone: None,
            retry_delay_secs: 600,
            max_retries: 3,
        }
    }
}

/// `[storage]`: an object store that receives every published version, and the copy of
/// the blob store.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct StorageSection {
    /// `s3://bucket/prefix`, `gs://bucket/prefix` or `az://container/prefix`. Each run
    /// uploads the versions the store lacks, under `<prefix>/datasets/<name>/`. Credentials
    /// come from the environment (`AWS_ACCESS_KEY_ID`, ...), never from this file.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    /// The URL of the copy of the blob store and the prepared cache (downloads, prepared
    /// images and their records); default `url`. Blobs are keyed by content, so data
    /// directories with prefixes of their own may share one `blobs_url`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub blobs_url: Option<String>,
}

impl StorageSection {
    /// Returns the URL of the blob copy: `blobs_url`, or `url`; `None` keeps blobs local.
    pub fn blobs_url(&self) -> Option<&str> {
        self.blobs_url.as_deref().or(self.url.as_deref())
    }
}

/// URL schemes `storage.url` accepts.
pub const STORAGE_SCHEMES: [&str; 5] = ["s3", "gs", "az", "abfs", "abfss"];
