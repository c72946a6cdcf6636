//! Preview decoding, integrity checks, source rules and the output square.

use std::collections::BTreeMap;
use std::io::Cursor;

use image::{
    DynamicImage, GrayImage, ImageBuffer, ImageFormat, Luma, Rgb, RgbImage, Rgba, RgbaImage,
};
use paperclip_images::decode::{self, Raster, SourceFormat};
use paperclip_images::{ImageError, PrepareOptions, Stretch, geometry, prepare, synth};

const FIXTURES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures");

fn png_bytes(image: &DynamicImage) -> Vec<u8> {
    let mut bytes = Vec::new();
    image
        .write_to(&mut Cursor::new(&mut bytes), ImageFormat::Png)
        .unwrap();
    bytes
}

fn decode_png(bytes: &[u8]) -> decode::DecodedPreview {
    decode::decode_preview(bytes, SourceFormat::Png, 1 << 30).unwrap()
}

fn small_options() -> PrepareOptions {
    PrepareOptions {
        size_px: 64,
        min_source_px: 1,
        ..PrepareOptions::default()
    }
}

fn fixture(name: &str) -> Vec<u8> {
    std::fs::read(format!("{FIXTURES}/{name}")).unwrap()
}

// Source: https://github.com/python-pillow/Pillow/issues/2717
#[test]
fn truncated_progressive_jpeg_is_truncated() {
    let bytes = fixture("progressive.jpg");
    let info = decode::check_jpeg(&bytes).unwrap();
    assert!(info.progressive);
    assert!(prepare(&bytes, &small_options()).is_ok());

    for cut_bytes in [bytes.len() / 3, bytes.len() / 2, bytes.len() - 2] {
        let error = prepare(&bytes[..cut_bytes], &small_options()).unwrap_err();
        assert_eq!(
            error.reason_code(),
            "truncated",
            "cut at {cut_bytes}: {error}"
        );
    }
}

// Source: https://github.com/python-pillow/Pillow/issues/3185
#[test]
fn baseline_cut_mid_scan_is_truncated() {
    let bytes = synth::sky_jpeg(3, 200, 150, true, 90);
    let cut = &bytes[..bytes.len() * 2 / 3];
    let error = prepare(cut, &small_options()).unwrap_err();
    assert_eq!(error.reason_code(), "truncated");
    assert!(
        error.to_string().contains("without an EOI marker"),
        "{error}"
    );
}

// Source: https://github.com/rom1504/img2dataset/issues/224
#[test]
fn jpeg_missing_lower_half_is_flagged() {
    let bytes = synth::sky_jpeg(4, 256, 256, false, 90);
    let half = &bytes[..bytes.len() / 2];
    let error = prepare(half, &small_options()).unwrap_err();
    assert_eq!(error.reason_code(), "truncated");

    // The same half with an EOI marker appended passes a marker-only check, so the scan
    // check must notice that the Huffman data stops before the last MCU.
    let mut patched = half.to_vec();
    patched.extend([0xff, 0xd9]);
    match prepare(&patched, &small_options()) {
        Err(error) => {
            assert_eq!(error.reason_code(), "truncated", "{error}");
            assert!(error.to_string().contains("MCUs"), "{error}");
        }
        Ok(prepared) => panic!(
            "half JPEG with EOI accepted as {}x{}",
            prepared.source_width_px, prepared.source_height_px
        ),
    }
}

// Source: https://github.com/etemesi254/zune-image/issues/442
#[test]
fn ycck_and_cmyk_jpegs_are_rejected() {
    let cmyk = fixture("cmyk.jpg");
    let error = prepare(&cmyk, &small_options()).unwrap_err();
    assert_eq!(error.reason_code(), "unsupported_colour_space");
    assert!(error.to_string().contains("CMYK"), "{error}");

    let mut ycck = cmyk.clone();
    let adobe = ycck
        .windows(5)
        .position(|window| window == b"Adobe")
        .unwrap();
    ycck[adobe + 11] = 2;
    let info = decode::check_jpeg(&ycck).unwrap();
    assert_eq!((info.components, info.adobe_transform), (4, Some(2)));
    let error = prepare(&ycck, &small_options()).unwrap_err();
    assert_eq!(error.reason_code(), "unsupported_colour_space");
    assert!(error.to_string().contains("YCCK"), "{error}");
}

