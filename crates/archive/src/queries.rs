//! The two queries the pipeline runs: observations of HST proposals
//! (`Mast.Caom.Filtered`) and the products of observations
//! (`Mast.Caom.Products`).
//!
//! Both send their ids in chunks (`proposals_per_query`,
//! `products_batch_size`). MAST closes the connection when a result is above
//! its memory cap. So when a chunk of more than one id times out or its
//! connection closes early, the chunk is split in halves and each half is
//! queried on its own. A single id is not split but gets the ordinary
//! retries. A failed
//! chunk is never returned in part: either all its rows arrive or the query
//! fails.

use std::collections::HashSet;

use serde_json::{Value, json};

use crate::client::{Counters, MastClient, RetryMode};
use crate::envelope::Row;
use crate::error::ArchiveError;
use crate::ids::ObsId;
use crate::invoke::QueryShape;
use crate::model::{
    OBSERVATION_REQUIRED_COLUMNS, Observation, ObservationList, PRODUCT_REQUIRED_COLUMNS, Product,
    ProductList, QuarantineReason, RejectedRow, is_hst_row, split_products,
};

/// Service that filters CAOM observations by column values.
pub const SERVICE_CAOM_FILTERED: &str = "Mast.Caom.Filtered";
/// Service that lists the data products of observations.
pub const SERVICE_CAOM_PRODUCTS: &str = "Mast.Caom.Products";

impl MastClient {
    /// Returns the public HST observations of `proposal_ids`, in chunks of
    /// `proposals_per_query`. Rows of other collections are dropped and
    /// counted in [`crate::ClientStats::non_hst_rows_dropped`].
    pub async fn observations_for_proposals(
        &self,
        proposal_ids: &[u32],
    ) -> Result<ObservationList, ArchiveError> {
        let unique_ids = unique_in_order(proposal_ids);
        let mut observations = ObservationList::default();
        for chunk in unique_ids.chunks(self.config.proposals_per_query) {
            let mut pending = vec![chunk];
            while let Some(part) = pending.pop() {
                match self.query_observations(part).await {
                    Ok(part_list) => observations.extend(part_list),
                    Err(err) if part.len() > 1 && is_overload(&err) => {
                        let (left, right) = part.split_at(part.len() / 2);
                        self.log_split(SERVICE_CAOM_FILTERED, part.len(), &err);
                        pending.push(right);
                        pending.push(left);
                    }
                    Err(err) => return Err(err),
                }
            }
        }
        Ok(observations)
    }

    /// Returns the public HST observations whose `t_obs_release` (MJD) lies in
    /// `[min_mjd, max_mjd]`, both ends included as MAST's range filters do.
    /// A window that times out is split in halves down to [`MIN_RELEASE_SPLIT_DAYS`].
    pub async fn observations_released(
        &self,
        min_mjd: f64,
        max_mjd: f64,
    ) -> Result<ObservationList, ArchiveError> {
        let mut observations = ObservationList::default();
        let mut pending = vec![(min_mjd, max_mjd)];
        while let Some((low, high)) = pending.pop() {
            let splittable = high - low > MIN_RELEASE_SPLIT_DAYS;
            let params = release_params(low, high);
            let shape = QueryShape {
                required_columns: OBSERVATION_REQUIRED_COLUMNS,
                key_column: Some("obsid"),
            };
            let mode = if splittable {
                RetryMode::SplitOnOverload
            } else {
                RetryMode::Retry
            };
            match self
                .invoke_all_pages(SERVICE_CAOM_FILTERED, params.clone(), shape, mode)
                .await
            {
                Ok(rows) => observations.extend(self.parse_observations(rows, &params)?),
                Err(err) if splittable && is_overload(&err) => {
                    self.log_split(SERVICE_CAOM_FILTERED, 2, &err);
                    // MAST ranges include both ends, so the halves overlap at one
                    // instant; callers key observations by obsid.
                    let middle = low + (high - low) / 2.0;
                    pending.push((middle, high));
                    pending.push((low, middle));
                }
                Err(err) => return Err(err),
            }
        }
        Ok(observations)
    }

