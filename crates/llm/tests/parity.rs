//! Parity of [`Tokenizer`] with llama.cpp: starts the cached `llama-server` on loopback
//! with the cached Gemma 3 GGUF and compares ids from `POST /tokenize` for the 112
//! real abstracts of the shared test data and for edge strings.
//!
//! Skips (prints "skipping: ..." and passes) when the model or server is not in
//! `~/.cache/paperclip`, unless `PAPERCLIP_REQUIRE_LLAMA=1`; the abstract comparison skips
//! when the shared data is absent, unless `PAPERCLIP_REQUIRE_SHARED_DATA=1`.
//! `PAPERCLIP_GGUF` and `PAPERCLIP_LLAMA_SERVER` override the two paths.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use paperclip_llm::{EncodeOptions, Gguf, TokenId, Tokenizer};

fn require(var: &str) -> bool {
    std::env::var(var).as_deref() == Ok("1")
}

fn cache_dir() -> Option<PathBuf> {
    std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache/paperclip"))
}

fn find_model() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("PAPERCLIP_GGUF") {
        return Some(PathBuf::from(p));
    }
    let dir = cache_dir()?.join("models");
    let mut models: Vec<PathBuf> = std::fs::read_dir(dir)
        .ok()?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "gguf"))
        .collect();
    models.sort();
    models.into_iter().next()
}

fn find_server() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("PAPERCLIP_LLAMA_SERVER") {
        return Some(PathBuf::from(p));
    }
    let p = cache_dir()?.join("llama-server/0.3.36/llama-server");
    p.is_file().then_some(p)
}

