//! The engine that runs the SQL models: this process, or an Apache Ballista cluster.
//!
//! The models read the same input tables either way. Locally they are in-memory tables.
//! For Ballista they are first written as Parquet to a staging location that every
//! executor can read: the pipeline's object store, or a folder under the data directory
//! when all executors share this machine's file system. The session registers those
//! files instead. The models then plan on the client and run on the executors. The
//! samples come back to this process, and everything after the models runs here.
//!
//! Invariant: the staged files of a run are deleted when its models have run, whether
//! they succeeded or not. A run that is killed leaves them under `staging/<run id>/`. No
//! later run reads them, because run ids are unique. In a data directory, a later run
//! deletes them ([`remove_abandoned`]): each staging folder there holds a lock while its
//! run lives. On an object store, a later cluster run deletes those older than a week.

use std::fmt;
use std::str::FromStr;
use std::sync::Arc;

use datafusion::arrow::array::RecordBatch;
use datafusion::datasource::MemTable;
use datafusion::parquet::arrow::ArrowWriter;
use datafusion::prelude::{ParquetReadOptions, SessionContext};
use futures::TryStreamExt;
use object_store::path::Path as StorePath;
use object_store::{ObjectStore, ObjectStoreExt};
use url::Url;

use crate::error::{PipelineError, Result};

/// The default port of a Ballista scheduler.
pub const DEFAULT_SCHEDULER_PORT: u16 = 50050;

/// The engine that runs the pipeline's SQL models.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum Engine {
    /// DataFusion in this process.
    #[default]
    Local,
    /// A Ballista cluster, through the scheduler at `host:port`.
    Ballista { host: String, port: u16 },
}

impl FromStr for Engine {
    type Err = String;

    fn from_str(text: &str) -> std::result::Result<Self, Self::Err> {
        if text == "local" {
            return Ok(Self::Local);
        }
        let invalid = |value: &str, why: &str| {
            format!(
                "--engine {value:?} {why}; use `local` or ballista://HOST:PORT, the address of a \
                 scheduler started with `paperclip cluster scheduler`"
            )
        };
        if text.starts_with("ballista://:") || text == "ballista://" {
            return Err(invalid(text, "has no host"));
        }
        let url = Url::parse(text).map_err(|_| invalid(text, "is not an engine"))?;
        if url.scheme() != "ballista" {
            return Err(invalid(text, "is not an engine"));
        }
        let host = url
            .host_str()
            .filter(|host| !host.is_empty())
            .ok_or_else(|| invalid(text, "has no host"))?;
        if host.starts_with('[') {
            return Err(invalid(
                text,
                "is an IPv6 address, which Ballista executors cannot use yet; give an IPv4 \
                 address or a host name",
            ));
        }
        if !url.username().is_empty() || url.password().is_some() {
            // The text is not repeated, because it contains what may be a password.
            let port = url
                .port()
                .map(|port| format!(":{port}"))
                .unwrap_or_default();
            let redacted = format!("ballista://…@{host}{port}");
            return Err(invalid(
                &redacted,
                "carries a user name or password, which Ballista does not use",
            ));
        }
        if !matches!(url.path(), "" | "/") || url.query().is_some() || url.fragment().is_some() {
            return Err(invalid(
                text,
                "has a path, query or fragment, which a scheduler address does not take",
            ));
        }
        if url.port() == Some(0) {
            return Err(invalid(text, "has port 0, which no scheduler listens on"));
        }
        Ok(Self::Ballista {
            host: host.to_string(),
            port: url.port().unwrap_or(DEFAULT_SCHEDULER_PORT),
        })
    }
}

impl fmt::Display for Engine {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Local => f.write_str("local"),
            Self::Ballista { host, port } => write!(f, "ballista://{host}:{port}"),
        }
    }
}

/// A table a session reads, with its rows in one or more partitions.
pub struct InputTable {
    pub name: String,
    /// The rows, one batch per partition. All batches share one schema. On a cluster each
    /// becomes a file of its own, which a task of its own reads.
    parts: Vec<RecordBatch>,
}

