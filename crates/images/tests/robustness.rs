//! `prepare` and the FITS reader on arbitrary and mutated bytes: no panics, and every
//! failure carries a known reason code.

use paperclip_images::fits::write::{
    CompressedImage, CompressedPixels, Compression, compressed_image_hdu, empty_primary,
    uint16_image,
};
use paperclip_images::fits::{self, FitsValue, Quantize};
use paperclip_images::{PrepareOptions, prepare, synth};
use proptest::prelude::*;

const REASON_CODES: &[&str] = &[
    "invalid_options",
    "unsupported_format",
    "truncated",
    "corrupt",
    "unsupported_colour_space",
    "blank",
    "too_small",
    "aspect_ratio",
    "too_large",
    "unsupported_fits",
    "no_image_hdu",
    "resize_failed",
    "encode_failed",
];

fn options() -> PrepareOptions {
    PrepareOptions {
        size_px: 32,
        min_source_px: 1,
        max_source_pixels: 4_000_000,
        ..PrepareOptions::default()
    }
}

fn seeds() -> Vec<Vec<u8>> {
    let mut png = Vec::new();
    synth::sky_image(1, 24, 16, true)
        .write_to(&mut std::io::Cursor::new(&mut png), image::ImageFormat::Png)
        .unwrap();
    vec![
        synth::sky_jpeg(1, 24, 16, true, 80),
        synth::sky_jpeg(2, 16, 24, false, 60),
        png,
        synth::sky_fits(3, 12, 10, &[("PROPOSID", FitsValue::Int(1))]),
        std::fs::read(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/fixtures/progressive.jpg"
        ))
        .unwrap(),
    ]
}

fn check(bytes: &[u8]) {
    if let Err(error) = prepare(bytes, &options()) {
        assert!(
            REASON_CODES.contains(&error.reason_code()),
            "unknown code for {error}"
        );
    }
    let _ = fits::read_headers(bytes);
    let _ = fits::read_image(bytes, 4_000_000);
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..4096)) {
        check(&bytes);
    }

    #[test]
    fn mutated_files_never_panic(
        seed_index in 0usize..5,
        mutations in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..12),
        cut in any::<prop::sample::Index>(),
        do_cut in any::<bool>(),
    ) {
        let mut bytes = seeds()[seed_index].clone();
        for (position, value) in mutations {
            let index = position.index(bytes.len());
            bytes[index] = value;
        }
        if do_cut {
            bytes.truncate(cut.index(bytes.len() + 1));
        }
        check(&bytes);
    }

    #[test]
    fn fits_header_values_never_panic(naxis1 in any::<i64>(), naxis2 in any::<i64>(), bitpix in any::<i64>()) {
        let mut bytes = uint16_image(4, 4, &[7; 16], &[]);
        let text = String::from_utf8_lossy(&bytes[..2880]).to_string();
        for (keyword, value) in [("NAXIS1  =", naxis1), ("NAXIS2  =", naxis2), ("BITPIX  =", bitpix)] {
            let card = text.find(keyword).unwrap();
            let replacement = format!("{keyword} {value:>20}");
            bytes[card..card + replacement.len()].copy_from_slice(replacement.as_bytes());
        }
        check(&bytes);
    }
}

fn compressed_fixture() -> Vec<u8> {
    let values: Vec<f64> = (0..12 * 10).map(|index| f64::from(index) * 0.5).collect();
    let image = CompressedImage {
        width_px: 12,
        height_px: 10,
        tile_width_px: 5,
        tile_height_px: 4,
        compression: Compression::Rice,
        pixels: CompressedPixels::Floats {
            zbitpix: -32,
            values: &values,
            scale: 0.1,
            method: Quantize::SubtractiveDither2,
            zdither0: 3,
        },
    };
    let mut bytes = empty_primary(&[]);
    bytes.extend(compressed_image_hdu(&image, &[]));
    bytes
}

/// Overwrites the value of an existing card, keeping the card 80 bytes long.
fn set_card(bytes: &mut [u8], keyword: &str, value: &str) {
    let text = String::from_utf8_lossy(bytes).to_string();
    let key = format!("{keyword:<8}= ");
    if let Some(card) = text.find(&key) {
        let replacement = format!("{:<80}", format!("{key}{value}"));
        bytes[card..card + 80].copy_from_slice(&replacement.as_bytes()[..80]);
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn compressed_header_values_never_panic(
        keyword in prop::sample::select(vec!["ZTILE1", "ZTILE2", "ZNAXIS1", "ZNAXIS2", "NAXIS1", "NAXIS2", "PCOUNT", "GCOUNT", "ZVAL1", "ZVAL2", "ZBITPIX", "ZNAXIS"]),
        value in prop_oneof![any::<i64>(), -5i64..40],
        form in prop::sample::select(vec!["'1PB(10)'", "'0PB'", "'1QB(3)'", "'1D'", "'0D'", "'2PJ'", "'PB'", "'X'"]),
        mutate_form in any::<bool>(),
    ) {
        let mut bytes = compressed_fixture();
        set_card(&mut bytes, keyword, &format!("{value:>20}"));
        if mutate_form {
            set_card(&mut bytes, "TFORM1", form);
        }
        check(&bytes);
    }
}

#[test]
fn compressed_fixture_reads() {
    let image = fits::read_image(&compressed_fixture(), 1_000_000).unwrap();
    assert_eq!((image.width_px, image.height_px), (12, 10));
    assert!(
        (image.pixels[7] - 3.5).abs() <= 0.051,
        "{}",
        image.pixels[7]
    );
}

#[test]
fn same_input_same_jpeg() {
    for bytes in seeds() {
        let options = PrepareOptions {
            min_source_px: 1,
            ..PrepareOptions::default()
        };
        let first = prepare(&bytes, &options).unwrap();
        let second = prepare(&bytes, &options).unwrap();
        assert_eq!(first, second);
    }
}
