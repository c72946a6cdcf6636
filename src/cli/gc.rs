//! `paperclip datasets gc` and the expired versions in `datasets show`.

use anyhow::{Context, Result};
use paperclip::dataset::gc::{GcOptions, collect_garbage};
use paperclip::dataset::retention::{ExpiredVersion, RetentionPolicy};

use super::GlobalArgs;
use super::commands::{print_value, require_dataset};

/// Applies the retention policy (the flags when given, else the recorded one) to a dataset.
pub(super) async fn gc(
    global: &GlobalArgs,
    name: &str,
    dry_run: bool,
    keep_last: Option<u64>,
    keep_days: Option<u64>,
) -> Result<()> {
    let paths = require_dataset(global, name)?;
    let flags_given = keep_last.is_some() || keep_days.is_some();
    let options = GcOptions {
        dry_run,
        policy: flags_given.then_some(RetentionPolicy {
            keep_last,
            keep_days,
        }),
        now: chrono::Utc::now(),
    };
    let report = collect_garbage(&paths, &options)
        .await
        .with_context(|| format!("gc of {name} failed"))?;
    print_value(global, &report, || report.to_string())
}

/// One line per version gc removed, for `datasets show`; empty when there are none.
pub(super) fn format_expired(expired: &[ExpiredVersion]) -> String {
    expired
        .iter()
        .map(|e| {
            format!(
                "v{}  expired {}  published {}  removed by {}\n",
                e.version,
                e.expired_at,
                e.created_at.as_deref().unwrap_or("(unknown)"),
                e.reason
            )
        })
        .collect()
}
