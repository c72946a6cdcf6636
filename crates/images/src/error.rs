//! The error type of image preparation, with stable reason codes for skip reports.

use crate::fits::FitsError;

/// Reason an input could not be turned into a training image.
#[derive(Debug, thiserror::Error)]
pub enum ImageError {
    #[error("invalid prepare options: {detail}")]
    InvalidOptions { detail: String },

    #[error(
        "unsupported image format: the file starts with bytes {magic_hex}; expected JPEG, PNG, FITS or gzip-compressed FITS"
    )]
    UnsupportedFormat { magic_hex: String },

    #[error("truncated {format} image: {detail}; download the file again")]
    Truncated {
        format: &'static str,
        detail: String,
    },

    #[error("corrupt {format} image: {detail}; the file cannot be decoded and should be skipped")]
    Corrupt {
        format: &'static str,
        detail: String,
    },

    #[error("unsupported JPEG colour space: {detail}; convert the image to RGB or greyscale first")]
    UnsupportedColourSpace { detail: String },

    #[error("blank image: {detail}; it carries no picture to train on")]
    Blank { detail: String },

    #[error(
        "source image of {width_px}x{height_px} pixels has a short side below min_source_px = {min_source_px}"
    )]
    TooSmall {
        width_px: u32,
        height_px: u32,
        min_source_px: u32,
    },

    #[error(
        "source image of {width_px}x{height_px} pixels has aspect ratio {aspect_ratio:.2}, above max_aspect_ratio = {max_aspect_ratio:.2}"
    )]
    AspectRatio {
        width_px: u32,
        height_px: u32,
        aspect_ratio: f64,
        max_aspect_ratio: f64,
    },

    #[error(
        "source image of {width_px}x{height_px} pixels exceeds max_source_pixels = {max_pixels}; raise the limit if such images are expected"
    )]
    TooLarge {
        width_px: u64,
        height_px: u64,
        max_pixels: u64,
    },

    #[error("FITS: {0}")]
    Fits(#[from] FitsError),

    #[error("resizing to the square failed: {detail}")]
    Resize { detail: String },

    #[error("JPEG encoding failed: {detail}")]
    Encode { detail: String },
}

impl ImageError {
    /// Returns a stable snake_case label for counting skips by reason.
    ///
    /// Codes: `invalid_options`, `unsupported_format`, `truncated`, `corrupt`,
    /// `unsupported_colour_space`, `blank`, `too_small`, `aspect_ratio`, `too_large`,
    /// `unsupported_fits`, `no_image_hdu`, `resize_failed`, `encode_failed`.
    pub fn reason_code(&self) -> &'static str {
        match self {
            ImageError::InvalidOptions { .. } => "invalid_options",
            ImageError::UnsupportedFormat { .. } => "unsupported_format",
            ImageError::Truncated { .. } => "truncated",
            ImageError::Corrupt { .. } => "corrupt",
            ImageError::UnsupportedColourSpace { .. } => "unsupported_colour_space",
            ImageError::Blank { .. } => "blank",
            ImageError::TooSmall { .. } => "too_small",
            ImageError::AspectRatio { .. } => "aspect_ratio",
            ImageError::TooLarge { .. } => "too_large",
            ImageError::Fits(error) => fits_reason_code(error),
            ImageError::Resize { .. } => "resize_failed",
            ImageError::Encode { .. } => "encode_failed",
        }
    }
}

fn fits_reason_code(error: &FitsError) -> &'static str {
    match error {
        FitsError::Truncated { .. } => "truncated",
        FitsError::Unsupported { .. } => "unsupported_fits",
        FitsError::NoImageHdu { .. } => "no_image_hdu",
        FitsError::TooLarge { .. } => "too_large",
        FitsError::NotFits { .. }
        | FitsError::InvalidHeader { .. }
        | FitsError::InvalidKeyword { .. }
        | FitsError::CorruptTile { .. }
        | FitsError::Gzip { .. } => "corrupt",
    }
}
