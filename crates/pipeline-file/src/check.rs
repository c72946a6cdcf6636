//! The checks of a pipeline file that need nothing but its text.

use crate::{
    HTTP_BACKEND, LOCAL_BACKEND, MAX_IMAGE_THREADS, PipelineConfig, STORAGE_SCHEMES,
    SUMMARY_CAPTION_FORM,
};

impl PipelineConfig {
    /// Checks value ranges, names, URLs and the summary settings. Each error names the
    /// setting, its value and the fix.
    pub(crate) fn check_text(&self) -> Result<(), String> {
        validate_dataset_name(&self.dataset.name)?;
        self.check_selection()?;
        self.check_refresh()?;
        self.check_images()?;
        self.check_captions_and_summaries()?;
        if self.shards.samples_per_shard == 0 {
            return Err("shards.samples_per_shard must be at least 1".into());
        }
        self.check_archive()?;
        self.check_schedule()?;
        self.check_storage()?;
        if self.sql.models.is_empty() {
            return Err("sql.models is empty; list at least one SQL file".into());
        }
        Ok(())
    }

    fn check_selection(&self) -> Result<(), String> {
        let selection = &self.selection;
        if selection.min_cycle > selection.max_cycle {
            return Err(format!(
                "selection.min_cycle ({}) is greater than selection.max_cycle ({}); swap them",
                selection.min_cycle, selection.max_cycle
            ));
        }
        if !(0.0..1.0).contains(&selection.val_fraction) {
            return Err(format!(
                "selection.val_fraction = {} is outside [0, 1); use e.g. 0.1 for 10% of proposals",
                selection.val_fraction
            ));
        }
        if selection.max_images_per_proposal == 0 {
            return Err(
                "selection.max_images_per_proposal = 0 would select nothing; use 1 or more".into(),
            );
        }
        Ok(())
    }

    fn check_refresh(&self) -> Result<(), String> {
        let refresh = &self.refresh;
        for (name, days) in [
            ("refresh.lookback_days", refresh.lookback_days),
            (
                "refresh.full_refresh_every_days",
                refresh.full_refresh_every_days,
            ),
        ] {
            if !(0.0..=36_500.0).contains(&days) {
                return Err(format!(
                    "{name} = {days} is outside 0..=36500 days; use e.g. 7 for lookback_days or 30 for full_refresh_every_days"
                ));
            }
        }
        Ok(())
    }

    fn check_images(&self) -> Result<(), String> {
        let images = &self.images;
        if !(16..=4096).contains(&images.size_px) {
            return Err(format!(
                "images.size_px = {} is outside 16..=4096",
                images.size_px
            ));
        }
        if !(1..=100).contains(&images.jpeg_quality) {
            return Err(format!(
                "images.jpeg_quality = {} is outside 1..=100",
                images.jpeg_quality
            ));
        }
        if let Some(ratio) = images.max_aspect_ratio
            && (ratio.is_nan() || ratio < 1.0)
        {
            return Err(format!(
                "images.max_aspect_ratio = {ratio} must be at least 1 (e.g. 3 rejects 150x900 images)"
            ));
        }
        if let Some(threads) = images.threads
            && !(1..=MAX_IMAGE_THREADS).contains(&threads)
        {
            return Err(format!(
                "images.threads = {threads} must be in 1..={MAX_IMAGE_THREADS}; remove it to use one thread per CPU core"
            ));
        }
        images
            .stretch
            .parse::<paperclip_images::Stretch>()
            .map_err(|error| format!("images.stretch: {error}"))?;
        Ok(())
    }

