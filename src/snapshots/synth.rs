//! A synthetic archive of any size, for benchmarks: `paperclip archive synth`.
//!
//! It writes a snapshot that `paperclip archive serve` serves like the fixtures: a
//! catalog of `proposals` records, one observation per preview, `previews_per_proposal`
//! preview JPEGs per proposal and optionally FITS files. Preview sides are drawn
//! log-uniformly between `min_side_px` and `max_side_px` with an aspect ratio between
//! 3:4 and 4:3, greyscale or colour, so decoding them costs what decoding real previews
//! of those sizes costs. Their content is sky: tiles of rendered star fields and galaxies
//! (with saturated stars), shifted, mirrored and overlaid with fresh noise for each image,
//! so no two previews are alike. As in drizzled HST previews, the sky fills a slightly
//! rotated footprint and the rest is white. At the default quality of 75 (the quality of
//! MAST's HAP previews) a greyscale preview costs about 1 bit per pixel, near the 0.92 of
//! a real 20-megapixel HAP preview, so entropy decoding costs what it costs on real ones.
//!
//! Invariant: the snapshot depends only on the spec, seed included. Every id starts at
//! 200000 (proposals) or 9000000000 (observations), far from real HST ids, and every
//! abstract states that it is synthetic.

use std::path::{Path, PathBuf};
use std::sync::mpsc;

use image::DynamicImage;
use paperclip_archive::{Row, SnapshotWriter};
use paperclip_images::fits::FitsValue;
use paperclip_images::synth::{SplitMix64 as Random, sky_fits, sky_image};
use paperclip_images::{Samples, encode_jpeg};
use serde::Serialize;
use serde_json::json;

use crate::error::{PipelineError, Result};

/// Side of the square sky tiles that previews are built from, in pixels.
const TILE_PX: u32 = 1024;
/// Tiles of each kind (greyscale and colour).
const TILES_PER_KIND: u64 = 3;
/// First proposal id, above the five-digit ids of real HST proposals.
const FIRST_PROPOSAL_ID: u64 = 200_000;
/// First observation id, apart from the fixtures' range of 8000000000.
const FIRST_OBSID: u64 = 9_000_000_000;
/// Release date of every synthetic observation, MJD (2020-01-01).
const RELEASE_MJD: f64 = 58849.0;

/// Size and content of a synthetic archive.
#[derive(Debug, Clone, PartialEq)]
pub struct SynthSpec {
    pub proposals: usize,
    pub previews_per_proposal: usize,
    pub seed: u64,
    pub min_side_px: u32,
    pub max_side_px: u32,
    /// Share of previews in colour; the others are greyscale.
    pub colour_fraction: f64,
    /// FITS files (256 x 256) per proposal, next to its first previews.
    pub fits_per_proposal: usize,
    pub jpeg_quality: u8,
}

impl Default for SynthSpec {
    fn default() -> Self {
        Self {
            proposals: 100,
            previews_per_proposal: 10,
            seed: 1,
            min_side_px: 512,
            max_side_px: 4500,
            colour_fraction: 0.5,
            fits_per_proposal: 0,
            jpeg_quality: 75,
        }
    }
}

/// Counts of a written synthetic archive.
#[derive(Debug, Clone, Serialize)]
pub struct SynthSummary {
    pub dir: PathBuf,
    pub proposals: usize,
    pub observations: usize,
    pub previews: usize,
    pub fits_files: usize,
    pub preview_bytes: u64,
}

impl std::fmt::Display for SynthSummary {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "synthetic archive written to {}: {} proposals, {} previews ({:.1} MB), {} FITS \
             files; serve it with `paperclip archive serve {}`",
            self.dir.display(),
            self.proposals,
            self.previews,
            self.preview_bytes as f64 / 1e6,
            self.fits_files,
            self.dir.display()
        )
    }
}

impl SynthSpec {
    fn check(&self) -> Result<()> {
        let invalid = |problem: String| Err(PipelineError::Invalid(problem));
        if self.proposals == 0 || self.previews_per_proposal == 0 {
            return invalid(format!(
                "a synthetic archive needs at least one proposal and one preview each, got \
                 {} proposals and {} previews per proposal",
                self.proposals, self.previews_per_proposal
            ));
        }
        if self.previews_per_proposal > 999 {
            return invalid(format!(
                "previews per proposal is {}, above the 999 that observation ids allow; \
                 use more proposals instead",
                self.previews_per_proposal
            ));
        }
        if self.min_side_px < 16 || self.min_side_px > self.max_side_px || self.max_side_px > 8192 {
            return invalid(format!(
                "preview sides {}..={} px are invalid; give 16 <= min <= max <= 8192",
                self.min_side_px, self.max_side_px
            ));
        }
        if !(0.0..=1.0).contains(&self.colour_fraction) {
            return invalid(format!(
                "colour fraction {} is outside 0..=1",
                self.colour_fraction
            ));
        }
        Ok(())
    }
}

