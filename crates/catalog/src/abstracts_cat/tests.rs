use super::*;
use crate::proposal::RepairKind;

const SEPARATOR: &str =
    "--------------------------------------------------------------------------------";

fn record(id: &str, cycle: &str, pi: &str, abstract_lines: &[&str]) -> String {
    let mut text = format!(
        "{SEPARATOR}\nProp. Type: GO\nCategory: SOLAR SYSTEM\nID: {id}\nCycle: {cycle}\n\
         Title: A title\nPI: {pi}\n\n"
    );
    for line in abstract_lines {
        text.push_str(line);
        text.push('\n');
    }
    text
}

fn catalog_of(records: &[String]) -> String {
    let mut text = records.concat();
    text.push_str(SEPARATOR);
    text.push('\n');
    text
}

fn only_skip(catalog: &Catalog) -> &CatalogSkip {
    assert!(catalog.proposals.is_empty(), "{:?}", catalog.proposals);
    assert_eq!(catalog.skipped.len(), 1, "{:?}", catalog.skipped);
    &catalog.skipped[0]
}

#[test]
fn well_formed_record_parsed() {
    let input = catalog_of(&[record(
        "13012",
        "20",
        "Laurent Lamy",
        &["First line", "second line."],
    )]);

    let catalog = parse_abstracts_cat(input.as_bytes());

    assert!(catalog.skipped.is_empty(), "{:?}", catalog.skipped);
    let proposal = &catalog.proposals[0];
    assert_eq!(proposal.id, 13012);
    assert_eq!(proposal.cycle, 20);
    assert_eq!(proposal.proposal_type, "GO");
    assert_eq!(proposal.category, "SOLAR SYSTEM");
    assert_eq!(proposal.title, "A title");
    assert_eq!(proposal.pi, "Laurent Lamy");
    assert_eq!(proposal.abstract_raw, " First line second line.");
    assert_eq!(proposal.abstract_normalized(), "First line second line.");
    assert_eq!(proposal.source_line, 2);
    assert!(proposal.text_repairs.is_empty());
}

#[test]
fn missing_id_recorded() {
    let input = format!("{SEPARATOR}\nCycle: 20\nTitle: T\nPI: P\n\nText.\n{SEPARATOR}\n");

    let catalog = parse_abstracts_cat(input.as_bytes());

    let skip = only_skip(&catalog);
    assert_eq!(skip.reason, SkipReason::MissingId);
    assert_eq!(skip.reason.code(), "missing_id");
    assert_eq!(skip.id, None);
    assert_eq!(skip.line, 2);
}

#[test]
fn empty_and_invalid_ids_recorded() {
    let cases = [
        ("", SkipReason::EmptyId),
        (
            "abc",
            SkipReason::InvalidId {
                value: "abc".into(),
            },
        ),
        ("-5", SkipReason::InvalidId { value: "-5".into() }),
        ("0", SkipReason::InvalidId { value: "0".into() }),
        (
            "99999999999",
            SkipReason::InvalidId {
                value: "99999999999".into(),
            },
        ),
    ];

    for (id, expected) in cases {
        let input = catalog_of(&[record(id, "20", "P", &["Text."])]);
        let catalog = parse_abstracts_cat(input.as_bytes());
        assert_eq!(only_skip(&catalog).reason, expected, "ID {id:?}");
    }
}

#[test]
fn missing_cycle_recorded() {
    let input = format!("{SEPARATOR}\nID: 5\nTitle: T\nPI: P\n\nText.\n{SEPARATOR}\n");

    let catalog = parse_abstracts_cat(input.as_bytes());

    let skip = only_skip(&catalog);
    assert_eq!(skip.reason, SkipReason::MissingCycle);
    assert_eq!(skip.id.as_deref(), Some("5"));
}

#[test]
fn empty_cycle_recorded() {
    let input = catalog_of(&[record("5", "", "P", &["Text."])]);

    let catalog = parse_abstracts_cat(input.as_bytes());

    assert_eq!(only_skip(&catalog).reason, SkipReason::EmptyCycle);
}

