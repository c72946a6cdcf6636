//! The summary of one abstract, its JSON Schema and the token budget the schema implies.
//!
//! [`Summary`] and the bounds below are the source of truth. [`generate_schema`] builds
//! the JSON Schema (draft 2020-12) from them, and `schemas/summary.schema.json` is that
//! schema as committed. A test fails with the regeneration command ([`REGENERATE_COMMAND`])
//! when the two differ. Requests and the validator use the committed file, whose SHA-256 is
//! part of every cache key.
//!
//! Invariants of a summary that passes the schema:
//! - each list holds [`MIN_ITEMS`]..=[`MAX_ITEMS`] strings;
//! - each string has [`MIN_ITEM_CHARS`]..=[`MAX_ITEM_CHARS`] characters (Unicode scalar
//!   values, which is what JSON Schema's `minLength`/`maxLength` count);
//! - no string contains `;`, which separates the two lists in the caption, nor an
//!   invisible format or separator character (zero-width space, bidirectional override);
//! - no string contains a control character (Unicode category Cc), `"` or `\`. JSON then
//!   needs no escape for any item, so a grammar engine that emits the characters of a
//!   `pattern` verbatim inside the quotes still produces valid JSON. The pattern repeats
//!   the length bounds, because some engines drop `maxLength` when a `pattern` is present.
//!
//! [`max_tokens`] is the maximum number of tokens a backend that honours the schema can
//! generate. It is the longest conforming output in bytes, with 4-byte characters and the
//! maximum whitespace between tokens that a constrained backend allows. That is divided by
//! the minimum number of bytes a token decodes to (1), and the end-of-sequence token is
//! added. A correct constrained backend therefore never stops for length.

use std::sync::Arc;

use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

/// Minimum number of items in each list.
pub const MIN_ITEMS: usize = 1;
/// Maximum number of items in each list.
pub const MAX_ITEMS: usize = 5;
/// Minimum number of characters in one item.
pub const MIN_ITEM_CHARS: usize = 1;
/// Maximum number of characters in one item.
pub const MAX_ITEM_CHARS: usize = 100;

/// Path of the committed schema, relative to the repository root.
pub const SCHEMA_PATH: &str = "schemas/summary.schema.json";
/// The committed schema, as built into the binary.
pub const SCHEMA_JSON: &str = include_str!("../../../schemas/summary.schema.json");
/// Name of the schema for servers that require one (`response_format.json_schema.name`).
pub const SCHEMA_NAME: &str = "proposal_summary";
/// The command that rewrites the committed schema from [`generate_schema`].
pub const REGENERATE_COMMAND: &str = "UPDATE_SCHEMA=1 cargo test -p paperclip-summary schema";

/// Bytes of UTF-8 one character takes at most.
pub const MAX_BYTES_PER_CHAR: usize = 4;
/// Whitespace bytes a constrained backend puts between two JSON tokens at most.
/// llama.cpp's JSON grammar allows up to 22 (two line breaks and 20 spaces or tabs).
pub const MAX_WHITESPACE_BYTES_PER_GAP: usize = 24;
/// Bytes of output text one generated token carries at least. Every token of a byte-level
/// BPE or SentencePiece vocabulary other than the special tokens, which a JSON grammar
/// never allows, decodes to one byte or more.
pub const MIN_BYTES_PER_TOKEN: usize = 1;

/// The summary of one proposal abstract.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Summary {
    /// The astrophysical objects and phenomena the observations record.
    pub objects_and_phenomena: Vec<String>,
    /// Science use cases the data can serve.
    pub science_use_cases: Vec<String>,
}

/// The two lists of a [`Summary`], in caption order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SummaryField {
    ObjectsAndPhenomena,
    ScienceUseCases,
}

impl SummaryField {
    pub const ALL: [SummaryField; 2] = [Self::ObjectsAndPhenomena, Self::ScienceUseCases];

    /// Returns the JSON key, as serde writes the field of [`Summary`].
    pub fn key(self) -> &'static str {
        match self {
            Self::ObjectsAndPhenomena => "objects_and_phenomena",
            Self::ScienceUseCases => "science_use_cases",
        }
    }

    fn description(self) -> &'static str {
        match self {
            Self::ObjectsAndPhenomena => {
                "Astrophysical objects and phenomena the observations record, most relevant first."
            }
            Self::ScienceUseCases => {
                "Science use cases the data can serve, each a short self-contained phrase."
            }
        }
    }
}

impl Summary {
    /// Returns the list of one field.
    pub fn items(&self, field: SummaryField) -> &[String] {
        match field {
            SummaryField::ObjectsAndPhenomena => &self.objects_and_phenomena,
            SummaryField::ScienceUseCases => &self.science_use_cases,
        }
    }