/// Writes the synthetic archive into `dir`, which must be empty or absent.
pub fn build(dir: &Path, spec: &SynthSpec) -> Result<SynthSummary> {
    spec.check()?;
    super::fixtures::require_empty(dir)?;
    let mut writer = SnapshotWriter::create(
        dir,
        &format!(
            "paperclip synthetic archive ({} proposals x {} previews, seed {})",
            spec.proposals, spec.previews_per_proposal, spec.seed
        ),
    )?;
    writer.set_catalog(&catalog_bytes(spec))?;

    let tiles = Tiles::render(spec.seed);
    let previews = preview_plans(spec);
    let mut products = Vec::with_capacity(previews.len());
    let mut preview_bytes = 0u64;
    for (plan, jpeg) in encode_all(&previews, &tiles, spec.jpeg_quality) {
        preview_bytes += jpeg.len() as u64;
        products.push(add_product(
            &writer,
            &plan,
            &plan.preview_name(),
            "PREVIEW",
            "TOTAL",
            &jpeg,
        )?);
        if plan.index < spec.fits_per_proposal {
            let cards = [
                ("PROPOSID", FitsValue::Int(plan.proposal_id as i64)),
                ("ROOTNAME", FitsValue::Str(plan.obs_id())),
                ("INSTRUME", FitsValue::Str("ACS".into())),
            ];
            let fits = sky_fits(plan.seed ^ 0xf175, 256, 256, &cards);
            let name = format!("{}_drc.fits", plan.obs_id());
            products.push(add_product(&writer, &plan, &name, "SCIENCE", "DRC", &fits)?);
        }
    }

    let observations: Vec<Row> = previews.iter().map(observation_row).collect();
    let summary = SynthSummary {
        dir: dir.to_path_buf(),
        proposals: spec.proposals,
        observations: observations.len(),
        previews: previews.len(),
        fits_files: spec.proposals * spec.fits_per_proposal.min(spec.previews_per_proposal),
        preview_bytes,
    };
    writer.add_observations(observations)?;
    writer.add_products(products)?;
    writer.finish()?;
    Ok(summary)
}

/// One preview to generate: its proposal, position, size and colour.
#[derive(Debug, Clone)]
struct PreviewPlan {
    proposal_id: u64,
    index: usize,
    obsid: u64,
    width_px: u32,
    height_px: u32,
    colour: bool,
    seed: u64,
}

impl PreviewPlan {
    fn obs_id(&self) -> String {
        format!("sy{:06}{:03}", self.proposal_id, self.index)
    }

    fn preview_name(&self) -> String {
        format!(
            "hst_{}_{:03}_acs_wfc_total_{}_drc.jpg",
            self.proposal_id,
            self.index,
            self.obs_id()
        )
    }
}

fn preview_plans(spec: &SynthSpec) -> Vec<PreviewPlan> {
    let mut random = Random(spec.seed ^ 0x5eed_5eed);
    let (low, high) = (
        f64::from(spec.min_side_px).ln(),
        f64::from(spec.max_side_px).ln(),
    );
    let mut plans = Vec::with_capacity(spec.proposals * spec.previews_per_proposal);
    for proposal in 0..spec.proposals {
        let proposal_id = FIRST_PROPOSAL_ID + proposal as u64;
        for index in 0..spec.previews_per_proposal {
            let side = (low + (high - low) * random.uniform()).exp();
            let aspect = 0.75 + 0.58 * random.uniform();
            let clamp = |px: f64| (px.round() as u32).clamp(spec.min_side_px, spec.max_side_px);
            plans.push(PreviewPlan {
                proposal_id,
                index,
                obsid: FIRST_OBSID + proposal as u64 * 1000 + index as u64,
                width_px: clamp(side),
                height_px: clamp(side / aspect),
                colour: random.uniform() < spec.colour_fraction,
                seed: random.next_u64(),
            });
        }
    }
    plans
}

