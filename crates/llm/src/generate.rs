//! Constrained generation: a language model whose every token is allowed by a grammar.
//!
//! [`Constrainer`] contains llguidance's token trie and parser factory for one vocabulary (the
//! slow part of the grammar set-up, about half a second for a 262k vocabulary) and drives
//! any [`LanguageModel`]. [`Engine`] bundles it with a Gemma 3 model read from a GGUF file
//! and the threads it runs on. One request goes like this:
//! 1. the JSON Schema is compiled with compact whitespace (`{"a":["b","c"]}`), so the
//!    output has no whitespace tokens to spend;
//! 2. tokens the grammar forces (keys, brackets, quotes) are consumed without sampling and
//!    fed to the model as one batch together with whatever is pending, the prompt included;
//! 3. otherwise the grammar's mask decides how the next token is picked: the only allowed
//!    token needs no logits, a few allowed tokens get logits from their own output rows,
//!    and only a wide mask computes the whole vocabulary;
//! 4. generation ends when the grammar is complete. It never ends for length when the
//!    budget covers the schema's largest output; a budget that runs out is reported as
//!    [`Stop::Length`].
//!
//! Sampling is greedy at temperature 0 and otherwise draws from the tempered softmax over
//! the allowed tokens with a seeded xoshiro256++ generator, so a seed reproduces a run.

use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

use candle_core::Device;
use llguidance::api::TopLevelGrammar;
use llguidance::{Matcher, ParserFactory};
use rand::rngs::Xoshiro256PlusPlus;
use rand::{RngExt, SeedableRng};
use toktrie::{SimpleVob, TokEnv, TokRxInfo, TokTrie, TokenizerEnv};

use crate::error::ModelError;
use crate::gemma3::Gemma3;
use crate::gguf::Gguf;
use crate::tokenizer::{EncodeOptions, TokenType, Tokenizer};

/// When at most this many tokens are allowed, their logits come from their own output
/// rows instead of the whole vocabulary.
const SPARSE_HEAD_LIMIT: usize = 4096;

/// Default maximum sequence length of an engine (prompt plus output), in tokens.
pub const DEFAULT_MAX_POSITIONS: usize = 8192;

/// Sampling settings for choosing the next token among the allowed ones.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Sampling {
    /// 0 picks the most likely token; above 0 samples from `softmax(logits / temperature)`.
    pub temperature: f32,
    /// Seed of the sampler; ignored when greedy.
    pub seed: u64,
}

/// Reason generation ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stop {
    /// The grammar is complete: the output is a whole document.
    Complete,
    /// The token budget ran out first.
    Length,
}

/// Counters and timings of one [`Engine::generate`] call.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct GenerationStats {
    /// Tokens of the prompt, BOS included.
    pub prompt_tokens: usize,
    /// Tokens of the output, forced ones included.
    pub output_tokens: usize,
    /// Output tokens the grammar forced.
    pub forced_tokens: usize,
    /// Model evaluations (a batch of forced tokens counts once).
    pub forwards: usize,
    /// Seconds of the first evaluation (the prompt and any forced prefix).
    pub prefill_secs: f64,
    /// Seconds of the later evaluations.
    pub decode_secs: f64,
    /// Seconds spent computing grammar masks and forced tokens. With an overlapping
    /// grammar ([`Constrainer::overlapping_grammar`]) most of it overlaps `decode_secs`.
    pub grammar_secs: f64,
    /// Seconds the decoder waited for a mask after the model was done, plus the forced
    /// tokens' time: the grammar's share of the wall time.
    pub grammar_wait_secs: f64,
    /// Seconds spent on output logits and picking tokens.
    pub sampling_secs: f64,
}

/// The output of one request.
#[derive(Debug, Clone, PartialEq)]
pub struct Generation {
    /// The decoded output.
    pub text: String,
    /// The output token ids.
    pub tokens: Vec<u32>,
    /// Reason generation ended.
    pub stop: Stop,
    /// Counters and timings.
    pub stats: GenerationStats,
}

/// A causal language model that [`Constrainer::generate`] can drive.
pub trait LanguageModel {
    /// State a forward pass leaves for reading logits (a hidden state).
    type Hidden;

