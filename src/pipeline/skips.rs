//! Items a stage could not use, each with a stable reason code and a human-readable detail.
//! Nothing is dropped silently: every skip ends up in the version's `skips` table and in the
//! run summary's per-reason counts.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

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

/// A skip kept in the archive state, with the observation whose products produced it,
/// so later runs that do not query those products again still report it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoredSkip {
    /// The observation (`obsid`) whose product query produced the skip; `None` when the
    /// row could not be tied to one.
    pub obsid: Option<i64>,
    pub stage: String,
    pub item: String,
    pub proposal_id: Option<i64>,
    pub reason: String,
    pub detail: String,
}

impl StoredSkip {
    pub fn new(obsid: Option<i64>, skip: &Skip) -> Self {
        Self {
            obsid,
            stage: skip.stage.to_string(),
            item: skip.item.clone(),
            proposal_id: skip.proposal_id,
            reason: skip.reason.clone(),
            detail: skip.detail.clone(),
        }
    }

    /// The skip as a run reports it; an unknown stage name reads as `archive`.
    pub fn to_skip(&self) -> Skip {
        let stage = STAGES
            .iter()
            .find(|name| **name == self.stage)
            .copied()
            .unwrap_or("archive");
        Skip::new(
            stage,
            self.item.clone(),
            self.proposal_id,
            self.reason.clone(),
            self.detail.clone(),
        )
    }
}

/// Stage names a skip can carry.
const STAGES: [&str; 5] = ["catalog", "archive", "products", "download", "image"];

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