impl InputTable {
    /// A table of one partition.
    pub fn new(name: impl Into<String>, batch: RecordBatch) -> Self {
        Self::partitioned(name, vec![batch])
    }

    /// A table of one partition per batch; `parts` must not be empty.
    pub fn partitioned(name: impl Into<String>, parts: Vec<RecordBatch>) -> Self {
        assert!(
            !parts.is_empty(),
            "an input table has at least one partition"
        );
        Self {
            name: name.into(),
            parts,
        }
    }

    /// Converts the table into an in-memory table with the same partitions.
    pub fn into_mem_table(self) -> Result<MemTable> {
        let schema = self.parts[0].schema();
        let partitions = self.parts.into_iter().map(|part| vec![part]).collect();
        Ok(MemTable::try_new(schema, partitions)?)
    }

    /// Rows over all partitions.
    pub fn num_rows(&self) -> usize {
        self.parts.iter().map(RecordBatch::num_rows).sum()
    }
}

/// Seconds between the notices that the models still run on a cluster.
const WAIT_NOTICE_SECS: u64 = 30;

/// A session with the input tables registered, and what to clean up after it.
pub struct ModelSession {
    pub ctx: SessionContext,
    engine: Engine,
    staging: Option<Staging>,
}

impl ModelSession {
    /// Opens a session on `engine` with `inputs` registered. For Ballista, `staging_url`
    /// is the folder (a `file://` or object store URL) the inputs are written under.
    pub async fn open(engine: &Engine, staging_url: &Url, inputs: Vec<InputTable>) -> Result<Self> {
        match engine {
            Engine::Local => Self::local(inputs),
            Engine::Ballista { host, port } => {
                let ctx = crate::cluster::client::connect(host, *port).await?;
                let staging = Staging::open(&ctx, staging_url)?;
                staging.remove_stale().await;
                let session = Self {
                    ctx,
                    engine: engine.clone(),
                    staging: Some(staging),
                };
                if let Err(error) = session.stage(inputs).await {
                    session.close().await;
                    return Err(error);
                }
                Ok(session)
            }
        }
    }

    /// Opens a session in this process with `inputs` as in-memory tables.
    pub fn local(inputs: Vec<InputTable>) -> Result<Self> {
        let ctx = super::new_session();
        for input in inputs {
            let name = input.name.clone();
            ctx.register_table(name.as_str(), Arc::new(input.into_mem_table()?))?;
        }
        Ok(Self {
            ctx,
            engine: Engine::Local,
            staging: None,
        })
    }

    /// Awaits `work`, the queries of `stage` (for example "the SQL models") in this
    /// session. On a cluster, a notice is logged every 30 s while it runs, since a cluster
    /// without executors waits silently, and a failed query names the cluster.
    pub async fn watch<T>(&self, stage: &str, work: impl Future<Output = Result<T>>) -> Result<T> {
        if self.engine == Engine::Local {
            return work.await;
        }
        let engine = self.engine.to_string();
        let started = std::time::Instant::now();
        let mut work = std::pin::pin!(work);
        loop {
            let wait = std::time::Duration::from_secs(WAIT_NOTICE_SECS);
            match tokio::time::timeout(wait, &mut work).await {
                Ok(result) => {
                    let staged_locally = self
                        .staging
                        .as_ref()
                        .is_some_and(|staging| staging.url.scheme() == "file");
                    return result
                        .map_err(|error| on_cluster(error, stage, &engine, staged_locally));
                }
                Err(_) => tracing::warn!(
                    %engine,
                    elapsed_secs = started.elapsed().as_secs(),
                    "{stage}: still running on the Ballista cluster; if it has no executors, \
                     start one with `paperclip cluster executor`"
                ),
            }
        }
    }

    async fn stage(&self, inputs: Vec<InputTable>) -> Result<()> {
        let staging = self.staging.as_ref().expect("a Ballista session stages");
        for input in inputs {
            let location = staging.write(&input.name, &input.parts).await?;
            let options = ParquetReadOptions::default();
            self.ctx
                .register_parquet(input.name.as_str(), location.as_str(), options)
                .await?;
        }
        Ok(())
    }

