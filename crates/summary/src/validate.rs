//! Checking every output of a backend before it counts as a summary.
//!
//! The checks run in this order, and the first that fails decides the [`RejectReason`]:
//! 1. the finish reason: only `stop` is complete; `length` is a cut output, reported with
//!    where it stops ([`RejectReason::Truncated`]);
//! 2. a scan of the raw text: raw control characters and whitespace runs between tokens
//!    longer than a constrained backend emits;
//! 3. a strict parse that refuses repeated keys;
//! 4. the committed JSON Schema, through an independent validator (`jsonschema`), which
//!    owns the key set, the list and string bounds and the character pattern;
//! 5. what the schema cannot express: blank items and items that only name the telescope.
//!
//! An item that repeats an earlier item of its list (ignoring case and spacing) is dropped,
//! not rejected: the list means the same without it, and small models that loop on one
//! phrase then still give a summary. The schema's minimum of one item still holds, since
//! the first of the repeated items stays.
//!
//! Invariants: a rejection always carries a stable code and a detail that states where the
//! output went wrong. Dropping repeats is the only change the checker makes to an output,
//! and the caller keeps the raw text.

use serde::{Deserialize, Serialize};

use crate::completion::{Completion, FinishReason};
use crate::json_text::{StrictJsonError, parse_strict, scan};
use crate::schema::{MAX_WHITESPACE_BYTES_PER_GAP, SchemaFile, Summary, SummaryField};

/// Reason an output was rejected. The codes are stable, because they are stored in the
/// summary cache and the skips table.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RejectReason {
    /// The backend stopped at the token budget.
    Truncated,
    /// The backend stopped for a reason other than `stop` or `length`.
    UnexpectedFinishReason,
    /// A control character written raw into the text.
    RawControlCharacter,
    /// More whitespace between two tokens than a constrained backend emits.
    RunawayWhitespace,
    /// Not one JSON value.
    InvalidJson,
    /// An object names a key twice.
    DuplicateKey,
    /// The value breaks the committed schema.
    SchemaViolation,
    /// An item that is only whitespace.
    BlankItem,
    /// An item with an invisible format or separator character (zero-width space,
    /// bidirectional override, line separator), which would hide text in the caption.
    InvisibleCharacter,
    /// An item that only names the telescope (Hubble, HST, Hubble Space Telescope).
    ForbiddenOnly,
    /// The prompt for the abstract is over the size limit; no request was made.
    PromptTooLong,
    /// Every item is copied from the prompt's example answer.
    CopiedExample,
}

impl RejectReason {
    pub const ALL: [RejectReason; 12] = [
        Self::Truncated,
        Self::UnexpectedFinishReason,
        Self::RawControlCharacter,
        Self::RunawayWhitespace,
        Self::InvalidJson,
        Self::DuplicateKey,
        Self::SchemaViolation,
        Self::BlankItem,
        Self::InvisibleCharacter,
        Self::ForbiddenOnly,
        Self::PromptTooLong,
        Self::CopiedExample,
    ];

    /// Returns the stable code, e.g. `duplicate_key`.
    pub fn code(self) -> &'static str {
        match self {
            Self::Truncated => "truncated",
            Self::UnexpectedFinishReason => "unexpected_finish_reason",
            Self::RawControlCharacter => "raw_control_character",
            Self::RunawayWhitespace => "runaway_whitespace",
            Self::InvalidJson => "invalid_json",
            Self::DuplicateKey => "duplicate_key",
            Self::SchemaViolation => "schema_violation",
            Self::BlankItem => "blank_item",
            Self::InvisibleCharacter => "invisible_character",
            Self::ForbiddenOnly => "forbidden_only",
            Self::PromptTooLong => "prompt_too_long",
            Self::CopiedExample => "copied_example",
        }
    }
}

/// An output that did not pass, with what was wrong.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rejection {
    pub reason: RejectReason,
    pub detail: String,
}

