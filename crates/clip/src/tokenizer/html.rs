//! HTML character-reference decoding as CLIP's text cleaning applies it.
//!
//! Two decoders, each a port of the Python function it is named after:
//!
//! - [`unescape`] is CPython's `html.unescape` (3.4 and later). It decodes all
//!   2231 named references of `html.entities.html5`. These include 106 legacy
//!   names that need no `;`, such as `&amp` in `&ampx`. It also decodes decimal
//!   `&#NN;` and hexadecimal `&#xHH;` references, with or without the `;`. The
//!   numbers HTML5 forbids map as in CPython: C1 numbers to their Windows-1252
//!   characters, surrogates and numbers past U+10FFFF to U+FFFD, and the other
//!   invalid code points to nothing.
//! - [`ftfy_unescape`] is ftfy 6.3's `fixes.unescape_html`. It decodes only
//!   references that end in `;`, adds an upper-case spelling of every lower-case
//!   name that `html.unescape` does not know (`&EACUTE;` becomes `É`), and leaves
//!   a numeric reference alone when decoding it would leave a `;` behind.

use std::borrow::Cow;
use std::collections::HashMap;
use std::sync::LazyLock;

use regex::{Captures, Regex};

use super::html_entities::HTML5_ENTITIES;

/// The pattern of CPython's `html._charref`, with `\f` spelled `\x0C`.
static CHARACTER_REFERENCE: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r"&(#[0-9]+;?|#[xX][0-9a-fA-F]+;?|[^\t\n\x0C <&#;]{1,32};?)")
        .expect("the character-reference pattern is a valid constant")
});

/// The pattern of ftfy's `chardata.HTML_ENTITY_RE`.
static FTFY_ENTITY: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r"&#?[0-9A-Za-z]{1,24};").expect("the ftfy entity pattern is a valid constant")
});

/// ftfy's `chardata.HTML_ENTITIES`: `&name;` to its replacement text.
static FTFY_ENTITIES: LazyLock<HashMap<String, String>> = LazyLock::new(build_ftfy_entities);

/// Decodes HTML character references exactly as CPython's `html.unescape`.
pub(super) fn unescape(text: &str) -> Cow<'_, str> {
    if !text.contains('&') {
        return Cow::Borrowed(text);
    }
    CHARACTER_REFERENCE.replace_all(text, |captures: &Captures<'_>| {
        replace_reference(&captures[1])
    })
}

/// Decodes HTML entities as ftfy's `unescape_html` fixer does.
pub(super) fn ftfy_unescape(text: &str) -> Cow<'_, str> {
    if !text.contains('&') {
        return Cow::Borrowed(text);
    }
    FTFY_ENTITY.replace_all(text, |captures: &Captures<'_>| {
        let entity = &captures[0];
        if let Some(replacement) = FTFY_ENTITIES.get(entity) {
            return replacement.clone();
        }
        if entity.starts_with("&#") {
            let decoded = unescape(entity);
            if !decoded.contains(';') {
                return decoded.into_owned();
            }
        }
        entity.to_owned()
    })
}

/// Returns the Windows-1252 character for a C1 control code point (U+0080 to U+009F).
///
/// The five bytes Windows-1252 leaves undefined (0x81, 0x8D, 0x8F, 0x90, 0x9D)
/// map to themselves, as in CPython's `html._invalid_charrefs` and ftfy's
/// `sloppy-windows-1252` codec. Returns `None` outside the C1 range.
pub(super) fn windows_1252_c1(code_point: u32) -> Option<char> {
    const C1_TO_WINDOWS_1252: [char; 32] = [
        '\u{20AC}', '\u{81}', '\u{201A}', '\u{192}', '\u{201E}', '\u{2026}', '\u{2020}',
        '\u{2021}', '\u{2C6}', '\u{2030}', '\u{160}', '\u{2039}', '\u{152}', '\u{8D}', '\u{17D}',
        '\u{8F}', '\u{90}', '\u{2018}', '\u{2019}', '\u{201C}', '\u{201D}', '\u{2022}', '\u{2013}',
        '\u{2014}', '\u{2DC}', '\u{2122}', '\u{161}', '\u{203A}', '\u{153}', '\u{9D}', '\u{17E}',
        '\u{178}',
    ];
    let index = code_point.checked_sub(0x80)?;
    C1_TO_WINDOWS_1252
        .get(usize::try_from(index).ok()?)
        .copied()
}

/// Returns the replacement for one reference, given the text after its `&`.
fn replace_reference(reference: &str) -> String {
    match reference.strip_prefix('#') {
        Some(number) => replace_numeric_reference(number),
        None => replace_named_reference(reference),
    }
}

