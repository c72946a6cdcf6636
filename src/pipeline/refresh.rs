//! Incremental refresh of the archive state: decides what to query from the coverage of
//! the previous runs, queries only that, and merges the response into the state.
//!
//! A refresh asks the archive for:
//! - every observation of proposals the state has never covered (new in the catalog, or
//!   newly inside the cycle range), by proposal id;
//! - the observations of known proposals released in `[covered end − look-back, now)`,
//!   half-open, so with no look-back each release date lands in exactly one window;
//! - on a full refresh (the first run, `--full-refresh`, or when
//!   `refresh.full_refresh_every_days` have passed) every proposal by id instead, which is
//!   the only way to notice observations the archive no longer lists.
//!
//! Then the products of every observation it received. Rows it received replace the state's
//! rows with the same key; proposals that left the catalog are dropped with the reason
//! recorded. The window starts where the last *committed* state ends, so a failed run's
//! window is queried again by the next run whenever that happens.

use std::collections::{BTreeMap, HashSet};

use datafusion::arrow::array::RecordBatch;
use paperclip_archive::{MastClient, ObsId, Observation};
use paperclip_catalog::Proposal;
use serde::Serialize;

use super::config::RefreshSection;
use super::skips::{Skip, StoredSkip};
use super::state::{ArchiveState, CoveredInterval, filter_by_id, id_set, merge_sorted};
use super::tables;
use crate::error::Result;

/// Modified Julian Date of the Unix epoch.
const UNIX_EPOCH_MJD: f64 = 40_587.0;

/// Converts a UTC time to a Modified Julian Date.
pub fn mjd(time: chrono::DateTime<chrono::Utc>) -> f64 {
    time.timestamp_millis() as f64 / 86_400_000.0 + UNIX_EPOCH_MJD
}

/// Converts a Modified Julian Date to UTC, for messages.
pub fn mjd_to_utc(mjd: f64) -> String {
    let millis = ((mjd - UNIX_EPOCH_MJD) * 86_400_000.0).round() as i64;
    chrono::DateTime::from_timestamp_millis(millis).map_or_else(
        || format!("MJD {mjd}"),
        |t| t.format("%Y-%m-%dT%H:%M:%SZ").to_string(),
    )
}

/// Queries of one refresh, decided before any request.
#[derive(Debug, Clone, Serialize)]
pub struct RefreshPlan {
    /// True when every proposal is queried by id.
    pub full: bool,
    /// Reason for a full refresh.
    pub full_reason: Option<String>,
    /// Proposals queried by id: all of them on a full refresh, otherwise the new ones.
    pub by_id: Vec<u32>,
    /// Release-date window `[start, end)` (MJD) queried for the known proposals.
    pub window: Option<(f64, f64)>,
    /// Covered proposals that are no longer in the catalog.
    pub withdrawn: Vec<i64>,
    /// Covered proposals still in the catalog but outside the selected cycles.
    pub deselected: Vec<i64>,
    /// The time the refresh treats as now, MJD.
    pub now_mjd: f64,
}

impl RefreshPlan {
    /// Describes the refresh in one line, for logs and plans.
    pub fn describe(&self) -> String {
        let mut parts = Vec::new();
        if self.full {
            let reason = self.full_reason.as_deref().unwrap_or("requested");
            parts.push(format!(
                "full refresh of {} proposal(s) ({reason})",
                self.by_id.len()
            ));
        } else if !self.by_id.is_empty() {
            parts.push(format!("{} new proposal(s) by id", self.by_id.len()));
        }
        match self.window {
            Some((start, end)) => parts.push(format!(
                "observations released in [{}, {})",
                mjd_to_utc(start),
                mjd_to_utc(end)
            )),
            None if !self.full => parts.push("no new release window".to_string()),
            None => {}
        }
        if !self.withdrawn.is_empty() {
            parts.push(format!(
                "{} proposal(s) withdrawn from the catalog",
                self.withdrawn.len()
            ));
        }
        parts.join("; ")
    }

    /// True when the refresh sends no archive query at all.
    pub fn queries_nothing(&self) -> bool {
        self.by_id.is_empty() && self.window.is_none()
    }
}

