//! Faults of the file system, injected for real: a data directory on a small tmpfs that
//! fills up, folders the run may not write (the run as an unprivileged user), and a tmpfs
//! remounted read-only. A run that meets a fault must stop with an error that names the
//! path and the fix. No partial version may become visible. Once the fault is gone, the
//! next run must publish exactly what an uninterrupted run publishes.
//!
//! Mounting and switching users need root. Without those rights each test prints why and
//! passes, unless `PAPERCLIP_REQUIRE_FAULT_FS=1` turns that into a failure.

use std::collections::BTreeSet;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use paperclip::dataset::versions::{DatasetPaths, VersionRecord, list_versions};
use paperclip_archive::server::ServeOptions;

use crate::support::{pipeline_path, query, repo_root, serve_snapshot};

const DATASET: &str = "hst-paperclip";

/// The unprivileged user (`nobody`) the permission tests run paperclip as.
const NOBODY: u32 = 65534;

/// What the error of each fault must advise.
const FREE_SPACE: &str = "free space on it";
const FIX_PERMISSIONS: &str = "write access to that folder";
const REMOUNT: &str = "remount it writable";

/// Who runs the `paperclip` binary.
#[derive(Debug, Clone, Copy, PartialEq)]
enum User {
    Root,
    Nobody,
}

/// Prints why a fault cannot be injected here, or fails when `PAPERCLIP_REQUIRE_FAULT_FS=1`.
fn unavailable(reason: &str) {
    if std::env::var("PAPERCLIP_REQUIRE_FAULT_FS").as_deref() == Ok("1") {
        panic!("PAPERCLIP_REQUIRE_FAULT_FS=1 but {reason}");
    }
    eprintln!("skipped: {reason}");
}

/// Returns true when a tmpfs can be mounted under `dir`.
fn can_mount(dir: &Path) -> bool {
    match Tmpfs::mount(&dir.join("probe"), 64) {
        Ok(_probe) => true,
        Err(reason) => {
            unavailable(&format!(
                "cannot mount a tmpfs ({reason}); run the tests as root with mount rights"
            ));
            false
        }
    }
}

/// Returns true when paperclip can run as [`NOBODY`] and read the project's SQL files.
fn can_switch_user() -> bool {
    let probe = |program: &str, args: &[&Path]| {
        Command::new("setpriv")
            .args(setpriv_args())
            .arg(program)
            .args(args)
            .output()
            .map_err(|e| format!("setpriv cannot start: {e}"))
            .and_then(|output| match output.status.success() {
                true => Ok(()),
                false => Err(one_line(&output.stderr)),
            })
    };
    let samples_sql = repo_root().join("sql/samples.sql");
    let checked = probe(env!("CARGO_BIN_EXE_paperclip"), &[Path::new("--version")])
        .and_then(|()| probe("test", &[Path::new("-r"), &samples_sql]));
    match checked {
        Ok(()) => true,
        Err(reason) => {
            unavailable(&format!(
                "cannot run paperclip as uid {NOBODY} with setpriv ({reason}); run the tests as root with util-linux installed, from a checkout that uid {NOBODY} can read"
            ));
            false
        }
    }
}

fn setpriv_args() -> [String; 3] {
    [
        format!("--reuid={NOBODY}"),
        format!("--regid={NOBODY}"),
        "--clear-groups".to_string(),
    ]
}

/// A tmpfs mounted on a folder of a test's temporary directory. It is unmounted when
/// dropped, also when the test fails.
struct Tmpfs {
    dir: PathBuf,
}

impl Tmpfs {
    fn mount(dir: &Path, size_kib: u64) -> Result<Self, String> {
        std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
        let options = format!("size={size_kib}k,mode=0755");
        mount(&["-t", "tmpfs", "-o", &options, "tmpfs"], dir)?;
        Ok(Self {
            dir: dir.to_path_buf(),
        })
    }