// Source: https://github.com/python-pillow/Pillow/issues/2574
#[test]
fn grey16_gradient_scaled_not_clamped() {
    let gradient: ImageBuffer<Luma<u16>, Vec<u16>> =
        ImageBuffer::from_fn(256, 4, |x, _| Luma([(x * 257) as u16]));
    let decoded = decode_png(&png_bytes(&DynamicImage::ImageLuma16(gradient)));
    assert_eq!(decoded.source_channels, 1);

    let Raster::Grey(grey) = decoded.raster else {
        panic!("expected a grey raster")
    };
    let row: Vec<u8> = (0..256).map(|x| grey.get_pixel(x, 0).0[0]).collect();
    assert_eq!(row, (0..=255).collect::<Vec<u8>>());
}

// Source: https://github.com/ruffle-rs/ruffle/pull/6726
#[test]
fn rgb16_png_decodes_to_rgb8() {
    let samples = [[0u16, 32896, 65535], [65535, 0, 257 * 100]];
    let image: ImageBuffer<Rgb<u16>, Vec<u16>> =
        ImageBuffer::from_fn(2, 1, |x, _| Rgb(samples[x as usize]));
    let decoded = decode_png(&png_bytes(&DynamicImage::ImageRgb16(image)));
    assert_eq!(decoded.source_channels, 3);

    let Raster::Rgb(rgb) = decoded.raster else {
        panic!("expected an RGB raster")
    };
    assert_eq!(rgb.get_pixel(0, 0).0, [0, 128, 255]);
    assert_eq!(rgb.get_pixel(1, 0).0, [255, 0, 100]);
}

// Source: https://github.com/DaemonEngine/Urcheon/issues/61
#[test]
fn grey8_five_levels_stay_five() {
    let levels = [0u8, 64, 128, 192, 255];
    let grey = GrayImage::from_fn(50, 10, |x, _| Luma([levels[(x / 10) as usize]]));
    let decoded = decode_png(&png_bytes(&DynamicImage::ImageLuma8(grey)));

    // No resampling at size 50, so the square contains the exact levels plus white padding.
    let square = geometry::fit_on_white_square(&decoded.raster, 50).unwrap();
    let mut seen = std::collections::BTreeSet::new();
    for pixel in square.pixels() {
        let [red, green, blue] = pixel.0;
        assert!(
            red == green && green == blue,
            "pixel {:?} is not grey",
            pixel.0
        );
        seen.insert(red);
    }
    assert_eq!(seen.into_iter().collect::<Vec<_>>(), levels.to_vec());
}

#[test]
fn rgba_composited_on_white() {
    let image = RgbaImage::from_fn(2, 1, |x, _| {
        if x == 0 {
            Rgba([0, 0, 0, 0])
        } else {
            Rgba([0, 0, 200, 128])
        }
    });
    let decoded = decode_png(&png_bytes(&DynamicImage::ImageRgba8(image)));
    assert_eq!(decoded.source_channels, 4);

    let Raster::Rgb(rgb) = decoded.raster else {
        panic!("expected an RGB raster")
    };
    assert_eq!(rgb.get_pixel(0, 0).0, [255, 255, 255]);
    assert_eq!(rgb.get_pixel(1, 0).0, [127, 127, 227]);
}

fn png_chunk(kind: &[u8; 4], data: &[u8]) -> Vec<u8> {
    let mut crc = flate2::Crc::new();
    crc.update(kind);
    crc.update(data);
    let mut chunk = (data.len() as u32).to_be_bytes().to_vec();
    chunk.extend(kind);
    chunk.extend(data);
    chunk.extend(crc.sum().to_be_bytes());
    chunk
}

