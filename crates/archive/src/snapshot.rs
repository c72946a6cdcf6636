//! Archive snapshots: a directory that contains a frozen part of MAST, served by
//! [`crate::server`] through the same API shapes as the real archive.
//!
//! Layout of a snapshot directory `DIR`:
//!
//! ```text
//! DIR/snapshot.json               {"format": "paperclip-archive-snapshot", "format_version": 1, "description": "..."}
//! DIR/catalog/abstracts.cat       served at GET /catalog/abstracts.cat; any file directly
//!                                 under catalog/ is served at GET /catalog/<name>
//! DIR/caom/observations/*.json    Mast.Caom.Filtered response envelopes (fields + data)
//! DIR/caom/products/*.json        Mast.Caom.Products response envelopes
//! DIR/files/<path>                bytes of data URI mast:<path>, e.g.
//!                                 files/HST/product/jbz504eoq_raw.fits for mast:HST/product/jbz504eoq_raw.fits
//! ```
//!
//! Envelope files may be recorded MAST responses dropped in unchanged. The
//! rows of all files of one table are merged in file-name order. The merged
//! `fields` list is the union of the files' `fields` in that order (the first
//! type given for a column wins) plus any column that only appears in rows.
//! Rows missing a merged column get `null` for it, because MAST rows always
//! carry every column.
//!
//! [`Snapshot::open`] rejects a directory whose `snapshot.json` has another
//! format or version. It also rejects any envelope that is not valid JSON,
//! has an `ERROR` or `EXECUTING` status, or repeats a column name, and the
//! error names the file. Data files are not indexed: they are resolved per request, and
//! only regular files whose canonical path lies inside `files/` are served.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::envelope::{
    Envelope, Field, Row, STATUS_ERROR, STATUS_EXECUTING, cell_text, first_duplicate_field,
};
use crate::error::ArchiveError;
use crate::ids::DataUri;

/// Value of `format` in `snapshot.json`.
pub const SNAPSHOT_FORMAT: &str = "paperclip-archive-snapshot";
/// The `format_version` this build reads and writes.
pub const SNAPSHOT_FORMAT_VERSION: u32 = 1;
/// Name of the proposal catalog file under `catalog/`.
pub const CATALOG_ABSTRACTS: &str = "abstracts.cat";

/// Contents of `snapshot.json`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SnapshotManifest {
    pub format: String,
    pub format_version: u32,
    #[serde(default)]
    pub description: String,
}

/// The two row tables of a snapshot.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TableKind {
    Observations,
    Products,
}

impl TableKind {
    /// Returns the directory of the table, relative to the snapshot root.
    pub fn dir_name(self) -> &'static str {
        match self {
            Self::Observations => "caom/observations",
            Self::Products => "caom/products",
        }
    }
}

/// A merged table: column descriptions and rows.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Table {
    pub fields: Vec<Field>,
    pub rows: Vec<Row>,
}

/// Result of looking up a data URI or catalog name in a snapshot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FileLookup {
    /// A regular file inside the snapshot, by canonical path.
    Found(PathBuf),
    /// No regular file under that name.
    NotFound,
    /// The name resolves outside its directory (through a symlink).
    OutsideSnapshot,
}

/// An opened, validated snapshot directory.
#[derive(Debug, Clone)]
pub struct Snapshot {
    root: PathBuf,
    manifest: SnapshotManifest,
    observations: Table,
    products: Table,
    products_by_obsid: HashMap<String, Vec<usize>>,
}

impl Snapshot {
    /// Opens and validates the snapshot in `dir` and indexes its tables.
    pub fn open(dir: &Path) -> Result<Self, ArchiveError> {
        let manifest = read_manifest(dir)?;
        let observations = read_table(dir, TableKind::Observations)?;
        let products = read_table(dir, TableKind::Products)?;
        let products_by_obsid = index_products(&products);
        Ok(Self {
            root: dir.to_path_buf(),
            manifest,
            observations,
            products,
            products_by_obsid,
        })
    }