/// Encodes every preview on all cores and passes them to the caller in order. Each round
/// encodes one preview per core, so only that many are held in memory at once.
fn encode_all<'a>(
    plans: &'a [PreviewPlan],
    tiles: &'a Tiles,
    quality: u8,
) -> impl Iterator<Item = (PreviewPlan, Vec<u8>)> + 'a {
    let workers = std::thread::available_parallelism().map_or(1, |n| n.get());
    plans.chunks(workers).flat_map(move |batch| {
        let (sender, receiver) = mpsc::channel();
        std::thread::scope(|scope| {
            for (slot, plan) in batch.iter().enumerate() {
                let sender = sender.clone();
                scope.spawn(move || {
                    let _ = sender.send((slot, compose_jpeg(plan, tiles, quality)));
                });
            }
        });
        drop(sender);
        let mut encoded: Vec<(usize, Vec<u8>)> = receiver.into_iter().collect();
        encoded.sort_by_key(|(slot, _)| *slot);
        batch
            .iter()
            .cloned()
            .zip(encoded.into_iter().map(|(_, jpeg)| jpeg))
            .collect::<Vec<_>>()
    })
}

/// Rendered sky tiles, raw 8-bit pixels, greyscale and colour.
struct Tiles {
    grey: Vec<Vec<u8>>,
    colour: Vec<Vec<u8>>,
}

impl Tiles {
    fn render(seed: u64) -> Self {
        let render = |kind: u64, colour: bool| -> Vec<u8> {
            match sky_image(
                seed.wrapping_mul(31).wrapping_add(kind),
                TILE_PX,
                TILE_PX,
                colour,
            ) {
                DynamicImage::ImageRgb8(image) => image.into_raw(),
                other => other.into_luma8().into_raw(),
            }
        };
        Self {
            grey: (0..TILES_PER_KIND).map(|k| render(k, false)).collect(),
            colour: (0..TILES_PER_KIND).map(|k| render(100 + k, true)).collect(),
        }
    }
}

/// Largest rotation of a preview's sky footprint, in radians (8 degrees).
const MAX_FOOTPRINT_TILT_RAD: f64 = 0.14;
/// Footprint sides as a share of the preview's sides, before rotation.
const FOOTPRINT_SCALE: f64 = 0.93;

/// A rotated rectangle that contains a preview's sky. Pixels outside it are white, as the
/// area outside a drizzled footprint is in HST previews.
struct Footprint {
    centre: (f64, f64),
    half_sides: (f64, f64),
    cos: f64,
    sin: f64,
}

impl Footprint {
    fn new(width: usize, height: usize, random: &mut Random) -> Self {
        let tilt_rad = MAX_FOOTPRINT_TILT_RAD * (2.0 * random.uniform() - 1.0);
        Self {
            centre: (width as f64 / 2.0, height as f64 / 2.0),
            half_sides: (
                width as f64 * FOOTPRINT_SCALE / 2.0,
                height as f64 * FOOTPRINT_SCALE / 2.0,
            ),
            cos: tilt_rad.cos(),
            sin: tilt_rad.sin(),
        }
    }

    fn contains(&self, x: usize, y: usize) -> bool {
        let (dx, dy) = (x as f64 - self.centre.0, y as f64 - self.centre.1);
        let along = dx * self.cos + dy * self.sin;
        let across = dy * self.cos - dx * self.sin;
        along.abs() < self.half_sides.0 && across.abs() < self.half_sides.1
    }
}

