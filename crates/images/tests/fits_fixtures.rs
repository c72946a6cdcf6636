//! FITS behaviour on generated fixtures: scaling, blanks, tile compression and damage.
//! The cases taken from public bug reports are in the workspace's `it` suite, under
//! `tests/it/user_reports/fits.rs`.

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
