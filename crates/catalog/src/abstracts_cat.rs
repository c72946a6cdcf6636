//! Reader for STScI's `abstracts.cat`, the plain-text catalog of HST proposal abstracts.
//!
//! The layout is a separator line of dashes, then header lines `Prop. Type:`, `Category:`,
//! `ID:`, `Cycle:`, `Title:`, `PI:`, then the abstract over many lines. The reader follows the
//! PAPERCLIP reference parser (`read_abstracts_file` in smsharma/PAPERCLIP-Hubble,
//! `utils/abstract_utils.py`) line for line:
//!
//! 1. Each line is stripped of leading and trailing whitespace (Python `str.strip`).
//! 2. A line starting with `-----` closes the current record, if it has any field, and resets
//!    the state.
//! 3. Outside the abstract, a line starting with one of the six header keys sets that field
//!    to the text after the first `:`, stripped. A repeated key overwrites the earlier value.
//! 4. Any other line right after `PI:` starts the abstract, even when it is empty. Any other
//!    line after another field is appended to that field with one space, so wrapped titles
//!    and the abstract body are joined with single spaces.
//! 5. Inside the abstract, lines that look like header keys are abstract text.
//! 6. The last record is kept at end of input even without a closing separator.
//!
//! Because of rule 4, the usual blank line after `PI:` makes the abstract start with a space.
//! `Proposal::abstract_raw` keeps that space, and also the braces `{...}` that the catalog
//! writes where the prose has parentheses.
//!
//! Where this reader differs from the reference, it does so to keep data or to report it:
//! - A line that is not valid UTF-8 is decoded as Latin-1 and the repair is recorded on the
//!   record, where the reference would stop with a decode error.
//! - A UTF-8 byte order mark at the start is dropped, so a first separator line still counts.
//! - Records the reference would keep with a missing or non-integer ID or cycle, or without
//!   an abstract, are reported in `Catalog::skipped`. So are duplicate IDs (the first kept
//!   record wins) and non-blank text outside any record, which the reference ignores.

use std::collections::HashMap;

use crate::catalog::{Catalog, CatalogSkip, SkipReason};
use crate::proposal::{
    MAX_PLAUSIBLE_CYCLE, Proposal, TextRepair, control_characters_repair, field, latin1_repair,
};
use crate::text::{DecodedLine, decode_lines, python_strip};

const SEPARATOR_PREFIX: &str = "-----";

/// Record fields, indexing `RecordBuilder::values`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Field {
    ProposalType,
    Category,
    Id,
    Cycle,
    Title,
    Pi,
    Abstract,
}

const FIELD_COUNT: usize = 7;

/// Header keys in the order the reference parser tests them.
const HEADER_KEYS: [(&str, Field); 6] = [
    ("Prop. Type:", Field::ProposalType),
    ("Category:", Field::Category),
    ("ID:", Field::Id),
    ("Cycle:", Field::Cycle),
    ("Title:", Field::Title),
    ("PI:", Field::Pi),
];

impl Field {
    fn name(self) -> &'static str {
        match self {
            Field::ProposalType => field::PROPOSAL_TYPE,
            Field::Category => field::CATEGORY,
            Field::Id => field::ID,
            Field::Cycle => field::CYCLE,
            Field::Title => field::TITLE,
            Field::Pi => field::PI,
            Field::Abstract => field::ABSTRACT,
        }
    }
}

/// Parses the bytes of an `abstracts.cat` file. Never fails: every record is either returned
/// in `proposals` or listed in `skipped` with the reason.
pub fn parse_abstracts_cat(bytes: &[u8]) -> Catalog {
    let mut parser = CatParser::default();
    for line in decode_lines(bytes) {
        parser.read_line(&line);
    }
    let catalog = parser.finish();

    tracing::debug!(
        proposals = catalog.proposals.len(),
        skipped = catalog.skipped.len(),
        "parsed abstracts.cat"
    );
    catalog
}

/// Fields of one record as read, before validation.
struct RecordBuilder {
    first_line: usize,
    values: [Option<String>; FIELD_COUNT],
    repairs: Vec<TextRepair>,
}

impl RecordBuilder {
    fn new(first_line: usize) -> Self {
        RecordBuilder {
            first_line,
            values: Default::default(),
            repairs: Vec::new(),
        }
    }

    fn value(&self, field: Field) -> Option<&str> {
        self.values[field as usize].as_deref()
    }

    fn set(&mut self, field: Field, value: &str) {
        self.values[field as usize] = Some(value.to_owned());
    }

    fn append(&mut self, field: Field, text: &str) {
        let value = self.values[field as usize].get_or_insert_with(String::new);
        value.push(' ');
        value.push_str(text);
    }

    fn note_decoding(&mut self, field: Field, line: &DecodedLine) {
        if let Some(offset) = line.latin1_fallback_at {
            self.repairs
                .push(latin1_repair(field.name(), line.number, offset));
        }
        if line.control_characters_replaced > 0 {
            self.repairs.push(control_characters_repair(
                field.name(),
                line.number,
                line.control_characters_replaced,
            ));
        }
    }
}

/// A run of non-blank lines outside any record.
struct StrayText {
    first_line: usize,
    line_count: usize,
}

#[derive(Default)]
struct CatParser {
    current: Option<RecordBuilder>,
    last_field: Option<Field>,
    stray_text: Option<StrayText>,
    proposals: Vec<Proposal>,
    first_line_by_id: HashMap<u32, usize>,
    skipped: Vec<CatalogSkip>,
}