    /// Returns the products of `obsids`, in batches of
    /// `products_batch_size`. Duplicate obsids are requested once; an empty
    /// input returns an empty list without any request.
    pub async fn products(&self, obsids: &[ObsId]) -> Result<ProductList, ArchiveError> {
        let unique_obsids = unique_in_order(obsids);
        let mut list = ProductList::default();
        for batch in unique_obsids.chunks(self.config.products_batch_size) {
            let mut pending = vec![batch];
            while let Some(part) = pending.pop() {
                match self.query_products(part).await {
                    Ok(part_list) => list.extend(part_list),
                    Err(err) if part.len() > 1 && is_overload(&err) => {
                        let (left, right) = part.split_at(part.len() / 2);
                        self.log_split(SERVICE_CAOM_PRODUCTS, part.len(), &err);
                        pending.push(right);
                        pending.push(left);
                    }
                    Err(err) => return Err(err),
                }
            }
        }
        Ok(list)
    }

    async fn query_observations(
        &self,
        proposal_ids: &[u32],
    ) -> Result<ObservationList, ArchiveError> {
        let params = observation_params(proposal_ids);
        let shape = QueryShape {
            required_columns: OBSERVATION_REQUIRED_COLUMNS,
            key_column: Some("obsid"),
        };
        let rows = self
            .invoke_all_pages(
                SERVICE_CAOM_FILTERED,
                params.clone(),
                shape,
                split_mode(proposal_ids.len()),
            )
            .await?;
        self.parse_observations(rows, &params)
    }

    fn parse_observations(
        &self,
        rows: Vec<Row>,
        params: &Value,
    ) -> Result<ObservationList, ArchiveError> {
        let total_rows = rows.len();
        let mut list = ObservationList::default();
        for (index, row) in rows.iter().enumerate() {
            if !is_hst_row(row) {
                continue;
            }
            match Observation::from_row(row, index) {
                Ok(observation) => list.observations.push(observation),
                Err(reason) => {
                    list.rejected
                        .push(reject(SERVICE_CAOM_FILTERED, index, row, reason, params))
                }
            }
        }
        let observations = &list.observations;

        let dropped = (total_rows - observations.len() - list.rejected.len()) as u64;
        let without_position = observations
            .iter()
            .filter(|obs| !obs.has_position())
            .count() as u64;
        Counters::add(&self.counters.non_hst_rows_dropped, dropped);
        Counters::add(
            &self.counters.observations_without_position,
            without_position,
        );
        if dropped > 0 {
            tracing::info!(service = SERVICE_CAOM_FILTERED, params = %params, dropped, "dropped rows whose obs_collection is not HST");
        }
        Ok(list)
    }

    async fn query_products(&self, obsids: &[ObsId]) -> Result<ProductList, ArchiveError> {
        let params = product_params(obsids);
        let params_text = params.to_string();
        let context = crate::client::RequestContext::new(SERVICE_CAOM_PRODUCTS, &params_text);
        let shape = QueryShape {
            required_columns: PRODUCT_REQUIRED_COLUMNS,
            key_column: None,
        };
        let rows = self
            .invoke_all_pages(
                SERVICE_CAOM_PRODUCTS,
                params,
                shape,
                split_mode(obsids.len()),
            )
            .await?;
        let mut products = Vec::with_capacity(rows.len());
        let mut rejected = Vec::new();
        for (index, row) in rows.iter().enumerate() {
            match Product::from_row(row, index) {
                Ok(product) => products.push(product),
                Err(reason) => rejected.push(reject(
                    SERVICE_CAOM_PRODUCTS,
                    index,
                    row,
                    reason,
                    &params_text,
                )),
            }
        }

        let requested: HashSet<ObsId> = obsids.iter().copied().collect();
        let mut list = split_products(products, &requested);
        list.rejected = rejected;
        log_quarantine(&list, &context);
        Ok(list)
    }

    fn log_split(&self, service: &str, id_count: usize, cause: &ArchiveError) {
        Counters::add(&self.counters.splits, 1);
        tracing::warn!(service, id_count, cause = %cause, "splitting query in halves after a timeout or closed connection");
    }
}

