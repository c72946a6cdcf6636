//! The pipeline file: any bytes give a config or a message. A config that passes its
//! checks reads back the same when written out as TOML, so every value it holds is one
//! the checks accept.
#![no_main]

use std::path::PathBuf;

use libfuzzer_sys::fuzz_target;
use paperclip_pipeline_file::PipelineConfig;

fuzz_target!(|bytes: &[u8]| {
    let Ok(config) = PipelineConfig::parse(bytes, PathBuf::from("/pipelines")) else {
        return;
    };

    let written = toml::to_string(&config).expect("a checked config serializes");
    let again = PipelineConfig::parse(written.as_bytes(), PathBuf::from("/pipelines"))
        .unwrap_or_else(|error| panic!("a checked config fails when written back: {error}"));
    assert_eq!(
        toml::to_string(&again).expect("a checked config serializes"),
        written,
        "a checked config changes when written back"
    );
});
