//! SentencePiece-style tokenizer built from GGUF `tokenizer.ggml.*` metadata, giving the
//! same ids as llama.cpp's `llm_tokenizer_spm` (vocabulary kind `llama`, used by Gemma).
//!
//! [`Tokenizer::encode_with`] runs llama.cpp's pipeline:
//! 1. split the text on special tokens, longest token text first
//!    (`tokenizer_st_partition`). USER_DEFINED tokens are always split out (for Gemma 3
//!    these are `\n`, runs of spaces and tabs, and HTML tags); CONTROL and UNKNOWN
//!    tokens only when `parse_special` is set;
//! 2. for each plain-text fragment: prepend a space if `add_space_prefix` is set and
//!    the fragment is first or follows a special token, then replace `' '` by `▁`
//!    (U+2581);
//! 3. start from one symbol per UTF-8 character and repeatedly merge the adjacent pair
//!    whose concatenation is a vocabulary token with the highest score (ties: leftmost
//!    pair first), re-queueing the new neighbours after each merge;
//! 4. emit each final symbol's id; a symbol that is not in the vocabulary is
//!    resegmented into the pair it was merged from, and a single character that is not
//!    in the vocabulary becomes its UTF-8 bytes as `<0xXX>` byte tokens.
//!
//! Invariants: `encode` never panics and every id it returns is `< n_vocab`; with byte
//! tokens present, `decode(encode(text, _)) == text` for any text without U+2581 (which,
//! as in llama.cpp, decodes to a space).

use std::cmp::Ordering;
use std::collections::{BinaryHeap, HashMap};

use crate::gguf::{Array, Gguf, Value};

/// A token id, an index into the vocabulary.
pub type TokenId = u32;

/// Error of building a tokenizer or decoding ids.
#[derive(Debug, thiserror::Error)]
pub enum TokenizerError {
    /// A required metadata key is absent.
    #[error(
        "GGUF metadata has no key {key:?}; this file carries no tokenizer, use a GGUF converted by llama.cpp's convert_hf_to_gguf.py"
    )]
    MissingKey {
        /// The metadata key.
        key: &'static str,
    },
    /// A metadata key has an unexpected type.
    #[error("GGUF metadata key {key:?} has type {found}, expected {expected}; the file is corrupt")]
    WrongType {
        /// The metadata key.
        key: &'static str,
        /// The type expected.
        expected: &'static str,
        /// The type found.
        found: &'static str,
    },
    /// The vocabulary kind is not `llama`.
    #[error(
        "tokenizer model {model:?} is not supported; only \"llama\" (SentencePiece, e.g. Gemma, Llama 2) is implemented"
    )]
    UnsupportedModel {
        /// The value of `tokenizer.ggml.model`.
        model: String,
    },
    /// Per-token arrays have different lengths.
    #[error(
        "{key} has {found} entries but tokenizer.ggml.tokens has {n_vocab}; the file is corrupt"
    )]
    LengthMismatch {
        /// The metadata key.
        key: &'static str,
        /// Its number of entries.
        found: usize,
        /// Number of tokens in the vocabulary.
        n_vocab: usize,
    },
    /// A special token id is outside the vocabulary.
    #[error(
        "{key} = {id} is not a token id (vocabulary has {n_vocab} tokens); the file is corrupt"
    )]
    BadSpecialId {
        /// The metadata key.
        key: &'static str,
        /// The id found.
        id: u64,
        /// Number of tokens in the vocabulary.
        n_vocab: usize,
    },
    /// A token type code is not 0..=6.
    #[error("token type {value} of token {id} is unknown (expected 0..=6); the file is corrupt")]
    BadTokenType {
        /// The token id.
        id: usize,
        /// The type code found.
        value: i32,
    },
    /// The vocabulary does not fit `i32` ids, as in llama.cpp.
    #[error("vocabulary has {n_vocab} tokens, more than the 2^31 supported")]
    VocabTooLarge {
        /// Number of tokens in the file.
        n_vocab: usize,
    },
    /// An id passed to decode is outside the vocabulary.
    #[error(
        "token id {id} at position {position} is out of range (vocabulary has {n_vocab} tokens); pass ids produced by this tokenizer"
    )]
    IdOutOfRange {
        /// The bad id.
        id: TokenId,
        /// Its index in the input slice.
        position: usize,
        /// Number of tokens in the vocabulary.
        n_vocab: usize,
    },
}

