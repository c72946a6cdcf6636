//! Sentence splitting rules and the word-limited, wrap-around caption chunks.

use paperclip_clip::chunk::{sample_chunk, sample_chunk_nonempty, split_sentences};
use paperclip_clip::rng::Rng;
use proptest::prelude::*;

fn word_count(text: &str) -> usize {
    text.split_whitespace().count()
}

/// Four sentences of three words each.
const FOUR_SENTENCES: &str = "Alpha one two. Beta one two. Gamma one two. Delta one two.";

/// Finds the first seed whose `below(count)` draw is `start`.
fn seed_for_start(count: usize, start: usize) -> u64 {
    (0..1000)
        .find(|&seed| Rng::seeded(seed).below(count) == start)
        .expect("some seed below 1000 draws every start")
}

/// Checks whether `chunk` is sentences `start, start + 1, …` of `sentences` (cyclically) joined by
/// single spaces, for some start and a length of at least 1.
fn is_cyclic_run(chunk: &str, sentences: &[&str]) -> bool {
    let count = sentences.len();
    (0..count).any(|start| {
        (1..=count).any(|len| {
            let run: Vec<&str> = (0..len).map(|k| sentences[(start + k) % count]).collect();
            run.join(" ") == chunk
        })
    })
}

#[test]
fn short_text_is_unchanged() {
    let text = "Category: Galaxies.  A  short   caption with odd spacing.";
    let mut rng = Rng::seeded(1);
    assert_eq!(sample_chunk(text, 77, &mut rng), text);
    assert_eq!(sample_chunk_nonempty(text, 77, &mut rng), text);
    assert_eq!(rng, Rng::seeded(1), "a short text draws nothing");

    let exactly = "one two three.";
    assert_eq!(sample_chunk(exactly, 3, &mut rng), exactly);
}

#[test]
fn long_text_draws_once() {
    let mut rng = Rng::seeded(2);
    let mut replay = rng.clone();
    sample_chunk(FOUR_SENTENCES, 7, &mut rng);
    replay.below(4);
    assert_eq!(rng, replay);
}

#[test]
fn chunk_starts_at_drawn_sentence() {
    let sentences = split_sentences(FOUR_SENTENCES);
    for start in 0..4 {
        let mut rng = Rng::seeded(seed_for_start(4, start));
        let chunk = sample_chunk(FOUR_SENTENCES, 7, &mut rng);
        let expected = format!("{} {}", sentences[start], sentences[(start + 1) % 4]);
        assert_eq!(chunk, expected, "start {start}");
    }
}

#[test]
fn chunk_wraps_to_first_sentence() {
    let mut rng = Rng::seeded(seed_for_start(4, 3));
    assert_eq!(
        sample_chunk(FOUR_SENTENCES, 9, &mut rng),
        "Delta one two. Alpha one two. Beta one two."
    );
    // After the wrap, sentences are taken until the next one would exceed the limit.
    let mut rng = Rng::seeded(seed_for_start(4, 2));
    assert_eq!(
        sample_chunk(FOUR_SENTENCES, 11, &mut rng),
        "Gamma one two. Delta one two. Alpha one two."
    );
    let text = format!("{FOUR_SENTENCES} Extra.");
    let mut rng = Rng::seeded(seed_for_start(5, 2));
    assert_eq!(
        sample_chunk(&text, 12, &mut rng),
        "Gamma one two. Delta one two. Extra. Alpha one two."
    );
}

#[test]
fn chunk_stops_at_first_overflow() {
    // From "Beta": 3 words, then "Gamma …" with 6 words would exceed 8, so selection stops there
    // even though the 3-word "Delta" sentence after it would fit.
    let text = "Alpha one two. Beta one two. Gamma one two three four five. Delta one two.";
    let mut rng = Rng::seeded(seed_for_start(4, 1));
    assert_eq!(sample_chunk(text, 8, &mut rng), "Beta one two.");
}

#[test]
fn chunk_empty_for_long_start_sentence() {
    let text = "Alpha one two three four five six. Beta one.";
    let mut rng = Rng::seeded(seed_for_start(2, 0));
    assert_eq!(sample_chunk(text, 4, &mut rng), "");

    let mut rng = Rng::seeded(seed_for_start(2, 0));
    assert_eq!(
        sample_chunk_nonempty(text, 4, &mut rng),
        "Alpha one two three"
    );

    let mut rng = Rng::seeded(seed_for_start(2, 1));
    assert_eq!(sample_chunk_nonempty(text, 4, &mut rng), "Beta one.");
}

#[test]
fn zero_max_words_gives_empty_chunk() {
    let mut rng = Rng::seeded(3);
    assert_eq!(sample_chunk(FOUR_SENTENCES, 0, &mut rng), "");
    assert_eq!(sample_chunk_nonempty(FOUR_SENTENCES, 0, &mut rng), "");
    assert_eq!(sample_chunk("", 0, &mut rng), "");
}

#[test]
fn sentences_split_after_terminators() {
    assert_eq!(
        split_sentences("Is it real? Yes! It is.  Then more"),
        vec!["Is it real?", "Yes!", "It is.", "Then more"]
    );
    assert_eq!(
        split_sentences("He said \"stop.\" Then he left."),
        vec!["He said \"stop.\"", "Then he left."]
    );
    assert_eq!(
        split_sentences("(As shown before.) Next one."),
        vec!["(As shown before.)", "Next one."]
    );
    assert_eq!(
        split_sentences("Wait... What happened?!  Nothing."),
        vec!["Wait...", "What happened?!", "Nothing."]
    );
    assert_eq!(split_sentences("   "), Vec::<&str>::new());
}

