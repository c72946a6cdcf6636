//! A small image–caption dataset the project draws itself, for testing that training
//! learns: coloured shapes on a white ground whose captions say what and where they are
//! ("a red circle in the top left"). It is published as an ordinary dataset version
//! (WebDataset shards, manifest, Delta samples table), so training reads it exactly as it
//! reads an archive dataset.
//!
//! Each caption is one of 4 colours × 4 shapes × 4 positions = 64 texts; images vary in
//! size, exact position and a little noise, so no two images are equal.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

use datafusion::arrow::array::{Int64Array, RecordBatch, StringArray};
use datafusion::arrow::datatypes::{DataType, Field, Schema};
use image::{Rgb, RgbImage};
use paperclip_clip::rng::Rng;

use crate::dataset::shards::{OwnedShardSample, write_split};
use crate::dataset::versions::{DatasetPaths, VersionRecord, latest_version, publish};
use crate::error::{PipelineError, Result};
use crate::store::blobs::write_atomic;

const COLOURS: [(&str, [u8; 3]); 4] = [
    ("red", [220, 30, 30]),
    ("green", [30, 170, 40]),
    ("blue", [30, 60, 220]),
    ("yellow", [230, 200, 20]),
];
const SHAPES: [&str; 4] = ["circle", "square", "triangle", "cross"];
const PLACES: [(&str, f64, f64); 4] = [
    ("top left", 0.28, 0.28),
    ("top right", 0.72, 0.28),
    ("bottom left", 0.28, 0.72),
    ("bottom right", 0.72, 0.72),
];

/// Size and seed of a synthetic dataset.
#[derive(Debug, Clone)]
pub struct ShapesSpec {
    /// Dataset name.
    pub name: String,
    /// Training samples.
    pub train_samples: usize,
    /// Validation samples.
    pub val_samples: usize,
    /// Image side in pixels.
    pub image_px: u32,
    /// Seed of every drawing choice.
    pub seed: u64,
}

/// Draws the samples and publishes them as the dataset's next version; returns the version.
pub async fn publish_shapes(data_dir: &Path, spec: &ShapesSpec) -> Result<u64> {
    let paths = DatasetPaths::new(data_dir, &spec.name);
    let version = latest_version(&paths).await?.map_or(1, |v| v.version + 1);
    let run_id = format!("synthetic-shapes-{}", spec.seed);
    let staging = paths.staging_dir(&run_id);
    let shards_dir = staging.join("shards");
    std::fs::create_dir_all(&shards_dir).map_err(|e| PipelineError::io(&shards_dir, e))?;

    let mut rng = Rng::seeded(spec.seed);
    let mut rows = Vec::new();
    let mut shards = Vec::new();
    for (split, count) in [("train", spec.train_samples), ("val", spec.val_samples)] {
        let drawn: Vec<(OwnedShardSample, i64)> = (0..count)
            .map(|i| draw_sample(&mut rng, split, i, spec.image_px))
            .collect::<Result<_>>()?;
        rows.extend(
            drawn
                .iter()
                .map(|(s, class)| (s.key.clone(), split, s.caption.clone(), *class)),
        );
        let mut iter = drawn.into_iter().map(|(sample, _)| Ok(sample));
        shards.extend(write_split(&shards_dir, split, &mut iter, 1000)?);
    }
    crate::pipeline::publish::write_skips(&staging.join("skips.parquet"), &[])?;

    let record = VersionRecord {
        dataset: spec.name.clone(),
        version,
        created_at: chrono::Utc::now().to_rfc3339(),
        run_id,
        pipeline_sha256: String::new(),
        fingerprint: format!(
            "synthetic-shapes-{}-{}-{}",
            spec.seed, spec.train_samples, spec.val_samples
        ),
        counts: BTreeMap::from([("samples".to_string(), rows.len() as u64)]),
        skips_by_reason: BTreeMap::new(),
        shards,
        stage_inputs: BTreeMap::new(),
        archive_state: None,
        released_before_mjd: None,
    };
    let manifest = serde_json::to_vec_pretty(&record).expect("VersionRecord serializes");
    write_atomic(&staging.join("manifest.json"), &manifest)?;
    publish(&paths, &staging, samples_batch(&rows)?, &record).await?;
    Ok(version)
}

