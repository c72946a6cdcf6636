//! FITS header parsing: 2880-byte blocks of 80-character ASCII cards.
//!
//! Each card is `KEYWORD = value / comment` with the keyword in columns 1–8 and the
//! value indicator `= ` in columns 9–10. Commentary cards (`COMMENT`, `HISTORY`,
//! blank keyword) keep their text as the comment. A header ends at the `END` card.
//! `CONTINUE` long strings and `HIERARCH` keywords are stored as commentary cards,
//! so their values are not available through the typed getters.
//!
//! Invariant: every parsed header consists of printable ASCII (0x20–0x7E) as the FITS
//! standard requires, so binary garbage in a header block is reported as damage
//! instead of being read as cards.

use super::FitsError;

/// Size of one FITS block in bytes.
pub const BLOCK_BYTES: usize = 2880;

/// Size of one header card in bytes.
pub const CARD_BYTES: usize = 80;

/// A typed FITS header value, used both when reading and when writing cards.
#[derive(Debug, Clone, PartialEq)]
pub enum FitsValue {
    Str(String),
    Int(i64),
    Float(f64),
    Bool(bool),
}

/// One header card.
#[derive(Debug, Clone, PartialEq)]
pub struct Card {
    pub keyword: String,
    /// Parsed value; `None` for commentary cards and undefined or unparseable values.
    pub value: Option<FitsValue>,
    pub comment: Option<String>,
}

/// The cards of one HDU header, in file order, without the `END` card.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Header {
    pub cards: Vec<Card>,
}

impl Header {
    /// Returns the value of the first card with this keyword (case-insensitive).
    pub fn get(&self, key: &str) -> Option<&FitsValue> {
        self.cards
            .iter()
            .find(|card| card.keyword.eq_ignore_ascii_case(key) && card.value.is_some())
            .and_then(|card| card.value.as_ref())
    }

    /// Returns a string value without trailing spaces, which FITS treats as insignificant.
    pub fn get_str(&self, key: &str) -> Option<&str> {
        match self.get(key)? {
            FitsValue::Str(text) => Some(text.as_str()),
            _ => None,
        }
    }

    /// Returns an integer value; floats and strings are not converted.
    pub fn get_i64(&self, key: &str) -> Option<i64> {
        match self.get(key)? {
            FitsValue::Int(number) => Some(*number),
            _ => None,
        }
    }

    /// Returns a numeric value, converting integers to `f64`.
    pub fn get_f64(&self, key: &str) -> Option<f64> {
        match self.get(key)? {
            FitsValue::Int(number) => Some(*number as f64),
            FitsValue::Float(number) => Some(*number),
            _ => None,
        }
    }

    /// Returns a logical (`T`/`F`) value.
    pub fn get_bool(&self, key: &str) -> Option<bool> {
        match self.get(key)? {
            FitsValue::Bool(flag) => Some(*flag),
            _ => None,
        }
    }

    /// Returns true when the keyword is present, with or without a value.
    pub fn contains(&self, key: &str) -> bool {
        self.cards
            .iter()
            .any(|card| card.keyword.eq_ignore_ascii_case(key))
    }
}

/// Parses the header that starts at `offset_bytes` and returns it with the offset of
/// the first data byte (the block after the `END` card).
pub fn parse_header(bytes: &[u8], offset_bytes: usize) -> Result<(Header, usize), FitsError> {
    let mut header = Header::default();
    let mut block_start = offset_bytes;

    loop {
        let block_end = block_start + BLOCK_BYTES;
        if block_end > bytes.len() {
            return Err(FitsError::Truncated {
                hdu: None,
                offset_bytes: block_start as u64,
                expected_bytes: BLOCK_BYTES as u64,
                available_bytes: bytes.len().saturating_sub(block_start) as u64,
            });
        }

        for card_start in (block_start..block_end).step_by(CARD_BYTES) {
            let raw = &bytes[card_start..card_start + CARD_BYTES];
            let card = parse_card(raw, card_start)?;
            if card.keyword == "END" {
                return Ok((header, block_end));
            }
            header.cards.push(card);
        }

        block_start = block_end;
    }
}

/// Parses one 80-byte card; `offset_bytes` is used only for error messages.
pub fn parse_card(raw: &[u8], offset_bytes: usize) -> Result<Card, FitsError> {
    if let Some(position) = raw.iter().position(|byte| !(0x20..=0x7e).contains(byte)) {
        return Err(FitsError::InvalidHeader {
            offset_bytes: (offset_bytes + position) as u64,
            detail: format!(
                "byte 0x{:02X} is not printable ASCII, which FITS headers require",
                raw[position]
            ),
        });
    }

    // The check above guarantees ASCII, so this conversion cannot fail.
    let text = std::str::from_utf8(raw).unwrap_or_default();
    let keyword = text[..8].trim_end().to_string();
    let has_value = &text[8..10] == "= " && !is_commentary(&keyword);

    if !has_value {
        let comment = text[8..].trim_end();
        let comment = (!comment.is_empty()).then(|| comment.to_string());
        return Ok(Card {
            keyword,
            value: None,
            comment,
        });
    }

    let (value, comment) = parse_value(&text[10..]);
    Ok(Card {
        keyword,
        value,
        comment,
    })
}

fn is_commentary(keyword: &str) -> bool {
    matches!(
        keyword,
        "COMMENT" | "HISTORY" | "" | "CONTINUE" | "HIERARCH"
    )
}

