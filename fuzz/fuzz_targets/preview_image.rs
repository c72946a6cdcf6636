//! Preview images and FITS files through the whole preparation (sniff, integrity check,
//! decode, stretch, resize, pad, encode): any bytes give a square JPEG of the asked
//! size or an error.
#![no_main]

use libfuzzer_sys::fuzz_target;
use paperclip_images::{PrepareOptions, prepare};

fuzz_target!(|bytes: &[u8]| {
    let options = PrepareOptions {
        size_px: 32,
        max_source_pixels: 1 << 22,
        ..PrepareOptions::default()
    };

    if let Ok(image) = prepare(bytes, &options) {
        assert_eq!(image.size_px, 32);
        assert!(
            image.jpeg.starts_with(&[0xFF, 0xD8]),
            "output is not a JPEG"
        );
        let pixels = u64::from(image.source_width_px) * u64::from(image.source_height_px);
        assert!(
            pixels <= options.max_source_pixels,
            "{pixels} source pixels"
        );
    }
});