/// Decides what to query. `catalog_ids` contains every id in the catalog, `kept` the
/// proposals inside the selected cycles.
pub fn plan_refresh(
    state: &ArchiveState,
    catalog_ids: &HashSet<i64>,
    kept: &[Proposal],
    now_mjd: f64,
    settings: &RefreshSection,
    force_full: bool,
) -> RefreshPlan {
    let coverage = &state.coverage;
    let kept_ids: HashSet<i64> = kept.iter().map(|p| i64::from(p.id)).collect();
    let full_reason = full_refresh_reason(state, now_mjd, settings, force_full);

    let by_id: Vec<u32> = kept
        .iter()
        .filter(|p| full_reason.is_some() || !coverage.proposals.contains(&i64::from(p.id)))
        .map(|p| p.id)
        .collect();
    let window = match (full_reason.is_some(), coverage.released_before_mjd) {
        (false, Some(covered_end)) if now_mjd > covered_end => {
            Some(((covered_end - settings.lookback_days).max(0.0), now_mjd))
        }
        _ => None,
    };
    let withdrawn = coverage
        .proposals
        .iter()
        .filter(|id| !catalog_ids.contains(id))
        .copied()
        .collect();
    let deselected = coverage
        .proposals
        .iter()
        .filter(|id| catalog_ids.contains(id) && !kept_ids.contains(id))
        .copied()
        .collect();
    RefreshPlan {
        full: full_reason.is_some(),
        full_reason,
        by_id,
        window,
        withdrawn,
        deselected,
        now_mjd,
    }
}

fn full_refresh_reason(
    state: &ArchiveState,
    now_mjd: f64,
    settings: &RefreshSection,
    force_full: bool,
) -> Option<String> {
    let coverage = &state.coverage;
    if force_full {
        return Some("--full-refresh".to_string());
    }
    if coverage.released_before_mjd.is_none() {
        return Some("first run".to_string());
    }
    let every_days = settings.full_refresh_every_days;
    let last_full = coverage.last_full_refresh_mjd.unwrap_or(f64::MIN);
    (every_days > 0.0 && now_mjd - last_full >= every_days).then(|| {
        format!("the last full refresh is more than refresh.full_refresh_every_days = {every_days} days old")
    })
}

/// Coverage ending this many days after now means the clock moved back or the coverage
/// was edited; smaller differences are clock skew between machines.
const MAX_COVERAGE_AHEAD_DAYS: f64 = 1.0;

/// Refuses an incremental refresh whose coverage ends well after `now_mjd`: its window
/// would be empty, so releases up to the coverage end would be missed.
pub fn check_coverage_not_ahead(state: &ArchiveState, now_mjd: f64) -> Result<()> {
    match state.coverage.released_before_mjd {
        Some(end) if end > now_mjd + MAX_COVERAGE_AHEAD_DAYS => {
            Err(crate::error::PipelineError::Invalid(format!(
                "the archive state covers release dates up to {}, after the current time {}; the clock moved back or the coverage was edited. Run with --full-refresh to query everything again",
                mjd_to_utc(end),
                mjd_to_utc(now_mjd)
            )))
        }
        _ => Ok(()),
    }
}

/// Counts and skips of one refresh, added to the run report.
pub struct RefreshOutcome {
    pub state: ArchiveState,
    pub counts: BTreeMap<String, u64>,
    pub skips: Vec<Skip>,
}

/// Runs the queries of `plan` and merges their responses into `previous`.
pub async fn refresh(
    client: &MastClient,
    plan: &RefreshPlan,
    previous: &ArchiveState,
    kept: &[Proposal],
    run_id: &str,
) -> Result<RefreshOutcome> {
    let mut counts = BTreeMap::new();
    let mut skips = Vec::new();
    let kept_ids: HashSet<i64> = kept.iter().map(|p| i64::from(p.id)).collect();

    let by_id = query_by_id(client, &plan.by_id, &mut skips).await?;
    let by_id_proposals: HashSet<i64> = plan.by_id.iter().map(|id| i64::from(*id)).collect();
    let windowed = match plan.window {
        Some((start, end)) => {
            let rows = query_window(client, start, end, &mut skips).await?;
            let in_window = |o: &Observation| {
                o.t_obs_release.is_some_and(|t| start <= t && t < end)
                    && kept_ids.contains(&i64::from(o.proposal_id))
                    && !by_id_proposals.contains(&i64::from(o.proposal_id))
            };
            let (kept_rows, other): (Vec<_>, Vec<_>) = rows.into_iter().partition(in_window);
            counts.insert("observations_outside_selection".into(), other.len() as u64);
            kept_rows
        }
        None => Vec::new(),
    };
    counts.insert("observations_queried_by_id".into(), by_id.len() as u64);
    counts.insert("observations_in_window".into(), windowed.len() as u64);

    let fetched = unique_by_obsid(by_id.iter().chain(&windowed));
    let obsids: Vec<ObsId> = fetched.iter().map(|o| o.obsid).collect();
    let (products, product_skips) = query_products(client, &obsids, &mut counts).await?;

    let fetched_products = FetchedProducts {
        products,
        skips: product_skips,
    };
    let mut state = merge(
        previous,
        plan,
        &kept_ids,
        &fetched,
        fetched_products,
        &mut skips,
    )?;
    record_withdrawals(plan, &mut skips);
    update_coverage(&mut state, plan, &kept_ids, &by_id, &windowed, run_id);
    counts.insert("observations".into(), state.observations.num_rows() as u64);
    counts.insert("products".into(), state.products.num_rows() as u64);
    Ok(RefreshOutcome {
        state,
        counts,
        skips,
    })
}