    /// Remounts with other options: `size=64m`, `ro`, `rw`.
    fn remount(&self, options: &str) {
        mount(&["-o", &format!("remount,{options}")], &self.dir)
            .unwrap_or_else(|reason| panic!("remount {options} failed: {reason}"));
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let unmounted = |args: &[&str]| {
            Command::new("umount")
                .args(args)
                .arg(&self.dir)
                .status()
                .is_ok_and(|s| s.success())
        };
        if !unmounted(&[]) && !unmounted(&["--lazy"]) {
            eprintln!("warning: cannot unmount {}", self.dir.display());
        }
    }
}

fn mount(args: &[&str], dir: &Path) -> Result<(), String> {
    let output = Command::new("mount")
        .args(args)
        .arg(dir)
        .output()
        .map_err(|e| format!("mount cannot start: {e}"))?;
    match output.status.success() {
        true => Ok(()),
        false => Err(one_line(&output.stderr)),
    }
}

/// Joins a program's message into one line.
fn one_line(message: &[u8]) -> String {
    let text = String::from_utf8_lossy(message);
    text.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// Space the files under `dir` take on a tmpfs, in KiB (whole 4 KiB pages per file).
fn usage_kib(dir: &Path) -> u64 {
    let mut total = 0;
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        let metadata = std::fs::symlink_metadata(&path).unwrap();
        if metadata.is_dir() {
            total += usage_kib(&path);
        } else {
            total += metadata.len().div_ceil(4096) * 4;
        }
    }
    total
}

/// Copies a data directory with its modes, owned by `user`.
fn copy_data_dir(from: &Path, to: &Path, user: User) {
    std::fs::create_dir_all(to).unwrap();
    let status = Command::new("cp")
        .arg("-a")
        .arg(from.join("."))
        .arg(to)
        .status()
        .unwrap();
    assert!(
        status.success(),
        "cp -a {} {}",
        from.display(),
        to.display()
    );
    if user == User::Nobody {
        chown_tree(to);
    }
}

/// Gives a folder and everything under it to [`NOBODY`].
fn chown_tree(dir: &Path) {
    std::os::unix::fs::chown(dir, Some(NOBODY), Some(NOBODY)).unwrap();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            chown_tree(&path);
        } else {
            std::os::unix::fs::lchown(&path, Some(NOBODY), Some(NOBODY)).unwrap();
        }
    }
}

/// Makes a folder and every folder under it read-only (0555); returns the modes to restore.
fn make_read_only(dir: &Path) -> Vec<(PathBuf, u32)> {
    let mut modes = vec![(dir.to_path_buf(), std::fs::metadata(dir).unwrap().mode())];
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            modes.extend(make_read_only(&path));
        }
    }
    set_mode(dir, 0o555);
    modes
}

fn set_mode(path: &Path, mode: u32) {
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
}

/// The project's pipeline, and the same pipeline with another JPEG quality, which changes
/// every prepared image and so publishes a second version.
struct Pipelines {
    first: PathBuf,
    second: PathBuf,
}

fn write_pipelines(dir: &Path) -> Pipelines {
    let text = std::fs::read_to_string(pipeline_path()).unwrap();
    let sql_dir = format!("\"{}/", repo_root().join("sql").display());
    let first = text.replace("\"../sql/", &sql_dir);
    let second = first.replace("jpeg_quality = 95", "jpeg_quality = 90");
    assert!(
        first != text && second != first,
        "the pipeline file changed shape"
    );
    let pipelines = Pipelines {
        first: dir.join("first.toml"),
        second: dir.join("second.toml"),
    };
    std::fs::write(&pipelines.first, first).unwrap();
    std::fs::write(&pipelines.second, second).unwrap();
    pipelines
}

/// The fixture archive served on loopback, the pipelines and the reference data directory
/// of an uninterrupted first and second run.
struct Setup {
    dir: tempfile::TempDir,
    _server: paperclip_archive::RunningServer,
    archive: String,
    pipelines: Pipelines,
    reference: PathBuf,
    /// The reference directory as it was after the first run.
    reference_v1: PathBuf,
}

/// Makes the temporary directory of a test.
fn test_dir() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    // The unprivileged runs must reach the pipelines and data directories inside.
    set_mode(dir.path(), 0o755);
    dir
}

