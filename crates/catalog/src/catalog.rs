//! The result of reading a proposal catalog: the kept proposals and a record of every input
//! record or text block that was not kept, with the reason.
//!
//! Invariant: every record of the input ends up either in `proposals` or in `skipped`, and
//! IDs in `proposals` are unique.

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::fmt;

use crate::error::CatalogError;
use crate::proposal::{MAX_PLAUSIBLE_CYCLE, Proposal};

/// Parsed catalog.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Catalog {
    /// Kept proposals in input order.
    pub proposals: Vec<Proposal>,
    /// Records and text blocks that were not kept, in the order they were found.
    pub skipped: Vec<CatalogSkip>,
}

/// One input record (or block of stray text) that was not kept.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CatalogSkip {
    /// 1-based input line where the record or text block starts.
    pub line: usize,
    /// The record's raw `ID:` value, when it has one.
    pub id: Option<String>,
    pub reason: SkipReason,
}

/// Reason a record was not kept. [`SkipReason::code`] is stable and snake_case.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "code", rename_all = "snake_case")]
pub enum SkipReason {
    /// The record has no `ID:` line.
    MissingId,
    /// The `ID:` line has no value.
    EmptyId,
    /// The ID is not a positive integer that fits in 32 bits.
    InvalidId { value: String },
    /// The record has no `Cycle:` line.
    MissingCycle,
    /// The `Cycle:` line has no value.
    EmptyCycle,
    /// The cycle is not an integer.
    InvalidCycle { value: String },
    /// The cycle is an integer but negative or above [`MAX_PLAUSIBLE_CYCLE`].
    ImplausibleCycle { cycle: i64 },
    /// No line follows the `PI:` line, so the record has no abstract.
    MissingAbstract,
    /// The abstract contains only whitespace.
    EmptyAbstract,
    /// An earlier kept record has the same ID.
    DuplicateId { id: u32, first_line: usize },
    /// The cycle is outside the range given to [`Catalog::filter_cycles`].
    CycleOutOfRange {
        cycle: u32,
        min_cycle: u32,
        max_cycle: u32,
    },
    /// Non-blank lines that belong to no record, such as a file header before the first
    /// record.
    TextOutsideRecord { line_count: usize },
}

impl SkipReason {
    /// Returns the stable snake_case code, the same string serde writes as `code`.
    pub fn code(&self) -> &'static str {
        match self {
            SkipReason::MissingId => "missing_id",
            SkipReason::EmptyId => "empty_id",
            SkipReason::InvalidId { .. } => "invalid_id",
            SkipReason::MissingCycle => "missing_cycle",
            SkipReason::EmptyCycle => "empty_cycle",
            SkipReason::InvalidCycle { .. } => "invalid_cycle",
            SkipReason::ImplausibleCycle { .. } => "implausible_cycle",
            SkipReason::MissingAbstract => "missing_abstract",
            SkipReason::EmptyAbstract => "empty_abstract",
            SkipReason::DuplicateId { .. } => "duplicate_id",
            SkipReason::CycleOutOfRange { .. } => "cycle_out_of_range",
            SkipReason::TextOutsideRecord { .. } => "text_outside_record",
        }
    }
}

impl fmt::Display for SkipReason {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SkipReason::MissingId => formatter
                .write_str("record has no 'ID:' line; add 'ID: <proposal number>' to the record"),
            SkipReason::EmptyId => formatter
                .write_str("record has an empty 'ID:' line; write the proposal number after 'ID:'"),
            SkipReason::InvalidId { value } => write!(
                formatter,
                "invalid proposal ID '{value}'; expected a positive integer such as 'ID: 13012'"
            ),
            SkipReason::MissingCycle => {
                formatter.write_str("record has no 'Cycle:' line; add 'Cycle: <HST cycle number>'")
            }
            SkipReason::EmptyCycle => formatter.write_str(
                "record has an empty 'Cycle:' line; write the HST cycle number after 'Cycle:'",
            ),
            SkipReason::InvalidCycle { value } => write!(
                formatter,
                "invalid cycle '{value}'; expected an integer such as 'Cycle: 20'"
            ),
            SkipReason::ImplausibleCycle { cycle } => write!(
                formatter,
                "implausible cycle {cycle}; expected a number from 0 to {MAX_PLAUSIBLE_CYCLE}"
            ),
            SkipReason::MissingAbstract => formatter.write_str(
                "record has no abstract; expected the abstract on the lines after 'PI:'",
            ),
            SkipReason::EmptyAbstract => formatter.write_str(
                "record has an empty abstract; expected abstract text on the lines after 'PI:'",
            ),
            SkipReason::DuplicateId { id, first_line } => write!(
                formatter,
                "duplicate proposal ID {id}, first kept at line {first_line}; the first record \
                 is kept, so remove or renumber this one"
            ),
            SkipReason::CycleOutOfRange {
                cycle,
                min_cycle,
                max_cycle,
            } => write!(
                formatter,
                "cycle {cycle} is outside the requested range {min_cycle}..={max_cycle}; widen \
                 the range to keep this proposal"
            ),
            SkipReason::TextOutsideRecord { line_count } => write!(
                formatter,
                "{line_count} non-blank line(s) outside any record were ignored; a record starts \
                 with a header line such as 'ID:' after a '-----' separator line"
            ),
        }
    }
}