/// Token type as stored in `tokenizer.ggml.token_type` (llama.cpp's `llama_token_type`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TokenType {
    /// Type 0: decodes to nothing, as in llama.cpp.
    Undefined,
    /// Type 1: a text piece, `▁` standing for a space.
    Normal,
    /// Type 2: the `<unk>` token.
    Unknown,
    /// Type 3: BOS, EOS, turn markers; matched in text only with `parse_special`.
    Control,
    /// Type 4: always split out of the text before merging (Gemma: `\n`, space and tab runs, HTML tags).
    UserDefined,
    /// Type 5: reserved (`<unused0>`, ...); still looked up while merging, decodes to nothing.
    Unused,
    /// Type 6: a `<0xXX>` byte-fallback token.
    Byte,
}

impl TokenType {
    /// Maps the GGUF integer code to a type.
    pub fn from_code(code: i32) -> Option<Self> {
        Some(match code {
            0 => TokenType::Undefined,
            1 => TokenType::Normal,
            2 => TokenType::Unknown,
            3 => TokenType::Control,
            4 => TokenType::UserDefined,
            5 => TokenType::Unused,
            6 => TokenType::Byte,
            _ => return None,
        })
    }
}

/// One vocabulary entry.
#[derive(Debug, Clone, PartialEq)]
pub struct Token {
    /// The token text, with `▁` standing for a space in NORMAL tokens.
    pub text: String,
    /// Merge priority: higher merges first.
    pub score: f32,
    /// The token type.
    pub kind: TokenType,
}

/// Everything needed to build a [`Tokenizer`]; [`Tokenizer::from_gguf`] fills it from
/// metadata, tests build it by hand.
#[derive(Debug, Clone)]
pub struct TokenizerConfig {
    /// The vocabulary; a token's id is its index.
    pub tokens: Vec<Token>,
    /// Beginning-of-sequence token (`tokenizer.ggml.bos_token_id`).
    pub bos: Option<TokenId>,
    /// End-of-sequence token (`tokenizer.ggml.eos_token_id`).
    pub eos: Option<TokenId>,
    /// Unknown token (`tokenizer.ggml.unknown_token_id`), the last resort of byte fallback.
    pub unk: Option<TokenId>,
    /// `tokenizer.ggml.add_space_prefix` (llama.cpp defaults it to true for SPM).
    pub add_space_prefix: bool,
    /// `tokenizer.ggml.add_bos_token` (defaults to true for SPM).
    pub add_bos: bool,
}

/// Options for [`Tokenizer::encode_with`].
#[derive(Debug, Clone, Copy, Default)]
pub struct EncodeOptions {
    /// Prepend the BOS token (if the vocabulary has one).
    pub add_bos: bool,
    /// Match CONTROL and UNKNOWN token texts (e.g. `<start_of_turn>`) in the input.
    pub parse_special: bool,
}

/// A llama.cpp-compatible SentencePiece tokenizer. See the module docs.
#[derive(Debug, Clone)]
pub struct Tokenizer {
    tokens: Vec<Token>,
    token_to_id: HashMap<String, TokenId>,
    byte_ids: [Option<TokenId>; 256],
    /// CONTROL, USER_DEFINED and UNKNOWN ids, longest text first.
    special: Vec<TokenId>,
    bos: Option<TokenId>,
    eos: Option<TokenId>,
    unk: Option<TokenId>,
    add_space_prefix: bool,
    add_bos: bool,
}

const K_TOKENS: &str = "tokenizer.ggml.tokens";
const K_SCORES: &str = "tokenizer.ggml.scores";
const K_TYPES: &str = "tokenizer.ggml.token_type";