async fn setup(dir: tempfile::TempDir) -> Setup {
    let snapshot_dir = dir.path().join("snapshot");
    paperclip::snapshots::fixtures::build(&snapshot_dir).unwrap();
    let server = serve_snapshot(&snapshot_dir, ServeOptions::default()).await;
    let archive = server.base_url().to_string();
    let pipelines = write_pipelines(dir.path());

    let reference = dir.path().join("reference");
    let reference_v1 = dir.path().join("reference-v1");
    let output = run(User::Root, &reference, &pipelines.first, &archive);
    assert!(output.status.success(), "{}", stderr(&output));
    copy_data_dir(&reference, &reference_v1, User::Root);
    let output = run(User::Root, &reference, &pipelines.second, &archive);
    assert!(output.status.success(), "{}", stderr(&output));
    assert_eq!(versions(&reference).await.len(), 2);
    Setup {
        dir,
        _server: server,
        archive,
        pipelines,
        reference,
        reference_v1,
    }
}

fn paperclip(user: User, data_dir: &Path, args: &[&str]) -> Output {
    let binary = env!("CARGO_BIN_EXE_paperclip");
    let mut command = match user {
        User::Root => Command::new(binary),
        User::Nobody => {
            let mut command = Command::new("setpriv");
            command.args(setpriv_args()).arg(binary);
            command
        }
    };
    command
        .arg("--data-dir")
        .arg(data_dir)
        .args(args)
        .env_remove("RUST_LOG")
        .env_remove("PAPERCLIP_DATA_DIR")
        .output()
        .expect("the binary runs")
}

fn run(user: User, data_dir: &Path, pipeline: &Path, archive: &str) -> Output {
    let pipeline = pipeline.to_str().unwrap();
    paperclip(user, data_dir, &["run", pipeline, "--archive", archive])
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

/// Checks that a run stopped on a fault with a one-line error that names a path under
/// `under` and gives `advice`; returns that line.
fn assert_fault_error(output: &Output, under: &Path, advice: &str) -> String {
    let stderr = stderr(output);
    assert_eq!(
        output.status.code(),
        Some(1),
        "the run must fail with status 1, not crash:\n{stderr}"
    );
    let line = stderr
        .lines()
        .rfind(|line| line.starts_with("error: "))
        .unwrap_or_else(|| panic!("no error line:\n{stderr}"))
        .to_string();
    assert!(
        line.contains(&under.display().to_string()),
        "the error must name the path under {}: {line}",
        under.display()
    );
    assert!(
        line.contains(advice),
        "the error must say {advice:?}: {line}"
    );
    line
}

/// Names the stage whose folder the error names, from the path after the data directory.
fn stage_of(error: &str, data_dir: &Path) -> &'static str {
    let data_dir = data_dir.display().to_string();
    let Some((_, after)) = error.split_once(&data_dir) else {
        return "unknown";
    };
    let dataset = format!("/datasets/{DATASET}");
    let stages = [
        ("/blobs/tmp/.paperclip-download", "download"),
        ("/blobs", "blob store"),
        ("/prepared", "prepared images"),
        ("/runs", "run record"),
        (&format!("{dataset}/state") as &str, "archive state"),
        (&format!("{dataset}/staging"), "staged version"),
        (&format!("{dataset}/versions"), "version folder"),
        (&format!("{dataset}/samples"), "Delta commit"),
        (&dataset, "dataset folder"),
    ];
    stages
        .iter()
        .find(|(prefix, _)| after.starts_with(prefix))
        .map_or("data directory", |(_, stage)| stage)
}

/// Checks that a run whose disk fills only at its run record reports the version it
/// published.
fn assert_published_when_only_the_record_failed(error: &str, data_dir: &Path) {
    if stage_of(error, data_dir) == "run record" {
        assert!(
            error.contains("was published") || error.contains("is unchanged"),
            "{error}"
        );
    }
}

async fn versions(data_dir: &Path) -> Vec<VersionRecord> {
    list_versions(&DatasetPaths::new(data_dir, DATASET))
        .await
        .unwrap()
}

