//! Constrained JSON with the grammar engine of `paperclip_llm`, driven by scripted logits
//! instead of a model file. Schemas of other tools go to the engine directly. The summary
//! schema goes through the summary stage's backend interface, so each output passes the
//! same checks, retries and cache as one from a real model.
//!
//! The vocabulary is built by hand: four special tokens, the 256 byte tokens (every byte
//! is reachable) and pieces useful for JSON. A script scores each allowed token from what
//! the output contains so far, pushing toward one failure mode of constrained decoders.
//! Outputs are checked with the product's own readers: the strict parser that refuses
//! repeated keys (`json_text::parse_strict`) and the `jsonschema` validator of
//! `SchemaFile`, which is independent of llguidance.

use std::path::Path;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Instant;

use paperclip::summaries::json_text::{parse_strict, scan};
use paperclip::summaries::schema::{
    MAX_ITEM_CHARS, MAX_ITEMS, MIN_ITEMS, SchemaFile, Summary, generate_schema,
};
use paperclip::summaries::stage::{ProposalText, StageSettings, Summarizer, summarize_proposals};
use paperclip::summaries::{
    BackendError, Completion, CompletionRequest, FinishReason, Sampling, SummaryBackend,
    SummaryCache, SummaryRecord, SummaryStatus,
};
use paperclip_llm::tokenizer::{Token, TokenType, TokenizerConfig};
use paperclip_llm::{Constrainer, Generation, LanguageModel, ModelError, Stop, Tokenizer};
use serde_json::{Value, json};

const EOS: u32 = 1;
const BOS: u32 = 2;
const UNK: u32 = 3;

const GREEDY: paperclip_llm::Sampling = paperclip_llm::Sampling {
    temperature: 0.0,
    seed: 0,
};

/// NORMAL pieces of more than one byte, with `▁` for a space. Every prefix of each is added
/// too, so that the tokenizer's merges can reach the whole piece.
const PIECES: &[&str] = &[
    "{\"",
    "\":[\"",
    "\",\"",
    "\"],\"",
    "\"]}",
    "\"}",
    "[]",
    "],\"",
    "objects_and_phenomena",
    "science_use_cases",
    "names",
    "values",
    "galaxy",
    "quasar",
    "supernova",
    "stellar▁winds",
    "10",
    "0,",
    "▁▁",
    "▁▁▁▁",
    "\\n",
    "\\u0007",
    "٣",
    "\u{A0}",
    "\u{2028}",
];

/// USER_DEFINED tokens, split out before merging as Gemma's newline and tab tokens are.
const USER_DEFINED: &[&str] = &["\n", "\n\n", "\t"];

fn push_token(tokens: &mut Vec<Token>, text: &str, score: f32, kind: TokenType) {
    if tokens.iter().all(|t| t.text != text) {
        tokens.push(Token {
            text: text.to_string(),
            score,
            kind,
        });
    }
}

fn tokenizer() -> Arc<Tokenizer> {
    static TOKENIZER: OnceLock<Arc<Tokenizer>> = OnceLock::new();
    TOKENIZER
        .get_or_init(|| {
            let mut tokens = Vec::new();
            push_token(&mut tokens, "<pad>", 0.0, TokenType::Control);
            push_token(&mut tokens, "<eos>", 0.0, TokenType::Control);
            push_token(&mut tokens, "<bos>", 0.0, TokenType::Control);
            push_token(&mut tokens, "<unk>", 0.0, TokenType::Unknown);
            for byte in 0..=255u8 {
                push_token(
                    &mut tokens,
                    &format!("<0x{byte:02X}>"),
                    0.0,
                    TokenType::Byte,
                );
            }
            push_token(&mut tokens, "▁", 0.0, TokenType::Normal);
            for c in '!'..='~' {
                push_token(&mut tokens, &c.to_string(), 0.0, TokenType::Normal);
            }
            for piece in PIECES {
                let chars: Vec<char> = piece.chars().collect();
                for end in 1..=chars.len() {
                    let prefix: String = chars[..end].iter().collect();
                    push_token(&mut tokens, &prefix, end as f32, TokenType::Normal);
                }
            }
            for text in USER_DEFINED {
                push_token(&mut tokens, text, 0.0, TokenType::UserDefined);
            }
            Arc::new(Tokenizer::new(TokenizerConfig {
                tokens,
                bos: Some(BOS),
                eos: Some(EOS),
                unk: Some(UNK),
                add_space_prefix: false,
                add_bos: true,
            }))
        })
        .clone()
}

