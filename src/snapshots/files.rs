//! Builds an archive snapshot from local files: a proposal catalog, recorded MAST responses
//! and image files (FITS exposures and Hubble Advanced Products preview JPEGs).
//!
//! Observation and product rows for image files are derived from what the files state
//! themselves, never invented. FITS rows come from primary and extension header keywords
//! (`PROPOSID`, `ROOTNAME`, `TELESCOP`, `INSTRUME`, `DETECTOR`, `TARGNAME`, `FILTER*`,
//! `OBSTYPE`, `RA_TARG`, `DEC_TARG`, `EXPSTART`, `EXPTIME`). HAP preview rows come from the
//! standard HAP file name `hst_<proposal>_<visit>_<instrument>_<detector>_total_<id>_<drz|drc>.jpg`.
//! A file that states no proposal id is left out and listed in the summary.
//!
//! MAST's numeric `obsid` is not in any file, so derived rows carry a stable number in
//! 9_000_000_000_000..10_000_000_000_000 computed from the mission obs_id, marked in the
//! `obsid_source` column. The obsids in recorded MAST responses are around 2·10⁹.

use std::collections::{BTreeMap, HashSet};
use std::fmt;
use std::io::Read;
use std::path::{Path, PathBuf};

use paperclip_archive::{Row, SnapshotWriter, TableKind};
use serde::Serialize;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use crate::error::{PipelineError, Result};

/// Inputs of [`build`].
#[derive(Debug, Clone)]
pub struct SnapshotSources {
    pub out: PathBuf,
    pub catalog: Option<PathBuf>,
    pub recorded: Vec<PathBuf>,
    pub image_dirs: Vec<PathBuf>,
}

/// Summary of what [`build`] wrote and what it left out.
#[derive(Debug, Clone, Default, Serialize)]
pub struct SnapshotSummary {
    pub dir: PathBuf,
    pub recorded_observation_files: usize,
    pub recorded_product_files: usize,
    pub derived_observations: usize,
    pub derived_products: usize,
    pub files: usize,
    pub ignored: Vec<IgnoredInput>,
}

#[derive(Debug, Clone, Serialize)]
pub struct IgnoredInput {
    pub path: PathBuf,
    pub reason: String,
}

impl fmt::Display for SnapshotSummary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "snapshot written to {}", self.dir.display())?;
        writeln!(
            f,
            "  recorded response files: {} observation, {} product",
            self.recorded_observation_files, self.recorded_product_files
        )?;
        writeln!(
            f,
            "  derived rows: {} observations, {} products; {} files",
            self.derived_observations, self.derived_products, self.files
        )?;
        for ignored in &self.ignored {
            writeln!(
                f,
                "  ignored {}: {}",
                ignored.path.display(),
                ignored.reason
            )?;
        }
        Ok(())
    }
}

/// One image file turned into an observation and a product.
struct DerivedFile {
    observation: Row,
    product: Row,
    data_uri: String,
    bytes: Vec<u8>,
}

/// Writes a snapshot directory from the given sources.
///
/// The snapshot is built in a sibling staging directory and renamed into place only when
/// complete, so a failed build leaves nothing behind.
pub fn build(sources: &SnapshotSources) -> Result<SnapshotSummary> {
    if sources.catalog.is_none() && sources.recorded.is_empty() && sources.image_dirs.is_empty() {
        return Err(PipelineError::Invalid(
            "nothing to put in the snapshot; pass --catalog, --recorded or --images".to_string(),
        ));
    }
    let catalog_bytes = sources.catalog.as_deref().map(read_catalog).transpose()?;
    ensure_empty(&sources.out)?;

    let staging = staging_dir(&sources.out)?;
    let result = build_into(sources, catalog_bytes.as_deref(), &staging);
    let summary = match result {
        Ok(summary) => summary,
        Err(error) => {
            let _ = std::fs::remove_dir_all(&staging);
            return Err(error);
        }
    };
    if sources.out.exists() {
        std::fs::remove_dir(&sources.out).map_err(|e| PipelineError::io(&sources.out, e))?;
    }
    std::fs::rename(&staging, &sources.out).map_err(|e| PipelineError::io(&sources.out, e))?;
    Ok(SnapshotSummary {
        dir: sources.out.clone(),
        ..summary
    })
}

/// Creates a staging directory next to `out`, on the same filesystem so the rename is atomic.
fn staging_dir(out: &Path) -> Result<PathBuf> {
    let parent = match out.parent() {
        Some(parent) if !parent.as_os_str().is_empty() => parent.to_path_buf(),
        _ => PathBuf::from("."),
    };
    std::fs::create_dir_all(&parent).map_err(|e| PipelineError::io(&parent, e))?;
    let dir = tempfile::Builder::new()
        .prefix(".snapshot-partial-")
        .tempdir_in(&parent)
        .map_err(|e| PipelineError::io(&parent, e))?;
    Ok(dir.keep())
}