/// Checks that a version equals the reference's version of the same number: the same
/// samples and the same shards, byte for byte.
fn assert_same_version(found: &VersionRecord, reference: &VersionRecord) {
    assert_eq!(found.version, reference.version);
    assert_eq!(
        found.fingerprint, reference.fingerprint,
        "v{} differs from the uninterrupted run",
        found.version
    );
    let shards = |r: &VersionRecord| -> Vec<(String, String)> {
        r.shards
            .iter()
            .map(|s| (s.name.clone(), s.sha256.clone()))
            .collect()
    };
    assert_eq!(shards(found), shards(reference), "v{}", found.version);
}

/// Checks what a user sees while the fault lasts: `datasets show`, SQL and the library
/// list the same versions, each equal to the reference's and intact on disk, and the
/// next version number cannot be read. Returns how many versions are listed.
async fn assert_no_partial_version(data_dir: &Path, user: User, reference: &Path) -> usize {
    let reference = versions(reference).await;
    let listed = versions(data_dir).await;
    for record in &listed {
        assert_same_version(record, &reference[record.version as usize - 1]);
    }
    let paths = DatasetPaths::new(data_dir, DATASET);
    let problems = paperclip::dataset::verify::verify_dataset(&paths)
        .await
        .unwrap();
    // A folder of an attempt that was never committed (a problem of version 0) is allowed,
    // because no version lists it and the next run replaces it.
    let broken: Vec<_> = problems.iter().filter(|p| p.version != 0).collect();
    assert!(broken.is_empty(), "a listed version is damaged: {broken:?}");

    let show = paperclip(user, data_dir, &["--json", "datasets", "show", DATASET]);
    let latest = r#"SELECT count(*) AS n FROM "hst-paperclip".latest.samples"#;
    let sql = paperclip(user, data_dir, &["--json", "sql", latest]);
    let next = format!(
        r#"SELECT count(*) AS n FROM "hst-paperclip".v{}.samples"#,
        listed.len() + 1
    );
    let sql_next = paperclip(user, data_dir, &["--json", "sql", &next]);
    assert!(!sql_next.status.success(), "{next} must not be readable");
    if listed.is_empty() {
        assert!(!show.status.success(), "datasets show lists a version");
        assert!(stderr(&show).contains("not found"), "{}", stderr(&show));
        assert!(!sql.status.success(), "SQL reads a version");
        return 0;
    }
    assert!(show.status.success(), "{}", stderr(&show));
    let shown_versions: Vec<VersionRecord> = serde_json::from_slice(&show.stdout).unwrap();
    assert_eq!(
        shown_versions, listed,
        "datasets show and the library disagree"
    );
    assert!(sql.status.success(), "{}", stderr(&sql));
    let rows: serde_json::Value = serde_json::from_slice(&sql.stdout).unwrap();
    let expected = listed.last().unwrap().counts["samples"];
    assert_eq!(rows[0]["n"], expected, "the latest version reads whole");
    listed.len()
}

/// Checks that a data directory holds exactly the reference's versions, verified clean.
async fn assert_matches_reference(data_dir: &Path, reference: &Path) {
    let found = versions(data_dir).await;
    let expected = versions(reference).await;
    assert_eq!(
        found.len(),
        expected.len(),
        "the run after the fault publishes what an uninterrupted run publishes"
    );
    for (found, expected) in found.iter().zip(&expected) {
        assert_same_version(found, expected);
    }
    let paths = DatasetPaths::new(data_dir, DATASET);
    let problems = paperclip::dataset::verify::verify_dataset(&paths)
        .await
        .unwrap();
    assert!(problems.is_empty(), "{problems:?}");
    let keys = query(
        data_dir,
        r#"SELECT count(*) AS n, count(DISTINCT key) AS k FROM "hst-paperclip".latest.samples"#,
    )
    .await;
    assert!(keys.contains("| 7 | 7 |"), "{keys}");
}

/// Disk sizes (KiB, whole pages) from nothing up to just below `total`, closer together
/// near the top, where the last stages (shards, the Delta commit, the run record) write.
fn sizes_below(total: u64) -> Vec<u64> {
    let coarse = [0, 1, 4, 8, 12].map(|sixteenths| total * sixteenths / 16);
    let fine = [160, 128, 96, 64, 48, 32, 16, 8, 4].map(|below| total.saturating_sub(below));
    coarse
        .into_iter()
        .chain(fine)
        .map(|kib| kib / 4 * 4)
        .collect()
}