fn constrainer() -> &'static Constrainer {
    static CONSTRAINER: OnceLock<Constrainer> = OnceLock::new();
    CONSTRAINER.get_or_init(|| Constrainer::new(tokenizer()).expect("the parser factory builds"))
}

/// Returns the bytes a token adds to the output, none for special tokens.
fn token_bytes(token: &Token) -> Vec<u8> {
    match token.kind {
        TokenType::Normal => token.text.replace('▁', " ").into_bytes(),
        TokenType::UserDefined => token.text.clone().into_bytes(),
        TokenType::Byte => {
            let hex = &token.text[3..5];
            vec![u8::from_str_radix(hex, 16).expect("a byte token's hex")]
        }
        _ => Vec::new(),
    }
}

// ---------------------------------------------------------------------------------------
// Scripted model
// ---------------------------------------------------------------------------------------

/// Position of a byte stream in JSON's string syntax.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
enum Lex {
    #[default]
    Outside,
    /// Inside a string of `chars` characters so far; `escape` counts the escape bytes
    /// still to come (`u32::MAX` right after a backslash).
    Inside { chars: usize, escape: u32 },
}

impl Lex {
    fn step(self, byte: u8) -> Lex {
        match self {
            Lex::Outside if byte == b'"' => Lex::Inside {
                chars: 0,
                escape: 0,
            },
            Lex::Outside => Lex::Outside,
            Lex::Inside {
                chars,
                escape: u32::MAX,
            } => Lex::Inside {
                chars,
                escape: if byte == b'u' { 4 } else { 0 },
            },
            Lex::Inside { chars, escape } if escape > 0 => Lex::Inside {
                chars,
                escape: escape - 1,
            },
            Lex::Inside { chars, .. } => match byte {
                b'"' => Lex::Outside,
                b'\\' => Lex::Inside {
                    chars: chars + 1,
                    escape: u32::MAX,
                },
                // A UTF-8 continuation byte belongs to the character before it.
                _ if byte & 0xC0 == 0x80 => self,
                _ => Lex::Inside {
                    chars: chars + 1,
                    escape: 0,
                },
            },
        }
    }
}

/// What the scripted model has seen of the output.
#[derive(Debug, Clone, Copy, Default)]
struct Context {
    lex: Lex,
    /// Commas outside strings so far.
    commas: usize,
    /// The last output byte.
    last: Option<u8>,
}

/// One allowed token, with the context a script scores it in.
struct Candidate<'a> {
    bytes: &'a [u8],
    /// Characters of the string open before this token, if one is open.
    open: Option<usize>,
    /// Commas outside strings before this token.
    commas: usize,
    /// The last byte before this token.
    after: Option<u8>,
    /// Bytes of the token that land inside strings, quotes excluded.
    content: Vec<u8>,
    /// Bytes of the token that land outside strings, quotes included.
    structure: Vec<u8>,
    /// Whether the token ends the string open before it.
    closes: bool,
}

impl<'a> Candidate<'a> {
    fn new(context: Context, bytes: &'a [u8]) -> Self {
        let open = match context.lex {
            Lex::Inside { chars, .. } => Some(chars),
            Lex::Outside => None,
        };
        let (mut content, mut structure, mut closes) = (Vec::new(), Vec::new(), false);
        let mut lex = context.lex;
        for &byte in bytes {
            let next = lex.step(byte);
            match (lex, next) {
                (Lex::Inside { .. }, Lex::Inside { .. }) => content.push(byte),
                (Lex::Inside { .. }, Lex::Outside) => {
                    closes |= open.is_some() && structure.is_empty();
                    structure.push(byte);
                }
                (Lex::Outside, _) => structure.push(byte),
            }
            lex = next;
        }
        Self {
            bytes,
            open,
            commas: context.commas,
            after: context.last,
            content,
            structure,
            closes,
        }
    }
}

/// A language model whose logits come from a script over the candidate token and the
/// output so far. Special tokens score 0.
struct ScriptedModel<P> {
    pieces: Vec<Vec<u8>>,
    context: Context,
    script: P,
}

impl<P: Fn(&Candidate) -> f32> ScriptedModel<P> {
    fn new(script: P) -> Self {
        let tokenizer = tokenizer();
        let pieces = (0..tokenizer.n_vocab() as u32)
            .map(|id| token_bytes(tokenizer.token(id).expect("an id below n_vocab")))
            .collect();
        Self {
            pieces,
            context: Context::default(),
            script,
        }
    }

