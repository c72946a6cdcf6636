//! JPEG encoding of 8-bit greyscale and RGB samples, with the `jpeg-encoder` crate (AVX2
//! code paths chosen at run time): baseline, no chroma subsampling (4:4:4), so the
//! colours of small sources stay sharp.
//!
//! Every JPEG the project writes goes through [`encode_jpeg`], so prepared images,
//! synthetic archives and test fixtures share one encoder.

use jpeg_encoder::{ColorType, Encoder, SamplingFactor};

use crate::ImageError;

/// Layout of the samples passed to [`encode_jpeg`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Samples {
    /// One byte per pixel.
    Grey,
    /// Three bytes per pixel, R G B.
    Rgb,
}

impl Samples {
    fn channels(self) -> usize {
        match self {
            Samples::Grey => 1,
            Samples::Rgb => 3,
        }
    }
}

/// Encodes `width_px` x `height_px` interleaved samples as JPEG at `quality` (1–100).
pub fn encode_jpeg(
    samples: &[u8],
    width_px: u32,
    height_px: u32,
    layout: Samples,
    quality: u8,
) -> Result<Vec<u8>, ImageError> {
    let invalid = |detail: String| Err(ImageError::Encode { detail });
    let (Ok(width), Ok(height)) = (u16::try_from(width_px), u16::try_from(height_px)) else {
        return invalid(format!(
            "{width_px}x{height_px} pixels exceed JPEG's limit of 65535 per side"
        ));
    };
    let expected_bytes = width_px as usize * height_px as usize * layout.channels();
    if samples.len() != expected_bytes {
        return invalid(format!(
            "{} sample bytes for {width_px}x{height_px} {layout:?} pixels; expected {expected_bytes}",
            samples.len()
        ));
    }
    if !(1..=100).contains(&quality) {
        return invalid(format!("quality {quality} must be in 1..=100"));
    }

    let color_type = match layout {
        Samples::Grey => ColorType::Luma,
        Samples::Rgb => ColorType::Rgb,
    };
    let mut jpeg = Vec::with_capacity(expected_bytes / 8);
    let mut encoder = Encoder::new(&mut jpeg, quality);
    encoder.set_sampling_factor(SamplingFactor::F_1_1);
    encoder
        .encode(samples, width, height, color_type)
        .map_err(|error| ImageError::Encode {
            detail: format!("{width_px}x{height_px} {layout:?}: {error}"),
        })?;
    Ok(jpeg)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::decode::{SourceFormat, decode_preview};

    #[test]
    fn round_trip_keeps_size_and_layout() {
        let rgb: Vec<u8> = (0..40 * 30 * 3).map(|i| (i % 251) as u8).collect();
        let jpeg = encode_jpeg(&rgb, 40, 30, Samples::Rgb, 90).unwrap();
        let decoded = decode_preview(&jpeg, SourceFormat::Jpeg, 1 << 20).unwrap();
        assert_eq!(
            (decoded.raster.width_px(), decoded.raster.height_px()),
            (40, 30)
        );
        assert_eq!(decoded.source_channels, 3);

        let grey = vec![128u8; 17 * 9];
        let jpeg = encode_jpeg(&grey, 17, 9, Samples::Grey, 90).unwrap();
        let decoded = decode_preview(&jpeg, SourceFormat::Jpeg, 1 << 20).unwrap();
        assert_eq!(decoded.source_channels, 1);
    }

    #[test]
    fn wrong_sample_count_and_quality_are_errors() {
        let error = encode_jpeg(&[0; 10], 4, 4, Samples::Grey, 90).unwrap_err();
        assert!(error.to_string().contains("expected 16"), "{error}");
        let error = encode_jpeg(&[0; 16], 4, 4, Samples::Grey, 0).unwrap_err();
        assert!(error.to_string().contains("quality 0"), "{error}");
        let error = encode_jpeg(&[], 70000, 0, Samples::Grey, 90).unwrap_err();
        assert!(error.to_string().contains("65535"), "{error}");
    }
}
