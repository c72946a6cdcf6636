//! Items a stage could not use, each with a stable reason code and a human-readable detail.
//! Nothing is dropped silently: every skip ends up in the version's `skips` table and in the
//! run summary's per-reason counts.

use std::collections::BTreeMap;

use serde::Serialize;

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Skip {
    /// Stage that skipped the item: `catalog`, `archive`, `products`, `download` or `image`.
    pub stage: &'static str,
    /// Skipped item: a catalog line, a proposal id, an obsid or a data URI.
    pub item: String,
    pub proposal_id: Option<i64>,
    /// Stable snake_case code, e.g. `truncated`, `no_public_observations`.
    pub reason: String,
    pub detail: String,
}

impl Skip {
    pub fn new(
        stage: &'static str,
        item: impl Into<String>,
        proposal_id: Option<i64>,
        reason: impl Into<String>,
        detail: impl Into<String>,
    ) -> Self {
        Self {
            stage,
            item: item.into(),
            proposal_id,
            reason: reason.into(),
            detail: detail.into(),
        }
    }
}

/// Counts skips per `stage/reason`, sorted, for summaries.
pub fn count_by_reason(skips: &[Skip]) -> BTreeMap<String, usize> {
    let mut counts = BTreeMap::new();
    for skip in skips {
        *counts
            .entry(format!("{}/{}", skip.stage, skip.reason))
            .or_insert(0) += 1;
    }
    counts
}