impl Catalog {
    /// Keeps the proposals whose cycle lies in `min_cycle..=max_cycle` and moves the others
    /// to `skipped` with reason `cycle_out_of_range`.
    ///
    /// # Errors
    /// [`CatalogError::InvalidCycleRange`] when `min_cycle > max_cycle`.
    pub fn filter_cycles(self, min_cycle: u32, max_cycle: u32) -> Result<Catalog, CatalogError> {
        if min_cycle > max_cycle {
            return Err(CatalogError::InvalidCycleRange {
                min_cycle,
                max_cycle,
            });
        }

        let mut skipped = self.skipped;
        let mut proposals = Vec::with_capacity(self.proposals.len());
        for proposal in self.proposals {
            if (min_cycle..=max_cycle).contains(&proposal.cycle) {
                proposals.push(proposal);
                continue;
            }
            skipped.push(CatalogSkip {
                line: proposal.source_line,
                id: Some(proposal.id.to_string()),
                reason: SkipReason::CycleOutOfRange {
                    cycle: proposal.cycle,
                    min_cycle,
                    max_cycle,
                },
            });
        }

        Ok(Catalog { proposals, skipped })
    }

    /// Returns the kept proposal with this ID.
    pub fn get(&self, id: u32) -> Option<&Proposal> {
        self.proposals.iter().find(|proposal| proposal.id == id)
    }

    /// Counts skipped entries per reason code.
    pub fn skip_counts(&self) -> BTreeMap<&'static str, usize> {
        let mut counts = BTreeMap::new();
        for skip in &self.skipped {
            *counts.entry(skip.reason.code()).or_insert(0) += 1;
        }
        counts
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn proposal(id: u32, cycle: u32) -> Proposal {
        Proposal {
            id,
            cycle,
            proposal_type: String::new(),
            category: String::new(),
            title: String::new(),
            pi: String::new(),
            abstract_raw: " text".to_owned(),
            text_repairs: Vec::new(),
            source_line: id as usize,
        }
    }

    #[test]
    fn filter_cycles_records_dropped() {
        let catalog = Catalog {
            proposals: vec![proposal(1, 5), proposal(2, 20), proposal(3, 30)],
            skipped: Vec::new(),
        };

        let filtered = catalog.filter_cycles(10, 25).unwrap();

        let kept: Vec<u32> = filtered.proposals.iter().map(|p| p.id).collect();
        assert_eq!(kept, [2]);
        assert_eq!(filtered.skipped.len(), 2);
        assert_eq!(filtered.skipped[0].id.as_deref(), Some("1"));
        assert_eq!(filtered.skipped[0].line, 1);
        assert_eq!(
            filtered.skipped[1].reason,
            SkipReason::CycleOutOfRange {
                cycle: 30,
                min_cycle: 10,
                max_cycle: 25
            }
        );
        assert_eq!(filtered.skipped[1].reason.code(), "cycle_out_of_range");
    }

    #[test]
    fn filter_cycles_rejects_reversed_range() {
        let error = Catalog::default().filter_cycles(30, 20).unwrap_err();
        assert_eq!(
            error,
            CatalogError::InvalidCycleRange {
                min_cycle: 30,
                max_cycle: 20
            }
        );
        assert!(error.to_string().contains("30..=20"));
    }

    #[test]
    fn skip_reason_code_matches_serde_tag() {
        let reasons = [
            SkipReason::MissingId,
            SkipReason::EmptyId,
            SkipReason::InvalidId { value: "x".into() },
            SkipReason::MissingCycle,
            SkipReason::EmptyCycle,
            SkipReason::InvalidCycle { value: "x".into() },
            SkipReason::ImplausibleCycle { cycle: -1 },
            SkipReason::MissingAbstract,
            SkipReason::EmptyAbstract,
            SkipReason::DuplicateId {
                id: 1,
                first_line: 2,
            },
            SkipReason::CycleOutOfRange {
                cycle: 1,
                min_cycle: 2,
                max_cycle: 3,
            },
            SkipReason::TextOutsideRecord { line_count: 1 },
        ];

        for reason in reasons {
            let json = serde_json::to_value(&reason).unwrap();
            assert_eq!(json["code"], reason.code(), "{reason:?}");
            let back: SkipReason = serde_json::from_value(json).unwrap();
            assert_eq!(back, reason);
        }
    }

    #[test]
    fn skip_counts_by_code() {
        let catalog = Catalog {
            proposals: Vec::new(),
            skipped: vec![
                CatalogSkip {
                    line: 1,
                    id: None,
                    reason: SkipReason::MissingId,
                },
                CatalogSkip {
                    line: 9,
                    id: None,
                    reason: SkipReason::MissingId,
                },
            ],
        };
        assert_eq!(catalog.skip_counts().get("missing_id"), Some(&2));
    }
}
