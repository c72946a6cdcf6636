//! The CLIP byte-pair tokenizer, a port of open_clip's `SimpleTokenizer`.
//!
//! [`ClipTokenizer`] turns a caption into the token ids CLIP's text tower
//! reads. For the merges file both OpenAI CLIP and open_clip ship,
//! `bpe_simple_vocab_16e6.txt.gz`, it returns the same ids as
//! `open_clip.tokenize` (open_clip 2.26 and later). The exceptions are
//! marked with `TODO:` or `NOTE:` in this module and its `clean` submodule.
//! Encoding runs these steps:
//!
//! 1. Clean the text ([`clean_text`]): part of ftfy's `fix_text`,
//!    `html.unescape` twice, whitespace runs to one space, lower case.
//! 2. Split it with open_clip's pattern, case-insensitive like open_clip's:
//!    the two special token strings, the contractions `'s`, `'t`, `'re`,
//!    `'ve`, `'m`, `'ll`, `'d`, runs of letters, single digits, and runs of
//!    other non-space characters.
//! 3. Map each piece's UTF-8 bytes to GPT-2's byte-level characters and merge
//!    adjacent symbols in merge-rank order, marking the last symbol with
//!    `</w>`.
//!
//! Vocabulary layout, for a merges file with `n` merges after its header:
//! ids 0 to 255 are the 256 byte-level characters, 256 to 511 the same with
//! `</w>`, 512 to 511 + `n` the merged symbols in file order, then
//! `<start_of_text>` and `<end_of_text>`. CLIP reads only the first
//! [`MAX_MERGES`] merges of the real file, so its vocabulary has 49408 ids
//! and the special tokens are 49406 and 49407. A shorter merges file gives a
//! smaller vocabulary with the special tokens right after its merges.
//!
//! The special tokens are spelled as open_clip spells them. OpenAI CLIP
//! spells them `<|startoftext|>` and `<|endoftext|>` with the same ids, so
//! only text that contains one of these spellings tokenizes differently.

mod clean;
mod html;
mod html_entities;

use std::collections::HashMap;
use std::fmt;
use std::io::{self, Read};
use std::path::{Path, PathBuf};
use std::sync::{LazyLock, Mutex, PoisonError};

use flate2::read::GzDecoder;
use regex::Regex;

pub use clean::clean_text;

/// Id of `<start_of_text>` in CLIP's vocabulary.
pub const START_OF_TEXT_ID: u32 = 49406;
/// Id of `<end_of_text>` in CLIP's vocabulary.
pub const END_OF_TEXT_ID: u32 = 49407;
/// Number of ids in CLIP's vocabulary: bytes, bytes with `</w>`, merges and the two special tokens.
pub const VOCAB_SIZE: usize = 49408;
/// Number of merges CLIP reads from its merges file (`49152 - 256 - 2`). Later lines are ignored.
pub const MAX_MERGES: usize = 48894;
/// Context length of OpenAI's CLIP models, and open_clip's default.
pub const DEFAULT_CONTEXT_LENGTH: usize = 77;
/// Text of the start-of-text special token, as open_clip spells it.
pub const START_OF_TEXT: &str = "<start_of_text>";
/// Text of the end-of-text special token, as open_clip spells it.
pub const END_OF_TEXT: &str = "<end_of_text>";

/// Suffix that marks a symbol as the end of a word.
const END_OF_WORD: &str = "</w>";
/// Number of distinct pieces whose ids [`ClipTokenizer`] caches before it empties the cache.
const CACHE_CAPACITY: usize = 100_000;

/// open_clip's pre-tokenization pattern, compiled case-insensitive as open_clip compiles it.
static PRE_TOKENIZER: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r"(?i)<start_of_text>|<end_of_text>|'s|'t|'re|'ve|'m|'ll|'d|[\p{L}]+|[\p{N}]|[^\s\p{L}\p{N}]+")
        .expect("the pre-tokenization pattern is a valid constant")
});