async fn query_by_id(
    client: &MastClient,
    proposal_ids: &[u32],
    skips: &mut Vec<Skip>,
) -> Result<Vec<Observation>> {
    if proposal_ids.is_empty() {
        return Ok(Vec::new());
    }
    let list = client.observations_for_proposals(proposal_ids).await?;
    skips.extend(list.rejected.iter().map(super::ingest::rejected_row_skip));
    Ok(list.observations)
}

async fn query_window(
    client: &MastClient,
    start_mjd: f64,
    end_mjd: f64,
    skips: &mut Vec<Skip>,
) -> Result<Vec<Observation>> {
    let list = client.observations_released(start_mjd, end_mjd).await?;
    skips.extend(list.rejected.iter().map(super::ingest::rejected_row_skip));
    Ok(list.observations)
}

async fn query_products(
    client: &MastClient,
    obsids: &[ObsId],
    counts: &mut BTreeMap<String, u64>,
) -> Result<(RecordBatch, Vec<StoredSkip>)> {
    let (products, skips) = super::ingest::query_products(client, obsids, counts).await?;
    counts.insert("products_queried".into(), products.len() as u64);
    Ok((tables::products_batch(&products), skips))
}

/// Response of the products query.
struct FetchedProducts {
    products: RecordBatch,
    skips: Vec<StoredSkip>,
}

fn unique_by_obsid<'a>(rows: impl Iterator<Item = &'a Observation>) -> Vec<Observation> {
    let mut seen = HashSet::new();
    rows.filter(|o| seen.insert(o.obsid)).cloned().collect()
}

/// Replaces the state's rows by what was fetched and drops rows of proposals that left the
/// selection. On a full refresh the state's other rows are withdrawn observations.
fn merge(
    previous: &ArchiveState,
    plan: &RefreshPlan,
    kept_ids: &HashSet<i64>,
    fetched: &[Observation],
    fetched_products: FetchedProducts,
    skips: &mut Vec<Skip>,
) -> Result<ArchiveState> {
    let fetched_obsids: HashSet<i64> = fetched.iter().map(|o| o.obsid.get() as i64).collect();
    if plan.full {
        record_vanished_observations(previous, kept_ids, &fetched_obsids, skips)?;
    }
    let retained = filter_by_id(&previous.observations, "proposal_id", |id| {
        kept_ids.contains(&id) && !plan.full
    })?;
    let retained = filter_by_id(&retained, "obsid", |id| !fetched_obsids.contains(&id))?;
    let observations = merge_sorted(&retained, &tables::observations_batch(fetched), &["obsid"])?;

    let retained_obsids = id_set(&retained, "obsid")?;
    let retained_products = filter_by_id(&previous.products, "parent_obsid", |id| {
        retained_obsids.contains(&id)
    })?;
    let products = merge_sorted(
        &retained_products,
        &fetched_products.products,
        &["parent_obsid", "data_uri", "obsid"],
    )?;

    // Skips tied to an observation live as long as its stored products; untied ones until
    // the next full refresh.
    let mut product_skips: Vec<StoredSkip> = previous
        .product_skips
        .iter()
        .filter(|skip| match skip.obsid {
            Some(obsid) => retained_obsids.contains(&obsid),
            None => !plan.full,
        })
        .cloned()
        .collect();
    for skip in fetched_products.skips {
        if !product_skips.contains(&skip) {
            product_skips.push(skip);
        }
    }
    Ok(ArchiveState {
        id: previous.id.clone(),
        observations,
        products,
        coverage: previous.coverage.clone(),
        product_skips,
    })
}

/// On a full refresh: observations in the state that the archive no longer returns.
fn record_vanished_observations(
    previous: &ArchiveState,
    kept_ids: &HashSet<i64>,
    fetched_obsids: &HashSet<i64>,
    skips: &mut Vec<Skip>,
) -> Result<()> {
    let vanished = filter_by_id(&previous.observations, "obsid", |id| {
        !fetched_obsids.contains(&id)
    })?;
    let vanished = filter_by_id(&vanished, "proposal_id", |id| kept_ids.contains(&id))?;
    let obs_ids = crate::sql::string_column(&vanished, "archive state", "obs_id")?;
    let proposal_ids = crate::sql::int64_column(&vanished, "archive state", "proposal_id")?;
    for row in 0..vanished.num_rows() {
        skips.push(Skip::new(
            "archive",
            obs_ids.value(row).to_string(),
            Some(proposal_ids.value(row)),
            "withdrawn_from_archive",
            "an earlier run received this observation; the archive no longer lists it as public",
        ));
    }
    Ok(())
}