#[test]
fn bad_cycles_recorded() {
    let cases = [
        (
            "twenty",
            SkipReason::InvalidCycle {
                value: "twenty".into(),
            },
        ),
        (
            "20.5",
            SkipReason::InvalidCycle {
                value: "20.5".into(),
            },
        ),
        ("-3", SkipReason::ImplausibleCycle { cycle: -3 }),
        ("2012", SkipReason::ImplausibleCycle { cycle: 2012 }),
    ];

    for (cycle, expected) in cases {
        let input = catalog_of(&[record("5", cycle, "P", &["Text."])]);
        let catalog = parse_abstracts_cat(input.as_bytes());
        assert_eq!(only_skip(&catalog).reason, expected, "cycle {cycle:?}");
    }
}

#[test]
fn cycle_zero_and_max_kept() {
    let input = catalog_of(&[
        record("1", "0", "P", &["Text."]),
        record("2", &MAX_PLAUSIBLE_CYCLE.to_string(), "P", &["Text."]),
    ]);

    let catalog = parse_abstracts_cat(input.as_bytes());

    assert_eq!(catalog.proposals.len(), 2, "{:?}", catalog.skipped);
}

#[test]
fn duplicate_id_keeps_first() {
    let input = catalog_of(&[
        record("7", "20", "First", &["One."]),
        record("8", "20", "Other", &["Two."]),
        record("7", "21", "Second", &["Three."]),
    ]);

    let catalog = parse_abstracts_cat(input.as_bytes());

    let ids: Vec<u32> = catalog.proposals.iter().map(|p| p.id).collect();
    assert_eq!(ids, [7, 8]);
    assert_eq!(catalog.proposals[0].pi, "First");
    assert_eq!(catalog.skipped.len(), 1);
    assert_eq!(
        catalog.skipped[0].reason,
        SkipReason::DuplicateId {
            id: 7,
            first_line: 2
        }
    );
    assert_eq!(catalog.skipped[0].line, 20);
}

#[test]
fn duplicate_of_skipped_record_kept() {
    let input = catalog_of(&[
        record("7", "bad", "First", &["One."]),
        record("7", "20", "Second", &["Two."]),
    ]);

    let catalog = parse_abstracts_cat(input.as_bytes());

    assert_eq!(catalog.proposals.len(), 1);
    assert_eq!(catalog.proposals[0].pi, "Second");
    assert_eq!(catalog.skipped[0].reason.code(), "invalid_cycle");
}

#[test]
fn missing_abstract_recorded() {
    let input = format!("{SEPARATOR}\nID: 5\nCycle: 20\nTitle: T\nPI: P\n{SEPARATOR}\n");

    let catalog = parse_abstracts_cat(input.as_bytes());

    assert_eq!(only_skip(&catalog).reason, SkipReason::MissingAbstract);
}

#[test]
fn blank_abstract_recorded_empty() {
    let input = format!("{SEPARATOR}\nID: 5\nCycle: 20\nTitle: T\nPI: P\n\n \n\t\n{SEPARATOR}\n");

    let catalog = parse_abstracts_cat(input.as_bytes());

    assert_eq!(only_skip(&catalog).reason, SkipReason::EmptyAbstract);
}

#[test]
fn record_without_pi_has_no_abstract() {
    let input = format!("{SEPARATOR}\nID: 5\nCycle: 20\nTitle: T\n\nText.\n{SEPARATOR}\n");

    let catalog = parse_abstracts_cat(input.as_bytes());

    assert_eq!(only_skip(&catalog).reason, SkipReason::MissingAbstract);
}

#[test]
fn latin1_pi_decoded_and_flagged() {
    let mut input = record("5", "20", "M\u{fc}ller", &["Text."]).into_bytes();
    let position = input
        .windows(2)
        .position(|pair| pair == "ü".as_bytes())
        .unwrap();
    input.splice(position..position + 2, [0xFC]);

    let catalog = parse_abstracts_cat(&input);

    let proposal = &catalog.proposals[0];
    assert_eq!(proposal.pi, "Müller");
    assert_eq!(proposal.text_repairs.len(), 1);
    let repair = &proposal.text_repairs[0];
    assert_eq!(repair.field, "pi");
    assert_eq!(repair.kind, RepairKind::Latin1Fallback);
    assert!(repair.detail.contains("line 7"), "{}", repair.detail);
    assert!(repair.detail.contains("byte 5"), "{}", repair.detail);
}