    /// Forgets the sequence so far.
    fn clear(&mut self);

    /// Runs `tokens` at the next positions of the sequence.
    fn forward(&mut self, tokens: &[u32]) -> Result<Self::Hidden, ModelError>;

    /// Logits of every token of the vocabulary for the last position.
    fn logits(&self, hidden: &Self::Hidden) -> Result<Vec<f32>, ModelError>;

    /// Logits of `ids` only, in that order.
    fn logits_for(&self, hidden: &Self::Hidden, ids: &[u32]) -> Result<Vec<f32>, ModelError>;
}

impl LanguageModel for Gemma3 {
    type Hidden = candle_core::Tensor;

    fn clear(&mut self) {
        Gemma3::clear(self);
    }

    fn forward(&mut self, tokens: &[u32]) -> Result<Self::Hidden, ModelError> {
        Gemma3::forward(self, tokens)
    }

    fn logits(&self, hidden: &Self::Hidden) -> Result<Vec<f32>, ModelError> {
        Gemma3::logits(self, hidden)
    }

    fn logits_for(&self, hidden: &Self::Hidden, ids: &[u32]) -> Result<Vec<f32>, ModelError> {
        Gemma3::logits_for(self, hidden, ids)
    }
}

/// Grammar side of generation for one vocabulary: llguidance's parser factory over the
/// tokenizer's token trie. Build it once per vocabulary, because it is the slow part.
pub struct Constrainer {
    tokenizer: Arc<Tokenizer>,
    factory: ParserFactory,
    /// End-of-sequence and end-of-turn ids: picking one ends the output.
    stop_ids: Vec<u32>,
    /// Compute each mask on a second thread while the model runs.
    overlap_grammar: bool,
}

impl Constrainer {
    /// Builds the token trie and parser factory of `tokenizer`'s vocabulary.
    pub fn new(tokenizer: Arc<Tokenizer>) -> Result<Self, ModelError> {
        let env: TokEnv = Arc::new(TrieEnv::new(tokenizer.clone()));
        let mut factory = ParserFactory::new_simple(&env).map_err(grammar_error)?;
        factory.quiet();
        let stop_ids = [tokenizer.eos(), tokenizer.token_id("<end_of_turn>")]
            .into_iter()
            .flatten()
            .collect();
        Ok(Self {
            tokenizer,
            factory,
            stop_ids,
            overlap_grammar: false,
        })
    }

    /// Sets whether each grammar mask is computed on a second thread while the model
    /// runs. This pays off when a core is free for it. When the model's threads use every
    /// core, the two compete and a step gets no faster.
    pub fn overlapping_grammar(self, overlap: bool) -> Self {
        Self {
            overlap_grammar: overlap,
            ..self
        }
    }

    /// Adds token slices: regexes of string contents the grammars will often allow, such
    /// as [`string_slices`] of a schema. When the lexer accepts every string of a slice,
    /// a mask takes the slice's tokens at once instead of checking them one by one. Inside
    /// a string whose `pattern` allows almost any character, that cuts a mask from about
    /// 2 ms to 0.1-0.4 ms for Gemma 3's 262,144 tokens. Rebuilding the slices takes about
    /// a second, so do it once per engine.
    pub fn with_slices(self, regexes: &[String]) -> Result<Self, ModelError> {
        let mut slices = regexes.to_vec();
        slices.extend(llguidance::earley::SlicedBiasComputer::general_slices());
        let factory = self.factory.with_slices(&slices).map_err(grammar_error)?;
        Ok(Self { factory, ..self })
    }

