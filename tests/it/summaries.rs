//! Summaries: prompts rendered for real abstracts, the method's summary captions checked
//! against our schema, and the fixture pipeline with summaries enabled against a scripted
//! OpenAI-compatible server on 127.0.0.1.

use std::collections::HashSet;
use std::path::Path;
use std::sync::{Arc, Mutex};

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use paperclip::pipeline::PipelineConfig;
use paperclip::summaries::prompt::PromptTemplate;
use paperclip::summaries::schema::{MAX_ITEMS, SchemaFile, SummaryField, max_tokens};
use paperclip::summaries::validate::{OutputChecker, RejectReason};
use paperclip::summaries::{Completion, FinishReason, Sampling, Summary};
use paperclip_archive::server::ServeOptions;
use serde_json::{Value, json};

use crate::support::{
    pipeline_path, query, repo_root, run_config, run_options, serve_snapshot, shared_data,
};

/// Maximum size of the prompt for any of the real sample abstracts, in bytes; well under
/// the limit of every request, `MAX_PROMPT_BYTES`.
const MAX_SAMPLE_PROMPT_BYTES: usize = 4_096;

/// Returns the real abstracts: the 112 distinct PAPERCLIP captions (without their "Category: X."
/// prefix) and the six records of the sample catalog.
fn real_abstracts(data: &Path) -> Vec<String> {
    let dir = data.join("abstracts");
    let captions = std::fs::read_to_string(dir.join("captions-paperclip.txt")).unwrap();
    let mut abstracts: Vec<String> = captions
        .lines()
        .map(|line| {
            let rest = line
                .strip_prefix("Category: ")
                .expect("captions start with Category");
            let (_, text) = rest
                .split_once('.')
                .expect("the category ends with a period");
            text.to_string()
        })
        .collect();
    assert_eq!(abstracts.len(), 112);
    let catalog = std::fs::read(dir.join("abstracts-sample.cat")).unwrap();
    let parsed = paperclip_catalog::parse_abstracts_cat(&catalog);
    assert_eq!(parsed.proposals.len(), 6);
    abstracts.extend(parsed.proposals.into_iter().map(|p| p.abstract_raw));
    abstracts
}

#[test]
fn real_abstracts_render_bounded_prompts() {
    let Some(data) = shared_data() else { return };
    let template = PromptTemplate::current();
    let abstracts = real_abstracts(&data);
    let mut keys = HashSet::new();
    let mut largest = 0;
    for abstract_raw in &abstracts {
        let prompt = template.render(abstract_raw).unwrap();
        assert!(prompt.contains(&format!("Abstract: \"{abstract_raw}\"")));
        assert!(!prompt.contains("{{abstract}}"));
        largest = largest.max(prompt.len());
        let key = paperclip::summaries::SummaryKey::new(
            abstract_raw,
            "test:model",
            &template.sha256,
            "schema",
            &Sampling::default(),
        );
        keys.insert(key.id());
    }
    let distinct: HashSet<&String> = abstracts.iter().collect();
    assert_eq!(keys.len(), distinct.len(), "one key per distinct abstract");
    assert!(
        largest <= MAX_SAMPLE_PROMPT_BYTES,
        "the largest prompt is {largest} bytes"
    );
}