impl CatParser {
    fn read_line(&mut self, line: &DecodedLine) {
        let text = python_strip(&line.text);

        if text.starts_with(SEPARATOR_PREFIX) {
            self.flush_stray_text();
            self.close_record();
            return;
        }

        if let Some((key, field)) = self.match_header_key(text) {
            self.read_header_line(line, &text[key.len()..], field);
        } else {
            self.read_continuation_line(line, text);
        }
    }

    fn match_header_key(&self, text: &str) -> Option<(&'static str, Field)> {
        if self.last_field == Some(Field::Abstract) {
            return None;
        }
        HEADER_KEYS
            .iter()
            .copied()
            .find(|(key, _)| text.starts_with(key))
    }

    fn read_header_line(&mut self, line: &DecodedLine, after_key: &str, field: Field) {
        self.flush_stray_text();

        let record = self
            .current
            .get_or_insert_with(|| RecordBuilder::new(line.number));
        record.set(field, python_strip(after_key));
        record.note_decoding(field, line);
        self.last_field = Some(field);
    }

    fn read_continuation_line(&mut self, line: &DecodedLine, text: &str) {
        let (Some(last_field), Some(record)) = (self.last_field, self.current.as_mut()) else {
            self.note_stray_text(line.number, text);
            return;
        };

        if last_field == Field::Pi {
            record.set(Field::Abstract, text);
            record.note_decoding(Field::Abstract, line);
            self.last_field = Some(Field::Abstract);
        } else {
            record.append(last_field, text);
            record.note_decoding(last_field, line);
        }
    }

    fn note_stray_text(&mut self, line_number: usize, text: &str) {
        if text.is_empty() {
            return;
        }
        let stray = self.stray_text.get_or_insert(StrayText {
            first_line: line_number,
            line_count: 0,
        });
        stray.line_count += 1;
    }

    fn flush_stray_text(&mut self) {
        if let Some(stray) = self.stray_text.take() {
            self.skipped.push(CatalogSkip {
                line: stray.first_line,
                id: None,
                reason: SkipReason::TextOutsideRecord {
                    line_count: stray.line_count,
                },
            });
        }
    }

    fn close_record(&mut self) {
        self.last_field = None;
        let Some(record) = self.current.take() else {
            return;
        };

        match build_proposal(record) {
            Ok(proposal) => self.keep_unique(proposal),
            Err(skip) => self.skipped.push(skip),
        }
    }

    fn keep_unique(&mut self, proposal: Proposal) {
        if let Some(&first_line) = self.first_line_by_id.get(&proposal.id) {
            self.skipped.push(CatalogSkip {
                line: proposal.source_line,
                id: Some(proposal.id.to_string()),
                reason: SkipReason::DuplicateId {
                    id: proposal.id,
                    first_line,
                },
            });
            return;
        }
        self.first_line_by_id
            .insert(proposal.id, proposal.source_line);
        self.proposals.push(proposal);
    }

    fn finish(mut self) -> Catalog {
        self.flush_stray_text();
        self.close_record();
        Catalog {
            proposals: self.proposals,
            skipped: self.skipped,
        }
    }
}

/// Validates a record. Checks run in the order ID, cycle, abstract, so a record with several
/// problems reports the first one.
fn build_proposal(record: RecordBuilder) -> Result<Proposal, CatalogSkip> {
    let raw_id = record.value(Field::Id).map(str::to_owned);
    let skip = |reason| CatalogSkip {
        line: record.first_line,
        id: raw_id.clone(),
        reason,
    };

    let id = parse_id(record.value(Field::Id)).map_err(skip)?;
    let cycle = parse_cycle(record.value(Field::Cycle)).map_err(skip)?;
    let abstract_raw = check_abstract(record.value(Field::Abstract)).map_err(skip)?;

    let text = |field| record.value(field).unwrap_or_default().to_owned();
    Ok(Proposal {
        id,
        cycle,
        proposal_type: text(Field::ProposalType),
        category: text(Field::Category),
        title: text(Field::Title),
        pi: text(Field::Pi),
        abstract_raw: abstract_raw.to_owned(),
        text_repairs: record.repairs.clone(),
        source_line: record.first_line,
    })
}

fn parse_id(value: Option<&str>) -> Result<u32, SkipReason> {
    match value {
        None => Err(SkipReason::MissingId),
        Some("") => Err(SkipReason::EmptyId),
        Some(text) => match text.parse::<u32>() {
            Ok(id) if id > 0 => Ok(id),
            _ => Err(SkipReason::InvalidId {
                value: text.to_owned(),
            }),
        },
    }
}

fn parse_cycle(value: Option<&str>) -> Result<u32, SkipReason> {
    let text = match value {
        None => return Err(SkipReason::MissingCycle),
        Some("") => return Err(SkipReason::EmptyCycle),
        Some(text) => text,
    };

    let cycle = text.parse::<i64>().map_err(|_| SkipReason::InvalidCycle {
        value: text.to_owned(),
    })?;
    match u32::try_from(cycle) {
        Ok(cycle) if cycle <= MAX_PLAUSIBLE_CYCLE => Ok(cycle),
        _ => Err(SkipReason::ImplausibleCycle { cycle }),
    }
}

fn check_abstract(value: Option<&str>) -> Result<&str, SkipReason> {
    match value {
        None => Err(SkipReason::MissingAbstract),
        Some(text) if python_strip(text).is_empty() => Err(SkipReason::EmptyAbstract),
        Some(text) => Ok(text),
    }
}

#[cfg(test)]
mod tests;