impl Tokenizer {
    /// Builds the tokenizer from the `tokenizer.ggml.*` metadata of a GGUF file.
    pub fn from_gguf(gguf: &Gguf) -> Result<Self, TokenizerError> {
        let model = gguf
            .get("tokenizer.ggml.model")
            .ok_or(TokenizerError::MissingKey {
                key: "tokenizer.ggml.model",
            })?;
        let model = model.as_str().ok_or(TokenizerError::WrongType {
            key: "tokenizer.ggml.model",
            expected: "string",
            found: model.type_name(),
        })?;
        if model != "llama" {
            return Err(TokenizerError::UnsupportedModel {
                model: model.to_string(),
            });
        }

        let texts = match array(gguf, K_TOKENS)? {
            Array::String(v) => v,
            other => return Err(wrong_array(K_TOKENS, "array of string", other)),
        };
        let n_vocab = texts.len();
        if n_vocab > i32::MAX as usize {
            return Err(TokenizerError::VocabTooLarge { n_vocab });
        }
        let scores: Vec<f32> = match gguf.get(K_SCORES) {
            None => vec![0.0; n_vocab],
            Some(_) => match array(gguf, K_SCORES)? {
                Array::F32(v) => v.clone(),
                other => return Err(wrong_array(K_SCORES, "array of f32", other)),
            },
        };
        let types: Vec<i32> = match gguf.get(K_TYPES) {
            None => vec![1; n_vocab],
            Some(_) => match array(gguf, K_TYPES)? {
                Array::I32(v) => v.clone(),
                Array::U32(v) => v.iter().map(|&x| x as i32).collect(),
                other => return Err(wrong_array(K_TYPES, "array of i32", other)),
            },
        };
        for (key, found) in [(K_SCORES, scores.len()), (K_TYPES, types.len())] {
            if found != n_vocab {
                return Err(TokenizerError::LengthMismatch {
                    key,
                    found,
                    n_vocab,
                });
            }
        }
        let mut tokens = Vec::with_capacity(n_vocab);
        for (id, ((text, &score), &code)) in texts.iter().zip(&scores).zip(&types).enumerate() {
            let kind = TokenType::from_code(code)
                .ok_or(TokenizerError::BadTokenType { id, value: code })?;
            tokens.push(Token {
                text: text.clone(),
                score,
                kind,
            });
        }

        let special_id = |key: &'static str| -> Result<Option<TokenId>, TokenizerError> {
            match gguf.get(key) {
                None => Ok(None),
                Some(v) => {
                    let id = v.as_u64().ok_or(TokenizerError::WrongType {
                        key,
                        expected: "unsigned integer",
                        found: v.type_name(),
                    })?;
                    if id as usize >= n_vocab {
                        return Err(TokenizerError::BadSpecialId { key, id, n_vocab });
                    }
                    Ok(Some(id as TokenId))
                }
            }
        };
        let flag = |key: &'static str, default: bool| -> Result<bool, TokenizerError> {
            match gguf.get(key) {
                None => Ok(default),
                Some(Value::Bool(b)) => Ok(*b),
                Some(v) => Err(TokenizerError::WrongType {
                    key,
                    expected: "bool",
                    found: v.type_name(),
                }),
            }
        };
        Ok(Self::new(TokenizerConfig {
            tokens,
            bos: special_id("tokenizer.ggml.bos_token_id")?,
            eos: special_id("tokenizer.ggml.eos_token_id")?,
            unk: special_id("tokenizer.ggml.unknown_token_id")?,
            add_space_prefix: flag("tokenizer.ggml.add_space_prefix", true)?,
            add_bos: flag("tokenizer.ggml.add_bos_token", true)?,
        }))
    }

    /// Builds the tokenizer from an explicit vocabulary.
    ///
    /// Ids in `config` (`bos`, `eos`, `unk`) must be `< config.tokens.len()`; ids that
    /// are not are ignored.
    pub fn new(config: TokenizerConfig) -> Self {
        let n = config.tokens.len();
        let valid = |id: Option<TokenId>| id.filter(|&i| (i as usize) < n);
        let mut token_to_id = HashMap::with_capacity(n);
        for (id, t) in config.tokens.iter().enumerate() {
            // llama.cpp keeps the last id for a duplicated text.
            token_to_id.insert(t.text.clone(), id as TokenId);
        }
        let mut byte_ids = [None; 256];
        for (b, slot) in byte_ids.iter_mut().enumerate() {
            *slot = token_to_id.get(&format!("<0x{b:02X}>")).copied();
        }
        let mut special: Vec<TokenId> = (0..n as TokenId)
            .filter(|&id| {
                matches!(
                    config.tokens[id as usize].kind,
                    TokenType::Control | TokenType::UserDefined | TokenType::Unknown
                ) && !config.tokens[id as usize].text.is_empty()
            })
            .collect();
        special.sort_by(|&a, &b| {
            let (ta, tb) = (
                &config.tokens[a as usize].text,
                &config.tokens[b as usize].text,
            );
            tb.len().cmp(&ta.len()).then(a.cmp(&b))
        });
        Tokenizer {
            tokens: config.tokens,
            token_to_id,
            byte_ids,
            special,
            bos: valid(config.bos),
            eos: valid(config.eos),
            unk: valid(config.unk),
            add_space_prefix: config.add_space_prefix,
            add_bos: config.add_bos,
        }
    }

    /// Number of tokens in the vocabulary.
    pub fn n_vocab(&self) -> usize {
        self.tokens.len()
    }

    /// Returns the vocabulary entry for `id`.
    pub fn token(&self, id: TokenId) -> Option<&Token> {
        self.tokens.get(id as usize)
    }

    /// Returns the id of the token whose text is exactly `text`.
    pub fn token_id(&self, text: &str) -> Option<TokenId> {
        self.token_to_id.get(text).copied()
    }

    /// Beginning-of-sequence token.
    pub fn bos(&self) -> Option<TokenId> {
        self.bos
    }

    /// End-of-sequence token.
    pub fn eos(&self) -> Option<TokenId> {
        self.eos
    }

    /// Unknown token.
    pub fn unk(&self) -> Option<TokenId> {
        self.unk
    }

    /// Returns true when plain-text fragments get a leading space (`tokenizer.ggml.add_space_prefix`).
    pub fn adds_space_prefix(&self) -> bool {
        self.add_space_prefix
    }

    /// Whether the model requests BOS (`tokenizer.ggml.add_bos_token`).
    pub fn wants_bos(&self) -> bool {
        self.add_bos
    }

    /// Encodes plain text (special token texts such as `<start_of_turn>` are treated as
    /// text), optionally with BOS first.
    pub fn encode(&self, text: &str, add_bos: bool) -> Vec<TokenId> {
        self.encode_with(
            text,
            EncodeOptions {
                add_bos,
                parse_special: false,
            },
        )
    }

    /// Encodes `text` as llama.cpp's `llama_tokenize(text, add_special, parse_special)`
    /// does for SPM vocabularies (EOS is never appended).
    pub fn encode_with(&self, text: &str, options: EncodeOptions) -> Vec<TokenId> {
        let mut out = Vec::with_capacity(text.len() / 3 + 2);
        if options.add_bos
            && let Some(bos) = self.bos
        {
            out.push(bos);
        }
        if text.is_empty() {
            return out;
        }
        let mut prev_special = true;
        let mut buf = String::new();
        for fragment in self.partition(text, options.parse_special) {
            match fragment {
                Fragment::Token(id) => {
                    out.push(id);
                    prev_special = true;
                }
                Fragment::Text(raw) => {
                    buf.clear();
                    if self.add_space_prefix && prev_special {
                        buf.push('▁');
                    }
                    for c in raw.chars() {
                        buf.push(if c == ' ' { '▁' } else { c });
                    }
                    self.encode_spm(&buf, &mut out);
                    prev_special = false;
                }
            }
        }
        out
    }

    /// Decodes ids to text as llama.cpp's `token_to_piece` with `special = false`:
    /// CONTROL (BOS, `<start_of_turn>`, ...), UNUSED and UNDEFINED tokens produce
    /// nothing, byte tokens their byte, NORMAL tokens their text with `▁` as a space,
    /// USER_DEFINED tokens their text, UNKNOWN tokens `▅`. Byte
    /// sequences that are not valid UTF-8 are replaced by U+FFFD.
    pub fn decode(&self, ids: &[TokenId]) -> Result<String, TokenizerError> {
        self.decode_with(ids, false)
    }

    /// Like [`Tokenizer::decode`]; with `render_special` CONTROL tokens produce their
    /// text (`<bos>`, `<start_of_turn>`), as llama.cpp's `token_to_piece(special = true)`
    /// and llama-server's `/detokenize` do.
    pub fn decode_with(
        &self,
        ids: &[TokenId],
        render_special: bool,
    ) -> Result<String, TokenizerError> {
        let mut bytes = Vec::with_capacity(ids.len() * 4);
        for (position, &id) in ids.iter().enumerate() {
            let token = self
                .tokens
                .get(id as usize)
                .ok_or(TokenizerError::IdOutOfRange {
                    id,
                    position,
                    n_vocab: self.tokens.len(),
                })?;
            match token.kind {
                TokenType::Normal => bytes.extend(token.text.replace('▁', " ").as_bytes()),
                TokenType::Undefined | TokenType::Unused => {}
                TokenType::Unknown => bytes.extend("\u{2585}".as_bytes()),
                TokenType::Control => {
                    if render_special {
                        bytes.extend(token.text.as_bytes());
                    }
                }
                TokenType::UserDefined => bytes.extend(token.text.as_bytes()),
                TokenType::Byte => match parse_byte_token(&token.text) {
                    Some(b) => bytes.push(b),
                    None => bytes.extend(token.text.as_bytes()),
                },
            }
        }
        Ok(match String::from_utf8(bytes) {
            Ok(s) => s,
            Err(e) => String::from_utf8_lossy(e.as_bytes()).into_owned(),
        })
    }

    /// Splits `text` on special token texts (llama.cpp `tokenizer_st_partition`).
    fn partition<'a>(&self, text: &'a str, parse_special: bool) -> Vec<Fragment<'a>> {
        let mut fragments = vec![Fragment::Text(text)];
        for &id in &self.special {
            let token = &self.tokens[id as usize];
            if !parse_special && matches!(token.kind, TokenType::Control | TokenType::Unknown) {
                continue;
            }
            let needle = token.text.as_str();
            if !fragments
                .iter()
                .any(|f| matches!(f, Fragment::Text(t) if t.contains(needle)))
            {
                continue;
            }
            let mut next = Vec::with_capacity(fragments.len() + 2);
            for fragment in fragments {
                let Fragment::Text(mut rest) = fragment else {
                    next.push(fragment);
                    continue;
                };
                while let Some(pos) = rest.find(needle) {
                    if pos > 0 {
                        next.push(Fragment::Text(&rest[..pos]));
                    }
                    next.push(Fragment::Token(id));
                    rest = &rest[pos + needle.len()..];
                }
                if !rest.is_empty() {
                    next.push(Fragment::Text(rest));
                }
            }
            fragments = next;
        }
        fragments
    }

    /// llama.cpp `llm_tokenizer_spm_session::tokenize` on whitespace-escaped text.
    fn encode_spm(&self, text: &str, out: &mut Vec<TokenId>) {
        let mut symbols: Vec<Symbol> = Vec::with_capacity(text.len());
        for (i, (start, c)) in text.char_indices().enumerate() {
            symbols.push(Symbol {
                prev: i.checked_sub(1),
                next: None,
                start,
                len: c.len_utf8(),
            });
            if i > 0 {
                symbols[i - 1].next = Some(i);
            }
        }
        if symbols.is_empty() {
            return;
        }

        let mut queue = BinaryHeap::new();
        let mut rev_merge: HashMap<&str, (usize, usize)> = HashMap::new();
        for i in 1..symbols.len() {
            self.try_add_bigram(
                text,
                &symbols,
                Some(i - 1),
                Some(i),
                &mut queue,
                &mut rev_merge,
            );
        }
        while let Some(bigram) = queue.pop() {
            let (l, r) = (bigram.left, bigram.right);
            if symbols[l].len == 0
                || symbols[r].len == 0
                || symbols[l].len + symbols[r].len != bigram.len
            {
                continue; // outdated: one side was merged into something else
            }
            symbols[l].len += symbols[r].len;
            symbols[r].len = 0;
            symbols[l].next = symbols[r].next;
            if let Some(n) = symbols[r].next {
                symbols[n].prev = Some(l);
            }
            let (prev, next) = (symbols[l].prev, symbols[l].next);
            self.try_add_bigram(text, &symbols, prev, Some(l), &mut queue, &mut rev_merge);
            self.try_add_bigram(text, &symbols, Some(l), next, &mut queue, &mut rev_merge);
        }

        let mut cursor = Some(0);
        while let Some(i) = cursor {
            let s = &symbols[i];
            self.resegment(text, &symbols, s.start, s.len, &rev_merge, out);
            cursor = s.next;
        }
    }

    fn try_add_bigram<'t>(
        &self,
        text: &'t str,
        symbols: &[Symbol],
        left: Option<usize>,
        right: Option<usize>,
        queue: &mut BinaryHeap<Bigram>,
        rev_merge: &mut HashMap<&'t str, (usize, usize)>,
    ) {
        let (Some(left), Some(right)) = (left, right) else {
            return;
        };
        let start = symbols[left].start;
        let len = symbols[left].len + symbols[right].len;
        let piece = &text[start..start + len];
        let Some(&id) = self.token_to_id.get(piece) else {
            return;
        };
        queue.push(Bigram {
            left,
            right,
            score: self.tokens[id as usize].score,
            len,
        });
        rev_merge.insert(piece, (left, right));
    }

    fn resegment(
        &self,
        text: &str,
        symbols: &[Symbol],
        start: usize,
        len: usize,
        rev_merge: &HashMap<&str, (usize, usize)>,
        out: &mut Vec<TokenId>,
    ) {
        let piece = &text[start..start + len];
        if let Some(&id) = self.token_to_id.get(piece) {
            out.push(id);
            return;
        }
        match rev_merge.get(piece) {
            Some(&(l, r)) => {
                self.resegment(
                    text,
                    symbols,
                    symbols[l].start,
                    symbols[l].len,
                    rev_merge,
                    out,
                );
                self.resegment(
                    text,
                    symbols,
                    symbols[r].start,
                    symbols[r].len,
                    rev_merge,
                    out,
                );
            }
            None => {
                for &b in piece.as_bytes() {
                    out.extend(self.byte_to_token(b));
                }
            }
        }
    }

    /// llama.cpp `byte_to_token` for SPM: the `<0xXX>` token, else the token whose
    /// text is the single byte, else UNK. Yields nothing if none exists.
    fn byte_to_token(&self, b: u8) -> Option<TokenId> {
        self.byte_ids[b as usize]
            .or_else(|| {
                std::str::from_utf8(&[b])
                    .ok()
                    .and_then(|s| self.token_to_id.get(s).copied())
            })
            .or(self.unk)
    }
}

