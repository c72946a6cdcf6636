//! The built-in fixture archive: synthetic proposals, observations, products and sky images
//! that exercise every path of the main job without network access.
//!
//! Everything here is synthetic and labelled as such: proposal ids are 90001-90007 and every
//! abstract states that it is a fixture. The cases: previews that pass the selection rules and colour or
//! auxiliary products that do not; a data URI listed under two observations; a proposal
//! with FITS images only (used when `fits_fallback` is on); a truncated and a blank preview;
//! a product whose `parent_obsid` is 0; a proposal without observations; a catalog record
//! without a cycle; a cycle outside the default range; a Latin-1 byte in a PI name.

use paperclip_images::Samples;
use std::path::Path;

use paperclip_archive::{Row, SnapshotWriter};
use paperclip_images::fits::FitsValue;
use paperclip_images::synth::{sky_fits, sky_jpeg};
use serde::Serialize;
use serde_json::json;

use crate::error::{PipelineError, Result};

/// What the fixture builder wrote.
#[derive(Debug, Clone, Serialize)]
pub struct FixtureSummary {
    pub dir: std::path::PathBuf,
    pub proposals: usize,
    pub observations: usize,
    pub products: usize,
}

impl std::fmt::Display for FixtureSummary {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "fixture snapshot written to {}: {} catalog records, {} observations, {} products",
            self.dir.display(),
            self.proposals,
            self.observations,
            self.products
        )
    }
}

struct FixtureRecord {
    id: &'static str,
    proposal_type: &'static str,
    category: &'static str,
    cycle: Option<&'static str>,
    title: &'static str,
    pi: &'static [u8],
    abstract_text: &'static str,
}

const RECORDS: &[FixtureRecord] = &[
    FixtureRecord {
        id: "90001",
        proposal_type: "GO",
        category: "GALAXIES",
        cycle: Some("21"),
        title: "Synthetic fixture: deep imaging of a nearby spiral galaxy group",
        pi: b"Ada Example",
        abstract_text: "This is a synthetic fixture abstract, not a real proposal. We request deep \
            imaging of a nearby group of spiral galaxies {three members} to map star formation \
            in their outer disks and to find tidal streams from past interactions.",
    },
    FixtureRecord {
        id: "90002",
        proposal_type: "GO",
        category: "STAR FORMATION",
        cycle: Some("24"),
        title: "Synthetic fixture: protostellar jets in a dark cloud \u{2013} a test title",
        pi: b"J\xfcrgen M\xfcller",
        abstract_text: "This is a synthetic fixture abstract, not a real proposal. Narrow-band \
            images of a dark cloud will resolve the knots of protostellar jets and measure their \
            proper motions against earlier epochs.",
    },
    FixtureRecord {
        id: "90003",
        proposal_type: "CAL/ACS",
        category: "",
        cycle: Some("25"),
        title: "Synthetic fixture: detector dark calibration",
        pi: b"Calibration Team",
        abstract_text: "This is a synthetic fixture abstract, not a real proposal. Dark frames \
            monitor hot pixels and the dark current of the detector over the cycle.",
    },
    FixtureRecord {
        id: "90004",
        proposal_type: "GO",
        category: "STELLAR POPULATIONS",
        cycle: Some("26"),
        title: "Synthetic fixture: a globular cluster core",
        pi: b"Grace Sample",
        abstract_text: "This is a synthetic fixture abstract, not a real proposal. Imaging of a \
            globular cluster core will separate blue stragglers from the main sequence turn-off.",
    },
    FixtureRecord {
        id: "90005",
        proposal_type: "GO",
        category: "SOLAR SYSTEM",
        cycle: Some("27"),
        title: "Synthetic fixture: a proposal that was never observed",
        pi: b"Nobody Observed",
        abstract_text: "This is a synthetic fixture abstract, not a real proposal. No observation \
            of this program exists in the fixture archive.",
    },
    FixtureRecord {
        id: "90006",
        proposal_type: "GO",
        category: "COSMOLOGY",
        cycle: None,
        title: "Synthetic fixture: a record without a cycle",
        pi: b"Missing Cycle",
        abstract_text: "This is a synthetic fixture abstract, not a real proposal. The catalog \
            record has no Cycle line and must be skipped with a reason.",
    },
    FixtureRecord {
        id: "90007",
        proposal_type: "GO",
        category: "AGN",
        cycle: Some("40"),
        title: "Synthetic fixture: a cycle beyond the selected range",
        pi: b"Future Cycle",
        abstract_text: "This is a synthetic fixture abstract, not a real proposal. Its cycle lies \
            outside the default selection range.",
    },
];

