//! FITS behaviour on generated fixtures: scaling, blanks, tile compression and damage.

use paperclip_images::fits::write::{
    CompressedImage, CompressedPixels, Compression, compressed_image_hdu, empty_primary, image_hdu,
    uint16_image,
};
use paperclip_images::fits::{self, FitsError, FitsValue, Quantize};
use paperclip_images::{PrepareOptions, prepare};

const LIMIT: u64 = fits::DEFAULT_MAX_PIXELS;

fn read(bytes: &[u8]) -> fits::FitsImage {
    fits::read_image(bytes, LIMIT).unwrap_or_else(|error| panic!("read failed: {error}"))
}

// Source: https://github.com/astropy/astropy/issues/4974 and astrogo/fitsio#35.
#[test]
fn uint16_bzero_round_trip() {
    let values = [0u16, 1, 65534, 65535];
    let bytes = uint16_image(2, 2, &values, &[]);

    // FITS stores raw = value - 32768, so physical 0 is raw -32768 (0x8000).
    let header_bytes = 2880;
    assert_eq!(&bytes[header_bytes..header_bytes + 2], &[0x80, 0x00]);
    assert_eq!(&bytes[header_bytes + 6..header_bytes + 8], &[0x7f, 0xff]);

    let image = read(&bytes);
    assert_eq!(image.pixels, vec![0.0, 1.0, 65534.0, 65535.0]);
    assert_eq!(image.masked_pixels, 0);

    // Writing the physical values as floats (no BZERO/BSCALE) and reading again keeps them.
    let float_data: Vec<u8> = image
        .pixels
        .iter()
        .flat_map(|value| value.to_be_bytes())
        .collect();
    let float_file = image_hdu(true, -32, &[2, 2], &float_data, &[]);
    let again = read(&float_file);
    assert_eq!(again.pixels, vec![0.0, 1.0, 65534.0, 65535.0]);
    assert!(
        fits::read_headers(&float_file).unwrap()[0]
            .get_f64("BZERO")
            .is_none()
    );
}

// Source: https://github.com/simonrw/rust-fitsio/issues/193
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

#[test]
fn integer_blank_and_bscale_applied() {
    let raw: [i16; 4] = [-32768, 10, 20, -32768];
    let data: Vec<u8> = raw.iter().flat_map(|value| value.to_be_bytes()).collect();
    let cards = [
        ("BSCALE", FitsValue::Float(0.5)),
        ("BZERO", FitsValue::Float(100.0)),
        ("BLANK", FitsValue::Int(-32768)),
    ];
    let image = read(&image_hdu(true, 16, &[2, 2], &data, &cards));

    assert!(image.pixels[0].is_nan());
    assert_eq!(image.pixels[1], 105.0);
    assert_eq!(image.pixels[2], 110.0);
    assert_eq!(image.masked_pixels, 2);
}

#[test]
fn every_bitpix_reads() {
    let cases: [(i64, Vec<u8>, Vec<f32>); 5] = [
        (8, vec![0, 255], vec![0.0, 255.0]),
        (
            32,
            [-5i32, 70000]
                .iter()
                .flat_map(|v| v.to_be_bytes())
                .collect(),
            vec![-5.0, 70000.0],
        ),
        (
            64,
            [-7i64, 1 << 40]
                .iter()
                .flat_map(|v| v.to_be_bytes())
                .collect(),
            vec![-7.0, (1u64 << 40) as f32],
        ),
        (
            -32,
            [1.5f32, -2.25]
                .iter()
                .flat_map(|v| v.to_be_bytes())
                .collect(),
            vec![1.5, -2.25],
        ),
        (
            -64,
            [1.0e-300f64, 3.5]
                .iter()
                .flat_map(|v| v.to_be_bytes())
                .collect(),
            vec![0.0, 3.5],
        ),
    ];
    for (bitpix, data, expected) in cases {
        let image = read(&image_hdu(true, bitpix, &[2, 1], &data, &[]));
        assert_eq!(image.bitpix, bitpix);
        assert_eq!(image.pixels, expected, "BITPIX {bitpix}");
    }
}