/// Kills the server by PID when dropped, also when the test panics.
struct Server {
    child: Child,
    port: u16,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Server {
    fn start(binary: &Path, model: &Path) -> Server {
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("no free loopback port")
            .port();
        let child = Command::new(binary)
            .args(["-m".as_ref(), model.as_os_str()])
            .args(["--host", "127.0.0.1", "--port", &port.to_string()])
            .args(["-t", "1", "-c", "2048", "-np", "1"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}", binary.display()));
        let mut server = Server { child, port };
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Ok((200, _)) = server.request("GET", "/health", None) {
                return server;
            }
            if let Ok(Some(status)) = server.child.try_wait() {
                panic!("llama-server exited during start-up with {status}");
            }
            assert!(
                Instant::now() < deadline,
                "llama-server on port {port} not healthy after 60 s"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Minimal HTTP/1.1 client over loopback: returns (status, body).
    fn request(
        &self,
        method: &str,
        path: &str,
        body: Option<&str>,
    ) -> std::io::Result<(u16, String)> {
        let mut stream = TcpStream::connect(("127.0.0.1", self.port))?;
        stream.set_read_timeout(Some(Duration::from_secs(30)))?;
        let body = body.unwrap_or("");
        write!(
            stream,
            "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        )?;
        let mut reader = BufReader::new(stream);
        let mut line = String::new();
        reader.read_line(&mut line)?;
        let status: u16 = line
            .split_whitespace()
            .nth(1)
            .and_then(|s| s.parse().ok())
            .unwrap_or(0);
        let mut chunked = false;
        loop {
            line.clear();
            reader.read_line(&mut line)?;
            if line.trim_end().is_empty() {
                break;
            }
            let lower = line.to_ascii_lowercase();
            if lower.starts_with("transfer-encoding:") && lower.contains("chunked") {
                chunked = true;
            }
        }
        let mut raw = Vec::new();
        reader.read_to_end(&mut raw)?;
        if chunked {
            raw = dechunk(&raw);
        }
        Ok((status, String::from_utf8_lossy(&raw).into_owned()))
    }

    fn tokenize(&self, text: &str, parse_special: bool) -> Vec<TokenId> {
        let body = serde_json::json!({
            "content": text,
            "add_special": false,
            "parse_special": parse_special,
        })
        .to_string();
        let (status, reply) = self
            .request("POST", "/tokenize", Some(&body))
            .expect("POST /tokenize failed");
        assert_eq!(status, 200, "POST /tokenize: {reply}");
        let v: serde_json::Value = serde_json::from_str(&reply).expect("reply is not JSON");
        v["tokens"]
            .as_array()
            .unwrap_or_else(|| panic!("no tokens in {reply}"))
            .iter()
            .map(|t| t.as_u64().expect("token id") as TokenId)
            .collect()
    }
}

impl Server {
    fn detokenize(&self, ids: &[TokenId]) -> String {
        let body = serde_json::json!({ "tokens": ids }).to_string();
        let (status, reply) = self
            .request("POST", "/detokenize", Some(&body))
            .expect("POST /detokenize failed");
        assert_eq!(status, 200, "POST /detokenize: {reply}");
        let v: serde_json::Value = serde_json::from_str(&reply).expect("reply is not JSON");
        v["content"]
            .as_str()
            .unwrap_or_else(|| panic!("no content in {reply}"))
            .to_string()
    }
}

fn dechunk(raw: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    let mut rest = raw;
    while let Some(eol) = rest.windows(2).position(|w| w == b"\r\n") {
        let size_text = String::from_utf8_lossy(&rest[..eol]);
        let size = usize::from_str_radix(size_text.trim().split(';').next().unwrap_or(""), 16)
            .unwrap_or(0);
        if size == 0 {
            break;
        }
        let start = eol + 2;
        out.extend_from_slice(&rest[start..(start + size).min(rest.len())]);
        rest = &rest[(start + size + 2).min(rest.len())..];
    }
    out
}

/// Describes the first difference between our ids and llama.cpp's, with the byte
/// position in `text` where it starts.
fn first_mismatch(
    tok: &Tokenizer,
    text: &str,
    ours: &[TokenId],
    theirs: &[TokenId],
) -> Option<String> {
    if ours == theirs {
        return None;
    }
    let i = ours
        .iter()
        .zip(theirs)
        .position(|(a, b)| a != b)
        .unwrap_or(ours.len().min(theirs.len()));
    let offset = tok.decode(&ours[..i]).map(|s| s.len()).unwrap_or(0);
    let mut lo = offset.saturating_sub(20);
    while !text.is_char_boundary(lo) {
        lo -= 1;
    }
    let mut hi = (offset + 30).min(text.len());
    while !text.is_char_boundary(hi) {
        hi += 1;
    }
    let piece = |ids: &[TokenId]| -> Vec<String> {
        ids.iter()
            .take(4)
            .map(|&id| {
                format!(
                    "{id}:{:?}",
                    tok.token(id).map(|t| t.text.as_str()).unwrap_or("?")
                )
            })
            .collect()
    };
    Some(format!(
        "token {i}, text byte {offset} near {:?}: ours {:?} vs llama.cpp {:?} (lengths {} vs {})",
        &text[lo..hi],
        piece(&ours[i..]),
        piece(&theirs[i.min(theirs.len())..]),
        ours.len(),
        theirs.len()
    ))
}

const EDGE_CASES: &[&str] = &[
    "",
    " ",
    "  ",
    "hello",
    " leading space",
    "trailing space ",
    "  two leading and two trailing  ",
    "double  space   triple    quad",
    "line one\nline two\n\nafter blank\n",
    "\n\n\n",
    "tab\there\t\tdouble tab",
    " \t \n mixed whitespace \r\n",
    "ünïcødé 日本語 Ελληνικά русский العربية",
    "emoji 🚀🔭✨ and 👩‍🔬 zwj and 🇺🇸 flag",
    "<start_of_turn>user\nHello<end_of_turn>\n<start_of_turn>model\n",
    "<bos>literal bos and <eos> and <pad>",
    "<b>bold</b> <i>italic</i> <br>",
    "{\"objects_and_phenomena\": [\"SMC\", \"H II regions\"], \"x\": 1.5e-3}",
    "λ = 6563 Å, T ≈ 10⁴ K, M☉, 10^{12} M_sun",
    "\u{0}\u{1}\u{7f} control chars",
    "\u{fffd} replacement, \u{200b} zero width, \u{a0} nbsp",
    "a\u{2581}b literal lower one eighth block",
];

#[test]
fn parity_with_llama_server() {
    let required = require("PAPERCLIP_REQUIRE_LLAMA");
    let (Some(model), Some(binary)) = (find_model(), find_server()) else {
        assert!(
            !required,
            "GGUF model or llama-server not found under ~/.cache/paperclip and PAPERCLIP_REQUIRE_LLAMA=1"
        );
        println!("skipping: GGUF model or llama-server not found under ~/.cache/paperclip");
        return;
    };

    let t0 = Instant::now();
    let gguf = Gguf::open(&model).expect("read GGUF metadata");
    let t1 = Instant::now();
    let tok = Tokenizer::from_gguf(&gguf).expect("build tokenizer");
    let t2 = Instant::now();
    println!(
        "{}: {} tokens; metadata read {:.0} ms, tokenizer built {:.0} ms",
        model.display(),
        tok.n_vocab(),
        (t1 - t0).as_secs_f64() * 1e3,
        (t2 - t1).as_secs_f64() * 1e3
    );
    println!(
        "bos {:?}, eos {:?}, unk {:?}, add_bos {}, add_space_prefix {}",
        tok.bos(),
        tok.eos(),
        tok.unk(),
        tok.wants_bos(),
        tok.adds_space_prefix()
    );

    // A truncated copy of the real file fails with an error, without a huge allocation.
    let mut head = vec![0u8; 1 << 20];
    std::fs::File::open(&model)
        .and_then(|mut f| f.read_exact(&mut head))
        .expect("read the first MiB of the model");
    let err = Gguf::from_reader(&head[..], head.len() as u64, model.clone()).unwrap_err();
    println!("first MiB only: {err}");
    assert!(err.to_string().contains("byte offset"), "{err}");

    let server = Server::start(&binary, &model);

    // Edge strings, with and without special-token parsing.
    let mut failures = Vec::new();
    for &text in EDGE_CASES {
        for parse_special in [false, true] {
            let ours = tok.encode_with(
                text,
                EncodeOptions {
                    add_bos: false,
                    parse_special,
                },
            );
            let theirs = server.tokenize(text, parse_special);
            if let Some(m) = first_mismatch(&tok, text, &ours, &theirs) {
                failures.push(format!("edge {text:?} parse_special={parse_special}: {m}"));
            }
        }
        let ids = tok.encode(text, true);
        let decoded = tok.decode(&ids).unwrap();
        // A literal U+2581 decodes to a space, as in llama.cpp.
        if decoded != text.replace('\u{2581}', " ") {
            failures.push(format!("edge {text:?}: decode gave {decoded:?}"));
        }
        let rendered = tok.decode_with(&ids, true).unwrap();
        let detokenized = server.detokenize(&ids);
        if rendered != detokenized {
            failures.push(format!(
                "edge {text:?}: decode_with(special) gave {rendered:?}, /detokenize {detokenized:?}"
            ));
        }
    }
    println!(
        "edge cases: {} strings x 2 modes, {} failures",
        EDGE_CASES.len(),
        failures.len()
    );

    // Decoding one token of each type, and a few others, as /detokenize does.
    let mut probe: Vec<TokenId> = vec![0, 1, 2, 3, 105, 106, 107, 108, 236_743, 255_999];
    let mut seen = Vec::new();
    for id in 0..tok.n_vocab() as TokenId {
        let kind = tok.token(id).unwrap().kind;
        if !seen.contains(&kind) {
            seen.push(kind);
            probe.push(id);
        }
    }
    for id in probe
        .into_iter()
        .filter(|&id| (id as usize) < tok.n_vocab())
    {
        let ours = tok.decode_with(&[id], true).unwrap();
        let theirs = server.detokenize(&[id]);
        if ours != theirs {
            failures.push(format!(
                "decode of id {id} ({:?}): ours {ours:?}, /detokenize {theirs:?}",
                tok.token(id).unwrap()
            ));
        }
    }
    println!("token types present: {seen:?}");

    // With BOS, as the server adds it.
    let with_bos = tok.encode("hi", true);
    let body = serde_json::json!({"content": "hi", "add_special": true}).to_string();
    let (_, reply) = server.request("POST", "/tokenize", Some(&body)).unwrap();
    let v: serde_json::Value = serde_json::from_str(&reply).unwrap();
    let theirs: Vec<TokenId> = v["tokens"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t.as_u64().unwrap() as TokenId)
        .collect();
    assert_eq!(with_bos, theirs, "add_special/BOS differs");

    // The 112 real abstracts.
    let data = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../../shared/data/abstracts/captions-paperclip.txt");
    match std::fs::read_to_string(&data) {
        Err(e) => {
            assert!(
                !require("PAPERCLIP_REQUIRE_SHARED_DATA"),
                "{} unreadable ({e}) and PAPERCLIP_REQUIRE_SHARED_DATA=1",
                data.display()
            );
            println!("skipping abstracts: {} unreadable: {e}", data.display());
        }
        Ok(all) => {
            let abstracts: Vec<&str> = all.lines().collect();
            let start = Instant::now();
            let ours: Vec<Vec<TokenId>> = abstracts.iter().map(|a| tok.encode(a, false)).collect();
            let elapsed = start.elapsed();
            let n_tokens: usize = ours.iter().map(Vec::len).sum();
            let n_bytes: usize = abstracts.iter().map(|a| a.len()).sum();
            let mut identical = 0;
            for (i, (text, ours)) in abstracts.iter().zip(&ours).enumerate() {
                let theirs = server.tokenize(text, false);
                match first_mismatch(&tok, text, ours, &theirs) {
                    None => identical += 1,
                    Some(m) => failures.push(format!("abstract line {}: {m}", i + 1)),
                }
                let decoded = tok.decode(ours).unwrap();
                if decoded != *text {
                    failures.push(format!("abstract line {}: decode(encode(x)) != x", i + 1));
                }
                // ids without BOS, so there is no special token to render
                if i < 8 && server.detokenize(ours) != decoded {
                    failures.push(format!(
                        "abstract line {}: decode differs from /detokenize",
                        i + 1
                    ));
                }
            }
            println!(
                "abstracts: {identical}/{} identical to llama.cpp; {n_tokens} tokens from {n_bytes} bytes encoded in {:.1} ms ({:.0} tokens/s)",
                abstracts.len(),
                elapsed.as_secs_f64() * 1e3,
                n_tokens as f64 / elapsed.as_secs_f64()
            );
        }
    }

    // The multi-line sample catalogue as one string (newlines, rules of dashes).
    let sample = data.with_file_name("abstracts-sample.cat");
    if let Ok(text) = std::fs::read_to_string(&sample) {
        let ours = tok.encode(&text, false);
        match first_mismatch(&tok, &text, &ours, &server.tokenize(&text, false)) {
            None => println!("abstracts-sample.cat: identical ({} tokens)", ours.len()),
            Some(m) => failures.push(format!("abstracts-sample.cat: {m}")),
        }
    }

    // Deterministic random mixes of awkward fragments, both parse modes.
    let pool = [
        " ",
        "  ",
        "   ",
        "\n",
        "\n\n",
        "\t",
        "\r\n",
        "the",
        "galaxy",
        "▁",
        "▁▁",
        "<0x41>",
        "<start_of_turn>",
        "<end_of_turn>",
        "<bos>",
        "<b>",
        "</b>",
        "<unused0>",
        "[multimodal]",
        "日本語",
        "🚀",
        "👩‍🔬",
        "é",
        "e\u{301}",
        "ﬁ",
        "Å",
        "Ω",
        "\u{0}",
        "-----",
        "...",
        "'s",
        "HST",
        "1998",
        "3.14",
        "{\"",
        "\":",
        "_",
        "@",
        "#",
        "αβγ",
        "\u{10ffff}",
        "\u{e000}",
    ];
    let mut state: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut next = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    let mut fuzz_failures = 0;
    for _ in 0..300 {
        let n = 1 + (next() % 12) as usize;
        let text: String = (0..n)
            .map(|_| pool[(next() % pool.len() as u64) as usize])
            .collect();
        for parse_special in [false, true] {
            let ours = tok.encode_with(
                &text,
                EncodeOptions {
                    add_bos: false,
                    parse_special,
                },
            );
            let theirs = server.tokenize(&text, parse_special);
            if let Some(m) = first_mismatch(&tok, &text, &ours, &theirs) {
                fuzz_failures += 1;
                failures.push(format!("fuzz {text:?} parse_special={parse_special}: {m}"));
            }
        }
    }
    println!("fuzz: 300 strings x 2 modes, {fuzz_failures} failures");

    drop(server);
    assert!(
        failures.is_empty(),
        "{} mismatches:\n{}",
        failures.len(),
        failures.join("\n")
    );
}