fn array<'g>(gguf: &'g Gguf, key: &'static str) -> Result<&'g Array, TokenizerError> {
    let value = gguf.get(key).ok_or(TokenizerError::MissingKey { key })?;
    value.as_array().ok_or(TokenizerError::WrongType {
        key,
        expected: "array",
        found: value.type_name(),
    })
}

fn wrong_array(key: &'static str, expected: &'static str, found: &Array) -> TokenizerError {
    TokenizerError::WrongType {
        key,
        expected,
        found: match found {
            Array::String(_) => "array of string",
            Array::F32(_) => "array of f32",
            Array::I32(_) => "array of i32",
            _ => "array of another type",
        },
    }
}

fn parse_byte_token(text: &str) -> Option<u8> {
    let hex = text.strip_prefix("<0x")?.strip_suffix('>')?;
    if hex.len() != 2 {
        return None;
    }
    u8::from_str_radix(hex, 16).ok()
}

enum Fragment<'a> {
    Text(&'a str),
    Token(TokenId),
}

/// A run of the escaped text; `len == 0` once merged into its left neighbour.
struct Symbol {
    prev: Option<usize>,
    next: Option<usize>,
    start: usize,
    len: usize,
}

struct Bigram {
    left: usize,
    right: usize,
    score: f32,
    len: usize,
}

