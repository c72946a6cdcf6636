//! Reader for the text form of an HST Phase II proposal (`.pro`), as STScI's APT prints it:
//! fixed-width pages with a program header, `Title`, a `Type  Cycle` table, `Investigators`,
//! `Abstract`, then observation details.
//!
//! What is read, and how:
//! - `id` from the line `HUBBLE SPACE TELESCOPE OBSERVING PROGRAM <id>`.
//! - `title` and `abstract_raw` from the lines after the headings `Title` and `Abstract`, up
//!   to the next dashed line. Lines are stripped, blank lines dropped, and the rest joined
//!   with single spaces, so neither has a leading space (unlike `abstracts.cat`).
//! - `proposal_type` and `cycle` from the row under the `Type  Cycle` header, each value
//!   taken from its header's columns.
//! - `pi` from the investigator line starting `PI:`: the name is the text up to the first run
//!   of two or more spaces (the institution column follows). A leading honorific (`Dr.`,
//!   `Prof.` and similar) is removed so the name matches the `abstracts.cat` form
//!   (`Laurent Lamy`), and a `honorific_removed` repair keeps the original text.
//! - `category` stays empty: the `.pro` form has no scientific category. The APT XML form of
//!   the same proposal has it in `<ScientificCategory>`, which this crate does not read.
//! - `source_line` is the line of the program header.
//!
//! Page-break lines such as `13012( 13) - 08-Oct-2012 18:16:54 - [  2]`, often preceded by a
//! form feed, are dropped wherever they occur. Lines that are not valid UTF-8 are decoded as
//! Latin-1 and recorded as repairs on the fields they feed.

use crate::error::CatalogError;
use crate::proposal::{
    MAX_PLAUSIBLE_CYCLE, Proposal, RepairKind, TextRepair, control_characters_repair, field,
    latin1_repair,
};
use crate::text::{DecodedLine, decode_lines, is_python_whitespace, python_strip};

const PROGRAM_HEADER: &str = "HUBBLE SPACE TELESCOPE OBSERVING PROGRAM";

/// Honorifics removed from the start of the PI's name. Longer forms come first so `Prof.`
/// wins over `Prof`.
const HONORIFICS: [&str; 9] = [
    "Professor",
    "Prof.",
    "Prof",
    "Dr.",
    "Dr",
    "Mrs.",
    "Mr.",
    "Ms.",
    "Miss",
];

/// Minimum number of dashes in a line that ends a section.
const MIN_DASHES_IN_RULE: usize = 5;

/// Parses the bytes of a Phase II `.pro` file.
///
/// # Errors
/// [`CatalogError::Phase2MissingSection`] when the program header, `Title`, `Type  Cycle`
/// table, `PI:` line or `Abstract` heading is missing,
/// [`CatalogError::Phase2EmptySection`] when the title, type/cycle row or abstract is empty, and
/// [`CatalogError::Phase2InvalidValue`] when the program ID or cycle is not a valid number.
pub fn parse_phase2_pro(bytes: &[u8]) -> Result<Proposal, CatalogError> {
    let lines: Vec<DecodedLine> = decode_lines(bytes)
        .into_iter()
        .filter(|line| !is_page_break_line(python_strip(&line.text)))
        .collect();
    let mut repairs = Vec::new();

    let (id, source_line) = read_program_id(&lines, &mut repairs)?;
    let title = read_section_text(&lines, "Title", field::TITLE, &mut repairs)?;
    let (proposal_type, cycle) = read_type_and_cycle(&lines, &mut repairs)?;
    let pi = read_pi(&lines, &mut repairs)?;
    let abstract_raw = read_section_text(&lines, "Abstract", field::ABSTRACT, &mut repairs)?;

    Ok(Proposal {
        id,
        cycle,
        proposal_type,
        category: String::new(),
        title,
        pi,
        abstract_raw,
        text_repairs: repairs,
        source_line,
    })
}

fn note_decoding(repairs: &mut Vec<TextRepair>, field_name: &str, line: &DecodedLine) {
    if let Some(offset) = line.latin1_fallback_at {
        repairs.push(latin1_repair(field_name, line.number, offset));
    }
    if line.control_characters_replaced > 0 {
        repairs.push(control_characters_repair(
            field_name,
            line.number,
            line.control_characters_replaced,
        ));
    }
}

