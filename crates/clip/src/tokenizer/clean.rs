//! Text cleaning before CLIP's pre-tokenization, as open_clip's `_clean_lower`.
//!
//! open_clip (2.26 and later) cleans every caption with
//! `whitespace_clean(basic_clean(text)).lower()`: `ftfy.fix_text`, then
//! `html.unescape` twice, then Python's `str.split` and `" ".join` to collapse
//! whitespace, then `str.lower`. This module ports each step except ftfy's
//! encoding repair. Against ftfy 6.3.1 on CPython 3.11 the ported steps gave
//! the same output on every text tried, apart from characters that are new
//! in the Unicode version of one side.

use std::borrow::Cow;
use std::sync::LazyLock;

use regex::Regex;
use unicode_normalization::{UnicodeNormalization, is_nfc_quick};

use super::html;

/// ftfy's `TextFixerConfig.max_decode_length`, in characters.
const MAX_SEGMENT_CHARS: usize = 1_000_000;

/// The pattern of ftfy's `fixes.ANSI_RE`.
static TERMINAL_ESCAPE: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r"\x1B\[((?:\d|;)*)([a-zA-Z])")
        .expect("the terminal-escape pattern is a valid constant")
});

/// Cleans text exactly as open_clip's default `SimpleTokenizer` does before splitting it.
pub fn clean_text(text: &str) -> String {
    let fixed = fix_text(text);
    let unescaped_once = html::unescape(&fixed);
    let unescaped_twice = html::unescape(&unescaped_once);
    collapse_whitespace(&unescaped_twice).to_lowercase()
}

/// Tells whether Python's `str.isspace` is true for a character.
///
/// This differs from [`char::is_whitespace`]: Python also counts the
/// information separators U+001C to U+001F.
pub(super) fn is_python_whitespace(character: char) -> bool {
    matches!(
        character,
        '\t'..='\r'
            | '\u{1C}'..='\u{1F}'
            | ' '
            | '\u{85}'
            | '\u{A0}'
            | '\u{1680}'
            | '\u{2000}'..='\u{200A}'
            | '\u{2028}'
            | '\u{2029}'
            | '\u{202F}'
            | '\u{205F}'
            | '\u{3000}'
    )
}

/// Joins the whitespace-separated words with single spaces, as `" ".join(text.split())`.
fn collapse_whitespace(text: &str) -> String {
    let words: Vec<&str> = text
        .split(is_python_whitespace)
        .filter(|word| !word.is_empty())
        .collect();
    words.join(" ")
}

/// Applies the part of ftfy 6.3's `fix_text` (default configuration) that CLIP captions need.
///
/// Like ftfy, it fixes the text one line at a time, and once a line contains
/// `<` it stops decoding HTML entities in that line and every later line,
/// because the text is then probably HTML.
fn fix_text(text: &str) -> String {
    let mut fixed = String::with_capacity(text.len());
    let mut unescape_html = true;
    for segment in segments(text) {
        if segment.contains('<') {
            unescape_html = false;
        }
        fixed.push_str(&fix_segment(segment, unescape_html));
    }
    fixed
}

/// Splits text after each `\n`, and lines longer than ftfy's limit into pieces of that many characters.
fn segments(text: &str) -> Vec<&str> {
    let mut pieces = Vec::new();
    for line in text.split_inclusive('\n') {
        let mut rest = line;
        while rest.len() > MAX_SEGMENT_CHARS {
            let Some((split_at, _)) = rest.char_indices().nth(MAX_SEGMENT_CHARS) else {
                break;
            };
            pieces.push(&rest[..split_at]);
            rest = &rest[split_at..];
        }
        pieces.push(rest);
    }
    pieces
}

/// Runs ftfy's fixers over one segment until the text stops changing, as `fix_and_explain`.
fn fix_segment(segment: &str, unescape_html: bool) -> String {
    let mut text = segment.to_owned();
    loop {
        let unescaped = if unescape_html {
            html::ftfy_unescape(&text)
        } else {
            Cow::Borrowed(text.as_str())
        };
        // TODO: ftfy's `fix_encoding` runs here. It repairs mojibake such as
        // "cafÃ©" to "café" with a statistical badness heuristic that is not
        // ported, so such text tokenizes differently from open_clip.
        let translated = translate_characters(&unescaped);
        let unbroken = fix_line_breaks(&translated);
        let without_escapes = remove_terminal_escapes(&unbroken);
        let without_controls = remove_control_characters(&without_escapes);
        let normalized = normalize_nfc(without_controls);
        if normalized == text {
            return text;
        }
        text = normalized;
    }
}

