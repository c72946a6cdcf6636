//! `paperclip serve --sql-listen` against Debian's `psql`: the catalog over the PostgreSQL
//! protocol on loopback, read-only.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};

/// Returns the `psql` binary, or `None` (after printing why) when it is missing, unless
/// `PAPERCLIP_REQUIRE_PSQL=1`, which turns absence into a failure.
pub(crate) fn psql() -> Option<&'static str> {
    let found = Command::new("psql")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    if found {
        return Some("psql");
    }
    if std::env::var("PAPERCLIP_REQUIRE_PSQL").as_deref() == Ok("1") {
        panic!(
            "PAPERCLIP_REQUIRE_PSQL=1 but psql is not installed (apt-get install postgresql-client)"
        );
    }
    eprintln!("skipped: psql is not installed (apt-get install postgresql-client)");
    None
}

pub(crate) fn free_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.local_addr().unwrap().port()
}

/// A server process, killed when dropped so a failed assertion leaves nothing running.
pub(crate) struct Server(pub(crate) Child);

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Starts `serve --sql-listen` and waits until it prints that it listens; with a
/// password, clients must log in as `analyst` with it.
fn start_server(data_dir: &Path, port: u16, password: Option<&str>) -> Server {
    start_server_with(data_dir, port, password, &[])
}

fn start_server_with(data_dir: &Path, port: u16, password: Option<&str>, extra: &[&str]) -> Server {
    let mut command = Command::new(env!("CARGO_BIN_EXE_paperclip"));
    match password {
        Some(password) => command.env("PAPERCLIP_SQL_PASSWORD", password),
        None => command.env_remove("PAPERCLIP_SQL_PASSWORD"),
    };
    let mut child = command
        .arg("--data-dir")
        .arg(data_dir)
        .args(["serve", "--sql-listen", &format!("127.0.0.1:{port}")])
        .args(extra)
        .env_remove("RUST_LOG")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    assert!(line.contains("SQL server listening"), "{line}");
    Server(child)
}

/// Runs one statement through psql; returns (success, stdout, stderr). A refused
/// connection is tried again for a few seconds: the server prints that it listens just
/// before its socket is bound.
pub(crate) fn run_psql(port: u16, sql: &str) -> (bool, String, String) {
    run_psql_as(port, None, sql)
}

