//! Reading a backend's raw JSON text more strictly than `serde_json::from_str::<Value>`.
//!
//! - [`parse_strict`] rejects an object that names a key twice, at any depth, comparing
//!   keys after unescaping (`"a"` and `"\u0061"` are the same key). serde_json keeps the
//!   last value of a repeated key without a word.
//! - [`scan`] walks the text once. It reports what a parser rejects without naming the place
//!   in the structure, or accepts silently. That is the first raw control character: inside
//!   a string, or outside one when it is not tab, line feed or carriage return. It also
//!   reports the longest run of whitespace between tokens, and where the text ends (the open
//!   containers and whether a string is open), which locates the cut of a truncated output.
//!
//! Paths are JSON Pointers into the document, such as `/science_use_cases/2`.

use serde::de::{self, Deserialize, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_json::{Map, Value};

/// Reason [`parse_strict`] rejected a text.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StrictJsonError {
    #[error("the key {key:?} appears twice in one object (line {line}, column {column})")]
    DuplicateKey {
        key: String,
        line: usize,
        column: usize,
    },
    #[error("not valid JSON: {message}")]
    Syntax {
        message: String,
        line: usize,
        column: usize,
    },
}

const DUPLICATE_PREFIX: &str = "duplicate key ";

/// Parses `text` as one JSON value, refusing repeated keys.
pub fn parse_strict(text: &str) -> Result<Value, StrictJsonError> {
    serde_json::from_str::<StrictValue>(text)
        .map(|value| value.0)
        .map_err(|error| {
            let message = error.to_string();
            match message.strip_prefix(DUPLICATE_PREFIX) {
                Some(rest) if error.classify() == serde_json::error::Category::Data => {
                    let key = rest.rsplit_once(" at line ").map_or(rest, |(key, _)| key);
                    StrictJsonError::DuplicateKey {
                        key: serde_json::from_str(key).unwrap_or_else(|_| key.to_string()),
                        line: error.line(),
                        column: error.column(),
                    }
                }
                _ => StrictJsonError::Syntax {
                    message,
                    line: error.line(),
                    column: error.column(),
                },
            }
        })
}

/// A [`Value`] whose objects never repeat a key.
struct StrictValue(Value);

impl<'de> Deserialize<'de> for StrictValue {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(StrictVisitor)
    }
}

struct StrictVisitor;

impl<'de> Visitor<'de> for StrictVisitor {
    type Value = StrictValue;

    fn expecting(&self, formatter: &mut std::fmt::Formatter) -> std::fmt::Result {
        formatter.write_str("a JSON value")
    }

    fn visit_bool<E>(self, value: bool) -> Result<StrictValue, E> {
        Ok(StrictValue(Value::Bool(value)))
    }

    fn visit_i64<E>(self, value: i64) -> Result<StrictValue, E> {
        Ok(StrictValue(Value::from(value)))
    }

    fn visit_u64<E>(self, value: u64) -> Result<StrictValue, E> {
        Ok(StrictValue(Value::from(value)))
    }

    fn visit_f64<E>(self, value: f64) -> Result<StrictValue, E> {
        let number = serde_json::Number::from_f64(value);
        Ok(StrictValue(number.map_or(Value::Null, Value::Number)))
    }

    fn visit_str<E>(self, value: &str) -> Result<StrictValue, E> {
        Ok(StrictValue(Value::String(value.to_string())))
    }

    fn visit_string<E>(self, value: String) -> Result<StrictValue, E> {
        Ok(StrictValue(Value::String(value)))
    }