/// Errors from loading a merges file or from encoding and decoding.
#[derive(Debug, thiserror::Error)]
pub enum TokenizerError {
    /// The merges file does not exist.
    #[error(
        "CLIP merges file not found at {}; download bpe_simple_vocab_16e6.txt.gz from \
         open_clip (src/open_clip/bpe_simple_vocab_16e6.txt.gz in \
         github.com/mlfoundations/open_clip) and pass its path",
        path.display()
    )]
    MergesFileNotFound {
        /// The path given.
        path: PathBuf,
    },

    /// The merges file exists but could not be read or decompressed.
    #[error(
        "failed to read CLIP merges file {}: {source}; expected the gzip-compressed UTF-8 \
         text bpe_simple_vocab_16e6.txt.gz as open_clip ships it",
        path.display()
    )]
    ReadMergesFile {
        /// The path given.
        path: PathBuf,
        /// The error from opening, decompressing or decoding the file.
        source: io::Error,
    },

    /// A merges stream could not be decompressed or is not UTF-8.
    #[error(
        "failed to decompress CLIP merges: {source}; expected the gzip-compressed UTF-8 \
         text bpe_simple_vocab_16e6.txt.gz as open_clip ships it"
    )]
    Decompress {
        /// The error from decompressing or decoding the stream.
        source: io::Error,
    },

    /// The merges file has nothing after its header line.
    #[error(
        "the CLIP merges file contains no merges after its header line; expected \
         bpe_simple_vocab_16e6.txt.gz as open_clip ships it"
    )]
    NoMerges,

    /// A merges line is not two symbols separated by whitespace.
    #[error(
        "invalid merge on line {line} of the CLIP merges file: {text:?}; each line after \
         the header must be two symbols separated by a space, such as \"i n\""
    )]
    InvalidMerge {
        /// The 1-based line number in the decompressed file.
        line: usize,
        /// The text of that line.
        text: String,
    },

    /// A token id outside the vocabulary was given to [`ClipTokenizer::decode`].
    #[error("token id {id} is out of range: the vocabulary has ids 0 to {}", vocab_size - 1)]
    UnknownTokenId {
        /// The id given.
        id: u32,
        /// Number of ids in the vocabulary.
        vocab_size: usize,
    },

    /// A context length of zero was given to [`ClipTokenizer::encode_padded`].
    #[error(
        "context length 0 leaves no room for the end-of-text token; use at least 1 \
         (CLIP models read {DEFAULT_CONTEXT_LENGTH})"
    )]
    ZeroContextLength,
}

/// A merge of two adjacent symbols.
#[derive(Clone, Copy, Debug)]
struct Merge {
    /// Position of the merge in the merges file. Lower ranks merge first.
    rank: u32,
    /// Id of the merged symbol.
    merged_id: u32,
}

/// CLIP's byte-pair tokenizer, built from a merges file.
///
/// Encoding caches the ids of each distinct piece of text, like open_clip.
/// Unlike open_clip's cache, which grows without limit, this one is emptied
/// once it contains 100,000 pieces. The cache sits behind a mutex, so one
/// tokenizer can be shared between threads.
pub struct ClipTokenizer {
    /// Token text by id: byte-level characters, `</w>` suffixes and special tokens.
    vocab: Vec<String>,
    /// Id of each byte's byte-level character.
    byte_ids: [u32; 256],
    /// Id of each byte's byte-level character followed by `</w>`.
    byte_end_ids: [u32; 256],
    /// Byte that each byte-level character stands for, for decoding.
    byte_decoder: HashMap<char, u8>,
    /// Merges by the ids of their left and right symbols.
    merges: HashMap<(u32, u32), Merge>,
    start_of_text_id: u32,
    end_of_text_id: u32,
    cache: Mutex<HashMap<String, Vec<u32>>>,
}

impl fmt::Debug for ClipTokenizer {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter
            .debug_struct("ClipTokenizer")
            .field("vocab_size", &self.vocab.len())
            .field("merges", &self.merges.len())
            .finish_non_exhaustive()
    }
}

impl ClipTokenizer {
    /// Loads a tokenizer from a gzip-compressed merges file such as `bpe_simple_vocab_16e6.txt.gz`.
    pub fn from_bpe_gz(path: impl AsRef<Path>) -> Result<Self, TokenizerError> {
        let path = path.as_ref();
        let file = std::fs::File::open(path).map_err(|source| match source.kind() {
            io::ErrorKind::NotFound => TokenizerError::MergesFileNotFound {
                path: path.to_path_buf(),
            },
            _ => TokenizerError::ReadMergesFile {
                path: path.to_path_buf(),
                source,
            },
        })?;
        let text = decompress(file).map_err(|source| TokenizerError::ReadMergesFile {
            path: path.to_path_buf(),
            source,
        })?;
        Self::from_merges_text(&text)
    }