fn draw_sample(
    rng: &mut Rng,
    split: &str,
    index: usize,
    size_px: u32,
) -> Result<(OwnedShardSample, i64)> {
    let (colour, rgb) = COLOURS[rng.below(COLOURS.len())];
    let shape = SHAPES[rng.below(SHAPES.len())];
    let (place, cx, cy) = PLACES[rng.below(PLACES.len())];
    let caption = format!("a {colour} {shape} in the {place}");
    // Proposal ids group the 64 distinct captions, as proposals group HST previews.
    let class = COLOURS.iter().position(|c| c.0 == colour).unwrap_or(0) * 16
        + SHAPES.iter().position(|s| *s == shape).unwrap_or(0) * 4
        + PLACES.iter().position(|p| p.0 == place).unwrap_or(0);

    let image = render(rng, shape, rgb, (cx, cy), size_px);
    let jpeg = paperclip_images::encode_jpeg(
        image.as_raw(),
        image.width(),
        image.height(),
        paperclip_images::Samples::Rgb,
        95,
    )
    .map_err(|e| PipelineError::Invalid(format!("cannot encode a synthetic image: {e}")))?;

    let key = format!("shapes_{split}_{index:06}");
    let metadata = serde_json::json!({
        "key": key, "proposal_id": class as i64, "split": split, "caption": caption,
    });
    let sample = OwnedShardSample {
        key,
        jpeg,
        caption,
        metadata_json: serde_json::to_vec(&metadata).expect("JSON serializes"),
    };
    Ok((sample, class as i64))
}

fn render(
    rng: &mut Rng,
    shape: &str,
    rgb: [u8; 3],
    (cx, cy): (f64, f64),
    size_px: u32,
) -> RgbImage {
    let size = f64::from(size_px);
    let radius = size * (0.14 + 0.06 * rng.uniform());
    let cx = size * (cx + 0.06 * (rng.uniform() - 0.5));
    let cy = size * (cy + 0.06 * (rng.uniform() - 0.5));
    let mut image = RgbImage::from_pixel(size_px, size_px, Rgb([255, 255, 255]));
    for (x, y, pixel) in image.enumerate_pixels_mut() {
        let dx = (f64::from(x) + 0.5 - cx) / radius;
        let dy = (f64::from(y) + 0.5 - cy) / radius;
        let inside = match shape {
            "circle" => dx * dx + dy * dy <= 1.0,
            "square" => dx.abs() <= 0.85 && dy.abs() <= 0.85,
            "triangle" => (-1.0..=0.8).contains(&dy) && dx.abs() <= (dy + 1.0) * 0.55,
            _ => (dx.abs() <= 0.3 && dy.abs() <= 1.0) || (dy.abs() <= 0.3 && dx.abs() <= 1.0),
        };
        if inside {
            *pixel = Rgb(rgb);
        }
    }
    image
}

fn samples_batch(rows: &[(String, &str, String, i64)]) -> Result<RecordBatch> {
    let schema = Arc::new(Schema::new(vec![
        Field::new("key", DataType::Utf8, false),
        Field::new("split", DataType::Utf8, false),
        Field::new("caption", DataType::Utf8, false),
        Field::new("proposal_id", DataType::Int64, false),
    ]));
    let keys = StringArray::from_iter_values(rows.iter().map(|r| r.0.as_str()));
    let splits = StringArray::from_iter_values(rows.iter().map(|r| r.1));
    let captions = StringArray::from_iter_values(rows.iter().map(|r| r.2.as_str()));
    let ids = Int64Array::from_iter_values(rows.iter().map(|r| r.3));
    RecordBatch::try_new(
        schema,
        vec![
            Arc::new(keys),
            Arc::new(splits),
            Arc::new(captions),
            Arc::new(ids),
        ],
    )
    .map_err(|e| PipelineError::Invalid(format!("cannot build the samples table: {e}")))
}
