//! `paperclip judge` on the shapes dataset with tiny CLIP models at random starts: the
//! library call with scripted judges (scores, unjudged pairs, one request per distinct
//! prompt), and the command against a scripted chat completions server on loopback.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use axum::Json;
use axum::extract::State;
use axum::response::Response;
use paperclip::eval::ModelOptions;
use paperclip::eval::judge::{JudgeOptions, JudgeReport, judge};
use paperclip::summaries::{
    BackendError, Completion, CompletionRequest, FinishReason, SummaryBackend,
};
use paperclip::train::data::{SplitData, open_version};
use paperclip_clip::{ClipConfig, ClipModel};
use serde_json::{Value, json};

use crate::support::paperclip;
use crate::train::{shapes, write_config};

const QUERIES: [&str; 3] = ["red circle", "blue square", "yellow cross"];

/// Saves the tiny model at the random initialization of `seed` as a model folder.
fn random_start(dir: &Path, seed: u64) -> PathBuf {
    let config = ClipConfig::from_json_file(&dir.join("tiny.json")).unwrap();
    let model = ClipModel::random(&config, seed, &candle_core::Device::Cpu).unwrap();
    let out = dir.join(format!("random-start-{seed}"));
    paperclip_clip::checkpoint::save_model(&model, &out).unwrap();
    out
}

/// Publishes the shapes dataset and writes the tiny model files and two random starts.
async fn setup(dir: &Path) -> Vec<(String, String)> {
    shapes(dir, 32).await;
    write_config(dir, "shapes", 1, "");
    [1, 2]
        .into_iter()
        .map(|seed| {
            let path = random_start(dir, seed).display().to_string();
            (format!("start-{seed}"), path)
        })
        .collect()
}

fn options(dir: &Path, checkpoints: Vec<(String, String)>) -> JudgeOptions {
    JudgeOptions {
        data_dir: dir.to_path_buf(),
        dataset: "shapes@1".into(),
        split: "val".into(),
        abstract_field: "caption".into(),
        checkpoints,
        model: ModelOptions {
            vocabulary: Some(dir.join("merges.txt")),
            ..ModelOptions::default()
        },
        batch_size: 64,
        queries: QUERIES.iter().map(|q| q.to_string()).collect(),
        k: 10,
        tfidf: true,
        seed: 42,
        concurrency: 2,
    }
}

/// Returns the text between `"` after `label` on its line of the prompt.
fn quoted(prompt: &str, label: &str) -> String {
    let line = prompt
        .lines()
        .find_map(|line| line.strip_prefix(label))
        .unwrap_or_else(|| panic!("no {label:?} line in the prompt {prompt}"));
    line.trim().trim_matches('"').to_string()
}

/// Judges a pair relevant when the abstract contains the query's first word, and records the
/// (query, abstract) of every request. Queries in `malformed` get an output that is not
/// JSON; queries in `failing` get a backend error.
#[derive(Default)]
struct WordJudge {
    requests: Mutex<Vec<(String, String)>>,
    malformed: Vec<&'static str>,
    failing: Vec<&'static str>,
}

#[async_trait::async_trait]
impl SummaryBackend for WordJudge {
    fn model_id(&self) -> String {
        "test:first-word".into()
    }

    async fn complete(&self, request: &CompletionRequest) -> Result<Completion, BackendError> {
        assert_eq!(request.sampling.temperature, 0.0);
        assert_eq!(request.sampling.seed, Some(42));
        let query = quoted(&request.prompt, "Query: ");
        let abstract_text = quoted(&request.prompt, "Abstract: ");
        self.requests
            .lock()
            .unwrap()
            .push((query.clone(), abstract_text.clone()));
        if self.failing.contains(&query.as_str()) {
            return Err(BackendError::Model {
                detail: "scripted failure".into(),
            });
        }
        let text = if self.malformed.contains(&query.as_str()) {
            "{\"relevant\": maybe}".to_string()
        } else {
            let first_word = query.split_whitespace().next().unwrap();
            json!({"relevant": abstract_text.contains(first_word)}).to_string()
        };
        Ok(Completion {
            text,
            finish_reason: FinishReason::Stop,
            prompt_tokens: None,
            completion_tokens: None,
            elapsed_secs: 0.0,
        })
    }
}