/// Renders the fixture records in STScI's abstracts.cat layout (bytes, since one PI is Latin-1).
fn catalog_bytes() -> Vec<u8> {
    let rule = "-".repeat(80);
    let mut out = Vec::new();
    for record in RECORDS {
        out.extend_from_slice(format!("{rule}\n").as_bytes());
        out.extend_from_slice(format!("Prop. Type: {}\n", record.proposal_type).as_bytes());
        out.extend_from_slice(format!("Category: {}\n", record.category).as_bytes());
        out.extend_from_slice(format!("ID: {}\n", record.id).as_bytes());
        if let Some(cycle) = record.cycle {
            out.extend_from_slice(format!("Cycle: {cycle}\n").as_bytes());
        }
        out.extend_from_slice(format!("Title: {}\n", record.title).as_bytes());
        out.extend_from_slice(b"PI: ");
        out.extend_from_slice(record.pi);
        out.extend_from_slice(b"\n\n");
        let words: Vec<&str> = record.abstract_text.split_whitespace().collect();
        for line in wrap_words(&words, 80) {
            out.extend_from_slice(format!("{line}\n").as_bytes());
        }
    }
    out.extend_from_slice(format!("{rule}\n").as_bytes());
    out
}

pub(super) fn wrap_words(words: &[&str], width: usize) -> Vec<String> {
    let mut lines = Vec::new();
    let mut line = String::new();
    for word in words {
        if !line.is_empty() && line.len() + 1 + word.len() > width {
            lines.push(std::mem::take(&mut line));
        }
        if !line.is_empty() {
            line.push(' ');
        }
        line.push_str(word);
    }
    if !line.is_empty() {
        lines.push(line);
    }
    lines
}

struct FixtureObservation {
    obsid: u64,
    obs_id: &'static str,
    proposal_id: &'static str,
    instrument: &'static str,
    target: &'static str,
}

const OBSERVATIONS: &[FixtureObservation] = &[
    FixtureObservation {
        obsid: 8_000_000_101,
        obs_id: "fx9a01010",
        proposal_id: "90001",
        instrument: "ACS/WFC",
        target: "SYNTH-GROUP-1",
    },
    FixtureObservation {
        obsid: 8_000_000_102,
        obs_id: "fx9a01020",
        proposal_id: "90001",
        instrument: "ACS/WFC",
        target: "SYNTH-GROUP-1",
    },
    FixtureObservation {
        obsid: 8_000_000_103,
        obs_id: "fx9a02010",
        proposal_id: "90001",
        instrument: "WFC3/UVIS",
        target: "SYNTH-GROUP-2",
    },
    FixtureObservation {
        obsid: 8_000_000_201,
        obs_id: "fx9b01010",
        proposal_id: "90002",
        instrument: "WFC3/IR",
        target: "SYNTH-CLOUD",
    },
    FixtureObservation {
        obsid: 8_000_000_202,
        obs_id: "fx9b01020",
        proposal_id: "90002",
        instrument: "WFC3/IR",
        target: "SYNTH-CLOUD",
    },
    FixtureObservation {
        obsid: 8_000_000_301,
        obs_id: "fx9c01010",
        proposal_id: "90003",
        instrument: "ACS/WFC",
        target: "DARK",
    },
    FixtureObservation {
        obsid: 8_000_000_401,
        obs_id: "fx9d01010",
        proposal_id: "90004",
        instrument: "ACS/WFC",
        target: "SYNTH-GC",
    },
    FixtureObservation {
        obsid: 8_000_000_402,
        obs_id: "fx9d01020",
        proposal_id: "90004",
        instrument: "ACS/WFC",
        target: "SYNTH-GC",
    },
];