    /// Checks the caption form and, when enabled, the summaries settings.
    fn check_captions_and_summaries(&self) -> Result<(), String> {
        let summaries = &self.summaries;
        if self.captions.form == SUMMARY_CAPTION_FORM {
            if !summaries.enabled {
                return Err(
                    "captions.form = \"summary\" needs summaries; add [summaries] with enabled = true (the in-process model by default, or server_url for a model server), or use form = \"paper\"".into(),
                );
            }
        } else if self
            .captions
            .form
            .parse::<paperclip_catalog::caption::CaptionForm>()
            .is_err()
        {
            return Err(format!(
                "captions.form = {:?} is unknown; use \"paper\", \"clean\" or \"summary\"",
                self.captions.form
            ));
        }
        if summaries.enabled {
            summaries.check()?;
        } else if let Some(kind) = &summaries.backend
            && ![LOCAL_BACKEND, HTTP_BACKEND].contains(&kind.as_str())
        {
            return Err(format!(
                "summaries.backend = {kind:?} is unknown; use \"local\" or \"http\""
            ));
        }
        Ok(())
    }

    fn check_archive(&self) -> Result<(), String> {
        let archive = &self.archive;
        let bounded = [
            (
                "archive.request_timeout_secs",
                archive.request_timeout_secs,
                1,
                86_400,
            ),
            (
                "archive.max_retries",
                u64::from(archive.max_retries),
                0,
                100,
            ),
            (
                "archive.page_size",
                u64::from(archive.page_size),
                1,
                500_000,
            ),
            (
                "archive.proposals_per_query",
                archive.proposals_per_query as u64,
                1,
                10_000,
            ),
            (
                "archive.products_batch_size",
                archive.products_batch_size as u64,
                1,
                10_000,
            ),
            (
                "archive.download_concurrency",
                archive.download_concurrency as u64,
                1,
                1024,
            ),
        ];
        for (key, value, low, high) in bounded {
            if !(low..=high).contains(&value) {
                return Err(format!(
                    "{key} = {value} is outside {low}..={high}; leave it out for the default"
                ));
            }
        }
        let base_url = url::Url::parse(&archive.base_url).map_err(|e| {
            format!(
                "archive.base_url = {:?} is not a URL: {e}",
                archive.base_url
            )
        })?;
        if !["http", "https"].contains(&base_url.scheme()) {
            return Err(format!(
                "archive.base_url = {:?} must be an http or https URL",
                archive.base_url
            ));
        }
        if archive.catalog.trim().is_empty() {
            return Err(
                "archive.catalog is empty; give the abstracts.cat URL or a path relative to the pipeline file".into(),
            );
        }
        if archive.catalog_is_url() {
            url::Url::parse(&archive.catalog).map_err(|e| {
                format!("archive.catalog = {:?} is not a URL: {e}", archive.catalog)
            })?;
        } else if archive.catalog.contains("://") || archive.catalog.starts_with("file:") {
            return Err(format!(
                "archive.catalog = {:?} is neither an http(s) URL nor a path; write a file:// location as a plain path",
                archive.catalog
            ));
        }
        Ok(())
    }

    /// Checks the retry settings of `[schedule]`. The scheduler checks the cron expression
    /// and the time zone, because it owns the calendar.
    fn check_schedule(&self) -> Result<(), String> {
        let Some(schedule) = &self.schedule else {
            return Ok(());
        };
        if !(1..=MAX_RETRY_DELAY_SECS).contains(&schedule.retry_delay_secs) {
            return Err(format!(
                "schedule.retry_delay_secs = {} is outside 1..={MAX_RETRY_DELAY_SECS} (7 days); use e.g. 600 for ten minutes",
                schedule.retry_delay_secs
            ));
        }
        if schedule.max_retries > MAX_SCHEDULE_RETRIES {
            return Err(format!(
                "schedule.max_retries = {} is above {MAX_SCHEDULE_RETRIES}; use e.g. 3, and let the next due time try again",
                schedule.max_retries
            ));
        }
        Ok(())
    }
}

impl PipelineConfig {
    /// Checks that `storage.url` and `storage.blobs_url` name a bucket of a supported
    /// object store and carry no credentials (the value is not echoed when they do).
    fn check_storage(&self) -> Result<(), String> {
        let fields = [
            ("storage.url", &self.storage.url),
            ("storage.blobs_url", &self.storage.blobs_url),
        ];
        for (field, text) in fields {
            if let Some(text) = text {
                check_object_store_url(field, text)?;
            }
        }
        Ok(())
    }
}