/// Decodes `NN;` or `xHH;`, the text after `&#`, as CPython does.
fn replace_numeric_reference(number: &str) -> String {
    let (digits, radix) = match number.strip_prefix(['x', 'X']) {
        Some(hex_digits) => (hex_digits, 16),
        None => (number, 10),
    };
    let digits = digits.trim_end_matches(';');
    // The pattern admits only digits, so parsing fails only on overflow, which
    // CPython treats like any other number past U+10FFFF.
    let code_point = u32::from_str_radix(digits, radix).ok();
    match code_point {
        Some(code_point) => decode_code_point(code_point),
        None => '\u{FFFD}'.to_string(),
    }
}

/// Maps a referenced code point to text as CPython's `_replace_charref` does.
fn decode_code_point(code_point: u32) -> String {
    if code_point == 0 {
        return '\u{FFFD}'.to_string();
    }
    if code_point == 0x0D {
        return '\r'.to_string();
    }
    if let Some(character) = windows_1252_c1(code_point) {
        return character.to_string();
    }
    if (0xD800..=0xDFFF).contains(&code_point) || code_point > 0x10FFFF {
        return '\u{FFFD}'.to_string();
    }
    if is_invalid_code_point(code_point) {
        return String::new();
    }
    char::from_u32(code_point)
        .map(String::from)
        .unwrap_or_default()
}

/// Tells whether CPython's `html._invalid_codepoints` contains a code point.
///
/// The set is the C0 controls except tab, line feed, form feed and carriage
/// return, DEL, the C1 controls, U+FDD0 to U+FDEF, and the last two code
/// points of every plane.
fn is_invalid_code_point(code_point: u32) -> bool {
    matches!(code_point, 0x01..=0x08 | 0x0B | 0x0E..=0x1F | 0x7F..=0x9F | 0xFDD0..=0xFDEF)
        || (code_point & 0xFFFE == 0xFFFE && code_point <= 0x10FFFF)
}

/// Decodes a named reference, or its longest known prefix, as CPython does.
///
/// `reference` is the text after `&`: up to 32 characters and an optional `;`.
fn replace_named_reference(reference: &str) -> String {
    if let Some(replacement) = lookup_html5(reference) {
        return replacement.to_owned();
    }
    // CPython tries prefixes from one character shorter down to two characters.
    let boundaries: Vec<usize> = reference.char_indices().map(|(index, _)| index).collect();
    for &end in boundaries.iter().skip(2).rev() {
        if let Some(replacement) = lookup_html5(&reference[..end]) {
            return format!("{replacement}{}", &reference[end..]);
        }
    }
    format!("&{reference}")
}

/// Looks up a name (with its `;`, where it has one) in the HTML5 table.
fn lookup_html5(name: &str) -> Option<&'static str> {
    HTML5_ENTITIES
        .binary_search_by(|(candidate, _)| (*candidate).cmp(name))
        .ok()
        .map(|index| HTML5_ENTITIES[index].1)
}

/// Builds ftfy's entity table from the HTML5 table, as `_build_html_entities` does.
///
/// Every name that ends in `;` maps to its text. A lower-case name also gets
/// an upper-case spelling mapped to the upper-cased text, unless CPython's
/// `html.unescape` already decodes that spelling (`&AMP;` is its own entity).
fn build_ftfy_entities() -> HashMap<String, String> {
    let mut entities = HashMap::new();
    for &(name, text) in HTML5_ENTITIES
        .iter()
        .filter(|(name, _)| name.ends_with(';'))
    {
        entities.insert(format!("&{name}"), text.to_owned());
        if name != name.to_ascii_lowercase() {
            continue;
        }
        let upper_entity = format!("&{}", name.to_ascii_uppercase());
        if unescape(&upper_entity) == upper_entity.as_str() {
            entities.insert(upper_entity, text.to_uppercase());
        }
    }
    entities
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn html5_table_sorted_by_name() {
        let sorted = HTML5_ENTITIES.windows(2).all(|pair| pair[0].0 < pair[1].0);
        assert!(sorted, "binary search needs the table sorted in byte order");
    }

    #[test]
    fn ftfy_table_matches_ftfy_size() {
        // ftfy 6.3.1 on CPython 3.11: len(ftfy.chardata.HTML_ENTITIES) == 3501.
        assert_eq!(FTFY_ENTITIES.len(), 3501);
        assert_eq!(FTFY_ENTITIES.get("&EACUTE;").map(String::as_str), Some("É"));
        assert_eq!(FTFY_ENTITIES.get("&AMP;").map(String::as_str), Some("&"));
        assert!(
            !FTFY_ENTITIES.contains_key("&GTCC;"),
            "html.unescape decodes &GT in &GTCC;"
        );
    }

    #[test]
    fn invalid_code_points_match_cpython_count() {
        // len(html._invalid_codepoints) == 126 on CPython 3.11.
        let count = (0..=0x10FFFF)
            .filter(|&code_point| is_invalid_code_point(code_point))
            .count();
        assert_eq!(count, 126);
    }
}