    /// Returns the snapshot directory.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Returns the parsed `snapshot.json`.
    pub fn manifest(&self) -> &SnapshotManifest {
        &self.manifest
    }

    /// Returns the merged observation table.
    pub fn observations(&self) -> &Table {
        &self.observations
    }

    /// Returns the merged product table.
    pub fn products(&self) -> &Table {
        &self.products
    }

    /// Returns the product rows whose `obsID` or `parent_obsid` is one of
    /// `obsids` (decimal text), in table order.
    pub fn products_for(&self, obsids: &HashSet<String>) -> Vec<&Row> {
        let mut indexes: Vec<usize> = obsids
            .iter()
            .filter_map(|obsid| self.products_by_obsid.get(obsid))
            .flatten()
            .copied()
            .collect();
        indexes.sort_unstable();
        indexes.dedup();
        indexes
            .into_iter()
            .map(|index| &self.products.rows[index])
            .collect()
    }

    /// Resolves the file of `uri` under `files/`.
    pub fn data_file(&self, uri: &DataUri) -> Result<FileLookup, ArchiveError> {
        resolve_inside(&self.root.join("files"), uri.relative_path())
    }

    /// Resolves a catalog file by name; `name` must be one plain path
    /// segment (no separators, no leading dot).
    pub fn catalog_file(&self, name: &str) -> Result<FileLookup, ArchiveError> {
        let plain = !name.is_empty() && !name.starts_with('.') && !name.contains(['/', '\\', ':']);
        if !plain {
            return Ok(FileLookup::NotFound);
        }
        resolve_inside(&self.root.join("catalog"), name)
    }
}

fn read_manifest(dir: &Path) -> Result<SnapshotManifest, ArchiveError> {
    let path = dir.join("snapshot.json");
    let bytes = std::fs::read(&path).map_err(|err| ArchiveError::InvalidSnapshot {
        path: path.clone(),
        reason: format!(
            "cannot read snapshot.json ({err}); create the snapshot with `paperclip archive snapshot` or `paperclip archive fixtures`"
        ),
    })?;
    let manifest: SnapshotManifest =
        serde_json::from_slice(&bytes).map_err(|err| ArchiveError::InvalidSnapshot {
            path: path.clone(),
            reason: format!("invalid JSON: {err}"),
        })?;
    if manifest.format != SNAPSHOT_FORMAT || manifest.format_version != SNAPSHOT_FORMAT_VERSION {
        return Err(ArchiveError::InvalidSnapshot {
            path,
            reason: format!(
                "format {:?} version {} is not supported; this build reads {SNAPSHOT_FORMAT:?} version {SNAPSHOT_FORMAT_VERSION}",
                manifest.format, manifest.format_version
            ),
        });
    }
    Ok(manifest)
}

/// Returns the `*.json` files of a table directory in file-name order; a
/// missing directory is an empty table.
fn table_files(dir: &Path) -> Result<Vec<PathBuf>, ArchiveError> {
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(err) => return Err(ArchiveError::io("list", dir, err)),
    };
    let mut files = Vec::new();
    for entry in entries {
        let path = entry
            .map_err(|err| ArchiveError::io("list", dir, err))?
            .path();
        if path.extension().is_some_and(|ext| ext == "json") {
            files.push(path);
        }
    }
    files.sort();
    Ok(files)
}

fn read_table(dir: &Path, kind: TableKind) -> Result<Table, ArchiveError> {
    let mut table = Table::default();
    for path in table_files(&dir.join(kind.dir_name()))? {
        let envelope = read_envelope_file(&path)?;
        merge_fields(&mut table.fields, envelope.fields);
        table.rows.extend(envelope.data);
    }
    let row_fields = infer_fields(&table.rows);
    merge_fields(&mut table.fields, row_fields);
    fill_missing_columns(&mut table);
    Ok(table)
}

