//! The top-level [`prepare`] function and its options. The crate docs list the steps.

use image::GrayImage;

use crate::decode::{self, Raster, SourceFormat};
use crate::encode::{Samples, encode_jpeg};
use crate::fits::{self, FitsImage};
use crate::stretch::{self, Stretch};
use crate::{ImageError, geometry};

/// Settings for [`prepare`].
#[derive(Debug, Clone, PartialEq)]
pub struct PrepareOptions {
    /// Side of the output square in pixels (PAPERCLIP uses 512).
    pub size_px: u32,
    /// JPEG quality of the output, 1–100.
    pub jpeg_quality: u8,
    /// Stretch for FITS sources; previews are already 8-bit display images.
    pub stretch: Stretch,
    /// Minimum length of the source's short side in pixels.
    pub min_source_px: u32,
    /// Maximum long side / short side ratio of the source; `None` accepts any ratio.
    pub max_aspect_ratio: Option<f64>,
    /// Maximum source width x height, checked before pixel buffers are allocated.
    pub max_source_pixels: u64,
}

impl Default for PrepareOptions {
    fn default() -> Self {
        Self {
            size_px: 512,
            jpeg_quality: 95,
            stretch: Stretch::Asinh,
            min_source_px: 16,
            max_aspect_ratio: None,
            max_source_pixels: fits::DEFAULT_MAX_PIXELS,
        }
    }
}

/// Largest accepted `size_px`.
pub const MAX_SIZE_PX: u32 = 8192;

/// A prepared square JPEG and facts about its source.
#[derive(Debug, Clone, PartialEq)]
pub struct PreparedImage {
    pub jpeg: Vec<u8>,
    pub size_px: u32,
    pub source_format: SourceFormat,
    pub source_width_px: u32,
    pub source_height_px: u32,
    /// 1 grey, 2 grey + alpha, 3 RGB, 4 RGBA; FITS planes count as 1.
    pub source_channels: u8,
    /// Zero-based HDU of the FITS image, `None` for previews.
    pub fits_hdu: Option<usize>,
    /// FITS pixels that were NaN, infinite or `BLANK`, drawn as black.
    pub masked_pixels: u64,
    /// Stretch applied to FITS pixels, `None` for previews.
    pub stretch: Option<Stretch>,
}

/// Turns image or FITS bytes into the PAPERCLIP training square (see crate docs).
pub fn prepare(bytes: &[u8], options: &PrepareOptions) -> Result<PreparedImage, ImageError> {
    validate(options)?;

    let format = decode::sniff(bytes).ok_or_else(|| ImageError::UnsupportedFormat {
        magic_hex: bytes
            .iter()
            .take(8)
            .map(|byte| format!("{byte:02x}"))
            .collect(),
    })?;

    let source = match format {
        SourceFormat::Jpeg | SourceFormat::Png => load_preview(bytes, format, options)?,
        SourceFormat::Fits | SourceFormat::FitsGzip => load_fits(bytes, options)?,
    };

    let square = geometry::fit_on_white_square(&source.raster, options.size_px)?;
    let jpeg = encode_jpeg(
        square.as_raw(),
        square.width(),
        square.height(),
        Samples::Rgb,
        options.jpeg_quality,
    )?;

    tracing::debug!(
        format = format.as_str(),
        width_px = source.raster.width_px(),
        height_px = source.raster.height_px(),
        jpeg_bytes = jpeg.len(),
        "prepared image"
    );
    Ok(PreparedImage {
        jpeg,
        size_px: options.size_px,
        source_format: format,
        source_width_px: source.raster.width_px(),
        source_height_px: source.raster.height_px(),
        source_channels: source.channels,
        fits_hdu: source.fits_hdu,
        masked_pixels: source.masked_pixels,
        stretch: source.stretch,
    })
}

struct Source {
    raster: Raster,
    channels: u8,
    fits_hdu: Option<usize>,
    masked_pixels: u64,
    stretch: Option<Stretch>,
}