    /// The caption of the method: both lists comma-joined, then joined by `"; "`.
    pub fn caption(&self) -> String {
        format!(
            "{}; {}",
            self.objects_and_phenomena.join(", "),
            self.science_use_cases.join(", ")
        )
    }
}

/// Regular expression every item matches: no control character, no invisible format or
/// separator character, no `"`, `\` or `;` (which separates the two lists in the
/// caption), and the length bounds.
pub fn item_pattern() -> String {
    format!(
        "^[^\\u0000-\\u001F\\u007F-\\u009F\\u00AD\\u180E\\u200B-\\u200F\\u2028-\\u202E\\u2060-\\u2064\\u2066-\\u2069\\uFEFF\";\\\\]{{{MIN_ITEM_CHARS},{MAX_ITEM_CHARS}}}$"
    )
}

/// Builds the JSON Schema of [`Summary`] from its fields and the bounds above.
pub fn generate_schema() -> Value {
    let item = json!({
        "type": "string",
        "minLength": MIN_ITEM_CHARS,
        "maxLength": MAX_ITEM_CHARS,
        "pattern": item_pattern(),
    });
    let mut properties = serde_json::Map::new();
    for field in SummaryField::ALL {
        let list = json!({
            "description": field.description(),
            "type": "array",
            "minItems": MIN_ITEMS,
            "maxItems": MAX_ITEMS,
            "items": item,
        });
        properties.insert(field.key().to_string(), list);
    }
    json!({
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "title": "Summary of an observing-proposal abstract",
        "description": "What the proposed observations record and what the data can be used for.",
        "type": "object",
        "properties": properties,
        "required": SummaryField::ALL.map(SummaryField::key),
        "additionalProperties": false,
    })
}

/// Renders [`generate_schema`] as the committed file contains it: pretty-printed with
/// object keys sorted, and a final newline. Sorting keeps the text the same whether or not
/// serde_json preserves insertion order (a dependency may turn that feature on).
pub fn render_schema() -> String {
    let sorted = sort_keys(generate_schema());
    let mut text = serde_json::to_string_pretty(&sorted).expect("a schema serializes");
    text.push('\n');
    text
}

/// `value` with the keys of every object in sorted order.
fn sort_keys(value: Value) -> Value {
    match value {
        Value::Object(object) => {
            let mut entries: Vec<(String, Value)> = object.into_iter().collect();
            entries.sort_by(|a, b| a.0.cmp(&b.0));
            Value::Object(
                entries
                    .into_iter()
                    .map(|(key, value)| (key, sort_keys(value)))
                    .collect(),
            )
        }
        Value::Array(items) => Value::Array(items.into_iter().map(sort_keys).collect()),
        other => other,
    }
}

/// Number of JSON tokens of the largest summary: the braces, the comma between the two
/// members, and per list its key, colon, brackets, items and the commas between them.
fn largest_output_token_count() -> usize {
    let per_list = 4 + MAX_ITEMS + (MAX_ITEMS - 1);
    3 + SummaryField::ALL.len() * per_list
}

/// Bytes of the longest output a backend that honours the schema can produce.
pub fn worst_case_output_bytes() -> usize {
    // U+1D538 takes 4 bytes in UTF-8 and needs no escape in JSON.
    let longest_item: String = "\u{1D538}".repeat(MAX_ITEM_CHARS);
    let largest = Summary {
        objects_and_phenomena: vec![longest_item.clone(); MAX_ITEMS],
        science_use_cases: vec![longest_item; MAX_ITEMS],
    };
    let compact = serde_json::to_string(&largest).expect("a summary serializes");
    // Whitespace may come before the first token, after the last and between any two.
    let gaps = largest_output_token_count() + 1;
    compact.len() + gaps * MAX_WHITESPACE_BYTES_PER_GAP
}

/// Returns the token budget of one request; see the module documentation.
pub fn max_tokens() -> u32 {
    let tokens = worst_case_output_bytes().div_ceil(MIN_BYTES_PER_TOKEN) + 1;
    u32::try_from(tokens).expect("the budget fits in u32")
}

/// A schema text that does not parse or compile.
#[derive(Debug, Clone, thiserror::Error)]
#[error("the summary schema {path} is unusable: {problem}")]
pub struct SchemaError {
    pub path: String,
    pub problem: String,
}

/// The committed schema: its text, parsed value, SHA-256 and compiled validator.
#[derive(Clone)]
pub struct SchemaFile {
    pub value: Value,
    /// SHA-256 of the file's bytes, hex.
    pub sha256: String,
    pub validator: Arc<jsonschema::Validator>,
}

