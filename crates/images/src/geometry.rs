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

use fast_image_resize::images::Image;
use fast_image_resize::{FilterType, PixelType, ResizeAlg, ResizeOptions, Resizer};
use image::{GrayImage, RgbImage};

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

    let scaled = match raster {
        Raster::Grey(grey) => {
            let resized = resize_channels(
                grey.as_raw(),
                grey.width(),
                grey.height(),
                width_px,
                height_px,
                PixelType::U8,
            )?;
            let grey =
                GrayImage::from_raw(width_px, height_px, resized).ok_or_else(buffer_error)?;
            image::DynamicImage::ImageLuma8(grey).to_rgb8()
        }
        Raster::Rgb(rgb) => {
            let resized = resize_channels(
                rgb.as_raw(),
                rgb.width(),
                rgb.height(),
                width_px,
                height_px,
                PixelType::U8x3,
            )?;
            RgbImage::from_raw(width_px, height_px, resized).ok_or_else(buffer_error)?
        }
    };

    Ok(pad_on_white(&scaled, size_px))
}

fn buffer_error() -> ImageError {
    ImageError::Resize {
        detail: "resized buffer has the wrong length".to_string(),
    }
}

fn resize_channels(
    samples: &[u8],
    width_px: u32,
    height_px: u32,
    target_width_px: u32,
    target_height_px: u32,
    pixel_type: PixelType,
) -> Result<Vec<u8>, ImageError> {
    if (width_px, height_px) == (target_width_px, target_height_px) {
        return Ok(samples.to_vec());
    }

    let source =
        Image::from_vec_u8(width_px, height_px, samples.to_vec(), pixel_type).map_err(|error| {
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
    Ok(target.into_vec())
}

/// Centres `image` on a white square of `size_px`.
pub fn pad_on_white(image: &RgbImage, size_px: u32) -> RgbImage {
    let mut canvas = RgbImage::from_pixel(size_px, size_px, image::Rgb([255, 255, 255]));
    let left = (size_px.saturating_sub(image.width())) / 2;
    let top = (size_px.saturating_sub(image.height())) / 2;
    image::imageops::replace(&mut canvas, image, i64::from(left), i64::from(top));
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
        let grey = GrayImage::from_pixel(200, 100, image::Luma([0]));
        let square = fit_on_white_square(&Raster::Grey(grey), 64).unwrap();
        assert_eq!(square.dimensions(), (64, 64));
        // Scaled to 64x32, offset (64 - 32) / 2 = 16 rows of white on top.
        assert_eq!(square.get_pixel(10, 15).0, [255, 255, 255]);
        assert_eq!(square.get_pixel(10, 16).0, [0, 0, 0]);
        assert_eq!(square.get_pixel(10, 47).0, [0, 0, 0]);
        assert_eq!(square.get_pixel(10, 48).0, [255, 255, 255]);
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