/// Builds a preview from a tile, shifted and possibly mirrored, with noise of its own
/// inside a footprint, and encodes it as JPEG.
fn compose_jpeg(plan: &PreviewPlan, tiles: &Tiles, quality: u8) -> Vec<u8> {
    let mut random = Random(plan.seed);
    let channels = if plan.colour { 3 } else { 1 };
    let set = if plan.colour {
        &tiles.colour
    } else {
        &tiles.grey
    };
    let tile = &set[(random.next_u64() % set.len() as u64) as usize];
    let (shift_x, shift_y) = (
        random.next_u64() % u64::from(TILE_PX),
        random.next_u64() % u64::from(TILE_PX),
    );
    let mirrored = random.next_u64() % 2 == 1;
    let tile_px = u64::from(TILE_PX);
    let (width, height) = (plan.width_px as usize, plan.height_px as usize);
    let footprint = Footprint::new(width, height, &mut random);

    let mut pixels = Vec::with_capacity(width * height * channels);
    for y in 0..height as u64 {
        let tile_y = (y + shift_y) % tile_px;
        for x in 0..width as u64 {
            if !footprint.contains(x as usize, y as usize) {
                pixels.extend(std::iter::repeat_n(u8::MAX, channels));
                continue;
            }
            let column = if mirrored { width as u64 - 1 - x } else { x };
            let tile_x = (column + shift_x) % tile_px;
            let base = ((tile_y * tile_px + tile_x) as usize) * channels;
            // Noise of -3 to +4 levels per pixel, from 3 bits of the generator.
            let noise = (random.next_u64() & 0x7) as i16 - 3;
            for channel in 0..channels {
                let value = i16::from(tile[base + channel]) + noise;
                pixels.push(value.clamp(0, 255) as u8);
            }
        }
    }

    let layout = if plan.colour {
        Samples::Rgb
    } else {
        Samples::Grey
    };
    // Encoding fails only for sides beyond 65535 pixels, and `SynthSpec::check` caps
    // sides at 8192.
    encode_jpeg(
        &pixels,
        plan.width_px,
        plan.height_px,
        layout,
        quality.clamp(1, 100),
    )
    .unwrap_or_default()
}

fn add_product(
    writer: &SnapshotWriter,
    plan: &PreviewPlan,
    name: &str,
    product_type: &str,
    subgroup: &str,
    bytes: &[u8],
) -> Result<Row> {
    let uri = format!("mast:HST/product/{name}");
    writer.add_file(&uri, bytes)?;
    let value = json!({
        "obsID": plan.obsid,
        "parent_obsid": plan.obsid,
        "obs_id": plan.obs_id(),
        "obs_collection": "HST",
        "dataURI": uri,
        "productType": product_type,
        "productSubGroupDescription": subgroup,
        "productFilename": name,
        "size": bytes.len(),
        "description": "synthetic archive",
    });
    Ok(value.as_object().expect("object literal").clone())
}

fn observation_row(plan: &PreviewPlan) -> Row {
    let value = json!({
        "obsid": plan.obsid,
        "obs_id": plan.obs_id(),
        "proposal_id": plan.proposal_id.to_string(),
        "obs_collection": "HST",
        "instrument_name": "ACS/WFC",
        "target_name": format!("SYNTH-{}", plan.proposal_id),
        "filters": "F606W",
        "dataproduct_type": "image",
        "dataRights": "PUBLIC",
        "calib_level": 3,
        "s_ra": null,
        "s_dec": null,
        "obs_title": "synthetic archive",
        "t_obs_release": RELEASE_MJD,
    });
    value.as_object().expect("object literal").clone()
}

const CATEGORIES: [&str; 6] = [
    "GALAXIES",
    "STAR FORMATION",
    "STELLAR POPULATIONS",
    "COSMOLOGY",
    "SOLAR SYSTEM",
    "AGN/QUASARS",
];

const WORDS: [&str; 40] = [
    "imaging",
    "spectroscopy",
    "galaxy",
    "cluster",
    "nebula",
    "stars",
    "dust",
    "gas",
    "lensing",
    "redshift",
    "survey",
    "deep",
    "field",
    "resolved",
    "populations",
    "disk",
    "halo",
    "jets",
    "outflows",
    "supernova",
    "remnant",
    "quasar",
    "host",
    "merger",
    "tidal",
    "streams",
    "globular",
    "young",
    "massive",
    "emission",
    "ultraviolet",
    "infrared",
    "parallax",
    "variability",
    "morphology",
    "metallicity",
    "kinematics",
    "formation",
    "evolution",
    "structure",
];