    /// Deletes the staged input files; a failure is logged, since the run's result does
    /// not depend on it.
    pub async fn close(self) {
        if let Some(staging) = self.staging {
            staging.remove().await;
        }
    }
}

/// Names the cluster in a failed query's error, with what to check when the error
/// points at the address or at storage. `staged_locally` is true when the inputs were
/// staged in the data directory rather than on an object store.
fn on_cluster(
    error: PipelineError,
    stage: &str,
    engine: &str,
    staged_locally: bool,
) -> PipelineError {
    let PipelineError::Query(source) = error else {
        return error;
    };
    let text = source.to_string();
    let storage_problem = ["Object Store", "not found", "NotFound", "No such file"]
        .iter()
        .chain(&["Forbidden", "AccessDenied", "credentials"])
        .any(|marker| text.contains(marker));
    let hint = if text.contains("Unimplemented") {
        "; that address answers, but not as a Ballista scheduler: give --engine the \
         --listen address of `paperclip cluster scheduler`"
    } else if storage_problem && staged_locally {
        "; without [storage] the inputs are staged in the data directory, so every executor \
         must see it at the same path (a shared file system); or set [storage] to stage them \
         on an object store"
    } else if storage_problem {
        "; check that the scheduler and every executor have the object store's credentials"
    } else {
        ""
    };
    PipelineError::Invalid(format!("{stage} failed on {engine}: {text}{hint}"))
}

/// The staged copies of one run's input tables.
struct Staging {
    url: Url,
    store: Arc<dyn ObjectStore>,
    root: StorePath,
    /// For a staging folder on this machine, the locked `.lock` file that marks it in
    /// use; [`remove_abandoned`] deletes folders whose lock no process holds.
    lock: Option<std::fs::File>,
}

impl Staging {
    /// Opens the staging location through `ctx`'s store registry, so the session writes
    /// and reads it with one client.
    fn open(ctx: &SessionContext, url: &Url) -> Result<Self> {
        let registry = &ctx.runtime_env().object_store_registry;
        let store = registry.get_store(url).map_err(|error| {
            PipelineError::Invalid(format!(
                "cannot open the staging location {url} for the Ballista executors: {error}"
            ))
        })?;
        let root = StorePath::from_url_path(url.path()).map_err(|error| {
            PipelineError::Invalid(format!("{url} is not a staging location: {error}"))
        })?;
        let lock = match url.to_file_path() {
            Ok(dir) if url.scheme() == "file" => Some(lock_folder(&dir)?),
            _ => None,
        };
        live_staging().push(LiveStaging {
            url: url.clone(),
            store: store.clone(),
            root: root.clone(),
        });
        Ok(Self {
            url: url.clone(),
            store,
            root,
            lock,
        })
    }

    /// Writes each of `parts` as a Parquet file of its own and returns the URL of the
    /// table's folder.
    async fn write(&self, table: &str, parts: &[RecordBatch]) -> Result<String> {
        for (index, batch) in parts.iter().enumerate() {
            let mut bytes = Vec::new();
            let parquet_error = |source| PipelineError::ParquetWrite {
                path: format!("{}/{table}", self.url).into(),
                source,
            };
            let mut writer =
                ArrowWriter::try_new(&mut bytes, batch.schema(), None).map_err(parquet_error)?;
            writer.write(batch).map_err(parquet_error)?;
            writer.close().map_err(parquet_error)?;

            let path = self
                .root
                .clone()
                .join(table)
                .join(format!("part-{index:05}.parquet"));
            self.store
                .put(&path, bytes.into())
                .await
                .map_err(|source| PipelineError::ObjectStore {
                    url: format!("{}/{table}", self.url),
                    source,
                })?;
        }
        Ok(format!(
            "{}/{table}/",
            self.url.as_str().trim_end_matches('/')
        ))
    }