fn run_psql_as(port: u16, password: Option<&str>, sql: &str) -> (bool, String, String) {
    for _ in 0..50 {
        let result = psql_once(port, password, sql);
        if !result.2.contains("Connection refused") {
            return result;
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    psql_once(port, password, sql)
}

fn psql_once(port: u16, password: Option<&str>, sql: &str) -> (bool, String, String) {
    let mut command = Command::new("psql");
    match password {
        Some(password) => command.env("PGPASSWORD", password),
        None => command.env_remove("PGPASSWORD"),
    };
    let output = command
        .args(["-h", "127.0.0.1", "-p", &port.to_string(), "-U", "analyst"])
        .args([
            "-d",
            "datafusion",
            "-X",
            "-A",
            "-t",
            "-v",
            "ON_ERROR_STOP=1",
            "-c",
            sql,
        ])
        .env("PGCONNECT_TIMEOUT", "10")
        .output()
        .unwrap();
    (
        output.status.success(),
        String::from_utf8_lossy(&output.stdout).trim().to_string(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

/// Publishes the embedded archive twice: v1 with the pipeline as shipped, and v2 with at
/// most one image per proposal, so v2 lacks some of v1's samples.
fn two_versions(dir: &Path) -> std::path::PathBuf {
    let data = crate::train::embedded_dataset(dir);
    let root = crate::support::repo_root();
    let pipeline = std::fs::read_to_string(crate::support::pipeline_path())
        .unwrap()
        .replace(
            "max_images_per_proposal = 20",
            "max_images_per_proposal = 1",
        )
        .replace("\"../sql/", &format!("\"{}/sql/", root.display()));
    let narrower = dir.join("one-image.toml");
    std::fs::write(&narrower, pipeline).unwrap();
    let run = crate::support::paperclip(
        &data,
        &["run", narrower.to_str().unwrap(), "--archive", "embedded"],
    );
    assert!(
        run.status.success(),
        "{}",
        String::from_utf8_lossy(&run.stderr)
    );
    data
}

#[test]
fn psql_compares_versions_and_cannot_write() {
    let Some(_) = psql() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let data = two_versions(dir.path());

    let port = free_port();
    let _server = start_server(&data, port, None);

    let (ok, count, err) = run_psql(port, r#"SELECT count(*) FROM "hst-paperclip".v1.samples"#);
    assert!(ok, "{err}");
    assert_eq!(count, "7");

    // What v2 dropped, through a join across the two versions.
    let (ok, dropped, err) = run_psql(
        port,
        r#"SELECT count(*) FROM "hst-paperclip".v1.samples a
           LEFT JOIN "hst-paperclip".v2.samples b ON a.key = b.key
           WHERE b.key IS NULL"#,
    );
    assert!(ok, "{err}");
    let (ok, latest, err) = run_psql(
        port,
        r#"SELECT count(*) FROM "hst-paperclip".latest.samples"#,
    );
    assert!(ok, "{err}");
    let latest: u64 = latest.parse().unwrap();
    assert!(latest < 7, "v2 has {latest} samples");
    assert_eq!(dropped.parse::<u64>().unwrap(), 7 - latest);

    let (ok, status, err) = run_psql(
        port,
        "SELECT string_agg(status, ',' ORDER BY started_at) FROM paperclip.runs",
    );
    assert!(ok, "{err}");
    assert_eq!(status, "published,published");

    for write in ["DELETE FROM paperclip.runs", "CREATE TABLE t AS SELECT 1"] {
        let (ok, _, err) = run_psql(port, write);
        assert!(!ok, "{write} was accepted");
        assert!(
            err.contains("the paperclip SQL server is read-only"),
            "{err}"
        );
    }
}

#[test]
fn psql_metadata_commands_and_export() {
    let Some(_) = psql() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let data = crate::train::embedded_dataset(dir.path());
    let port = free_port();
    let _server = start_server(&data, port, None);

    let (ok, tables, err) = run_psql(port, r"\dt");
    assert!(ok, "{err}");
    assert!(tables.contains("latest|samples|table"), "{tables}");
    assert!(tables.contains("paperclip|runs|table"), "{tables}");
    let (ok, databases, err) = run_psql(port, r"\l");
    assert!(ok, "{err}");
    assert!(databases.contains("hst-paperclip|"), "{databases}");
    let (ok, views, err) = run_psql(port, r"\dv");
    assert!(ok, "{err}");
    assert!(views.contains("paperclip|stages|view"), "{views}");
    let (ok, columns, err) = run_psql(port, r"\d paperclip.runs");
    assert!(ok, "{err}");
    assert!(columns.contains("run_id|text"), "{columns}");

    // The names \dt lists need the dataset in front, and the error hint states it.
    let (ok, _, err) = run_psql(port, "SELECT count(*) FROM latest.samples");
    assert!(!ok);
    assert!(
        err.contains("HINT:  name the dataset before the version"),
        "{err}"
    );

    // Maps and lists of structs with lists inside arrive as text.
    let (ok, runs, err) = run_psql(port, "SELECT counts, stages FROM paperclip.runs");
    assert!(ok, "{err}");
    assert!(runs.contains("samples: 7"), "{runs}");
    assert!(runs.contains("{stage: catalog, status: ran"), "{runs}");

    // What DBeaver runs when it connects and opens its navigator.
    let probes = crate::support::repo_root().join("tests/sql_server/dbeaver_probes.sql");
    let (ok, listed, err) = run_psql(port, &format!(r"\i {}", probes.display()));
    assert!(ok, "{err}");
    assert!(listed.contains("|samples|"), "{listed}");

    // psql's \copy runs the query on the server and writes the file on the client.
    let csv = dir.path().join("captions.csv");
    let (ok, _, err) = run_psql(
        port,
        &format!(
            r#"\copy (SELECT key, caption FROM "hst-paperclip".latest.samples ORDER BY key) TO '{}' CSV HEADER"#,
            csv.display()
        ),
    );
    assert!(ok, "{err}");
    let exported = std::fs::read_to_string(&csv).unwrap();
    let mut lines = exported.lines();
    assert_eq!(lines.next(), Some("key,caption"));
    assert_eq!(lines.count(), 7);

    // NULL and the empty string stay apart, and the count is of rows alone.
    let awkward = dir.path().join("awkward.csv");
    let (ok, reported, err) = run_psql(
        port,
        &format!(
            r#"\copy (SELECT CAST(NULL AS VARCHAR) AS n, '' AS e, 'a,"b"' AS q) TO '{}' CSV HEADER"#,
            awkward.display()
        ),
    );
    assert!(ok, "{err}");
    assert_eq!(reported, "COPY 1");
    assert_eq!(
        std::fs::read_to_string(&awkward).unwrap(),
        "n,e,q\n,\"\",\"a,\"\"b\"\"\"\n"
    );
}

#[test]
fn password_is_checked_with_scram() {
    let Some(_) = psql() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let data = crate::train::embedded_dataset(dir.path());
    let port = free_port();
    let _server = start_server(&data, port, Some("correct horse"));

    let (ok, one, err) = run_psql_as(port, Some("correct horse"), "SELECT 1");
    assert!(ok, "{err}");
    assert_eq!(one, "1");
    let (ok, _, err) = run_psql_as(port, Some("wrong"), "SELECT 1");
    assert!(!ok);
    assert!(err.contains("authentication failed"), "{err}");
    let (ok, _, err) = run_psql_as(port, None, "SELECT 1");
    assert!(!ok);
    assert!(err.contains("no password supplied"), "{err}");
}

/// Runs `serve` with `args` until it exits; returns (exit code, stdout, stderr).
fn serve_exit(data_dir: &Path, args: &[&str]) -> (Option<i32>, String, String) {
    let output = Command::new(env!("CARGO_BIN_EXE_paperclip"))
        .arg("--data-dir")
        .arg(data_dir)
        .arg("serve")
        .args(args)
        .env_remove("PAPERCLIP_SQL_PASSWORD")
        .output()
        .unwrap();
    (
        output.status.code(),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

#[test]
fn start_up_errors_are_named() {
    let dir = tempfile::tempdir().unwrap();

    let occupier = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let address = occupier.local_addr().unwrap().to_string();
    let (code, _, stderr) = serve_exit(dir.path(), &["--sql-listen", &address]);
    assert_eq!(code, Some(1), "{stderr}");
    assert!(
        stderr.contains(&format!("cannot listen on {address}")),
        "{stderr}"
    );
    assert!(!stderr.contains("panicked"), "{stderr}");

    let (code, _, stderr) = serve_exit(
        dir.path(),
        &["--sql-listen", "--sql-password-env", "NO_SUCH_VARIABLE_SET"],
    );
    assert_eq!(code, Some(1), "{stderr}");
    assert!(
        stderr.contains("but NO_SUCH_VARIABLE_SET is not set"),
        "{stderr}"
    );

    let (code, _, stderr) = serve_exit(
        dir.path(),
        &["--sql-listen", "--sql-memory-limit-mib", "17592186044416"],
    );
    assert_eq!(code, Some(2), "{stderr}");
    assert!(stderr.contains("--sql-memory-limit-mib"), "{stderr}");
}

#[test]
fn wide_address_without_password_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let output = Command::new(env!("CARGO_BIN_EXE_paperclip"))
        .arg("--data-dir")
        .arg(dir.path())
        .args(["serve", "--sql-listen", "0.0.0.0:0"])
        .env_remove("PAPERCLIP_SQL_PASSWORD")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("needs a password"), "{stderr}");
    assert!(stderr.contains("PAPERCLIP_SQL_PASSWORD"), "{stderr}");
}

#[test]
fn tls_is_used_when_configured() {
    let Some(_) = psql() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let (cert, key) = (dir.path().join("cert.pem"), dir.path().join("key.pem"));
    let certificate = Command::new("openssl")
        .args([
            "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
        ])
        .args(["-subj", "/CN=127.0.0.1", "-keyout"])
        .arg(&key)
        .arg("-out")
        .arg(&cert)
        .output();
    if !certificate.is_ok_and(|o| o.status.success()) {
        eprintln!("skipped: openssl cannot make a test certificate");
        return;
    }
    let data = crate::train::embedded_dataset(dir.path());

    // A certificate given as the key is refused before the server starts.
    let wrong = Command::new(env!("CARGO_BIN_EXE_paperclip"))
        .arg("--data-dir")
        .arg(&data)
        .args(["serve", "--sql-listen", "127.0.0.1:0", "--sql-tls-cert"])
        .arg(&cert)
        .arg("--sql-tls-key")
        .arg(&cert)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&wrong.stderr);
    assert!(stderr.contains("holds no PKCS#8 private key"), "{stderr}");

    // So is the key of another certificate, which would otherwise leave the server
    // without TLS.
    let other_key = dir.path().join("other-key.pem");
    let generated = Command::new("openssl")
        .args(["genpkey", "-algorithm", "RSA", "-out"])
        .arg(&other_key)
        .output()
        .unwrap();
    assert!(generated.status.success());
    let mismatched = Command::new(env!("CARGO_BIN_EXE_paperclip"))
        .arg("--data-dir")
        .arg(&data)
        .args(["serve", "--sql-listen", "127.0.0.1:0", "--sql-tls-cert"])
        .arg(&cert)
        .arg("--sql-tls-key")
        .arg(&other_key)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&mismatched.stderr);
    assert_eq!(mismatched.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("cannot be used together"), "{stderr}");

    let port = free_port();
    let (cert, key) = (cert.display().to_string(), key.display().to_string());
    let _server = start_server_with(
        &data,
        port,
        None,
        &["--sql-tls-cert", &cert, "--sql-tls-key", &key],
    );
    let mut info = (false, String::new(), String::new());
    for _ in 0..50 {
        let output = Command::new("psql")
            .arg(format!(
                "host=127.0.0.1 port={port} user=analyst dbname=datafusion sslmode=require"
            ))
            .args(["-X", "-w", "-c", r"\conninfo"])
            .output()
            .unwrap();
        info = (
            output.status.success(),
            String::from_utf8_lossy(&output.stdout).into_owned(),
            String::from_utf8_lossy(&output.stderr).into_owned(),
        );
        if !info.2.contains("Connection refused") {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    assert!(info.0, "{}", info.2);
    assert!(info.1.contains("SSL connection"), "{}", info.1);
}

/// Returns the project's Python with psycopg, or `None` (with a note) when it is not set up.
fn python_with_psycopg() -> Option<std::path::PathBuf> {
    let python = crate::support::repo_root().join(".venv/bin/python");
    let has_psycopg = Command::new(&python)
        .args(["-c", "import psycopg"])
        .output()
        .is_ok_and(|o| o.status.success());
    if !has_psycopg {
        eprintln!(
            "skipped: install tests/python/requirements.txt into {}",
            python.display()
        );
        return None;
    }
    Some(python)
}

#[test]
fn psycopg_runs_prepared_statements() {
    let Some(python) = python_with_psycopg() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let data = crate::train::embedded_dataset(dir.path());
    let port = free_port();
    let _server = start_server(&data, port, Some("py secret"));
    // The server prints that it listens just before its socket is bound.
    std::thread::sleep(std::time::Duration::from_millis(300));

    let output = Command::new(&python)
        .arg(crate::support::repo_root().join("tests/python/check_sql_server.py"))
        .arg(port.to_string())
        .arg("py secret")
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}

#[test]
fn memory_limit_is_named_in_the_error() {
    let Some(_) = psql() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let data = crate::train::embedded_dataset(dir.path());
    let port = free_port();
    let _server = start_server_with(&data, port, None, &["--sql-memory-limit-mib", "16"]);

    let greedy = "SELECT cardinality(array_agg(repeat('x', 200) || a.value)) FROM range(1000000) a";
    let (ok, _, err) = run_psql(port, greedy);
    assert!(!ok, "a query over the memory limit succeeded");
    assert!(err.contains("limit of 16 MiB per query"), "{err}");
    assert!(err.contains("--sql-memory-limit-mib"), "{err}");

    // A client cannot lift the limit through the engine's settings.
    let (ok, _, err) = run_psql(port, "SET datafusion.runtime.memory_limit = '100G'");
    assert!(!ok, "the memory limit could be changed");
    assert!(
        err.contains("SET datafusion.runtime.memory_limit is not available"),
        "{err}"
    );

    // The pool is free again for the next query.
    let (ok, count, err) = run_psql(
        port,
        r#"SELECT count(*) FROM "hst-paperclip".latest.samples"#,
    );
    assert!(ok, "{err}");
    assert_eq!(count, "7");
}

#[test]
fn timeout_and_cancel_stop_a_running_query() {
    let Some(_) = psql() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let data = crate::train::embedded_dataset(dir.path());
    let port = free_port();
    let server = start_server_with(&data, port, None, &["--sql-query-timeout-secs", "2"]);
    // Billions of rows: minutes of work unless something stops it.
    let endless = "SELECT a.value FROM range(200000) a CROSS JOIN range(200000) b";
    // The same amount of work, but only one row at the end: all of it is computed
    // before the first row exists.
    let endless_count = "SELECT count(*) FROM range(200000) a JOIN range(200000) b \
                         ON a.value % 7 = b.value % 7";

    for sql in [endless, endless_count] {
        let started = std::time::Instant::now();
        let (ok, _, err) = run_psql(port, sql);
        assert!(!ok);
        assert!(err.contains("query timeout of 2 s"), "{err}");
        assert!(started.elapsed().as_secs() < 30, "{:?}", started.elapsed());
        assert_server_is_idle(&server);
    }

    // A client's own statement_timeout covers the rows too. psql sends each -c apart.
    let limited = Command::new("psql")
        .args(["-h", "127.0.0.1", "-p", &port.to_string(), "-U", "analyst"])
        .args(["-d", "datafusion", "-X", "-w", "-v", "ON_ERROR_STOP=1"])
        .args(["-c", "SET statement_timeout = '1500ms'", "-c", endless])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&limited.stderr);
    assert!(!limited.status.success());
    assert!(
        stderr.contains("canceling statement due to statement timeout (1500 ms"),
        "{stderr}"
    );

    // psql sends a cancel request on SIGINT (Ctrl-C).
    let query = Command::new("psql")
        .args(["-h", "127.0.0.1", "-p", &port.to_string(), "-U", "analyst"])
        .args(["-d", "datafusion", "-X", "-w", "-c", endless])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(std::time::Duration::from_millis(700));
    let signalled = Command::new("kill")
        .args(["-INT", &query.id().to_string()])
        .status()
        .unwrap();
    assert!(signalled.success());
    let output = query.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("canceling statement due to user request"),
        "{stderr}"
    );
}

/// Fails unless the server process uses well under one core over a second: a stopped
/// query must not keep computing in the background.
fn assert_server_is_idle(server: &Server) {
    let stat = format!("/proc/{}/stat", server.0.id());
    let cpu_ticks = || {
        let text = std::fs::read_to_string(&stat).ok()?;
        // The fields after the command name, which is in parentheses: the state first,
        // then utime and stime as the 12th and 13th.
        let fields: Vec<&str> = text.rsplit_once(')')?.1.split_whitespace().collect();
        let ticks = |i: usize| fields[i].parse::<u64>().unwrap();
        Some(ticks(11) + ticks(12))
    };
    if cpu_ticks().is_none() {
        return;
    }

    // Give an aborted task a moment to reach its next yield.
    std::thread::sleep(std::time::Duration::from_millis(500));
    let start = cpu_ticks().unwrap();
    std::thread::sleep(std::time::Duration::from_secs(1));
    let used = cpu_ticks().unwrap() - start;
    // Clock ticks are 1/100 s on Linux.
    assert!(
        used < 30,
        "the server used {used} ticks of CPU in 1 s after the query stopped"
    );
}

#[test]
fn thirty_two_clients_run_without_errors() {
    let Some(python) = python_with_psycopg() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let data = crate::train::embedded_dataset(dir.path());
    let port = free_port();
    let _server = start_server(&data, port, None);
    std::thread::sleep(std::time::Duration::from_millis(300));

    let output = Command::new(&python)
        .arg(crate::support::repo_root().join("benches/sql_bench.py"))
        .args(["load", "--port", &port.to_string()])
        .args(["--table", r#""hst-paperclip".latest.samples"#])
        .args(["--clients", "32", "--seconds", "5"])
        .output()
        .unwrap();
    let report = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{report}{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(report.contains("32 clients"), "{report}");
    assert!(report.contains(" 0 errors"), "{report}");
}

#[test]
fn password_never_reaches_output_or_logs() {
    let Some(_) = psql() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let data = crate::train::embedded_dataset(dir.path());
    let port = free_port();
    let password = "pw-7f3a9c-never-printed";
    let log_path = dir.path().join("serve.log");
    let log = std::fs::File::create(&log_path).unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_paperclip"))
        .arg("--data-dir")
        .arg(&data)
        .args(["--log-level", "trace", "serve", "--sql-listen"])
        .arg(format!("127.0.0.1:{port}"))
        .env("PAPERCLIP_SQL_PASSWORD", password)
        .env_remove("RUST_LOG")
        .stdout(Stdio::piped())
        .stderr(log)
        .spawn()
        .unwrap();
    let mut stdout = BufReader::new(child.stdout.take().unwrap());
    let mut first_line = String::new();
    stdout.read_line(&mut first_line).unwrap();
    let server = Server(child);

    let (ok, _, err) = run_psql_as(port, Some(password), "SELECT count(*) FROM paperclip.runs");
    assert!(ok, "{err}");
    let (ok, _, err) = run_psql_as(port, Some("wrong"), "SELECT 1");
    assert!(!ok, "{err}");
    drop(server);

    let mut rest = String::new();
    std::io::Read::read_to_string(&mut stdout, &mut rest).unwrap();
    let logs = std::fs::read_to_string(&log_path).unwrap();
    assert!(logs.contains("SQL"), "the trace log is empty: {logs}");
    for (name, text) in [("stdout", first_line + &rest), ("logs", logs)] {
        assert!(
            !text.contains(password),
            "{name} shows the password:\n{text}"
        );
    }
}