/// Builds the `Mast.Caom.Filtered` params for public HST observations of
/// `proposal_ids`.
pub fn observation_params(proposal_ids: &[u32]) -> Value {
    let proposal_values: Vec<String> = proposal_ids.iter().map(u32::to_string).collect();
    json!({
        "columns": "*",
        "filters": [
            {"paramName": "obs_collection", "values": ["HST"]},
            {"paramName": "proposal_id", "values": proposal_values},
            {"paramName": "dataRights", "values": ["PUBLIC"]},
        ]
    })
}

/// Narrowest release window, in days, that a timed-out query is split into.
pub const MIN_RELEASE_SPLIT_DAYS: f64 = 1.0;

/// Builds the `Mast.Caom.Filtered` params for public HST observations released
/// in `[min_mjd, max_mjd]`.
pub fn release_params(min_mjd: f64, max_mjd: f64) -> Value {
    json!({
        "columns": "*",
        "filters": [
            {"paramName": "obs_collection", "values": ["HST"]},
            {"paramName": "dataRights", "values": ["PUBLIC"]},
            {"paramName": "t_obs_release", "values": [{"min": min_mjd, "max": max_mjd}]},
        ]
    })
}

/// Builds the `Mast.Caom.Products` params for `obsids`.
pub fn product_params(obsids: &[ObsId]) -> Value {
    let joined = obsids
        .iter()
        .map(ObsId::to_string)
        .collect::<Vec<_>>()
        .join(",");
    json!({ "obsid": joined })
}

/// Logs one line per query and reason, so a batch of orphaned rows does not
/// flood the log.
fn log_quarantine(list: &ProductList, context: &crate::client::RequestContext) {
    for reason in [
        QuarantineReason::ParentObsidZero,
        QuarantineReason::ParentNotRequested,
    ] {
        let mut rows = list.quarantined.iter().filter(|row| row.reason == reason);
        let Some(first) = rows.next() else {
            continue;
        };
        // The rows are returned in the list, so the caller decides how loud to be.
        tracing::info!(
            service = %context.service,
            params = %context.params,
            reason = reason.code(),
            rows = 1 + rows.count(),
            first_obsid = %first.product.obsid,
            first_data_uri = %first.product.data_uri,
            "quarantined product rows that fail the parent check"
        );
    }
}

fn split_mode(id_count: usize) -> RetryMode {
    if id_count > 1 {
        RetryMode::SplitOnOverload
    } else {
        RetryMode::Retry
    }
}

fn is_overload(err: &ArchiveError) -> bool {
    matches!(
        err,
        ArchiveError::Timeout { .. } | ArchiveError::ConnectionReset { .. }
    )
}

fn unique_in_order<T: Copy + Eq + std::hash::Hash>(values: &[T]) -> Vec<T> {
    let mut seen = HashSet::new();
    values
        .iter()
        .copied()
        .filter(|value| seen.insert(*value))
        .collect()
}

/// Sets a row aside with the reason it could not be read, and logs it.
fn reject(
    service: &'static str,
    index: usize,
    row: &Row,
    reason: String,
    params: &impl std::fmt::Display,
) -> RejectedRow {
    tracing::info!(service, params = %params, index, reason = %reason, "rejected an unreadable response row");
    RejectedRow {
        service,
        index,
        row_json: Value::Object(row.clone()).to_string(),
        reason,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn observation_params_shape() {
        let params = observation_params(&[13012, 8880]);
        let expected = json!({
            "columns": "*",
            "filters": [
                {"paramName": "obs_collection", "values": ["HST"]},
                {"paramName": "proposal_id", "values": ["13012", "8880"]},
                {"paramName": "dataRights", "values": ["PUBLIC"]},
            ]
        });
        assert_eq!(params, expected);
    }

    #[test]
    fn product_params_join_obsids() {
        let params = product_params(&[ObsId(2003738726), ObsId(5)]);
        assert_eq!(params, json!({"obsid": "2003738726,5"}));
    }

    #[test]
    fn duplicate_ids_are_dropped_in_order() {
        assert_eq!(unique_in_order(&[3, 1, 3, 2, 1]), vec![3, 1, 2]);
    }
}
