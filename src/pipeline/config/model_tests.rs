use super::*;

fn load_with(settings: &str, models: &str, samples_model: &str) -> String {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("a.sql"), "SELECT 1").unwrap();
    let path = dir.path().join("p.toml");
    let text = format!(
        "[dataset]\nname = \"d\"\n{settings}\n[sql]\nmodels = [{models}]\nsamples_model = \"{samples_model}\"\n"
    );
    std::fs::write(&path, text).unwrap();
    load(&path).unwrap_err().to_string()
}

#[test]
fn missing_model_file_is_named() {
    let message = load_with("", "\"nope.sql\"", "nope");
    assert!(message.contains("nope.sql"), "{message}");
    assert!(message.contains("does not exist"), "{message}");
}

#[test]
fn unknown_samples_model_lists_models() {
    let message = load_with("", "\"a.sql\"", "b");
    assert!(
        message.contains("sql.samples_model = \"b\" is not one of the models (a)"),
        "{message}"
    );
}

#[test]
fn zero_page_size_names_the_key() {
    let message = load_with("[archive]\npage_size = 0", "\"a.sql\"", "a");
    assert!(
        message.contains("archive.page_size = 0 is outside 1..=500000"),
        "{message}"
    );
}

#[test]
fn unknown_candidates_model_lists_models() {
    let message = load_with("", "\"a.sql\"", "a\"\ncandidates_model = \"candidates");
    assert!(
        message.contains("sql.candidates_model = \"candidates\" is not one of the models (a)"),
        "{message}"
    );
}

#[test]
fn missing_catalog_path_is_named() {
    let message = load_with("[archive]\ncatalog = \"cats/nope.cat\"", "\"a.sql\"", "a");
    assert!(
        message.contains("archive.catalog = \"cats/nope.cat\" resolves to"),
        "{message}"
    );
    assert!(message.contains("which is not a file"), "{message}");
}

#[test]
fn model_listed_twice_is_named() {
    let message = load_with("", "\"a.sql\", \"a.sql\"", "a");
    assert!(
        message.contains("sql.models lists a.sql twice; remove one"),
        "{message}"
    );
}

#[test]
fn pipeline_path_that_is_not_a_file_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let fifo = dir.path().join("p.toml");
    let made = std::process::Command::new("mkfifo")
        .arg(&fifo)
        .status()
        .unwrap();
    assert!(made.success());

    let message = load(&fifo).unwrap_err().to_string();

    assert!(message.contains("is not a regular file"), "{message}");
}