    /// Deletes the staged inputs of other runs on an object store that are older than
    /// [`STALE_STAGING_SECS`]: a run that was killed left them. Folders in a data
    /// directory are locked instead ([`remove_abandoned`]). Failures are logged.
    async fn remove_stale(&self) {
        if self.lock.is_some() {
            return;
        }
        let parts: Vec<_> = self.root.parts().collect();
        let Some((_, parent)) = parts.split_last() else {
            return;
        };
        let parent: StorePath = parent.iter().cloned().collect();
        let cutoff = chrono::Utc::now() - chrono::Duration::seconds(STALE_STAGING_SECS);
        let listed: std::result::Result<Vec<_>, _> =
            self.store.list(Some(&parent)).try_collect().await;
        let objects = match listed {
            Ok(objects) => objects,
            Err(error) => {
                tracing::warn!(staging = %self.url, %error, "cannot list old staged inputs");
                return;
            }
        };
        let stale = objects.into_iter().filter(|object| {
            object.last_modified < cutoff && !object.location.prefix_matches(&self.root)
        });
        for object in stale {
            match self.store.delete(&object.location).await {
                Ok(()) => {
                    tracing::info!(object = %object.location, "deleted a staged input of a killed run")
                }
                Err(error) => {
                    tracing::warn!(object = %object.location, %error, "cannot delete an old staged input")
                }
            }
        }
    }

    async fn remove(self) {
        live_staging().retain(|live| live.url != self.url);
        delete_staged(&self.url, self.store.as_ref(), &self.root).await;
    }
}

/// A staging location in use by a session of this process.
struct LiveStaging {
    url: Url,
    store: Arc<dyn ObjectStore>,
    root: StorePath,
}

/// Returns the staging locations of this process's open sessions, locked.
fn live_staging() -> std::sync::MutexGuard<'static, Vec<LiveStaging>> {
    static LIVE: std::sync::Mutex<Vec<LiveStaging>> = std::sync::Mutex::new(Vec::new());
    LIVE.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Deletes the staged inputs of every session still open in this process. An
/// interrupted run calls it before it exits: the cluster's tasks that have not started
/// then fail to read their inputs, so the job ends instead of running on unattended.
pub async fn remove_live_staging() {
    let live = std::mem::take(&mut *live_staging());
    for staging in live {
        delete_staged(&staging.url, staging.store.as_ref(), &staging.root).await;
    }
}

/// Deletes every object under `root`; failures are logged, since no result depends on it.
async fn delete_staged(url: &Url, store: &dyn ObjectStore, root: &StorePath) {
    let listed: std::result::Result<Vec<_>, _> = store.list(Some(root)).try_collect().await;
    let objects = match listed {
        Ok(objects) => objects,
        Err(error) => {
            tracing::warn!(staging = %url, %error, "cannot list staged inputs to delete them");
            return;
        }
    };
    for object in objects {
        if let Err(error) = store.delete(&object.location).await {
            tracing::warn!(staging = %url, %error, "cannot delete a staged input");
        }
    }
    if url.scheme() == "file"
        && let Ok(dir) = url.to_file_path()
    {
        // The local store deletes files but leaves their folders; the staging folder
        // itself goes too once no other run uses it.
        let _ = std::fs::remove_dir_all(&dir);
        if let Some(parent) = dir.parent() {
            let _ = std::fs::remove_dir(parent);
        }
    }
}

/// Age after which staged inputs on an object store count as left by a killed run: a
/// week, far beyond any stage's run time.
const STALE_STAGING_SECS: i64 = 7 * 24 * 3600;

/// The file whose lock marks a staging folder on this machine in use.
const LOCK_FILE: &str = ".lock";

/// Creates `dir` and locks its `.lock` file for as long as the returned file is open.
fn lock_folder(dir: &std::path::Path) -> Result<std::fs::File> {
    std::fs::create_dir_all(dir).map_err(|e| PipelineError::io(dir, e))?;
    let path = dir.join(LOCK_FILE);
    let lock = std::fs::File::create(&path).map_err(|e| PipelineError::io(&path, e))?;
    lock.lock().map_err(|e| PipelineError::io(&path, e))?;
    Ok(lock)
}