/// Checks one object store URL setting, named `field` in messages.
fn check_object_store_url(field: &str, text: &str) -> Result<(), String> {
    let url = url::Url::parse(text).map_err(|e| {
        format!("{field} = {text:?} is not a URL ({e}); use e.g. \"s3://bucket/prefix\"")
    })?;
    if !url.username().is_empty() || url.password().is_some() {
        return Err(format!(
            "{field} carries credentials (the value is not shown); remove them and set them in the environment, e.g. AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY"
        ));
    }
    if !STORAGE_SCHEMES.contains(&url.scheme()) {
        return Err(format!(
            "{field} = {text:?} is not an object store URL; use s3://, gs:// or az://, or leave it out to keep the files in the data directory only"
        ));
    }
    if url.host_str().is_none_or(str::is_empty) {
        return Err(format!(
            "{field} = {text:?} names no bucket; use e.g. \"s3://bucket/prefix\""
        ));
    }
    check_storage_path(field, text, &url)?;
    if url.scheme() == "s3" {
        check_s3_bucket(field, text, url.host_str().unwrap_or_default())?;
    }
    Ok(())
}

/// Checks that the prefix of an object store URL is a plain key prefix: no query, no
/// fragment and no empty, `.` or `..` segment, which URL parsing would drop or rewrite
/// silently.
fn check_storage_path(field: &str, text: &str, url: &url::Url) -> Result<(), String> {
    if url.query().is_some() || url.fragment().is_some() {
        return Err(format!(
            "{field} = {text:?} has a query or a fragment; give only the bucket and the prefix"
        ));
    }
    let after_scheme = text.split_once("://").map_or("", |(_, rest)| rest);
    let prefix = after_scheme
        .split_once('/')
        .map_or("", |(_, prefix)| prefix);
    let prefix = prefix.strip_suffix('/').unwrap_or(prefix);
    let bad = !prefix.is_empty()
        && prefix
            .split('/')
            .any(|segment| segment.is_empty() || segment == "." || segment == "..");
    if bad {
        return Err(format!(
            "{field} = {text:?} has an empty, '.' or '..' segment in its prefix; write the prefix as plain names separated by single '/'"
        ));
    }
    Ok(())
}

/// Checks an S3 bucket name: 3 to 63 lower-case letters, digits, '.' and '-', starting and
/// ending with a letter or digit.
fn check_s3_bucket(field: &str, text: &str, bucket: &str) -> Result<(), String> {
    let edge_ok = |c: Option<char>| c.is_some_and(|c| c.is_ascii_lowercase() || c.is_ascii_digit());
    let valid = (3..=63).contains(&bucket.len())
        && bucket
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '.' || c == '-')
        && edge_ok(bucket.chars().next())
        && edge_ok(bucket.chars().last());
    if valid {
        return Ok(());
    }
    Err(format!(
        "{field} = {text:?} names the bucket {bucket:?}, which is not a valid S3 bucket name; use 3 to 63 lower-case letters, digits, '.' or '-'"
    ))
}

/// Largest `schedule.retry_delay_secs`: 7 days.
pub const MAX_RETRY_DELAY_SECS: u64 = 7 * 24 * 3600;
/// Largest `schedule.max_retries`.
pub const MAX_SCHEDULE_RETRIES: u32 = 100;

/// Checks that a dataset name is usable as a directory name and a quoted SQL identifier.
pub fn validate_dataset_name(name: &str) -> Result<(), String> {
    let valid = !name.is_empty()
        && name.len() <= 64
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '_')
        && name.chars().next().is_some_and(|c| c.is_ascii_lowercase());
    if valid {
        Ok(())
    } else {
        Err(format!(
            "dataset name {name:?} is invalid; use 1-64 characters a-z, 0-9, '-' or '_', starting with a letter"
        ))
    }
}
