//! FITS files: any bytes give headers or an error, and an image read from them has the
//! pixel count its header declares, within the pixel limit.
#![no_main]

use libfuzzer_sys::fuzz_target;
use paperclip_images::fits::{read_headers, read_image};

/// Pixel limit for one image, small so the fuzzer explores instead of allocating.
const MAX_PIXELS: u64 = 1 << 20;

fuzz_target!(|bytes: &[u8]| {
    let _ = read_headers(bytes);

    if let Ok(image) = read_image(bytes, MAX_PIXELS) {
        let pixels = u64::from(image.width_px) * u64::from(image.height_px);
        assert!(pixels <= MAX_PIXELS, "{pixels} pixels read past the limit");
        assert_eq!(image.pixels.len() as u64, pixels);
        assert!(image.masked_pixels <= pixels);
    }
});
