//! Checks against the real HST, astropy and press files in the shared data folder.
//!
//! The folder lives outside the repository; when it is missing each test prints a
//! skip line, unless `PAPERCLIP_REQUIRE_SHARED_DATA=1` makes its absence a failure.

use std::path::{Path, PathBuf};
use std::time::Instant;

use paperclip_images::fits::{self, FitsError};
use paperclip_images::{PrepareOptions, SourceFormat, prepare};

fn shared_data() -> Option<PathBuf> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../../shared/data");
    if root.is_dir() {
        return Some(root);
    }
    if std::env::var("PAPERCLIP_REQUIRE_SHARED_DATA").as_deref() == Ok("1") {
        panic!(
            "shared data not found at {} and PAPERCLIP_REQUIRE_SHARED_DATA=1",
            root.display()
        );
    }
    println!("skipping: shared data not found at {}", root.display());
    None
}

fn read(root: &Path, relative: &str) -> Vec<u8> {
    let path = root.join(relative);
    std::fs::read(&path).unwrap_or_else(|error| panic!("cannot read {}: {error}", path.display()))
}

const ASTROPY: &str = "images/fits/astropy";

#[test]
fn acs_sbc_uranus_headers_and_pixels() {
    let Some(root) = shared_data() else { return };
    let bytes = read(&root, "images/fits/seti/jbz504eoq_raw.fits");

    let headers = fits::read_headers(&bytes).unwrap();
    let primary = &headers[0];
    assert_eq!(primary.get_i64("PROPOSID"), Some(13012));
    assert_eq!(primary.get_str("INSTRUME"), Some("ACS"));
    assert_eq!(primary.get_str("DETECTOR"), Some("SBC"));
    assert_eq!(primary.get_str("TELESCOP"), Some("HST"));
    assert!(
        primary
            .get_str("TARGNAME")
            .is_some_and(|name| name.contains("URANUS"))
    );
    assert!(primary.get_f64("EXPTIME").is_some());

    let image = fits::read_image(&bytes, fits::DEFAULT_MAX_PIXELS).unwrap();
    assert_eq!((image.width_px, image.height_px), (1024, 1024));
    assert_eq!(image.hdu, 1);

    let prepared = prepare(&bytes, &PrepareOptions::default()).unwrap();
    assert_eq!(prepared.source_format, SourceFormat::Fits);
    assert_eq!(prepared.fits_hdu, Some(1));
}

fn m13_reference(root: &Path) -> fits::FitsImage {
    fits::read_image(
        &read(root, &format!("{ASTROPY}/m13.fits")),
        fits::DEFAULT_MAX_PIXELS,
    )
    .unwrap()
}

#[test]
fn m13_lossless_variants_match_reference() {
    let Some(root) = shared_data() else { return };
    let reference = m13_reference(&root);
    assert_eq!((reference.width_px, reference.height_px), (300, 300));

    for name in ["m13_rice.fits", "m13_gzip.fits"] {
        let image = fits::read_image(
            &read(&root, &format!("{ASTROPY}/{name}")),
            fits::DEFAULT_MAX_PIXELS,
        )
        .unwrap();
        assert_eq!((image.width_px, image.height_px), (300, 300), "{name}");
        assert_eq!(image.hdu, 1, "{name}");
        let differing = reference
            .pixels
            .iter()
            .zip(&image.pixels)
            .filter(|(expected, actual)| expected.to_bits() != actual.to_bits())
            .count();
        assert_eq!(
            differing, 0,
            "{name}: {differing} pixels differ from m13.fits"
        );
    }
}

#[test]
fn m13_hcompress_and_plio_are_unsupported() {
    let Some(root) = shared_data() else { return };
    for (name, feature) in [
        ("m13_hcomp.fits", "HCOMPRESS_1"),
        ("m13_plio.fits", "PLIO_1"),
    ] {
        let error = fits::read_image(
            &read(&root, &format!("{ASTROPY}/{name}")),
            fits::DEFAULT_MAX_PIXELS,
        )
        .unwrap_err();
        assert!(
            matches!(error, FitsError::Unsupported { .. }),
            "{name}: {error}"
        );
        assert!(error.to_string().contains(feature), "{name}: {error}");

        let prepared = prepare(
            &read(&root, &format!("{ASTROPY}/{name}")),
            &PrepareOptions::default(),
        );
        assert_eq!(
            prepared.unwrap_err().reason_code(),
            "unsupported_fits",
            "{name}"
        );
    }
}

