//! Tests against the real sample files in the shared data folder next to the repository.
//!
//! When the folder is absent each test prints `skipping: shared data not found at <path>` and
//! passes, unless `PAPERCLIP_REQUIRE_SHARED_DATA=1` is set, in which case it fails.

use paperclip_catalog::{
    CaptionForm, Catalog, Proposal, caption, clean_caption, paper_caption, parse_abstracts_cat,
    parse_phase2_pro,
};
use std::path::{Path, PathBuf};

/// IDs, cycles and titles of the six records of `abstracts-sample.cat`, in file order.
const SAMPLE_RECORDS: [(u32, u32, &str); 6] = [
    (
        13012,
        20,
        "Near-equinox spectro-imaging of Uranus aurorae sampling two planetary rotations",
    ),
    (
        15677,
        26,
        "Spectroscopy and Imaging of the Southern Crab Nebula",
    ),
    (
        15513,
        26,
        "Detecting Isolated Black Holes through Astrometric Microlensing",
    ),
    (12577, 19, "Spectral Time Series of the Cas A Supernova"),
    (
        7340,
        7,
        "The Distribution of Heavy Elements in Supernova Ejecta",
    ),
    (
        13757,
        22,
        "The Progenitor System of a Peculiar Thermonuclear White-Dwarf Supernova",
    ),
];

/// Number of caption words (the `Category:` prefix included) in each
/// `paperclip-plots-data/abs1_*.txt` excerpt.
const EXCERPT_WORDS: usize = 55;

/// Returns the shared data folder, or `None` (after printing why) when it is absent and not
/// required.
fn shared_data() -> Option<PathBuf> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../../shared/data");
    if path.is_dir() {
        return Some(path);
    }

    let message = format!("skipping: shared data not found at {}", path.display());
    if std::env::var("PAPERCLIP_REQUIRE_SHARED_DATA").as_deref() == Ok("1") {
        panic!("{message}");
    }
    println!("{message}");
    None
}

fn read_bytes(path: &Path) -> Vec<u8> {
    std::fs::read(path).unwrap_or_else(|error| panic!("cannot read {}: {error}", path.display()))
}

fn read_text(path: &Path) -> String {
    String::from_utf8(read_bytes(path))
        .unwrap_or_else(|error| panic!("{} is not UTF-8: {error}", path.display()))
}

fn sample_catalog(data: &Path) -> Catalog {
    parse_abstracts_cat(&read_bytes(&data.join("abstracts/abstracts-sample.cat")))
}

fn proposal(catalog: &Catalog, id: u32) -> &Proposal {
    catalog
        .get(id)
        .unwrap_or_else(|| panic!("proposal {id} missing from the sample catalog"))
}

#[test]
fn sample_catalog_ids_cycles_titles() {
    let Some(data) = shared_data() else { return };

    let catalog = sample_catalog(&data);

    assert!(catalog.skipped.is_empty(), "{:?}", catalog.skipped);
    assert_eq!(catalog.proposals.len(), SAMPLE_RECORDS.len());
    for (proposal, (id, cycle, title)) in catalog.proposals.iter().zip(SAMPLE_RECORDS) {
        assert_eq!(proposal.id, id);
        assert_eq!(proposal.cycle, cycle, "cycle of {id}");
        assert_eq!(proposal.title, title, "title of {id}");
        assert!(proposal.text_repairs.is_empty(), "repairs on {id}");
        assert!(proposal.abstract_raw.starts_with(' '), "abstract of {id}");
    }
}

