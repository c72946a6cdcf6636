//! Uncompressed image planes: big-endian pixels, `BSCALE`/`BZERO` scaling and `BLANK`.

use super::layout::{HduLayout, axes};
use super::{FitsError, FitsImage, check_plane_size};

/// Scaling and blank handling shared by plain and tile-compressed integer images.
#[derive(Debug, Clone, Copy)]
pub struct Scaling {
    pub bscale: f64,
    pub bzero: f64,
    pub blank: Option<i64>,
}

impl Scaling {
    /// Converts one raw integer to its physical value, or NaN for a blank pixel.
    pub fn integer_to_physical(&self, raw: i64) -> f32 {
        if self.blank == Some(raw) {
            return f32::NAN;
        }
        (raw as f64 * self.bscale + self.bzero) as f32
    }

    /// Converts one raw float to its physical value; identity scaling keeps the bits.
    pub fn float_to_physical(&self, raw: f64) -> f32 {
        if self.bscale == 1.0 && self.bzero == 0.0 {
            return raw as f32;
        }
        (raw * self.bscale + self.bzero) as f32
    }
}

/// Reads the first plane of a primary or `IMAGE` HDU.
pub fn read_plane(bytes: &[u8], hdu: &HduLayout, max_pixels: u64) -> Result<FitsImage, FitsError> {
    let header = &hdu.header;
    let axes = axes(header, hdu.index, "NAXIS")?;
    let (width_px, height_px) = (axes[0], axes[1]);
    check_plane_size(hdu.index, width_px, height_px, max_pixels)?;

    let bitpix = header.get_i64("BITPIX").unwrap_or(8);
    let sample_bytes = (bitpix.unsigned_abs() / 8) as usize;
    let pixel_count = (width_px * height_px) as usize;
    let plane_bytes = pixel_count * sample_bytes;
    if plane_bytes > hdu.data_bytes {
        return Err(FitsError::InvalidKeyword {
            hdu: hdu.index,
            keyword: "GCOUNT".to_string(),
            detail: format!(
                "the data unit holds {} bytes, less than one {width_px}x{height_px} plane",
                hdu.data_bytes
            ),
        });
    }
    let data = &bytes[hdu.data_offset_bytes..hdu.data_offset_bytes + plane_bytes];

    let scaling = Scaling {
        bscale: header.get_f64("BSCALE").unwrap_or(1.0),
        bzero: header.get_f64("BZERO").unwrap_or(0.0),
        blank: header.get_i64("BLANK"),
    };
    let pixels = convert_big_endian(data, bitpix, &scaling);
    let masked_pixels = count_masked(&pixels);

    Ok(FitsImage {
        hdu: hdu.index,
        width_px: width_px as u32,
        height_px: height_px as u32,
        bitpix,
        pixels,
        masked_pixels,
        header: header.clone(),
    })
}

/// Converts big-endian samples of the given `BITPIX` to physical values.
pub fn convert_big_endian(data: &[u8], bitpix: i64, scaling: &Scaling) -> Vec<f32> {
    match bitpix {
        8 => data
            .iter()
            .map(|byte| scaling.integer_to_physical(i64::from(*byte)))
            .collect(),
        16 => data
            .chunks_exact(2)
            .map(|chunk| {
                scaling.integer_to_physical(i64::from(i16::from_be_bytes([chunk[0], chunk[1]])))
            })
            .collect(),
        32 => data
            .chunks_exact(4)
            .map(|chunk| scaling.integer_to_physical(i64::from(i32::from_be_bytes(array(chunk)))))
            .collect(),
        64 => data
            .chunks_exact(8)
            .map(|chunk| scaling.integer_to_physical(i64::from_be_bytes(array(chunk))))
            .collect(),
        -32 => data
            .chunks_exact(4)
            .map(|chunk| scaling.float_to_physical(f64::from(f32::from_be_bytes(array(chunk)))))
            .collect(),
        _ => data
            .chunks_exact(8)
            .map(|chunk| scaling.float_to_physical(f64::from_be_bytes(array(chunk))))
            .collect(),
    }
}

fn array<const N: usize>(chunk: &[u8]) -> [u8; N] {
    let mut out = [0u8; N];
    out.copy_from_slice(chunk);
    out
}

/// Counts NaN and infinite pixels, which the renderer treats as masked.
pub fn count_masked(pixels: &[f32]) -> u64 {
    pixels.iter().filter(|value| !value.is_finite()).count() as u64
}
