//! Property tests of the readers through the public API.

use paperclip_catalog::{MAX_PLAUSIBLE_CYCLE, parse_abstracts_cat, parse_phase2_pro};
use proptest::prelude::*;
use std::collections::HashSet;

const SEPARATOR: &str =
    "--------------------------------------------------------------------------------";
const HEADER_KEYS: [&str; 6] = ["Prop. Type:", "Category:", "ID:", "Cycle:", "Title:", "PI:"];
const WRAP_COLUMNS: usize = 80;

#[derive(Debug, Clone)]
struct GeneratedRecord {
    id: u32,
    cycle: u32,
    proposal_type: String,
    category: String,
    title: String,
    pi: String,
    abstract_words: Vec<String>,
}

/// A word that cannot start a separator line and contains no whitespace.
fn word() -> impl Strategy<Value = String> {
    "[A-Za-z0-9\u{e9}\u{fc}\u{c3}\u{3b1}][A-Za-z0-9{}().,;:'\u{e9}\u{fc}\u{c3}\u{2013}-]{0,11}"
}

fn phrase(max_words: usize) -> impl Strategy<Value = String> {
    proptest::collection::vec(word(), 0..=max_words).prop_map(|words| words.join(" "))
}

fn record_body() -> impl Strategy<Value = (u32, String, String, String, String, Vec<String>)> {
    (
        0..=MAX_PLAUSIBLE_CYCLE,
        prop_oneof![
            Just(String::new()),
            Just("GO".to_owned()),
            Just("SNAP".to_owned())
        ],
        phrase(3),
        phrase(12),
        phrase(4),
        proptest::collection::vec(word(), 1..60),
    )
}

fn records() -> impl Strategy<Value = Vec<GeneratedRecord>> {
    proptest::collection::btree_set(1u32..2_000_000, 1..6).prop_flat_map(|ids| {
        let count = ids.len();
        proptest::collection::vec(record_body(), count).prop_map(move |bodies| {
            ids.iter()
                .zip(bodies)
                .map(
                    |(&id, (cycle, proposal_type, category, title, pi, abstract_words))| {
                        GeneratedRecord {
                            id,
                            cycle,
                            proposal_type,
                            category,
                            title,
                            pi,
                            abstract_words,
                        }
                    },
                )
                .collect()
        })
    })
}

/// Wraps words at `WRAP_COLUMNS`, breaking only at single spaces.
fn wrap(words: &[String]) -> Vec<String> {
    let mut lines: Vec<String> = Vec::new();
    for word in words {
        match lines.last_mut() {
            Some(line) if line.chars().count() + 1 + word.chars().count() <= WRAP_COLUMNS => {
                line.push(' ');
                line.push_str(word);
            }
            _ => lines.push(word.clone()),
        }
    }
    lines
}

fn render(records: &[GeneratedRecord], line_end: &str) -> String {
    let mut lines = Vec::new();
    for record in records {
        lines.push(SEPARATOR.to_owned());
        lines.push(format!("Prop. Type: {}", record.proposal_type));
        lines.push(format!("Category: {}", record.category));
        lines.push(format!("ID: {}", record.id));
        lines.push(format!("Cycle: {}", record.cycle));
        lines.push(format!("Title: {}", record.title));
        lines.push(format!("PI: {}", record.pi));
        lines.push(String::new());
        lines.extend(wrap(&record.abstract_words));
    }
    lines.push(SEPARATOR.to_owned());
    lines.join(line_end) + line_end
}

/// Input built from catalog-like fragments, to reach more parser states than random bytes.
fn catalog_like_bytes() -> impl Strategy<Value = Vec<u8>> {
    let fragment = prop_oneof![
        Just(b"-----\n".to_vec()),
        Just(b"ID: 12\n".to_vec()),
        Just(b"ID: x\n".to_vec()),
        Just(b"Cycle: 20\n".to_vec()),
        Just(b"Cycle: -1\n".to_vec()),
        Just(b"Title: T\n".to_vec()),
        Just(b"PI: M\xFCller\n".to_vec()),
        Just(b"\r\n".to_vec()),
        Just(b"\r".to_vec()),
        Just(b"Abstract\n".to_vec()),
        Just(b"Type  Cycle\n".to_vec()),
        Just(b"HUBBLE SPACE TELESCOPE OBSERVING PROGRAM 7\n".to_vec()),
        proptest::collection::vec(any::<u8>(), 0..20),
    ];
    proptest::collection::vec(fragment, 0..40).prop_map(|parts| parts.concat())
}