/// Returns the caption of every validation sample, in split order.
async fn captions(dir: &Path) -> Vec<String> {
    let record = open_version(dir, "shapes", "1").await.unwrap();
    let data = SplitData::load(dir, &record, "val", "caption", 0, None).unwrap();
    data.samples.into_iter().map(|s| s.caption).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn judge_scores_match_hand_count() {
    let dir = tempfile::tempdir().unwrap();
    let checkpoints = setup(dir.path()).await;
    let backend = WordJudge::default();

    let report = judge(&options(dir.path(), checkpoints), &backend, &|_, _, _| {})
        .await
        .expect("judging runs");

    let captions = captions(dir.path()).await;
    let labels: Vec<&str> = report.methods.iter().map(|m| m.label.as_str()).collect();
    assert_eq!(labels, ["start-1", "start-2", "tf-idf"]);
    assert_eq!(report.samples, 128);
    assert_eq!(report.unjudged(), 0);
    for method in &report.methods {
        let mut method_relevant = 0;
        for (query, scored) in QUERIES.iter().zip(&method.queries) {
            assert_eq!(scored.query, *query);
            assert_eq!(scored.hits.len(), 10, "{} {query}", method.label);
            let first_word = query.split_whitespace().next().unwrap();
            let relevant = scored
                .hits
                .iter()
                .filter(|h| captions[h.sample_index].contains(first_word))
                .count();
            for pair in scored.hits.windows(2) {
                assert!(pair[0].similarity >= pair[1].similarity, "{scored:?}");
            }
            for (rank, hit) in scored.hits.iter().enumerate() {
                assert_eq!(hit.rank, rank + 1);
                assert_eq!(
                    hit.answer,
                    Some(captions[hit.sample_index].contains(first_word))
                );
            }
            assert_eq!(scored.tally.relevant, relevant, "{} {query}", method.label);
            assert_eq!(scored.tally.judged, 10);
            assert_eq!(scored.tally.score, Some(relevant as f64 / 10.0));
            method_relevant += relevant;
        }
        assert_eq!(method.tally.pairs, 30);
        assert_eq!(method.tally.relevant, method_relevant, "{}", method.label);
        assert_eq!(method.tally.score, Some(method_relevant as f64 / 30.0));
    }

    // The TF-IDF baseline ranks the captions naming both query words first.
    let tfidf = &report.methods[2];
    for (query, scored) in QUERIES.iter().zip(&tfidf.queries) {
        let names_both = |caption: &str| query.split_whitespace().all(|w| caption.contains(w));
        let both = captions.iter().filter(|c| names_both(c)).count();
        assert!(both > 0, "no caption names {query}");
        for hit in &scored.hits[..both.min(10)] {
            let caption = &captions[hit.sample_index];
            assert!(
                names_both(caption),
                "{query}: rank {} {caption:?}",
                hit.rank
            );
        }
    }
    let markdown = report.to_markdown();
    assert!(
        markdown.contains("| method | score | relevant | judged | unjudged |"),
        "{markdown}"
    );
    assert!(
        markdown.contains("| query | start-1 | start-2 | tf-idf |"),
        "{markdown}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn judge_requests_each_distinct_prompt_once() {
    let dir = tempfile::tempdir().unwrap();
    let checkpoints = setup(dir.path()).await;
    let backend = WordJudge::default();

    let report = judge(&options(dir.path(), checkpoints), &backend, &|_, _, _| {})
        .await
        .expect("judging runs");

    let captions = captions(dir.path()).await;
    let distinct: BTreeSet<(String, String)> = report
        .methods
        .iter()
        .flat_map(|m| {
            m.queries.iter().flat_map(|q| {
                q.hits
                    .iter()
                    .map(|h| (q.query.clone(), captions[h.sample_index].clone()))
            })
        })
        .collect();
    let requests = backend.requests.lock().unwrap().clone();
    let requested: BTreeSet<(String, String)> = requests.iter().cloned().collect();
    assert_eq!(requests.len(), requested.len(), "a prompt was sent twice");
    assert_eq!(requested, distinct);
    assert_eq!(report.judge_requests, requests.len());
    // 64 captions over 128 images: hits repeat captions, so fewer requests than pairs.
    assert!(
        requests.len() < report.pairs(),
        "{} requests for {} pairs",
        requests.len(),
        report.pairs()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn judge_counts_unparseable_answers_apart() {
    let dir = tempfile::tempdir().unwrap();
    let checkpoints = setup(dir.path()).await;
    let backend = WordJudge {
        malformed: vec!["blue square"],
        failing: vec!["yellow cross"],
        ..WordJudge::default()
    };
    let mut options = options(dir.path(), checkpoints[..1].to_vec());
    options.tfidf = false;

    let report = judge(&options, &backend, &|_, _, _| {})
        .await
        .expect("judging runs");

    let method = &report.methods[0];
    assert_eq!(method.tally.pairs, 30);
    assert_eq!(method.tally.unjudged, 20);
    assert_eq!(method.tally.judged, 10);
    let red = &method.queries[0];
    assert_eq!(red.tally.unjudged, 0);
    assert_eq!(
        method.tally.score,
        Some(red.tally.relevant as f64 / 10.0),
        "only the judged pairs count"
    );
    for (scored, reason) in method.queries[1..]
        .iter()
        .zip(["is not {\"relevant\"", "scripted failure"])
    {
        assert_eq!(scored.tally.unjudged, 10, "{}", scored.query);
        assert_eq!(scored.tally.score, None);
        for hit in &scored.hits {
            assert_eq!(hit.answer, None);
            let text = hit.unjudged_reason.as_deref().unwrap_or_default();
            assert!(text.contains(reason), "{}: {text}", scored.query);
        }
    }
    let markdown = report.to_markdown();
    assert!(markdown.contains("## Unjudged pairs"), "{markdown}");
    assert!(markdown.contains("| - (10 unjudged) |"), "{markdown}");
}

/// Requests received by the scripted chat server.
#[derive(Clone, Default)]
struct ChatServer {
    prompts: Arc<Mutex<Vec<String>>>,
}

/// Judges like [`WordJudge`], with output that is not JSON for the query "comets".
async fn chat_completions(State(server): State<ChatServer>, Json(body): Json<Value>) -> Response {
    let prompt = body["messages"][0]["content"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    server.prompts.lock().unwrap().push(prompt.clone());
    let query = quoted(&prompt, "Query: ");
    let abstract_text = quoted(&prompt, "Abstract: ");
    let content = if query == "comets" {
        "I think so".to_string()
    } else {
        let first_word = query.split_whitespace().next().unwrap();
        json!({"relevant": abstract_text.contains(first_word)}).to_string()
    };
    crate::support::chat_answer(&content)
}

async fn start_chat_server(server: ChatServer) -> String {
    let app = axum::Router::new()
        .route(
            "/v1/chat/completions",
            axum::routing::post(chat_completions),
        )
        .with_state(server);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    format!("http://{address}")
}

fn read_report(path: &Path) -> JudgeReport {
    serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn judge_command_writes_reports_and_fails_on_unjudged() {
    let dir = tempfile::tempdir().unwrap();
    let checkpoints = setup(dir.path()).await;
    let server = ChatServer::default();
    let url = start_chat_server(server.clone()).await;
    let vocabulary = dir.path().join("merges.txt").display().to_string();
    let queries = dir.path().join("queries.txt");
    std::fs::write(&queries, "# shapes\nred circle\n\nblue square\n").unwrap();
    let queries = queries.display().to_string();
    let out = dir.path().join("judge.json");
    let out_text = out.display().to_string();
    let mut args = vec![
        "judge",
        "--dataset",
        "shapes",
        "--checkpoint",
        &checkpoints[0].1,
        "--label",
        "base",
        "--vocabulary",
        &vocabulary,
        "--abstract-field",
        "caption",
        "--server",
        &url,
        "--concurrency",
        "4",
        "--out",
        &out_text,
        "--queries",
        &queries,
    ];

    let output = paperclip(dir.path(), &args);
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "judge failed: {}{stdout}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(stdout.contains("| base |"), "{stdout}");
    let report = read_report(&out);
    assert_eq!(report.queries, ["red circle", "blue square"]);
    assert_eq!(report.judge_model, format!("http:{url}#default"));
    assert_eq!(report.pairs(), 40);
    let requests = server.prompts.lock().unwrap().len();
    assert_eq!(report.judge_requests, requests);
    let markdown = std::fs::read_to_string(out.with_extension("md")).unwrap();
    assert_eq!(markdown, report.to_markdown());

    // An existing report is never overwritten; the check comes before any judging.
    let requests_before = server.prompts.lock().unwrap().len();
    let again = paperclip(dir.path(), &args);
    let stderr = String::from_utf8_lossy(&again.stderr);
    assert!(stderr.contains("exists already"), "{stderr}");
    assert_eq!(server.prompts.lock().unwrap().len(), requests_before);

    // "comets" gets output that is not JSON: the reports are written, and the command fails.
    std::fs::write(dir.path().join("queries.txt"), "red circle\ncomets\n").unwrap();
    let out = dir.path().join("judge-2.json");
    let out_text = out.display().to_string();
    let last = args.len() - 3;
    args[last] = &out_text;
    args.extend(["--no-tfidf", "--json"]);
    let output = paperclip(dir.path(), &args);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("10 of 20 (query, image) pairs are unjudged"),
        "{stderr}"
    );
    let printed: JudgeReport = serde_json::from_slice(&output.stdout).unwrap();
    let report = read_report(&out);
    assert_eq!(printed, report);
    assert_eq!(report.methods.len(), 1);
    assert_eq!(report.methods[0].tally.unjudged, 10);
    assert_eq!(report.methods[0].queries[1].tally.score, None);
}

#[test]
fn judge_command_rejects_markdown_out() {
    let dir = tempfile::tempdir().unwrap();
    let output = paperclip(
        dir.path(),
        &[
            "judge",
            "--dataset",
            "shapes",
            "--checkpoint",
            "x",
            "--out",
            "report.md",
        ],
    );
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("give a .json file"), "{stderr}");
}