impl Ord for Bigram {
    /// Highest score first; on equal scores the leftmost pair first.
    fn cmp(&self, other: &Self) -> Ordering {
        self.score
            .total_cmp(&other.score)
            .then_with(|| other.left.cmp(&self.left))
    }
}

impl PartialOrd for Bigram {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl PartialEq for Bigram {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other) == Ordering::Equal
    }
}

impl Eq for Bigram {}

#[cfg(test)]
mod tests {
    use super::*;

    fn tok(text: &str, score: f32, kind: TokenType) -> Token {
        Token {
            text: text.to_string(),
            score,
            kind,
        }
    }

    /// Builds a tiny vocabulary: control tokens, a user-defined `\n`, all 256 byte tokens and a
    /// few scored pieces.
    fn tiny(add_space_prefix: bool) -> Tokenizer {
        let mut tokens = vec![
            tok("<pad>", 0.0, TokenType::Control),
            tok("<eos>", 0.0, TokenType::Control),
            tok("<bos>", 0.0, TokenType::Control),
            tok("<unk>", 0.0, TokenType::Unknown),
            tok("<start_of_turn>", 0.0, TokenType::Control),
            tok("\n", 0.0, TokenType::UserDefined),
        ];
        for b in 0..=255u8 {
            tokens.push(tok(&format!("<0x{b:02X}>"), 0.0, TokenType::Byte));
        }
        for (text, score) in [
            ("▁", -1.0),
            ("h", -5.0),
            ("e", -5.0),
            ("l", -5.0),
            ("o", -5.0),
            ("w", -5.0),
            ("r", -5.0),
            ("d", -5.0),
            ("a", -5.0),
            ("b", -5.0),
            ("c", -5.0),
            ("he", -2.0),
            ("ll", -2.5),
            ("llo", -1.5),
            ("hello", -0.5),
            ("▁w", -3.0),
            ("or", -3.0),
            ("▁wor", -2.0),
            ("ld", -3.0),
            ("▁world", -0.1),
            ("ab", -1.0),
            ("bc", -1.0),
            ("é", -4.0),
        ] {
            tokens.push(tok(text, score, TokenType::Normal));
        }
        Tokenizer::new(TokenizerConfig {
            tokens,
            bos: Some(2),
            eos: Some(1),
            unk: Some(3),
            add_space_prefix,
            add_bos: true,
        })
    }

