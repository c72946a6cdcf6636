//! `paperclip datasets diff NAME A B`: which samples a version added, removed or changed
//! relative to another, in total, per split and per proposal.
//!
//! Samples are matched by key. A sample is changed when any column of its JSON differs
//! (its `sample_sha256`), which includes the prepared image, the caption and the split.

use std::collections::BTreeMap;
use std::path::Path;

use datafusion::arrow::array::{Array, Int64Array, StringArray};
use serde::Serialize;

use super::catalog::register_datasets;
use super::retention::{load_expired, unavailable_version};
use super::versions::{DatasetPaths, list_versions};
use crate::error::{PipelineError, Result};

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct DiffSummary {
    pub dataset: String,
    pub from_version: u64,
    pub to_version: u64,
    /// Samples per change kind: `added`, `removed`, `changed`, `unchanged`.
    pub totals: BTreeMap<String, u64>,
    /// Added, removed and changed samples per split of the newer version (removed samples
    /// count under their old split).
    pub by_split: Vec<DiffCount>,
    /// Added, removed and changed samples per proposal.
    pub by_proposal: Vec<DiffCount>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct DiffCount {
    pub group: String,
    pub change: String,
    pub samples: u64,
}

/// Resolves `latest`, `vN` or `N` to a published version number.
pub async fn resolve_version(paths: &DatasetPaths, text: &str) -> Result<u64> {
    let versions = list_versions(paths).await?;
    let known = || {
        versions
            .iter()
            .map(|v| format!("v{}", v.version))
            .collect::<Vec<_>>()
            .join(", ")
    };
    let requested = if text == "latest" {
        versions.last().map(|v| v.version)
    } else {
        text.trim_start_matches(['v', 'V']).parse::<u64>().ok()
    };
    match requested {
        Some(version) if versions.iter().any(|v| v.version == version) => Ok(version),
        Some(version) => {
            let available: Vec<u64> = versions.iter().map(|v| v.version).collect();
            Err(unavailable_version(
                paths,
                version,
                &load_expired(paths)?,
                &available,
            ))
        }
        None => Err(PipelineError::VersionNotFound {
            name: paths.name.clone(),
            version: text.to_string(),
            known: if versions.is_empty() {
                "none".into()
            } else {
                known()
            },
        }),
    }
}

/// Compares two published versions of a dataset.
pub async fn diff_versions(
    data_dir: &Path,
    dataset: &str,
    from: u64,
    to: u64,
) -> Result<DiffSummary> {
    let ctx = crate::sql::new_session();
    register_datasets(&ctx, data_dir).await?;
    // `sample_sha256` covers every column of the sample's JSON; versions written before it
    // existed are compared by image, caption and split.
    let by_sample_hash = has_column(&ctx, dataset, from, "sample_sha256").await?
        && has_column(&ctx, dataset, to, "sample_sha256").await?;
    let (columns, changed) = if by_sample_hash {
        ("sample_sha256", "a.sample_sha256 <> b.sample_sha256")
    } else {
        (
            "image_sha256, caption",
            "a.image_sha256 <> b.image_sha256 OR a.caption <> b.caption OR a.split <> b.split",
        )
    };
    let changes = format!(
        r#"WITH a AS (SELECT key, proposal_id, split, {columns} FROM "{dataset}".v{from}.samples),
                b AS (SELECT key, proposal_id, split, {columns} FROM "{dataset}".v{to}.samples)
           SELECT
               CAST(coalesce(b.proposal_id, a.proposal_id) AS BIGINT) AS proposal_id,
               coalesce(b.split, a.split) AS split,
               CASE
                   WHEN a.key IS NULL THEN 'added'
                   WHEN b.key IS NULL THEN 'removed'
                   WHEN {changed} THEN 'changed'
                   ELSE 'unchanged'
               END AS change
           FROM a FULL OUTER JOIN b ON a.key = b.key"#
    );
    ctx.register_table("changes", ctx.sql(&changes).await?.into_view())?;

    let totals = grouped(&ctx, "SELECT arrow_cast(change, 'Utf8') AS grp, arrow_cast(change, 'Utf8') AS change, count(*) AS n FROM changes GROUP BY change").await?;
    let by_split = grouped(
        &ctx,
        "SELECT arrow_cast(split, 'Utf8') AS grp, arrow_cast(change, 'Utf8') AS change, count(*) AS n FROM changes WHERE change <> 'unchanged' GROUP BY split, change ORDER BY 1, 2",
    )
    .await?;
    let by_proposal = grouped(
        &ctx,
        "SELECT arrow_cast(CAST(proposal_id AS VARCHAR), 'Utf8') AS grp, arrow_cast(change, 'Utf8') AS change, count(*) AS n FROM changes WHERE change <> 'unchanged' GROUP BY proposal_id, change ORDER BY proposal_id, 2",
    )
    .await?;

    let mut total_map: BTreeMap<String, u64> = ["added", "removed", "changed", "unchanged"]
        .iter()
        .map(|k| (k.to_string(), 0))
        .collect();
    for count in totals {
        total_map.insert(count.change, count.samples);
    }
    Ok(DiffSummary {
        dataset: dataset.to_string(),
        from_version: from,
        to_version: to,
        totals: total_map,
        by_split,
        by_proposal,
    })
}

async fn has_column(
    ctx: &datafusion::prelude::SessionContext,
    dataset: &str,
    version: u64,
    column: &str,
) -> Result<bool> {
    let table = ctx
        .table(format!(r#""{dataset}".v{version}.samples"#))
        .await?;
    Ok(table.schema().has_column_with_unqualified_name(column))
}

async fn grouped(ctx: &datafusion::prelude::SessionContext, sql: &str) -> Result<Vec<DiffCount>> {
    let batch = crate::sql::collect_one(ctx, sql).await?;
    let groups = batch.column(0).as_any().downcast_ref::<StringArray>();
    let changes = batch.column(1).as_any().downcast_ref::<StringArray>();
    let counts = batch.column(2).as_any().downcast_ref::<Int64Array>();
    let (Some(groups), Some(changes), Some(counts)) = (groups, changes, counts) else {
        return Err(PipelineError::Invalid(format!(
            "diff query returned unexpected column types: {}",
            batch.schema()
        )));
    };
    Ok((0..batch.num_rows())
        .map(|row| DiffCount {
            group: if groups.is_null(row) {
                String::new()
            } else {
                groups.value(row).to_string()
            },
            change: changes.value(row).to_string(),
            samples: counts.value(row) as u64,
        })
        .collect())
}
