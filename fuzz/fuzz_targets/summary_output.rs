//! A model's output for a summary: any text gives a summary or a rejection with a reason.
//! A summary that passes stays within the schema's bounds, and passes again when written
//! back as JSON.
#![no_main]

use std::sync::LazyLock;

use libfuzzer_sys::fuzz_target;
use paperclip_summary::schema::{MAX_ITEM_CHARS, MAX_ITEMS, MIN_ITEMS, max_tokens};
use paperclip_summary::{Completion, FinishReason, OutputChecker, SchemaFile, SummaryField};

static CHECKER: LazyLock<OutputChecker> =
    LazyLock::new(|| OutputChecker::new(SchemaFile::committed().expect("committed schema")));

fn completion(text: String) -> Completion {
    Completion {
        text,
        finish_reason: FinishReason::Stop,
        prompt_tokens: None,
        completion_tokens: None,
        elapsed_secs: 0.0,
    }
}

fuzz_target!(|bytes: &[u8]| {
    let text = String::from_utf8_lossy(bytes).into_owned();
    let _ = paperclip_summary::json_text::parse_strict(&text);

    let Ok(summary) = CHECKER.check(&completion(text), max_tokens()) else {
        return;
    };
    for field in SummaryField::ALL {
        let items = summary.items(field);
        assert!(
            (MIN_ITEMS..=MAX_ITEMS).contains(&items.len()),
            "{} items in {field:?}",
            items.len()
        );
        for item in items {
            let chars = item.chars().count();
            assert!((1..=MAX_ITEM_CHARS).contains(&chars), "{item:?}");
            assert!(!item.contains(';'), "{item:?} holds the caption separator");
            assert!(!item.chars().any(char::is_control), "{item:?}");
        }
    }
    let written = serde_json::to_string(&summary).expect("a summary serializes");
    let again = CHECKER.check(&completion(written), max_tokens());
    assert_eq!(
        again.ok().as_ref(),
        Some(&summary),
        "a passed summary fails when rewritten"
    );
});