/// A first run on a disk too small for it, at sizes that fill the disk in each stage. The
/// run stops with the path and "free space", and nothing partial is visible. After the disk
/// grows, the next run publishes the reference version.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn full_disk_during_first_run() {
    let dir = test_dir();
    if !can_mount(dir.path()) {
        return;
    }
    let setup = setup(dir).await;
    let total = usage_kib(&setup.reference_v1);
    let mut stages = BTreeSet::new();
    for (i, size_kib) in sizes_below(total).into_iter().enumerate() {
        let size_kib = size_kib.max(16);
        let disk = Tmpfs::mount(&setup.dir.path().join(format!("full-{i}")), size_kib).unwrap();
        let data_dir = disk.dir.join("data");
        let output = run(
            User::Root,
            &data_dir,
            &setup.pipelines.first,
            &setup.archive,
        );
        let (stage, error) = if output.status.success() {
            ("none", String::new())
        } else {
            let error = assert_fault_error(&output, &data_dir, FREE_SPACE);
            assert_published_when_only_the_record_failed(&error, &data_dir);
            (stage_of(&error, &data_dir), error)
        };
        let visible = assert_no_partial_version(&data_dir, User::Root, &setup.reference_v1).await;
        eprintln!("{size_kib} KiB of {total}: stage {stage}; {visible} version(s) listed; {error}");
        if stage != "none" {
            stages.insert(stage);
        }

        disk.remount("size=64m");
        let output = run(
            User::Root,
            &data_dir,
            &setup.pipelines.first,
            &setup.archive,
        );
        assert!(output.status.success(), "{}", stderr(&output));
        assert_matches_reference(&data_dir, &setup.reference_v1).await;
    }
    eprintln!("a full disk stopped the first run in: {stages:?}");
    assert!(
        stages.len() >= 4,
        "the sizes must fill the disk in several stages: {stages:?}"
    );
}

/// A second run, which must publish v2, on a disk with less room than it needs. v1 stays
/// the latest version and readable. After the disk grows, the next run publishes the
/// reference v2.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn full_disk_during_second_version() {
    let dir = test_dir();
    if !can_mount(dir.path()) {
        return;
    }
    let setup = setup(dir).await;
    let base = usage_kib(&setup.reference_v1);
    let needed = usage_kib(&setup.reference) - base;
    let mut stages = BTreeSet::new();
    for (i, extra_kib) in sizes_below(needed).into_iter().enumerate() {
        // Whole pages for the copy of v1, then room for part of the second run.
        let size_kib = base + extra_kib + 8;
        let disk = Tmpfs::mount(&setup.dir.path().join(format!("full-{i}")), size_kib).unwrap();
        let data_dir = disk.dir.join("data");
        copy_data_dir(&setup.reference_v1, &data_dir, User::Root);
        let output = run(
            User::Root,
            &data_dir,
            &setup.pipelines.second,
            &setup.archive,
        );
        let (stage, error) = if output.status.success() {
            ("none", String::new())
        } else {
            let error = assert_fault_error(&output, &data_dir, FREE_SPACE);
            assert_published_when_only_the_record_failed(&error, &data_dir);
            (stage_of(&error, &data_dir), error)
        };
        let visible = assert_no_partial_version(&data_dir, User::Root, &setup.reference).await;
        assert!(visible >= 1, "v1 stays listed");
        eprintln!("{extra_kib} KiB of {needed} more: stage {stage}; {visible} listed; {error}");
        if stage != "none" {
            stages.insert(stage);
        }

        disk.remount("size=64m");
        let output = run(
            User::Root,
            &data_dir,
            &setup.pipelines.second,
            &setup.archive,
        );
        assert!(output.status.success(), "{}", stderr(&output));
        assert_matches_reference(&data_dir, &setup.reference).await;
    }
    eprintln!("a full disk stopped the second run in: {stages:?}");
    assert!(
        stages.len() >= 4,
        "the sizes must fill the disk in several stages: {stages:?}"
    );
}

