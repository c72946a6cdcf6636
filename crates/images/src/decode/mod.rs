//! Format sniffing and preview decoding (JPEG, PNG) to 8-bit greyscale or RGB.
//!
//! Conversions:
//! - 8-bit greyscale stays greyscale (expanded later as R = G = B = L);
//! - 16-bit samples are scaled to 8 bits (`round(v / 257)`), never clamped;
//! - palette PNGs are expanded to RGB(A);
//! - alpha is composited on white, the colour of the padding around the square.
//!
//! JPEG integrity: before decoding, [`check_jpeg`] walks the marker structure from SOI
//! to EOI and, for sequential JPEGs, the Huffman codes of the first scan. A file that
//! ends before the EOI marker (cut mid-scan, or a truncated progressive JPEG) or whose
//! scan stops short of the last MCU is [`ImageError::Truncated`], even though lenient
//! decoders would return a partly grey or black image. Pixels are then decoded with
//! zune-jpeg in strict mode, which also fails on scan data that ends early. Four-component (CMYK or Adobe YCCK) JPEGs are rejected with
//! [`ImageError::UnsupportedColourSpace`] instead of being decoded with possibly
//! inverted colours.

use std::io::Cursor;

use image::{DynamicImage, GrayImage, ImageFormat, ImageReader, Limits, RgbImage};
use serde::{Deserialize, Serialize};

use zune_core::bytestream::ZCursor;
use zune_core::colorspace::ColorSpace;
use zune_core::options::DecoderOptions;
use zune_jpeg::JpegDecoder;

use crate::ImageError;
use crate::fits;

mod jpeg;

pub use jpeg::{JpegInfo, check_jpeg};
use jpeg::{corrupt, truncated};

/// Container format of a source file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SourceFormat {
    Jpeg,
    Png,
    Fits,
    FitsGzip,
}

impl SourceFormat {
    /// Returns the snake_case name stored in dataset rows.
    pub fn as_str(&self) -> &'static str {
        match self {
            SourceFormat::Jpeg => "jpeg",
            SourceFormat::Png => "png",
            SourceFormat::Fits => "fits",
            SourceFormat::FitsGzip => "fits_gzip",
        }
    }
}

const PNG_MAGIC: &[u8] = &[0x89, b'P', b'N', b'G', 0x0d, 0x0a, 0x1a, 0x0a];

/// Detects the format from magic bytes; a gzip stream counts as gzip-compressed FITS.
pub fn sniff(bytes: &[u8]) -> Option<SourceFormat> {
    if bytes.starts_with(&[0xff, 0xd8, 0xff]) {
        Some(SourceFormat::Jpeg)
    } else if bytes.starts_with(PNG_MAGIC) {
        Some(SourceFormat::Png)
    } else if fits::is_fits(bytes) {
        Some(SourceFormat::Fits)
    } else if fits::is_gzip(bytes) {
        Some(SourceFormat::FitsGzip)
    } else {
        None
    }
}

/// An 8-bit image ready for resizing.
#[derive(Debug, Clone)]
pub enum Raster {
    Grey(GrayImage),
    Rgb(RgbImage),
}

impl Raster {
    pub fn width_px(&self) -> u32 {
        match self {
            Raster::Grey(image) => image.width(),
            Raster::Rgb(image) => image.width(),
        }
    }

    pub fn height_px(&self) -> u32 {
        match self {
            Raster::Grey(image) => image.height(),
            Raster::Rgb(image) => image.height(),
        }
    }

    /// Returns true when every pixel has the same value.
    pub fn is_uniform(&self) -> bool {
        match self {
            Raster::Grey(image) => all_equal(image.as_raw(), 1),
            Raster::Rgb(image) => all_equal(image.as_raw(), 3),
        }
    }
}

fn all_equal(samples: &[u8], channels: usize) -> bool {
    let Some(first) = samples.get(..channels) else {
        return true;
    };
    samples.chunks_exact(channels).all(|pixel| pixel == first)
}

