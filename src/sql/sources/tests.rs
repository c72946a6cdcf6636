use std::path::{Path, PathBuf};

use datafusion::arrow::datatypes::DataType;

use super::locate::{CsvRecord, csv_records};
use super::*;

const PIPELINE: &str = r#"
[dataset]
name = "demo"
[sql]
models = ["a.sql"]
samples_model = "a"
"#;

/// Writes a pipeline file with `sources` appended, the model `a.sql` and data files.
fn write_pipeline(
    sources: &str,
    model_sql: &str,
    files: &[(&str, &str)],
) -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("p.toml");
    std::fs::write(&path, format!("{PIPELINE}{sources}")).unwrap();
    std::fs::write(dir.path().join("a.sql"), model_sql).unwrap();
    for (name, text) in files {
        std::fs::write(dir.path().join(name), text).unwrap();
    }
    (dir, path)
}

fn load_error(sources: &str, files: &[(&str, &str)]) -> String {
    let (_dir, path) = write_pipeline(sources, "SELECT 1", files);
    crate::pipeline::config::load(&path)
        .unwrap_err()
        .to_string()
}

const TARGETS_CSV: &str = "target_name,class\nNGC-1300,galaxy\nM-42,nebula\n";

const TARGETS_SOURCE: &str = r#"
[sources.targets]
path = "targets.csv"
format = "csv"
schema = [{ name = "target_name", type = "VARCHAR" }, { name = "class", type = "VARCHAR" }]
"#;