    /// Builds a tokenizer from a gzip-compressed merges stream.
    pub fn from_bpe_reader(reader: impl Read) -> Result<Self, TokenizerError> {
        let text = decompress(reader).map_err(|source| TokenizerError::Decompress { source })?;
        Self::from_merges_text(&text)
    }

    /// Builds a tokenizer from the decompressed text of a merges file.
    ///
    /// The first line is a header and is skipped. Each following line, up to
    /// [`MAX_MERGES`] of them, is one merge: two symbols separated by
    /// whitespace. Later lines are ignored, as open_clip ignores them.
    pub fn from_merges_text(text: &str) -> Result<Self, TokenizerError> {
        let merges = parse_merges(text)?;
        Ok(Self::from_merges(&merges))
    }

    fn from_merges(merges: &[(&str, &str)]) -> Self {
        let byte_characters = byte_level_characters();
        let vocab = build_vocab(&byte_characters, merges);
        // Later entries win on duplicate text, as in open_clip's `dict(zip(vocab, ...))`.
        let encoder: HashMap<&str, u32> = vocab
            .iter()
            .enumerate()
            .map(|(id, text)| (text.as_str(), vocab_id(id)))
            .collect();

        let mut byte_ids = [0; 256];
        let mut byte_end_ids = [0; 256];
        let mut byte_decoder = HashMap::with_capacity(256);
        for &(byte, character) in &byte_characters {
            let text = character.to_string();
            byte_ids[usize::from(byte)] = encoder[text.as_str()];
            byte_end_ids[usize::from(byte)] = encoder[format!("{text}{END_OF_WORD}").as_str()];
            byte_decoder.insert(character, byte);
        }

        let special_base = vocab_id(vocab.len() - 2);
        Self {
            merges: build_merge_table(merges, &encoder),
            vocab,
            byte_ids,
            byte_end_ids,
            byte_decoder,
            start_of_text_id: special_base,
            end_of_text_id: special_base + 1,
            cache: Mutex::new(HashMap::new()),
        }
    }

    /// Returns the number of ids in the vocabulary (49408 for CLIP's merges file).
    pub fn vocab_size(&self) -> usize {
        self.vocab.len()
    }

    /// Returns the id of `<start_of_text>` (49406 for CLIP's merges file).
    pub fn start_of_text_id(&self) -> u32 {
        self.start_of_text_id
    }

    /// Returns the id of `<end_of_text>` (49407 for CLIP's merges file).
    pub fn end_of_text_id(&self) -> u32 {
        self.end_of_text_id
    }

    /// Encodes text to token ids, without the start-of-text and end-of-text tokens.
    ///
    /// Matches open_clip's `SimpleTokenizer.encode`. The text `<start_of_text>`
    /// or `<end_of_text>` inside a caption encodes to the special token's id,
    /// as it does in open_clip.
    pub fn encode(&self, text: &str) -> Vec<u32> {
        let cleaned = clean_text(text);
        // NOTE: with IGNORECASE, Python's `regex` module matches U+0345 (combining
        // ypogegrammeni) with neither the letter class nor the other class, so
        // open_clip drops it, while Rust's case folding adds it to `\p{L}`. A space
        // drops it here too, and splits the pieces around it the same way.
        let cleaned = cleaned.replace('\u{345}', " ");
        let mut ids = Vec::new();
        for piece in PRE_TOKENIZER.find_iter(&cleaned) {
            self.encode_piece(piece.as_str(), &mut ids);
        }
        ids
    }

    /// Encodes text to exactly `context_length` ids, as `open_clip.tokenize`.
    ///
    /// The ids are `<start_of_text>`, the text's ids and `<end_of_text>`,
    /// followed by zeros up to `context_length`. A longer sequence is cut to
    /// `context_length` ids and its last id replaced by `<end_of_text>`.
    pub fn encode_padded(
        &self,
        text: &str,
        context_length: usize,
    ) -> Result<Vec<u32>, TokenizerError> {
        if context_length == 0 {
            return Err(TokenizerError::ZeroContextLength);
        }
        let mut ids = Vec::with_capacity(context_length.max(2));
        ids.push(self.start_of_text_id);
        ids.extend(self.encode(text));
        ids.push(self.end_of_text_id);
        if ids.len() > context_length {
            ids.truncate(context_length);
            if let Some(last) = ids.last_mut() {
                *last = self.end_of_text_id;
            }
        }
        ids.resize(context_length, 0);
        Ok(ids)
    }