impl Rejection {
    /// Keeps at most [`MAX_DETAIL_CHARS`] of `detail`, so a huge output quoted by a
    /// validator cannot flood logs and tables; the raw output is kept elsewhere.
    fn new(reason: RejectReason, detail: impl Into<String>) -> Self {
        let mut detail = detail.into();
        let count = detail.chars().count();
        if count > MAX_DETAIL_CHARS {
            detail = detail.chars().take(MAX_DETAIL_CHARS).collect();
            detail.push_str(&format!("... (detail cut from {count} characters)"));
        }
        Self { reason, detail }
    }
}

/// Words that name the telescope. An item made only of these (and [`FILLER_WORDS`])
/// describes nothing about the observations.
const FORBIDDEN_WORDS: [&str; 2] = ["hubble", "hst"];
const FILLER_WORDS: [&str; 4] = ["space", "telescope", "archive", "the"];

/// Most schema errors quoted in one rejection.
const MAX_SCHEMA_ERRORS: usize = 5;

/// Checks outputs against the committed schema and the rules above.
#[derive(Debug, Clone)]
pub struct OutputChecker {
    schema: SchemaFile,
    /// Example output of the prompt; an output that repeats it is rejected.
    example: Option<Summary>,
}

impl OutputChecker {
    pub fn new(schema: SchemaFile) -> Self {
        Self {
            schema,
            example: None,
        }
    }

    /// Also rejects outputs whose every item comes from `example`, the prompt's example
    /// output, because a model that copies it describes nothing of the abstract.
    pub fn with_example(mut self, example: Option<Summary>) -> Self {
        self.example = example;
        self
    }

    /// Returns the summary, or why the output is not one. `max_tokens` is the budget the
    /// request had, quoted when the output was cut.
    pub fn check(&self, completion: &Completion, max_tokens: u32) -> Result<Summary, Rejection> {
        check_finish(completion, max_tokens)?;
        check_raw_text(&completion.text)?;
        let value = parse_strict(&completion.text).map_err(|error| match error {
            StrictJsonError::DuplicateKey { .. } => {
                Rejection::new(RejectReason::DuplicateKey, error.to_string())
            }
            StrictJsonError::Syntax { .. } => {
                Rejection::new(RejectReason::InvalidJson, error.to_string())
            }
        })?;
        self.check_schema(&value)?;
        let summary: Summary = serde_json::from_value(value).map_err(|error| {
            Rejection::new(
                RejectReason::SchemaViolation,
                format!("the value passed the schema but is not a summary: {error}"),
            )
        })?;
        let summary = without_repeats(summary);
        check_items(&summary)?;
        self.check_not_example(&summary)?;
        Ok(summary)
    }

    fn check_not_example(&self, summary: &Summary) -> Result<(), Rejection> {
        let Some(example) = &self.example else {
            return Ok(());
        };
        let from_example = |field: SummaryField| {
            summary
                .items(field)
                .iter()
                .all(|item| example.items(field).iter().any(|e| same_item(e, item)))
        };
        if SummaryField::ALL.into_iter().all(from_example) {
            return Err(Rejection::new(
                RejectReason::CopiedExample,
                "every item repeats the prompt's example answer instead of describing the abstract",
            ));
        }
        Ok(())
    }

    fn check_schema(&self, value: &serde_json::Value) -> Result<(), Rejection> {
        let errors: Vec<String> = self
            .schema
            .validator
            .iter_errors(value)
            .map(|error| {
                let path = error.instance_path().to_string();
                let place = if path.is_empty() {
                    "/".to_string()
                } else {
                    path
                };
                format!("{place}: {error}")
            })
            .collect();
        if errors.is_empty() {
            return Ok(());
        }
        let shown = errors.len().min(MAX_SCHEMA_ERRORS);
        let mut detail = errors[..shown].join("; ");
        if errors.len() > shown {
            detail.push_str(&format!("; and {} more", errors.len() - shown));
        }
        Err(Rejection::new(RejectReason::SchemaViolation, detail))
    }
}

