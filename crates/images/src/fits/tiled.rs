//! Tile-compressed images: a `BINTABLE` with `ZIMAGE = T`, one tile per table row.
//!
//! Supported tile algorithms: `RICE_1`, `GZIP_1`, `GZIP_2` and `NOCOMPRESS`.
//! Integer images honour `ZBLANK`/`BLANK` nulls and `BSCALE`/`BZERO`.
//! Float images may be quantised with `NO_DITHER`, `SUBTRACTIVE_DITHER_1` or
//! `SUBTRACTIVE_DITHER_2`, with `ZSCALE`/`ZZERO`/`ZBLANK` as keywords or per-tile
//! columns. They may also be stored losslessly (`ZQUANTIZ = 'NONE'`), and single tiles
//! may fall back to `GZIP_COMPRESSED_DATA` or `UNCOMPRESSED_DATA`.
//!
//! Invariant: only tiles that overlap the first image plane are decoded, and each one
//! must decode to exactly the tile's pixel count, otherwise the tile is reported corrupt.

use std::io::Read;

use super::dither::{Quantize, TileQuantization, unquantize};
use super::header::Header;
use super::image::{Scaling, convert_big_endian, count_masked};
use super::layout::{HduLayout, axes, required_int};
use super::{FitsError, FitsImage, check_plane_size, rice};

/// One table column: byte offset within a row, element type letter and repeat count.
#[derive(Debug, Clone)]
struct Column {
    name: String,
    offset_bytes: usize,
    repeat: usize,
    /// `P` or `Q` for variable-length arrays, otherwise the element type.
    kind: char,
    /// Element type of a variable-length array.
    element: char,
}

/// Compression parameters read from the table header.
struct Layout {
    hdu: usize,
    zbitpix: i64,
    image_axes: Vec<u64>,
    tile_axes: Vec<u64>,
    algorithm: String,
    row_bytes: usize,
    rows: usize,
    heap_offset_bytes: usize,
    columns: Vec<Column>,
    quantize: Option<Quantize>,
    zdither0: i64,
    rice_block_size: usize,
    rice_bytepix: usize,
}

/// Reads the first plane of a tile-compressed image.
pub fn read_plane(bytes: &[u8], hdu: &HduLayout, max_pixels: u64) -> Result<FitsImage, FitsError> {
    let layout = read_layout(&hdu.header, hdu.index)?;
    let (width_px, height_px) = (layout.image_axes[0], layout.image_axes[1]);
    check_plane_size(hdu.index, width_px, height_px, max_pixels)?;

    let tile_pixels = layout
        .tile_axes
        .iter()
        .zip(&layout.image_axes)
        .try_fold(1u64, |product, (tile, image)| {
            product.checked_mul((*tile).min(*image))
        });
    if tile_pixels.is_none_or(|pixels| pixels > max_pixels) {
        return Err(corrupt(
            &layout,
            0,
            format!(
                "tile shape {:?} exceeds the pixel limit of {max_pixels}",
                layout.tile_axes
            ),
        ));
    }

    let data = &bytes[hdu.data_offset_bytes..hdu.data_offset_bytes + hdu.data_bytes];
    let scaling = Scaling {
        bscale: hdu.header.get_f64("BSCALE").unwrap_or(1.0),
        bzero: hdu.header.get_f64("BZERO").unwrap_or(0.0),
        blank: hdu.header.get_i64("BLANK"),
    };

    let tiles_x = width_px.div_ceil(layout.tile_axes[0]);
    let tiles_y = height_px.div_ceil(layout.tile_axes[1]);
    if tiles_x * tiles_y > layout.rows as u64 {
        return Err(corrupt(
            &layout,
            layout.rows,
            format!(
                "the first plane needs {} tiles but the table has {} rows",
                tiles_x * tiles_y,
                layout.rows
            ),
        ));
    }
    let mut pixels = vec![f32::NAN; (width_px * height_px) as usize];

    for tile_y in 0..tiles_y {
        for tile_x in 0..tiles_x {
            let row = (tile_y * tiles_x + tile_x) as usize;
            let x0 = tile_x * layout.tile_axes[0];
            let y0 = tile_y * layout.tile_axes[1];
            let tile_width = layout.tile_axes[0].min(width_px - x0);
            let tile_height = layout.tile_axes[1].min(height_px - y0);
            let tile_count = tile_pixel_count(&layout, tile_width, tile_height);

            let values = decode_tile(&layout, &hdu.header, data, row, tile_count, &scaling)?;
            place_tile(
                &mut pixels,
                width_px,
                &values,
                x0,
                y0,
                tile_width,
                tile_height,
            );
        }
    }

    let masked_pixels = count_masked(&pixels);
    Ok(FitsImage {
        hdu: hdu.index,
        width_px: width_px as u32,
        height_px: height_px as u32,
        bitpix: layout.zbitpix,
        pixels,
        masked_pixels,
        header: hdu.header.clone(),
    })
}