#[test]
fn category_prefix_is_its_own_sentence() {
    assert_eq!(
        split_sentences("Category: Galaxies. We propose deep imaging."),
        vec!["Category: Galaxies.", "We propose deep imaging."]
    );
    assert_eq!(
        split_sentences("Category: .  We propose deep imaging."),
        vec!["Category: .", "We propose deep imaging."]
    );
}

#[test]
fn abbreviations_do_not_split() {
    let cases = [
        "We use HST (e.g. WFC3 and ACS) data.",
        "Dust, i.e. small grains, is seen.",
        "As Smith et al. (2020) found, it is so.",
        "As Smith et al. found, it is so.",
        "See Fig. 3 and Eq. 2 for details.",
        "Compare the model vs. the data.",
        "Stars, gas, etc. are included.",
        "Dr. Jones and Prof. Lee lead it.",
        "The mass is approx. the solar value.",
        "Observed by M. Smith and J. R. Doe.",
        "The U.S. team leads it.",
        "A flux of 2.5 mJy at z = 0.3 was seen.",
        "Cf. Sect. 4 of the proposal.",
    ];
    for text in cases {
        assert_eq!(split_sentences(text), vec![text], "{text}");
    }
}

#[test]
fn sentence_final_abbreviations_split_before_capitals() {
    assert_eq!(
        split_sentences("We map gas, dust, etc. The survey is deep."),
        vec!["We map gas, dust, etc.", "The survey is deep."]
    );
    assert_eq!(
        split_sentences("This follows Smith et al. We extend it."),
        vec!["This follows Smith et al.", "We extend it."]
    );
}

#[test]
fn numbers_before_periods_end_sentences() {
    assert_eq!(
        split_sentences("The redshift is 2.5. Next we observe."),
        vec!["The redshift is 2.5.", "Next we observe."]
    );
    assert_eq!(
        split_sentences("Data from 2020. More in 2021."),
        vec!["Data from 2020.", "More in 2021."]
    );
}

#[test]
fn lowercase_next_word_does_not_split() {
    assert_eq!(
        split_sentences("The spec. type is known. Next."),
        vec!["The spec. type is known.", "Next."]
    );
}

#[test]
fn non_ascii_text_splits_on_char_boundaries() {
    assert_eq!(
        split_sentences("Das Ergebnis ist “gut.” Später mehr… Ende."),
        vec!["Das Ergebnis ist “gut.”", "Später mehr… Ende."]
    );
}

/// Words that exercise the splitting rules: terminators, abbreviations, initials, decimals,
/// quotes and brackets.
const VOCABULARY: &[&str] = &[
    "the",
    "galaxy",
    "Star",
    "dust",
    "e.g.",
    "i.e.",
    "Fig.",
    "et",
    "al.",
    "etc.",
    "M.",
    "2.5",
    "2020.",
    "end.",
    "Why?",
    "Yes!",
    "\"quoted.\"",
    "(see",
    "this.)",
    "U.S.",
    "approx.",
    "We",
    "Category:",
    ".",
    "...",
    "z",
    "=",
    "0.3",
    "Ω.",
    "néant.",
];

fn text_strategy() -> impl Strategy<Value = String> {
    let word = proptest::sample::select(VOCABULARY);
    let separator = proptest::sample::select(&[" ", " ", " ", "  ", "\n"][..]);
    proptest::collection::vec((word, separator), 0..60).prop_map(|pairs| {
        pairs
            .into_iter()
            .map(|(word, separator)| format!("{word}{separator}"))
            .collect()
    })
}

proptest! {
    #[test]
    fn chunks_are_whole_sentences_within_limit(
        text in text_strategy(),
        max_words in 0usize..30,
        seed in any::<u64>(),
    ) {
        let sentences = split_sentences(&text);
        let chunk = sample_chunk(&text, max_words, &mut Rng::seeded(seed));
        if word_count(&text) <= max_words {
            prop_assert_eq!(&chunk, &text);
        } else {
            prop_assert!(word_count(&chunk) <= max_words);
            prop_assert!(chunk.is_empty() || is_cyclic_run(&chunk, &sentences), "{:?}", chunk);
        }
    }

    #[test]
    fn nonempty_chunks_are_sentences_or_leading_words(
        text in text_strategy(),
        max_words in 1usize..30,
        seed in any::<u64>(),
    ) {
        let sentences = split_sentences(&text);
        let chunk = sample_chunk_nonempty(&text, max_words, &mut Rng::seeded(seed));
        let plain = sample_chunk(&text, max_words, &mut Rng::seeded(seed));
        if !plain.is_empty() {
            prop_assert_eq!(&chunk, &plain);
        } else if word_count(&text) > 0 {
            prop_assert!(!chunk.is_empty());
            prop_assert_eq!(word_count(&chunk), max_words);
            let is_prefix = sentences.iter().any(|sentence| {
                let words: Vec<&str> = sentence.split_whitespace().take(max_words).collect();
                words.join(" ") == chunk
            });
            prop_assert!(is_prefix, "{:?}", chunk);
        }
    }

    #[test]
    fn sentences_cover_text_in_order(text in text_strategy()) {
        let sentences = split_sentences(&text);
        let mut rest = text.as_str();
        for sentence in &sentences {
            prop_assert!(!sentence.is_empty());
            prop_assert_eq!(sentence.trim(), *sentence);
            let at = rest.find(sentence).expect("each sentence follows the previous one");
            prop_assert!(rest[..at].trim().is_empty(), "text skipped before {:?}", sentence);
            rest = &rest[at + sentence.len()..];
        }
        prop_assert!(rest.trim().is_empty());
    }
}