/// Reads and validates one envelope file.
pub fn read_envelope_file(path: &Path) -> Result<Envelope, ArchiveError> {
    let bytes = std::fs::read(path).map_err(|err| ArchiveError::io("read", path, err))?;
    parse_envelope_bytes(&bytes).map_err(|reason| ArchiveError::InvalidSnapshot {
        path: path.to_path_buf(),
        reason,
    })
}

fn parse_envelope_bytes(bytes: &[u8]) -> Result<Envelope, String> {
    let envelope = Envelope::from_slice(bytes)?;
    if envelope.status == STATUS_ERROR || envelope.status == STATUS_EXECUTING {
        return Err(format!(
            "status is {}, but a snapshot needs finished (COMPLETE) responses",
            envelope.status
        ));
    }
    if let Some(duplicate) = first_duplicate_field(&envelope.fields) {
        return Err(format!(
            "column {duplicate:?} appears more than once in fields"
        ));
    }
    Ok(envelope)
}

fn merge_fields(target: &mut Vec<Field>, extra: Vec<Field>) {
    for field in extra {
        if !target.iter().any(|existing| existing.name == field.name) {
            target.push(field);
        }
    }
}

/// Infers a MAST column type for each column that appears in `rows`, in
/// order of first appearance (within a row, in the row map's key order).
pub fn infer_fields(rows: &[Row]) -> Vec<Field> {
    let mut fields: Vec<Field> = Vec::new();
    for row in rows {
        for (name, value) in row {
            let inferred = match value {
                Value::String(_) => "string",
                Value::Bool(_) => "boolean",
                Value::Number(number) if number.is_f64() => "float",
                Value::Number(_) => "int",
                _ => continue,
            };
            if !fields.iter().any(|field| field.name == *name) {
                fields.push(Field {
                    name: name.clone(),
                    field_type: inferred.to_owned(),
                });
            }
        }
    }
    // Columns that are null in every row still need a description.
    for row in rows {
        for name in row.keys() {
            if !fields.iter().any(|field| field.name == *name) {
                fields.push(Field {
                    name: name.clone(),
                    field_type: "string".to_owned(),
                });
            }
        }
    }
    fields
}

fn fill_missing_columns(table: &mut Table) {
    for row in &mut table.rows {
        for field in &table.fields {
            row.entry(field.name.clone()).or_insert(Value::Null);
        }
    }
}

fn index_products(products: &Table) -> HashMap<String, Vec<usize>> {
    let mut index: HashMap<String, Vec<usize>> = HashMap::new();
    for (row_index, row) in products.rows.iter().enumerate() {
        let keys: HashSet<String> = ["obsID", "parent_obsid"]
            .iter()
            .filter_map(|column| row.get(*column).and_then(cell_text))
            .collect();
        for key in keys {
            index.entry(key).or_default().push(row_index);
        }
    }
    index
}

/// Resolves `relative` under `base`, following symlinks, and reports a path
/// that leaves `base` as [`FileLookup::OutsideSnapshot`]. The caller has
/// already rejected `..`, absolute paths and backslashes.
fn resolve_inside(base: &Path, relative: &str) -> Result<FileLookup, ArchiveError> {
    let base_canonical = match std::fs::canonicalize(base) {
        Ok(path) => path,
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => return Ok(FileLookup::NotFound),
        Err(err) => return Err(ArchiveError::io("resolve", base, err)),
    };
    let candidate = base_canonical.join(relative);
    let resolved = match std::fs::canonicalize(&candidate) {
        Ok(path) => path,
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => return Ok(FileLookup::NotFound),
        Err(err) => return Err(ArchiveError::io("resolve", candidate, err)),
    };
    if !resolved.starts_with(&base_canonical) {
        return Ok(FileLookup::OutsideSnapshot);
    }
    if !resolved.is_file() {
        return Ok(FileLookup::NotFound);
    }
    Ok(FileLookup::Found(resolved))
}