/// A decoded preview and the channel count of the source.
#[derive(Debug, Clone)]
pub struct DecodedPreview {
    pub raster: Raster,
    /// 1 grey, 2 grey + alpha, 3 RGB, 4 RGBA.
    pub source_channels: u8,
}

/// Facts read from a JPEG or PNG before pixel decoding.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PreviewHeader {
    pub format: SourceFormat,
    pub width_px: u32,
    pub height_px: u32,
    /// Marker facts for JPEG input; `None` for PNG.
    pub jpeg: Option<JpegInfo>,
}

/// Reads dimensions (and for JPEG runs the structure checks) without decoding pixels.
pub fn inspect(bytes: &[u8], format: SourceFormat) -> Result<PreviewHeader, ImageError> {
    match format {
        SourceFormat::Jpeg => {
            let info = check_jpeg(bytes)?;
            Ok(PreviewHeader {
                format,
                width_px: info.width_px,
                height_px: info.height_px,
                jpeg: Some(info),
            })
        }
        SourceFormat::Png => {
            let (width_px, height_px) = png_dimensions(bytes)?;
            Ok(PreviewHeader {
                format,
                width_px,
                height_px,
                jpeg: None,
            })
        }
        SourceFormat::Fits | SourceFormat::FitsGzip => Err(ImageError::InvalidOptions {
            detail: "inspect() handles JPEG and PNG only; read FITS with fits::read_image"
                .to_string(),
        }),
    }
}

fn png_dimensions(bytes: &[u8]) -> Result<(u32, u32), ImageError> {
    let is_ihdr = bytes.len() >= 24 && &bytes[12..16] == b"IHDR";
    if !is_ihdr {
        return Err(ImageError::Corrupt {
            format: "PNG",
            detail: "the first chunk is not IHDR".to_string(),
        });
    }
    let width = u32::from_be_bytes([bytes[16], bytes[17], bytes[18], bytes[19]]);
    let height = u32::from_be_bytes([bytes[20], bytes[21], bytes[22], bytes[23]]);
    Ok((width, height))
}

/// Decodes a JPEG or PNG after the integrity checks described in the module docs.
pub fn decode_preview(
    bytes: &[u8],
    format: SourceFormat,
    max_pixels: u64,
) -> Result<DecodedPreview, ImageError> {
    let header = inspect(bytes, format)?;
    decode_inspected(bytes, &header, max_pixels)
}

/// Decodes pixels of a preview that [`inspect`] has already checked.
pub fn decode_inspected(
    bytes: &[u8],
    header: &PreviewHeader,
    max_pixels: u64,
) -> Result<DecodedPreview, ImageError> {
    if let Some(info) = &header.jpeg {
        check_jpeg_colour_space(info)?;
        return decode_jpeg_strict(bytes, info);
    }
    let image_format = ImageFormat::Png;

    let mut reader = ImageReader::with_format(Cursor::new(bytes), image_format);
    reader.limits(decode_limits(max_pixels));
    let image = reader
        .decode()
        .map_err(|error| map_decode_error(error, format_name(header.format), max_pixels))?;

    Ok(to_preview(image))
}

fn decode_limits(max_pixels: u64) -> Limits {
    let mut limits = Limits::default();
    limits.max_alloc = Some(max_pixels.saturating_mul(8).max(1 << 20));
    limits
}

fn format_name(format: SourceFormat) -> &'static str {
    match format {
        SourceFormat::Jpeg => "JPEG",
        SourceFormat::Png => "PNG",
        SourceFormat::Fits | SourceFormat::FitsGzip => "FITS",
    }
}

fn map_decode_error(error: image::ImageError, format: &'static str, max_pixels: u64) -> ImageError {
    let detail = error.to_string();
    let eof = matches!(&error, image::ImageError::IoError(io) if io.kind() == std::io::ErrorKind::UnexpectedEof)
        || detail.contains("EOF")
        || detail.contains("end of file")
        || detail.contains("unexpected end");

    match error {
        _ if eof => ImageError::Truncated { format, detail },
        image::ImageError::Limits(_) => ImageError::Corrupt {
            format,
            detail: format!(
                "decoding needs more memory than allowed for {max_pixels} pixels: {detail}"
            ),
        },
        _ => ImageError::Corrupt { format, detail },
    }
}