#[test]
fn sample_catalog_matches_provenance() {
    let Some(data) = shared_data() else { return };
    let catalog = sample_catalog(&data);
    let provenance = read_text(&data.join("abstracts/abstracts-sample.provenance.tsv"));

    let mut rows_checked = 0;
    for row in provenance.lines().skip(1) {
        let columns: Vec<&str> = row.split('\t').collect();
        assert_eq!(columns.len(), 4, "provenance row {row:?}");
        let id: u32 = columns[0].parse().expect("numeric ID in provenance");
        let (field, value) = (columns[1], columns[2]);
        let proposal = proposal(&catalog, id);

        match field {
            "Prop. Type" => assert_eq!(proposal.proposal_type, value, "{id} {field}"),
            "Category" => assert_eq!(proposal.category, value, "{id} {field}"),
            "ID" => assert_eq!(proposal.id.to_string(), value, "{id} {field}"),
            "Cycle" => assert_eq!(proposal.cycle.to_string(), value, "{id} {field}"),
            "Title" => assert_eq!(proposal.title, value, "{id} {field}"),
            "PI" => assert_eq!(proposal.pi, value, "{id} {field}"),
            "Abstract" => {
                let count = proposal
                    .abstract_raw
                    .trim_start_matches(' ')
                    .chars()
                    .count();
                assert_eq!(format!("({count} characters)"), value, "{id} {field}");
            }
            other => panic!("unexpected provenance field {other:?}"),
        }
        rows_checked += 1;
    }
    assert_eq!(rows_checked, 6 * 7);
}

#[test]
fn sample_abstracts_match_plot_sources() {
    let Some(data) = shared_data() else { return };
    let catalog = sample_catalog(&data);
    let plots = data.join("abstracts/paperclip-plots-data");

    for index in 0..4 {
        let id_link = read_text(&plots.join(format!("id_{index}.txt")));
        let id_text = id_link
            .rsplit_once('{')
            .and_then(|(_, rest)| rest.split_once('}'))
            .map(|(id, _)| id)
            .unwrap_or_else(|| panic!("no {{ID}} in id_{index}.txt: {id_link:?}"));
        let id: u32 = id_text.parse().expect("numeric ID in id_*.txt");
        let proposal = proposal(&catalog, id);

        let source = read_text(&plots.join(format!("abs_{index}.txt")));
        assert!(source.starts_with(' '), "abs_{index}.txt");
        assert_eq!(proposal.abstract_raw, source, "abstract of {id}");

        let cycle = read_text(&plots.join(format!("cycle_{index}.txt")));
        assert_eq!(proposal.cycle.to_string(), cycle.trim(), "cycle of {id}");
    }
}

#[test]
fn sample_excerpts_match_caption_words() {
    let Some(data) = shared_data() else { return };
    let catalog = sample_catalog(&data);
    let plots = data.join("abstracts/paperclip-plots-data");

    for index in 0..4 {
        let id_link = read_text(&plots.join(format!("id1_{index}.txt")));
        let id = SAMPLE_RECORDS
            .iter()
            .map(|&(id, _, _)| id)
            .find(|id| id_link.contains(&format!("{{{id}}}")))
            .unwrap_or_else(|| panic!("id1_{index}.txt names no sample ID: {id_link:?}"));
        let proposal = proposal(&catalog, id);

        let caption = paper_caption(proposal);
        let words: Vec<&str> = caption.split_whitespace().take(EXCERPT_WORDS).collect();
        let expected = format!("{}...", words.join(" "));
        let excerpt = read_text(&plots.join(format!("abs1_{index}.txt")));
        assert_eq!(excerpt, expected, "excerpt of {id}");
    }
}

#[test]
fn sample_15677_matches_ads_record() {
    let Some(data) = shared_data() else { return };
    let catalog = sample_catalog(&data);
    let json: serde_json::Value =
        serde_json::from_slice(&read_bytes(&data.join("abstracts/hstprop-15677.json")))
            .expect("valid JSON in hstprop-15677.json");
    let program = &json["programs"][0];

    let proposal = proposal(&catalog, 15677);

    assert_eq!(program["comment"], "HST Proposal#15677");
    assert_eq!(program["title"], proposal.title.as_str());
    let expected_abstract = format!(" {}", program["abstract"].as_str().unwrap());
    assert_eq!(proposal.abstract_raw, expected_abstract);
}

