use super::*;

fn write_pipeline(text: &str) -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("p.toml");
    std::fs::write(&path, text).unwrap();
    std::fs::write(dir.path().join("a.sql"), "SELECT 1").unwrap();
    (dir, path)
}

const MINIMAL: &str = r#"
[dataset]
name = "demo"
[sql]
models = ["a.sql"]
samples_model = "a"
"#;

#[test]
fn minimal_file_gets_defaults() {
    let (_dir, path) = write_pipeline(MINIMAL);
    let config = load(&path).unwrap();
    assert_eq!(config.selection.max_images_per_proposal, 20);
    assert_eq!(config.images.size_px, 512);
    assert_eq!(config.file_sha256.len(), 64);
}

#[test]
fn unknown_setting_is_rejected_with_valid_names() {
    let text = MINIMAL.replace("[sql]", "[selection]\nmax_image_per_proposal = 3\n[sql]");
    let (_dir, path) = write_pipeline(&text);
    let message = load(&path).unwrap_err().to_string();
    assert!(message.contains("max_image_per_proposal"), "{message}");
    assert!(message.contains("max_images_per_proposal"), "{message}");
}

#[test]
fn inverted_cycle_range_is_rejected() {
    let text = MINIMAL.replace("[sql]", "[selection]\nmin_cycle = 9\nmax_cycle = 2\n[sql]");
    let (_dir, path) = write_pipeline(&text);
    let message = load(&path).unwrap_err().to_string();
    assert!(message.contains("min_cycle (9)"), "{message}");
}

#[test]
fn dataset_names_are_checked() {
    assert!(validate_dataset_name("hst-paperclip").is_ok());
    assert!(validate_dataset_name("Hst").is_err());
    assert!(validate_dataset_name("a/b").is_err());
    assert!(validate_dataset_name("").is_err());
}

#[test]
fn image_threads_default_and_zero() {
    let (_dir, path) = write_pipeline(MINIMAL);
    let config = load(&path).unwrap();
    assert!(config.images.worker_threads() >= 1);

    let text = MINIMAL.replace("[sql]", "[images]\nthreads = 3\n[sql]");
    let (_dir, path) = write_pipeline(&text);
    assert_eq!(load(&path).unwrap().images.worker_threads(), 3);

    let text = MINIMAL.replace("[sql]", "[images]\nthreads = 0\n[sql]");
    let (_dir, path) = write_pipeline(&text);
    let message = load(&path).unwrap_err().to_string();
    assert!(message.contains("images.threads = 0"), "{message}");
    assert!(message.contains("one thread per CPU core"), "{message}");
}
