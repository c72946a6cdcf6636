//! Preview JPEGs and PNGs run through the pipeline: damaged and unsupported files end up
//! as skips with a reason, and the published squares keep the source's grey levels and
//! colours.

use std::io::Cursor;
use std::path::PathBuf;

use image::{DynamicImage, GrayImage, ImageBuffer, ImageFormat, Luma, Rgb, RgbImage};
use paperclip::pipeline::{PipelineConfig, RunReport};
use paperclip_archive::ServeOptions;
use paperclip_images::synth::sky_jpeg;

use super::mast::{TestArchive, pipeline, query_column, shard_samples, skips_with};
use crate::support::{repo_root, run_config};

const PROPOSAL: u32 = 70401;
const OBSID: u64 = 704010;

/// A published run over previews of one observation.
struct PreviewRun {
    dir: tempfile::TempDir,
    report: RunReport,
}

impl PreviewRun {
    /// Serves `previews`, given as (name part, extension, bytes), as previews of one
    /// observation and runs `config` on them.
    async fn start(config: &PipelineConfig, previews: &[(&str, &str, Vec<u8>)]) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let mut archive = TestArchive::new();
        archive.plain_proposal(PROPOSAL);
        archive.observation(OBSID, PROPOSAL);
        for (name, extension, bytes) in previews {
            archive.preview(OBSID, &file_name(name, extension), bytes.clone());
        }
        let server = archive
            .serve(&dir.path().join("snapshot"), ServeOptions::default())
            .await;
        let report = run_config(config, &dir.path().join("data"), server.base_url()).await;
        Self { dir, report }
    }

    fn data_dir(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    /// Returns the file names of the published samples, sorted.
    async fn published(&self) -> Vec<String> {
        let names = query_column(
            &self.data_dir(),
            r#"SELECT product_filename FROM "hst-paperclip".latest.samples ORDER BY 1"#,
        )
        .await;
        names.into_iter().flatten().collect()
    }

    /// Returns the published square of a preview.
    async fn square(&self, name: &str, extension: &str) -> RgbImage {
        let samples = shard_samples(&self.data_dir()).await;
        let sample = &samples[&file_name(name, extension)];
        image::load_from_memory(&sample.jpeg).unwrap().to_rgb8()
    }
}

fn file_name(name: &str, extension: &str) -> String {
    format!("hst_{PROPOSAL}_{name}_acs_wfc_total_tst{OBSID}_drc.{extension}")
}

fn png_bytes(image: &DynamicImage) -> Vec<u8> {
    let mut bytes = Vec::new();
    image
        .write_to(&mut Cursor::new(&mut bytes), ImageFormat::Png)
        .unwrap();
    bytes
}

fn fixture(name: &str) -> Vec<u8> {
    std::fs::read(repo_root().join("crates/images/tests/fixtures").join(name)).unwrap()
}

/// A preview that every test publishes, so each run has a version to read.
fn good_preview() -> (&'static str, &'static str, Vec<u8>) {
    ("good", "jpg", sky_jpeg(41, 320, 240, false, 90))
}

// https://github.com/python-pillow/Pillow/issues/2717
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn truncated_progressive_jpeg_is_skipped() {
    let progressive = fixture("progressive.jpg");
    let cut = progressive[..progressive.len() / 2].to_vec();

    let run = PreviewRun::start(
        &pipeline(),
        &[
            ("whole", "jpg", progressive),
            ("cut", "jpg", cut),
            good_preview(),
        ],
    )
    .await;

    let truncated = skips_with(&run.report, "image/truncated");
    assert_eq!(truncated.len(), 1, "{:?}", run.report.skips);
    assert!(
        truncated[0].0.ends_with(&file_name("cut", "jpg")),
        "{truncated:?}"
    );
    assert_eq!(
        run.published().await,
        [file_name("good", "jpg"), file_name("whole", "jpg")]
    );
}