    fn texts(t: &Tokenizer, ids: &[TokenId]) -> Vec<String> {
        ids.iter()
            .map(|&id| t.token(id).unwrap().text.clone())
            .collect()
    }

    #[test]
    fn merges_by_score() {
        let t = tiny(false);
        assert_eq!(
            texts(&t, &t.encode("hello world", false)),
            ["hello", "▁world"]
        );
        let ids = t.encode("hello world", true);
        assert_eq!(ids[0], 2);
        assert_eq!(ids.len(), 3);
    }

    #[test]
    fn equal_scores_merge_leftmost_first() {
        let t = tiny(false);
        // "ab" and "bc" both score -1.0; the left pair wins.
        assert_eq!(texts(&t, &t.encode("abc", false)), ["ab", "c"]);
    }

    #[test]
    fn space_prefix_at_start_and_after_special() {
        let t = tiny(true);
        assert_eq!(texts(&t, &t.encode("world", false)), ["▁world"]);
        // "\n" is USER_DEFINED: split out, and the following fragment gets a prefix.
        assert_eq!(
            texts(&t, &t.encode("world\nworld", false)),
            ["▁world", "\n", "▁world"]
        );
    }

    #[test]
    fn unknown_characters_fall_back_to_bytes() {
        let t = tiny(false);
        assert_eq!(
            texts(&t, &t.encode("hé€", false)),
            ["h", "é", "<0xE2>", "<0x82>", "<0xAC>"]
        );
    }