/// Renders the catalog in STScI's abstracts.cat layout, the same as the fixtures'.
fn catalog_bytes(spec: &SynthSpec) -> Vec<u8> {
    let mut random = Random(spec.seed ^ 0xca7a_1065);
    let rule = "-".repeat(80);
    let mut out = String::new();
    for proposal in 0..spec.proposals {
        let id = FIRST_PROPOSAL_ID + proposal as u64;
        let mut phrase = |count: usize| -> Vec<&str> {
            (0..count)
                .map(|_| WORDS[(random.next_u64() % WORDS.len() as u64) as usize])
                .collect()
        };
        let title = phrase(6).join(" ");
        let body = phrase(90).join(" ");
        out.push_str(&format!("{rule}\n"));
        out.push_str("Prop. Type: GO\n");
        out.push_str(&format!(
            "Category: {}\n",
            CATEGORIES[proposal % CATEGORIES.len()]
        ));
        out.push_str(&format!("ID: {id}\n"));
        out.push_str(&format!("Cycle: {}\n", 1 + proposal % 31));
        out.push_str(&format!("Title: Synthetic proposal {id}: {title}\n"));
        out.push_str(&format!("PI: Synthetic Observer {}\n\n", proposal % 97));
        let text = format!("This abstract is synthetic, made for benchmarks. {body}.");
        let words: Vec<&str> = text.split_whitespace().collect();
        for line in super::fixtures::wrap_words(&words, 80) {
            out.push_str(&line);
            out.push('\n');
        }
    }
    out.push_str(&format!("{rule}\n"));
    out.into_bytes()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn small() -> SynthSpec {
        SynthSpec {
            proposals: 3,
            previews_per_proposal: 4,
            seed: 7,
            min_side_px: 64,
            max_side_px: 300,
            colour_fraction: 0.5,
            fits_per_proposal: 1,
            jpeg_quality: 85,
        }
    }

    #[test]
    fn archive_has_counts_and_sizes() {
        let dir = tempfile::tempdir().unwrap();

        let summary = build(&dir.path().join("archive"), &small()).unwrap();

        assert_eq!(summary.proposals, 3);
        assert_eq!(summary.previews, 12);
        assert_eq!(summary.fits_files, 3);
        let snapshot = paperclip_archive::Snapshot::open(&dir.path().join("archive")).unwrap();
        assert_eq!(snapshot.observations().rows.len(), 12);
        assert_eq!(snapshot.products().rows.len(), 15);
        for plan in preview_plans(&small()) {
            assert!((64..=300).contains(&plan.width_px), "{plan:?}");
            assert!((64..=300).contains(&plan.height_px), "{plan:?}");
        }
    }

    #[test]
    fn previews_decode_with_planned_size() {
        let tiles = Tiles::render(7);
        for plan in preview_plans(&small()).iter().take(4) {
            let jpeg = compose_jpeg(plan, &tiles, 85);

            let image = image::load_from_memory(&jpeg).unwrap();

            assert_eq!(
                (image.width(), image.height()),
                (plan.width_px, plan.height_px)
            );
            assert_eq!(image.color().has_color(), plan.colour, "{plan:?}");
        }
    }

    #[test]
    fn sky_fills_a_footprint_with_white_corners() {
        let tiles = Tiles::render(7);
        let plan = PreviewPlan {
            width_px: 400,
            height_px: 300,
            colour: false,
            ..preview_plans(&small())[0].clone()
        };

        let image = image::load_from_memory(&compose_jpeg(&plan, &tiles, 85))
            .unwrap()
            .into_luma8();

        for (x, y) in [(1, 1), (398, 1), (1, 298), (398, 298)] {
            assert!(
                image.get_pixel(x, y)[0] > 245,
                "corner ({x}, {y}) is not white"
            );
        }
        let centre: Vec<u8> = (140..160)
            .flat_map(|y| (190..210).map(move |x| (x, y)))
            .map(|(x, y)| image.get_pixel(x, y)[0])
            .collect();
        assert!(centre.iter().any(|&v| v < 200), "the centre holds no sky");
    }

    #[test]
    fn same_seed_same_bytes() {
        let dir = tempfile::tempdir().unwrap();
        let (a, b) = (dir.path().join("a"), dir.path().join("b"));

        build(&a, &small()).unwrap();
        build(&b, &small()).unwrap();

        let name = preview_plans(&small())[5].preview_name();
        let file = |root: &Path| std::fs::read(root.join("files/HST/product").join(&name)).unwrap();
        assert_eq!(file(&a), file(&b));
        assert_eq!(
            std::fs::read(a.join("catalog/abstracts.cat")).unwrap(),
            std::fs::read(b.join("catalog/abstracts.cat")).unwrap()
        );
    }

    #[test]
    fn invalid_specs_rejected() {
        let dir = tempfile::tempdir().unwrap();
        for spec in [
            SynthSpec {
                proposals: 0,
                ..small()
            },
            SynthSpec {
                min_side_px: 400,
                max_side_px: 300,
                ..small()
            },
            SynthSpec {
                colour_fraction: 1.5,
                ..small()
            },
            SynthSpec {
                previews_per_proposal: 1000,
                ..small()
            },
        ] {
            let error = build(&dir.path().join("x"), &spec).unwrap_err().to_string();
            assert!(!error.is_empty());
        }
    }
}
