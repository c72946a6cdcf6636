//! The proposal catalog (`abstracts.cat`): any bytes parse into proposals and skipped
//! records whose line numbers lie inside the input, and every proposal yields a caption.
#![no_main]

use libfuzzer_sys::fuzz_target;
use paperclip_catalog::{CaptionForm, caption, parse_abstracts_cat};

fuzz_target!(|bytes: &[u8]| {
    let catalog = parse_abstracts_cat(bytes);

    let lines = line_count(bytes);
    for proposal in &catalog.proposals {
        assert!(
            (1..=lines).contains(&proposal.source_line),
            "proposal {} starts at line {} of a {lines}-line input",
            proposal.id,
            proposal.source_line
        );
        caption(proposal, CaptionForm::Paper);
        caption(proposal, CaptionForm::Clean);
    }
    for skip in &catalog.skipped {
        assert!(
            (1..=lines).contains(&skip.line),
            "skip at line {}",
            skip.line
        );
    }
});

/// Lines as the catalog reader counts them: LF, CR LF and a lone CR each end a line.
fn line_count(bytes: &[u8]) -> usize {
    let breaks = bytes
        .iter()
        .enumerate()
        .filter(|&(index, &byte)| {
            byte == b'\n' || (byte == b'\r' && bytes.get(index + 1) != Some(&b'\n'))
        })
        .count();
    breaks + 1
}
