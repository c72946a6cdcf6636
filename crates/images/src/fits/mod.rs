//! Pure-Rust FITS reader for preview rendering and header metadata.
//!
//! What it reads:
//! - the headers of every HDU ([`read_headers`]), with typed getters on [`Header`];
//! - the first image HDU that has `NAXIS >= 2` and data ([`read_image`]). That is a
//!   primary or `IMAGE` extension with `BITPIX` 8, 16, 32, 64, -32 or -64, or a
//!   tile-compressed image in a `BINTABLE` with `ZIMAGE = T` (`RICE_1`, `GZIP_1`,
//!   `GZIP_2`, including quantised floats with subtractive dithering). An empty primary
//!   (`NAXIS = 0`) and ordinary tables are skipped;
//! - gzip-compressed files (`.fits.gz`), recognised by the gzip magic bytes.
//!
//! Invariants of a returned [`FitsImage`]:
//! - pixels hold physical values `raw * BSCALE + BZERO`, narrowed to `f32`, in FITS
//!   order (first axis fastest, first row at the bottom of the sky image);
//! - integer pixels equal to `BLANK` (or `ZBLANK`) and non-finite float pixels are NaN
//!   and counted in `masked_pixels`;
//! - for `NAXIS >= 3` only the first plane (all higher axis indices 0) is read.
//!
//! Unsupported features (`HCOMPRESS_1`, `PLIO_1`, random groups, unknown compression)
//! return [`FitsError::Unsupported`] naming the feature. A file whose HDU structure is
//! damaged (data shorter than declared, or bytes after an HDU that are not a valid
//! extension header) returns an error before any pixel is read.

mod dither;
mod header;
mod image;
mod layout;
mod rice;
mod tiled;
pub mod write;

pub use dither::Quantize;
pub use header::{BLOCK_BYTES, CARD_BYTES, Card, FitsValue, Header};
pub use layout::{HduKind, HduLayout};

use std::io::Read;

/// Default maximum number of pixels in one image plane (200 megapixels).
pub const DEFAULT_MAX_PIXELS: u64 = 200_000_000;

/// Errors from reading FITS bytes.
#[derive(Debug, thiserror::Error)]
pub enum FitsError {
    #[error(
        "not a FITS file: the first card is {found:?}, but a FITS file starts with `SIMPLE  =                    T`"
    )]
    NotFits { found: String },

    #[error(
        "invalid FITS header at byte {offset_bytes}: {detail}; the file is damaged or not FITS"
    )]
    InvalidHeader { offset_bytes: u64, detail: String },

    #[error("HDU {hdu} is missing or has an invalid {keyword} keyword: {detail}")]
    InvalidKeyword {
        hdu: usize,
        keyword: String,
        detail: String,
    },

    #[error(
        "truncated FITS{}: {expected_bytes} bytes expected at byte {offset_bytes}, but only {available_bytes} remain; download the file again",
        hdu.map(|index| format!(" (HDU {index})")).unwrap_or_default()
    )]
    Truncated {
        hdu: Option<usize>,
        offset_bytes: u64,
        expected_bytes: u64,
        available_bytes: u64,
    },

    #[error(
        "unsupported FITS feature in HDU {hdu}: {feature}; convert the file to an uncompressed image (for example with `funpack`) first"
    )]
    Unsupported { hdu: usize, feature: String },

    #[error("no image HDU with NAXIS >= 2 and data among the {hdu_count} HDUs of this file")]
    NoImageHdu { hdu_count: usize },

    #[error(
        "image of {width_px}x{height_px} pixels in HDU {hdu} exceeds the limit of {max_pixels} pixels; raise the pixel limit if this image is expected"
    )]
    TooLarge {
        hdu: usize,
        width_px: u64,
        height_px: u64,
        max_pixels: u64,
    },

    #[error("compressed tile {tile} of HDU {hdu} is corrupt: {detail}")]
    CorruptTile {
        hdu: usize,
        tile: usize,
        detail: String,
    },

    #[error("invalid gzip stream around the FITS file: {detail}")]
    Gzip { detail: String },
}

/// The pixels of one image plane with the HDU they came from.
#[derive(Debug, Clone)]
pub struct FitsImage {
    /// Zero-based HDU index (0 is the primary HDU).
    pub hdu: usize,
    pub width_px: u32,
    pub height_px: u32,
    /// `BITPIX` of the stored pixels (`ZBITPIX` for compressed images).
    pub bitpix: i64,
    /// Physical values, row-major from the first FITS row; NaN marks masked pixels.
    pub pixels: Vec<f32>,
    pub masked_pixels: u64,
    /// Header of the HDU that contains the image.
    pub header: Header,
}