fn validate(options: &PrepareOptions) -> Result<(), ImageError> {
    let invalid = |detail: String| Err(ImageError::InvalidOptions { detail });

    if options.size_px == 0 || options.size_px > MAX_SIZE_PX {
        return invalid(format!(
            "size_px = {} must be in 1..={MAX_SIZE_PX}",
            options.size_px
        ));
    }
    if !(1..=100).contains(&options.jpeg_quality) {
        return invalid(format!(
            "jpeg_quality = {} must be in 1..=100",
            options.jpeg_quality
        ));
    }
    if let Some(ratio) = options.max_aspect_ratio
        && (ratio.is_nan() || ratio < 1.0)
    {
        return invalid(format!("max_aspect_ratio = {ratio} must be at least 1.0"));
    }
    Ok(())
}

/// Applies the size limit, minimum short side and aspect-ratio rule, in that order.
pub fn check_source_rules(
    width_px: u32,
    height_px: u32,
    options: &PrepareOptions,
) -> Result<(), ImageError> {
    let pixels = u64::from(width_px) * u64::from(height_px);
    if pixels > options.max_source_pixels {
        return Err(ImageError::TooLarge {
            width_px: u64::from(width_px),
            height_px: u64::from(height_px),
            max_pixels: options.max_source_pixels,
        });
    }

    if width_px.min(height_px) < options.min_source_px {
        return Err(ImageError::TooSmall {
            width_px,
            height_px,
            min_source_px: options.min_source_px,
        });
    }

    if let Some(max_aspect_ratio) = options.max_aspect_ratio {
        let aspect_ratio =
            f64::from(width_px.max(height_px)) / f64::from(width_px.min(height_px).max(1));
        if aspect_ratio > max_aspect_ratio {
            return Err(ImageError::AspectRatio {
                width_px,
                height_px,
                aspect_ratio,
                max_aspect_ratio,
            });
        }
    }
    Ok(())
}

fn load_preview(
    bytes: &[u8],
    format: SourceFormat,
    options: &PrepareOptions,
) -> Result<Source, ImageError> {
    let header = decode::inspect(bytes, format)?;
    let (width_px, height_px) = (header.width_px, header.height_px);
    check_source_rules(width_px, height_px, options)?;

    let preview = decode::decode_inspected(bytes, &header, options.max_source_pixels)?;
    if preview.raster.is_uniform() {
        return Err(ImageError::Blank {
            detail: format!("all {width_px}x{height_px} pixels have the same colour"),
        });
    }

    Ok(Source {
        raster: preview.raster,
        channels: preview.source_channels,
        fits_hdu: None,
        masked_pixels: 0,
        stretch: None,
    })
}

fn load_fits(bytes: &[u8], options: &PrepareOptions) -> Result<Source, ImageError> {
    let image = fits::read_image(bytes, options.max_source_pixels)?;
    check_source_rules(image.width_px, image.height_px, options)?;

    let grey = stretch::render(&image.pixels, options.stretch)?;
    let raster = Raster::Grey(flip_to_display(&image, grey)?);

    Ok(Source {
        raster,
        channels: 1,
        fits_hdu: Some(image.hdu),
        masked_pixels: image.masked_pixels,
        stretch: Some(options.stretch),
    })
}

/// Builds the display image: FITS stores the bottom row first, so rows are reversed
/// to show the image as DS9 and astropy's `origin='lower'` do.
fn flip_to_display(image: &FitsImage, grey: Vec<u8>) -> Result<GrayImage, ImageError> {
    let width = image.width_px as usize;
    let flipped: Vec<u8> = grey
        .chunks_exact(width.max(1))
        .rev()
        .flatten()
        .copied()
        .collect();
    GrayImage::from_raw(image.width_px, image.height_px, flipped).ok_or_else(|| {
        ImageError::Resize {
            detail: "stretched FITS plane has the wrong length".to_string(),
        }
    })
}