fn build_into(
    sources: &SnapshotSources,
    catalog_bytes: Option<&[u8]>,
    dir: &Path,
) -> Result<SnapshotSummary> {
    let mut writer = SnapshotWriter::create(dir, "built by paperclip archive snapshot")?;
    let mut summary = SnapshotSummary::default();
    if let Some(bytes) = catalog_bytes {
        writer.set_catalog(bytes)?;
    }
    let mut recorded_uris = HashSet::new();
    for path in &sources.recorded {
        add_recorded(&writer, path, &mut summary, &mut recorded_uris)?;
    }

    let mut observations: BTreeMap<String, Row> = BTreeMap::new();
    let mut products = Vec::new();
    for dir in &sources.image_dirs {
        for path in image_files(dir)? {
            let derived = match derive_file(&path) {
                Ok(derived) => derived,
                Err(reason) => {
                    summary.ignored.push(IgnoredInput { path, reason });
                    continue;
                }
            };
            writer.add_file(&derived.data_uri, &derived.bytes)?;
            summary.files += 1;
            // A recorded product row already describes this file; deriving another row would
            // list it twice under different observations.
            if recorded_uris.contains(&derived.data_uri) {
                continue;
            }
            let obs_id = derived.observation["obs_id"]
                .as_str()
                .unwrap_or_default()
                .to_string();
            observations.entry(obs_id).or_insert(derived.observation);
            products.push(derived.product);
        }
    }

    summary.derived_observations = observations.len();
    summary.derived_products = products.len();
    let recorded = summary.recorded_observation_files + summary.recorded_product_files;
    if catalog_bytes.is_none() && recorded == 0 && summary.files == 0 {
        return Err(PipelineError::Invalid(
            "no catalog, recorded response or image file was found in the inputs; nothing to snapshot".to_string(),
        ));
    }
    if !observations.is_empty() {
        writer.add_observations(observations.into_values().collect())?;
        writer.add_products(products)?;
    }
    writer.finish()?;
    Ok(summary)
}

/// Reads a catalog and checks that it contains at least one readable record.
fn read_catalog(catalog: &Path) -> Result<Vec<u8>> {
    let bytes = std::fs::read(catalog).map_err(|e| PipelineError::io(catalog, e))?;
    if paperclip_catalog::parse_abstracts_cat(&bytes)
        .proposals
        .is_empty()
    {
        return Err(PipelineError::Invalid(format!(
            "{} contains no readable abstracts.cat record; pass a catalog in STScI's abstracts.cat format (a Phase II .pro file can be set as archive.catalog in the pipeline file instead)",
            catalog.display()
        )));
    }
    Ok(bytes)
}

fn ensure_empty(dir: &Path) -> Result<()> {
    if dir.exists() {
        let mut entries = std::fs::read_dir(dir).map_err(|e| PipelineError::io(dir, e))?;
        if entries.next().is_some() {
            return Err(PipelineError::Invalid(format!(
                "snapshot directory {} is not empty; choose a new directory or delete it",
                dir.display()
            )));
        }
    }
    Ok(())
}

fn add_recorded(
    writer: &SnapshotWriter,
    path: &Path,
    summary: &mut SnapshotSummary,
    recorded_uris: &mut HashSet<String>,
) -> Result<()> {
    let bytes = std::fs::read(path).map_err(|e| PipelineError::io(path, e))?;
    let envelope: Value = serde_json::from_slice(&bytes).map_err(|e| {
        PipelineError::Invalid(format!(
            "recorded response {} is not JSON: {e}",
            path.display()
        ))
    })?;
    let columns: Vec<&str> = envelope["fields"]
        .as_array()
        .map(|fields| fields.iter().filter_map(|f| f["name"].as_str()).collect())
        .unwrap_or_default();
    let kind = if columns.contains(&"dataURI") {
        TableKind::Products
    } else if columns.contains(&"obsid") && columns.contains(&"proposal_id") {
        TableKind::Observations
    } else {
        summary.ignored.push(IgnoredInput {
            path: path.to_path_buf(),
            reason: "not a CAOM observation or product response (no obsid/proposal_id or dataURI column)".into(),
        });
        return Ok(());
    };

    let name = format!(
        "recorded-{}",
        path.file_name()
            .and_then(|n| n.to_str())
            .unwrap_or("response.json")
    );
    writer.add_recorded_response(kind, &name, &bytes)?;
    match kind {
        TableKind::Products => {
            summary.recorded_product_files += 1;
            let rows = envelope["data"]
                .as_array()
                .map(Vec::as_slice)
                .unwrap_or_default();
            recorded_uris.extend(
                rows.iter()
                    .filter_map(|row| row["dataURI"].as_str())
                    .map(str::to_string),
            );
        }
        _ => summary.recorded_observation_files += 1,
    }
    Ok(())
}