/// Builds a 3x1 palette PNG (red, green, blue) by hand, since `image` writes no palettes.
fn palette_png() -> Vec<u8> {
    use std::io::Write;
    let mut ihdr = Vec::new();
    ihdr.extend(3u32.to_be_bytes());
    ihdr.extend(1u32.to_be_bytes());
    ihdr.extend([8, 3, 0, 0, 0]);

    let mut zlib = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::default());
    zlib.write_all(&[0, 0, 1, 2]).unwrap();
    let idat = zlib.finish().unwrap();

    let mut bytes = vec![0x89, b'P', b'N', b'G', 0x0d, 0x0a, 0x1a, 0x0a];
    bytes.extend(png_chunk(b"IHDR", &ihdr));
    bytes.extend(png_chunk(b"PLTE", &[255, 0, 0, 0, 255, 0, 0, 0, 255]));
    bytes.extend(png_chunk(b"IDAT", &idat));
    bytes.extend(png_chunk(b"IEND", &[]));
    bytes
}

#[test]
fn palette_png_expands_to_rgb() {
    let decoded = decode_png(&palette_png());
    let Raster::Rgb(rgb) = decoded.raster else {
        panic!("expected an RGB raster")
    };
    assert_eq!(rgb.get_pixel(0, 0).0, [255, 0, 0]);
    assert_eq!(rgb.get_pixel(1, 0).0, [0, 255, 0]);
    assert_eq!(rgb.get_pixel(2, 0).0, [0, 0, 255]);
}

// Source: https://github.com/rom1504/img2dataset/issues/440
#[test]
fn size_rules_label_each_rejection() {
    let options = PrepareOptions {
        min_source_px: 200,
        max_aspect_ratio: Some(3.0),
        size_px: 64,
        ..PrepareOptions::default()
    };
    let inputs = [(150, 900), (100, 100), (300, 250), (200, 900), (640, 480)];
    let mut counts: BTreeMap<&str, usize> = BTreeMap::new();
    let mut accepted = Vec::new();

    for (width, height) in inputs {
        let bytes = synth::sky_jpeg(9, width, height, true, 85);
        match prepare(&bytes, &options) {
            Ok(prepared) => accepted.push((prepared.source_width_px, prepared.source_height_px)),
            Err(error) => *counts.entry(error.reason_code()).or_default() += 1,
        }
    }

    assert_eq!(counts.get("too_small"), Some(&2), "{counts:?}");
    assert_eq!(counts.get("aspect_ratio"), Some(&1), "{counts:?}");
    assert_eq!(accepted, vec![(300, 250), (640, 480)]);

    let error = prepare(&synth::sky_jpeg(9, 150, 900, true, 85), &options).unwrap_err();
    assert!(
        matches!(
            error,
            ImageError::TooSmall {
                width_px: 150,
                height_px: 900,
                min_source_px: 200
            }
        ),
        "{error}"
    );
}

#[test]
fn blank_images_are_rejected() {
    let flat = RgbImage::from_pixel(40, 30, Rgb([90, 90, 90]));
    let error = prepare(&png_bytes(&DynamicImage::ImageRgb8(flat)), &small_options()).unwrap_err();
    assert_eq!(error.reason_code(), "blank");

    let flat_fits = paperclip_images::fits::write::uint16_image(20, 20, &[500u16; 400], &[]);
    let error = prepare(&flat_fits, &small_options()).unwrap_err();
    assert_eq!(error.reason_code(), "blank");
}

#[test]
fn hostile_png_header_rejected_before_decoding() {
    let mut bytes = png_bytes(&DynamicImage::ImageLuma8(GrayImage::from_pixel(
        4,
        4,
        Luma([1]),
    )));
    bytes[16..20].copy_from_slice(&100_000u32.to_be_bytes());
    bytes[20..24].copy_from_slice(&100_000u32.to_be_bytes());
    let error = prepare(&bytes, &small_options()).unwrap_err();
    assert_eq!(error.reason_code(), "too_large");
}