#[test]
fn whole_file_latin1_decoded() {
    let text = catalog_of(&[
        record(
            "5",
            "20",
            "José Núñez",
            &["Étude des éjecta à grande échelle."],
        ),
        record("6", "20", "Ana", &["Plain ASCII."]),
    ]);
    let latin1: Vec<u8> = text
        .chars()
        .map(|c| u8::try_from(u32::from(c)).unwrap())
        .collect();

    let catalog = parse_abstracts_cat(&latin1);

    assert!(catalog.skipped.is_empty(), "{:?}", catalog.skipped);
    assert_eq!(catalog.proposals[0].pi, "José Núñez");
    assert_eq!(
        catalog.proposals[0].abstract_raw,
        " Étude des éjecta à grande échelle."
    );
    let fields: Vec<&str> = catalog.proposals[0]
        .text_repairs
        .iter()
        .map(|repair| repair.field.as_str())
        .collect();
    assert_eq!(fields, ["pi", "abstract"]);
    assert!(catalog.proposals[1].text_repairs.is_empty());
}

#[test]
fn utf8_text_round_trips_exactly() {
    let title = "Dust \u{2013} gas coupling in \u{c3}ngstr\u{f6}m-scale {grains}";
    let input = format!(
        "{SEPARATOR}\nID: 5\nCycle: 20\nTitle: {title}\nPI: \u{c3}lvaro Pe\u{f1}a\n\nText \u{3b1}.\n{SEPARATOR}\n"
    );

    let catalog = parse_abstracts_cat(input.as_bytes());

    let proposal = &catalog.proposals[0];
    assert_eq!(proposal.title.as_bytes(), title.as_bytes());
    assert_eq!(proposal.pi, "\u{c3}lvaro Pe\u{f1}a");
    assert_eq!(proposal.abstract_raw, " Text \u{3b1}.");
    assert!(proposal.text_repairs.is_empty());
}

#[test]
fn crlf_line_endings_parsed() {
    let input =
        catalog_of(&[record("5", "20", "P", &["Line one", "line two."])]).replace('\n', "\r\n");

    let catalog = parse_abstracts_cat(input.as_bytes());

    let proposal = &catalog.proposals[0];
    assert_eq!(proposal.pi, "P");
    assert_eq!(proposal.abstract_raw, " Line one line two.");
}

#[test]
fn byte_order_mark_ignored() {
    let input = format!(
        "\u{feff}{}",
        catalog_of(&[record("5", "20", "P", &["Text."])])
    );

    let catalog = parse_abstracts_cat(input.as_bytes());

    assert!(catalog.skipped.is_empty(), "{:?}", catalog.skipped);
    assert_eq!(catalog.proposals[0].id, 5);
    assert_eq!(catalog.proposals[0].source_line, 2);
}

#[test]
fn multiline_title_joined_with_spaces() {
    let input = format!(
        "{SEPARATOR}\nID: 5\nCycle: 20\nTitle: A long title\n   that wraps\nonto three lines\nPI: P\n\nText.\n{SEPARATOR}\n"
    );

    let catalog = parse_abstracts_cat(input.as_bytes());

    assert_eq!(
        catalog.proposals[0].title,
        "A long title that wraps onto three lines"
    );
}

#[test]
fn key_line_inside_abstract_is_text() {
    let input = catalog_of(&[record(
        "5",
        "20",
        "P",
        &["We observe", "ID: not a key here", "PI: nor this."],
    )]);

    let catalog = parse_abstracts_cat(input.as_bytes());

    let proposal = &catalog.proposals[0];
    assert_eq!(proposal.id, 5);
    assert_eq!(proposal.pi, "P");
    assert_eq!(
        proposal.abstract_raw,
        " We observe ID: not a key here PI: nor this."
    );
}

#[test]
fn abstract_without_blank_line_has_no_leading_space() {
    let input = format!("{SEPARATOR}\nID: 5\nCycle: 20\nPI: P\nText starts here.\n{SEPARATOR}\n");

    let catalog = parse_abstracts_cat(input.as_bytes());

    assert_eq!(catalog.proposals[0].abstract_raw, "Text starts here.");
}

