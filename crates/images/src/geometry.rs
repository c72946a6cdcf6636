//! The PAPERCLIP square: scale so the longest side equals `size_px` (Lanczos3, up or
//! down, aspect ratio kept), then centre on a white `size_px` x `size_px` RGB canvas.
//!
//! The scaled short side is `round(short * size_px / long)`, at least 1 pixel. The
//! offset of the scaled image is `(size_px - scaled) / 2` with integer division, so an
//! odd margin puts the extra white row or column at the bottom or right.
//! Greyscale sources are resized as one channel and then expanded to R = G = B.
//!
//! NOTE: fast_image_resize picks SIMD code paths (SSE4.1, AVX2, NEON) from the running
//! CPU, so output bytes are reproducible on one machine but have not been checked to
//! match across CPUs with different instruction sets.

use std::borrow::Cow;

use fast_image_resize::images::{Image, ImageRef};
use fast_image_resize::{FilterType, PixelType, ResizeAlg, ResizeOptions, Resizer};
use image::RgbImage;

use crate::ImageError;
use crate::decode::Raster;

/// Returns the scaled size `(width, height)` whose longest side is `size_px`.
pub fn scaled_size(width_px: u32, height_px: u32, size_px: u32) -> (u32, u32) {
    let long = u64::from(width_px.max(height_px).max(1));
    let scale_side = |side: u32| -> u32 {
        let scaled = (u64::from(side) * u64::from(size_px) + long / 2) / long;
        scaled.clamp(1, u64::from(size_px)) as u32
    };
    (scale_side(width_px), scale_side(height_px))
}

/// Scales and pads a raster to the white square described in the module docs.
pub fn fit_on_white_square(raster: &Raster, size_px: u32) -> Result<RgbImage, ImageError> {
    let (width_px, height_px) = scaled_size(raster.width_px(), raster.height_px(), size_px);

    let (samples, pixel_type, channels) = match raster {
        Raster::Grey(grey) => (grey.as_raw(), PixelType::U8, 1),
        Raster::Rgb(rgb) => (rgb.as_raw(), PixelType::U8x3, 3),
    };
    let scaled = resize_channels(
        samples,
        (raster.width_px(), raster.height_px()),
        (width_px, height_px),
        pixel_type,
    )?;
    Ok(pad_samples_on_white(
        &scaled, width_px, height_px, channels, size_px,
    ))
}

/// Resizes interleaved 8-bit samples with Lanczos3; a source already at the target size
/// is returned unchanged.
fn resize_channels<'a>(
    samples: &'a [u8],
    (width_px, height_px): (u32, u32),
    (target_width_px, target_height_px): (u32, u32),
    pixel_type: PixelType,
) -> Result<Cow<'a, [u8]>, ImageError> {
    if (width_px, height_px) == (target_width_px, target_height_px) {
        return Ok(Cow::Borrowed(samples));
    }

    let source = ImageRef::new(width_px, height_px, samples, pixel_type).map_err(|error| {
        ImageError::Resize {
            detail: format!("source buffer for {width_px}x{height_px}: {error}"),
        }
    })?;
    let mut target = Image::new(target_width_px, target_height_px, pixel_type);
    let options = ResizeOptions::new().resize_alg(ResizeAlg::Convolution(FilterType::Lanczos3));

    Resizer::new()
        .resize(&source, &mut target, &options)
        .map_err(|error| ImageError::Resize {
            detail: format!(
                "{width_px}x{height_px} to {target_width_px}x{target_height_px}: {error}"
            ),
        })?;
    Ok(Cow::Owned(target.into_vec()))
}

/// Centres `image` on a white square of `size_px`.
pub fn pad_on_white(image: &RgbImage, size_px: u32) -> RgbImage {
    pad_samples_on_white(image.as_raw(), image.width(), image.height(), 3, size_px)
}

