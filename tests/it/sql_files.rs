//! SQL behaviour tests: every folder under `tests/sql/` contains `setup.sql`, `query.sql`
//! and `expected.txt` (see `tests/sql/README.md`).

use std::path::Path;

use crate::support::repo_root;

async fn run_case(case: &Path) -> String {
    let ctx = paperclip::sql::new_session();
    let setup = std::fs::read_to_string(case.join("setup.sql")).unwrap();
    for statement in setup.split(';').map(str::trim).filter(|s| !s.is_empty()) {
        ctx.sql(statement)
            .await
            .unwrap_or_else(|e| panic!("{}: setup failed: {e}\n{statement}", case.display()))
            .collect()
            .await
            .unwrap();
    }

    let models = [
        repo_root().join("sql/candidate_images.sql"),
        repo_root().join("sql/samples.sql"),
    ];
    let needs_models = ctx.table_exist("products").unwrap();
    if needs_models {
        if !ctx.table_exist("proposals").unwrap() {
            panic!("{}: setup.sql must create proposals", case.display());
        }
        paperclip::sql::register_models(&ctx, &models, &paperclip::pipeline::INPUT_TABLES)
            .await
            .unwrap();
    }

    let query = std::fs::read_to_string(case.join("query.sql")).unwrap();
    let batches = ctx
        .sql(query.trim().trim_end_matches(';'))
        .await
        .unwrap_or_else(|e| panic!("{}: query failed: {e}", case.display()))
        .collect()
        .await
        .unwrap();
    format!(
        "{}\n",
        datafusion::arrow::util::pretty::pretty_format_batches(&batches).unwrap()
    )
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