/// Deletes the staging folders under `staging_dir` whose run has ended without deleting
/// them (a killed run): those whose `.lock` no process holds. A folder without a lock
/// file is being created and is kept. Failures are logged, never fatal.
pub fn remove_abandoned(staging_dir: &std::path::Path) {
    let Ok(entries) = std::fs::read_dir(staging_dir) else {
        return;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        let abandoned =
            std::fs::File::open(path.join(LOCK_FILE)).is_ok_and(|lock| lock.try_lock().is_ok());
        if abandoned && let Err(error) = std::fs::remove_dir_all(&path) {
            tracing::warn!(dir = %path.display(), %error, "cannot remove the staged inputs of a killed run");
        }
    }
    // The folder itself goes too once no run uses it.
    let _ = std::fs::remove_dir(staging_dir);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn remove_stale_keeps_recent_and_own_inputs() {
        let dir = tempfile::tempdir().unwrap();
        let store = object_store::local::LocalFileSystem::new_with_prefix(dir.path()).unwrap();
        let staging = Staging {
            url: Url::parse("s3://bucket/prefix/staging/this-run").unwrap(),
            store: Arc::new(store),
            root: StorePath::from("prefix/staging/this-run"),
            lock: None,
        };
        let file = |run: &str, age_secs: u64| {
            let path = dir
                .path()
                .join("prefix/staging")
                .join(run)
                .join("t/part-00000.parquet");
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(&path, b"rows").unwrap();
            let modified = std::time::SystemTime::now() - std::time::Duration::from_secs(age_secs);
            std::fs::File::options()
                .write(true)
                .open(&path)
                .unwrap()
                .set_modified(modified)
                .unwrap();
            path
        };
        let eight_days_secs = 8 * 24 * 3600;
        let killed = file("killed-run", eight_days_secs);
        let running = file("running-run", 60);
        let own = file("this-run", eight_days_secs);

        staging.remove_stale().await;
        assert!(
            !killed.exists(),
            "a week-old input of another run is deleted"
        );
        assert!(running.exists(), "a recent input of another run is kept");
        assert!(own.exists(), "the run's own inputs are kept");
    }

    #[test]
    fn staging_folders_are_removed_only_when_abandoned() {
        let dir = tempfile::tempdir().unwrap();
        let live = dir.path().join("live-run");
        let killed = dir.path().join("killed-run");
        let creating = dir.path().join("new-run");
        let _live_lock = lock_folder(&live).unwrap();
        drop(lock_folder(&killed).unwrap());
        std::fs::create_dir_all(&creating).unwrap();

        remove_abandoned(dir.path());
        assert!(live.is_dir(), "a folder whose run is alive is kept");
        assert!(!killed.exists(), "a folder whose run ended is removed");
        assert!(creating.is_dir(), "a folder without its lock yet is kept");
    }

    #[test]
    fn engines_parse_from_their_command_line_spelling() {
        assert_eq!("local".parse::<Engine>().unwrap(), Engine::Local);
        assert_eq!(
            "ballista://10.0.0.5:50070".parse::<Engine>().unwrap(),
            Engine::Ballista {
                host: "10.0.0.5".into(),
                port: 50070
            }
        );
        let default_port = "ballista://scheduler".parse::<Engine>().unwrap();
        assert_eq!(default_port.to_string(), "ballista://scheduler:50050");
    }

    #[test]
    fn wrong_engines_name_the_value_and_the_fix() {
        for (text, why) in [
            ("spark://host:7077", "is not an engine"),
            ("ballista", "is not an engine"),
            ("ballista://user:secret@host:1", "user name or password"),
            ("ballista://host:1/path", "path, query or fragment"),
            ("ballista://host:1#part", "path, query or fragment"),
            ("ballista://host:0", "port 0"),
            ("ballista://[::1]:50050", "IPv6"),
            ("ballista://:50050", "has no host"),
        ] {
            let error = text.parse::<Engine>().unwrap_err();
            assert!(error.contains(why), "{text}: {error}");
            assert!(error.contains("ballista://HOST:PORT"), "{error}");
            assert!(!error.contains("secret"), "{error}");
        }
    }
}