// https://github.com/python-pillow/Pillow/issues/3185
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn baseline_cut_mid_scan_is_skipped() {
    let baseline = sky_jpeg(3, 200, 150, true, 90);
    let cut = baseline[..baseline.len() * 2 / 3].to_vec();

    let run = PreviewRun::start(&pipeline(), &[("cut", "jpg", cut), good_preview()]).await;

    assert_eq!(
        run.report.skipped_by_reason.get("image/truncated"),
        Some(&1)
    );
    let truncated = skips_with(&run.report, "image/truncated");
    assert!(
        truncated[0].1.contains("without an EOI marker"),
        "{truncated:?}"
    );
    assert_eq!(run.published().await, [file_name("good", "jpg")]);
    let stored = query_column(
        &run.data_dir(),
        r#"SELECT concat(stage, '/', reason) FROM "hst-paperclip".v1.skips WHERE item LIKE '%_cut_%'"#,
    )
    .await;
    assert_eq!(stored, [Some("image/truncated".to_string())]);
}

// https://github.com/etemesi254/zune-image/issues/442
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ycck_and_cmyk_jpegs_are_skipped() {
    let cmyk = fixture("cmyk.jpg");
    let mut ycck = cmyk.clone();
    let adobe = ycck
        .windows(5)
        .position(|window| window == b"Adobe")
        .unwrap();
    // The Adobe APP14 transform byte: 0 is CMYK, 2 is YCCK.
    ycck[adobe + 11] = 2;

    let run = PreviewRun::start(
        &pipeline(),
        &[("cmyk", "jpg", cmyk), ("ycck", "jpg", ycck), good_preview()],
    )
    .await;

    let rejected = skips_with(&run.report, "image/unsupported_colour_space");
    assert_eq!(rejected.len(), 2, "{:?}", run.report.skips);
    let detail_of = |name: &str| {
        let file = file_name(name, "jpg");
        rejected
            .iter()
            .find(|(item, _)| item.ends_with(&file))
            .map(|(_, detail)| detail.clone())
            .unwrap_or_else(|| panic!("{file} not skipped: {rejected:?}"))
    };
    assert!(detail_of("cmyk").contains("CMYK"), "{rejected:?}");
    assert!(detail_of("ycck").contains("YCCK"), "{rejected:?}");
    assert_eq!(run.published().await, [file_name("good", "jpg")]);
}

// https://github.com/python-pillow/Pillow/issues/2574
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grey16_gradient_keeps_its_range() {
    let gradient: ImageBuffer<Luma<u16>, Vec<u16>> =
        ImageBuffer::from_fn(256, 64, |x, _| Luma([(x * 257) as u16]));
    let png = png_bytes(&DynamicImage::ImageLuma16(gradient));

    let run = PreviewRun::start(&pipeline(), &[("gradient", "png", png)]).await;

    // 256x64 scales to 512x128, centred: row 256 runs through the gradient.
    let square = run.square("gradient", "png").await;
    let row: Vec<i32> = (0..512)
        .map(|x| i32::from(square.get_pixel(x, 256).0[0]))
        .collect();
    assert!(row[4] <= 12, "left end {}", row[4]);
    assert!(row[507] >= 243, "right end {}", row[507]);
    assert!((row[256] - 128).abs() <= 8, "middle {}", row[256]);
    for x in (16..512).step_by(16) {
        assert!(row[x] >= row[x - 16], "not increasing at {x}: {row:?}");
    }
}

// https://github.com/ruffle-rs/ruffle/pull/6726
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rgb16_png_colours_scaled_to_8_bits() {
    let halves = [[0u16, 32896, 65535], [65535, 0, 25700]];
    let image: ImageBuffer<Rgb<u16>, Vec<u16>> =
        ImageBuffer::from_fn(64, 64, |x, _| Rgb(halves[(x / 32) as usize]));
    let png = png_bytes(&DynamicImage::ImageRgb16(image));

    let run = PreviewRun::start(&pipeline(), &[("rgb16", "png", png)]).await;

    let square = run.square("rgb16", "png").await;
    let expected = [(128, [0u8, 128, 255]), (384, [255, 0, 100])];
    for (x, colour) in expected {
        let actual = square.get_pixel(x, 256).0;
        for channel in 0..3 {
            let difference = i32::from(actual[channel]) - i32::from(colour[channel]);
            assert!(
                difference.abs() <= 6,
                "x {x}: {actual:?}, expected {colour:?}"
            );
        }
    }
}