    /// Decodes ids back to text, for debugging, as open_clip's `SimpleTokenizer.decode`.
    ///
    /// Each `</w>` becomes a space, so words come back separated by spaces
    /// (`"it's"` decodes as `"it 's "`), and bytes that are not valid UTF-8
    /// become U+FFFD. Padding zeros decode as `!`, the text of id 0.
    pub fn decode(&self, ids: &[u32]) -> Result<String, TokenizerError> {
        let mut bytes = Vec::new();
        for &id in ids {
            let token = usize::try_from(id)
                .ok()
                .and_then(|index| self.vocab.get(index))
                .ok_or(TokenizerError::UnknownTokenId {
                    id,
                    vocab_size: self.vocab.len(),
                })?;
            for character in token.chars() {
                self.push_decoded_byte(character, &mut bytes);
            }
        }
        Ok(String::from_utf8_lossy(&bytes).replace(END_OF_WORD, " "))
    }

    fn push_decoded_byte(&self, character: char, bytes: &mut Vec<u8>) {
        match self.byte_decoder.get(&character) {
            Some(&byte) => bytes.push(byte),
            // Only merges files with symbols outside the byte-level alphabet reach
            // this, where open_clip raises KeyError; keep the character as it is.
            None => bytes.extend_from_slice(character.encode_utf8(&mut [0; 4]).as_bytes()),
        }
    }

    fn encode_piece(&self, piece: &str, ids: &mut Vec<u32>) {
        if piece == START_OF_TEXT {
            ids.push(self.start_of_text_id);
            return;
        }
        if piece == END_OF_TEXT {
            ids.push(self.end_of_text_id);
            return;
        }
        if let Some(cached) = self.lock_cache().get(piece) {
            ids.extend_from_slice(cached);
            return;
        }
        let piece_ids = self.byte_pair_encode(piece.as_bytes());
        ids.extend_from_slice(&piece_ids);
        let mut cache = self.lock_cache();
        if cache.len() >= CACHE_CAPACITY {
            cache.clear();
        }
        cache.insert(piece.to_owned(), piece_ids);
    }

    fn lock_cache(&self) -> std::sync::MutexGuard<'_, HashMap<String, Vec<u32>>> {
        // The cache holds only finished entries, so a panic elsewhere cannot leave it inconsistent.
        self.cache.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Merges the byte-level symbols of one piece, as open_clip's `SimpleTokenizer.bpe`.
    ///
    /// Repeatedly picks the adjacent pair with the lowest merge rank and merges
    /// every occurrence of it from left to right, until no pair has a merge.
    fn byte_pair_encode(&self, bytes: &[u8]) -> Vec<u32> {
        let Some((&last, init)) = bytes.split_last() else {
            return Vec::new();
        };
        let mut word: Vec<u32> = init
            .iter()
            .map(|&byte| self.byte_ids[usize::from(byte)])
            .collect();
        word.push(self.byte_end_ids[usize::from(last)]);

        while word.len() > 1 {
            let Some((left, right, merge)) = self.lowest_rank_pair(&word) else {
                break;
            };
            word = merge_pair(&word, left, right, merge.merged_id);
        }
        word
    }

    fn lowest_rank_pair(&self, word: &[u32]) -> Option<(u32, u32, Merge)> {
        word.windows(2)
            .filter_map(|pair| {
                let merge = self.merges.get(&(pair[0], pair[1]))?;
                Some((pair[0], pair[1], *merge))
            })
            .min_by_key(|(_, _, merge)| merge.rank)
    }
}

/// Replaces every non-overlapping `left right` pair, from left to right, by `merged`.
fn merge_pair(word: &[u32], left: u32, right: u32, merged: u32) -> Vec<u32> {
    let mut merged_word = Vec::with_capacity(word.len());
    let mut index = 0;
    while index < word.len() {
        if word[index] == left && word.get(index + 1) == Some(&right) {
            merged_word.push(merged);
            index += 2;
        } else {
            merged_word.push(word[index]);
            index += 1;
        }
    }
    merged_word
}