/// Pixel count of a tile whose first plane is `tile_width` x `tile_height`; higher
/// axes start at index 0, so the tile covers `min(ZTILEn, ZNAXISn)` along each.
fn tile_pixel_count(layout: &Layout, tile_width: u64, tile_height: u64) -> usize {
    let higher: u64 = layout.image_axes[2..]
        .iter()
        .zip(&layout.tile_axes[2..])
        .map(|(image, tile)| (*image).min(*tile))
        .product();
    (tile_width * tile_height * higher) as usize
}

fn place_tile(
    pixels: &mut [f32],
    width_px: u64,
    values: &[f32],
    x0: u64,
    y0: u64,
    tile_width: u64,
    tile_height: u64,
) {
    for row in 0..tile_height {
        let source = &values[(row * tile_width) as usize..((row + 1) * tile_width) as usize];
        let start = ((y0 + row) * width_px + x0) as usize;
        pixels[start..start + tile_width as usize].copy_from_slice(source);
    }
}

fn corrupt(layout: &Layout, tile: usize, detail: String) -> FitsError {
    FitsError::CorruptTile {
        hdu: layout.hdu,
        tile,
        detail,
    }
}

fn read_layout(header: &Header, hdu: usize) -> Result<Layout, FitsError> {
    let zbitpix = required_int(header, hdu, "ZBITPIX")?;
    if ![8, 16, 32, 64, -32, -64].contains(&zbitpix) {
        return Err(invalid(
            hdu,
            "ZBITPIX",
            format!("{zbitpix} is not a valid BITPIX"),
        ));
    }

    let image_axes = axes(header, hdu, "ZNAXIS")?;
    let tile_axes = tile_axes(header, hdu, &image_axes)?;
    let row_bytes = positive(header, hdu, "NAXIS1")?;
    let rows = positive(header, hdu, "NAXIS2")?;
    let columns = read_columns(header, hdu)?;

    let heap_default = row_bytes
        .checked_mul(rows)
        .ok_or_else(|| invalid(hdu, "NAXIS2", "table size overflows".into()))?;
    let heap_offset_bytes = match header.get_i64("THEAP") {
        Some(theap) => usize::try_from(theap)
            .map_err(|_| invalid(hdu, "THEAP", format!("{theap} is negative")))?,
        None => heap_default,
    };

    let (rice_block_size, rice_bytepix) = rice_parameters(header);
    Ok(Layout {
        hdu,
        zbitpix,
        algorithm: header
            .get_str("ZCMPTYPE")
            .unwrap_or("")
            .to_ascii_uppercase(),
        quantize: quantize_method(header, hdu, zbitpix)?,
        zdither0: header.get_i64("ZDITHER0").unwrap_or(1),
        image_axes,
        tile_axes,
        row_bytes,
        rows,
        heap_offset_bytes,
        columns,
        rice_block_size,
        rice_bytepix,
    })
}

fn invalid(hdu: usize, keyword: &str, detail: String) -> FitsError {
    FitsError::InvalidKeyword {
        hdu,
        keyword: keyword.to_string(),
        detail,
    }
}

fn positive(header: &Header, hdu: usize, keyword: &str) -> Result<usize, FitsError> {
    let value = required_int(header, hdu, keyword)?;
    usize::try_from(value).map_err(|_| invalid(hdu, keyword, format!("{value} is negative")))
}