impl std::fmt::Debug for SchemaFile {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter
            .debug_struct("SchemaFile")
            .field("sha256", &self.sha256)
            .finish_non_exhaustive()
    }
}

impl SchemaFile {
    /// Parses the schema built into the binary.
    pub fn committed() -> Result<Self, SchemaError> {
        Self::parse(SCHEMA_PATH, SCHEMA_JSON)
    }

    /// Parses and compiles a schema text under draft 2020-12.
    pub fn parse(path: &str, text: &str) -> Result<Self, SchemaError> {
        let unusable = |problem: String| SchemaError {
            path: path.to_string(),
            problem,
        };
        let value: Value = serde_json::from_str(text)
            .map_err(|e| unusable(format!("{e}; regenerate it with `{REGENERATE_COMMAND}`")))?;
        let validator = jsonschema::draft202012::new(&value)
            .map_err(|e| unusable(format!("{e}; regenerate it with `{REGENERATE_COMMAND}`")))?;
        Ok(Self {
            sha256: hex::encode(Sha256::digest(text.as_bytes())),
            value,
            validator: Arc::new(validator),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn committed_schema_matches_the_types() {
        let generated = render_schema();
        if std::env::var("UPDATE_SCHEMA").as_deref() == Ok("1") {
            let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("../..")
                .join(SCHEMA_PATH);
            std::fs::write(&path, &generated).unwrap();
            return;
        }
        assert!(
            SCHEMA_JSON == generated,
            "{SCHEMA_PATH} differs from the schema generated from the Summary type; rewrite it with `{REGENERATE_COMMAND}` and review the diff"
        );
    }

    #[test]
    fn schema_keys_are_the_serde_keys() {
        let summary = Summary {
            objects_and_phenomena: vec!["a".into()],
            science_use_cases: vec!["b".into()],
        };
        let value = serde_json::to_value(&summary).unwrap();
        let keys: Vec<&str> = value
            .as_object()
            .unwrap()
            .keys()
            .map(String::as_str)
            .collect();
        let mut expected = SummaryField::ALL.map(SummaryField::key).to_vec();
        expected.sort_unstable();
        assert_eq!(keys, expected);
        let schema = SchemaFile::committed().unwrap();
        assert!(schema.validator.is_valid(&value));
    }

    #[test]
    fn schema_enforces_every_bound() {
        let schema = SchemaFile::committed().unwrap();
        let long = "x".repeat(MAX_ITEM_CHARS + 1);
        let exact = "\u{e9}".repeat(MAX_ITEM_CHARS);
        let valid = |objects: Value| {
            schema
                .validator
                .is_valid(&json!({"objects_and_phenomena": objects, "science_use_cases": ["b"]}))
        };
        assert!(valid(json!(["a"])));
        assert!(valid(json!([exact])));
        assert!(valid(json!(["a", "b", "c", "d", "e"])));
        assert!(!valid(json!([])), "minItems");
        assert!(!valid(json!(["a", "b", "c", "d", "e", "f"])), "maxItems");
        assert!(!valid(json!([""])), "minLength");
        assert!(!valid(json!([long])), "maxLength");
        for bad in [
            "bell\u{7}",
            "line\nbreak",
            "del\u{7f}",
            "c1\u{85}",
            "quote\"",
            "back\\slash",
            "semi;colon",
            "zero\u{200b}width",
            "right\u{202e}left",
        ] {
            assert!(!valid(json!([bad])), "pattern lets {bad:?} through");
        }
        assert!(
            !schema
                .validator
                .is_valid(&json!({"objects_and_phenomena": ["a"]}))
        );
        assert!(!schema.validator.is_valid(&json!({
            "objects_and_phenomena": ["a"], "science_use_cases": ["b"], "extra": 1
        })));
    }

    #[test]
    fn budget_covers_the_largest_output() {
        assert_eq!(largest_output_token_count(), 29);
        // 2 lists of 5 items of 100 four-byte characters, quoted, with separators, keys and
        // braces (4,079 bytes), plus 30 gaps of 24 whitespace bytes.
        assert_eq!(worst_case_output_bytes(), 4_079 + 30 * 24);
        assert_eq!(max_tokens(), 4_800);
    }

    #[test]
    fn caption_joins_like_the_method() {
        let summary = Summary {
            objects_and_phenomena: vec!["isolated black holes".into(), "Galactic bulge".into()],
            science_use_cases: vec!["constrain black hole masses".into()],
        };
        assert_eq!(
            summary.caption(),
            "isolated black holes, Galactic bulge; constrain black hole masses"
        );
    }
}