#[test]
fn phase2_13012_matches_catalog() {
    let Some(data) = shared_data() else { return };
    let catalog = sample_catalog(&data);
    let from_catalog = proposal(&catalog, 13012);

    let from_pro =
        parse_phase2_pro(&read_bytes(&data.join("abstracts/13012.pro"))).expect("13012.pro parses");

    assert_eq!(from_pro.id, 13012);
    assert_eq!(from_pro.cycle, 20);
    assert_eq!(from_pro.proposal_type, "GO");
    assert_eq!(from_pro.proposal_type, from_catalog.proposal_type);
    assert_eq!(from_pro.category, "");
    assert_eq!(from_pro.title, from_catalog.title);
    assert_eq!(from_pro.pi, "Laurent Lamy");
    assert_eq!(from_pro.pi, from_catalog.pi);
    assert_eq!(from_pro.source_line, 3);
    assert_eq!(
        from_pro.abstract_normalized(),
        from_catalog.abstract_normalized()
    );
    assert_eq!(
        from_pro.abstract_raw,
        from_catalog.abstract_raw.trim_start_matches(' ')
    );
    assert!(!from_pro.abstract_raw.contains("13012( 13)"));
    assert!(!from_pro.abstract_raw.contains("Observations Description"));
}

#[test]
fn phase2_13012_records_honorific() {
    let Some(data) = shared_data() else { return };

    let from_pro =
        parse_phase2_pro(&read_bytes(&data.join("abstracts/13012.pro"))).expect("13012.pro parses");

    assert_eq!(
        from_pro.text_repairs.len(),
        1,
        "{:?}",
        from_pro.text_repairs
    );
    assert_eq!(from_pro.text_repairs[0].kind.code(), "honorific_removed");
    assert!(
        from_pro.text_repairs[0]
            .detail
            .contains("'Dr. Laurent Lamy'")
    );
}

#[test]
fn sample_captions_in_both_forms() {
    let Some(data) = shared_data() else { return };
    let catalog = sample_catalog(&data);

    let uranus = proposal(&catalog, 13012);
    assert!(paper_caption(uranus).starts_with("Category: SOLAR SYSTEM.  A quarter of century"));
    assert!(clean_caption(uranus).starts_with("Category: SOLAR SYSTEM. A quarter of century"));

    let crab = proposal(&catalog, 15677);
    assert!(caption(crab, CaptionForm::Paper).starts_with("Category: .  We will obtain"));
    assert!(caption(crab, CaptionForm::Clean).starts_with("We will obtain WFC3"));

    let ejecta = proposal(&catalog, 7340);
    assert!(paper_caption(ejecta).contains("{after the Crab}"));
    assert!(clean_caption(ejecta).contains("(after the Crab)"));
    assert!(!clean_caption(ejecta).contains("  "));
}

/// None of the 112 PAPERCLIP captions is the caption of a sample record, because no caption
/// there has a known proposal ID. This test checks the caption form instead. Each line splits
/// into a category and an abstract that `paper_caption` turns back into the same line.
#[test]
fn paperclip_captions_have_paper_form() {
    let Some(data) = shared_data() else { return };
    let captions = read_text(&data.join("abstracts/captions-paperclip.txt"));

    let mut count = 0;
    for line in captions.lines() {
        let rest = line
            .strip_prefix("Category: ")
            .unwrap_or_else(|| panic!("caption without 'Category: ': {line:.60}"));
        let (category, abstract_text) = rest
            .split_once(". ")
            .unwrap_or_else(|| panic!("caption without '. ' after the category: {line:.60}"));
        assert!(abstract_text.starts_with(' '), "single space: {line:.60}");

        let proposal = Proposal {
            id: 1,
            cycle: 1,
            proposal_type: String::new(),
            category: category.to_owned(),
            title: String::new(),
            pi: String::new(),
            abstract_raw: abstract_text.to_owned(),
            text_repairs: Vec::new(),
            source_line: 1,
        };
        assert_eq!(paper_caption(&proposal), line);
        count += 1;
    }
    assert_eq!(count, 112);
}

#[test]
fn sample_with_bom_and_crlf_parses_same() {
    let Some(data) = shared_data() else { return };
    let original = read_text(&data.join("abstracts/abstracts-sample.cat"));
    let windows_form = format!("\u{feff}{}", original.replace('\n', "\r\n"));

    let expected = sample_catalog(&data);
    let catalog = parse_abstracts_cat(windows_form.as_bytes());

    assert_eq!(catalog, expected);
}