/// Reads `ZTILEn`; the default tile is one full row (`ZTILE1 = ZNAXIS1`, others 1).
fn tile_axes(header: &Header, hdu: usize, image_axes: &[u64]) -> Result<Vec<u64>, FitsError> {
    (0..image_axes.len())
        .map(|axis| {
            let keyword = format!("ZTILE{}", axis + 1);
            let default = if axis == 0 { image_axes[0] as i64 } else { 1 };
            let length = header.get_i64(&keyword).unwrap_or(default);
            if length <= 0 {
                return Err(invalid(
                    hdu,
                    &keyword,
                    format!("tile length {length} must be positive"),
                ));
            }
            Ok(length as u64)
        })
        .collect()
}

/// Reads `BLOCKSIZE` and `BYTEPIX` from the `ZNAMEn`/`ZVALn` pairs, with the tiled-image
/// convention's defaults of 32 pixels per block and 4 bytes per pixel. `m13_rice.fits`
/// from astropy (16-bit, no `BYTEPIX`) decodes correctly only with the 4-byte default.
fn rice_parameters(header: &Header) -> (usize, usize) {
    let mut block_size = 32;
    let mut bytepix = 4;

    for index in 1..=999 {
        let Some(name) = header.get_str(&format!("ZNAME{index}")) else {
            break;
        };
        let value = header.get_i64(&format!("ZVAL{index}")).unwrap_or(0);
        match name.to_ascii_uppercase().as_str() {
            "BLOCKSIZE" => block_size = value.max(0) as usize,
            "BYTEPIX" => bytepix = value.max(0) as usize,
            _ => {}
        }
    }
    (block_size, bytepix)
}

/// Returns the quantisation method for float images, or `None` for lossless storage.
fn quantize_method(
    header: &Header,
    hdu: usize,
    zbitpix: i64,
) -> Result<Option<Quantize>, FitsError> {
    if zbitpix > 0 {
        return Ok(None);
    }

    let has_scale = header.contains("ZSCALE") || header_has_column(header, "ZSCALE");
    match header
        .get_str("ZQUANTIZ")
        .map(str::to_ascii_uppercase)
        .as_deref()
    {
        Some("NO_DITHER") => Ok(Some(Quantize::NoDither)),
        Some("SUBTRACTIVE_DITHER_1") => Ok(Some(Quantize::SubtractiveDither1)),
        Some("SUBTRACTIVE_DITHER_2") => Ok(Some(Quantize::SubtractiveDither2)),
        Some("NONE") => Ok(None),
        None if has_scale => Ok(Some(Quantize::NoDither)),
        None => Ok(None),
        Some(other) => Err(FitsError::Unsupported {
            hdu,
            feature: format!("ZQUANTIZ = '{other}'"),
        }),
    }
}

fn header_has_column(header: &Header, name: &str) -> bool {
    (1..=999).any(|index| {
        header
            .get_str(&format!("TTYPE{index}"))
            .is_some_and(|column| column.eq_ignore_ascii_case(name))
    })
}

fn read_columns(header: &Header, hdu: usize) -> Result<Vec<Column>, FitsError> {
    let field_count = required_int(header, hdu, "TFIELDS")?.clamp(0, 999);
    let mut columns = Vec::new();
    let mut offset_bytes = 0usize;

    for index in 1..=field_count {
        let keyword = format!("TFORM{index}");
        let form = header
            .get_str(&keyword)
            .ok_or_else(|| invalid(hdu, &keyword, "missing column format".into()))?;
        let (repeat, kind, element) = parse_tform(form)
            .ok_or_else(|| invalid(hdu, &keyword, format!("invalid TFORM {form:?}")))?;

        let name = header
            .get_str(&format!("TTYPE{index}"))
            .unwrap_or("")
            .to_ascii_uppercase();
        columns.push(Column {
            name,
            offset_bytes,
            repeat,
            kind,
            element,
        });
        offset_bytes = offset_bytes.saturating_add(column_bytes(repeat, kind));
    }
    Ok(columns)
}