#[test]
fn csv_without_schema_is_rejected() {
    let sources = "[sources.targets]\npath = \"targets.csv\"\nformat = \"csv\"\n";
    let error = load_error(sources, &[("targets.csv", TARGETS_CSV)]);
    assert!(error.contains("sources.targets:"), "{error}");
    assert!(error.contains("needs a declared schema"), "{error}");
    assert!(
        error.contains(r#"schema = [{ name = "target_name", type = "VARCHAR" }, { name = "class", type = "VARCHAR" }]"#),
        "the suggestion uses the header's names: {error}"
    );
}

#[test]
fn built_in_table_name_is_rejected() {
    let sources = TARGETS_SOURCE.replace("[sources.targets]", "[sources.products]");
    let error = load_error(&sources, &[("targets.csv", TARGETS_CSV)]);
    assert!(
        error.contains("sources.products: products is a built-in input table"),
        "{error}"
    );
}

#[test]
fn model_name_clash_is_rejected() {
    let sources = TARGETS_SOURCE.replace("[sources.targets]", "[sources.a]");
    let error = load_error(&sources, &[("targets.csv", TARGETS_CSV)]);
    assert!(
        error.contains("sources.a: the SQL model a.sql has the same name"),
        "{error}"
    );
}

#[test]
fn uppercase_table_name_is_rejected() {
    let sources = TARGETS_SOURCE.replace("[sources.targets]", "[sources.Targets]");
    let error = load_error(&sources, &[("targets.csv", TARGETS_CSV)]);
    assert!(error.contains("must be lowercase letters"), "{error}");
}

#[test]
fn missing_file_names_the_resolved_path() {
    let error = load_error(TARGETS_SOURCE, &[]);
    assert!(
        error.contains(r#"path = "targets.csv" resolves to"#),
        "{error}"
    );
    assert!(error.contains("which is not a file"), "{error}");
}

#[test]
fn unknown_type_lists_the_valid_names() {
    let sources = TARGETS_SOURCE.replace(r#"type = "VARCHAR" }]"#, r#"type = "BIGNIT" }]"#);
    let error = load_error(&sources, &[("targets.csv", TARGETS_CSV)]);
    assert!(
        error.contains(r#"column class has unknown type "BIGNIT""#),
        "{error}"
    );
    assert!(error.contains("BIGINT"), "{error}");
}

#[test]
fn unknown_format_and_keys_are_rejected() {
    let sources = TARGETS_SOURCE.replace(r#"format = "csv""#, r#"format = "xlsx""#);
    let error = load_error(&sources, &[("targets.csv", TARGETS_CSV)]);
    assert!(error.contains("xlsx"), "{error}");
    assert!(error.contains("parquet"), "{error}");

    let sources = TARGETS_SOURCE.replace(r#"format = "csv""#, "format = \"csv\"\nheader = true");
    let error = load_error(&sources, &[("targets.csv", TARGETS_CSV)]);
    assert!(error.contains("has_header"), "{error}");
}

#[test]
fn csv_options_on_other_formats_are_rejected() {
    let sources = "[sources.targets]\npath = \"t.json\"\nformat = \"json\"\ndelimiter = \";\"\n";
    let error = load_error(sources, &[("t.json", "{}\n")]);
    assert!(
        error.contains("delimiter applies only to CSV sources; remove it"),
        "{error}"
    );
}

#[test]
fn invalid_delimiter_is_rejected() {
    let sources =
        TARGETS_SOURCE.replace(r#"format = "csv""#, "format = \"csv\"\ndelimiter = \";;\"");
    let error = load_error(&sources, &[("targets.csv", TARGETS_CSV)]);
    assert!(error.contains(r#"delimiter = ";;" is invalid"#), "{error}");
}

#[test]
fn duplicate_column_is_rejected() {
    let sources = TARGETS_SOURCE.replace("\"class\"", "\"target_name\"");
    let error = load_error(&sources, &[("targets.csv", TARGETS_CSV)]);
    assert!(
        error.contains("schema lists column target_name twice"),
        "{error}"
    );
}

#[test]
fn header_must_match_the_schema() {
    let error = load_error(
        TARGETS_SOURCE,
        &[("targets.csv", "class,target_name\ngalaxy,NGC-1300\n")],
    );
    assert!(error.contains(r#"["class", "target_name"]"#), "{error}");
    assert!(error.contains("set has_header = false"), "{error}");

    let error = load_error(TARGETS_SOURCE, &[("targets.csv", "")]);
    assert!(
        error.contains("is empty, but has_header is true"),
        "{error}"
    );
}

#[test]
fn header_with_byte_order_mark_is_accepted() {
    let csv = format!("\u{feff}{TARGETS_CSV}");
    let (_dir, path) = write_pipeline(TARGETS_SOURCE, "SELECT 1", &[("targets.csv", &csv)]);
    crate::pipeline::config::load(&path).unwrap();
}

#[test]
fn models_can_read_sources_and_typos_get_suggestions() {
    let files = [("targets.csv", TARGETS_CSV)];
    let (_dir, path) = write_pipeline(TARGETS_SOURCE, "SELECT * FROM targets", &files);
    let config = crate::pipeline::config::load(&path).unwrap();
    assert_eq!(
        input_tables(&config),
        [
            "proposals",
            "observations",
            "products",
            "settings",
            "summaries",
            "targets"
        ]
    );

    let (_dir, path) = write_pipeline(TARGETS_SOURCE, "SELECT * FROM targts", &files);
    let error = crate::pipeline::config::load(&path)
        .unwrap_err()
        .to_string();
    assert!(error.contains("did you mean targets?"), "{error}");
}

#[test]
fn sql_type_names_ignore_case_and_spacing() {
    assert_eq!(parse_sql_type("bigint"), Some(DataType::Int64));
    assert_eq!(parse_sql_type("double  precision"), Some(DataType::Float64));
    assert_eq!(parse_sql_type("VARCHAR"), Some(DataType::Utf8));
    assert_eq!(parse_sql_type("VARCHAR(10)"), None);
}

#[test]
fn csv_records_count_lines_inside_quotes() {
    let text = "a,b\n\"x\ny\",1\r\n\n\"say \"\"hi\"\"\",2\nlast,";
    let records = csv_records(text, ',');
    let expected = [
        (1, vec!["a", "b"]),
        (2, vec!["x\ny", "1"]),
        (5, vec!["say \"hi\"", "2"]),
        (6, vec!["last", ""]),
    ];
    let expected: Vec<CsvRecord> = expected
        .into_iter()
        .map(|(line, fields)| CsvRecord {
            line,
            fields: fields.into_iter().map(String::from).collect(),
        })
        .collect();
    assert_eq!(records, expected);
}

async fn register(path: &Path) -> Result<SessionContext> {
    let config = crate::pipeline::config::load(path).unwrap();
    let ctx = crate::sql::new_session();
    register_sources(&ctx, &config).await?;
    Ok(ctx)
}

async fn register_error(path: &Path) -> String {
    match register(path).await {
        Ok(_) => panic!("the sources of {} registered", path.display()),
        Err(error) => error.to_string(),
    }
}

async fn column_types(ctx: &SessionContext, table: &str) -> Vec<String> {
    let schema = ctx.table(table).await.unwrap().schema().as_arrow().clone();
    schema
        .fields()
        .iter()
        .map(|f| format!("{} {} {}", f.name(), f.data_type(), f.is_nullable()))
        .collect()
}

#[tokio::test]
async fn csv_source_gets_declared_types() {
    let sources = r#"
[sources.counts]
path = "counts.txt"
format = "csv"
has_header = false
delimiter = ";"
schema = [{ name = "target_name", type = "VARCHAR" }, { name = "n", type = "BIGINT" }]
"#;
    let files = [("counts.txt", ";\nM-42;\nNGC-1300;7\n")];
    let (_dir, path) = write_pipeline(sources, "SELECT * FROM counts", &files);
    let ctx = register(&path).await.unwrap();
    assert_eq!(
        column_types(&ctx, "counts").await,
        ["target_name Utf8 true", "n Int64 true"]
    );
    let batch = crate::sql::collect_one(
        &ctx,
        "SELECT count(*) AS all_rows, count(target_name) AS named, sum(n) AS total FROM counts",
    )
    .await
    .unwrap();
    let values: Vec<i64> = (0..3)
        .map(|i| {
            batch
                .column(i)
                .as_any()
                .downcast_ref::<datafusion::arrow::array::Int64Array>()
                .unwrap()
                .value(0)
        })
        .collect();
    assert_eq!(values, [3, 2, 7], "empty fields are NULL");
}

#[tokio::test]
async fn csv_bad_value_names_line_and_column() {
    let sources = TARGETS_SOURCE.replace(
        r#"{ name = "class", type = "VARCHAR" }"#,
        r#"{ name = "n", type = "BIGINT" }"#,
    );
    let csv = "target_name,n\n\"two\nlines\",1\nM-42,seven\n";
    let (_dir, path) = write_pipeline(&sources, "SELECT 1", &[("targets.csv", csv)]);
    let error = register_error(&path).await;
    assert!(
        error.contains("failed to read source table targets from"),
        "{error}"
    );
    assert!(error.contains("targets.csv"), "{error}");
    assert!(
        error.contains(r#"line 4, column n: "seven" is not a valid BIGINT"#),
        "{error}"
    );
}

#[tokio::test]
async fn csv_extra_field_names_the_line() {
    let csv = "target_name,class\nNGC-1300,galaxy\nM-42,nebula,bright\n";
    let (_dir, path) = write_pipeline(TARGETS_SOURCE, "SELECT 1", &[("targets.csv", csv)]);
    let error = register_error(&path).await;
    assert!(
        error.contains("line 3 has 3 fields, but the schema declares 2 (target_name, class)"),
        "{error}"
    );
}

#[tokio::test]
async fn json_source_infers_or_checks_types() {
    let json = "{\"target_name\": \"M-42\", \"n\": 1}\n\n{\"target_name\": \"NGC-1300\", \"n\": \"many\"}\n";
    let inferred = "[sources.counts]\npath = \"counts.json\"\nformat = \"json\"\n";
    let (_dir, path) = write_pipeline(inferred, "SELECT 1", &[("counts.json", "{\"n\": 1}\n")]);
    let ctx = register(&path).await.unwrap();
    assert_eq!(column_types(&ctx, "counts").await, ["n Int64 true"]);

    let declared = format!(
        "{inferred}schema = [{{ name = \"target_name\", type = \"VARCHAR\" }}, {{ name = \"n\", type = \"BIGINT\" }}]\n"
    );
    let (_dir, path) = write_pipeline(&declared, "SELECT 1", &[("counts.json", json)]);
    let error = register_error(&path).await;
    assert!(error.contains("counts.json: line 3: "), "{error}");
    assert!(error.contains("many"), "{error}");
}

/// Writes a Parquet file with a string column `city` and an integer column `n`.
async fn write_parquet(path: &Path) {
    let ctx = crate::sql::new_session();
    let sql = format!(
        "COPY (SELECT 'Paris' AS city, CAST(3 AS INT) AS n) TO '{}' STORED AS PARQUET",
        path.display()
    );
    ctx.sql(&sql).await.unwrap().collect().await.unwrap();
}

#[tokio::test]
async fn parquet_source_keeps_or_checks_file_types() {
    let (dir, path) = write_pipeline(
        "[sources.cities]\npath = \"cities.parquet\"\nformat = \"parquet\"\n",
        "SELECT 1",
        &[],
    );
    write_parquet(&dir.path().join("cities.parquet")).await;
    let ctx = register(&path).await.unwrap();
    assert_eq!(
        column_types(&ctx, "cities").await,
        ["city Utf8View false", "n Int32 false"]
    );

    let declared = "[sources.cities]\npath = \"cities.parquet\"\nformat = \"parquet\"\nschema = [{ name = \"n\", type = \"INT\" }, { name = \"city\", type = \"VARCHAR\" }]\n";
    std::fs::write(&path, format!("{PIPELINE}{declared}")).unwrap();
    let ctx = register(&path).await.unwrap();
    assert_eq!(
        column_types(&ctx, "cities").await,
        ["n Int32 false", "city Utf8 false"],
        "declared columns, in declared order, VARCHAR as Utf8, nullability from the file"
    );

    std::fs::write(
        &path,
        format!("{PIPELINE}{}", declared.replace("INT", "BIGINT")),
    )
    .unwrap();
    let error = register_error(&path).await;
    assert!(
        error.contains(
            "column n has type Int32 in the file, but the schema declares BIGINT; declare it as INT"
        ),
        "{error}"
    );

    std::fs::write(
        &path,
        format!("{PIPELINE}{}", declared.replace("\"city\"", "\"town\"")),
    )
    .unwrap();
    let error = register_error(&path).await;
    assert!(
        error.contains("the schema declares column town, which"),
        "{error}"
    );
    assert!(error.contains("its columns are city, n"), "{error}");
}

#[tokio::test]
async fn model_check_of_a_run_reads_sources() {
    let model = "SELECT CAST(1 AS BIGINT) AS proposal_id, target_name AS obs_id, 'mast:x' AS data_uri, 'train' AS split, class AS caption, 'paper' AS caption_form FROM targets";
    let (dir, path) = write_pipeline(TARGETS_SOURCE, model, &[("targets.csv", TARGETS_CSV)]);
    let config = crate::pipeline::config::load(&path).unwrap();
    crate::pipeline::check_models(&config).await.unwrap();

    let bad = format!("{TARGETS_CSV}M-31\n");
    std::fs::write(dir.path().join("targets.csv"), bad).unwrap();
    let error = crate::pipeline::check_models(&config)
        .await
        .unwrap_err()
        .to_string();
    assert!(
        error.contains("line 4 has 1 field, but the schema declares 2"),
        "{error}"
    );
}

#[test]
fn fingerprints_follow_file_and_section() {
    let (dir, path) = write_pipeline(TARGETS_SOURCE, "SELECT 1", &[("targets.csv", TARGETS_CSV)]);
    let fingerprint = |path: &Path| {
        let config = crate::pipeline::config::load(path).unwrap();
        source_fingerprints(&config).unwrap()
    };
    let original = fingerprint(&path);
    assert_eq!(original.len(), 1);
    assert_eq!(original[0].0, "source targets");
    assert_eq!(
        fingerprint(&path),
        original,
        "unchanged inputs, same fingerprint"
    );

    std::fs::write(
        dir.path().join("targets.csv"),
        format!("{TARGETS_CSV}M-31,galaxy\n"),
    )
    .unwrap();
    let file_changed = fingerprint(&path);
    assert_ne!(
        file_changed, original,
        "a changed file changes the fingerprint"
    );

    let with_delimiter =
        TARGETS_SOURCE.replace(r#"format = "csv""#, "format = \"csv\"\ndelimiter = \",\"");
    std::fs::write(&path, format!("{PIPELINE}{with_delimiter}")).unwrap();
    assert_ne!(
        fingerprint(&path),
        file_changed,
        "a changed section changes the fingerprint"
    );
}