#[test]
fn method_summaries_match_captions() {
    let Some(data) = shared_data() else { return };
    let dir = data.join("abstracts/paperclip-plots-data");
    let read = |name: String| {
        std::fs::read_to_string(dir.join(name))
            .unwrap()
            .trim()
            .to_string()
    };
    let split = |text: String| text.split(", ").map(str::to_string).collect::<Vec<_>>();
    let checker = OutputChecker::new(SchemaFile::committed().unwrap());
    for i in 0..4 {
        let summary = Summary {
            objects_and_phenomena: split(read(format!("obj1_{i}.txt"))),
            science_use_cases: split(read(format!("sci1_{i}.txt"))),
        };
        assert_eq!(summary.caption(), read(format!("sum_{i}.txt")));
        let completion = Completion {
            text: serde_json::to_string(&summary).unwrap(),
            finish_reason: FinishReason::Stop,
            prompt_tokens: None,
            completion_tokens: None,
            elapsed_secs: 0.0,
        };
        // PAPERCLIP's summarization code declared both fields as plain strings, not lists of
        // at most five, so some stored summaries have more items than its published schema
        // allows.
        let within_bounds = SummaryField::ALL
            .iter()
            .all(|field| summary.items(*field).len() <= MAX_ITEMS);
        match checker.check(&completion, max_tokens()) {
            Ok(checked) => assert!(within_bounds && checked == summary, "summary {i}"),
            Err(rejection) => {
                assert!(!within_bounds, "summary {i}: {rejection:?}");
                assert_eq!(rejection.reason, RejectReason::SchemaViolation);
                assert!(
                    rejection.detail.contains("more than 5 items"),
                    "{rejection:?}"
                );
            }
        }
    }
}