/// Parses `rT` or `rPt(max)` / `rQt(max)` into repeat, type and element type.
fn parse_tform(form: &str) -> Option<(usize, char, char)> {
    let form = form.trim();
    let digits = form.chars().take_while(char::is_ascii_digit).count();
    let repeat = if digits == 0 {
        1
    } else {
        form[..digits].parse().ok()?
    };
    let mut rest = form[digits..].chars();
    let kind = rest.next()?.to_ascii_uppercase();
    let element = if matches!(kind, 'P' | 'Q') {
        rest.next()?.to_ascii_uppercase()
    } else {
        kind
    };
    Some((repeat, kind, element))
}

fn element_bytes(kind: char) -> usize {
    match kind {
        'L' | 'B' | 'A' | 'X' => 1,
        'I' => 2,
        'J' | 'E' => 4,
        'K' | 'D' | 'C' | 'P' => 8,
        'M' | 'Q' => 16,
        _ => 0,
    }
}

fn column_bytes(repeat: usize, kind: char) -> usize {
    if kind == 'X' {
        return repeat.div_ceil(8);
    }
    repeat.saturating_mul(element_bytes(kind))
}

/// Bytes of one cell: the row's slice for a fixed column or the heap array for P/Q.
fn cell<'a>(
    layout: &Layout,
    data: &'a [u8],
    row: usize,
    column: &Column,
) -> Result<&'a [u8], FitsError> {
    let row_start = row * layout.row_bytes;
    let width = column_bytes(column.repeat, column.kind);
    let start = row_start.checked_add(column.offset_bytes);
    let end = start.and_then(|start| start.checked_add(width));
    let fixed = start
        .zip(end)
        .and_then(|(start, end)| data.get(start..end))
        .filter(|fixed| fixed.len() >= element_bytes(column.kind).min(16))
        .ok_or_else(|| {
            corrupt(
                layout,
                row,
                format!("column {} lies outside the table", column.name),
            )
        })?;

    if !matches!(column.kind, 'P' | 'Q') {
        return Ok(fixed);
    }

    let (count, offset) = if column.kind == 'P' {
        let count = u32::from_be_bytes(fixed[0..4].try_into().unwrap_or_default());
        let offset = u32::from_be_bytes(fixed[4..8].try_into().unwrap_or_default());
        (u64::from(count), u64::from(offset))
    } else {
        let count = u64::from_be_bytes(fixed[0..8].try_into().unwrap_or_default());
        let offset = u64::from_be_bytes(fixed[8..16].try_into().unwrap_or_default());
        (count, offset)
    };

    let start = (layout.heap_offset_bytes as u64).saturating_add(offset);
    let length = count.saturating_mul(element_bytes(column.element) as u64);
    let end = start.saturating_add(length);
    data.get(start as usize..end.min(usize::MAX as u64) as usize)
        .filter(|_| end <= data.len() as u64)
        .ok_or_else(|| {
            corrupt(
                layout,
                row,
                format!("heap array of {length} bytes at heap offset {offset} lies outside the data unit"),
            )
        })
}

fn find_column<'a>(layout: &'a Layout, name: &str) -> Option<&'a Column> {
    layout.columns.iter().find(|column| column.name == name)
}

/// Reads a scalar per-tile value (`ZSCALE`, `ZZERO`, `ZBLANK`) from its column.
fn column_number(
    layout: &Layout,
    data: &[u8],
    row: usize,
    name: &str,
) -> Result<Option<f64>, FitsError> {
    let Some(column) = find_column(layout, name) else {
        return Ok(None);
    };
    let bytes = cell(layout, data, row, column)?;
    let value = match column.kind {
        'D' => f64::from_be_bytes(bytes[..8].try_into().unwrap_or_default()),
        'E' => f64::from(f32::from_be_bytes(
            bytes[..4].try_into().unwrap_or_default(),
        )),
        'J' => f64::from(i32::from_be_bytes(
            bytes[..4].try_into().unwrap_or_default(),
        )),
        'K' => i64::from_be_bytes(bytes[..8].try_into().unwrap_or_default()) as f64,
        'I' => f64::from(i16::from_be_bytes(
            bytes[..2].try_into().unwrap_or_default(),
        )),
        other => {
            return Err(corrupt(
                layout,
                row,
                format!("column {name} has unsupported type {other}"),
            ));
        }
    };
    Ok(Some(value))
}