fn read_program_id(
    lines: &[DecodedLine],
    repairs: &mut Vec<TextRepair>,
) -> Result<(u32, usize), CatalogError> {
    let (line, value) = lines
        .iter()
        .find_map(|line| {
            let rest = python_strip(&line.text).strip_prefix(PROGRAM_HEADER)?;
            Some((line, python_strip(rest)))
        })
        .ok_or(CatalogError::Phase2MissingSection {
            section: "program header",
            expected: "a line 'HUBBLE SPACE TELESCOPE OBSERVING PROGRAM <id>' on the first page",
        })?;

    let id = value
        .parse::<u32>()
        .ok()
        .filter(|&id| id > 0)
        .ok_or_else(|| CatalogError::Phase2InvalidValue {
            field: "program ID",
            value: value.to_owned(),
            line: line.number,
            expected: "a positive integer such as 13012".to_owned(),
        })?;

    note_decoding(repairs, field::ID, line);
    Ok((id, line.number))
}

/// Joins the non-blank lines between a heading line (exactly `heading` after stripping) and
/// the next dashed line.
fn read_section_text(
    lines: &[DecodedLine],
    heading: &'static str,
    field_name: &str,
    repairs: &mut Vec<TextRepair>,
) -> Result<String, CatalogError> {
    let heading_index = lines
        .iter()
        .position(|line| python_strip(&line.text) == heading)
        .ok_or(CatalogError::Phase2MissingSection {
            section: heading,
            expected: section_expectation(heading),
        })?;

    let mut parts = Vec::new();
    for line in lines[heading_index + 1..]
        .iter()
        .take_while(|line| !is_dashed_line(&line.text))
    {
        let text = python_strip(&line.text);
        if text.is_empty() {
            continue;
        }
        parts.push(text);
        note_decoding(repairs, field_name, line);
    }

    if parts.is_empty() {
        return Err(CatalogError::Phase2EmptySection {
            section: heading,
            line: lines[heading_index].number,
            expected: section_expectation(heading),
        });
    }
    Ok(parts.join(" "))
}

fn section_expectation(heading: &str) -> &'static str {
    match heading {
        "Title" => "a line 'Title' followed by the title text",
        _ => "a line 'Abstract' followed by text",
    }
}

fn read_type_and_cycle(
    lines: &[DecodedLine],
    repairs: &mut Vec<TextRepair>,
) -> Result<(String, u32), CatalogError> {
    const EXPECTED: &str =
        "a header line 'Type  Cycle' followed by a row of values such as 'GO  20'";

    let header_index = lines
        .iter()
        .position(|line| is_type_cycle_header(&line.text))
        .ok_or(CatalogError::Phase2MissingSection {
            section: "Type  Cycle",
            expected: EXPECTED,
        })?;
    let header = &lines[header_index];

    let value_line = lines[header_index + 1..]
        .iter()
        .take_while(|line| !is_dashed_line(&line.text))
        .find(|line| !python_strip(&line.text).is_empty())
        .ok_or(CatalogError::Phase2EmptySection {
            section: "Type  Cycle",
            line: header.number,
            expected: EXPECTED,
        })?;

    let proposal_type = column_value(&header.text, &value_line.text, "Type");
    let cycle_text = column_value(&header.text, &value_line.text, "Cycle");
    let cycle = parse_cycle(&cycle_text, value_line.number)?;

    note_decoding(repairs, field::PROPOSAL_TYPE, value_line);
    Ok((proposal_type, cycle))
}

fn is_type_cycle_header(text: &str) -> bool {
    let mut words = text.split(is_python_whitespace).filter(|w| !w.is_empty());
    words.next() == Some("Type") && words.any(|word| word == "Cycle")
}

/// Returns the text of `row` under the header word `name`: from the column where `name`
/// starts to the column where the next header word starts, stripped. Columns count chars.
fn column_value(header: &str, row: &str, name: &str) -> String {
    let starts = word_start_columns(header);
    let Some(position) = starts.iter().position(|&(_, word)| word == name) else {
        return String::new();
    };

    let start_column = starts[position].0;
    let end_column = starts
        .get(position + 1)
        .map_or(usize::MAX, |&(column, _)| column);
    let cell: String = row
        .chars()
        .skip(start_column)
        .take(end_column.saturating_sub(start_column))
        .collect();
    python_strip(&cell).to_owned()
}

fn word_start_columns(text: &str) -> Vec<(usize, &str)> {
    let mut starts = Vec::new();
    let mut word_start: Option<(usize, usize)> = None;

    for (column, (byte_index, character)) in text.char_indices().enumerate() {
        match (is_python_whitespace(character), word_start) {
            (false, None) => word_start = Some((column, byte_index)),
            (true, Some((start_column, start_byte))) => {
                starts.push((start_column, &text[start_byte..byte_index]));
                word_start = None;
            }
            _ => {}
        }
    }
    if let Some((start_column, start_byte)) = word_start {
        starts.push((start_column, &text[start_byte..]));
    }
    starts
}

