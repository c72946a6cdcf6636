//! The `paperclip` binary as a user runs it: exit codes, messages and JSON output.

use crate::support::paperclip;
use crate::support::pipeline_path;

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

#[test]
fn help_lists_every_command() {
    let dir = tempfile::tempdir().unwrap();
    let output = paperclip(dir.path(), &["--help"]);
    assert!(output.status.success());
    insta::assert_snapshot!(text(&output.stdout));
}

#[test]
fn misspelt_setting_fails_with_valid_names() {
    let dir = tempfile::tempdir().unwrap();
    let pipeline = dir.path().join("p.toml");
    let original = std::fs::read_to_string(pipeline_path()).unwrap();
    std::fs::write(
        &pipeline,
        original.replace("max_images_per_proposal", "max_image_per_proposal"),
    )
    .unwrap();

    let output = paperclip(
        dir.path(),
        &["run", pipeline.to_str().unwrap(), "--archive", "embedded"],
    );
    assert_eq!(output.status.code(), Some(1));
    let stderr = text(&output.stderr);
    assert!(
        stderr.contains("unknown field `max_image_per_proposal`"),
        "{stderr}"
    );
    assert!(
        stderr.contains("did you mean `max_images_per_proposal`?"),
        "{stderr}"
    );
}

#[test]
fn unknown_dataset_names_known_ones() {
    let dir = tempfile::tempdir().unwrap();
    let output = paperclip(dir.path(), &["datasets", "show", "nope"]);
    assert_eq!(output.status.code(), Some(1));
    let stderr = text(&output.stderr);
    assert!(stderr.contains("dataset \"nope\" not found"), "{stderr}");
    assert!(stderr.contains("known datasets: none"), "{stderr}");
}

#[test]
fn bad_archive_url_is_explained() {
    let dir = tempfile::tempdir().unwrap();
    let pipeline = pipeline_path();
    let output = paperclip(
        dir.path(),
        &[
            "run",
            pipeline.to_str().unwrap(),
            "--archive",
            "localhost:8765",
        ],
    );
    assert_eq!(output.status.code(), Some(1));
    let stderr = text(&output.stderr);
    assert!(stderr.contains("--archive \"localhost:8765\""), "{stderr}");
}

