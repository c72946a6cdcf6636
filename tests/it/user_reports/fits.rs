//! FITS scaling, tile compression, blank pixels and extensions, on generated files read
//! by the image crate's FITS reader, and a compressed file run through the pipeline.

use paperclip_archive::ServeOptions;
use paperclip_images::fits::write::{
    CompressedImage, CompressedPixels, Compression, compressed_image_hdu, empty_primary, image_hdu,
    uint16_image,
};
use paperclip_images::fits::{self, FitsValue, Quantize};
use paperclip_images::{PrepareOptions, prepare};

use super::mast::{TestArchive, pipeline, query_column};
use crate::support::run_config;

const LIMIT: u64 = fits::DEFAULT_MAX_PIXELS;

fn read(bytes: &[u8]) -> fits::FitsImage {
    fits::read_image(bytes, LIMIT).unwrap_or_else(|error| panic!("read failed: {error}"))
}

fn float_image(width: usize, height: usize) -> Vec<f64> {
    (0..width * height)
        .map(|index| 10.0 + (index as f64 * 0.37).sin() * 5.0)
        .collect()
}

/// Builds an empty primary HDU followed by `values` as a quantised float image, compressed
/// in square tiles of `tile` pixels with quantisation step 0.01.
fn compressed_float_file(
    values: &[f64],
    width: usize,
    height: usize,
    tile: usize,
    compression: Compression,
    extra: &[(&str, FitsValue)],
) -> Vec<u8> {
    let image = CompressedImage {
        width_px: width,
        height_px: height,
        tile_width_px: tile,
        tile_height_px: tile,
        compression,
        pixels: CompressedPixels::Floats {
            zbitpix: -32,
            values,
            scale: 0.01,
            method: Quantize::SubtractiveDither1,
            zdither0: 5,
        },
    };
    let mut bytes = empty_primary(&[]);
    bytes.extend(compressed_image_hdu(&image, extra));
    bytes
}

fn assert_close(expected: &[f64], actual: &[f32], tolerance: f64) {
    assert_eq!(expected.len(), actual.len());
    for (index, (expected, actual)) in expected.iter().zip(actual).enumerate() {
        if expected.is_nan() {
            assert!(actual.is_nan(), "pixel {index}: expected NaN, got {actual}");
        } else {
            assert!(
                (expected - f64::from(*actual)).abs() <= tolerance,
                "pixel {index}: {expected} vs {actual}"
            );
        }
    }
}

// https://github.com/astropy/astropy/issues/4974
#[test]
fn uint16_to_float_round_trip_keeps_values() {
    let bytes = uint16_image(2, 2, &[0, 1, 65534, 65535], &[]);
    let image = read(&bytes);
    assert_eq!(image.pixels, vec![0.0, 1.0, 65534.0, 65535.0]);

    // Writing the physical values as floats (no BZERO/BSCALE) and reading again keeps them.
    let float_data: Vec<u8> = image
        .pixels
        .iter()
        .flat_map(|value| value.to_be_bytes())
        .collect();
    let float_file = image_hdu(true, -32, &[2, 2], &float_data, &[]);
    let again = read(&float_file);
    assert_eq!(again.pixels, vec![0.0, 1.0, 65534.0, 65535.0]);
    let header = &fits::read_headers(&float_file).unwrap()[0];
    assert!(header.get_f64("BZERO").is_none());
    assert!(header.get_f64("BSCALE").is_none());
}

// https://github.com/astrogo/fitsio/issues/35
#[test]
fn bzero_maps_raw_minimum_to_zero() {
    let bytes = uint16_image(2, 2, &[0, 1, 65534, 65535], &[]);

    // FITS stores raw = value - 32768, so physical 0 is raw -32768 (0x8000).
    let header_bytes = 2880;
    assert_eq!(&bytes[header_bytes..header_bytes + 2], &[0x80, 0x00]);
    assert_eq!(&bytes[header_bytes + 6..header_bytes + 8], &[0x7f, 0xff]);
    assert_eq!(
        fits::read_headers(&bytes).unwrap()[0].get_f64("BZERO"),
        Some(32768.0)
    );

    let image = read(&bytes);
    assert_eq!(image.pixels, vec![0.0, 1.0, 65534.0, 65535.0]);
    assert_eq!(image.masked_pixels, 0);
}

// https://github.com/simonrw/rust-fitsio/issues/193
#[test]
fn tiny_big_endian_floats_bit_exact() {
    let values: Vec<f32> = vec![
        1.0e-16,
        -3.25e-16,
        7.0e-17,
        f32::MIN_POSITIVE,
        1.4e-45,
        -0.0,
    ];
    let data: Vec<u8> = values
        .iter()
        .flat_map(|value| value.to_be_bytes())
        .collect();
    let image = read(&image_hdu(true, -32, &[3, 2], &data, &[]));

    for (expected, actual) in values.iter().zip(&image.pixels) {
        assert_eq!(
            expected.to_bits(),
            actual.to_bits(),
            "{expected:e} read as {actual:e}"
        );
    }
}

// https://github.com/astropy/astropy/issues/11212
#[test]
fn rice_single_nan_stays_single() {
    let mut values = float_image(6, 6);
    values[6 + 1] = f64::NAN;
    let image = read(&compressed_float_file(
        &values,
        6,
        6,
        3,
        Compression::Rice,
        &[],
    ));

    assert_eq!(image.masked_pixels, 1);
    assert!(image.pixels[7].is_nan());
    assert_close(&values, &image.pixels, 0.0051);
}

