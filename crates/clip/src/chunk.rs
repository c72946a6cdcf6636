//! Sentence splitting and word-limited caption chunks for long captions such as proposal
//! abstracts.
//!
//! [`sample_chunk`] reproduces the abstract chunking of the PAPERCLIP training code. A caption
//! of at most `max_words` whitespace-separated words is used unchanged. A longer one is split
//! into sentences and a start sentence is drawn at random. Whole sentences are then selected
//! from there in order, wrapping from the last sentence to the first, while the running word
//! count stays at most `max_words`. Selection stops at the first sentence that does not fit,
//! so when the start sentence alone is longer than `max_words` the chunk is empty, as it was
//! in the original. [`sample_chunk_nonempty`] returns the start sentence's first `max_words`
//! words in that case instead.
//!
//! Invariants: a chunk has at most `max_words` words unless it is the unchanged caption; it is
//! either the caption itself or a cyclic run of consecutive sentences from
//! [`split_sentences`] joined by single spaces (or, for [`sample_chunk_nonempty`], the
//! leading words of one sentence); and the generator is advanced by exactly one
//! `below(sentence_count)` draw when the caption is longer than `max_words`, and not at all
//! otherwise.
//!
//! The original split sentences with NLTK's `sent_tokenize` (the Punkt model for English).
//! [`split_sentences`] is a rule-based approximation of it; its rules are listed there.

use crate::rng::Rng;

/// Abbreviations (lowercase, without the final period) after which a period never ends a
/// sentence, because a name, a number or the rest of the sentence follows them.
const ABBREVIATIONS: &[&str] = &[
    "approx", "ca", "cf", "ch", "dr", "eq", "eqs", "fig", "figs", "i.e", "e.g", "jr", "mr", "mrs",
    "ms", "pp", "prof", "ref", "refs", "resp", "sec", "sect", "sr", "st", "tab", "viz", "vol",
    "vs",
];

/// Abbreviations that also often end a sentence: their period ends one only when the next
/// word starts with an uppercase letter.
const SENTENCE_FINAL_ABBREVIATIONS: &[&str] = &["al", "etc"];

/// Closing quotes and brackets that belong to the sentence before them.
const CLOSERS: &[char] = &['"', '\'', ')', ']', '}', '”', '’', '»'];

/// Opening quotes and brackets skipped when looking at a word's first letter.
const OPENERS: &[char] = &['"', '\'', '(', '[', '{', '“', '‘', '«'];

/// Splits English text into sentences, approximating NLTK's `sent_tokenize`.
///
/// A sentence ends after a run of `.`, `!` or `?`, together with any closing quotes or
/// brackets right after it, when whitespace or the end of the text follows. Runs that
/// contain `!` or `?` always end a sentence. A run of periods does not end one when:
///
/// - the word before it is a common abbreviation such as `e.g.`, `i.e.`, `cf.`, `vs.`,
///   `Fig.`, `Eq.`, `Ref.`, `Sect.`, `Dr.`, `Prof.` or `approx.` (the list is
///   `ABBREVIATIONS` in this module), compared case-insensitively after any opening bracket;
/// - the word is `et al.` or `etc.` and the next word does not start with an uppercase
///   letter;
/// - the word is a single uppercase letter, an initial as in `M. Smith`;
/// - the word is letters joined by periods, as in `U.S.` or `a.k.a.`;
/// - the next word starts with a lowercase letter, which catches abbreviations missing from
///   the list (NLTK splits there unless its model lists the abbreviation).
///
/// A period inside a token never ends a sentence, so decimal numbers (`2.5`), versions and
/// coordinates stay whole. Sentences are trimmed of surrounding whitespace, keep their inner
/// whitespace, and empty ones are dropped. A lone period, as in the `"Category: ."` prefix of
/// captions with an empty category, ends a sentence.
pub fn split_sentences(text: &str) -> Vec<&str> {
    let chars: Vec<(usize, char)> = text.char_indices().collect();
    let mut sentences = Vec::new();
    let mut sentence_start = 0;
    let mut index = 0;
    while index < chars.len() {
        if !is_terminator(chars[index].1) {
            index += 1;
            continue;
        }
        let run_start = index;
        let mut run_end = index;
        while run_end < chars.len() && is_terminator(chars[run_end].1) {
            run_end += 1;
        }
        let mut boundary = run_end;
        while boundary < chars.len() && CLOSERS.contains(&chars[boundary].1) {
            boundary += 1;
        }
        index = boundary;
        if boundary < chars.len() && !chars[boundary].1.is_whitespace() {
            continue;
        }

        let end_byte = chars.get(boundary).map_or(text.len(), |&(byte, _)| byte);
        let run = &chars[run_start..run_end];
        if ends_sentence(text, chars[run_start].0, run, end_byte) {
            push_trimmed(&mut sentences, &text[sentence_start..end_byte]);
            sentence_start = end_byte;
        }
    }
    push_trimmed(&mut sentences, &text[sentence_start..]);
    sentences
}