/// Applies ftfy's one-character fixers in its order: `fix_c1_controls`,
/// `fix_latin_ligatures`, `fix_character_width` and `uncurl_quotes`.
///
/// One pass is enough because each fixer maps characters independently.
fn translate_characters(text: &str) -> String {
    let mut translated = String::with_capacity(text.len());
    for character in text.chars() {
        let character = fix_c1_control(character);
        match latin_ligature_letters(character) {
            Some(letters) => letters
                .chars()
                .for_each(|letter| push_fixed_width(letter, &mut translated)),
            None => push_fixed_width(character, &mut translated),
        }
    }
    translated
}

/// Replaces a C1 control character by its Windows-1252 character, as ftfy's `fix_c1_controls`.
fn fix_c1_control(character: char) -> char {
    html::windows_1252_c1(u32::from(character)).unwrap_or(character)
}

/// Returns the letters of a Latin ligature or digraph, from ftfy's `chardata.LIGATURES`.
fn latin_ligature_letters(character: char) -> Option<&'static str> {
    let letters = match character {
        'Ĳ' => "IJ",
        'ĳ' => "ij",
        'ŉ' => "\u{2BC}n",
        'Ǳ' => "DZ",
        'ǲ' => "Dz",
        'ǳ' => "dz",
        'Ǆ' => "D\u{17D}",
        'ǅ' => "D\u{17E}",
        'ǆ' => "d\u{17E}",
        'Ǉ' => "LJ",
        'ǈ' => "Lj",
        'ǉ' => "lj",
        'Ǌ' => "NJ",
        'ǋ' => "Nj",
        'ǌ' => "nj",
        'ﬀ' => "ff",
        'ﬁ' => "fi",
        'ﬂ' => "fl",
        'ﬃ' => "ffi",
        'ﬄ' => "ffl",
        'ﬅ' => "\u{17F}t",
        'ﬆ' => "st",
        _ => return None,
    };
    Some(letters)
}

/// Pushes a character after ftfy's `fix_character_width` and `uncurl_quotes`.
///
/// `fix_character_width` maps U+3000 to a space and every character from
/// U+FF01 to U+FFEF to its NFKC form: fullwidth ASCII to ASCII, halfwidth
/// katakana and Hangul to their usual width.
fn push_fixed_width(character: char, output: &mut String) {
    match character {
        '\u{3000}' => output.push(' '),
        '\u{FF01}'..='\u{FFEF}' => {
            for normalized in std::iter::once(character).nfkc() {
                output.push(uncurl_quote(normalized));
            }
        }
        _ => output.push(uncurl_quote(character)),
    }
}

/// Straightens a curly quote, as ftfy's `uncurl_quotes`.
fn uncurl_quote(character: char) -> char {
    match character {
        '\u{2BC}' | '\u{2018}'..='\u{201B}' => '\'',
        '\u{201C}'..='\u{201F}' => '"',
        _ => character,
    }
}

/// Replaces CRLF, CR, U+2028, U+2029 and U+0085 by `\n`, as ftfy's `fix_line_breaks`.
fn fix_line_breaks(text: &str) -> String {
    text.replace("\r\n", "\n")
        .replace(['\r', '\u{2028}', '\u{2029}', '\u{85}'], "\n")
}

/// Removes ANSI terminal escapes such as `ESC[31m`, as ftfy's `remove_terminal_escapes`.
fn remove_terminal_escapes(text: &str) -> Cow<'_, str> {
    if !text.contains('\u{1B}') {
        return Cow::Borrowed(text);
    }
    TERMINAL_ESCAPE.replace_all(text, "")
}

/// Removes the characters in ftfy's `chardata.CONTROL_CHARS`, as `remove_control_chars`.
///
/// These are the C0 controls except tab, line feed, form feed and carriage
/// return, DEL, the deprecated format characters U+206A to U+206F, the byte
/// order mark U+FEFF, and the interlinear annotation characters U+FFF9 to U+FFFC.
fn remove_control_characters(text: &str) -> String {
    text.chars()
        .filter(|&character| !is_ftfy_control_character(character))
        .collect()
}

fn is_ftfy_control_character(character: char) -> bool {
    matches!(
        character,
        '\u{0}'..='\u{8}'
            | '\u{B}'
            | '\u{E}'..='\u{1F}'
            | '\u{7F}'
            | '\u{206A}'..='\u{206F}'
            | '\u{FEFF}'
            | '\u{FFF9}'..='\u{FFFC}'
    )
}

fn normalize_nfc(text: String) -> String {
    if is_nfc_quick(text.chars()) == unicode_normalization::IsNormalized::Yes {
        return text;
    }
    text.nfc().collect()
}