fn check_finish(completion: &Completion, max_tokens: u32) -> Result<(), Rejection> {
    match &completion.finish_reason {
        FinishReason::Stop => Ok(()),
        FinishReason::Length => {
            let end = scan(&completion.text).describe_end(completion.text.len());
            let used = completion
                .completion_tokens
                .map_or(String::new(), |n| format!(", {n} tokens generated"));
            Err(Rejection::new(
                RejectReason::Truncated,
                format!("{end}; the budget was {max_tokens} tokens{used}"),
            ))
        }
        FinishReason::Other(reason) => Err(Rejection::new(
            RejectReason::UnexpectedFinishReason,
            format!(
                "the backend stopped with finish reason {reason:?}; only \"stop\" marks a complete output"
            ),
        )),
    }
}

fn check_raw_text(text: &str) -> Result<(), Rejection> {
    let scanned = scan(text);
    if let Some(found) = scanned.raw_control {
        let place = if found.in_string {
            "inside a string"
        } else {
            "between tokens"
        };
        let path = if found.path.is_empty() {
            "/"
        } else {
            &found.path
        };
        return Err(Rejection::new(
            RejectReason::RawControlCharacter,
            format!(
                "raw control character U+{:04X} at byte {} {place} at {path}; JSON strings must escape it and the schema forbids it",
                u32::from(found.character),
                found.byte_offset
            ),
        ));
    }
    if scanned.longest_whitespace_bytes > MAX_WHITESPACE_BYTES_PER_GAP {
        return Err(Rejection::new(
            RejectReason::RunawayWhitespace,
            format!(
                "{} bytes of whitespace between two tokens at byte {}; a constrained backend emits at most {MAX_WHITESPACE_BYTES_PER_GAP}",
                scanned.longest_whitespace_bytes, scanned.longest_whitespace_offset
            ),
        ));
    }
    Ok(())
}

/// `summary` without the items that repeat an earlier item of the same list.
fn without_repeats(summary: Summary) -> Summary {
    let dedupe = |items: Vec<String>| {
        let mut kept: Vec<String> = Vec::with_capacity(items.len());
        for item in items {
            if !kept.iter().any(|earlier| same_item(earlier, &item)) {
                kept.push(item);
            }
        }
        kept
    };
    Summary {
        objects_and_phenomena: dedupe(summary.objects_and_phenomena),
        science_use_cases: dedupe(summary.science_use_cases),
    }
}

fn check_items(summary: &Summary) -> Result<(), Rejection> {
    for field in SummaryField::ALL {
        let items = summary.items(field);
        for (index, item) in items.iter().enumerate() {
            let at = format!("/{}/{index}", field.key());
            if let Some(hidden) = item.chars().find(|c| is_invisible(*c)) {
                return Err(Rejection::new(
                    RejectReason::InvisibleCharacter,
                    format!(
                        "{at} contains the invisible character U+{:04X} ({})",
                        u32::from(hidden),
                        excerpt(item)
                    ),
                ));
            }
            if item.trim().is_empty() {
                return Err(Rejection::new(
                    RejectReason::BlankItem,
                    format!("{at} is only whitespace ({})", excerpt(item)),
                ));
            }
            if only_names_the_telescope(item) {
                return Err(Rejection::new(
                    RejectReason::ForbiddenOnly,
                    format!(
                        "{at} = {} only names the telescope, which the prompt forbids",
                        excerpt(item)
                    ),
                ));
            }
        }
    }
    Ok(())
}

/// Format and separator characters that render as nothing or reorder text.
fn is_invisible(c: char) -> bool {
    matches!(
        c,
        '\u{00AD}'
            | '\u{180E}'
            | '\u{200B}'..='\u{200F}'
            | '\u{2028}'..='\u{202E}'
            | '\u{2060}'..='\u{2064}'
            | '\u{2066}'..='\u{2069}'
            | '\u{FEFF}'
    )
}

/// Maximum length of a rejection detail, in characters.
const MAX_DETAIL_CHARS: usize = 600;

