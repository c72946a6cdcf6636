//! Format sniffing and preview decoding (JPEG, PNG) to 8-bit greyscale or RGB.
//!
//! Conversions:
//! - 8-bit greyscale stays greyscale (expanded later as R = G = B = L);
//! - 16-bit samples are scaled to 8 bits (`round(v / 257)`), never clamped;
//! - palette PNGs are expanded to RGB(A);
//! - alpha is composited on white, the colour of the padding around the square.
//!
//! JPEG integrity: before decoding, the marker structure is walked from SOI to EOI. A
//! file that ends before the EOI marker (cut mid-scan, or a truncated progressive
//! JPEG) is [`ImageError::Truncated`] even though lenient decoders would return a grey
//! or black image. Four-component (CMYK or Adobe YCCK) JPEGs are rejected with
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

/// Dimensions and colour layout read from a JPEG's markers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct JpegInfo {
    pub width_px: u32,
    pub height_px: u32,
    pub components: u8,
    pub progressive: bool,
    /// Transform byte of an Adobe APP14 segment (0 none/CMYK, 1 YCbCr, 2 YCCK).
    pub adobe_transform: Option<u8>,
}

/// Returns the dimensions of a JPEG or PNG without decoding pixels.
pub fn dimensions(bytes: &[u8], format: SourceFormat) -> Result<(u32, u32), ImageError> {
    match format {
        SourceFormat::Jpeg => check_jpeg(bytes).map(|info| (info.width_px, info.height_px)),
        SourceFormat::Png => png_dimensions(bytes),
        SourceFormat::Fits | SourceFormat::FitsGzip => Err(ImageError::InvalidOptions {
            detail: "dimensions() handles JPEG and PNG only; read FITS with fits::read_image".to_string(),
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
pub fn decode_preview(bytes: &[u8], format: SourceFormat, max_pixels: u64) -> Result<DecodedPreview, ImageError> {
    let image_format = match format {
        SourceFormat::Jpeg => {
            let info = check_jpeg(bytes)?;
            check_jpeg_colour_space(&info)?;
            return decode_jpeg_strict(bytes, &info);
        }
        SourceFormat::Png => ImageFormat::Png,
        SourceFormat::Fits | SourceFormat::FitsGzip => {
            return Err(ImageError::InvalidOptions {
                detail: "decode_preview() handles JPEG and PNG only; read FITS with fits::read_image".to_string(),
            });
        }
    };

    let mut reader = ImageReader::with_format(Cursor::new(bytes), image_format);
    reader.limits(decode_limits(max_pixels));
    let image = reader
        .decode()
        .map_err(|error| map_decode_error(error, format_name(format), max_pixels))?;

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
            detail: format!("decoding needs more memory than allowed for {max_pixels} pixels: {detail}"),
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
    DecodedPreview { raster, source_channels }
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

fn truncated(detail: String) -> ImageError {
    ImageError::Truncated { format: "JPEG", detail }
}

fn corrupt(detail: String) -> ImageError {
    ImageError::Corrupt { format: "JPEG", detail }
}

/// Walks the JPEG marker structure from SOI to EOI and returns the frame information.
pub fn check_jpeg(bytes: &[u8]) -> Result<JpegInfo, ImageError> {
    if !bytes.starts_with(&[0xff, 0xd8]) {
        return Err(corrupt("missing SOI marker at the start".to_string()));
    }

    let mut frame: Option<JpegInfo> = None;
    let mut adobe_transform = None;
    let mut seen_scan = false;
    let mut position = 2;

    loop {
        let (marker, after_marker) = next_marker(bytes, position)?;
        position = after_marker;

        match marker {
            0xd9 => break,
            0xd0..=0xd7 | 0x01 => continue,
            0xd8 => return Err(corrupt(format!("second SOI marker at byte {}", position - 2))),
            _ => {}
        }

        let segment = read_segment(bytes, position, marker)?;
        position += 2 + segment.len();

        if is_start_of_frame(marker) {
            frame = Some(parse_frame(segment, marker)?);
        } else if marker == 0xee && segment.starts_with(b"Adobe") && segment.len() >= 12 {
            adobe_transform = Some(segment[11]);
        } else if marker == 0xda {
            seen_scan = true;
            position = skip_entropy_data(bytes, position)?;
        }
    }

    let frame = frame.ok_or_else(|| corrupt("no start-of-frame (SOF) marker before EOI".to_string()))?;
    if !seen_scan {
        return Err(corrupt("no scan (SOS) before EOI".to_string()));
    }
    Ok(JpegInfo { adobe_transform, ..frame })
}

/// Returns the marker byte at `position` (after any 0xFF fill bytes) and the next offset.
fn next_marker(bytes: &[u8], position: usize) -> Result<(u8, usize), ImageError> {
    let mut cursor = position;
    match bytes.get(cursor) {
        None => {
            return Err(truncated(format!(
                "the file ends at byte {} without an EOI marker",
                bytes.len()
            )));
        }
        Some(0xff) => {}
        Some(other) => return Err(corrupt(format!("expected a marker at byte {cursor}, found 0x{other:02X}"))),
    }

    while bytes.get(cursor) == Some(&0xff) {
        cursor += 1;
    }
    match bytes.get(cursor) {
        Some(marker) => Ok((*marker, cursor + 1)),
        None => Err(truncated(format!("the file ends at byte {} inside a marker", bytes.len()))),
    }
}

fn read_segment(bytes: &[u8], position: usize, marker: u8) -> Result<&[u8], ImageError> {
    let Some(length_bytes) = bytes.get(position..position + 2) else {
        return Err(truncated(format!("the file ends inside the 0x{marker:02X} segment length")));
    };
    let length = usize::from(u16::from_be_bytes([length_bytes[0], length_bytes[1]]));
    if length < 2 {
        return Err(corrupt(format!("segment 0x{marker:02X} at byte {position} has invalid length {length}")));
    }
    bytes
        .get(position + 2..position + length)
        .ok_or_else(|| truncated(format!("the file ends inside the 0x{marker:02X} segment at byte {position}")))
}

fn is_start_of_frame(marker: u8) -> bool {
    (0xc0..=0xcf).contains(&marker) && !matches!(marker, 0xc4 | 0xc8 | 0xcc)
}

fn parse_frame(segment: &[u8], marker: u8) -> Result<JpegInfo, ImageError> {
    if segment.len() < 6 {
        return Err(corrupt(format!("SOF segment of {} bytes is too short", segment.len())));
    }
    let height_px = u32::from(u16::from_be_bytes([segment[1], segment[2]]));
    let width_px = u32::from(u16::from_be_bytes([segment[3], segment[4]]));
    if width_px == 0 || height_px == 0 {
        return Err(corrupt(format!("SOF declares an empty {width_px}x{height_px} frame")));
    }

    Ok(JpegInfo {
        width_px,
        height_px,
        components: segment[5],
        progressive: matches!(marker, 0xc2 | 0xc6 | 0xca | 0xce),
        adobe_transform: None,
    })
}

/// Skips entropy-coded data after SOS; returns the offset of the next marker's 0xFF.
fn skip_entropy_data(bytes: &[u8], start: usize) -> Result<usize, ImageError> {
    let mut position = start;
    while position + 1 < bytes.len() {
        if bytes[position] == 0xff {
            let next = bytes[position + 1];
            // 0xFF00 is a stuffed data byte and RSTn markers sit inside the scan.
            let is_data = next == 0x00 || (0xd0..=0xd7).contains(&next) || next == 0xff;
            if !is_data {
                return Ok(position);
            }
        }
        position += 1;
    }
    Err(truncated(format!(
        "scan data starting at byte {start} runs to the end of the file ({} bytes) without an EOI marker",
        bytes.len()
    )))
}

/// Decodes a JPEG in zune-jpeg's strict mode, which fails on scan data that ends
/// early instead of filling the missing rows with grey.
fn decode_jpeg_strict(bytes: &[u8], info: &JpegInfo) -> Result<DecodedPreview, ImageError> {
    let output_colour_space = if info.components == 1 { ColorSpace::Luma } else { ColorSpace::RGB };
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
        ColorSpace::Luma => GrayImage::from_raw(info.width_px, info.height_px, samples).map(Raster::Grey),
        _ => RgbImage::from_raw(info.width_px, info.height_px, samples).map(Raster::Rgb),
    };
    let raster = raster.ok_or_else(|| corrupt("decoded sample count does not match the frame size".to_string()))?;
    Ok(DecodedPreview { raster, source_channels: info.components })
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
