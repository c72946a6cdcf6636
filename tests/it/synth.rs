//! The synthetic archive of `paperclip archive synth` through the whole pipeline.

use crate::support::{paperclip, run_pipeline, serve_snapshot};

#[tokio::test]
async fn synthetic_archive_runs_through_pipeline() {
    let dir = tempfile::tempdir().unwrap();
    let archive = dir.path().join("archive");
    let synth = paperclip(
        &dir.path().join("unused"),
        &[
            "archive",
            "synth",
            archive.to_str().unwrap(),
            "--proposals",
            "4",
            "--previews-per-proposal",
            "3",
            "--min-side-px",
            "64",
            "--max-side-px",
            "160",
            "--fits-per-proposal",
            "1",
        ],
    );
    assert!(
        synth.status.success(),
        "{}",
        String::from_utf8_lossy(&synth.stderr)
    );
    let stdout = String::from_utf8_lossy(&synth.stdout);
    assert!(stdout.contains("4 proposals, 12 previews"), "{stdout}");

    // A second archive never mixes into the first one's directory.
    let again = paperclip(
        &dir.path().join("unused"),
        &[
            "archive",
            "synth",
            archive.to_str().unwrap(),
            "--proposals",
            "1",
        ],
    );
    assert!(!again.status.success());
    let stderr = String::from_utf8_lossy(&again.stderr);
    assert!(stderr.contains("is not empty"), "{stderr}");

    let server = serve_snapshot(&archive, paperclip_archive::ServeOptions::default()).await;
    let report = run_pipeline(&dir.path().join("data"), server.base_url()).await;

    assert_eq!(
        report.counts.get("samples"),
        Some(&12),
        "{:?}",
        report.counts
    );
    assert_eq!(
        report.counts.get("sample_proposals"),
        Some(&4),
        "{:?}",
        report.counts
    );
}