    fn score(&self, context: Context, id: u32) -> f32 {
        match self.pieces[id as usize].as_slice() {
            [] => 0.0,
            bytes => (self.script)(&Candidate::new(context, bytes)),
        }
    }
}

impl<P: Fn(&Candidate) -> f32> LanguageModel for ScriptedModel<P> {
    type Hidden = Context;

    fn clear(&mut self) {
        self.context = Context::default();
    }

    fn forward(&mut self, tokens: &[u32]) -> Result<Context, ModelError> {
        for &id in tokens {
            for &byte in &self.pieces[id as usize] {
                if self.context.lex == Lex::Outside && byte == b',' {
                    self.context.commas += 1;
                }
                self.context.lex = self.context.lex.step(byte);
                self.context.last = Some(byte);
            }
        }
        Ok(self.context)
    }

    fn logits(&self, hidden: &Context) -> Result<Vec<f32>, ModelError> {
        Ok((0..self.pieces.len() as u32)
            .map(|id| self.score(*hidden, id))
            .collect())
    }

    fn logits_for(&self, hidden: &Context, ids: &[u32]) -> Result<Vec<f32>, ModelError> {
        Ok(ids.iter().map(|&id| self.score(*hidden, id)).collect())
    }
}

// ---------------------------------------------------------------------------------------
// Script building blocks
// ---------------------------------------------------------------------------------------

/// Scores string length. Inside a string, a token scores its number of content bytes, so
/// longer pieces win. Closing the string costs 50 until it has `close_at` characters and
/// earns 50 after that.
fn length_score(c: &Candidate, close_at: usize) -> f32 {
    match c.open {
        None => 0.0,
        Some(chars) if c.closes => {
            if chars >= close_at {
                50.0
            } else {
                -50.0
            }
        }
        Some(_) => c.content.len() as f32,
    }
}