/// Writes the fixture snapshot into `dir`, which must be empty or absent.
pub fn build(dir: &Path) -> Result<FixtureSummary> {
    require_empty(dir)?;
    let mut writer = SnapshotWriter::create(dir, "paperclip built-in fixture archive (synthetic)")?;
    writer.set_catalog(&catalog_bytes())?;

    let observations: Vec<Row> = OBSERVATIONS.iter().map(observation_row).collect();
    let products = write_products(&writer)?;
    let summary = FixtureSummary {
        dir: dir.to_path_buf(),
        proposals: RECORDS.len(),
        observations: observations.len(),
        products: products.len(),
    };
    writer.add_observations(observations)?;
    writer.add_products(products)?;
    writer.finish()?;
    Ok(summary)
}

/// Fails unless `dir` is absent or empty, so a snapshot never mixes with other files.
pub(super) fn require_empty(dir: &Path) -> Result<()> {
    let has_entries = dir.exists()
        && std::fs::read_dir(dir)
            .map_err(|e| PipelineError::io(dir, e))?
            .next()
            .is_some();
    if has_entries {
        return Err(PipelineError::Invalid(format!(
            "snapshot directory {} is not empty; choose a new directory or delete it",
            dir.display()
        )));
    }
    Ok(())
}

/// Release date of every fixture observation, MJD (2020-01-01).
pub const FIXTURE_RELEASE_MJD: f64 = 58849.0;

fn observation_row(observation: &FixtureObservation) -> Row {
    let value = json!({
        "obsid": observation.obsid,
        "obs_id": observation.obs_id,
        "proposal_id": observation.proposal_id,
        "obs_collection": "HST",
        "instrument_name": observation.instrument,
        "target_name": observation.target,
        "filters": "F606W",
        "dataproduct_type": "image",
        "dataRights": "PUBLIC",
        "calib_level": 3,
        "s_ra": null,
        "s_dec": null,
        "obs_title": "synthetic fixture",
        "t_obs_release": FIXTURE_RELEASE_MJD,
    });
    value.as_object().expect("object literal").clone()
}