fn decompress(reader: impl Read) -> io::Result<String> {
    let mut text = String::new();
    GzDecoder::new(reader).read_to_string(&mut text)?;
    Ok(text)
}

/// Splits the merge lines of a merges file into symbol pairs.
///
/// Keeps lines 2 to [`MAX_MERGES`] + 1, as open_clip's `split('\n')[1:48895]`.
fn parse_merges(text: &str) -> Result<Vec<(&str, &str)>, TokenizerError> {
    let mut lines: Vec<&str> = text.split('\n').skip(1).take(MAX_MERGES).collect();
    // NOTE: open_clip turns the empty string after a final newline into an empty
    // vocabulary entry when the file has fewer merges than the cut; that entry
    // can never be produced, so it is dropped here, and the special ids move down by one.
    if lines.last() == Some(&"") {
        lines.pop();
    }
    if lines.is_empty() {
        return Err(TokenizerError::NoMerges);
    }
    lines
        .iter()
        .enumerate()
        .map(|(index, line)| parse_merge(index + 2, line))
        .collect()
}

fn parse_merge(line_number: usize, line: &str) -> Result<(&str, &str), TokenizerError> {
    let mut symbols = line
        .split(clean::is_python_whitespace)
        .filter(|symbol| !symbol.is_empty());
    match (symbols.next(), symbols.next(), symbols.next()) {
        (Some(left), Some(right), None) => Ok((left, right)),
        _ => Err(TokenizerError::InvalidMerge {
            line: line_number,
            text: line.to_owned(),
        }),
    }
}

/// Lists the vocabulary in id order: byte-level characters, the same with
/// `</w>`, merged symbols, then the two special tokens.
fn build_vocab(byte_characters: &[(u8, char)], merges: &[(&str, &str)]) -> Vec<String> {
    let mut vocab = Vec::with_capacity(2 * byte_characters.len() + merges.len() + 2);
    vocab.extend(
        byte_characters
            .iter()
            .map(|(_, character)| character.to_string()),
    );
    vocab.extend(
        byte_characters
            .iter()
            .map(|(_, character)| format!("{character}{END_OF_WORD}")),
    );
    vocab.extend(merges.iter().map(|(left, right)| format!("{left}{right}")));
    vocab.push(START_OF_TEXT.to_owned());
    vocab.push(END_OF_TEXT.to_owned());
    vocab
}

/// Indexes the merges by the ids of their symbols, as open_clip's `bpe_ranks`.
///
/// A later duplicate of a pair overrides the earlier one, as in open_clip's dict.
fn build_merge_table(
    merges: &[(&str, &str)],
    encoder: &HashMap<&str, u32>,
) -> HashMap<(u32, u32), Merge> {
    let mut table = HashMap::with_capacity(merges.len());
    for (rank, &(left, right)) in merges.iter().enumerate() {
        // Every symbol in a word is vocabulary text, so a merge of text outside
        // the vocabulary can never apply.
        let (Some(&left_id), Some(&right_id)) = (encoder.get(left), encoder.get(right)) else {
            continue;
        };
        let merge = Merge {
            rank: vocab_id(rank),
            merged_id: encoder[format!("{left}{right}").as_str()],
        };
        table.insert((left_id, right_id), merge);
    }
    table
}

/// Converts a vocabulary index to an id; the vocabulary has at most 49408 entries.
fn vocab_id(index: usize) -> u32 {
    index as u32
}

/// Returns GPT-2's byte-level character for each byte, in open_clip's vocabulary order.
///
/// Printable Latin-1 bytes (`!` to `~`, `¡` to `¬`, `®` to `ÿ`) stand for
/// themselves. The other 68 bytes, in increasing order, stand for U+0100 onwards.
/// The result lists the printable bytes first, then the others, because that
/// is the order of ids 0 to 255.
fn byte_level_characters() -> Vec<(u8, char)> {
    let is_printable = |byte: u8| matches!(byte, b'!'..=b'~' | 0xA1..=0xAC | 0xAE..=0xFF);
    let printable = (0..=u8::MAX)
        .filter(|&byte| is_printable(byte))
        .map(|byte| (byte, char::from(byte)));
    let shifted = (0..=u8::MAX)
        .filter(|&byte| !is_printable(byte))
        .zip(0x100..)
        .filter_map(|(byte, code_point)| Some((byte, char::from_u32(code_point)?)));
    printable.chain(shifted).collect()
}