/// Builds a snapshot directory.
#[derive(Debug)]
pub struct SnapshotWriter {
    root: PathBuf,
}

impl SnapshotWriter {
    /// Creates `dir` (and parents) and writes `snapshot.json`. Existing
    /// table, file and catalog contents are kept.
    pub fn create(dir: &Path, description: &str) -> Result<Self, ArchiveError> {
        for sub_dir in [
            TableKind::Observations.dir_name(),
            TableKind::Products.dir_name(),
            "files",
            "catalog",
        ] {
            let path = dir.join(sub_dir);
            std::fs::create_dir_all(&path)
                .map_err(|err| ArchiveError::io("create directory", path, err))?;
        }
        let manifest = SnapshotManifest {
            format: SNAPSHOT_FORMAT.to_owned(),
            format_version: SNAPSHOT_FORMAT_VERSION,
            description: description.to_owned(),
        };
        let json = serde_json::to_vec_pretty(&manifest).expect("the manifest always serializes");
        write_file(&dir.join("snapshot.json"), &json)?;
        Ok(Self {
            root: dir.to_path_buf(),
        })
    }

    /// Returns the snapshot directory.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Writes `rows` as a new observations envelope file with inferred
    /// `fields`, returning its path.
    pub fn add_observations(&mut self, rows: Vec<Row>) -> Result<PathBuf, ArchiveError> {
        self.add_rows(TableKind::Observations, rows)
    }

    /// Writes `rows` as a new products envelope file with inferred `fields`,
    /// returning its path.
    pub fn add_products(&mut self, rows: Vec<Row>) -> Result<PathBuf, ArchiveError> {
        self.add_rows(TableKind::Products, rows)
    }

    fn add_rows(&mut self, kind: TableKind, rows: Vec<Row>) -> Result<PathBuf, ArchiveError> {
        let fields = infer_fields(&rows);
        let envelope = Envelope::complete(fields, rows);
        let path = self.next_table_file(kind)?;
        let json = serde_json::to_vec(&envelope).expect("an envelope always serializes");
        write_file(&path, &json)?;
        Ok(path)
    }

    /// Returns the first free `rows-NNNNNN.json` in the table directory.
    fn next_table_file(&self, kind: TableKind) -> Result<PathBuf, ArchiveError> {
        let dir = self.root.join(kind.dir_name());
        let taken = table_files(&dir)?.len();
        (taken..)
            .map(|number| dir.join(format!("rows-{number:06}.json")))
            .find(|path| !path.exists())
            .ok_or_else(|| ArchiveError::InvalidSnapshot {
                path: dir.clone(),
                reason: "no free file name for new rows".to_owned(),
            })
    }

    /// Copies a recorded MAST envelope into the table directory as `name`
    /// (one plain file name ending in `.json`), after validating it.
    pub fn add_recorded_response(
        &self,
        kind: TableKind,
        name: &str,
        bytes: &[u8],
    ) -> Result<PathBuf, ArchiveError> {
        let dir = self.root.join(kind.dir_name());
        let plain =
            name.ends_with(".json") && !name.starts_with('.') && !name.contains(['/', '\\', ':']);
        if !plain {
            return Err(ArchiveError::InvalidSnapshot {
                path: dir,
                reason: format!(
                    "recorded response name {name:?} must be a plain file name ending in .json"
                ),
            });
        }
        let path = dir.join(name);
        parse_envelope_bytes(bytes).map_err(|reason| ArchiveError::InvalidSnapshot {
            path: path.clone(),
            reason,
        })?;
        write_file(&path, bytes)?;
        Ok(path)
    }