fn record_withdrawals(plan: &RefreshPlan, skips: &mut Vec<Skip>) {
    for id in &plan.withdrawn {
        skips.push(Skip::new(
            "catalog",
            id.to_string(),
            Some(*id),
            "withdrawn_from_catalog",
            "an earlier run covered this proposal; the catalog no longer lists it",
        ));
    }
}

fn update_coverage(
    state: &mut ArchiveState,
    plan: &RefreshPlan,
    kept_ids: &HashSet<i64>,
    by_id: &[Observation],
    windowed: &[Observation],
    run_id: &str,
) {
    let coverage = &mut state.coverage;
    let end_mjd = if plan.full {
        plan.now_mjd
    } else {
        plan.now_mjd
            .max(coverage.released_before_mjd.unwrap_or(f64::MIN))
    };
    if !plan.by_id.is_empty() {
        coverage.intervals.push(CoveredInterval {
            run_id: run_id.to_string(),
            kind: if plan.full { "full" } else { "new_proposals" }.to_string(),
            start_mjd: None,
            end_mjd,
            proposals: plan.by_id.len() as u64,
            observations: by_id.len() as u64,
        });
    }
    if let Some((start_mjd, end)) = plan.window {
        let proposals: HashSet<u32> = windowed.iter().map(|o| o.proposal_id).collect();
        coverage.intervals.push(CoveredInterval {
            run_id: run_id.to_string(),
            kind: "released".to_string(),
            start_mjd: Some(start_mjd),
            end_mjd: end,
            proposals: proposals.len() as u64,
            observations: windowed.len() as u64,
        });
    }
    if plan.full {
        coverage.last_full_refresh_mjd = Some(plan.now_mjd);
    }
    coverage.proposals = kept_ids.iter().copied().collect();
    coverage.released_before_mjd = Some(end_mjd);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn proposal(id: u32) -> Proposal {
        Proposal {
            id,
            cycle: 20,
            proposal_type: "GO".into(),
            category: "STARS".into(),
            title: "t".into(),
            pi: "p".into(),
            abstract_raw: "a".into(),
            text_repairs: Vec::new(),
            source_line: 1,
        }
    }

    fn settings(lookback_days: f64) -> RefreshSection {
        RefreshSection {
            lookback_days,
            full_refresh_every_days: 0.0,
        }
    }

    fn covered(ids: &[i64], end_mjd: f64) -> ArchiveState {
        let mut state = ArchiveState::empty();
        state.coverage.proposals = ids.iter().copied().collect();
        state.coverage.released_before_mjd = Some(end_mjd);
        state.coverage.last_full_refresh_mjd = Some(end_mjd);
        state
    }

    #[test]
    fn first_run_is_full() {
        let plan = plan_refresh(
            &ArchiveState::empty(),
            &HashSet::from([1, 2]),
            &[proposal(1), proposal(2)],
            60000.0,
            &settings(7.0),
            false,
        );
        assert!(plan.full);
        assert_eq!(plan.by_id, vec![1, 2]);
        assert_eq!(plan.window, None);
    }

    #[test]
    fn later_run_queries_new_proposals_and_the_window() {
        let state = covered(&[1, 3], 60000.0);
        let plan = plan_refresh(
            &state,
            &HashSet::from([1, 2]),
            &[proposal(1), proposal(2)],
            60002.0,
            &settings(7.0),
            false,
        );
        assert!(!plan.full);
        assert_eq!(plan.by_id, vec![2]);
        assert_eq!(plan.window, Some((59993.0, 60002.0)));
        assert_eq!(plan.withdrawn, vec![3]);
    }

    #[test]
    fn no_time_passed_queries_nothing() {
        let state = covered(&[1], 60000.0);
        let plan = plan_refresh(
            &state,
            &HashSet::from([1]),
            &[proposal(1)],
            60000.0,
            &settings(7.0),
            false,
        );
        assert!(plan.queries_nothing(), "{plan:?}");
    }

    #[test]
    fn full_refresh_comes_due() {
        let state = covered(&[1], 60000.0);
        let every_day = RefreshSection {
            lookback_days: 0.0,
            full_refresh_every_days: 1.0,
        };
        let plan = plan_refresh(
            &state,
            &HashSet::from([1]),
            &[proposal(1)],
            60001.0,
            &every_day,
            false,
        );
        assert!(plan.full, "{plan:?}");
    }

    #[test]
    fn mjd_of_known_dates() {
        let epoch = chrono::DateTime::from_timestamp(0, 0).unwrap();
        assert_eq!(mjd(epoch), 40587.0);
        let j2000 = chrono::DateTime::parse_from_rfc3339("2000-01-01T12:00:00Z").unwrap();
        assert_eq!(mjd(j2000.to_utc()), 51544.5);
    }
}
