//! The `no_matching_products` status: what the image rules of the SQL models left without
//! an image. With `sql.candidates_model` set, the status is per observation (its products
//! matched no rule); without it, per proposal (none of its products was selected).

use std::collections::{BTreeSet, HashMap, HashSet};

use datafusion::arrow::array::{Int64Array, StringArray};
use datafusion::arrow::record_batch::RecordBatch;
use datafusion::prelude::SessionContext;

use super::skips::Skip;
use super::state::{ArchiveState, id_set};
use crate::error::{PipelineError, Result};
use crate::sql;

const REASON: &str = "no_matching_products";

/// Returns the obsids the candidates model returns.
pub(super) async fn candidate_obsids(ctx: &SessionContext, model: &str) -> Result<HashSet<i64>> {
    let batch = sql::collect_one(ctx, &format!("SELECT DISTINCT obsid FROM {model}"))
        .await
        .map_err(|error| {
            PipelineError::Invalid(format!(
                "sql.candidates_model = {model:?} cannot be read for its obsid column ({error}); the model must return the obsid of each accepted product"
            ))
        })?;
    let obsids = sql::int64_column(&batch, model, "obsid")?;
    Ok(obsids.iter().flatten().collect())
}

/// Records each observation none of whose products the candidates model returned.
/// Fails when a selected sample's observation is not among the candidates: the model then
/// does not return every accepted product, and the statuses would be wrong.
pub(super) fn record_observations(
    candidates: &HashSet<i64>,
    model: &str,
    selected: &Selected<'_>,
    state: &ArchiveState,
    skips: &mut Vec<Skip>,
) -> Result<()> {
    let observations = &state.observations;
    let obsids = sql::int64_column(observations, "observations", "obsid")?;
    let obs_ids = sql::string_column(observations, "observations", "obs_id")?;
    let proposal_ids = sql::int64_column(observations, "observations", "proposal_id")?;
    let products = products_per_observation(state)?;
    check_samples_are_candidates(candidates, model, selected, obsids, obs_ids)?;

    for row in 0..observations.num_rows() {
        let obsid = obsids.value(row);
        if candidates.contains(&obsid) {
            continue;
        }
        let detail = match products.get(&obsid) {
            None => {
                format!("0 products matched: the archive lists no product for observation {obsid}")
            }
            Some(count) => format!(
                "0 products matched the image rules of model {model}, out of {count} products of observation {obsid}"
            ),
        };
        skips.push(Skip::new(
            "products",
            obs_ids.value(row),
            Some(proposal_ids.value(row)),
            REASON,
            detail,
        ));
    }
    Ok(())
}

/// The samples model's rows, with its name for messages.
pub(super) struct Selected<'a> {
    pub batch: &'a RecordBatch,
    pub model: &'a str,
}

fn check_samples_are_candidates(
    candidates: &HashSet<i64>,
    model: &str,
    selected: &Selected<'_>,
    obsids: &Int64Array,
    obs_ids: &StringArray,
) -> Result<()> {
    let obsid_of: HashMap<&str, i64> = (0..obsids.len())
        .map(|row| (obs_ids.value(row), obsids.value(row)))
        .collect();
    let sample_obs_ids = sql::string_column(selected.batch, selected.model, "obs_id")?;
    for obs_id in sample_obs_ids.iter().flatten() {
        let known = obsid_of
            .get(obs_id)
            .is_some_and(|obsid| candidates.contains(obsid));
        if !known {
            return Err(PipelineError::Invalid(format!(
                "sql.candidates_model = {model:?} does not return observation {obs_id}, which the samples model {} selected; the candidates model must return every product the image rules accept, with its obsid",
                selected.model
            )));
        }
    }
    Ok(())
}

fn products_per_observation(state: &ArchiveState) -> Result<HashMap<i64, u64>> {
    let parents: &Int64Array = sql::int64_column(&state.products, "products", "parent_obsid")?;
    let mut counts = HashMap::new();
    for parent in parents.iter().flatten() {
        *counts.entry(parent).or_insert(0) += 1;
    }
    Ok(counts)
}

/// Records proposals that have observations but no product the selection accepted.
pub(super) fn record_proposals(
    selected: &RecordBatch,
    model: &str,
    state: &ArchiveState,
    skips: &mut Vec<Skip>,
) -> Result<()> {
    let selected_ids = sql::int64_column(selected, model, "proposal_id")?;
    let with_images: HashSet<i64> = selected_ids.iter().flatten().collect();
    let observed: BTreeSet<i64> = id_set(&state.observations, "proposal_id")?
        .into_iter()
        .collect();
    for proposal_id in observed.difference(&with_images.into_iter().collect()) {
        skips.push(Skip::new(
            "products",
            proposal_id.to_string(),
            Some(*proposal_id),
            REASON,
            "0 products matched the image rules of the SQL models",
        ));
    }
    Ok(())
}