    fn visit_unit<E>(self) -> Result<StrictValue, E> {
        Ok(StrictValue(Value::Null))
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<StrictValue, A::Error> {
        let mut items = Vec::new();
        while let Some(StrictValue(item)) = seq.next_element()? {
            items.push(item);
        }
        Ok(StrictValue(Value::Array(items)))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<StrictValue, A::Error> {
        let mut object = Map::new();
        while let Some(key) = map.next_key::<String>()? {
            if object.contains_key(&key) {
                let quoted = serde_json::to_string(&key).expect("a string serializes");
                return Err(de::Error::custom(format!("{DUPLICATE_PREFIX}{quoted}")));
            }
            let StrictValue(value) = map.next_value()?;
            object.insert(key, value);
        }
        Ok(StrictValue(Value::Object(object)))
    }
}

/// A raw control character found by [`scan`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RawControl {
    pub byte_offset: usize,
    pub character: char,
    /// Path of the string or container that contains it.
    pub path: String,
    pub in_string: bool,
}

/// Findings of [`scan`].
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Scan {
    /// The first raw control character that JSON or the schema forbids.
    pub raw_control: Option<RawControl>,
    /// Length in bytes and start of the longest whitespace run outside strings.
    pub longest_whitespace_bytes: usize,
    pub longest_whitespace_offset: usize,
    /// Containers still open where the text ends, as a path; empty at the top level.
    pub end_path: String,
    /// Number of containers still open where the text ends.
    pub end_depth: usize,
    /// Whether the text ends inside a string.
    pub ends_in_string: bool,
}

impl Scan {
    /// Describes where the text ends, in words, for a truncated output.
    pub fn describe_end(&self, text_bytes: usize) -> String {
        let place = if self.end_path.is_empty() {
            "at the top level".to_string()
        } else {
            format!("at {}", self.end_path)
        };
        let string = if self.ends_in_string {
            ", inside a string"
        } else {
            ""
        };
        format!(
            "the output stops after {text_bytes} bytes {place}{string}, with {} container(s) open",
            self.end_depth
        )
    }
}

/// One open object or array while scanning.
#[derive(Debug)]
enum Frame {
    Object {
        key: Option<String>,
        expecting_key: bool,
    },
    Array {
        index: usize,
        has_item: bool,
    },
}

#[derive(Debug, Default)]
struct Scanner {
    frames: Vec<Frame>,
    in_string: bool,
    escaped: bool,
    key_text: Option<String>,
    whitespace_start: Option<usize>,
    scan: Scan,
}

impl Scanner {
    fn path(&self) -> String {
        let mut path = String::new();
        for frame in &self.frames {
            match frame {
                Frame::Object { key: Some(key), .. } => {
                    path.push('/');
                    path.push_str(&key.replace('~', "~0").replace('/', "~1"));
                }
                Frame::Object { key: None, .. } => {}
                Frame::Array { index, has_item } => {
                    if *has_item {
                        path.push_str(&format!("/{index}"));
                    }
                }
            }
        }
        path
    }

    fn control(&mut self, byte_offset: usize, character: char) {
        if self.scan.raw_control.is_none() {
            self.scan.raw_control = Some(RawControl {
                byte_offset,
                character,
                path: self.path(),
                in_string: self.in_string,
            });
        }
    }

    fn string_char(&mut self, offset: usize, character: char) {
        if self.escaped {
            self.escaped = false;
        } else if character == '\\' {
            self.escaped = true;
        } else if character == '"' {
            self.in_string = false;
            if let Some(key) = self.key_text.take()
                && let Some(Frame::Object { key: slot, .. }) = self.frames.last_mut()
            {
                *slot = Some(key);
            }
            return;
        } else if character.is_control() {
            self.control(offset, character);
        }
        if let Some(key) = &mut self.key_text {
            key.push(character);
        }
    }

    fn end_whitespace(&mut self, offset: usize) {
        if let Some(start) = self.whitespace_start.take()
            && offset - start > self.scan.longest_whitespace_bytes
        {
            self.scan.longest_whitespace_bytes = offset - start;
            self.scan.longest_whitespace_offset = start;
        }
    }