fn is_python_stripped(text: &str) -> bool {
    let is_space = |c: char| c.is_whitespace() || ('\u{1c}'..='\u{1f}').contains(&c);
    text.trim_matches(is_space) == text
}

fn check_catalog_invariants(bytes: &[u8]) -> Result<(), TestCaseError> {
    let catalog = parse_abstracts_cat(bytes);

    let mut ids = HashSet::new();
    for proposal in &catalog.proposals {
        prop_assert!(ids.insert(proposal.id), "duplicate kept ID {}", proposal.id);
        prop_assert!(proposal.id > 0);
        prop_assert!(proposal.cycle <= MAX_PLAUSIBLE_CYCLE);
        prop_assert!(!proposal.abstract_raw.trim().is_empty());
    }
    for skip in &catalog.skipped {
        prop_assert!(!skip.reason.code().is_empty());
        prop_assert!(!skip.reason.to_string().is_empty());
    }
    Ok(())
}

proptest! {
    #[test]
    fn catalog_parser_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..2000)) {
        check_catalog_invariants(&bytes)?;
    }

    #[test]
    fn catalog_parser_handles_fragments(bytes in catalog_like_bytes()) {
        check_catalog_invariants(&bytes)?;
    }

    #[test]
    fn phase2_parser_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..2000)) {
        let _ = parse_phase2_pro(&bytes);
    }

    #[test]
    fn phase2_parser_handles_fragments(bytes in catalog_like_bytes()) {
        let _ = parse_phase2_pro(&bytes);
    }

    #[test]
    fn rendered_records_round_trip(
        records in records(),
        line_end in prop_oneof![Just("\n"), Just("\r\n")],
    ) {
        let catalog = parse_abstracts_cat(render(&records, line_end).as_bytes());

        prop_assert!(catalog.skipped.is_empty(), "{:?}", catalog.skipped);
        prop_assert_eq!(catalog.proposals.len(), records.len());
        for (parsed, expected) in catalog.proposals.iter().zip(&records) {
            prop_assert_eq!(parsed.id, expected.id);
            prop_assert_eq!(parsed.cycle, expected.cycle);
            prop_assert_eq!(&parsed.proposal_type, &expected.proposal_type);
            prop_assert_eq!(&parsed.category, &expected.category);
            prop_assert_eq!(&parsed.title, &expected.title);
            prop_assert_eq!(&parsed.pi, &expected.pi);
            prop_assert_eq!(&parsed.abstract_raw, &format!(" {}", expected.abstract_words.join(" ")));
            prop_assert!(parsed.text_repairs.is_empty());
        }
    }

    #[test]
    fn utf8_values_round_trip_exactly(
        title in "\\PC{1,40}",
        pi in "\\PC{1,20}",
        abstract_line in "\\PC{1,60}",
    ) {
        prop_assume!(is_python_stripped(&title) && is_python_stripped(&pi));
        prop_assume!(is_python_stripped(&abstract_line) && !abstract_line.starts_with("-----"));
        prop_assume!(!HEADER_KEYS.iter().any(|key| abstract_line.starts_with(key)));
        let input = format!("{SEPARATOR}\nID: 5\nCycle: 20\nTitle: {title}\nPI: {pi}\n{abstract_line}\n{SEPARATOR}\n");

        let catalog = parse_abstracts_cat(input.as_bytes());

        prop_assert_eq!(catalog.proposals.len(), 1, "{:?}", catalog.skipped);
        let proposal = &catalog.proposals[0];
        prop_assert_eq!(proposal.title.as_bytes(), title.as_bytes());
        prop_assert_eq!(proposal.pi.as_bytes(), pi.as_bytes());
        prop_assert_eq!(proposal.abstract_raw.as_bytes(), abstract_line.as_bytes());
        prop_assert!(proposal.text_repairs.is_empty());
    }
}