#[test]
fn corrupt_and_unknown_bytes_have_reasons() {
    let error = prepare(b"GIF89a not supported", &small_options()).unwrap_err();
    assert_eq!(error.reason_code(), "unsupported_format");
    assert!(error.to_string().contains("474946"), "{error}");

    let mut jpeg = synth::sky_jpeg(5, 64, 64, false, 90);
    let scan = jpeg
        .windows(2)
        .position(|window| window == [0xff, 0xda])
        .unwrap();
    jpeg[scan + 4..scan + 12].copy_from_slice(&[0xff, 0xc4, 0x00, 0x01, 0, 0, 0, 0]);
    let error = prepare(&jpeg, &small_options()).unwrap_err();
    assert_eq!(error.reason_code(), "corrupt", "{error}");

    let png = png_bytes(&synth::sky_image(5, 64, 64, true));
    let error = prepare(&png[..png.len() / 2], &small_options()).unwrap_err();
    assert!(
        ["truncated", "corrupt"].contains(&error.reason_code()),
        "{error}"
    );
}

#[test]
fn prepare_is_deterministic_and_square() {
    let jpeg = synth::sky_jpeg(11, 300, 200, true, 90);
    let options = PrepareOptions::default();
    let first = prepare(&jpeg, &options).unwrap();
    let second = prepare(&jpeg, &options).unwrap();
    assert_eq!(first.jpeg, second.jpeg);
    assert_eq!(first.size_px, 512);
    assert_eq!(first.source_format.as_str(), "jpeg");
    assert_eq!((first.fits_hdu, first.stretch), (None, None));

    let square = image::load_from_memory(&first.jpeg).unwrap().to_rgb8();
    assert_eq!(square.dimensions(), (512, 512));
    // 200 * 512 / 300 rounds to 341 rows: (512 - 341) / 2 = 85 white rows on top.
    assert!(
        square
            .get_pixel(256, 80)
            .0
            .iter()
            .all(|channel| *channel > 245)
    );
    assert!(
        square
            .get_pixel(256, 500)
            .0
            .iter()
            .all(|channel| *channel > 245)
    );
}

#[test]
fn small_images_are_upscaled() {
    let png = png_bytes(&synth::sky_image(2, 40, 20, false));
    let prepared = prepare(
        &png,
        &PrepareOptions {
            min_source_px: 16,
            ..PrepareOptions::default()
        },
    )
    .unwrap();
    let square = image::load_from_memory(&prepared.jpeg).unwrap().to_rgb8();
    // 40x20 scales to 512x256, so rows 128..384 hold sky and row 100 is padding.
    assert!(
        square
            .get_pixel(10, 100)
            .0
            .iter()
            .all(|channel| *channel > 245)
    );
    assert!(
        square
            .get_pixel(10, 256)
            .0
            .iter()
            .any(|channel| *channel < 200)
    );
}

#[test]
fn fits_prepare_reports_stretch_and_masks() {
    let mut counts: Vec<u16> = (0..64 * 64)
        .map(|index| 1000 + (index % 97) as u16 * 10)
        .collect();
    counts[0] = 0;
    let blank_card = [("BLANK", paperclip_images::fits::FitsValue::Int(-32768))];
    let bytes = paperclip_images::fits::write::uint16_image(64, 64, &counts, &blank_card);

    for stretch in [Stretch::Asinh, Stretch::Zscale] {
        let prepared = prepare(
            &bytes,
            &PrepareOptions {
                stretch,
                ..small_options()
            },
        )
        .unwrap();
        assert_eq!(prepared.stretch, Some(stretch));
        assert_eq!(prepared.source_format, SourceFormat::Fits);
        assert_eq!(prepared.masked_pixels, 1);
        assert_eq!(prepared.source_channels, 1);
    }
}

#[test]
fn invalid_options_are_rejected() {
    let jpeg = synth::sky_jpeg(1, 32, 32, false, 90);
    for options in [
        PrepareOptions {
            size_px: 0,
            ..PrepareOptions::default()
        },
        PrepareOptions {
            jpeg_quality: 0,
            ..PrepareOptions::default()
        },
        PrepareOptions {
            max_aspect_ratio: Some(0.5),
            ..PrepareOptions::default()
        },
    ] {
        let error = prepare(&jpeg, &options).unwrap_err();
        assert_eq!(error.reason_code(), "invalid_options", "{options:?}");
    }
}