/// Adds `weight` for each listed byte the token puts outside strings.
fn structure_score(c: &Candidate, weights: &[(u8, f32)]) -> f32 {
    weights
        .iter()
        .filter(|(byte, _)| c.structure.contains(byte))
        .map(|(_, weight)| weight)
        .sum()
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

// ---------------------------------------------------------------------------------------
// Running the grammar alone
// ---------------------------------------------------------------------------------------

/// Compiles `schema` (a generation with a budget of 0, timed) and then generates under it
/// with `script`'s logits. Returns the generation and the compile time in seconds.
fn generate(
    schema: &Value,
    script: impl Fn(&Candidate) -> f32,
    max_tokens: usize,
) -> (Generation, f64) {
    let mut model = ScriptedModel::new(script);
    let started = Instant::now();
    constrainer()
        .generate(&mut model, vec![BOS], schema, 0, GREEDY)
        .unwrap_or_else(|e| panic!("the schema does not compile: {e}"));
    let compile_secs = started.elapsed().as_secs_f64();
    let generation = constrainer()
        .generate(&mut model, vec![BOS], schema, max_tokens, GREEDY)
        .unwrap_or_else(|e| panic!("generation failed: {e}"));
    assert_eq!(
        generation.stop,
        Stop::Complete,
        "the output ended for length after {} of {max_tokens} tokens: {}",
        generation.tokens.len(),
        generation.text
    );
    (generation, compile_secs)
}

/// Parses `text` with the product's strict parser and checks it against `schema` with the
/// product's independent validator; returns the value.
fn validated(schema: &Value, text: &str) -> Value {
    let value =
        parse_strict(text).unwrap_or_else(|e| panic!("the strict parser rejects {text:?}: {e}"));
    let file = SchemaFile::parse("test schema", &schema.to_string()).expect("the schema loads");
    let errors: Vec<String> = file
        .validator
        .iter_errors(&value)
        .map(|e| e.to_string())
        .collect();
    assert!(
        errors.is_empty(),
        "the validator rejects {text}: {errors:?}"
    );
    value
}

fn strings(value: &Value) -> Vec<String> {
    value
        .as_array()
        .unwrap_or_else(|| panic!("not an array: {value}"))
        .iter()
        .map(|item| item.as_str().expect("a string item").to_string())
        .collect()
}

fn list_schema(item: Value, min_items: usize, max_items: usize) -> Value {
    json!({
        "type": "object",
        "properties": {
            "values": {"type": "array", "items": item, "minItems": min_items, "maxItems": max_items}
        },
        "required": ["values"],
        "additionalProperties": false
    })
}

// ---------------------------------------------------------------------------------------
// Running the summary stage
// ---------------------------------------------------------------------------------------

type Script = fn(&Candidate) -> f32;

/// A summary backend whose output comes from the grammar engine under the request's
/// schema and budget, with a script in place of the model. Records each request's budget,
/// schema and output.
struct GrammarBackend {
    script: Script,
    requests: Mutex<Vec<(u32, Value, String)>>,
}

impl GrammarBackend {
    fn new(script: Script) -> Self {
        Self {
            script,
            requests: Mutex::new(Vec::new()),
        }
    }

    fn budgets(&self) -> Vec<u32> {
        self.requests.lock().unwrap().iter().map(|r| r.0).collect()
    }

    fn outputs(&self) -> Vec<String> {
        self.requests
            .lock()
            .unwrap()
            .iter()
            .map(|r| r.2.clone())
            .collect()
    }
}

#[async_trait::async_trait]
impl SummaryBackend for GrammarBackend {
    fn model_id(&self) -> String {
        "test:scripted-grammar".to_string()
    }

    fn is_deterministic(&self) -> bool {
        true
    }

    async fn complete(&self, request: &CompletionRequest) -> Result<Completion, BackendError> {
        let sampling = paperclip_llm::Sampling {
            temperature: request.sampling.temperature,
            seed: request.sampling.seed.unwrap_or(0),
        };
        let mut model = ScriptedModel::new(self.script);
        let generation = constrainer()
            .generate(
                &mut model,
                vec![BOS],
                &request.schema,
                request.max_tokens as usize,
                sampling,
            )
            .map_err(|e| BackendError::Model {
                detail: e.to_string(),
            })?;
        self.requests.lock().unwrap().push((
            request.max_tokens,
            request.schema.clone(),
            generation.text.clone(),
        ));
        Ok(Completion {
            text: generation.text,
            finish_reason: match generation.stop {
                Stop::Complete => FinishReason::Stop,
                Stop::Length => FinishReason::Length,
            },
            prompt_tokens: Some(1),
            completion_tokens: Some(generation.tokens.len() as u32),
            elapsed_secs: 0.0,
        })
    }
}

/// A backend that returns the same text for every request, as a server that ignores the
/// schema would.
struct FixedBackend(&'static str);

#[async_trait::async_trait]
impl SummaryBackend for FixedBackend {
    fn model_id(&self) -> String {
        "test:fixed".to_string()
    }

    async fn complete(&self, _request: &CompletionRequest) -> Result<Completion, BackendError> {
        Ok(Completion {
            text: self.0.to_string(),
            finish_reason: FinishReason::Stop,
            prompt_tokens: Some(1),
            completion_tokens: Some(40),
            elapsed_secs: 0.0,
        })
    }
}

/// Summarizes one abstract with `backend` through the stage, then reads the outcome back
/// from the cache on disk.
async fn summarize(
    backend: &dyn SummaryBackend,
    summarizer: &Summarizer,
    max_attempts: u32,
    data_dir: &Path,
) -> SummaryRecord {
    let settings = StageSettings {
        concurrency: 1,
        max_attempts,
        sampling: Sampling::default(),
        retry_delay: std::time::Duration::from_millis(1),
        cache_only: false,
        run_id: "user-reports".to_string(),
    };
    let proposals = [ProposalText {
        proposal_id: 17001,
        abstract_raw: "We image barred spiral galaxies to measure their bar lengths.".to_string(),
    }];
    let mut cache = SummaryCache::open(data_dir).await.unwrap();
    let outcome = summarize_proposals(&proposals, backend, &mut cache, summarizer, &settings)
        .await
        .unwrap();
    let key = &outcome.proposals[0].summary_key;
    let reopened = SummaryCache::open(data_dir).await.unwrap();
    reopened
        .get(key)
        .unwrap_or_else(|| panic!("no cache row for {key}"))
        .clone()
}

fn ok_summary(record: &SummaryRecord) -> &Summary {
    assert_eq!(
        (record.status, record.reason.as_deref()),
        (SummaryStatus::Ok, None),
        "{:?}: {:?}\noutput: {:?}",
        record.reason,
        record.detail,
        record.raw_output
    );
    record.summary.as_ref().expect("an ok row has a summary")
}

fn assert_summary_bounds(summary: &Summary) {
    for list in [&summary.objects_and_phenomena, &summary.science_use_cases] {
        assert!(
            (MIN_ITEMS..=MAX_ITEMS).contains(&list.len()),
            "{} items: {list:?}",
            list.len()
        );
        for item in list {
            let chars = item.chars().count();
            assert!((1..=MAX_ITEM_CHARS).contains(&chars), "{item:?}: {chars}");
        }
    }
}

/// Summary script: one item per list, each of 6 lowercase letters written one token at a
/// time, so the output takes a few dozen tokens.
fn short_items(c: &Candidate) -> f32 {
    let content = match c.open {
        Some(chars) if c.closes => {
            if chars >= 6 {
                50.0
            } else {
                -50.0
            }
        }
        Some(_) if c.content.iter().all(u8::is_ascii_lowercase) => 2.0,
        _ => 0.0,
    };
    content + structure_score(c, &[(b']', 20.0), (b',', -5.0)])
}

// ---------------------------------------------------------------------------------------
// Cases
// ---------------------------------------------------------------------------------------

// https://github.com/vllm-project/vllm/issues/12201
#[test]
fn exact_item_count_gives_two_names() {
    let schema = json!({
        "type": "object",
        "properties": {
            "names": {
                "type": "array",
                "items": {"type": "string", "maxLength": 5},
                "minItems": 2,
                "maxItems": 2
            }
        },
        "required": ["names"],
        "additionalProperties": false
    });
    // Longer strings and one more item are always preferred; closing the list never is.
    let script = |c: &Candidate| {
        length_score(c, usize::MAX) + structure_score(c, &[(b',', 20.0), (b']', -20.0)])
    };
    let (generation, _) = generate(&schema, script, 200);

    let value = validated(&schema, &generation.text);
    let names = strings(&value["names"]);
    assert_eq!(names.len(), 2, "{}", generation.text);
    assert!(names.iter().all(|n| n.chars().count() == 5), "{names:?}");
    let longer = json!({"names": ["a", "b", "c", "d"]});
    let file = SchemaFile::parse("names", &schema.to_string()).unwrap();
    assert!(
        !file.validator.is_valid(&longer),
        "the validator must reject four names"
    );
}

// https://github.com/vllm-project/vllm/issues/16880
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn summary_min_items_sent_and_enforced() {
    let dir = tempfile::tempdir().unwrap();
    // Closing a list right after it opens scores highest.
    let backend = GrammarBackend::new(|c| {
        let mut score = length_score(c, 0) + structure_score(c, &[(b',', -20.0)]);
        if c.structure.contains(&b']') {
            score += if c.after == Some(b'[') { 60.0 } else { 30.0 };
        }
        score
    });
    let summarizer = Summarizer::current().unwrap();
    let record = summarize(&backend, &summarizer, 1, dir.path()).await;

    let summary = ok_summary(&record);
    assert_summary_bounds(summary);
    assert_eq!(summary.objects_and_phenomena.len(), 1);
    assert_eq!(summary.science_use_cases.len(), 1);
    let requests = backend.requests.lock().unwrap();
    let sent = &requests[0].1;
    for list in ["objects_and_phenomena", "science_use_cases"] {
        assert_eq!(sent["properties"][list]["minItems"], MIN_ITEMS, "{sent}");
        assert_eq!(sent["properties"][list]["maxItems"], MAX_ITEMS, "{sent}");
    }
}

// https://github.com/ggml-org/llama.cpp/pull/6555
#[test]
fn wide_bounds_compile_and_stop_at_min() {
    let schema = list_schema(json!({"type": "integer"}), 10, 1000);
    let script = |c: &Candidate| {
        let mut score = 0.0;
        if c.bytes.starts_with(b"]") {
            score += 20.0;
        }
        if c.bytes.starts_with(b",") {
            score += 10.0;
        }
        if c.bytes.contains(&b'-') {
            score -= 5.0;
        }
        score
    };
    let (generation, compile_secs) = generate(&schema, script, 200);
    assert!(compile_secs < 2.0, "compiling took {compile_secs:.2} s");

    let value = validated(&schema, &generation.text);
    let values = value["values"].as_array().unwrap();
    assert_eq!(values.len(), 10, "{}", generation.text);
    assert!(values.iter().all(Value::is_i64));
}

// https://github.com/ggml-org/llama.cpp/pull/6555
#[test]
fn wide_bounds_stop_at_max_items() {
    let schema = list_schema(json!({"type": "integer"}), 10, 1000);
    let script = |c: &Candidate| {
        let mut score = 0.0;
        if c.bytes.starts_with(b",") {
            score += 20.0;
        }
        if c.bytes.starts_with(b"]") {
            score -= 20.0;
        }
        if c.bytes.contains(&b'-') {
            score -= 5.0;
        }
        score
    };
    // Every item here is one digit token and one separator token, so this budget covers
    // `{"values":[` + 999 × `0,` + `0]}`.
    let max_tokens = "{\"values\":[".len() + 2 * 1000 + "}".len();
    let (generation, _) = generate(&schema, script, max_tokens);

    let value = validated(&schema, &generation.text);
    let values = value["values"].as_array().unwrap();
    assert_eq!(values.len(), 1000, "the script always prefers another item");
}

// https://github.com/vllm-project/vllm/issues/45592
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn summary_items_keep_max_length() {
    let dir = tempfile::tempdir().unwrap();
    // Items never end by choice: only the length bound can close them.
    let backend = GrammarBackend::new(|c| {
        length_score(c, usize::MAX) + structure_score(c, &[(b']', 20.0), (b',', -5.0)])
    });
    let summarizer = Summarizer::current().unwrap();
    let record = summarize(&backend, &summarizer, 1, dir.path()).await;

    let summary = ok_summary(&record);
    assert_summary_bounds(summary);
    for item in summary
        .objects_and_phenomena
        .iter()
        .chain(&summary.science_use_cases)
    {
        assert_eq!(
            item.chars().count(),
            MAX_ITEM_CHARS,
            "the script grows every item to the bound: {item:?}"
        );
    }
}

// https://github.com/ggml-org/llama.cpp/issues/25746
#[test]
fn nested_pattern_holds_for_every_value() {
    let word = json!({"type": "string", "pattern": "^[a-z]+$"});
    let schema = json!({
        "type": "object",
        "properties": {
            "outer": {
                "type": "object",
                "properties": {
                    "first": word,
                    "second": word,
                    "tags": {"type": "array", "items": word, "minItems": 1, "maxItems": 3}
                },
                "required": ["first", "second", "tags"],
                "additionalProperties": false
            }
        },
        "required": ["outer"],
        "additionalProperties": false
    });
    let script = |c: &Candidate| {
        let mut score = length_score(c, 6) + structure_score(c, &[(b',', 20.0), (b']', -20.0)]);
        let off_pattern =
            |b: &u8| b.is_ascii_uppercase() || b.is_ascii_digit() || *b == b' ' || *b >= 0x80;
        if c.open.is_some() && c.content.iter().any(off_pattern) {
            score += 30.0;
        }
        score
    };
    let (generation, _) = generate(&schema, script, 300);

    let value = validated(&schema, &generation.text);
    let outer = &value["outer"];
    let mut words = strings(&outer["tags"]);
    words.extend(["first", "second"].map(|k| outer[k].as_str().unwrap().to_string()));
    for word in &words {
        assert!(
            !word.is_empty() && word.chars().all(|c| c.is_ascii_lowercase()),
            "{word:?} does not match ^[a-z]+$ in {}",
            generation.text
        );
    }
}

// https://github.com/dottxt-ai/outlines/issues/691
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn whitespace_script_gives_compact_json() {
    let dir = tempfile::tempdir().unwrap();
    // Any whitespace between tokens scores far above everything else.
    let backend = GrammarBackend::new(|c| {
        let whitespace = c
            .structure
            .iter()
            .filter(|b| b.is_ascii_whitespace())
            .count();
        short_items(c) + 100.0 * whitespace as f32
    });
    let summarizer = Summarizer::current().unwrap();
    let record = summarize(&backend, &summarizer, 1, dir.path()).await;

    ok_summary(&record);
    let raw = record.raw_output.as_deref().unwrap();
    assert_eq!(scan(raw).longest_whitespace_bytes, 0, "{raw:?}");
    let used = record.completion_tokens.unwrap();
    assert!(
        used < summarizer.max_tokens / 20,
        "{used} tokens of a budget of {}",
        summarizer.max_tokens
    );
}

/// Finds the shortest output of `short_items` under the summary schema, in tokens.
async fn short_items_tokens(data_dir: &Path) -> u32 {
    let backend = GrammarBackend::new(short_items);
    let record = summarize(
        &backend,
        &Summarizer::current().unwrap(),
        1,
        &data_dir.join("measure"),
    )
    .await;
    ok_summary(&record);
    record.completion_tokens.unwrap()
}

// https://github.com/getzep/graphiti/pull/1053
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cut_output_retried_with_larger_budget() {
    let dir = tempfile::tempdir().unwrap();
    let needed = short_items_tokens(dir.path()).await;
    let mut summarizer = Summarizer::current().unwrap();
    summarizer.max_tokens = needed / 2 + 1;
    let backend = GrammarBackend::new(short_items);
    let record = summarize(&backend, &summarizer, 3, dir.path()).await;

    ok_summary(&record);
    let first = summarizer.max_tokens;
    assert_eq!(
        backend.budgets(),
        [first, 2 * first],
        "the cut output is not accepted"
    );
    let outputs = backend.outputs();
    assert!(
        serde_json::from_str::<Value>(&outputs[0]).is_err(),
        "the first output is cut: {:?}",
        outputs[0]
    );
    assert_eq!((record.attempts, record.max_tokens), (2, 2 * first));
    assert_eq!(record.finish_reason.as_deref(), Some("stop"));
}

// https://github.com/googleapis/python-genai/issues/2266
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn repeated_cut_reported_with_position() {
    let dir = tempfile::tempdir().unwrap();
    let needed = short_items_tokens(dir.path()).await;
    let mut summarizer = Summarizer::current().unwrap();
    summarizer.max_tokens = needed / 4;
    let first = summarizer.max_tokens;
    assert!(first >= 2, "the output takes {needed} tokens");
    let backend = GrammarBackend::new(short_items);
    let record = summarize(&backend, &summarizer, 2, dir.path()).await;

    assert_eq!(backend.budgets(), [first, 2 * first]);
    let outputs = backend.outputs();
    assert!(
        outputs[1].len() > outputs[0].len() && outputs[1].starts_with(&outputs[0]),
        "the retry gets further: {outputs:?}"
    );
    assert_eq!(record.status, SummaryStatus::Rejected);
    assert_eq!(record.reason.as_deref(), Some("truncated"));
    assert_eq!(record.finish_reason.as_deref(), Some("length"));
    let detail = record.detail.as_deref().unwrap();
    let last = &outputs[1];
    assert!(
        detail.contains(&format!("stops after {} bytes", last.len())),
        "{detail}"
    );
    assert!(
        detail.contains(&format!("the budget was {} tokens", 2 * first)),
        "{detail}"
    );
    assert_eq!(
        record.max_tokens,
        2 * first,
        "the budget of the last request"
    );
    assert_eq!(record.raw_output.as_deref(), Some(last.as_str()));
}

// https://github.com/abetlen/llama-cpp-python/pull/1721
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn control_characters_never_reach_a_summary() {
    let dir = tempfile::tempdir().unwrap();
    // A raw BEL or line feed inside a string, then their escapes, score highest.
    let backend = GrammarBackend::new(|c| {
        let mut score = short_items(c);
        if c.open.is_some() {
            if c.content.contains(&0x07) || c.content.contains(&b'\n') {
                score += 100.0;
            } else if contains(&c.content, b"\\u0007") || contains(&c.content, b"\\n") {
                score += 90.0;
            }
        }
        score
    });
    let summarizer = Summarizer::current().unwrap();
    let record = summarize(&backend, &summarizer, 1, dir.path()).await;
    let summary = ok_summary(&record);
    let text = summary.caption();
    assert!(!text.chars().any(char::is_control), "{text:?}");
    assert!(!record.raw_output.unwrap().contains('\\'));

    // A server that writes a raw BEL into a string is rejected, with where it is.
    let dir = tempfile::tempdir().unwrap();
    let backend = FixedBackend(
        "{\"objects_and_phenomena\":[\"dwarf\u{7} galaxies\"],\"science_use_cases\":[\"ages\"]}",
    );
    let record = summarize(&backend, &summarizer, 1, dir.path()).await;
    assert_eq!(record.reason.as_deref(), Some("raw_control_character"));
    let detail = record.detail.unwrap();
    assert!(
        detail.contains("U+0007") && detail.contains("/objects_and_phenomena/0"),
        "{detail}"
    );
}

// https://github.com/ggml-org/llama.cpp/issues/21943
#[test]
fn digit_and_non_space_classes_hold() {
    let schema = list_schema(json!({"type": "string", "pattern": "^\\d{3}-\\S+$"}), 2, 3);
    let script = |c: &Candidate| {
        let mut score = length_score(c, 8) + structure_score(c, &[(b',', 20.0), (b']', -20.0)]);
        if c.open.is_some() {
            if contains(&c.content, "٣".as_bytes()) {
                score += 40.0;
            }
            if contains(&c.content, "\u{A0}".as_bytes())
                || contains(&c.content, "\u{2028}".as_bytes())
            {
                score += 35.0;
            }
            if c.content.iter().any(u8::is_ascii_whitespace) {
                score += 30.0;
            }
        }
        score
    };
    let (generation, _) = generate(&schema, script, 400);

    let value = validated(&schema, &generation.text);
    for code in strings(&value["values"]) {
        let chars: Vec<char> = code.chars().collect();
        assert!(chars.len() >= 5, "{code:?}");
        assert!(chars[..3].iter().all(char::is_ascii_digit), "{code:?}");
        assert_eq!(chars[3], '-', "{code:?}");
        assert!(
            !chars[4..]
                .iter()
                .any(|c| c.is_whitespace() || *c == '\u{FEFF}'),
            "{code:?}"
        );
    }
}

// https://github.com/jqlang/jq/issues/1509
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn duplicate_keys_impossible_and_rejected() {
    let dir = tempfile::tempdir().unwrap();
    // After the first list, another `objects_and_phenomena` key scores highest.
    let backend = GrammarBackend::new(|c| {
        let mut score = short_items(c);
        if c.open == Some(0) && c.commas >= 1 && c.content.starts_with(b"objects") {
            score += 100.0;
        }
        score
    });
    let summarizer = Summarizer::current().unwrap();
    let record = summarize(&backend, &summarizer, 1, dir.path()).await;
    ok_summary(&record);
    let raw = record.raw_output.unwrap();
    assert_eq!(raw.matches("\"objects_and_phenomena\"").count(), 1, "{raw}");

    // Text that names a key twice is rejected, not resolved to the last value.
    let dir = tempfile::tempdir().unwrap();
    let backend = FixedBackend(
        r#"{"objects_and_phenomena":["dwarf galaxies"],"science_use_cases":["ages"],"objects_and_phenomena":["quasars"]}"#,
    );
    let record = summarize(&backend, &summarizer, 1, dir.path()).await;
    assert_eq!(record.status, SummaryStatus::Rejected);
    assert_eq!(record.reason.as_deref(), Some("duplicate_key"));
    assert!(
        record.detail.unwrap().contains("objects_and_phenomena"),
        "the detail names the key"
    );
}

// https://github.com/pydantic/pydantic/issues/604
#[test]
fn generated_schema_bounds_reach_grammar() {
    let schema = generate_schema();
    for list in ["objects_and_phenomena", "science_use_cases"] {
        assert_eq!(
            schema["properties"][list]["minItems"], MIN_ITEMS,
            "{schema}"
        );
        assert_eq!(
            schema["properties"][list]["maxItems"], MAX_ITEMS,
            "{schema}"
        );
    }
    // Closing each list right after it opens scores highest.
    let script = |c: &Candidate| {
        let mut score = length_score(c, 0);
        if c.structure.contains(&b']') {
            score += if c.after == Some(b'[') { 60.0 } else { 30.0 };
        }
        score
    };
    let (generation, _) = generate(&schema, script, 400);

    let value = validated(&schema, &generation.text);
    for list in ["objects_and_phenomena", "science_use_cases"] {
        assert_eq!(strings(&value[list]).len(), 1, "{}", generation.text);
    }
    let empty = json!({"objects_and_phenomena": [], "science_use_cases": ["ages"]});
    let file = SchemaFile::parse("generated", &schema.to_string()).unwrap();
    assert!(!file.validator.is_valid(&empty));
}

// https://github.com/anthropics/claude-code/issues/55539
#[test]
fn thirty_optional_properties_compile_and_generate() {
    let names: Vec<String> = (1..=30).map(|i| format!("p{i:02}")).collect();
    let properties: serde_json::Map<String, Value> = names
        .iter()
        .map(|name| (name.clone(), json!({"type": "string"})))
        .collect();
    let schema = json!({
        "type": "object",
        "properties": properties,
        "additionalProperties": false
    });
    let script =
        |c: &Candidate| length_score(c, 4) + structure_score(c, &[(b',', 20.0), (b'}', -20.0)]);
    let (generation, compile_secs) = generate(&schema, script, 2000);
    assert!(compile_secs < 2.0, "compiling took {compile_secs:.2} s");

    let value = validated(&schema, &generation.text);
    // Properties come in declared order; the script's longest first key is `p10`, and from
    // there it adds every property it may.
    let keys: Vec<&String> = value.as_object().unwrap().keys().collect();
    assert_eq!(
        keys.first().map(|k| k.as_str()),
        Some("p10"),
        "{}",
        generation.text
    );
    assert_eq!(keys, names[9..].iter().collect::<Vec<_>>());
}