#[test]
fn compressed_float_with_nan_keeps_nan_positions() {
    let Some(root) = shared_data() else { return };
    let image = fits::read_image(
        &read(&root, &format!("{ASTROPY}/compressed_with_nan.fits")),
        fits::DEFAULT_MAX_PIXELS,
    )
    .unwrap();
    assert_eq!((image.width_px, image.height_px), (12, 12));
    assert!(image.masked_pixels > 0, "expected NaN pixels");
    assert!(image.masked_pixels < 144, "not every pixel may be NaN");
    // The file contains 0, 1, 2, ... quantised with ZSCALE 0.524, so dithered values lie within half a step.
    for (index, value) in image.pixels.iter().enumerate() {
        if value.is_finite() {
            assert!(
                (value - index as f32).abs() < 0.27,
                "pixel {index} is {value}"
            );
        }
    }
}

#[test]
fn candels_cutout_uses_first_float_hdu() {
    let Some(root) = shared_data() else { return };
    let bytes = read(
        &root,
        "images/fits/candels/candels_gn_30mas_189.492060_62.206150_100.0pix-x-100.0pix_astrocut.fits",
    );
    let image = fits::read_image(&bytes, fits::DEFAULT_MAX_PIXELS).unwrap();
    assert_eq!(image.hdu, 1);
    assert_eq!(image.bitpix, -32);
    assert_eq!((image.width_px, image.height_px), (100, 100));

    let headers = fits::read_headers(&bytes).unwrap();
    assert_eq!(headers.len(), 4);
    assert!(
        headers
            .iter()
            .any(|header| header.get_i64("PROPOSID") == Some(12445))
    );
}

#[test]
fn damaged_nicmos_raw_fails_cleanly() {
    let Some(root) = shared_data() else { return };
    let bytes = read(&root, "images/fits/seti/n4wl01xdq_raw.fits");

    let error = fits::read_image(&bytes, fits::DEFAULT_MAX_PIXELS).unwrap_err();
    println!("n4wl01xdq_raw.fits: {error}");
    assert!(
        matches!(
            error,
            FitsError::InvalidHeader { .. } | FitsError::Truncated { .. }
        ),
        "{error}"
    );
    assert!(fits::read_headers(&bytes).is_err());

    let primary = fits::read_primary_header(&bytes).unwrap();
    assert_eq!(primary.get_i64("PROPOSID"), Some(7885));

    let prepared = prepare(&bytes, &PrepareOptions::default()).unwrap_err();
    assert_eq!(prepared.reason_code(), "corrupt");
}

#[test]
fn astropy_edge_case_files() {
    let Some(root) = shared_data() else { return };
    let load = |name: &str| {
        fits::read_image(
            &read(&root, &format!("{ASTROPY}/{name}")),
            fits::DEFAULT_MAX_PIXELS,
        )
    };

    let scale = load("scale.fits").unwrap();
    assert_eq!((scale.width_px, scale.height_px), (20, 21));
    assert!(scale.header.get_f64("BSCALE").is_some());

    let blank = load("blank.fits").unwrap();
    assert_eq!(blank.bitpix, 64);
    assert!(blank.masked_pixels > 0, "BLANK pixels must be masked");

    let cube = load("arange.fits").unwrap();
    assert_eq!((cube.width_px, cube.height_px), (11, 10));
    assert_eq!(cube.bitpix, 32);
    // arange.fits contains 0, 1, 2, ... so the first plane is 0..110.
    assert_eq!(cube.pixels[..3], [0.0, 1.0, 2.0]);
    assert_eq!(cube.pixels[109], 109.0);

    let groups = load("random_groups.fits").unwrap_err();
    assert!(matches!(groups, FitsError::Unsupported { .. }), "{groups}");
    assert!(groups.to_string().contains("random groups"), "{groups}");

    let wfpc2 = load("test0.fits").unwrap();
    assert_eq!((wfpc2.hdu, wfpc2.width_px, wfpc2.height_px), (1, 40, 40));

    let stis = load("o4sp040b0_raw.fits").unwrap();
    assert_eq!((stis.width_px, stis.height_px), (62, 44));
    let headers =
        fits::read_headers(&read(&root, &format!("{ASTROPY}/o4sp040b0_raw.fits"))).unwrap();
    assert_eq!(headers[0].get_i64("PROPOSID"), Some(7932));

    let dss = load("dss.14.29.56-62.41.05.fits.gz").unwrap();
    assert_eq!((dss.width_px, dss.height_px), (100, 100));
}