/// A data directory remounted read-only before a run that must publish v2. The run stops
/// with the path and "remount it writable", and v1 stays readable from the read-only
/// mount. Once the mount is writable again, the next run publishes the reference v2.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn read_only_mount_keeps_latest_version() {
    let dir = test_dir();
    if !can_mount(dir.path()) {
        return;
    }
    let setup = setup(dir).await;
    let disk = Tmpfs::mount(&setup.dir.path().join("read-only"), 64 * 1024).unwrap();
    let data_dir = disk.dir.join("data");
    copy_data_dir(&setup.reference_v1, &data_dir, User::Root);
    disk.remount("ro");

    let output = run(
        User::Root,
        &data_dir,
        &setup.pipelines.second,
        &setup.archive,
    );
    let error = assert_fault_error(&output, &data_dir, REMOUNT);
    eprintln!("read-only: {error}");
    let visible = assert_no_partial_version(&data_dir, User::Root, &setup.reference).await;
    assert_eq!(visible, 1, "v1 stays the latest version");

    disk.remount("rw");
    let output = run(
        User::Root,
        &data_dir,
        &setup.pipelines.second,
        &setup.archive,
    );
    assert!(output.status.success(), "{}", stderr(&output));
    assert_matches_reference(&data_dir, &setup.reference).await;
}

/// Each folder of the data directory, made unwritable (mode 0555, with paperclip run as an
/// unprivileged user) before a run that must write there. The run stops with the path and
/// "write access", and no partial version is visible. Once the mode is restored, the next
/// run publishes the reference versions.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unwritable_folder_stops_run() {
    if !can_switch_user() {
        return;
    }
    let setup = setup(test_dir()).await;
    let dataset = format!("datasets/{DATASET}");
    let folders = [
        String::new(),
        "blobs".to_string(),
        "prepared".to_string(),
        "runs".to_string(),
        dataset.clone(),
        format!("{dataset}/state"),
        format!("{dataset}/versions"),
        format!("{dataset}/samples"),
        format!("{dataset}/samples/_delta_log"),
    ];
    for (i, folder) in folders.iter().enumerate() {
        let data_dir = setup.dir.path().join(format!("unwritable-{i}"));
        // The whole data directory is tested on the first run, the others on the second.
        let (start, pipeline) = match folder.as_str() {
            "" => (None, &setup.pipelines.first),
            _ => (Some(&setup.reference_v1), &setup.pipelines.second),
        };
        match start {
            Some(v1) => copy_data_dir(v1, &data_dir, User::Nobody),
            None => {
                std::fs::create_dir(&data_dir).unwrap();
                chown_tree(&data_dir);
            }
        }
        let unwritable = data_dir.join(folder);
        let modes = make_read_only(&unwritable);

        let output = run(User::Nobody, &data_dir, pipeline, &setup.archive);
        let error = assert_fault_error(&output, &unwritable, FIX_PERMISSIONS);
        let visible = assert_no_partial_version(&data_dir, User::Nobody, &setup.reference).await;
        let stage = stage_of(&error, &data_dir);
        eprintln!("{folder:?} unwritable: stage {stage}; {visible} version(s) listed; {error}");
        if folder == "runs" {
            // The record is written last, after the version is published.
            assert!(
                error.contains("version 2 of hst-paperclip was published"),
                "{error}"
            );
            assert_eq!(visible, 2);
        } else {
            let before = usize::from(start.is_some());
            assert_eq!(
                visible, before,
                "the version before the fault stays the latest"
            );
        }

        for (path, mode) in modes.iter().rev() {
            set_mode(path, *mode);
        }
        let output = run(User::Nobody, &data_dir, pipeline, &setup.archive);
        assert!(output.status.success(), "{}", stderr(&output));
        if start.is_none() {
            let output = run(
                User::Nobody,
                &data_dir,
                &setup.pipelines.second,
                &setup.archive,
            );
            assert!(output.status.success(), "{}", stderr(&output));
        }
        assert_matches_reference(&data_dir, &setup.reference).await;
    }
}