/// Characters of an item quoted in a message; longer items are cut with their length.
const MAX_QUOTED_CHARS: usize = 120;

/// Quotes `text` for a message, cut to [`MAX_QUOTED_CHARS`].
pub fn excerpt(text: &str) -> String {
    let count = text.chars().count();
    if count <= MAX_QUOTED_CHARS {
        return format!("{text:?}");
    }
    let head: String = text.chars().take(MAX_QUOTED_CHARS).collect();
    format!("{head:?}... ({count} characters)")
}

/// True when every word of `item` names the telescope or is filler, and one names it.
fn only_names_the_telescope(item: &str) -> bool {
    let lower = item.to_lowercase();
    let words: Vec<&str> = lower
        .split(|c: char| !c.is_alphanumeric())
        .filter(|word| !word.is_empty())
        .collect();
    words.iter().any(|word| FORBIDDEN_WORDS.contains(word))
        && words
            .iter()
            .all(|word| FORBIDDEN_WORDS.contains(word) || FILLER_WORDS.contains(word))
}

fn same_item(a: &str, b: &str) -> bool {
    let normal = |s: &str| {
        s.split_whitespace()
            .collect::<Vec<_>>()
            .join(" ")
            .to_lowercase()
    };
    normal(a) == normal(b)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::schema::{MAX_ITEM_CHARS, max_tokens};

    #[test]
    fn invisible_characters_rejected() {
        for item in ["\u{200b}\u{200b}", "dark \u{202e}matter", "a\u{2028}b"] {
            let summary = Summary {
                objects_and_phenomena: vec![item.to_string()],
                science_use_cases: vec!["map dark matter".to_string()],
            };
            let rejection = check_items(&summary).unwrap_err();
            assert_eq!(
                rejection.reason,
                RejectReason::InvisibleCharacter,
                "{item:?}"
            );
        }
    }

    #[test]
    fn long_items_are_cut_in_messages() {
        let quoted = excerpt(&"x".repeat(5_000));
        assert!(quoted.len() < 200, "{quoted}");
        assert!(quoted.ends_with("(5000 characters)"), "{quoted}");
    }

    fn checker() -> OutputChecker {
        OutputChecker::new(SchemaFile::committed().unwrap())
    }

    fn completion(text: &str, finish_reason: FinishReason) -> Completion {
        Completion {
            text: text.to_string(),
            finish_reason,
            prompt_tokens: None,
            completion_tokens: None,
            elapsed_secs: 0.0,
        }
    }

    fn check(text: &str) -> Result<Summary, Rejection> {
        checker().check(&completion(text, FinishReason::Stop), max_tokens())
    }

    fn reason(text: &str) -> RejectReason {
        check(text).unwrap_err().reason
    }

    #[test]
    fn good_output_passes() {
        let summary = check(
            r#"{"objects_and_phenomena": ["Uranus aurorae", "ice giant magnetospheres"],
                "science_use_cases": ["map auroral emission over two rotations"]}"#,
        )
        .unwrap();
        assert_eq!(
            summary.caption(),
            "Uranus aurorae, ice giant magnetospheres; map auroral emission over two rotations"
        );
    }

    #[test]
    fn codes_are_unique_snake_case() {
        let codes: std::collections::BTreeSet<&str> =
            RejectReason::ALL.iter().map(|r| r.code()).collect();
        assert_eq!(codes.len(), RejectReason::ALL.len());
        for reason in RejectReason::ALL {
            let json = serde_json::to_string(&reason).unwrap();
            assert_eq!(json, format!("\"{}\"", reason.code()));
        }
    }

    #[test]
    fn ignored_item_bounds_rejected() {
        // A backend that ignores minItems/maxItems.
        let six = r#"{"objects_and_phenomena": ["a1", "b2", "c3", "d4", "e5", "f6"], "science_use_cases": ["x"]}"#;
        let rejection = check(six).unwrap_err();
        assert_eq!(rejection.reason, RejectReason::SchemaViolation);
        assert!(
            rejection.detail.contains("/objects_and_phenomena"),
            "{}",
            rejection.detail
        );
        let none = r#"{"objects_and_phenomena": [], "science_use_cases": ["x"]}"#;
        assert_eq!(reason(none), RejectReason::SchemaViolation);
        let long = format!(
            r#"{{"objects_and_phenomena": ["{}"], "science_use_cases": ["x"]}}"#,
            "y".repeat(MAX_ITEM_CHARS + 1)
        );
        assert_eq!(reason(&long), RejectReason::SchemaViolation);
        let missing = r#"{"objects_and_phenomena": ["a"]}"#;
        assert_eq!(reason(missing), RejectReason::SchemaViolation);
        let extra = r#"{"objects_and_phenomena": ["a"], "science_use_cases": ["b"], "notes": []}"#;
        assert_eq!(reason(extra), RejectReason::SchemaViolation);
        let strings = r#"{"objects_and_phenomena": "a, b", "science_use_cases": "c"}"#;
        assert_eq!(reason(strings), RejectReason::SchemaViolation);
    }

    #[test]
    fn runaway_whitespace_rejected() {
        let padded = format!(
            "{{\"objects_and_phenomena\": [\"a\"],{}\"science_use_cases\": [\"b\"]}}",
            "\n".repeat(200)
        );
        let rejection = check(&padded).unwrap_err();
        assert_eq!(rejection.reason, RejectReason::RunawayWhitespace);
        assert!(
            rejection.detail.contains("200 bytes"),
            "{}",
            rejection.detail
        );
        // The usual case: whitespace until the budget runs out.
        let endless = format!("{{\"objects_and_phenomena\": [\"a\",{}", "\n".repeat(4_000));
        let cut = checker()
            .check(&completion(&endless, FinishReason::Length), 4_000)
            .unwrap_err();
        assert_eq!(cut.reason, RejectReason::Truncated);
        // Pretty-printing within the bound is fine.
        let pretty = "{\n    \"objects_and_phenomena\": [\n        \"a\"\n    ],\n    \"science_use_cases\": [\"b\"]\n}\n";
        assert!(check(pretty).is_ok());
    }

    #[test]
    fn truncation_never_succeeds() {
        let text = r#"{"objects_and_phenomena": ["a"], "science_use_cases": ["b", "measure the"#;
        let mut cut = completion(text, FinishReason::Length);
        cut.completion_tokens = Some(20);
        let rejection = checker().check(&cut, 20).unwrap_err();
        assert_eq!(rejection.reason, RejectReason::Truncated);
        assert!(
            rejection.detail.contains("/science_use_cases/1"),
            "{}",
            rejection.detail
        );
        assert!(
            rejection.detail.contains("inside a string"),
            "{}",
            rejection.detail
        );
        assert!(
            rejection.detail.contains("budget was 20 tokens"),
            "{}",
            rejection.detail
        );
        // Even a complete, valid JSON text is not a success when the finish reason is length.
        let whole = r#"{"objects_and_phenomena": ["a"], "science_use_cases": ["b"]}"#;
        let rejection = checker()
            .check(&completion(whole, FinishReason::Length), 20)
            .unwrap_err();
        assert_eq!(rejection.reason, RejectReason::Truncated);
        let other = checker()
            .check(
                &completion(whole, FinishReason::Other("content_filter".into())),
                20,
            )
            .unwrap_err();
        assert_eq!(other.reason, RejectReason::UnexpectedFinishReason);
    }

    #[test]
    fn control_characters_rejected() {
        let raw = "{\"objects_and_phenomena\": [\"bell\u{7}\"], \"science_use_cases\": [\"b\"]}";
        let rejection = check(raw).unwrap_err();
        assert_eq!(rejection.reason, RejectReason::RawControlCharacter);
        assert!(rejection.detail.contains("U+0007"), "{}", rejection.detail);
        assert!(
            rejection.detail.contains("/objects_and_phenomena/0"),
            "{}",
            rejection.detail
        );
        let raw_newline =
            "{\"objects_and_phenomena\": [\"two\nlines\"], \"science_use_cases\": [\"b\"]}";
        assert_eq!(reason(raw_newline), RejectReason::RawControlCharacter);
        let raw_c1 = "{\"objects_and_phenomena\": [\"nel\u{85}\"], \"science_use_cases\": [\"b\"]}";
        assert_eq!(reason(raw_c1), RejectReason::RawControlCharacter);
        // Valid JSON escapes that decode to control characters break the schema's pattern.
        let escaped =
            r#"{"objects_and_phenomena": ["bell\u0007", "tab\t"], "science_use_cases": ["b"]}"#;
        assert_eq!(reason(escaped), RejectReason::SchemaViolation);
    }

    #[test]
    fn unicode_and_escapes_round_trip() {
        let text = r#"{"objects_and_phenomena": ["η Carinae", "Herbig–Haro objects", "\u00e9jecta \ud83c\udf0c"],
                       "science_use_cases": ["measure Hα emission", "trace gas at 10⁴ K"]}"#;
        let summary = check(text).unwrap();
        assert_eq!(
            summary.objects_and_phenomena,
            ["η Carinae", "Herbig–Haro objects", "éjecta 🌌"]
        );
        let again = serde_json::to_string(&summary).unwrap();
        assert_eq!(check(&again).unwrap(), summary);
        // An item of the maximum length in 4-byte characters passes.
        let widest = format!(
            r#"{{"objects_and_phenomena": ["{}"], "science_use_cases": ["b"]}}"#,
            "🌌".repeat(MAX_ITEM_CHARS)
        );
        assert!(check(&widest).is_ok());
        // Quotes and backslashes are outside the pattern even when escaped.
        let quoted =
            r#"{"objects_and_phenomena": ["the \"Pillars\""], "science_use_cases": ["b"]}"#;
        assert_eq!(reason(quoted), RejectReason::SchemaViolation);
    }

    #[test]
    fn repeated_keys_rejected() {
        let text = r#"{"objects_and_phenomena": ["a"], "science_use_cases": ["b"], "objects_and_phenomena": ["c", "d"]}"#;
        let rejection = check(text).unwrap_err();
        assert_eq!(rejection.reason, RejectReason::DuplicateKey);
        assert!(
            rejection.detail.contains("objects_and_phenomena"),
            "{}",
            rejection.detail
        );
    }

    #[test]
    fn item_rules_the_schema_cannot_express() {
        let blank = r#"{"objects_and_phenomena": ["   "], "science_use_cases": ["b"]}"#;
        assert_eq!(reason(blank), RejectReason::BlankItem);
        for telescope in [
            "HST",
            "Hubble",
            "Hubble Space Telescope",
            "the HST archive",
            "hubble/HST",
        ] {
            let text = format!(
                r#"{{"objects_and_phenomena": ["galaxy clusters"], "science_use_cases": ["{telescope}"]}}"#
            );
            assert_eq!(reason(&text), RejectReason::ForbiddenOnly, "{telescope}");
        }
        let named = r#"{"objects_and_phenomena": ["Hubble constant", "Hubble Deep Field galaxies"], "science_use_cases": ["b"]}"#;
        assert!(check(named).is_ok());
        let repeated = r#"{"objects_and_phenomena": ["dwarf galaxies", "Dwarf  galaxies", "dwarf novae"], "science_use_cases": ["b", "b"]}"#;
        let summary = check(repeated).unwrap();
        assert_eq!(summary.caption(), "dwarf galaxies, dwarf novae; b");
    }

    #[test]
    fn text_around_json_rejected() {
        let fenced =
            "```json\n{\"objects_and_phenomena\": [\"a\"], \"science_use_cases\": [\"b\"]}\n```";
        assert_eq!(reason(fenced), RejectReason::InvalidJson);
        assert_eq!(reason(""), RejectReason::InvalidJson);
    }
}