    fn structural_char(&mut self, offset: usize, character: char) {
        if matches!(character, ' ' | '\t' | '\n' | '\r') {
            self.whitespace_start.get_or_insert(offset);
            return;
        }
        self.end_whitespace(offset);
        if character != '"' {
            self.mark_array_item(character);
        }
        match character {
            '"' => self.open_string(),
            '{' => self.frames.push(Frame::Object {
                key: None,
                expecting_key: true,
            }),
            '[' => self.frames.push(Frame::Array {
                index: 0,
                has_item: false,
            }),
            '}' | ']' => {
                self.frames.pop();
            }
            ':' => {
                if let Some(Frame::Object { expecting_key, .. }) = self.frames.last_mut() {
                    *expecting_key = false;
                }
            }
            ',' => match self.frames.last_mut() {
                Some(Frame::Object { key, expecting_key }) => {
                    *key = None;
                    *expecting_key = true;
                }
                Some(Frame::Array { index, .. }) => *index += 1,
                None => {}
            },
            other if other.is_control() => self.control(offset, other),
            _ => {}
        }
    }

    fn open_string(&mut self) {
        self.in_string = true;
        match self.frames.last_mut() {
            Some(Frame::Object {
                expecting_key: true,
                ..
            }) => self.key_text = Some(String::new()),
            Some(Frame::Array { has_item, .. }) => *has_item = true,
            _ => {}
        }
    }

