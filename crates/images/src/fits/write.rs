//! Minimal FITS writer for fixtures: image HDUs and tile-compressed images that
//! [`read_image`](super::read_image) reads back.
//!
//! It writes only what tests and synthetic data need: 2-D images, `RICE_1` or `GZIP_1`
//! tiles, and floats quantised with a fixed step. Headers hold the mandatory keywords in
//! the order the FITS standard requires, then the caller's cards.

use std::io::Write;

use super::dither::{Quantize, TileQuantization, quantize};
use super::header::{BLOCK_BYTES, FitsValue, format_card, pad_card};
use super::rice;

/// Tile compression algorithm for [`compressed_image_hdu`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compression {
    Rice,
    Gzip,
}

/// Pixels of a compressed image.
#[derive(Debug, Clone)]
pub enum CompressedPixels<'a> {
    /// Integers stored as `ZBITPIX` 8, 16 or 32; `BLANK` is written when given.
    Integers {
        zbitpix: i64,
        values: &'a [i64],
        blank: Option<i64>,
    },
    /// Floats quantised with step `scale` (NaN becomes `ZBLANK = -2147483648`).
    Floats {
        zbitpix: i64,
        values: &'a [f64],
        scale: f64,
        method: Quantize,
        zdither0: i64,
    },
}

/// Layout of a compressed image HDU.
#[derive(Debug, Clone)]
pub struct CompressedImage<'a> {
    pub width_px: usize,
    pub height_px: usize,
    pub tile_width_px: usize,
    pub tile_height_px: usize,
    pub compression: Compression,
    pub pixels: CompressedPixels<'a>,
}

/// Null value written as `ZBLANK` for NaN pixels in quantised float images.
pub const FLOAT_ZBLANK: i64 = -2_147_483_648;

fn push_card(header: &mut String, keyword: &str, value: FitsValue) {
    header.push_str(&format_card(keyword, &value, None));
}

fn finish_header(mut header: String, cards: &[(&str, FitsValue)]) -> Vec<u8> {
    for (keyword, value) in cards {
        push_card(&mut header, keyword, value.clone());
    }
    header.push_str(&pad_card("END".to_string()));
    pad_block(header.into_bytes(), b' ')
}

fn pad_block(mut bytes: Vec<u8>, fill: u8) -> Vec<u8> {
    let padded = bytes.len().div_ceil(BLOCK_BYTES) * BLOCK_BYTES;
    bytes.resize(padded, fill);
    bytes
}

/// Writes an image HDU: the primary HDU when `primary`, else an `IMAGE` extension.
///
/// `data` contains big-endian samples of `bitpix`; `axes` lists `NAXIS1, NAXIS2, ...`.
pub fn image_hdu(
    primary: bool,
    bitpix: i64,
    axes: &[usize],
    data: &[u8],
    cards: &[(&str, FitsValue)],
) -> Vec<u8> {
    let mut header = String::new();
    if primary {
        push_card(&mut header, "SIMPLE", FitsValue::Bool(true));
    } else {
        push_card(&mut header, "XTENSION", FitsValue::Str("IMAGE".into()));
    }
    push_card(&mut header, "BITPIX", FitsValue::Int(bitpix));
    push_card(&mut header, "NAXIS", FitsValue::Int(axes.len() as i64));
    for (index, length) in axes.iter().enumerate() {
        push_card(
            &mut header,
            &format!("NAXIS{}", index + 1),
            FitsValue::Int(*length as i64),
        );
    }
    if primary {
        push_card(&mut header, "EXTEND", FitsValue::Bool(true));
    } else {
        push_card(&mut header, "PCOUNT", FitsValue::Int(0));
        push_card(&mut header, "GCOUNT", FitsValue::Int(1));
    }

    let mut bytes = finish_header(header, cards);
    bytes.extend(pad_block(data.to_vec(), 0));
    bytes
}

/// Writes a primary HDU without data (`NAXIS = 0`), as multi-extension files start.
pub fn empty_primary(cards: &[(&str, FitsValue)]) -> Vec<u8> {
    image_hdu(true, 8, &[], &[], cards)
}