// https://github.com/nom-tam-fits/nom-tam-fits/issues/884
#[test]
fn zblank_restores_nan_positions() {
    let mut values = float_image(20, 12);
    let nan_positions = [0, 13, 77, 150, 239];
    for position in nan_positions {
        values[position] = f64::NAN;
    }

    for compression in [Compression::Rice, Compression::Gzip] {
        let bytes = compressed_float_file(&values, 20, 12, 8, compression, &[]);
        let header = &fits::read_headers(&bytes).unwrap()[1];
        assert_eq!(header.get_i64("ZBLANK"), Some(-2_147_483_648));

        let image = read(&bytes);
        let restored: Vec<usize> = (0..image.pixels.len())
            .filter(|index| image.pixels[*index].is_nan())
            .collect();
        assert_eq!(restored, nan_positions, "{compression:?}");
        assert_close(&values, &image.pixels, 0.0051);
    }
}

// https://github.com/PDLPorters/pdl/issues/288
#[test]
fn rice_integer_blank_masked_like_uncompressed() {
    let (width, height) = (16usize, 8usize);
    let mut raw: Vec<i64> = (0..width * height)
        .map(|index| (index as i64 * 13) % 500 - 100)
        .collect();
    for y in 2..5 {
        for x in 4..9 {
            raw[y * width + x] = -32768;
        }
    }

    let plain_data: Vec<u8> = raw
        .iter()
        .flat_map(|value| (*value as i16).to_be_bytes())
        .collect();
    let plain = read(&image_hdu(
        true,
        16,
        &[width, height],
        &plain_data,
        &[("BLANK", FitsValue::Int(-32768))],
    ));

    let image = CompressedImage {
        width_px: width,
        height_px: height,
        tile_width_px: width,
        tile_height_px: 1,
        compression: Compression::Rice,
        pixels: CompressedPixels::Integers {
            zbitpix: 16,
            values: &raw,
            blank: Some(-32768),
        },
    };
    let mut bytes = empty_primary(&[]);
    bytes.extend(compressed_image_hdu(&image, &[]));
    let compressed = read(&bytes);

    assert_eq!(compressed.masked_pixels, 15);
    assert_eq!(compressed.masked_pixels, plain.masked_pixels);
    for (index, (expected, actual)) in plain.pixels.iter().zip(&compressed.pixels).enumerate() {
        assert_eq!(expected.to_bits(), actual.to_bits(), "pixel {index}");
    }
}

/// Card values that must not be applied on top of ZSCALE/ZZERO, because they sit in the
/// binary table header of a compressed image.
fn stray_scaling_cards() -> [(&'static str, FitsValue); 2] {
    [
        ("BSCALE", FitsValue::Float(2.0)),
        ("BZERO", FitsValue::Float(1000.0)),
    ]
}

// https://github.com/ericmandel/js9/issues/72
#[test]
fn empty_primary_then_compressed_extension() {
    let values = float_image(10, 10);
    let bytes = compressed_float_file(
        &values,
        10,
        10,
        5,
        Compression::Rice,
        &stray_scaling_cards(),
    );

    let image = read(&bytes);
    assert_eq!(image.hdu, 1);
    assert_eq!(image.bitpix, -32);
    assert_close(&values, &image.pixels, 0.0051);

    let prepared = prepare(
        &bytes,
        &PrepareOptions {
            min_source_px: 1,
            ..PrepareOptions::default()
        },
    )
    .unwrap();
    assert_eq!(prepared.fits_hdu, Some(1));
}

// https://github.com/ericmandel/js9/issues/72
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn compressed_extension_file_becomes_sample() {
    let dir = tempfile::tempdir().unwrap();
    let data_dir = dir.path().join("data");
    let bytes = compressed_float_file(
        &float_image(64, 48),
        64,
        48,
        16,
        Compression::Rice,
        &stray_scaling_cards(),
    );
    // A proposal without previews, so its science FITS image is used.
    let mut archive = TestArchive::new();
    archive.plain_proposal(70301);
    archive.observation(703010, 70301);
    archive.product(703010, "tst703010_drz.fits", "SCIENCE", "DRZ", Some(bytes));
    let server = archive
        .serve(&dir.path().join("snapshot"), ServeOptions::default())
        .await;

    let report = run_config(&pipeline(), &data_dir, server.base_url()).await;

    assert_eq!(report.counts["samples"], 1, "{:?}", report.skips);
    let facts = query_column(
        &data_dir,
        r#"SELECT concat(image_rule, ' ', source_format, ' ', source_width_px, 'x', source_height_px, ' ', stretch)
           FROM "hst-paperclip".latest.samples"#,
    )
    .await;
    assert_eq!(facts, [Some("fits_fallback fits 64x48 asinh".to_string())]);
}

// https://github.com/astropy/astropy/issues/9955
#[test]
fn cropped_compressed_image_matches_crop() {
    let (width, height) = (24usize, 18usize);
    let values = float_image(width, height);
    let first = read(&compressed_float_file(
        &values,
        width,
        height,
        8,
        Compression::Rice,
        &[],
    ));

    let (x0, y0, crop_width, crop_height) = (5usize, 3usize, 11usize, 9usize);
    let crop_of = |pixels: &dyn Fn(usize) -> f64| -> Vec<f64> {
        (y0..y0 + crop_height)
            .flat_map(|y| (x0..x0 + crop_width).map(move |x| y * width + x))
            .map(pixels)
            .collect()
    };
    let crop = crop_of(&|index| f64::from(first.pixels[index]));
    let original_crop = crop_of(&|index| values[index]);

    let second = read(&compressed_float_file(
        &crop,
        crop_width,
        crop_height,
        4,
        Compression::Rice,
        &[],
    ));
    assert_eq!(
        (second.width_px, second.height_px),
        (crop_width as u32, crop_height as u32)
    );
    // Two quantisation passes of step 0.01 each add at most half a step.
    assert_close(&original_crop, &second.pixels, 0.0101);
}