/// Reply script of the test server for one fixture abstract, found by a phrase of it.
#[derive(Clone, Copy, Debug)]
enum Script {
    /// HTTP 503 on the first request, then a good summary.
    UnavailableThenGood(&'static str),
    /// An output with six objects (the schema allows five) first, then a good summary.
    InvalidThenGood(&'static str),
    /// An output that only names the telescope, every time.
    AlwaysForbidden,
    Good(&'static str),
}

const SCRIPTS: [(&str, Script); 4] = [
    (
        "spiral galaxies",
        Script::UnavailableThenGood("spiral galaxy groups"),
    ),
    (
        "protostellar jets",
        Script::InvalidThenGood("protostellar jets"),
    ),
    ("Dark frames", Script::AlwaysForbidden),
    ("globular cluster", Script::Good("blue straggler stars")),
];

#[derive(Clone, Default)]
struct ChatServer {
    /// Every request body received.
    requests: Arc<Mutex<Vec<Value>>>,
}

fn prompt_of(body: &Value) -> String {
    body["messages"][0]["content"]
        .as_str()
        .unwrap_or_default()
        .to_string()
}

fn good(object: &str) -> String {
    json!({
        "objects_and_phenomena": [object, "star-forming regions"],
        "science_use_cases": [format!("study {object}")],
    })
    .to_string()
}

async fn chat_completions(State(server): State<ChatServer>, Json(body): Json<Value>) -> Response {
    let prompt = prompt_of(&body);
    let seen = {
        let mut requests = server.requests.lock().unwrap();
        requests.push(body);
        requests.iter().filter(|b| prompt_of(b) == prompt).count()
    };
    let script = SCRIPTS
        .iter()
        .find(|(phrase, _)| prompt.contains(phrase))
        .map(|(_, script)| *script)
        .unwrap_or_else(|| panic!("no script for the prompt {prompt}"));
    match (script, seen) {
        (Script::UnavailableThenGood(_), 1) => {
            (StatusCode::SERVICE_UNAVAILABLE, "loading model").into_response()
        }
        (Script::InvalidThenGood(_), 1) => crate::support::chat_answer(
            r#"{"objects_and_phenomena": ["a1", "b2", "c3", "d4", "e5", "f6"], "science_use_cases": ["x"]}"#,
        ),
        (Script::AlwaysForbidden, _) => crate::support::chat_answer(
            r#"{"objects_and_phenomena": ["detector dark current"], "science_use_cases": ["Hubble Space Telescope"]}"#,
        ),
        (
            Script::UnavailableThenGood(object)
            | Script::InvalidThenGood(object)
            | Script::Good(object),
            _,
        ) => crate::support::chat_answer(&good(object)),
    }
}

/// Starts the scripted server on a free loopback port; returns its root URL.
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

/// Returns the rows of a rendered table, each cell trimmed, without the header.
fn rows(table: &str) -> Vec<Vec<String>> {
    table
        .lines()
        .filter(|line| line.starts_with('|'))
        .skip(1)
        .map(|line| {
            line.trim_matches('|')
                .split('|')
                .map(|cell| cell.trim().to_string())
                .collect()
        })
        .collect()
}

/// Writes and loads the project's pipeline with summary captions and its models by
/// absolute path.
fn summary_pipeline(dir: &Path, server_url: &str) -> PipelineConfig {
    summary_pipeline_with(
        dir,
        &format!(
            "server_url = \"{server_url}\"\nmodel = \"scripted\"\nconcurrency = 2\nmax_attempts = 2\n"
        ),
    )
}

/// Loads the project's pipeline with summary captions and `settings` in `[summaries]`.
fn summary_pipeline_with(dir: &Path, settings: &str) -> PipelineConfig {
    let original = std::fs::read_to_string(pipeline_path()).unwrap();
    let sql_dir = repo_root().join("sql");
    let text = original
        .replace("\"../sql/", &format!("\"{}/", sql_dir.display()))
        .replace("form = \"paper\"", "form = \"summary\"")
        + &format!("\n[summaries]\nenabled = true\n{settings}");
    let path = dir.join("summaries.toml");
    std::fs::write(&path, text).unwrap();
    paperclip::pipeline::config::load(&path).unwrap()
}

/// Runs the fixture pipeline with `settings` in `[summaries]` and checks that every
/// proposal got a summary and every sample carries its summary caption.
async fn every_sample_gets_a_summary_caption(settings: &str) {
    let dir = tempfile::tempdir().unwrap();
    let config = summary_pipeline_with(dir.path(), settings);
    every_sample_of_config_gets_a_summary_caption(&config, dir.path()).await;
}

/// [`every_sample_gets_a_summary_caption`] for a loaded pipeline.
async fn every_sample_of_config_gets_a_summary_caption(config: &PipelineConfig, dir: &Path) {
    let data_dir = dir.join("data");
    let snapshot_dir = dir.join("snapshot");
    paperclip::snapshots::fixtures::build(&snapshot_dir).unwrap();
    let archive = serve_snapshot(&snapshot_dir, ServeOptions::default()).await;

    let report = run_config(config, &data_dir, archive.base_url()).await;

    assert_eq!(report.published_version, Some(1));
    let proposals = report.counts["summaries_proposals"];
    assert_eq!(
        report.counts["summaries_ok"], proposals,
        "{:?}",
        report.counts
    );
    let sql = format!(
        r#"SELECT DISTINCT s.caption_form, s.caption_source, s.caption = m.caption AS same
           FROM "{}".latest.samples s
           JOIN paperclip.summaries m
             ON s.summary_key = m.summary_key AND m.status = 'ok'"#,
        config.dataset.name
    );
    let outcomes = rows(&query(&data_dir, &sql).await);
    assert_eq!(outcomes, [["summary", "summary", "true"]]);
}

/// The shipped pipeline with summaries from the in-process backend: the cached Gemma 3
/// 270M model and the base-model prompt.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn local_model_run_uses_summary_captions() {
    if crate::llm_http::llama_inputs().is_none() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let path = repo_root().join("pipelines/hst-paperclip-summaries.toml");
    let config = paperclip::pipeline::config::load(&path).unwrap();
    every_sample_of_config_gets_a_summary_caption(&config, dir.path()).await;
}

/// The HTTP backend against a real llama-server with the same model and prompt.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn llama_server_run_uses_summary_captions() {
    let Some((binary, model)) = crate::llm_http::llama_inputs() else {
        return;
    };
    let port = crate::llm_http::free_port();
    let base_url = format!("http://127.0.0.1:{port}");
    let mut server = crate::llm_http::LlamaServer::start(&binary, &model, port);
    server
        .wait_healthy(&base_url, std::time::Duration::from_secs(120))
        .await;
    let prompt = repo_root().join("prompts/summary-base-v1.txt");
    every_sample_gets_a_summary_caption(&format!(
        "backend = \"http\"\nserver_url = \"{base_url}\"\ntimeout_secs = 600\nprompt = \"{}\"\n",
        prompt.display()
    ))
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fixture_run_uses_summary_captions() {
    let dir = tempfile::tempdir().unwrap();
    let data_dir = dir.path().join("data");
    let snapshot_dir = dir.path().join("snapshot");
    paperclip::snapshots::fixtures::build(&snapshot_dir).unwrap();
    let archive = serve_snapshot(&snapshot_dir, ServeOptions::default()).await;
    let chat = ChatServer::default();
    let server_url = start_chat_server(chat.clone()).await;
    let config = summary_pipeline(dir.path(), &server_url);

    let first = run_config(&config, &data_dir, archive.base_url()).await;
    assert_eq!(first.published_version, Some(1));
    assert_eq!(first.counts["summaries_proposals"], 4);
    assert_eq!(first.counts["summaries_ok"], 3);
    assert_eq!(first.counts["summaries_rejected"], 1);
    assert!(
        first
            .skipped_by_reason
            .contains_key("summaries/forbidden_only")
    );
    // 503 then ok, invalid then ok, forbidden twice, ok: the 503 is retried by the backend.
    assert_eq!(chat.requests.lock().unwrap().len(), 7);
    let body = chat.requests.lock().unwrap()[0].clone();
    assert_eq!(body["max_tokens"], json!(max_tokens()));
    assert_eq!(
        body["response_format"]["json_schema"]["schema"],
        SchemaFile::committed().unwrap().value
    );

    let captions = rows(
        &query(
            &data_dir,
            r#"SELECT DISTINCT proposal_id, caption, caption_form, caption_source
               FROM "hst-paperclip".latest.samples
               WHERE proposal_id <> 90003 ORDER BY proposal_id"#,
        )
        .await,
    );
    assert_eq!(
        captions,
        [
            [
                "90001",
                "spiral galaxy groups, star-forming regions; study spiral galaxy groups",
                "summary",
                "summary"
            ],
            [
                "90002",
                "protostellar jets, star-forming regions; study protostellar jets",
                "summary",
                "summary"
            ],
            [
                "90004",
                "blue straggler stars, star-forming regions; study blue straggler stars",
                "summary",
                "summary"
            ],
        ]
    );
    let fallback = rows(
        &query(
            &data_dir,
            r#"SELECT DISTINCT caption = caption_paper AS paper, caption_form, caption_source,
                      length(summary_key) AS key_length
               FROM "hst-paperclip".latest.samples WHERE proposal_id = 90003"#,
        )
        .await,
    );
    assert_eq!(fallback, [["true", "paper", "abstract_fallback", "64"]]);
    let attempts = rows(
        &query(
            &data_dir,
            "SELECT status, count(DISTINCT summary_key) AS keys FROM paperclip.summaries
             GROUP BY status ORDER BY status",
        )
        .await,
    );
    assert_eq!(attempts[0], ["ok", "3"], "{attempts:?}");
    let version = paperclip::dataset::versions::list_versions(
        &paperclip::dataset::versions::DatasetPaths::new(&data_dir, "hst-paperclip"),
    )
    .await
    .unwrap()
    .pop()
    .unwrap();
    let models = &version.stage_inputs["models"].0;
    assert!(models["summaries"].contains(&PromptTemplate::current().sha256));

    // A plan sends no request; the missing summary is pending.
    let mut plan_options = run_options(&data_dir, archive.base_url());
    plan_options.plan_only = true;
    let plan = paperclip::pipeline::run(&config, &plan_options)
        .await
        .unwrap();
    assert_eq!(plan.counts["summaries_pending"], 1);
    assert_eq!(plan.counts.get("summaries_backend_calls"), None);
    assert_eq!(chat.requests.lock().unwrap().len(), 7);
    let stage = plan.stages.iter().find(|s| s.stage == "summaries").unwrap();
    assert_eq!(stage.status, "would_run");

    // The next run requests only the summary that is still missing, and publishes nothing
    // new, since the server still returns the same forbidden item for it.
    let second = run_config(&config, &data_dir, archive.base_url()).await;
    assert_eq!(second.published_version, None);
    assert_eq!(second.counts["summaries_from_cache"], 3);
    assert_eq!(second.counts["summaries_backend_calls"], 2);
    assert_eq!(chat.requests.lock().unwrap().len(), 9);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn summarize_command_reuses_cache() {
    let dir = tempfile::tempdir().unwrap();
    let snapshot_dir = dir.path().join("snapshot");
    paperclip::snapshots::fixtures::build(&snapshot_dir).unwrap();
    let catalog = snapshot_dir.join("catalog/abstracts.cat");
    let chat = ChatServer::default();
    let server_url = start_chat_server(chat.clone()).await;
    let data_dir = dir.path().join("data");
    let summarize = move || {
        std::process::Command::new(env!("CARGO_BIN_EXE_paperclip"))
            .arg("--data-dir")
            .arg(&data_dir)
            .args(["--json", "summarize", "--catalog"])
            .arg(&catalog)
            .args([
                "--server",
                &server_url,
                "--limit",
                "4",
                "--max-attempts",
                "2",
            ])
            .env_remove("RUST_LOG")
            .output()
            .unwrap()
    };

    let first = tokio::task::spawn_blocking(summarize.clone())
        .await
        .unwrap();
    assert_eq!(
        first.status.code(),
        Some(1),
        "90003 is left without a summary"
    );
    let stderr = String::from_utf8_lossy(&first.stderr);
    assert!(
        stderr.contains("1 of 4 proposal(s) have no summary"),
        "{stderr}"
    );
    let report: Value = serde_json::from_slice(&first.stdout).unwrap();
    let statuses: Vec<(i64, &str, &str)> = report["proposals"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| {
            let id = p["proposal_id"].as_i64().unwrap();
            (
                id,
                p["status"].as_str().unwrap(),
                p["source"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        statuses,
        [
            (90001, "ok", "backend"),
            (90002, "ok", "backend"),
            (90003, "rejected", "backend"),
            (90004, "ok", "backend"),
        ]
    );
    assert_eq!(report["proposals"][2]["reason"], "forbidden_only");
    assert_eq!(
        report["proposals"][3]["caption"],
        "blue straggler stars, star-forming regions; study blue straggler stars"
    );
    assert_eq!(
        report["prompt_sha256"],
        json!(PromptTemplate::current().sha256)
    );

    let second = tokio::task::spawn_blocking(summarize).await.unwrap();
    let report: Value = serde_json::from_slice(&second.stdout).unwrap();
    assert_eq!(report["counts"]["from_cache"], 3);
    assert_eq!(report["counts"]["backend_calls"], 2);
    assert_eq!(report["proposals"][2]["attempts"], 4);
    assert_eq!(chat.requests.lock().unwrap().len(), 7 + 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plan_needs_no_api_key() {
    let dir = tempfile::tempdir().unwrap();
    let data_dir = dir.path().join("data");
    let snapshot_dir = dir.path().join("snapshot");
    paperclip::snapshots::fixtures::build(&snapshot_dir).unwrap();
    let archive = serve_snapshot(&snapshot_dir, ServeOptions::default()).await;
    let chat = ChatServer::default();
    let server_url = start_chat_server(chat.clone()).await;
    let mut config = summary_pipeline(dir.path(), &server_url);
    config.summaries.api_key_env = Some("PAPERCLIP_TEST_KEY_THAT_IS_NEVER_SET".to_string());

    let mut options = run_options(&data_dir, archive.base_url());
    options.plan_only = true;
    let plan = paperclip::pipeline::run(&config, &options).await.unwrap();
    assert_eq!(plan.counts["summaries_pending"], 4);
    assert!(chat.requests.lock().unwrap().is_empty());

    options.plan_only = false;
    let error = paperclip::pipeline::run(&config, &options)
        .await
        .unwrap_err()
        .to_string();
    assert!(
        error.contains("PAPERCLIP_TEST_KEY_THAT_IS_NEVER_SET") && error.contains("not set"),
        "{error}"
    );
}