// https://github.com/DaemonEngine/Urcheon/issues/61
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grey8_five_levels_stay_distinct() {
    let levels = [0u8, 64, 128, 192, 255];
    let grey = GrayImage::from_fn(100, 40, |x, _| Luma([levels[(x / 20) as usize]]));
    let png = png_bytes(&DynamicImage::ImageLuma8(grey));

    let run = PreviewRun::start(&pipeline(), &[("levels", "png", png)]).await;

    // 100x40 scales to 512x205; each band is about 102 pixels wide.
    let square = run.square("levels", "png").await;
    for (band, level) in levels.iter().enumerate() {
        let x = (band as u32 * 20 + 10) * 512 / 100;
        let [red, green, blue] = square.get_pixel(x, 256).0;
        assert!(
            red.abs_diff(green) <= 1 && green.abs_diff(blue) <= 1,
            "band {band}: ({red}, {green}, {blue}) is not grey"
        );
        assert!(
            red.abs_diff(*level) <= 4,
            "band {band}: {red}, expected {level}"
        );
    }
}

// https://github.com/rom1504/img2dataset/issues/440
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn size_rules_name_each_rejection() {
    let mut config = pipeline();
    config.images.min_source_px = 200;
    config.images.max_aspect_ratio = Some(3.0);
    let sizes = [(150, 900), (100, 100), (200, 900), (300, 250), (640, 480)];
    let previews: Vec<(&str, &str, Vec<u8>)> = ["a", "b", "c", "d", "e"]
        .into_iter()
        .zip(sizes)
        .map(|(name, (width, height))| (name, "jpg", sky_jpeg(9, width, height, true, 85)))
        .collect();

    let run = PreviewRun::start(&config, &previews).await;

    let counts = &run.report.skipped_by_reason;
    assert_eq!(counts.get("image/too_small"), Some(&2), "{counts:?}");
    assert_eq!(counts.get("image/aspect_ratio"), Some(&1), "{counts:?}");
    let too_small = skips_with(&run.report, "image/too_small");
    assert!(
        too_small
            .iter()
            .any(|(_, detail)| detail.contains("150x900") && detail.contains("min_source_px = 200")),
        "{too_small:?}"
    );
    let accepted = query_column(
        &run.data_dir(),
        r#"SELECT concat(source_width_px, 'x', source_height_px) FROM "hst-paperclip".latest.samples ORDER BY 1"#,
    )
    .await;
    assert_eq!(
        accepted,
        [Some("300x250".to_string()), Some("640x480".to_string())]
    );
}

// https://github.com/rom1504/img2dataset/issues/224
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jpeg_missing_lower_half_is_flagged() {
    let whole = sky_jpeg(4, 256, 256, false, 90);
    // The upper half of the scan with an EOI marker, which a marker check alone accepts.
    let mut half = whole[..whole.len() / 2].to_vec();
    half.extend([0xff, 0xd9]);

    let run = PreviewRun::start(&pipeline(), &[("half", "jpg", half), good_preview()]).await;

    let truncated = skips_with(&run.report, "image/truncated");
    assert_eq!(truncated.len(), 1, "{:?}", run.report.skips);
    assert!(truncated[0].1.contains("MCUs"), "{truncated:?}");
    assert_eq!(run.published().await, [file_name("good", "jpg")]);
    let stored = query_column(
        &run.data_dir(),
        r#"SELECT detail FROM "hst-paperclip".v1.skips WHERE reason = 'truncated'"#,
    )
    .await;
    assert_eq!(stored, [Some(truncated[0].1.clone())]);
}