fn decode_tile(
    layout: &Layout,
    header: &Header,
    data: &[u8],
    row: usize,
    pixel_count: usize,
    scaling: &Scaling,
) -> Result<Vec<f32>, FitsError> {
    if row >= layout.rows {
        return Err(corrupt(
            layout,
            row,
            format!("the table has only {} rows", layout.rows),
        ));
    }

    let compressed = find_column(layout, "COMPRESSED_DATA")
        .map(|column| cell(layout, data, row, column))
        .transpose()?
        .unwrap_or_default();

    if compressed.is_empty() {
        return decode_fallback_tile(layout, data, row, pixel_count);
    }

    let integers = decompress_integers(layout, compressed, row, pixel_count)?;
    if integers.len() != pixel_count {
        return Err(corrupt(
            layout,
            row,
            format!("decoded {} pixels, expected {pixel_count}", integers.len()),
        ));
    }

    let blank = match column_number(layout, data, row, "ZBLANK")? {
        Some(value) => Some(value as i64),
        None => header.get_i64("ZBLANK"),
    };

    match layout.quantize {
        Some(method) => {
            let tile = TileQuantization {
                method,
                scale: column_or_keyword(layout, header, data, row, "ZSCALE", 1.0)?,
                zero: column_or_keyword(layout, header, data, row, "ZZERO", 0.0)?,
                blank,
                tile_row: row + 1,
                zdither0: layout.zdither0,
            };
            Ok(unquantize(&integers, &tile))
        }
        None if layout.zbitpix < 0 => Ok(integers
            .iter()
            .map(|bits| float_from_bits(*bits, layout.zbitpix))
            .collect()),
        None => {
            let integer_scaling = Scaling {
                blank: blank.or(scaling.blank),
                ..*scaling
            };
            Ok(integers
                .iter()
                .map(|raw| integer_scaling.integer_to_physical(*raw))
                .collect())
        }
    }
}

fn column_or_keyword(
    layout: &Layout,
    header: &Header,
    data: &[u8],
    row: usize,
    name: &str,
    default: f64,
) -> Result<f64, FitsError> {
    Ok(column_number(layout, data, row, name)?
        .or_else(|| header.get_f64(name))
        .unwrap_or(default))
}

/// Reinterprets stored bits of a losslessly compressed float pixel.
fn float_from_bits(bits: i64, zbitpix: i64) -> f32 {
    if zbitpix == -32 {
        f32::from_bits(bits as u32)
    } else {
        f64::from_bits(bits as u64) as f32
    }
}

/// Width in bytes of one stored integer before compression.
fn stored_bytes(layout: &Layout) -> usize {
    match layout.quantize {
        Some(_) => 4,
        None => (layout.zbitpix.unsigned_abs() / 8) as usize,
    }
}

fn decompress_integers(
    layout: &Layout,
    compressed: &[u8],
    row: usize,
    pixel_count: usize,
) -> Result<Vec<i64>, FitsError> {
    match layout.algorithm.as_str() {
        "RICE_1" | "RICE_ONE" => {
            let mut values = rice::decode(
                compressed,
                pixel_count,
                layout.rice_bytepix,
                layout.rice_block_size,
            )
            .map_err(|detail| corrupt(layout, row, format!("RICE_1: {detail}")))?;
            if layout.zbitpix == 8 {
                values.iter_mut().for_each(|value| *value &= 0xff);
            }
            Ok(values)
        }
        "GZIP_1" | "GZIP_2" => {
            let raw = gunzip_tile(layout, compressed, row, pixel_count * 8)?;
            let width = gzip_sample_bytes(layout, raw.len(), pixel_count).ok_or_else(|| {
                corrupt(
                    layout,
                    row,
                    format!(
                        "gzip tile holds {} bytes for {pixel_count} pixels",
                        raw.len()
                    ),
                )
            })?;
            let mut raw = raw;
            if layout.algorithm == "GZIP_2" {
                raw = unshuffle(&raw, width);
            }
            Ok(big_endian_integers(&raw, width, layout.zbitpix == 8))
        }
        _ => {
            let width = stored_bytes(layout);
            Ok(big_endian_integers(compressed, width, layout.zbitpix == 8))
        }
    }
}

