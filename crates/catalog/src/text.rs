//! Line splitting, per-line decoding and whitespace rules shared by the readers.
//!
//! Invariants:
//! - Lines end where Python's universal-newline reading ends them: at `\n`, at `\r\n` and at
//!   a lone `\r`. A last line without a terminator is still a line.
//! - A UTF-8 byte order mark at the very start of the input is dropped.
//! - A line that is valid UTF-8 is returned byte for byte.
//! - A line that is not valid UTF-8 is decoded as Latin-1 (ISO-8859-1: byte 0xNN becomes
//!   U+00NN), which cannot fail, and the offset of its first invalid byte is kept so the
//!   caller can record the repair.

const UTF8_BYTE_ORDER_MARK: &[u8] = b"\xEF\xBB\xBF";

/// One input line after decoding.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct DecodedLine {
    /// 1-based line number in the input.
    pub number: usize,
    /// Line text without its terminator.
    pub text: String,
    /// Byte offset (within the line) of the first invalid UTF-8 byte, when the line was
    /// decoded as Latin-1.
    pub latin1_fallback_at: Option<usize>,
    /// Number of control characters (C0 other than tab, DEL, C1) replaced by spaces.
    pub control_characters_replaced: usize,
}

/// Splits `bytes` into lines and decodes each one.
pub(crate) fn decode_lines(bytes: &[u8]) -> Vec<DecodedLine> {
    let body = bytes.strip_prefix(UTF8_BYTE_ORDER_MARK).unwrap_or(bytes);

    split_lines(body)
        .into_iter()
        .enumerate()
        .map(|(index, raw)| decode_line(index + 1, raw))
        .collect()
}

// NOTE: the fallback is per whole line, so a line that mixes valid multi-byte UTF-8 with one
// Latin-1 byte turns its UTF-8 characters into two or three Latin-1 characters each.
fn decode_line(number: usize, raw: &[u8]) -> DecodedLine {
    let (text, latin1_fallback_at) = match std::str::from_utf8(raw) {
        Ok(text) => (text.to_owned(), None),
        Err(error) => (decode_latin1(raw), Some(error.valid_up_to())),
    };
    let (text, control_characters_replaced) = replace_control_characters(text);
    DecodedLine {
        number,
        text,
        latin1_fallback_at,
        control_characters_replaced,
    }
}

/// Replaces control characters with spaces, so captions and terminals never receive raw
/// NUL, BEL or escape sequences. Control characters that Python counts as whitespace (tab,
/// form feed, ...) are kept, because the readers strip them the way the reference parser does.
fn replace_control_characters(text: String) -> (String, usize) {
    let is_control = |c: char| c.is_control() && !is_python_whitespace(c);
    let count = text.chars().filter(|&c| is_control(c)).count();
    if count == 0 {
        return (text, 0);
    }
    let replaced = text
        .chars()
        .map(|c| if is_control(c) { ' ' } else { c })
        .collect();
    (replaced, count)
}

/// Decodes Latin-1 (ISO-8859-1) bytes. Bytes 0x80..=0x9F become C1 control characters, as
/// ISO-8859-1 defines them, not the Windows-1252 punctuation some files mean by them.
pub(crate) fn decode_latin1(raw: &[u8]) -> String {
    raw.iter().map(|&byte| char::from(byte)).collect()
}

fn split_lines(bytes: &[u8]) -> Vec<&[u8]> {
    let mut lines = Vec::new();
    let mut start = 0;
    let mut index = 0;

    while index < bytes.len() {
        match bytes[index] {
            b'\n' => {
                lines.push(&bytes[start..index]);
                index += 1;
                start = index;
            }
            b'\r' => {
                lines.push(&bytes[start..index]);
                index += 1;
                if bytes.get(index) == Some(&b'\n') {
                    index += 1;
                }
                start = index;
            }
            _ => index += 1,
        }
    }

    if start < bytes.len() {
        lines.push(&bytes[start..]);
    }
    lines
}

/// Python's `str.isspace`: Rust's Unicode `White_Space` set plus the ASCII separators
/// U+001C..=U+001F, which Python also strips.
pub(crate) fn is_python_whitespace(character: char) -> bool {
    character.is_whitespace() || ('\u{1c}'..='\u{1f}').contains(&character)
}

/// Python's `str.strip()` without arguments.
pub(crate) fn python_strip(text: &str) -> &str {
    text.trim_matches(is_python_whitespace)
}

/// Collapses every run of whitespace to one space and trims both ends.
pub(crate) fn collapse_whitespace(text: &str) -> String {
    text.split(is_python_whitespace)
        .filter(|word| !word.is_empty())
        .collect::<Vec<_>>()
        .join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn texts(bytes: &[u8]) -> Vec<String> {
        decode_lines(bytes)
            .into_iter()
            .map(|line| line.text)
            .collect()
    }

    #[test]
    fn split_handles_all_line_endings() {
        assert_eq!(texts(b"a\nb\r\nc\rd"), ["a", "b", "c", "d"]);
        assert_eq!(texts(b"a\n\nb\n"), ["a", "", "b"]);
        assert_eq!(texts(b""), Vec::<String>::new());
        assert_eq!(texts(b"\r\n"), [""]);
    }

    #[test]
    fn byte_order_mark_dropped_once() {
        assert_eq!(texts(b"\xEF\xBB\xBFID: 1\n"), ["ID: 1"]);
        assert_eq!(texts(b"ID: 1\n\xEF\xBB\xBFx"), ["ID: 1", "\u{feff}x"]);
    }

    #[test]
    fn latin1_line_decoded_with_offset() {
        let lines = decode_lines(b"PI: M\xFCller\nok");
        assert_eq!(lines[0].text, "PI: M\u{fc}ller");
        assert_eq!(lines[0].latin1_fallback_at, Some(5));
        assert_eq!(lines[1].latin1_fallback_at, None);
        assert_eq!(lines[1].number, 2);
    }

    #[test]
    fn python_strip_matches_python_set() {
        assert_eq!(python_strip("\u{c}\u{1f} a b\t\u{a0}\u{3000}"), "a b");
        assert_eq!(python_strip("\u{feff}a"), "\u{feff}a");
    }

    #[test]
    fn collapse_whitespace_single_spaces() {
        assert_eq!(collapse_whitespace("  a \t b\n\nc  "), "a b c");
        assert_eq!(collapse_whitespace(" \t "), "");
    }

    proptest! {
        #[test]
        fn valid_utf8_line_round_trips(text in "[^\r\n]{0,80}") {
            prop_assume!(!text.starts_with('\u{feff}'));
            let lines = decode_lines(text.as_bytes());
            // Every character survives except control characters, which become spaces.
            let visible: String = text
                .chars()
                .map(|c| if c.is_control() && !is_python_whitespace(c) { ' ' } else { c })
                .collect();
            let expected: Vec<String> = if text.is_empty() { vec![] } else { vec![visible] };
            let decoded: Vec<String> = lines.iter().map(|line| line.text.clone()).collect();
            prop_assert_eq!(decoded, expected);
            prop_assert!(lines.iter().all(|line| line.latin1_fallback_at.is_none()));
        }

        #[test]
        fn latin1_decoding_keeps_every_byte(bytes in proptest::collection::vec(any::<u8>(), 0..200)) {
            let decoded = decode_latin1(&bytes);
            prop_assert_eq!(decoded.chars().count(), bytes.len());
            prop_assert!(decoded.chars().zip(&bytes).all(|(character, &byte)| u32::from(character) == u32::from(byte)));
        }
    }
}
