use super::*;

const RULE: &str =
    "------------------------------------------------------------------------------------";

fn fixture(abstract_block: &str) -> String {
    format!(
        "                                                  13012( 13) - 08-Oct-2012 18:16:54 - [  1]\n\
         \n\
         \x20                 HUBBLE SPACE TELESCOPE OBSERVING PROGRAM 13012\n\
         \n\
         Version:  13  Check-in Time: 08-Oct-2012 18:16:54       STScI Edit Number: 0     \n\
         \n\
         Title\n\
         Near-equinox spectro-imaging of Uranus aurorae \n\
         {RULE}\n\
         Type             Cycle\n\
         GO               20       \n\
         {RULE}\n\
         Investigators                                                                   \n\
         \x20                                                                                    Contact?\n\
         \x20   PI: Dr. Laurent Lamy                  Observatoire de Paris - Section de Meudon     Y \n\
         \x20  CoI: Prof. John T. Clarke              Boston University                             N \n\
         \n\
         {RULE}\n\
         {abstract_block}\
         {RULE}\n\
         \n\
         \x20 Observations Description\n\
         \x20 ------------------------\n"
    )
}

fn standard_abstract() -> String {
    "Abstract\n\nA quarter of century after    \n\
     \x0c                                                  13012( 13) - 08-Oct-2012 18:16:54 - [  2]\n\
     \n\
     their discovery (in 1986).\n"
        .to_owned()
}

#[test]
fn fixture_fields_read() {
    let proposal = parse_phase2_pro(fixture(&standard_abstract()).as_bytes()).unwrap();

    assert_eq!(proposal.id, 13012);
    assert_eq!(proposal.source_line, 3);
    assert_eq!(proposal.cycle, 20);
    assert_eq!(proposal.proposal_type, "GO");
    assert_eq!(proposal.category, "");
    assert_eq!(
        proposal.title,
        "Near-equinox spectro-imaging of Uranus aurorae"
    );
    assert_eq!(proposal.pi, "Laurent Lamy");
    assert_eq!(
        proposal.abstract_raw,
        "A quarter of century after their discovery (in 1986)."
    );
}

#[test]
fn honorific_removal_recorded() {
    let proposal = parse_phase2_pro(fixture(&standard_abstract()).as_bytes()).unwrap();

    assert_eq!(proposal.text_repairs.len(), 1);
    let repair = &proposal.text_repairs[0];
    assert_eq!(repair.field, "pi");
    assert_eq!(repair.kind, RepairKind::HonorificRemoved);
    assert!(
        repair.detail.contains("'Dr. Laurent Lamy'"),
        "{}",
        repair.detail
    );
    assert!(repair.detail.contains("line 15"), "{}", repair.detail);
}

#[test]
fn name_without_honorific_kept() {
    let input = fixture(&standard_abstract()).replace("Dr. Laurent Lamy", "Laurent Lamy    ");

    let proposal = parse_phase2_pro(input.as_bytes()).unwrap();

    assert_eq!(proposal.pi, "Laurent Lamy");
    assert!(proposal.text_repairs.is_empty());
}

#[test]
fn honorific_needs_following_space() {
    assert_eq!(split_honorific("Dr. Jane Roe"), Some(("Dr.", "Jane Roe")));
    assert_eq!(
        split_honorific("Prof. John T. Clarke"),
        Some(("Prof.", "John T. Clarke"))
    );
    assert_eq!(split_honorific("Drake Smith"), None);
    assert_eq!(split_honorific("Dr."), None);
    assert_eq!(split_honorific("Missy Elliot"), None);
}

#[test]
fn missing_abstract_is_error() {
    let error = parse_phase2_pro(fixture("").as_bytes()).unwrap_err();

    assert_eq!(
        error.to_string(),
        "no 'Abstract' section found in Phase II file; expected a line 'Abstract' followed by text"
    );
}

#[test]
fn empty_abstract_is_error() {
    let error = parse_phase2_pro(fixture("Abstract\n\n   \n").as_bytes()).unwrap_err();

    assert!(
        matches!(
            error,
            CatalogError::Phase2EmptySection {
                section: "Abstract",
                line: 19,
                ..
            }
        ),
        "{error:?}"
    );
}

