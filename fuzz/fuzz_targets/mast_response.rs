//! MAST API responses: any bytes give an envelope or an error. Every row of an envelope
//! reads as an observation and as a product, or is rejected with a reason. The text forms
//! of MAST's ids and data URIs are parsed from the same bytes.
#![no_main]

use libfuzzer_sys::fuzz_target;
use paperclip_archive::{DataUri, Envelope, MissionObsId, ObsId, Observation, Product};

fuzz_target!(|bytes: &[u8]| {
    if let Ok(text) = std::str::from_utf8(bytes) {
        let _ = text.parse::<ObsId>();
        let _ = text.parse::<MissionObsId>();
        if let Ok(uri) = DataUri::parse(text) {
            let relative = std::path::Path::new(uri.relative_path());
            assert!(!relative.is_absolute(), "{text:?} maps to an absolute path");
            assert!(
                relative
                    .components()
                    .all(|part| matches!(part, std::path::Component::Normal(_))),
                "{text:?} maps to {relative:?}, which leaves its folder"
            );
        }
    }

    let Ok(envelope) = Envelope::from_slice(bytes) else {
        return;
    };
    let _ = envelope.check_columns(&["obsid", "dataURI"]);
    for (index, row) in envelope.data.iter().enumerate() {
        let _ = Observation::from_row(row, index);
        let _ = Product::from_row(row, index);
    }
});
