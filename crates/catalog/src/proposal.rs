//! The proposal record that every reader in this crate produces, and the log of text repairs
//! made while reading it.
//!
//! Invariants of a `Proposal` returned by a reader: `id > 0`, `cycle <= MAX_PLAUSIBLE_CYCLE`,
//! and `abstract_raw` contains at least one non-whitespace character. Text fields hold the
//! reader's raw form (see each reader's docs), so whitespace and the catalog's `{...}` in place
//! of parentheses are kept as found.

use serde::{Deserialize, Serialize};
use std::fmt;

use crate::text::collapse_whitespace;

/// Largest HST cycle number a reader accepts. Cycles count observing years from Cycle 0
/// (1990), so a larger number is a typing or format error, not a real cycle.
pub const MAX_PLAUSIBLE_CYCLE: u32 = 99;

/// Field names used in [`TextRepair::field`].
pub mod field {
    pub const PROPOSAL_TYPE: &str = "proposal_type";
    pub const CATEGORY: &str = "category";
    pub const ID: &str = "id";
    pub const CYCLE: &str = "cycle";
    pub const TITLE: &str = "title";
    pub const PI: &str = "pi";
    pub const ABSTRACT: &str = "abstract";
}

/// One observing proposal with its abstract.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Proposal {
    /// Proposal (program) ID, e.g. 13012.
    pub id: u32,
    /// HST observing cycle.
    pub cycle: u32,
    /// Proposal type such as `GO`; empty when the source leaves it empty.
    pub proposal_type: String,
    /// Scientific category such as `SOLAR SYSTEM`; empty when the source has none.
    pub category: String,
    pub title: String,
    /// Principal investigator's name.
    pub pi: String,
    /// Abstract text in the reader's raw form. From `abstracts.cat` it usually starts with a
    /// space, because the blank line after `PI:` joins in as an empty first line.
    pub abstract_raw: String,
    /// Changes made to the source text while reading it, in input order.
    pub text_repairs: Vec<TextRepair>,
    /// 1-based input line where the record starts: the first header line of an
    /// `abstracts.cat` record, or the program header line of a Phase II file.
    pub source_line: usize,
}

impl Proposal {
    /// Returns the abstract with whitespace runs collapsed to one space and both ends trimmed.
    /// Braces are kept.
    pub fn abstract_normalized(&self) -> String {
        collapse_whitespace(&self.abstract_raw)
    }
}

/// One change a reader made to the source text of a proposal.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TextRepair {
    /// The affected field, one of the names in [`field`].
    pub field: String,
    pub kind: RepairKind,
    /// Input line, the value involved and what was done.
    pub detail: String,
}

/// Kind of change recorded in a [`TextRepair`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RepairKind {
    /// A line was not valid UTF-8 and was decoded as Latin-1 (ISO-8859-1).
    Latin1Fallback,
    /// An honorific such as `Dr.` was removed from a name; the detail keeps the original.
    HonorificRemoved,
    /// Control characters were replaced by spaces.
    ControlCharactersReplaced,
}

impl RepairKind {
    /// Returns the stable snake_case code, the same string serde writes.
    pub fn code(self) -> &'static str {
        match self {
            RepairKind::Latin1Fallback => "latin1_fallback",
            RepairKind::HonorificRemoved => "honorific_removed",
            RepairKind::ControlCharactersReplaced => "control_characters_replaced",
        }
    }
}

impl fmt::Display for RepairKind {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.write_str(self.code())
    }
}

/// Builds the repair for a line that was decoded as Latin-1.
pub(crate) fn latin1_repair(
    field_name: &str,
    line_number: usize,
    invalid_byte_offset: usize,
) -> TextRepair {
    TextRepair {
        field: field_name.to_owned(),
        kind: RepairKind::Latin1Fallback,
        detail: format!(
            "line {line_number}: invalid UTF-8 at byte {invalid_byte_offset} of the line; \
             decoded the whole line as Latin-1 (ISO-8859-1)"
        ),
    }
}

/// Builds the repair for a line whose control characters were replaced.
pub(crate) fn control_characters_repair(
    field_name: &str,
    line_number: usize,
    count: usize,
) -> TextRepair {
    TextRepair {
        field: field_name.to_owned(),
        kind: RepairKind::ControlCharactersReplaced,
        detail: format!("line {line_number}: replaced {count} control character(s) with spaces"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn proposal_with_abstract(abstract_raw: &str) -> Proposal {
        Proposal {
            id: 1,
            cycle: 1,
            proposal_type: String::new(),
            category: String::new(),
            title: String::new(),
            pi: String::new(),
            abstract_raw: abstract_raw.to_owned(),
            text_repairs: Vec::new(),
            source_line: 1,
        }
    }

    #[test]
    fn abstract_normalized_collapses_whitespace() {
        let proposal = proposal_with_abstract(" A {b}  c\td ");
        assert_eq!(proposal.abstract_normalized(), "A {b} c d");
    }

    #[test]
    fn repair_kind_code_matches_serde() {
        for kind in [
            RepairKind::Latin1Fallback,
            RepairKind::HonorificRemoved,
            RepairKind::ControlCharactersReplaced,
        ] {
            let json = serde_json::to_string(&kind).unwrap();
            assert_eq!(json, format!("\"{}\"", kind.code()));
        }
    }
}
