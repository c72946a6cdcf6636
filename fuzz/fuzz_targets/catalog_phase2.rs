//! Phase II proposal files (`.pro`): any bytes give a proposal or an error, and a
//! proposal yields a caption.
#![no_main]

use libfuzzer_sys::fuzz_target;
use paperclip_catalog::{CaptionForm, caption, parse_phase2_pro};

fuzz_target!(|bytes: &[u8]| {
    if let Ok(proposal) = parse_phase2_pro(bytes) {
        caption(&proposal, CaptionForm::Paper);
        caption(&proposal, CaptionForm::Clean);
    }
});