/// Writes an unsigned 16-bit primary image as FITS stores it: `BITPIX = 16`,
/// `BZERO = 32768`, raw value = physical value - 32768.
pub fn uint16_image(
    width_px: usize,
    height_px: usize,
    values: &[u16],
    cards: &[(&str, FitsValue)],
) -> Vec<u8> {
    let data: Vec<u8> = values
        .iter()
        .flat_map(|value| ((i32::from(*value) - 32768) as i16).to_be_bytes())
        .collect();
    let mut all_cards = vec![
        ("BSCALE", FitsValue::Int(1)),
        ("BZERO", FitsValue::Int(32768)),
    ];
    all_cards.extend(cards.iter().cloned());
    image_hdu(true, 16, &[width_px, height_px], &data, &all_cards)
}

/// Writes a `BINTABLE` extension holding a tile-compressed image.
pub fn compressed_image_hdu(image: &CompressedImage, cards: &[(&str, FitsValue)]) -> Vec<u8> {
    let tiles = tile_rects(image);
    let is_float = matches!(image.pixels, CompressedPixels::Floats { .. });
    let row_bytes = if is_float { 24 } else { 8 };

    let mut table = Vec::new();
    let mut heap = Vec::new();
    let mut max_length = 0;
    for (row, rect) in tiles.iter().enumerate() {
        let (stored, scale, zero) = tile_integers(image, rect, row + 1);
        let compressed = compress_tile(image, &stored);
        max_length = max_length.max(compressed.len());

        table.extend((compressed.len() as u32).to_be_bytes());
        table.extend((heap.len() as u32).to_be_bytes());
        if is_float {
            table.extend(scale.to_be_bytes());
            table.extend(zero.to_be_bytes());
        }
        heap.extend(compressed);
    }

    let header = compressed_header(image, tiles.len(), row_bytes, heap.len(), max_length);
    let mut bytes = finish_header(header, cards);
    table.extend(heap);
    bytes.extend(pad_block(table, 0));
    bytes
}

/// Tile rectangles `(x0, y0, width, height)` in table-row order.
fn tile_rects(image: &CompressedImage) -> Vec<(usize, usize, usize, usize)> {
    let mut rects = Vec::new();
    for y0 in (0..image.height_px).step_by(image.tile_height_px.max(1)) {
        for x0 in (0..image.width_px).step_by(image.tile_width_px.max(1)) {
            let width = image.tile_width_px.min(image.width_px - x0);
            let height = image.tile_height_px.min(image.height_px - y0);
            rects.push((x0, y0, width, height));
        }
    }
    rects
}

/// Returns the tile's stored integers plus the `ZSCALE`/`ZZERO` used for floats.
fn tile_integers(
    image: &CompressedImage,
    rect: &(usize, usize, usize, usize),
    tile_row: usize,
) -> (Vec<i64>, f64, f64) {
    let (x0, y0, width, height) = *rect;
    let indices =
        (y0..y0 + height).flat_map(|y| (x0..x0 + width).map(move |x| y * image.width_px + x));

    match &image.pixels {
        CompressedPixels::Integers { values, .. } => {
            (indices.map(|index| values[index]).collect(), 1.0, 0.0)
        }
        CompressedPixels::Floats {
            values,
            scale,
            method,
            zdither0,
            ..
        } => {
            let tile_values: Vec<f64> = indices.map(|index| values[index]).collect();
            let finite = tile_values.iter().filter(|value| value.is_finite());
            let zero = finite.fold(f64::INFINITY, |low, value| low.min(*value));
            let zero = if zero.is_finite() { zero } else { 0.0 };
            let tile = TileQuantization {
                method: *method,
                scale: *scale,
                zero,
                blank: Some(FLOAT_ZBLANK),
                tile_row,
                zdither0: *zdither0,
            };
            (quantize(&tile_values, &tile), *scale, zero)
        }
    }
}

fn stored_width_bytes(image: &CompressedImage) -> usize {
    match image.pixels {
        CompressedPixels::Integers { zbitpix, .. } => (zbitpix / 8).max(1) as usize,
        CompressedPixels::Floats { .. } => 4,
    }
}

fn compress_tile(image: &CompressedImage, stored: &[i64]) -> Vec<u8> {
    let width = stored_width_bytes(image);
    match image.compression {
        Compression::Rice => rice::encode(stored, width, 32),
        Compression::Gzip => {
            let raw: Vec<u8> = stored
                .iter()
                .flat_map(|value| value.to_be_bytes()[8 - width..].to_vec())
                .collect();
            let mut encoder =
                flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
            // Writing into a Vec cannot fail.
            let _ = encoder.write_all(&raw);
            encoder.finish().unwrap_or_default()
        }
    }
}