fn image_files(dir: &Path) -> Result<Vec<PathBuf>> {
    let mut files = Vec::new();
    let mut pending = vec![dir.to_path_buf()];
    while let Some(current) = pending.pop() {
        for entry in std::fs::read_dir(&current).map_err(|e| PipelineError::io(&current, e))? {
            let path = entry.map_err(|e| PipelineError::io(&current, e))?.path();
            if path.is_dir() {
                pending.push(path);
            } else if is_image_name(&path) {
                files.push(path);
            }
        }
    }
    files.sort();
    Ok(files)
}

fn is_image_name(path: &Path) -> bool {
    let name = path
        .file_name()
        .and_then(|n| n.to_str())
        .unwrap_or_default()
        .to_ascii_lowercase();
    [".fits", ".fits.gz", ".fit", ".jpg", ".jpeg", ".png"]
        .iter()
        .any(|ext| name.ends_with(ext))
}

fn derive_file(path: &Path) -> std::result::Result<DerivedFile, String> {
    let name = path
        .file_name()
        .and_then(|n| n.to_str())
        .ok_or("file name is not UTF-8")?
        .to_string();
    let bytes = std::fs::read(path).map_err(|e| e.to_string())?;
    let lower = name.to_ascii_lowercase();
    if lower.ends_with(".jpg") || lower.ends_with(".jpeg") || lower.ends_with(".png") {
        derive_hap_preview(&name, bytes)
    } else {
        derive_fits(&name, bytes)
    }
}

/// Rows for a HAP preview, from its standard file name.
fn derive_hap_preview(name: &str, bytes: Vec<u8>) -> std::result::Result<DerivedFile, String> {
    let stem = name.split('.').next().unwrap_or_default();
    let parts: Vec<&str> = stem.split('_').collect();
    let is_hap =
        parts.len() >= 6 && parts[0] == "hst" && parts[1].chars().all(|c| c.is_ascii_digit());
    if !is_hap {
        return Err("not a HAP preview name (hst_<proposal>_<visit>_<instrument>_<detector>_...); no proposal id".into());
    }
    let proposal_id = parts[1].to_string();
    let instrument = format!(
        "{}/{}",
        parts[3].to_ascii_uppercase(),
        parts[4].to_ascii_uppercase()
    );
    let obs_id = match parts.last() {
        Some(suffix) if ["drz", "drc"].contains(suffix) => parts[..parts.len() - 1].join("_"),
        _ => stem.to_string(),
    };

    let observation = observation_row(
        &obs_id,
        &proposal_id,
        "derived_from_hap_file_name",
        json!({
            "instrument_name": instrument,
            "dataproduct_type": "image",
        }),
    );
    let data_uri = format!("mast:HST/product/{name}");
    let product = product_row(&obs_id, &data_uri, name, "PREVIEW", None, bytes.len());
    Ok(DerivedFile {
        observation,
        product,
        data_uri,
        bytes,
    })
}

/// Rows for a FITS file, from its header keywords.
fn derive_fits(name: &str, bytes: Vec<u8>) -> std::result::Result<DerivedFile, String> {
    let plain = gunzip_if_needed(&bytes)?;
    let headers = paperclip_images::fits::read_headers(&plain)
        .map_err(|e| format!("unreadable FITS header: {e}"))?;
    let find_str = |key: &str| {
        headers
            .iter()
            .find_map(|h| h.get_str(key).map(|s| s.trim().to_string()))
    };
    let find_f64 = |key: &str| headers.iter().find_map(|h| h.get_f64(key));
    let proposal_id = headers
        .iter()
        .find_map(|h| {
            h.get_i64("PROPOSID")
                .map(|v| v.to_string())
                .or_else(|| h.get_str("PROPOSID").map(|s| s.trim().to_string()))
        })
        .filter(|id| !id.is_empty())
        .ok_or("no PROPOSID keyword in any header")?;
    if let Some(telescope) = find_str("TELESCOP")
        && telescope != "HST"
    {
        return Err(format!("TELESCOP = {telescope:?}, not HST"));
    }

    let stem = name.split('.').next().unwrap_or_default();
    let (file_root, suffix) = stem.split_once('_').unwrap_or((stem, ""));
    let obs_id = find_str("ROOTNAME")
        .unwrap_or_else(|| file_root.to_string())
        .to_ascii_lowercase();
    let instrument = match (find_str("INSTRUME"), find_str("DETECTOR")) {
        (Some(instrument), Some(detector)) => Some(format!("{instrument}/{detector}")),
        (instrument, _) => instrument,
    };
    let filters: Vec<String> = ["FILTER", "FILTER1", "FILTER2"]
        .iter()
        .filter_map(|key| find_str(key))
        .filter(|f| !f.is_empty() && !f.starts_with("CLEAR") && f != "N/A")
        .collect();
    let spectroscopic = find_str("OBSTYPE").is_some_and(|t| t.starts_with("SPECTRO"));

    let observation = observation_row(
        &obs_id,
        &proposal_id,
        "derived_from_fits_header",
        json!({
            "instrument_name": instrument,
            "target_name": find_str("TARGNAME"),
            "filters": (!filters.is_empty()).then(|| filters.join(";")),
            "dataproduct_type": if spectroscopic { "spectrum" } else { "image" },
            "s_ra": find_f64("RA_TARG"),
            "s_dec": find_f64("DEC_TARG"),
            "t_min": find_f64("EXPSTART"),
            "t_exptime": find_f64("EXPTIME"),
        }),
    );
    let subgroup = suffix.to_ascii_uppercase();
    let science = [
        "RAW", "FLT", "FLC", "CAL", "CRJ", "DRZ", "DRC", "SFL", "C0M", "C0F",
    ]
    .contains(&subgroup.as_str());
    let product_type = if science { "SCIENCE" } else { "AUXILIARY" };
    let data_uri = format!("mast:HST/product/{name}");
    let product = product_row(
        &obs_id,
        &data_uri,
        name,
        product_type,
        Some(&subgroup),
        bytes.len(),
    );
    Ok(DerivedFile {
        observation,
        product,
        data_uri,
        bytes,
    })
}