#[test]
fn paragraph_break_kept_as_double_space() {
    let input = catalog_of(&[record("5", "20", "P", &["First.", "", "Second."])]);

    let catalog = parse_abstracts_cat(input.as_bytes());

    assert_eq!(catalog.proposals[0].abstract_raw, " First.  Second.");
}

#[test]
fn text_before_first_separator_recorded() {
    let input = format!(
        "HST proposal abstracts\ngenerated 2024-01-01\n\n{}",
        catalog_of(&[record("5", "20", "P", &["Text."])])
    );

    let catalog = parse_abstracts_cat(input.as_bytes());

    assert_eq!(catalog.proposals.len(), 1);
    assert_eq!(catalog.skipped.len(), 1);
    assert_eq!(catalog.skipped[0].line, 1);
    assert_eq!(
        catalog.skipped[0].reason,
        SkipReason::TextOutsideRecord { line_count: 2 }
    );
}

#[test]
fn record_before_first_separator_kept() {
    let input = format!(
        "ID: 4\nCycle: 20\nPI: P\n\nText.\n{}",
        catalog_of(&[record("5", "20", "P", &["Text."])])
    );

    let catalog = parse_abstracts_cat(input.as_bytes());

    let ids: Vec<u32> = catalog.proposals.iter().map(|p| p.id).collect();
    assert_eq!(ids, [4, 5]);
    assert_eq!(catalog.proposals[0].source_line, 1);
}

#[test]
fn last_record_kept_without_separator() {
    let input = record("5", "20", "P", &["Text without", "closing separator."]);

    let catalog = parse_abstracts_cat(input.trim_end().as_bytes());

    assert_eq!(catalog.proposals.len(), 1);
    assert_eq!(
        catalog.proposals[0].abstract_raw,
        " Text without closing separator."
    );
}

#[test]
fn value_split_at_first_colon() {
    let input = format!(
        "{SEPARATOR}\nID: 5\nCycle: 20\nTitle:  M31: the disk: revisited  \nPI: P\n\nText.\n{SEPARATOR}\n"
    );

    let catalog = parse_abstracts_cat(input.as_bytes());

    assert_eq!(catalog.proposals[0].title, "M31: the disk: revisited");
}

#[test]
fn repeated_header_key_overwrites() {
    let input = format!("{SEPARATOR}\nID: 5\nCycle: 20\nCycle: 21\nPI: P\n\nText.\n{SEPARATOR}\n");

    let catalog = parse_abstracts_cat(input.as_bytes());

    assert_eq!(catalog.proposals[0].cycle, 21);
}

#[test]
fn empty_input_gives_empty_catalog() {
    assert_eq!(parse_abstracts_cat(b""), Catalog::default());
    assert_eq!(
        parse_abstracts_cat(format!("{SEPARATOR}\n\n{SEPARATOR}\n").as_bytes()),
        Catalog::default()
    );
}

#[test]
fn skip_messages_name_value_and_fix() {
    let message = SkipReason::InvalidId {
        value: "12a".into(),
    }
    .to_string();
    assert!(message.contains("'12a'"), "{message}");
    assert!(message.contains("expected a positive integer"), "{message}");
}

#[test]
fn control_characters_are_replaced_and_flagged() {
    let text = b"-----\nProp. Type: GO\nCategory: AGN\nID: 42\nCycle: 20\nTitle: A \x07bell and \x1b[31mescape\nPI: Nul\x00Byte\n\nAn abstract\twith a tab.\n-----\n";
    let catalog = parse_abstracts_cat(text);
    let proposal = &catalog.proposals[0];
    assert_eq!(proposal.title, "A  bell and  [31mescape");
    assert_eq!(proposal.pi, "Nul Byte");
    assert!(proposal.abstract_raw.contains("An abstract\twith a tab."));
    let kinds: Vec<_> = proposal
        .text_repairs
        .iter()
        .map(|r| (r.field.as_str(), r.kind))
        .collect();
    assert_eq!(
        kinds,
        [
            ("title", RepairKind::ControlCharactersReplaced),
            ("pi", RepairKind::ControlCharactersReplaced),
        ]
    );
}