/// Returns the sample width of a gunzipped tile: the stored width, or 4 bytes. The
/// 16-bit `m13_gzip.fits` from astropy (CFITSIO, 2006) stores its tiles as 32-bit integers.
fn gzip_sample_bytes(layout: &Layout, raw_bytes: usize, pixel_count: usize) -> Option<usize> {
    let stored = stored_bytes(layout);
    [stored, 4]
        .into_iter()
        .find(|width| *width >= stored && raw_bytes == pixel_count * width)
}

/// Gunzips a tile, reading at most `max_bytes` so a hostile stream cannot grow unbounded.
fn gunzip_tile(
    layout: &Layout,
    compressed: &[u8],
    row: usize,
    max_bytes: usize,
) -> Result<Vec<u8>, FitsError> {
    let mut raw = Vec::new();
    flate2::read::GzDecoder::new(compressed)
        .take(max_bytes as u64 + 1)
        .read_to_end(&mut raw)
        .map_err(|error| corrupt(layout, row, format!("gzip: {error}")))?;

    if raw.len() > max_bytes {
        return Err(corrupt(
            layout,
            row,
            format!("gzip tile holds more than {max_bytes} bytes"),
        ));
    }
    Ok(raw)
}

/// Reverses `GZIP_2` byte shuffling (all first bytes, then all second bytes, ...).
fn unshuffle(shuffled: &[u8], width: usize) -> Vec<u8> {
    let count = shuffled.len() / width;
    let mut out = vec![0u8; shuffled.len()];
    for (plane, chunk) in shuffled.chunks_exact(count.max(1)).enumerate().take(width) {
        for (index, byte) in chunk.iter().enumerate() {
            out[index * width + plane] = *byte;
        }
    }
    out
}

fn big_endian_integers(raw: &[u8], width: usize, unsigned_bytes: bool) -> Vec<i64> {
    raw.chunks_exact(width)
        .map(|chunk| match width {
            1 if unsigned_bytes => i64::from(chunk[0]),
            1 => i64::from(chunk[0] as i8),
            2 => i64::from(i16::from_be_bytes([chunk[0], chunk[1]])),
            4 => i64::from(i32::from_be_bytes(chunk.try_into().unwrap_or_default())),
            _ => i64::from_be_bytes(chunk.try_into().unwrap_or_default()),
        })
        .collect()
}

/// Decodes a float tile stored in `GZIP_COMPRESSED_DATA` or `UNCOMPRESSED_DATA`, which
/// CFITSIO writes when a tile cannot be quantised.
fn decode_fallback_tile(
    layout: &Layout,
    data: &[u8],
    row: usize,
    pixel_count: usize,
) -> Result<Vec<f32>, FitsError> {
    let sample_bytes = (layout.zbitpix.unsigned_abs() / 8) as usize;
    let identity = Scaling {
        bscale: 1.0,
        bzero: 0.0,
        blank: None,
    };

    if let Some(column) = find_column(layout, "GZIP_COMPRESSED_DATA") {
        let compressed = cell(layout, data, row, column)?;
        let raw = gunzip_tile(layout, compressed, row, pixel_count * sample_bytes)?;
        if raw.len() != pixel_count * sample_bytes {
            return Err(corrupt(
                layout,
                row,
                format!(
                    "gzip tile holds {} bytes for {pixel_count} pixels",
                    raw.len()
                ),
            ));
        }
        return Ok(convert_big_endian(&raw, layout.zbitpix, &identity));
    }

    if let Some(column) = find_column(layout, "UNCOMPRESSED_DATA") {
        let raw = cell(layout, data, row, column)?;
        let bitpix = match column.element {
            'E' => -32,
            'D' => -64,
            'I' => 16,
            'J' => 32,
            'K' => 64,
            _ => 8,
        };
        let values = convert_big_endian(raw, bitpix, &identity);
        if values.len() == pixel_count {
            return Ok(values);
        }
    }

    Err(corrupt(
        layout,
        row,
        "the tile has no compressed data".to_string(),
    ))
}