    /// Generates at most `max_tokens` tokens after `prompt_ids` with `model`, every one
    /// allowed by `schema` compiled with compact whitespace; see the module docs.
    pub fn generate<M: LanguageModel>(
        &self,
        model: &mut M,
        prompt_ids: Vec<u32>,
        schema: &serde_json::Value,
        max_tokens: usize,
        sampling: Sampling,
    ) -> Result<Generation, ModelError> {
        let grammar = TopLevelGrammar::from_json_schema(compact_schema(schema));
        let parser = self.factory.create_parser(grammar).map_err(grammar_error)?;
        let mut run = Run {
            model,
            matcher: Matcher::new(Ok(parser)),
            rng: Xoshiro256PlusPlus::seed_from_u64(sampling.seed),
            sampling,
            stats: GenerationStats {
                prompt_tokens: prompt_ids.len(),
                ..GenerationStats::default()
            },
            stop_ids: &self.stop_ids,
            overlap_grammar: self.overlap_grammar,
        };
        let (tokens, stop) = run.decode(prompt_ids, max_tokens)?;
        let mut stats = run.stats;
        stats.output_tokens = tokens.len();
        let text = self.tokenizer.decode(&tokens)?;
        Ok(Generation {
            text,
            tokens,
            stop,
            stats,
        })
    }
}

/// A loaded model, its tokenizer and grammar, and the threads it runs on.
pub struct Engine {
    model: Gemma3,
    tokenizer: Arc<Tokenizer>,
    constrainer: Constrainer,
    pool: rayon::ThreadPool,
    turn_markers: Option<(u32, u32)>,
}

impl Engine {
    /// Loads the GGUF model at `path` to run on `threads` CPU threads, for sequences of at
    /// most `max_positions` tokens.
    pub fn load(path: &Path, threads: usize, max_positions: usize) -> Result<Self, ModelError> {
        let gguf = Gguf::open(path).map_err(|e| ModelError::Read {
            path: path.to_path_buf(),
            detail: e.to_string(),
        })?;
        let tokenizer = Arc::new(Tokenizer::from_gguf(&gguf)?);
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .build()
            .map_err(|e| ModelError::Threads {
                threads,
                detail: e.to_string(),
            })?;
        let model = pool.install(|| Gemma3::load(path, max_positions, &Device::Cpu))?;
        let spare_core = std::thread::available_parallelism().is_ok_and(|n| n.get() > threads);
        let constrainer = Constrainer::new(tokenizer.clone())?.overlapping_grammar(spare_core);
        let turn_markers = tokenizer
            .token_id("<start_of_turn>")
            .zip(tokenizer.token_id("<end_of_turn>"));
        Ok(Self {
            model,
            tokenizer,
            constrainer,
            pool,
            turn_markers,
        })
    }

    /// Adds grammar slices; see [`Constrainer::with_slices`].
    pub fn with_slices(self, regexes: &[String]) -> Result<Self, ModelError> {
        Ok(Self {
            constrainer: self.constrainer.with_slices(regexes)?,
            ..self
        })
    }

    /// Returns the tokenizer built from the file's metadata.
    pub fn tokenizer(&self) -> &Tokenizer {
        &self.tokenizer
    }

    /// Returns the maximum sequence length (prompt plus output) this engine accepts.
    pub fn max_positions(&self) -> usize {
        self.model.max_positions()
    }

    /// Wraps a user message in the model's turn format, ready for [`Engine::generate`]:
    /// `<start_of_turn>user\n{message}<end_of_turn>\n<start_of_turn>model\n`, with the
    /// message trimmed as llama.cpp's Gemma template trims it. Models without turn markers
    /// get the message unchanged.
    pub fn chat_prompt(&self, message: &str) -> String {
        match self.turn_markers {
            Some(_) => format!(
                "<start_of_turn>user\n{}<end_of_turn>\n<start_of_turn>model\n",
                message.trim()
            ),
            None => message.to_string(),
        }
    }

    /// Encodes `prompt` as llama.cpp does with special tokens parsed and BOS added.
    pub fn encode_prompt(&self, prompt: &str) -> Vec<u32> {
        self.tokenizer.encode_with(
            prompt,
            EncodeOptions {
                add_bos: self.tokenizer.wants_bos(),
                parse_special: true,
            },
        )
    }

    /// Generates at most `max_tokens` tokens after `prompt` (turn markers included, see
    /// [`Engine::chat_prompt`]) that together form a JSON document valid under `schema`.
    pub fn generate(
        &mut self,
        prompt: &str,
        schema: &serde_json::Value,
        max_tokens: usize,
        sampling: Sampling,
    ) -> Result<Generation, ModelError> {
        let prompt_ids = self.encode_prompt(prompt);
        let needed = prompt_ids.len() + max_tokens;
        if needed > self.model.max_positions() {
            return Err(ModelError::TooLong {
                positions: needed,
                max: self.model.max_positions(),
            });
        }
        let (model, constrainer) = (&mut self.model, &self.constrainer);
        self.pool
            .install(|| constrainer.generate(model, prompt_ids, schema, max_tokens, sampling))
    }

