//! The ingest stage: the proposal catalog and the archive's observation and product tables,
//! with every record the stage cannot use recorded as a skip.

use std::collections::{BTreeMap, HashSet};
use std::path::Path;

use paperclip_archive::{MastClient, ObsId};
use paperclip_catalog::{Catalog, Proposal, parse_abstracts_cat, parse_phase2_pro};
use sha2::Digest;
use url::Url;

use super::config::PipelineConfig;
use super::run::RunOptions;
use super::skips::{Skip, StoredSkip};
use crate::error::{PipelineError, Result};

/// The catalog's proposals inside the selected cycles, and every id the catalog lists.
pub(super) struct LoadedCatalog {
    pub kept: Vec<Proposal>,
    pub all_ids: HashSet<i64>,
    /// SHA-256 of the catalog bytes.
    pub sha256: String,
}

/// Reads the catalog (URL or path), records skipped records, and keeps the cycle range.
pub(super) async fn load_proposals(
    config: &PipelineConfig,
    options: &RunOptions,
    client: &MastClient,
    counts: &mut BTreeMap<String, u64>,
    skips: &mut Vec<Skip>,
) -> Result<LoadedCatalog> {
    let (location, bytes) = read_catalog(config, options, client).await?;
    let sha256 = hex::encode(sha2::Sha256::digest(&bytes));
    let Catalog { proposals, skipped } = if location.to_ascii_lowercase().ends_with(".pro") {
        let proposal = parse_phase2_pro(&bytes).map_err(|e| {
            PipelineError::Invalid(format!("Phase II file {location} is unreadable: {e}"))
        })?;
        Catalog {
            proposals: vec![proposal],
            skipped: Vec::new(),
        }
    } else {
        parse_abstracts_cat(&bytes)
    };
    counts.insert(
        "catalog_records".into(),
        (proposals.len() + skipped.len()) as u64,
    );
    // A record skipped as unreadable is still listed, so it does not count as withdrawn.
    let mut skipped_ids = Vec::new();
    for skip in skipped {
        let item = format!("catalog line {}", skip.line);
        let proposal_id = skip.id.as_deref().and_then(|id| id.trim().parse().ok());
        skipped_ids.extend(proposal_id);
        skips.push(Skip::new(
            "catalog",
            item,
            proposal_id,
            skip.reason.code(),
            skip.reason.to_string(),
        ));
    }

    let mut all_ids: HashSet<i64> = proposals.iter().map(|p| i64::from(p.id)).collect();
    all_ids.extend(skipped_ids);
    let selection = &config.selection;
    let mut kept = Vec::new();
    for proposal in proposals {
        if (selection.min_cycle..=selection.max_cycle).contains(&proposal.cycle) {
            kept.push(proposal);
        } else {
            skips.push(Skip::new(
                "catalog",
                proposal.id.to_string(),
                Some(i64::from(proposal.id)),
                "cycle_out_of_range",
                format!(
                    "cycle {} is outside selection.min_cycle..=max_cycle ({}..={})",
                    proposal.cycle, selection.min_cycle, selection.max_cycle
                ),
            ));
        }
    }
    counts.insert("proposals".into(), kept.len() as u64);
    tracing::info!(proposals = kept.len(), "catalog read");
    Ok(LoadedCatalog {
        kept,
        all_ids,
        sha256,
    })
}

/// Returns the catalog's location (URL or resolved path) and bytes.
async fn read_catalog(
    config: &PipelineConfig,
    options: &RunOptions,
    client: &MastClient,
) -> Result<(String, Vec<u8>)> {
    let configured = &config.archive.catalog;
    let is_url = |text: &str| text.starts_with("http://") || text.starts_with("https://");
    let location = match &options.archive_override {
        // A local catalog path stays in force; a catalog URL moves with the archive.
        Some(base) if config.archive.catalog_is_url() => base
            .join("catalog/abstracts.cat")
            .map_err(|e| {
                PipelineError::Invalid(format!(
                    "archive URL {base} cannot hold a catalog path: {e}"
                ))
            })?
            .to_string(),
        _ => configured.clone(),
    };
    if is_url(&location) {
        let url = Url::parse(&location).map_err(|e| {
            PipelineError::Invalid(format!("catalog URL {location:?} is invalid: {e}"))
        })?;
        let bytes = client.fetch_text(&url).await?;
        return Ok((location, bytes));
    }
    let path = config.resolve(Path::new(&location));
    let bytes = std::fs::read(&path).map_err(|e| PipelineError::io(&path, e))?;
    Ok((path.display().to_string(), bytes))
}

/// Queries the products of `obsids`. Unreadable and quarantined rows become skips, each
/// tied to the requested observation it came from where that is known.
pub(super) async fn query_products(
    client: &MastClient,
    obsids: &[ObsId],
    counts: &mut BTreeMap<String, u64>,
) -> Result<(Vec<paperclip_archive::Product>, Vec<StoredSkip>)> {
    let list = client.products(obsids).await?;
    let mut skips: Vec<StoredSkip> = list
        .rejected
        .iter()
        .map(|row| StoredSkip::new(None, &rejected_row_skip(row)))
        .collect();
    for quarantined in &list.quarantined {
        // The row matched the request through its own obsID, since its parent was not
        // requested (or is 0).
        let obsid = Some(quarantined.product.obsid.get() as i64);
        let skip = Skip::new(
            "products",
            quarantined.product.data_uri.clone(),
            None,
            quarantined.reason.code(),
            format!(
                "product row of obsID {} has parent_obsid {}, which is not a requested observation",
                quarantined.product.obsid.get(),
                quarantined.product.parent_obsid.get()
            ),
        );
        skips.push(StoredSkip::new(obsid, &skip));
    }
    counts.insert("products_queried".into(), list.products.len() as u64);
    Ok((list.products, skips))
}

pub(super) fn rejected_row_skip(row: &paperclip_archive::RejectedRow) -> Skip {
    Skip::new(
        "archive",
        format!("{} row {}", row.service, row.index),
        None,
        "unreadable_row",
        format!("{}; row: {}", row.reason, row.row_json),
    )
}