    /// Notes that the current array has an element once a value starts in it.
    fn mark_array_item(&mut self, character: char) {
        if matches!(character, ']' | ',') {
            return;
        }
        if let Some(Frame::Array { has_item, .. }) = self.frames.last_mut() {
            *has_item = true;
        }
    }
}

/// Walks `text` once; see the module documentation.
pub fn scan(text: &str) -> Scan {
    let mut scanner = Scanner::default();
    for (offset, character) in text.char_indices() {
        if scanner.in_string {
            scanner.string_char(offset, character);
        } else {
            scanner.structural_char(offset, character);
        }
    }
    scanner.end_whitespace(text.len());
    let path = scanner.path();
    Scan {
        end_path: path,
        end_depth: scanner.frames.len(),
        ends_in_string: scanner.in_string,
        ..scanner.scan
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn repeated_key_is_refused_at_any_depth() {
        let error = parse_strict(
            r#"{"objects_and_phenomena": ["a"], "objects_and_phenomena": ["b", "c"]}"#,
        )
        .unwrap_err();
        assert!(
            matches!(&error, StrictJsonError::DuplicateKey { key, line: 1, .. } if key == "objects_and_phenomena"),
            "{error:?}"
        );
        let nested = parse_strict(r#"[{"x": {"k": 1, "k": 2}}]"#).unwrap_err();
        assert!(matches!(nested, StrictJsonError::DuplicateKey { key, .. } if key == "k"));
        let escaped = parse_strict(r#"{"ab": 1, "a\u0062": 2}"#).unwrap_err();
        assert!(matches!(escaped, StrictJsonError::DuplicateKey { key, .. } if key == "ab"));
        let quoted = parse_strict(r#"{"a \" b": 1, "a \" b": 2}"#).unwrap_err();
        assert!(matches!(quoted, StrictJsonError::DuplicateKey { key, .. } if key == "a \" b"));
    }

    #[test]
    fn syntax_errors_keep_their_position() {
        let error = parse_strict("{\"a\": [1,\n 2,]}").unwrap_err();
        assert!(
            matches!(error, StrictJsonError::Syntax { line: 2, .. }),
            "{error:?}"
        );
    }

    #[test]
    fn scan_finds_raw_control_characters_with_their_path() {
        let text = "{\"science_use_cases\": [\"a\", \"ring\u{7}\"]}";
        let found = scan(text).raw_control.unwrap();
        assert_eq!(found.character, '\u{7}');
        assert_eq!(found.path, "/science_use_cases/1");
        assert!(found.in_string);
        assert_eq!(found.byte_offset, text.find('\u{7}').unwrap());
        // Escaped control characters are not raw.
        assert_eq!(scan(r#"{"a": ["x\u0007\n"]}"#).raw_control, None);
        // Line breaks between tokens are whitespace, not control characters.
        assert_eq!(scan("{\n\t\"a\": 1\r\n}").raw_control, None);
        assert!(scan("{\"a\":\u{1} 1}").raw_control.is_some());
    }

    #[test]
    fn scan_locates_the_end_of_a_cut_output() {
        let text = r#"{"objects_and_phenomena": ["a", "b"], "science_use_cases": ["c", "d"#;
        let scan = scan(text);
        assert_eq!(scan.end_path, "/science_use_cases/1");
        assert_eq!(scan.end_depth, 2);
        assert!(scan.ends_in_string);
        let complete = super::scan(r#"{"a": [1, 2]}"#);
        assert_eq!((complete.end_depth, complete.ends_in_string), (0, false));
        let empty_array = super::scan(r#"{"a": ["#);
        assert_eq!(empty_array.end_path, "/a");
    }

    #[test]
    fn scan_measures_whitespace_outside_strings_only() {
        let text = format!("{{\"a\":{}[\"{}\"]}}", " ".repeat(30), " ".repeat(50));
        let scan = scan(&text);
        assert_eq!(scan.longest_whitespace_bytes, 30);
        assert_eq!(scan.longest_whitespace_offset, 5);
    }

    fn json_value() -> impl Strategy<Value = Value> {
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::Bool),
            any::<i64>().prop_map(Value::from),
            "\\PC{0,8}".prop_map(Value::String),
            any::<String>().prop_map(Value::String),
        ];
        leaf.prop_recursive(4, 48, 6, |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
                prop::collection::btree_map(any::<String>(), inner, 0..6)
                    .prop_map(|map| Value::Object(map.into_iter().collect())),
            ]
        })
    }

    /// Writes every character of `key` as a `\u` escape.
    fn escape_every_char(key: &str) -> String {
        let mut out = String::from("\"");
        for unit in key.encode_utf16() {
            out.push_str(&format!("\\u{unit:04x}"));
        }
        out.push('"');
        out
    }

    proptest! {
        #[test]
        fn strict_parse_matches_serde_json(value in json_value()) {
            for text in [serde_json::to_string(&value).unwrap(), serde_json::to_string_pretty(&value).unwrap()] {
                prop_assert_eq!(parse_strict(&text).unwrap(), value.clone());
                let scanned = scan(&text);
                prop_assert_eq!(scanned.raw_control, None);
                prop_assert_eq!((scanned.end_depth, scanned.ends_in_string), (0, false));
            }
        }

        #[test]
        fn repeated_key_named(
            map in prop::collection::btree_map(any::<String>(), json_value(), 1..6),
            pick in any::<prop::sample::Index>(),
            escape in any::<bool>(),
        ) {
            let keys: Vec<&String> = map.keys().collect();
            let repeated = keys[pick.index(keys.len())].clone();
            let mut members: Vec<String> = map
                .iter()
                .map(|(k, v)| format!("{}: {}", serde_json::to_string(k).unwrap(), v))
                .collect();
            let again = if escape { escape_every_char(&repeated) } else { serde_json::to_string(&repeated).unwrap() };
            members.push(format!("{again}: null"));
            let text = format!("{{{}}}", members.join(", "));
            let error = parse_strict(&text).unwrap_err();
            prop_assert!(
                matches!(&error, StrictJsonError::DuplicateKey { key, .. } if *key == repeated),
                "{:?} for {}", error, text
            );
        }

        #[test]
        fn cut_objects_rejected_and_located(
            map in prop::collection::btree_map("[a-z]{1,4}", json_value(), 1..4),
            cut in any::<prop::sample::Index>(),
        ) {
            let text = serde_json::to_string(&Value::Object(map.into_iter().collect())).unwrap();
            let boundaries: Vec<usize> = text.char_indices().map(|(i, _)| i).collect();
            let end = boundaries[cut.index(boundaries.len())];
            let prefix = &text[..end];
            prop_assert!(parse_strict(prefix).is_err());
            let scanned = scan(prefix);
            prop_assert!(scanned.end_depth > 0 || end == 0);
        }
    }
}