/// Writes every fixture file and returns the product rows.
fn write_products(writer: &SnapshotWriter) -> Result<Vec<Row>> {
    let mut rows = Vec::new();
    let mut add = |parent: u64,
                   obs_id: &str,
                   name: &str,
                   product_type: &str,
                   subgroup: &str,
                   bytes: Vec<u8>|
     -> Result<()> {
        let uri = format!("mast:HST/product/{name}");
        writer.add_file(&uri, &bytes)?;
        rows.push(product_row(
            parent,
            obs_id,
            &uri,
            name,
            product_type,
            subgroup,
            bytes.len(),
        ));
        Ok(())
    };

    // 90001: three total previews (grey, colour, small), plus products the rules reject.
    add(
        8_000_000_101,
        "fx9a01010",
        "hst_90001_01_acs_wfc_total_fx9a01_drc.jpg",
        "PREVIEW",
        "TOTAL",
        sky_jpeg(1, 900, 700, false, 90),
    )?;
    add(
        8_000_000_101,
        "fx9a01010",
        "hst_90001_01_acs_wfc_color_fx9a01_drc.jpg",
        "PREVIEW",
        "COLOR",
        sky_jpeg(2, 600, 600, true, 90),
    )?;
    add(
        8_000_000_101,
        "fx9a01010",
        "fx9a01010_drc.fits",
        "SCIENCE",
        "DRC",
        sky_fits(3, 64, 64, &fits_cards("90001", "fx9a01010")),
    )?;
    add(
        8_000_000_102,
        "fx9a01020",
        "hst_90001_02_acs_wfc_total_fx9a02_drc.jpg",
        "PREVIEW",
        "TOTAL",
        sky_jpeg(4, 640, 1000, true, 90),
    )?;
    add(
        8_000_000_103,
        "fx9a02010",
        "hst_90001_03_wfc3_uvis_total_fx9a03_drc.jpg",
        "PREVIEW",
        "TOTAL",
        sky_jpeg(5, 200, 150, false, 90),
    )?;
    add(
        8_000_000_103,
        "fx9a02010",
        "fx9a02010_spt.fits",
        "AUXILIARY",
        "SPT",
        sky_fits(6, 8, 8, &fits_cards("90001", "fx9a02010")),
    )?;

    // 90002: one preview listed under both observations (stored and sampled once).
    let shared = sky_jpeg(7, 700, 500, false, 90);
    add(
        8_000_000_201,
        "fx9b01010",
        "hst_90002_01_wfc3_ir_total_fx9b01_drz.jpg",
        "PREVIEW",
        "TOTAL",
        shared.clone(),
    )?;
    add(
        8_000_000_202,
        "fx9b01020",
        "hst_90002_01_wfc3_ir_total_fx9b01_drz.jpg",
        "PREVIEW",
        "TOTAL",
        shared,
    )?;
    add(
        8_000_000_202,
        "fx9b01020",
        "hst_90002_02_wfc3_ir_total_fx9b02_drz.jpg",
        "PREVIEW",
        "TOTAL",
        sky_jpeg(8, 512, 512, false, 90),
    )?;

    // 90003: FITS only, so it contributes only when fits_fallback is on.
    add(
        8_000_000_301,
        "fx9c01010",
        "fx9c01010_raw.fits",
        "SCIENCE",
        "RAW",
        sky_fits(9, 300, 260, &fits_cards("90003", "fx9c01010")),
    )?;

    // 90004: one good preview, one truncated, one blank.
    add(
        8_000_000_401,
        "fx9d01010",
        "hst_90004_01_acs_wfc_total_fx9d01_drc.jpg",
        "PREVIEW",
        "TOTAL",
        sky_jpeg(10, 800, 800, false, 90),
    )?;
    let mut truncated = sky_jpeg(11, 800, 600, false, 90);
    truncated.truncate(truncated.len() / 2);
    add(
        8_000_000_402,
        "fx9d01020",
        "hst_90004_02_acs_wfc_total_fx9d02_drc.jpg",
        "PREVIEW",
        "TOTAL",
        truncated,
    )?;
    add(
        8_000_000_402,
        "fx9d01020",
        "hst_90004_03_acs_wfc_total_fx9d03_drc.jpg",
        "PREVIEW",
        "TOTAL",
        blank_jpeg(),
    )?;

    // A product row whose parent_obsid is 0 names no observation and must be quarantined.
    let orphan = sky_jpeg(12, 300, 300, false, 90);
    writer.add_file(
        "mast:HST/product/hst_90004_09_acs_wfc_total_fx9d09_drc.jpg",
        &orphan,
    )?;
    let mut row = product_row(
        0,
        "fx9d01010",
        "mast:HST/product/hst_90004_09_acs_wfc_total_fx9d09_drc.jpg",
        "hst_90004_09_acs_wfc_total_fx9d09_drc.jpg",
        "PREVIEW",
        "TOTAL",
        orphan.len(),
    );
    row.insert("obsID".into(), json!(8_000_000_401u64));
    rows.push(row);
    Ok(rows)
}

fn fits_cards(proposal_id: &str, obs_id: &str) -> Vec<(&'static str, FitsValue)> {
    vec![
        (
            "PROPOSID",
            FitsValue::Int(proposal_id.parse().expect("numeric fixture id")),
        ),
        ("ROOTNAME", FitsValue::Str(obs_id.to_string())),
        ("INSTRUME", FitsValue::Str("ACS".into())),
        ("TARGNAME", FitsValue::Str("SYNTHETIC".into())),
    ]
}

fn blank_jpeg() -> Vec<u8> {
    paperclip_images::encode_jpeg(&[37; 400 * 300], 400, 300, Samples::Grey, 90)
        .expect("a 400x300 grey image encodes")
}

fn product_row(
    parent_obsid: u64,
    obs_id: &str,
    uri: &str,
    name: &str,
    product_type: &str,
    subgroup: &str,
    size_bytes: usize,
) -> Row {
    let value = json!({
        "obsID": parent_obsid,
        "parent_obsid": parent_obsid,
        "obs_id": obs_id,
        "obs_collection": "HST",
        "dataURI": uri,
        "productType": product_type,
        "productSubGroupDescription": subgroup,
        "productFilename": name,
        "size": size_bytes,
        "description": "synthetic fixture",
    });
    value.as_object().expect("object literal").clone()
}