fn compressed_header(
    image: &CompressedImage,
    rows: usize,
    row_bytes: usize,
    heap_bytes: usize,
    max_length: usize,
) -> String {
    let mut header = String::new();
    push_card(&mut header, "XTENSION", FitsValue::Str("BINTABLE".into()));
    push_card(&mut header, "BITPIX", FitsValue::Int(8));
    push_card(&mut header, "NAXIS", FitsValue::Int(2));
    push_card(&mut header, "NAXIS1", FitsValue::Int(row_bytes as i64));
    push_card(&mut header, "NAXIS2", FitsValue::Int(rows as i64));
    push_card(&mut header, "PCOUNT", FitsValue::Int(heap_bytes as i64));
    push_card(&mut header, "GCOUNT", FitsValue::Int(1));

    let is_float = matches!(image.pixels, CompressedPixels::Floats { .. });
    push_card(
        &mut header,
        "TFIELDS",
        FitsValue::Int(if is_float { 3 } else { 1 }),
    );
    push_card(
        &mut header,
        "TTYPE1",
        FitsValue::Str("COMPRESSED_DATA".into()),
    );
    push_card(
        &mut header,
        "TFORM1",
        FitsValue::Str(format!("1PB({max_length})")),
    );
    if is_float {
        push_card(&mut header, "TTYPE2", FitsValue::Str("ZSCALE".into()));
        push_card(&mut header, "TFORM2", FitsValue::Str("1D".into()));
        push_card(&mut header, "TTYPE3", FitsValue::Str("ZZERO".into()));
        push_card(&mut header, "TFORM3", FitsValue::Str("1D".into()));
    }

    push_card(&mut header, "ZIMAGE", FitsValue::Bool(true));
    push_card(
        &mut header,
        "ZTILE1",
        FitsValue::Int(image.tile_width_px as i64),
    );
    push_card(
        &mut header,
        "ZTILE2",
        FitsValue::Int(image.tile_height_px as i64),
    );
    let algorithm = match image.compression {
        Compression::Rice => "RICE_1",
        Compression::Gzip => "GZIP_1",
    };
    push_card(&mut header, "ZCMPTYPE", FitsValue::Str(algorithm.into()));
    if image.compression == Compression::Rice {
        push_card(&mut header, "ZNAME1", FitsValue::Str("BLOCKSIZE".into()));
        push_card(&mut header, "ZVAL1", FitsValue::Int(32));
        push_card(&mut header, "ZNAME2", FitsValue::Str("BYTEPIX".into()));
        push_card(
            &mut header,
            "ZVAL2",
            FitsValue::Int(stored_width_bytes(image) as i64),
        );
    }

    match &image.pixels {
        CompressedPixels::Integers { zbitpix, blank, .. } => {
            push_card(&mut header, "ZBITPIX", FitsValue::Int(*zbitpix));
            push_axes(&mut header, image);
            if let Some(blank) = blank {
                push_card(&mut header, "BLANK", FitsValue::Int(*blank));
            }
        }
        CompressedPixels::Floats {
            zbitpix,
            method,
            zdither0,
            ..
        } => {
            push_card(&mut header, "ZBITPIX", FitsValue::Int(*zbitpix));
            push_axes(&mut header, image);
            let name = match method {
                Quantize::NoDither => "NO_DITHER",
                Quantize::SubtractiveDither1 => "SUBTRACTIVE_DITHER_1",
                Quantize::SubtractiveDither2 => "SUBTRACTIVE_DITHER_2",
            };
            push_card(&mut header, "ZQUANTIZ", FitsValue::Str(name.into()));
            push_card(&mut header, "ZDITHER0", FitsValue::Int(*zdither0));
            push_card(&mut header, "ZBLANK", FitsValue::Int(FLOAT_ZBLANK));
        }
    }
    header
}

fn push_axes(header: &mut String, image: &CompressedImage) {
    push_card(header, "ZNAXIS", FitsValue::Int(2));
    push_card(header, "ZNAXIS1", FitsValue::Int(image.width_px as i64));
    push_card(header, "ZNAXIS2", FitsValue::Int(image.height_px as i64));
}
