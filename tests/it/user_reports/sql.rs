//! SQL type rules through `paperclip serve --sql-listen`, the entry point analysts use with
//! their own clients. Each query there runs in a session of its own, built apart from the
//! one the SQL files of `tests/sql/` run in, so the rules must hold there too. The server runs
//! on 127.0.0.1 and is queried with `psql`; without `psql` the tests print why and pass,
//! unless `PAPERCLIP_REQUIRE_PSQL=1`.
//!
//! CSV reading (inferred types, empty first rows, a changing column count, a schema
//! demanded for every CSV source) and the anti join of CSV and Parquet strings are SQL file
//! cases under `tests/sql/` (`source_csv_*`), run through the pipeline file loader.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};

/// Returns whether `psql` can be run; prints why not, or fails when it is required.
fn have_psql() -> bool {
    let found = Command::new("psql")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    if !found {
        assert_ne!(
            std::env::var("PAPERCLIP_REQUIRE_PSQL").as_deref(),
            Ok("1"),
            "PAPERCLIP_REQUIRE_PSQL=1 but psql is not installed"
        );
        eprintln!("skipped: psql is not installed (apt-get install postgresql-client)");
    }
    found
}

/// A `serve --sql-listen` process on a free loopback port, killed when dropped.
struct SqlServer {
    child: Child,
    port: u16,
}

impl SqlServer {
    fn start(data_dir: &Path) -> Self {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let mut child = Command::new(env!("CARGO_BIN_EXE_paperclip"))
            .arg("--data-dir")
            .arg(data_dir)
            .args(["serve", "--sql-listen", &format!("127.0.0.1:{port}")])
            .env_remove("RUST_LOG")
            .env_remove("PAPERCLIP_SQL_PASSWORD")
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        assert!(line.contains("SQL server listening"), "{line}");
        Self { child, port }
    }

    /// Runs one statement; returns its unaligned rows, or panics with psql's error. A
    /// refused connection is tried again for a few seconds, since the server prints that
    /// it listens just before its socket is bound.
    fn query(&self, sql: &str) -> String {
        for _ in 0..50 {
            let output = Command::new("psql")
                .args([
                    "-h",
                    "127.0.0.1",
                    "-p",
                    &self.port.to_string(),
                    "-U",
                    "analyst",
                ])
                .args([
                    "-d",
                    "datafusion",
                    "-X",
                    "-A",
                    "-t",
                    "-v",
                    "ON_ERROR_STOP=1",
                ])
                .args(["-c", sql])
                .env_remove("PGPASSWORD")
                .env("PGCONNECT_TIMEOUT", "10")
                .output()
                .unwrap();
            let stderr = String::from_utf8_lossy(&output.stderr);
            if output.status.success() {
                return String::from_utf8_lossy(&output.stdout).trim().to_string();
            }
            assert!(stderr.contains("Connection refused"), "{sql}\n{stderr}");
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
        panic!("the SQL server on port {} never accepted", self.port);
    }
}

impl Drop for SqlServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

// https://github.com/apache/datafusion/issues/5694
#[test]
fn coalesce_case_self_join_keeps_11111() {
    if !have_psql() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let server = SqlServer::start(dir.path());
    let rows = server.query(
        "WITH t AS (SELECT 11111 AS n, CASE WHEN n_rows = 0 THEN 1 ELSE NULL END AS maybe \
         FROM (VALUES (1)) AS v(n_rows)) \
         SELECT COALESCE(a.maybe, b.n), arrow_typeof(COALESCE(a.maybe, b.n)) \
         FROM t a JOIN t b ON a.n = b.n",
    );
    assert_eq!(rows, "11111|Int64");
}

// https://github.com/apache/datafusion/issues/23045
#[test]
fn coalesce_number_and_string_is_string() {
    if !have_psql() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let server = SqlServer::start(dir.path());
    assert_eq!(
        server.query("SELECT COALESCE(1, ''), arrow_typeof(COALESCE(1, ''))"),
        "1|Utf8"
    );
    let rows = server.query(
        "SELECT COALESCE(n, '') || '.' FROM (VALUES (1), (NULL)) AS t(n) ORDER BY n NULLS LAST",
    );
    assert_eq!(rows, "1.\n.");
}