#[test]
fn embedded_run_then_query_as_json() {
    let dir = tempfile::tempdir().unwrap();
    let pipeline = pipeline_path();
    let run = paperclip(
        dir.path(),
        &[
            "--json",
            "run",
            pipeline.to_str().unwrap(),
            "--archive",
            "embedded",
        ],
    );
    assert!(run.status.success(), "{}", text(&run.stderr));
    let report: serde_json::Value = serde_json::from_slice(&run.stdout).unwrap();
    assert_eq!(report["published_version"], 1);
    assert_eq!(report["counts"]["samples"], 7);

    let list = paperclip(dir.path(), &["--json", "datasets", "list"]);
    let datasets: serde_json::Value = serde_json::from_slice(&list.stdout).unwrap();
    assert_eq!(datasets[0]["dataset"], "hst-paperclip");
    assert_eq!(datasets[0]["latest_version"], 1);

    let sql = paperclip(
        dir.path(),
        &[
            "--json",
            "sql",
            r#"SELECT proposal_id, count(*) AS n FROM "hst-paperclip".latest.samples GROUP BY 1 ORDER BY 1"#,
        ],
    );
    assert!(sql.status.success(), "{}", text(&sql.stderr));
    let rows: serde_json::Value = serde_json::from_slice(&sql.stdout).unwrap();
    assert_eq!(
        rows,
        serde_json::json!([
            {"proposal_id": 90001, "n": 3},
            {"proposal_id": 90002, "n": 2},
            {"proposal_id": 90003, "n": 1},
            {"proposal_id": 90004, "n": 1},
        ])
    );

    let runs = paperclip(
        dir.path(),
        &[
            "--json",
            "sql",
            "SELECT published_version, counts['samples'] AS samples FROM paperclip.runs",
        ],
    );
    assert!(runs.status.success(), "{}", text(&runs.stderr));
    let runs: serde_json::Value = serde_json::from_slice(&runs.stdout).unwrap();
    assert_eq!(
        runs,
        serde_json::json!([{"published_version": 1, "samples": 7}])
    );

    let bad = paperclip(
        dir.path(),
        &["sql", "SELECT nope FROM \"hst-paperclip\".latest.samples"],
    );
    assert_eq!(bad.status.code(), Some(1));
    assert!(text(&bad.stderr).contains("nope"), "{}", text(&bad.stderr));

    let unquoted = paperclip(
        dir.path(),
        &["sql", "SELECT 1 FROM hst-paperclip.v1.samples"],
    );
    assert_eq!(unquoted.status.code(), Some(1));
    let stderr = text(&unquoted.stderr);
    assert!(stderr.contains("need double quotes"), "{stderr}");

    let status = paperclip(
        dir.path(),
        &["--json", "sql", "SELECT status FROM paperclip.runs"],
    );
    let rows: serde_json::Value = serde_json::from_slice(&status.stdout).unwrap();
    assert_eq!(rows, serde_json::json!([{"status": "published"}]));

    // Without a query, standard input is a script; the first failure stops it.
    let script = |text: &str| {
        use std::io::Write;
        let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_paperclip"))
            .arg("--data-dir")
            .arg(dir.path())
            .args(["--json", "sql"])
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        child
            .stdin
            .take()
            .unwrap()
            .write_all(text.as_bytes())
            .unwrap();
        child.wait_with_output().unwrap()
    };
    let two = script("SELECT 1 AS a;\nSELECT status FROM paperclip.runs;\n");
    assert!(two.status.success(), "{}", text(&two.stderr));
    assert_eq!(
        text(&two.stdout),
        "[{\"a\":1}]\n[{\"status\":\"published\"}]\n"
    );
    let stops = script("SELECT 1; SELECT nope FROM paperclip.runs; SELECT 2;");
    assert_eq!(stops.status.code(), Some(1));
    assert!(
        text(&stops.stderr).contains("statement 2 of the script"),
        "{}",
        text(&stops.stderr)
    );

    // A lost skips file fails the queries that name it, with the fix, and no others.
    let skips = dir
        .path()
        .join("datasets/hst-paperclip/versions/v1/skips.parquet");
    std::fs::remove_file(skips).unwrap();
    let lost = paperclip(
        dir.path(),
        &["sql", r#"SELECT count(*) FROM "hst-paperclip".v1.skips"#],
    );
    let stderr = text(&lost.stderr);
    assert!(
        stderr.contains("skips.parquet is missing; run `paperclip datasets verify"),
        "{stderr}"
    );
    let samples = paperclip(
        dir.path(),
        &["sql", r#"SELECT count(*) FROM "hst-paperclip".v1.samples"#],
    );
    assert!(samples.status.success(), "{}", text(&samples.stderr));
}

#[test]
fn unsafe_data_dir_is_rejected_before_writing() {
    let dir = tempfile::tempdir().unwrap();
    let data_dir = dir.path().join("proj#2");
    let pipeline = pipeline_path();
    let output = paperclip(
        &data_dir,
        &["run", pipeline.to_str().unwrap(), "--archive", "embedded"],
    );
    assert_eq!(output.status.code(), Some(1));
    let stderr = text(&output.stderr);
    assert!(stderr.contains("without any of # ? % [ ]"), "{stderr}");
    assert!(!data_dir.join("datasets").exists(), "nothing is written");
    assert!(!data_dir.join("runs").exists(), "no run is recorded");
}

#[test]
fn summarize_rejects_bad_temperature() {
    let dir = tempfile::tempdir().unwrap();
    for value in ["NaN", "inf", "2.5"] {
        let output = paperclip(
            dir.path(),
            &["summarize", "--catalog", "none.cat", "--temperature", value],
        );
        assert_eq!(output.status.code(), Some(1), "{value}");
        let message = text(&output.stderr);
        assert!(message.contains("is outside 0..=2"), "{value}: {message}");
    }
}

#[test]
fn summarize_rejects_non_model_file() {
    let dir = tempfile::tempdir().unwrap();
    let fake = dir.path().join("fake.gguf");
    std::fs::write(&fake, "not a model").unwrap();
    let catalog = dir.path().join("one.cat");
    std::fs::write(
        &catalog,
        "Prop. Type: GO\nCategory: STARS\nID: 1\nCycle: 20\nTitle: T\nPI: P\n\nWe observe stars.\n",
    )
    .unwrap();

    let output = paperclip(
        dir.path(),
        &[
            "summarize",
            "--catalog",
            catalog.to_str().unwrap(),
            "--model-path",
            fake.to_str().unwrap(),
        ],
    );

    assert_eq!(output.status.code(), Some(1));
    let message = text(&output.stderr);
    assert!(message.contains("cannot use the model file"), "{message}");
    assert!(
        !dir.path().join("summaries").exists(),
        "no cache is written"
    );
}