#[test]
fn missing_program_header_is_error() {
    let input = fixture(&standard_abstract()).replace("OBSERVING PROGRAM", "PROGRAM");

    let error = parse_phase2_pro(input.as_bytes()).unwrap_err();

    assert!(
        error
            .to_string()
            .contains("'HUBBLE SPACE TELESCOPE OBSERVING PROGRAM <id>'"),
        "{error}"
    );
}

#[test]
fn invalid_program_id_is_error() {
    let input = fixture(&standard_abstract()).replace("PROGRAM 13012", "PROGRAM 13O12");

    let error = parse_phase2_pro(input.as_bytes()).unwrap_err();

    assert!(
        matches!(
            &error,
            CatalogError::Phase2InvalidValue { field: "program ID", value, line: 3, .. } if value == "13O12"
        ),
        "{error:?}"
    );
}

#[test]
fn missing_type_cycle_is_error() {
    let input = fixture(&standard_abstract()).replace("Type             Cycle", "Kind");

    let error = parse_phase2_pro(input.as_bytes()).unwrap_err();

    assert!(error.to_string().contains("'Type  Cycle'"), "{error}");
}

#[test]
fn invalid_cycle_is_error() {
    let input = fixture(&standard_abstract()).replace("GO               20", "GO               X1");

    let error = parse_phase2_pro(input.as_bytes()).unwrap_err();

    assert!(
        matches!(
            &error,
            CatalogError::Phase2InvalidValue { field: "cycle", value, line: 11, .. } if value == "X1"
        ),
        "{error:?}"
    );
}

#[test]
fn missing_pi_is_error() {
    let input = fixture(&standard_abstract()).replace("PI: Dr.", "Co: Dr.");

    let error = parse_phase2_pro(input.as_bytes()).unwrap_err();

    assert!(error.to_string().contains("'PI:'"), "{error}");
}

#[test]
fn latin1_pi_line_flagged() {
    let mut input = fixture(&standard_abstract())
        .replace("Laurent Lamy", "Laurent Mxller")
        .into_bytes();
    let position = input
        .windows(6)
        .position(|window| window == b"Mxller")
        .unwrap();
    input[position + 1] = 0xFC;

    let proposal = parse_phase2_pro(&input).unwrap();

    assert_eq!(proposal.pi, "Laurent Müller");
    let kinds: Vec<RepairKind> = proposal
        .text_repairs
        .iter()
        .map(|repair| repair.kind)
        .collect();
    assert_eq!(
        kinds,
        [RepairKind::Latin1Fallback, RepairKind::HonorificRemoved]
    );
    assert_eq!(proposal.text_repairs[0].field, "pi");
}

#[test]
fn crlf_input_parsed() {
    let input = fixture(&standard_abstract()).replace('\n', "\r\n");

    let proposal = parse_phase2_pro(input.as_bytes()).unwrap();

    assert_eq!(proposal.cycle, 20);
    assert_eq!(
        proposal.abstract_raw,
        "A quarter of century after their discovery (in 1986)."
    );
}

#[test]
fn page_break_lines_recognized() {
    assert!(is_page_break_line(
        "13012( 13) - 08-Oct-2012 18:16:54 - [  2]"
    ));
    assert!(is_page_break_line("9059(2) - 01-Jan-2004 00:00:00 - [12]"));
    assert!(!is_page_break_line("13012( 13) - 08-Oct-2012 18:16:54"));
    assert!(!is_page_break_line("a - b - c"));
    assert!(!is_page_break_line(
        "13012( 13) - 8-Oct-2012 18:16:54 - [  2]"
    ));
}

#[test]
fn column_value_uses_header_columns() {
    let header = "Type             Cycle    Other";
    assert_eq!(
        column_value(header, "GO/DD            21       x", "Type"),
        "GO/DD"
    );
    assert_eq!(
        column_value(header, "GO/DD            21       x", "Cycle"),
        "21"
    );
    assert_eq!(column_value(header, "                 21", "Type"), "");
    assert_eq!(column_value(header, "GO", "Cycle"), "");
}