    /// Generates `n` tokens after `prompt_ids` greedily and without a grammar: the
    /// reference path that parity tests compare with llama.cpp.
    pub fn greedy_unconstrained(
        &mut self,
        prompt_ids: &[u32],
        n: usize,
    ) -> Result<Vec<u32>, ModelError> {
        let model = &mut self.model;
        self.pool.install(|| {
            model.clear();
            let mut out = Vec::with_capacity(n);
            let mut pending = prompt_ids.to_vec();
            while out.len() < n {
                let hidden = model.forward(&pending)?;
                let logits = model.logits(&hidden)?;
                let next = argmax(logits.iter().copied().enumerate()).0 as u32;
                out.push(next);
                pending = vec![next];
            }
            Ok(out)
        })
    }
}

/// State of one constrained decode.
struct Run<'a, M> {
    model: &'a mut M,
    matcher: Matcher,
    rng: Xoshiro256PlusPlus,
    sampling: Sampling,
    stats: GenerationStats,
    stop_ids: &'a [u32],
    overlap_grammar: bool,
}

impl<M: LanguageModel> Run<'_, M> {
    fn decode(
        &mut self,
        prompt_ids: Vec<u32>,
        max_tokens: usize,
    ) -> Result<(Vec<u32>, Stop), ModelError> {
        self.model.clear();
        let mut pending = prompt_ids;
        let mut output = Vec::new();
        loop {
            let started = Instant::now();
            let forced = self.matcher.consume_ff_tokens();
            self.check_matcher()?;
            let forced_secs = started.elapsed().as_secs_f64();
            self.stats.grammar_secs += forced_secs;
            self.stats.grammar_wait_secs += forced_secs;
            self.stats.forced_tokens += forced.len();
            output.extend_from_slice(&forced);
            pending.extend_from_slice(&forced);
            if output.len() > max_tokens {
                output.truncate(max_tokens);
                return Ok((output, Stop::Length));
            }
            if self.matcher.is_stopped() {
                return Ok((output, Stop::Complete));
            }
            if output.len() == max_tokens {
                return Ok((output, Stop::Length));
            }

            let (hidden, mask) = self.evaluate(&pending)?;
            pending.clear();
            let next = self.pick(&hidden, &mask)?;
            self.matcher.consume_token(next).map_err(grammar_error)?;
            if self.stop_ids.contains(&next) {
                return Ok((output, Stop::Complete));
            }
            output.push(next);
            pending.push(next);
        }
    }

    /// Runs the model on `tokens` and computes the grammar's mask for the next token. The
    /// mask depends only on the tokens consumed so far, so with `overlap_grammar` another
    /// thread computes it while the model runs, and only the part of the mask time that
    /// outlasts the model is waited for.
    fn evaluate(&mut self, tokens: &[u32]) -> Result<(M::Hidden, SimpleVob), ModelError> {
        let Run {
            model,
            matcher,
            stats,
            overlap_grammar,
            ..
        } = self;
        let started = Instant::now();
        let (hidden, forward_secs, mask, mask_secs) = if *overlap_grammar {
            std::thread::scope(|scope| {
                let worker = scope.spawn(|| timed(|| matcher.compute_mask()));
                let hidden = model.forward(tokens);
                let forward_secs = started.elapsed().as_secs_f64();
                let (mask, mask_secs) = worker.join().expect("the mask thread never panics");
                (hidden, forward_secs, mask, mask_secs)
            })
        } else {
            let (hidden, forward_secs) = timed(|| model.forward(tokens));
            let (mask, mask_secs) = timed(|| matcher.compute_mask());
            (hidden, forward_secs, mask, mask_secs)
        };
        let hidden = hidden?;
        let mask = mask.map_err(grammar_error)?;

        stats.grammar_secs += mask_secs;
        stats.grammar_wait_secs += started.elapsed().as_secs_f64() - forward_secs;
        if stats.forwards == 0 {
            stats.prefill_secs += forward_secs;
        } else {
            stats.decode_secs += forward_secs;
        }
        stats.forwards += 1;
        Ok((hidden, mask))
    }

    /// Chooses the next token among those the grammar allows.
    fn pick(&mut self, hidden: &M::Hidden, mask: &SimpleVob) -> Result<u32, ModelError> {
        let started = Instant::now();
        let allowed = allowed_ids(mask);
        let choice = match allowed.len() {
            0 => {
                return Err(ModelError::Grammar {
                    detail: "no token is allowed before the output is complete".to_string(),
                });
            }
            1 => allowed[0],
            n if n <= SPARSE_HEAD_LIMIT => {
                let logits = self.model.logits_for(hidden, &allowed)?;
                let (i, _) = self.sample(allowed.iter().map(|&t| t as usize).zip(logits));
                i as u32
            }
            _ => {
                let logits = self.model.logits(hidden)?;
                let candidates = allowed.iter().map(|&t| (t as usize, logits[t as usize]));
                self.sample(candidates).0 as u32
            }
        };
        self.stats.sampling_secs += started.elapsed().as_secs_f64();
        Ok(choice)
    }

    fn sample(&mut self, candidates: impl Iterator<Item = (usize, f32)>) -> (usize, f32) {
        if self.sampling.temperature <= 0.0 {
            return argmax(candidates);
        }
        let candidates: Vec<(usize, f32)> = candidates.collect();
        let top = argmax(candidates.iter().copied()).1;
        let weights: Vec<f64> = candidates
            .iter()
            .map(|&(_, l)| (f64::from(l - top) / f64::from(self.sampling.temperature)).exp())
            .collect();
        let total: f64 = weights.iter().sum();
        let mut target = self.rng.random::<f64>() * total;
        for (candidate, weight) in candidates.iter().zip(&weights) {
            if target < *weight {
                return *candidate;
            }
            target -= weight;
        }
        *candidates.last().expect("at least two candidates")
    }

    fn check_matcher(&self) -> Result<(), ModelError> {
        match self.matcher.get_error() {
            Some(detail) => Err(ModelError::Grammar { detail }),
            None => Ok(()),
        }
    }
}