fn to_preview(image: DynamicImage) -> DecodedPreview {
    let source_channels = image.color().channel_count();
    let raster = match image {
        DynamicImage::ImageLuma8(grey) => Raster::Grey(grey),
        DynamicImage::ImageLuma16(_) => Raster::Grey(image.to_luma8()),
        DynamicImage::ImageRgb8(rgb) => Raster::Rgb(rgb),
        DynamicImage::ImageLumaA8(_) | DynamicImage::ImageLumaA16(_) => {
            Raster::Grey(composite_grey_on_white(&image.to_luma_alpha8()))
        }
        _ if image.color().has_alpha() => Raster::Rgb(composite_rgb_on_white(&image.to_rgba8())),
        _ => Raster::Rgb(image.to_rgb8()),
    };
    DecodedPreview {
        raster,
        source_channels,
    }
}

fn blend_on_white(value: u8, alpha: u8) -> u8 {
    let blended = u32::from(value) * u32::from(alpha) + 255 * (255 - u32::from(alpha));
    ((blended + 127) / 255) as u8
}

fn composite_grey_on_white(image: &image::GrayAlphaImage) -> GrayImage {
    GrayImage::from_fn(image.width(), image.height(), |x, y| {
        let [value, alpha] = image.get_pixel(x, y).0;
        image::Luma([blend_on_white(value, alpha)])
    })
}

fn composite_rgb_on_white(image: &image::RgbaImage) -> RgbImage {
    RgbImage::from_fn(image.width(), image.height(), |x, y| {
        let [red, green, blue, alpha] = image.get_pixel(x, y).0;
        image::Rgb([
            blend_on_white(red, alpha),
            blend_on_white(green, alpha),
            blend_on_white(blue, alpha),
        ])
    })
}

/// Decodes a JPEG in zune-jpeg's strict mode, which fails on scan data that ends
/// early instead of filling the missing rows with grey.
fn decode_jpeg_strict(bytes: &[u8], info: &JpegInfo) -> Result<DecodedPreview, ImageError> {
    let output_colour_space = if info.components == 1 {
        ColorSpace::Luma
    } else {
        ColorSpace::RGB
    };
    let options = DecoderOptions::default()
        .set_strict_mode(true)
        .set_max_width(usize::from(u16::MAX))
        .set_max_height(usize::from(u16::MAX))
        .jpeg_set_out_colorspace(output_colour_space);

    let mut decoder = JpegDecoder::new_with_options(ZCursor::new(bytes), options);
    let samples = decoder.decode().map_err(|error| {
        let detail = format!("{error:?}");
        if detail.contains("Premature") || detail.contains("EOF") || detail.contains("end of") {
            truncated(format!("the decoder ran out of scan data ({detail})"))
        } else {
            corrupt(detail)
        }
    })?;

    let raster = match output_colour_space {
        ColorSpace::Luma => {
            GrayImage::from_raw(info.width_px, info.height_px, samples).map(Raster::Grey)
        }
        _ => RgbImage::from_raw(info.width_px, info.height_px, samples).map(Raster::Rgb),
    };
    let raster = raster
        .ok_or_else(|| corrupt("decoded sample count does not match the frame size".to_string()))?;
    Ok(DecodedPreview {
        raster,
        source_channels: info.components,
    })
}

fn check_jpeg_colour_space(info: &JpegInfo) -> Result<(), ImageError> {
    match (info.components, info.adobe_transform) {
        (1 | 3, _) => Ok(()),
        (4, Some(2)) => Err(ImageError::UnsupportedColourSpace {
            detail: "Adobe YCCK JPEG (4 components, APP14 transform 2)".to_string(),
        }),
        (4, _) => Err(ImageError::UnsupportedColourSpace {
            detail: "CMYK JPEG (4 components)".to_string(),
        }),
        (count, _) => Err(ImageError::UnsupportedColourSpace {
            detail: format!("JPEG with {count} colour components"),
        }),
    }
}