#[test]
fn gzipped_fits_prepares() {
    let Some(root) = shared_data() else { return };
    let prepared = prepare(
        &read(&root, &format!("{ASTROPY}/dss.14.29.56-62.41.05.fits.gz")),
        &PrepareOptions::default(),
    )
    .unwrap();
    assert_eq!(prepared.source_format, SourceFormat::FitsGzip);
    assert_eq!(prepared.fits_hdu, Some(0));
}

fn decode_square(jpeg: &[u8]) -> image::RgbImage {
    image::load_from_memory(jpeg).unwrap().to_rgb8()
}

#[test]
fn hap_greyscale_jpeg_prepares_with_white_rows() {
    let Some(root) = shared_data() else { return };
    let bytes = read(
        &root,
        "images/hap/hst_15354_01_acs_wfc_total_jdi601_drc.jpg",
    );

    let started = Instant::now();
    let prepared = prepare(&bytes, &PrepareOptions::default()).unwrap();
    println!(
        "prepare of the 4543x4423 HAP JPEG took {:?} (this build profile)",
        started.elapsed()
    );

    assert_eq!(
        (prepared.source_width_px, prepared.source_height_px),
        (4543, 4423)
    );
    assert_eq!(prepared.source_channels, 1);

    // 4423 * 512 / 4543 rounds to 498 rows, so (512 - 498) / 2 = 7 white rows on top.
    let square = decode_square(&prepared.jpeg);
    assert_eq!(square.dimensions(), (512, 512));
    for y in [0, 5, 507, 511] {
        let row_mean = (0..512)
            .map(|x| u32::from(square.get_pixel(x, y).0[1]))
            .sum::<u32>()
            / 512;
        assert!(
            row_mean >= 250,
            "row {y} mean {row_mean} should be white padding"
        );
    }
}

#[test]
fn deep_field_colour_jpeg_prepares() {
    let Some(root) = shared_data() else { return };
    let prepared = prepare(
        &read(&root, "images/hubble_deep_field.jpg"),
        &PrepareOptions::default(),
    )
    .unwrap();
    assert_eq!(
        (prepared.source_width_px, prepared.source_height_px),
        (1000, 872)
    );
    assert_eq!(prepared.source_channels, 3);

    let square = decode_square(&prepared.jpeg);
    let coloured = square
        .pixels()
        .filter(|pixel| pixel.0[0].abs_diff(pixel.0[2]) > 20)
        .count();
    assert!(coloured > 1000, "only {coloured} clearly coloured pixels");
}

#[test]
fn candels_greyscale_jpegs_prepare() {
    let Some(root) = shared_data() else { return };
    for band in ["f606w", "f814w", "f850lp"] {
        let name = format!(
            "images/fits/candels/hlsp_candels_hst_acs_gn-tot-30mas_{band}_v1.0_drz_189.492060_62.206150_100.0pix-x-100.0pix_astrocut.jpg"
        );
        let prepared = prepare(&read(&root, &name), &PrepareOptions::default())
            .unwrap_or_else(|error| panic!("{band}: {error}"));
        assert_eq!(
            (prepared.source_width_px, prepared.source_height_px),
            (100, 100),
            "{band}"
        );
        assert_eq!(prepared.source_channels, 1, "{band}");
    }
}

#[test]
fn press_pngs_prepare() {
    let Some(root) = shared_data() else { return };
    let mut names: Vec<_> = std::fs::read_dir(root.join("images/press"))
        .unwrap()
        .filter_map(|entry| {
            entry
                .ok()
                .map(|entry| entry.file_name().to_string_lossy().to_string())
        })
        .filter(|name| name.ends_with(".png"))
        .collect();
    names.sort();
    assert!(names.len() >= 5);

    for name in names.iter().take(6) {
        let prepared = prepare(
            &read(&root, &format!("images/press/{name}")),
            &PrepareOptions::default(),
        )
        .unwrap_or_else(|error| panic!("{name}: {error}"));
        assert_eq!(prepared.source_format, SourceFormat::Png, "{name}");
        assert!(
            prepared.source_channels >= 3,
            "{name}: {} channels",
            prepared.source_channels
        );
        assert_eq!(
            decode_square(&prepared.jpeg).dimensions(),
            (512, 512),
            "{name}"
        );
    }
}