/// Runs `f` and returns its result with the seconds it took.
fn timed<T>(f: impl FnOnce() -> T) -> (T, f64) {
    let started = Instant::now();
    let value = f();
    (value, started.elapsed().as_secs_f64())
}

/// Highest logit; the lowest id wins a tie, as llama.cpp's greedy sampler does.
fn argmax(candidates: impl Iterator<Item = (usize, f32)>) -> (usize, f32) {
    candidates.fold((0, f32::NEG_INFINITY), |best, (i, l)| {
        if l > best.1 { (i, l) } else { best }
    })
}

fn allowed_ids(mask: &SimpleVob) -> Vec<u32> {
    let mut ids = Vec::with_capacity(mask.num_set().min(SPARSE_HEAD_LIMIT + 1));
    mask.iter_set_entries(|i| ids.push(i as u32));
    ids
}

/// Returns token slices for the character classes of a schema's string patterns of the
/// form `^[...]{a,b}$`, for [`Constrainer::with_slices`].
pub fn string_slices(schema: &serde_json::Value) -> Vec<String> {
    let mut classes = Vec::new();
    visit_objects(schema, &mut |object| {
        let pattern = object.get("pattern").and_then(serde_json::Value::as_str);
        if let Some((class, _, _)) = pattern.and_then(single_class_pattern)
            && !classes.contains(&class.to_string())
        {
            classes.push(class.to_string());
        }
    });
    classes
        .iter()
        .flat_map(|class| [format!("{class}{{1,10}}"), format!("{class}{{1,30}}")])
        .collect()
}