/// Splits the value field (columns 11–80) into a typed value and an optional comment.
fn parse_value(field: &str) -> (Option<FitsValue>, Option<String>) {
    let trimmed = field.trim_start();

    if let Some(rest) = trimmed.strip_prefix('\'') {
        return parse_string_value(rest);
    }

    let (token, comment) = match trimmed.find('/') {
        Some(slash) => (
            &trimmed[..slash],
            Some(trimmed[slash + 1..].trim().to_string()),
        ),
        None => (trimmed, None),
    };
    (parse_token(token.trim()), comment)
}

fn parse_string_value(rest: &str) -> (Option<FitsValue>, Option<String>) {
    let mut text = String::new();
    let mut chars = rest.char_indices().peekable();
    let mut end_index = rest.len();

    while let Some((index, character)) = chars.next() {
        if character != '\'' {
            text.push(character);
            continue;
        }
        // Two quotes in a row stand for one literal quote.
        if matches!(chars.peek(), Some((_, '\''))) {
            chars.next();
            text.push('\'');
            continue;
        }
        end_index = index + 1;
        break;
    }

    let after = &rest[end_index.min(rest.len())..];
    let comment = after
        .find('/')
        .map(|slash| after[slash + 1..].trim().to_string());
    let value = text.trim_end().to_string();
    (Some(FitsValue::Str(value)), comment)
}

fn parse_token(token: &str) -> Option<FitsValue> {
    match token {
        "" => None,
        "T" => Some(FitsValue::Bool(true)),
        "F" => Some(FitsValue::Bool(false)),
        _ => parse_number(token),
    }
}

fn parse_number(token: &str) -> Option<FitsValue> {
    let is_integer = token
        .trim_start_matches(['+', '-'])
        .bytes()
        .all(|byte| byte.is_ascii_digit());

    if is_integer && let Ok(number) = token.parse::<i64>() {
        return Some(FitsValue::Int(number));
    }

    // FITS allows a `D` exponent for double precision.
    let normalised = token.replace(['D', 'd'], "E");
    normalised.parse::<f64>().ok().map(FitsValue::Float)
}

/// Formats one 80-byte card for writing; the caller passes a keyword of at most 8 characters.
pub fn format_card(keyword: &str, value: &FitsValue, comment: Option<&str>) -> String {
    let value_text = match value {
        FitsValue::Str(text) => {
            let escaped = text.replace('\'', "''");
            format!("'{escaped:<8}'")
        }
        FitsValue::Int(number) => format!("{number:>20}"),
        FitsValue::Float(number) => format!("{:>20}", format_float(*number)),
        FitsValue::Bool(flag) => format!("{:>20}", if *flag { "T" } else { "F" }),
    };

    let mut card = format!("{keyword:<8}= {value_text}");
    if let Some(comment) = comment {
        card.push_str(" / ");
        card.push_str(comment);
    }
    pad_card(card)
}

/// Pads or cuts a card to exactly 80 characters.
pub fn pad_card(mut card: String) -> String {
    card.truncate(CARD_BYTES);
    format!("{card:<80}")
}

fn format_float(number: f64) -> String {
    let text = format!("{number:E}");
    if text.contains('.') || text.contains("inf") || text.contains("NaN") {
        text
    } else {
        // FITS readers expect a decimal point in floating-point values.
        text.replacen('E', ".0E", 1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn card(text: &str) -> Card {
        parse_card(format!("{text:<80}").as_bytes(), 0).expect("valid card")
    }

    #[test]
    fn card_parses_string_with_quote_and_comment() {
        let parsed = card("TARGNAME= 'O''NEIL  '           / target name");
        assert_eq!(parsed.keyword, "TARGNAME");
        assert_eq!(parsed.value, Some(FitsValue::Str("O'NEIL".into())));
        assert_eq!(parsed.comment.as_deref(), Some("target name"));
    }

    #[test]
    fn card_parses_numbers_and_logicals() {
        assert_eq!(
            card("NAXIS   =                    2").value,
            Some(FitsValue::Int(2))
        );
        assert_eq!(
            card("EXPTIME =               1.5D2 / s").value,
            Some(FitsValue::Float(150.0))
        );
        assert_eq!(
            card("SIMPLE  =                    T").value,
            Some(FitsValue::Bool(true))
        );
        assert_eq!(
            card("BZERO   =             -1.0E-16").value,
            Some(FitsValue::Float(-1e-16))
        );
    }

    #[test]
    fn card_keeps_commentary_text() {
        let parsed = card("HISTORY = not a value");
        assert_eq!(parsed.value, None);
        assert_eq!(parsed.comment.as_deref(), Some("= not a value"));
    }

    #[test]
    fn card_rejects_non_ascii_bytes() {
        let mut raw = [b' '; 80];
        raw[..8].copy_from_slice(b"SIMPLE  ");
        raw[20] = 0xEF;
        let error = parse_card(&raw, 2880).unwrap_err();
        assert!(
            matches!(
                error,
                FitsError::InvalidHeader {
                    offset_bytes: 2900,
                    ..
                }
            ),
            "{error}"
        );
    }

    #[test]
    fn format_card_round_trips() {
        let values = [
            FitsValue::Str("HST".into()),
            FitsValue::Int(-32768),
            FitsValue::Float(1.25e-16),
            FitsValue::Float(32768.0),
            FitsValue::Bool(false),
        ];
        for value in values {
            let text = format_card("KEY", &value, Some("note"));
            assert_eq!(text.len(), 80);
            let parsed = parse_card(text.as_bytes(), 0).unwrap();
            assert_eq!(parsed.value.as_ref(), Some(&value), "card {text}");
        }
    }
}
