//! SQL behaviour tests: every folder under `tests/sql/` is one case with `query.sql` and
//! `expected.txt`, usually `setup.sql`, and optionally a `pipeline.toml` with source
//! tables and models (see `tests/sql/README.md`). A case whose steps fail expects
//! `error: <message>`, with paths relative to the repository root.

use std::path::{Path, PathBuf};

use datafusion::prelude::SessionContext;
use paperclip::sql::sources::{input_tables, register_sources};

use crate::support::repo_root;

async fn run_case(case: &Path) -> String {
    match try_case(case).await {
        Ok(table) => table,
        Err(message) => {
            let root = format!("{}/", repo_root().display());
            format!("error: {}\n", message.replace(&root, ""))
        }
    }
}

async fn try_case(case: &Path) -> Result<String, String> {
    let ctx = paperclip::sql::new_session();
    run_setup(&ctx, case).await;
    register_empty_summaries(&ctx);

    let pipeline = case.join("pipeline.toml");
    if pipeline.is_file() {
        register_pipeline(&ctx, &pipeline)
            .await
            .map_err(|e| e.to_string())?;
    } else if ctx.table_exist("products").unwrap() {
        register_method_models(&ctx, case).await;
    }

    let query = std::fs::read_to_string(case.join("query.sql")).unwrap();
    let batches = ctx
        .sql(query.trim().trim_end_matches(';'))
        .await
        .map_err(|e| e.to_string())?
        .collect()
        .await
        .map_err(|e| e.to_string())?;
    Ok(format!(
        "{}\n",
        datafusion::arrow::util::pretty::pretty_format_batches(&batches).unwrap()
    ))
}

/// Runs `setup.sql` when the case has one; a failing statement fails the test.
async fn run_setup(ctx: &SessionContext, case: &Path) {
    let Ok(setup) = std::fs::read_to_string(case.join("setup.sql")) else {
        return;
    };
    for statement in setup.split(';').map(str::trim).filter(|s| !s.is_empty()) {
        ctx.sql(statement)
            .await
            .unwrap_or_else(|e| panic!("{}: setup failed: {e}\n{statement}", case.display()))
            .collect()
            .await
            .unwrap();
    }
}

/// Registers the `summaries` table without rows, as a run with summaries off has it,
/// unless `setup.sql` created one.
fn register_empty_summaries(ctx: &SessionContext) {
    if !ctx.table_exist("summaries").unwrap() {
        let empty = paperclip::summaries::table::empty_summaries_batch();
        ctx.register_batch("summaries", empty).unwrap();
    }
}

/// Loads the case's pipeline file as `paperclip run` does, then registers its source
/// tables and its models (instead of the project's models).
async fn register_pipeline(ctx: &SessionContext, path: &Path) -> paperclip::error::Result<()> {
    let config = paperclip::pipeline::config::load(path)?;
    register_sources(ctx, &config).await?;
    let models: Vec<PathBuf> = config
        .sql
        .models
        .iter()
        .map(|m| config.resolve(m))
        .collect();
    paperclip::sql::register_models(ctx, &models, &input_tables(&config)).await
}

/// Registers the project's models in `sql/` over the tables `setup.sql` created.
async fn register_method_models(ctx: &SessionContext, case: &Path) {
    if !ctx.table_exist("proposals").unwrap() {
        panic!("{}: setup.sql must create proposals", case.display());
    }
    let models = [
        repo_root().join("sql/candidate_images.sql"),
        repo_root().join("sql/samples.sql"),
    ];
    paperclip::sql::register_models(ctx, &models, &paperclip::pipeline::INPUT_TABLES)
        .await
        .unwrap();
}

#[tokio::test]
async fn sql_cases_match_expected_output() {
    let root = repo_root().join("tests/sql");
    let mut cases: Vec<_> = std::fs::read_dir(&root)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.is_dir())
        .collect();
    cases.sort();
    assert!(cases.len() >= 4, "expected SQL cases in {}", root.display());

    let update = std::env::var("UPDATE_EXPECTED").as_deref() == Ok("1");
    let mut failures = Vec::new();
    for case in &cases {
        let actual = run_case(case).await;
        let expected_path = case.join("expected.txt");
        if update {
            std::fs::write(&expected_path, &actual).unwrap();
            continue;
        }
        let expected = std::fs::read_to_string(&expected_path).unwrap_or_default();
        if actual != expected {
            failures.push(format!(
                "{}:\n--- expected\n{expected}--- actual\n{actual}",
                case.display()
            ));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}