/// Splits a pattern `^[...]{a,b}$` (one bracket expression, repeated) into the bracket
/// expression and the bounds. `None` for any other pattern.
fn single_class_pattern(pattern: &str) -> Option<(&str, usize, usize)> {
    let body = pattern.strip_prefix('^')?.strip_suffix('$')?;
    let brace = body.rfind('{')?;
    let (class, count) = body.split_at(brace);
    let (low, high) = count
        .strip_prefix('{')?
        .strip_suffix('}')?
        .split_once(',')?;
    let (low, high) = (low.parse().ok()?, high.parse().ok()?);
    let inner = class.strip_prefix('[')?.strip_suffix(']')?;
    let mut chars = inner.chars();
    while let Some(c) = chars.next() {
        match c {
            '\\' => {
                chars.next()?;
            }
            '[' | ']' => return None,
            _ => {}
        }
    }
    Some((class, low, high))
}

/// Removes `minLength` and `maxLength` where the object's `pattern` is one character class
/// repeated within bounds that already imply them. The allowed strings are the same. The
/// grammar then has a plain regular expression instead of an intersection with a length
/// rule, which llguidance can match against token slices.
fn drop_implied_lengths(schema: &mut serde_json::Value) {
    visit_objects_mut(schema, &mut |object| {
        let pattern = object.get("pattern").and_then(serde_json::Value::as_str);
        let Some((_, low, high)) = pattern.and_then(single_class_pattern) else {
            return;
        };
        let bound = |key: &str| object.get(key).and_then(serde_json::Value::as_u64);
        let min_implied = bound("minLength").is_none_or(|min| min as usize <= low);
        let max_implied = bound("maxLength").is_none_or(|max| max as usize >= high);
        if min_implied && max_implied {
            object.remove("minLength");
            object.remove("maxLength");
        }
    });
}

fn visit_objects(
    value: &serde_json::Value,
    f: &mut dyn FnMut(&serde_json::Map<String, serde_json::Value>),
) {
    match value {
        serde_json::Value::Object(object) => {
            f(object);
            object.values().for_each(|v| visit_objects(v, f));
        }
        serde_json::Value::Array(items) => items.iter().for_each(|v| visit_objects(v, f)),
        _ => {}
    }
}

fn visit_objects_mut(
    value: &mut serde_json::Value,
    f: &mut dyn FnMut(&mut serde_json::Map<String, serde_json::Value>),
) {
    match value {
        serde_json::Value::Object(object) => {
            f(object);
            object.values_mut().for_each(|v| visit_objects_mut(v, f));
        }
        serde_json::Value::Array(items) => {
            items.iter_mut().for_each(|v| visit_objects_mut(v, f));
        }
        _ => {}
    }
}

/// Returns the schema with llguidance's compact-output options: no whitespace between tokens
/// and no line breaks, so the model cannot spend its budget on indentation. Length
/// keywords a pattern already implies are dropped ([`drop_implied_lengths`]).
fn compact_schema(schema: &serde_json::Value) -> serde_json::Value {
    let mut schema = schema.clone();
    drop_implied_lengths(&mut schema);
    if let Some(object) = schema.as_object_mut() {
        object.insert(
            "x-guidance".to_string(),
            serde_json::json!({
                "whitespace_flexible": false,
                "item_separator": ",",
                "key_separator": ":",
            }),
        );
    }
    schema
}

fn grammar_error(error: impl std::fmt::Display) -> ModelError {
    ModelError::Grammar {
        detail: error.to_string(),
    }
}

/// The tokenizer seen through llguidance's eyes: each token as the bytes it decodes to,
/// special tokens marked so that no grammar can produce them.
struct TrieEnv {
    tokenizer: Arc<Tokenizer>,
    trie: TokTrie,
}

impl TrieEnv {
    fn new(tokenizer: Arc<Tokenizer>) -> Self {
        let words: Vec<Vec<u8>> = (0..tokenizer.n_vocab() as u32)
            .map(|id| token_bytes(&tokenizer, id))
            .collect();
        let eos = tokenizer.eos().unwrap_or(0);
        let info = TokRxInfo {
            vocab_size: words.len() as u32,
            tok_eos: eos,
            tok_bos: tokenizer.bos(),
            tok_pad: None,
            tok_unk: tokenizer.unk(),
            tok_end_of_turn: tokenizer.token_id("<end_of_turn>"),
        };
        let trie = TokTrie::from(&info, &words);
        Self { tokenizer, trie }
    }
}