fn parse_cycle(text: &str, line_number: usize) -> Result<u32, CatalogError> {
    text.parse::<u32>()
        .ok()
        .filter(|&cycle| cycle <= MAX_PLAUSIBLE_CYCLE)
        .ok_or_else(|| CatalogError::Phase2InvalidValue {
            field: "cycle",
            value: text.to_owned(),
            line: line_number,
            expected: format!(
                "an integer from 0 to {MAX_PLAUSIBLE_CYCLE} in the 'Cycle' column under the \
                 'Type  Cycle' header"
            ),
        })
}

fn read_pi(lines: &[DecodedLine], repairs: &mut Vec<TextRepair>) -> Result<String, CatalogError> {
    let (line, after_key) = lines
        .iter()
        .find_map(|line| {
            let rest = python_strip(&line.text).strip_prefix("PI:")?;
            Some((line, rest))
        })
        .ok_or(CatalogError::Phase2MissingSection {
            section: "PI",
            expected: "an investigator line starting with 'PI:' followed by the name",
        })?;

    let name_with_honorific = name_column(after_key);
    if name_with_honorific.is_empty() {
        return Err(CatalogError::Phase2EmptySection {
            section: "PI",
            line: line.number,
            expected: "the PI's name after 'PI:'",
        });
    }
    note_decoding(repairs, field::PI, line);

    let Some((honorific, name)) = split_honorific(name_with_honorific) else {
        return Ok(name_with_honorific.to_owned());
    };
    repairs.push(TextRepair {
        field: field::PI.to_owned(),
        kind: RepairKind::HonorificRemoved,
        detail: format!(
            "line {}: removed honorific '{honorific}' from '{name_with_honorific}' to match \
             the abstracts.cat name form",
            line.number
        ),
    });
    Ok(name.to_owned())
}

/// Returns the text before the first run of two or more whitespace characters, stripped.
fn name_column(after_key: &str) -> &str {
    let text = python_strip(after_key);
    let mut previous_was_space = false;
    for (byte_index, character) in text.char_indices() {
        let is_space = is_python_whitespace(character);
        if is_space && previous_was_space {
            return python_strip(&text[..byte_index]);
        }
        previous_was_space = is_space;
    }
    text
}

/// Splits a leading honorific from a name, when the name has one and text follows it.
fn split_honorific(name: &str) -> Option<(&'static str, &str)> {
    HONORIFICS.iter().find_map(|&honorific| {
        let rest = name.strip_prefix(honorific)?;
        let rest_stripped = python_strip(rest);
        let separated = rest.starts_with(is_python_whitespace);
        (separated && !rest_stripped.is_empty()).then_some((honorific, rest_stripped))
    })
}

fn is_dashed_line(text: &str) -> bool {
    let stripped = python_strip(text);
    stripped.len() >= MIN_DASHES_IN_RULE && stripped.bytes().all(|byte| byte == b'-')
}

/// Matches a stripped page-break line: `<program>(<version>) - <dd-Mon-yyyy hh:mm:ss> - [<page>]`.
fn is_page_break_line(text: &str) -> bool {
    let mut parts = text.split(" - ");
    let (Some(program), Some(timestamp), Some(page), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return false;
    };
    is_program_and_version(program) && is_timestamp(timestamp) && is_page_number(page)
}

fn is_digits(text: &str) -> bool {
    !text.is_empty() && text.bytes().all(|byte| byte.is_ascii_digit())
}

fn is_program_and_version(text: &str) -> bool {
    let Some((program, rest)) = text.split_once('(') else {
        return false;
    };
    let Some(version) = rest.strip_suffix(')') else {
        return false;
    };
    is_digits(program) && is_digits(version.trim_start_matches(' '))
}

/// Matches `dd-Mon-yyyy hh:mm:ss`, such as `08-Oct-2012 18:16:54`.
fn is_timestamp(text: &str) -> bool {
    const PATTERN: &[u8] = b"00-Aaa-0000 00:00:00";
    text.len() == PATTERN.len()
        && text.bytes().zip(PATTERN).all(|(byte, &class)| match class {
            b'0' => byte.is_ascii_digit(),
            b'A' => byte.is_ascii_uppercase(),
            b'a' => byte.is_ascii_lowercase(),
            separator => byte == separator,
        })
}

fn is_page_number(text: &str) -> bool {
    text.strip_prefix('[')
        .and_then(|rest| rest.strip_suffix(']'))
        .is_some_and(|number| is_digits(number.trim_start_matches(' ')))
}

#[cfg(test)]
mod tests;