/// Centres interleaved grey (1 channel) or RGB (3 channels) samples on a white RGB
/// square of `size_px`, expanding grey to R = G = B. Parts beyond the square are cut.
fn pad_samples_on_white(
    samples: &[u8],
    width_px: u32,
    height_px: u32,
    channels: usize,
    size_px: u32,
) -> RgbImage {
    let mut canvas = RgbImage::from_pixel(size_px, size_px, image::Rgb([255, 255, 255]));
    let left = (size_px.saturating_sub(width_px) / 2) as usize;
    let top = (size_px.saturating_sub(height_px) / 2) as usize;
    let (size, width) = (size_px as usize, width_px as usize);
    let copied_width = width.min(size - left);
    let copied_rows = (height_px as usize).min(size - top);

    let rows = samples.chunks_exact(width * channels).take(copied_rows);
    let canvas_rows = canvas.chunks_exact_mut(size * 3).skip(top);
    for (source_row, canvas_row) in rows.zip(canvas_rows) {
        let target = &mut canvas_row[left * 3..(left + copied_width) * 3];
        let source = &source_row[..copied_width * channels];
        if channels == 3 {
            target.copy_from_slice(source);
        } else {
            for (pixel, &grey) in target.chunks_exact_mut(3).zip(source) {
                pixel.fill(grey);
            }
        }
    }
    canvas
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scaled_size_keeps_aspect_and_upscales() {
        assert_eq!(scaled_size(4543, 4423, 512), (512, 498));
        assert_eq!(scaled_size(100, 50, 512), (512, 256));
        assert_eq!(scaled_size(150, 900, 512), (85, 512));
        assert_eq!(scaled_size(5000, 1, 512), (512, 1));
    }

    #[test]
    fn wide_image_is_centred_with_white_rows() {
        let grey = image::GrayImage::from_pixel(200, 100, image::Luma([0]));
        let square = fit_on_white_square(&Raster::Grey(grey), 64).unwrap();
        assert_eq!(square.dimensions(), (64, 64));
        // Scaled to 64x32, offset (64 - 32) / 2 = 16 rows of white on top.
        assert_eq!(square.get_pixel(10, 15).0, [255, 255, 255]);
        assert_eq!(square.get_pixel(10, 16).0, [0, 0, 0]);
        assert_eq!(square.get_pixel(10, 47).0, [0, 0, 0]);
        assert_eq!(square.get_pixel(10, 48).0, [255, 255, 255]);
    }

    #[test]
    fn grey_is_expanded_and_oversized_input_is_cut() {
        let grey = [10, 20, 30, 40, 50, 60];
        let square = pad_samples_on_white(&grey, 3, 2, 1, 4);
        // Left margin (4 - 3) / 2 = 0, top margin (4 - 2) / 2 = 1.
        assert_eq!(square.get_pixel(0, 0).0, [255, 255, 255]);
        assert_eq!(square.get_pixel(0, 1).0, [10, 10, 10]);
        assert_eq!(square.get_pixel(2, 2).0, [60, 60, 60]);
        assert_eq!(square.get_pixel(3, 2).0, [255, 255, 255]);

        let wide = RgbImage::from_fn(6, 1, |x, _| image::Rgb([x as u8, 0, 0]));
        let cut = pad_on_white(&wide, 4);
        assert_eq!(cut.get_pixel(3, 1).0, [3, 0, 0]);
    }

    #[test]
    fn odd_margin_puts_extra_column_right() {
        let rgb = RgbImage::from_pixel(3, 8, image::Rgb([10, 20, 30]));
        let square = pad_on_white(&rgb, 8);
        // (8 - 3) / 2 = 2 white columns on the left, 3 on the right.
        assert_eq!(square.get_pixel(1, 0).0, [255, 255, 255]);
        assert_eq!(square.get_pixel(2, 0).0, [10, 20, 30]);
        assert_eq!(square.get_pixel(4, 0).0, [10, 20, 30]);
        assert_eq!(square.get_pixel(5, 0).0, [255, 255, 255]);
    }
}