/// Returns the headers of all HDUs, after checking that the HDU structure is intact.
pub fn read_headers(bytes: &[u8]) -> Result<Vec<Header>, FitsError> {
    let bytes = gunzip_if_needed(bytes, gzip_limit_bytes(DEFAULT_MAX_PIXELS))?;
    let layouts = layout::walk_hdus(&bytes)?;
    Ok(layouts.into_iter().map(|hdu| hdu.header).collect())
}

/// Returns the primary header only, without checking the rest of the file.
///
/// Use this to read metadata from a file whose data may be damaged; [`read_headers`]
/// rejects such files.
pub fn read_primary_header(bytes: &[u8]) -> Result<Header, FitsError> {
    let bytes = gunzip_if_needed(bytes, gzip_limit_bytes(DEFAULT_MAX_PIXELS))?;
    layout::check_simple(&bytes)?;
    let (header, _) = header::parse_header(&bytes, 0)?;
    Ok(header)
}

/// Reads the first image plane of the first image HDU, refusing planes larger than
/// `max_pixels` before allocating them.
pub fn read_image(bytes: &[u8], max_pixels: u64) -> Result<FitsImage, FitsError> {
    let bytes = gunzip_if_needed(bytes, gzip_limit_bytes(max_pixels))?;
    let layouts = layout::walk_hdus(&bytes)?;

    for hdu in &layouts {
        match &hdu.kind {
            HduKind::Image => return image::read_plane(&bytes, hdu, max_pixels),
            HduKind::CompressedImage => return tiled::read_plane(&bytes, hdu, max_pixels),
            HduKind::Unsupported(feature) => {
                return Err(FitsError::Unsupported {
                    hdu: hdu.index,
                    feature: feature.clone(),
                });
            }
            HduKind::Empty | HduKind::Table => continue,
        }
    }

    Err(FitsError::NoImageHdu {
        hdu_count: layouts.len(),
    })
}

/// Returns true when the bytes start with the gzip magic number.
pub fn is_gzip(bytes: &[u8]) -> bool {
    bytes.starts_with(&[0x1f, 0x8b])
}

/// Returns true when the bytes start with a FITS primary header card.
pub fn is_fits(bytes: &[u8]) -> bool {
    bytes.starts_with(b"SIMPLE  =")
}

/// Returns the largest decompressed size accepted for a `.fits.gz` file: 8 bytes per
/// allowed pixel (BITPIX -64) plus 64 MiB for headers and other HDUs, so a gzip bomb
/// cannot exhaust memory.
fn gzip_limit_bytes(max_pixels: u64) -> u64 {
    max_pixels.saturating_mul(8).saturating_add(64 << 20)
}

/// Decompresses gzip input (up to `limit_bytes` of output); other input is borrowed.
fn gunzip_if_needed(
    bytes: &[u8],
    limit_bytes: u64,
) -> Result<std::borrow::Cow<'_, [u8]>, FitsError> {
    if !is_gzip(bytes) {
        return Ok(std::borrow::Cow::Borrowed(bytes));
    }

    let mut output = Vec::new();
    let decoder = flate2::read::MultiGzDecoder::new(bytes);
    decoder
        .take(limit_bytes.saturating_add(1))
        .read_to_end(&mut output)
        .map_err(|error| FitsError::Gzip {
            detail: format!("{error}; the .gz file is damaged or truncated"),
        })?;

    if output.len() as u64 > limit_bytes {
        return Err(FitsError::Gzip {
            detail: format!(
                "decompressed size exceeds {limit_bytes} bytes, more than an image within the pixel limit needs"
            ),
        });
    }
    Ok(std::borrow::Cow::Owned(output))
}

/// Checks a plane size against the pixel limit before anything is allocated.
fn check_plane_size(
    hdu: usize,
    width_px: u64,
    height_px: u64,
    max_pixels: u64,
) -> Result<(), FitsError> {
    let within_limit = width_px
        .checked_mul(height_px)
        .is_some_and(|pixels| pixels <= max_pixels)
        && width_px <= u64::from(u32::MAX)
        && height_px <= u64::from(u32::MAX);

    if within_limit {
        Ok(())
    } else {
        Err(FitsError::TooLarge {
            hdu,
            width_px,
            height_px,
            max_pixels,
        })
    }
}