fn gunzip_if_needed(bytes: &[u8]) -> std::result::Result<Vec<u8>, String> {
    if !bytes.starts_with(&[0x1f, 0x8b]) {
        return Ok(bytes.to_vec());
    }
    let mut plain = Vec::new();
    flate2::read::GzDecoder::new(bytes)
        .take(2 << 30)
        .read_to_end(&mut plain)
        .map_err(|e| format!("invalid gzip data: {e}"))?;
    Ok(plain)
}

/// Derives a stable obsid in 9e12..1e13 for an obs_id that has no MAST obsid in the files.
pub fn derived_obsid(obs_id: &str) -> u64 {
    let digest = Sha256::digest(obs_id.as_bytes());
    let mut prefix = [0u8; 8];
    prefix.copy_from_slice(&digest[..8]);
    9_000_000_000_000 + u64::from_be_bytes(prefix) % 1_000_000_000_000
}

fn observation_row(obs_id: &str, proposal_id: &str, source: &str, extra: Value) -> Row {
    let mut row = Row::new();
    row.insert("obsid".into(), json!(derived_obsid(obs_id)));
    row.insert("obsid_source".into(), json!(source));
    row.insert("obs_id".into(), json!(obs_id));
    row.insert("proposal_id".into(), json!(proposal_id));
    row.insert("obs_collection".into(), json!("HST"));
    row.insert("dataRights".into(), json!("PUBLIC"));
    if let Value::Object(map) = extra {
        row.extend(map);
    }
    row
}

fn product_row(
    obs_id: &str,
    data_uri: &str,
    file_name: &str,
    product_type: &str,
    subgroup: Option<&str>,
    size_bytes: usize,
) -> Row {
    let obsid = derived_obsid(obs_id);
    let mut row = Row::new();
    row.insert("obsID".into(), json!(obsid));
    row.insert("parent_obsid".into(), json!(obsid));
    row.insert("obs_id".into(), json!(obs_id));
    row.insert("obs_collection".into(), json!("HST"));
    row.insert("dataURI".into(), json!(data_uri));
    row.insert("productType".into(), json!(product_type));
    row.insert("productSubGroupDescription".into(), json!(subgroup));
    row.insert("productFilename".into(), json!(file_name));
    row.insert("size".into(), json!(size_bytes));
    row
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn derived_obsids_are_stable_and_in_range() {
        let a = derived_obsid("jbz504eoq");
        assert_eq!(a, derived_obsid("jbz504eoq"));
        assert!((9_000_000_000_000..10_000_000_000_000).contains(&a));
        assert_ne!(a, derived_obsid("j6gp01mkq"));
    }

    #[test]
    fn hap_names_give_proposal_and_instrument() {
        let derived =
            derive_hap_preview("hst_15354_01_acs_wfc_total_jdi601_drc.jpg", vec![1, 2]).unwrap();
        assert_eq!(derived.observation["proposal_id"], "15354");
        assert_eq!(derived.observation["instrument_name"], "ACS/WFC");
        assert_eq!(
            derived.observation["obs_id"],
            "hst_15354_01_acs_wfc_total_jdi601"
        );
        assert_eq!(derived.product["productType"], "PREVIEW");
        assert!(derive_hap_preview("hubble_deep_field.jpg", vec![]).is_err());
    }
}