    /// Stores `bytes` as the file of `data_uri` under `files/`, rejecting
    /// unsafe URIs.
    pub fn add_file(&self, data_uri: &str, bytes: &[u8]) -> Result<PathBuf, ArchiveError> {
        let uri = DataUri::parse(data_uri)?;
        let path = self.root.join("files").join(uri.relative_path());
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent)
                .map_err(|err| ArchiveError::io("create directory", parent, err))?;
        }
        write_file(&path, bytes)?;
        Ok(path)
    }

    /// Stores the proposal catalog as `catalog/abstracts.cat`.
    pub fn set_catalog(&self, bytes: &[u8]) -> Result<PathBuf, ArchiveError> {
        let path = self.root.join("catalog").join(CATALOG_ABSTRACTS);
        write_file(&path, bytes)?;
        Ok(path)
    }

    /// Validates the directory by opening it.
    pub fn finish(self) -> Result<Snapshot, ArchiveError> {
        Snapshot::open(&self.root)
    }
}

fn write_file(path: &Path, bytes: &[u8]) -> Result<(), ArchiveError> {
    std::fs::write(path, bytes).map_err(|err| ArchiveError::io("write", path, err))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn rows(value: Value) -> Vec<Row> {
        serde_json::from_value(value).unwrap()
    }

    #[test]
    fn writer_round_trips_tables() {
        let dir = tempfile::tempdir().unwrap();
        let mut writer = SnapshotWriter::create(dir.path(), "test").unwrap();
        writer
            .add_observations(rows(json!([{"obsid": 1, "obs_id": "a", "s_ra": null}])))
            .unwrap();
        writer
            .add_observations(rows(
                json!([{"obsid": 2, "obs_id": "b", "proposal_id": "13012"}]),
            ))
            .unwrap();
        writer
            .add_products(rows(
                json!([{"obsID": "2", "dataURI": "mast:HST/product/b.fits"}]),
            ))
            .unwrap();
        let snapshot = writer.finish().unwrap();

        assert_eq!(snapshot.observations().rows.len(), 2);
        assert_eq!(snapshot.observations().rows[0]["proposal_id"], Value::Null);
        let names: Vec<&str> = snapshot
            .observations()
            .fields
            .iter()
            .map(|f| f.name.as_str())
            .collect();
        for expected in ["obsid", "obs_id", "s_ra", "proposal_id"] {
            assert!(names.contains(&expected), "{names:?}");
        }
        assert_eq!(names.len(), 4);
        assert_eq!(
            snapshot
                .products_for(&HashSet::from(["2".to_owned()]))
                .len(),
            1
        );
    }

    #[test]
    fn open_names_invalid_file() {
        let dir = tempfile::tempdir().unwrap();
        SnapshotWriter::create(dir.path(), "test").unwrap();
        let bad = dir.path().join("caom/products/broken.json");
        std::fs::write(&bad, b"{not json").unwrap();
        let message = Snapshot::open(dir.path()).unwrap_err().to_string();
        assert!(message.contains("broken.json"), "{message}");
    }

    #[test]
    fn open_rejects_other_format_version() {
        let dir = tempfile::tempdir().unwrap();
        SnapshotWriter::create(dir.path(), "test").unwrap();
        std::fs::write(
            dir.path().join("snapshot.json"),
            br#"{"format": "paperclip-archive-snapshot", "format_version": 2}"#,
        )
        .unwrap();
        let message = Snapshot::open(dir.path()).unwrap_err().to_string();
        assert!(message.contains("version 2"), "{message}");
    }

    #[test]
    fn writer_rejects_unsafe_uri_and_names() {
        let dir = tempfile::tempdir().unwrap();
        let writer = SnapshotWriter::create(dir.path(), "test").unwrap();
        assert!(writer.add_file("mast:../escape.fits", b"x").is_err());
        assert!(writer.add_file("file:/etc/passwd", b"x").is_err());
        assert!(
            writer
                .add_recorded_response(TableKind::Products, "../x.json", b"{}")
                .is_err()
        );
        assert!(!dir.path().join("escape.fits").exists());
    }
}