/// Bytes of one token for the trie: text pieces with `▁` as a space, byte tokens as their
/// byte, and everything special behind toktrie's marker byte.
fn token_bytes(tokenizer: &Tokenizer, id: u32) -> Vec<u8> {
    let Some(token) = tokenizer.token(id) else {
        return Vec::new();
    };
    match token.kind {
        TokenType::Normal => token.text.replace('\u{2581}', " ").into_bytes(),
        TokenType::UserDefined => token.text.clone().into_bytes(),
        TokenType::Byte => byte_token_value(&token.text).map_or_else(Vec::new, |b| vec![b]),
        TokenType::Control | TokenType::Unknown | TokenType::Unused => {
            let mut bytes = vec![TokTrie::SPECIAL_TOKEN_MARKER];
            bytes.extend_from_slice(token.text.as_bytes());
            bytes
        }
        TokenType::Undefined => Vec::new(),
    }
}

/// Returns the byte of a `<0xXX>` token.
fn byte_token_value(text: &str) -> Option<u8> {
    let hex = text.strip_prefix("<0x")?.strip_suffix('>')?;
    u8::from_str_radix(hex, 16).ok()
}

impl TokenizerEnv for TrieEnv {
    fn tok_trie(&self) -> &TokTrie {
        &self.trie
    }

    fn tokenize_bytes(&self, s: &[u8]) -> Vec<u32> {
        self.tokenizer.encode(&String::from_utf8_lossy(s), false)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn byte_tokens_parse_their_hex() {
        assert_eq!(byte_token_value("<0x0A>"), Some(10));
        assert_eq!(byte_token_value("<0xFF>"), Some(255));
        assert_eq!(byte_token_value("<0xZZ>"), None);
        assert_eq!(byte_token_value("0x0A"), None);
    }

    #[test]
    fn argmax_prefers_the_lowest_id_on_ties() {
        let candidates = [(3, 1.0), (5, 2.0), (7, 2.0)];
        assert_eq!(argmax(candidates.into_iter()), (5, 2.0));
    }

    #[test]
    fn single_class_patterns_are_recognized() {
        let summary = r#"^[^\u0000-\u001F";\\]{1,100}$"#;
        assert_eq!(
            single_class_pattern(summary),
            Some((r#"[^\u0000-\u001F";\\]"#, 1, 100))
        );
        assert_eq!(single_class_pattern("^[a-z]{2,5}$"), Some(("[a-z]", 2, 5)));
        assert_eq!(single_class_pattern("^[a-z]+$"), None);
        assert_eq!(single_class_pattern("^[a-z][0-9]{1,3}$"), None);
        assert_eq!(single_class_pattern("[a-z]{1,3}"), None);
        assert_eq!(single_class_pattern("^[[:alpha:]]{1,3}$"), None);
    }

    #[test]
    fn implied_lengths_are_dropped_others_kept() {
        let mut schema = serde_json::json!({"items": [
            {"type": "string", "pattern": "^[a-z]{1,100}$", "minLength": 1, "maxLength": 100},
            {"type": "string", "pattern": "^[a-z]{1,100}$", "maxLength": 50},
            {"type": "string", "pattern": "^[a-z]+$", "maxLength": 100},
        ]});

        drop_implied_lengths(&mut schema);

        assert_eq!(schema["items"][0].get("maxLength"), None);
        assert_eq!(schema["items"][0].get("minLength"), None);
        assert_eq!(schema["items"][1]["maxLength"], 50);
        assert_eq!(schema["items"][2]["maxLength"], 100);
    }

    #[test]
    fn slices_come_from_pattern_classes() {
        let schema = serde_json::json!({"properties": {
            "a": {"items": {"pattern": "^[a-z]{1,100}$"}},
            "b": {"items": {"pattern": "^[a-z]{1,100}$"}},
        }});
        assert_eq!(string_slices(&schema), ["[a-z]{1,10}", "[a-z]{1,30}"]);
    }

    #[test]
    fn compact_schema_keeps_the_schema_and_adds_options() {
        let schema = serde_json::json!({"type": "object"});
        let compact = compact_schema(&schema);
        assert_eq!(compact["type"], "object");
        assert_eq!(compact["x-guidance"]["whitespace_flexible"], false);
    }
}