fn is_terminator(c: char) -> bool {
    matches!(c, '.' | '!' | '?')
}

fn push_trimmed<'a>(sentences: &mut Vec<&'a str>, candidate: &'a str) {
    let trimmed = candidate.trim();
    if !trimmed.is_empty() {
        sentences.push(trimmed);
    }
}

/// Decides whether the terminator `run`, starting at byte `run_byte` and followed by
/// whitespace or the end of the text from byte `end_byte`, ends a sentence.
fn ends_sentence(text: &str, run_byte: usize, run: &[(usize, char)], end_byte: usize) -> bool {
    if run.iter().any(|&(_, c)| c != '.') {
        return true;
    }
    let word = word_before(text, run_byte);
    if word.is_empty() {
        return true;
    }
    let next_letter = next_word_letter(&text[end_byte..]);
    let next_is_upper = next_letter.is_some_and(char::is_uppercase);
    let next_is_lower = next_letter.is_some_and(char::is_lowercase);

    let lower = word.to_lowercase();
    if ABBREVIATIONS.contains(&lower.as_str()) {
        return false;
    }
    if SENTENCE_FINAL_ABBREVIATIONS.contains(&lower.as_str()) {
        return next_is_upper;
    }
    if is_initial(word) || is_dotted_letters(word) {
        return false;
    }
    !next_is_lower
}

/// Returns the word that ends at byte `end`, without the opening quotes or brackets before it.
fn word_before(text: &str, end: usize) -> &str {
    let before = &text[..end];
    let start = before.rfind(char::is_whitespace).map_or(0, |at| {
        at + before[at..].chars().next().map_or(1, char::len_utf8)
    });
    before[start..].trim_start_matches(OPENERS)
}

/// Returns the first character of the next word after skipping whitespace and opening
/// brackets.
fn next_word_letter(rest: &str) -> Option<char> {
    rest.trim_start().trim_start_matches(OPENERS).chars().next()
}

fn is_initial(word: &str) -> bool {
    let mut chars = word.chars();
    matches!((chars.next(), chars.next()), (Some(c), None) if c.is_uppercase())
}

/// Checks whether `word` is single letters joined by periods, such as `U.S` or `a.k.a`.
fn is_dotted_letters(word: &str) -> bool {
    let parts: Vec<&str> = word.split('.').collect();
    parts.len() >= 2
        && parts.iter().all(|part| {
            let mut chars = part.chars();
            matches!((chars.next(), chars.next()), (Some(c), None) if c.is_alphabetic())
        })
}

/// Samples a training chunk of at most `max_words` words from `text`, as the module
/// documentation describes. The chunk is empty when the drawn start sentence alone is longer
/// than `max_words`.
pub fn sample_chunk(text: &str, max_words: usize, rng: &mut Rng) -> String {
    match draw_sentences(text, max_words, rng) {
        Chunk::Whole => text.to_owned(),
        Chunk::Sentences { selected, .. } => selected.join(" "),
    }
}

/// Like [`sample_chunk`], but when the drawn start sentence alone is longer than `max_words`,
/// returns that sentence's first `max_words` words joined by single spaces instead of an
/// empty chunk. The result is still empty when `max_words` is 0 and the text has words.
pub fn sample_chunk_nonempty(text: &str, max_words: usize, rng: &mut Rng) -> String {
    match draw_sentences(text, max_words, rng) {
        Chunk::Whole => text.to_owned(),
        Chunk::Sentences { selected, start } if selected.is_empty() => start
            .split_whitespace()
            .take(max_words)
            .collect::<Vec<_>>()
            .join(" "),
        Chunk::Sentences { selected, .. } => selected.join(" "),
    }
}

/// Selection made by [`draw_sentences`].
enum Chunk<'a> {
    /// The text has at most `max_words` words and is used unchanged.
    Whole,
    /// Whole sentences selected from the drawn start sentence, which is `start`.
    Sentences {
        selected: Vec<&'a str>,
        start: &'a str,
    },
}

fn draw_sentences<'a>(text: &'a str, max_words: usize, rng: &mut Rng) -> Chunk<'a> {
    if text.split_whitespace().count() <= max_words {
        return Chunk::Whole;
    }
    // The text has more than max_words ≥ 0 words, so it has at least one sentence.
    let sentences = split_sentences(text);
    let start_index = rng.below(sentences.len());
    let rotated = sentences[start_index..]
        .iter()
        .chain(&sentences[..start_index]);

    let mut selected = Vec::new();
    let mut word_count = 0;
    for &sentence in rotated {
        word_count += sentence.split_whitespace().count();
        if word_count > max_words {
            break;
        }
        selected.push(sentence);
    }
    Chunk::Sentences {
        selected,
        start: sentences[start_index],
    }
}