    #[test]
    fn control_tokens_only_with_parse_special() {
        let t = tiny(false);
        let plain = t.encode("<start_of_turn>", false);
        assert!(!plain.contains(&4));
        assert_eq!(t.decode(&plain).unwrap(), "<start_of_turn>");
        let parsed = t.encode_with(
            "<start_of_turn>hello",
            EncodeOptions {
                add_bos: false,
                parse_special: true,
            },
        );
        assert_eq!(texts(&t, &parsed), ["<start_of_turn>", "hello"]);
    }

    #[test]
    fn decode_round_trips_and_drops_control() {
        let t = tiny(false);
        for text in ["hello world", " a  b\n\nc ", "日本語 🚀", "", "\t"] {
            let ids = t.encode(text, true);
            assert_eq!(t.decode(&ids).unwrap(), text);
        }
        let ids = t.encode_with(
            "<start_of_turn>a",
            EncodeOptions {
                add_bos: true,
                parse_special: true,
            },
        );
        assert_eq!(t.decode(&ids).unwrap(), "a");
        assert_eq!(t.decode_with(&ids, true).unwrap(), "<bos><start_of_turn>a");
        let err = t.decode(&[1, 99_999]).unwrap_err();
        let message = err.to_string();
        assert!(message.contains("99999"), "{message}");
        assert!(message.contains("position 1"), "{message}");
    }

    #[test]
    fn empty_text_gives_only_bos() {
        let t = tiny(true);
        assert_eq!(t.encode("", true), [2]);
        assert!(t.encode("", false).is_empty());
    }
}