#[test]
fn cube_reads_first_plane() {
    let data: Vec<u8> = (0i16..24).flat_map(|value| value.to_be_bytes()).collect();
    let image = read(&image_hdu(true, 16, &[3, 4, 2], &data, &[]));
    assert_eq!((image.width_px, image.height_px), (3, 4));
    assert_eq!(
        image.pixels,
        (0..12).map(|value| value as f32).collect::<Vec<_>>()
    );
}

fn float_image(width: usize, height: usize) -> Vec<f64> {
    (0..width * height)
        .map(|index| 10.0 + (index as f64 * 0.37).sin() * 5.0)
        .collect()
}

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

// Source: https://github.com/astropy/astropy/issues/11212
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

// Source: https://github.com/nom-tam-fits/nom-tam-fits/issues/884
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

// Source: https://github.com/PDLPorters/pdl/issues/288
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

// Source: https://github.com/ericmandel/js9/issues/72
#[test]
fn empty_primary_then_compressed_extension() {
    let values = float_image(10, 10);
    // BSCALE/BZERO in the table header must not be applied on top of ZSCALE/ZZERO.
    let stray_cards = [
        ("BSCALE", FitsValue::Float(2.0)),
        ("BZERO", FitsValue::Float(1000.0)),
    ];
    let bytes = compressed_float_file(&values, 10, 10, 5, Compression::Rice, &stray_cards);

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

// Source: https://github.com/astropy/astropy/issues/9955
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

#[test]
fn gzip_integer_tiles_round_trip() {
    let raw: Vec<i64> = (0..30 * 7)
        .map(|index| (index as i64 * 7919) % 60000 - 30000)
        .collect();
    let image = CompressedImage {
        width_px: 30,
        height_px: 7,
        tile_width_px: 11,
        tile_height_px: 3,
        compression: Compression::Gzip,
        pixels: CompressedPixels::Integers {
            zbitpix: 32,
            values: &raw,
            blank: None,
        },
    };
    let mut bytes = empty_primary(&[]);
    bytes.extend(compressed_image_hdu(&image, &[]));

    let decoded = read(&bytes);
    assert_eq!(
        decoded.pixels,
        raw.iter().map(|value| *value as f32).collect::<Vec<_>>()
    );
}

#[test]
fn headers_give_typed_values() {
    let cards = [
        ("PROPOSID", FitsValue::Int(13012)),
        ("TARGNAME", FitsValue::Str("URANUS".into())),
        ("RA_TARG", FitsValue::Float(12.5)),
        ("DATE-OBS", FitsValue::Str("2012-09-27".into())),
    ];
    let headers = fits::read_headers(&uint16_image(2, 2, &[1, 2, 3, 4], &cards)).unwrap();
    let primary = &headers[0];
    assert_eq!(primary.get_i64("PROPOSID"), Some(13012));
    assert_eq!(primary.get_str("TARGNAME"), Some("URANUS"));
    assert_eq!(primary.get_f64("RA_TARG"), Some(12.5));
    assert_eq!(primary.get_f64("PROPOSID"), Some(13012.0));
    assert_eq!(primary.get_str("DATE-OBS"), Some("2012-09-27"));
    assert_eq!(primary.get_i64("TARGNAME"), None);
}

#[test]
fn truncated_data_is_reported() {
    let bytes = uint16_image(100, 100, &vec![7u16; 10_000], &[]);
    let cut = &bytes[..bytes.len() - 10_000];
    let error = fits::read_image(cut, LIMIT).unwrap_err();
    assert!(
        matches!(error, FitsError::Truncated { hdu: Some(0), .. }),
        "{error}"
    );
}

#[test]
fn gcount_zero_is_rejected_without_panic() {
    let bytes = image_hdu(
        true,
        16,
        &[4, 4],
        &[0u8; 32],
        &[("GCOUNT", FitsValue::Int(0))],
    );
    let error = fits::read_image(&bytes, LIMIT).unwrap_err();
    assert!(matches!(error, FitsError::InvalidKeyword { .. }), "{error}");
}

#[test]
fn garbage_after_hdu_is_reported() {
    let mut bytes = uint16_image(4, 4, &[1u16; 16], &[]);
    bytes.extend(std::iter::repeat_n(0xEFu8, 3000));
    let error = fits::read_image(&bytes, LIMIT).unwrap_err();
    assert!(
        matches!(
            error,
            FitsError::InvalidHeader {
                offset_bytes: 5760,
                ..
            }
        ),
        "{error}"
    );
}

#[test]
fn hostile_dimensions_rejected_before_allocation() {
    // A compressed header may declare a huge image with a tiny table.
    let values = float_image(4, 4);
    let mut bytes = compressed_float_file(&values, 4, 4, 4, Compression::Rice, &[]);
    let text = String::from_utf8_lossy(&bytes).to_string();
    let card = text.find("ZNAXIS1 =").unwrap();
    let replacement = format!("{:<80}", "ZNAXIS1 =             40000000");
    bytes[card..card + 80].copy_from_slice(replacement.as_bytes());
    let card = text.find("ZNAXIS2 =").unwrap();
    let replacement = format!("{:<80}", "ZNAXIS2 =             40000000");
    bytes[card..card + 80].copy_from_slice(replacement.as_bytes());

    let error = fits::read_image(&bytes, LIMIT).unwrap_err();
    assert!(matches!(error, FitsError::TooLarge { .. }), "{error}");
}

#[test]
fn table_only_file_has_no_image() {
    let mut bytes = empty_primary(&[]);
    let mut header = String::new();
    for (keyword, value) in [
        ("XTENSION", FitsValue::Str("BINTABLE".into())),
        ("BITPIX", FitsValue::Int(8)),
        ("NAXIS", FitsValue::Int(2)),
        ("NAXIS1", FitsValue::Int(4)),
        ("NAXIS2", FitsValue::Int(2)),
        ("PCOUNT", FitsValue::Int(0)),
        ("GCOUNT", FitsValue::Int(1)),
        ("TFIELDS", FitsValue::Int(1)),
        ("TFORM1", FitsValue::Str("1J".into())),
    ] {
        header.push_str(&format!(
            "{:<80}",
            format!(
                "{keyword:<8}= {}",
                match value {
                    FitsValue::Str(text) => format!("'{text}'"),
                    FitsValue::Int(number) => number.to_string(),
                    _ => unreachable!(),
                }
            )
        ));
    }
    header.push_str(&format!("{:<80}", "END"));
    let mut table = header.into_bytes();
    table.resize(2880, b' ');
    table.extend(vec![0u8; 2880]);
    bytes.extend(table);

    let error = fits::read_image(&bytes, LIMIT).unwrap_err();
    assert!(
        matches!(error, FitsError::NoImageHdu { hdu_count: 2 }),
        "{error}"
    );
    let prepared = prepare(&bytes, &PrepareOptions::default()).unwrap_err();
    assert_eq!(prepared.reason_code(), "no_image_hdu");
}

#[test]
fn gzipped_fits_reads() {
    use std::io::Write;
    let plain = uint16_image(3, 3, &[0, 10, 20, 30, 40, 50, 60, 70, 80], &[]);
    let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    encoder.write_all(&plain).unwrap();
    let gzipped = encoder.finish().unwrap();

    let image = read(&gzipped);
    assert_eq!(image.pixels[8], 80.0);
    let error = fits::read_image(&gzipped[..gzipped.len() / 2], LIMIT).unwrap_err();
    assert!(matches!(error, FitsError::Gzip { .. }), "{error}");
}
