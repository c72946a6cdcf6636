//! HDU structure: where each header and data unit starts and what kind of HDU it is.
//!
//! Invariant: [`walk_hdus`] returns only when every HDU's declared data lies inside the
//! file and each HDU is followed by the end of the file, a valid `XTENSION` header, or
//! bytes that are all zero or blank (padding some writers leave). Missing padding after
//! the last HDU is accepted because common writers omit it.

use super::FitsError;
use super::header::{BLOCK_BYTES, Header, parse_header};

/// Kind of HDU content, as far as image reading is concerned.
#[derive(Debug, Clone, PartialEq)]
pub enum HduKind {
    /// Primary or `IMAGE` extension with `NAXIS >= 2` and a non-empty first plane.
    Image,
    /// `BINTABLE` with `ZIMAGE = T`: a tile-compressed image.
    CompressedImage,
    /// An image layout this reader does not decode, with the feature name.
    Unsupported(String),
    /// No data (`NAXIS = 0`, or a zero-length axis).
    Empty,
    /// A table or an extension type without image pixels.
    Table,
}

/// Position and kind of one HDU inside the file.
#[derive(Debug, Clone)]
pub struct HduLayout {
    pub index: usize,
    pub header: Header,
    pub header_offset_bytes: usize,
    pub data_offset_bytes: usize,
    /// Declared data size without block padding.
    pub data_bytes: usize,
    pub kind: HduKind,
}

/// Checks that the file starts with a `SIMPLE = T` card.
pub fn check_simple(bytes: &[u8]) -> Result<(), FitsError> {
    let first_card = &bytes[..bytes.len().min(80)];
    let starts_simple = first_card.starts_with(b"SIMPLE  =")
        && first_card.len() == 80
        && first_card[10..].iter().find(|byte| **byte != b' ') == Some(&b'T');

    if starts_simple {
        return Ok(());
    }
    Err(FitsError::NotFits {
        found: String::from_utf8_lossy(first_card).trim_end().to_string(),
    })
}

/// Walks all HDUs and checks the file structure described in the module docs.
pub fn walk_hdus(bytes: &[u8]) -> Result<Vec<HduLayout>, FitsError> {
    check_simple(bytes)?;

    let mut layouts = Vec::new();
    let mut offset_bytes = 0;

    loop {
        let index = layouts.len();
        let layout = read_layout(bytes, index, offset_bytes)?;
        let padded_bytes = layout.data_bytes.div_ceil(BLOCK_BYTES) * BLOCK_BYTES;
        let next_offset = layout.data_offset_bytes + padded_bytes;
        layouts.push(layout);

        if next_offset >= bytes.len() || is_padding(&bytes[next_offset..]) {
            return Ok(layouts);
        }
        if !bytes[next_offset..].starts_with(b"XTENSION=") {
            return Err(FitsError::InvalidHeader {
                offset_bytes: next_offset as u64,
                detail: format!(
                    "HDU {index} ends here but the next block does not start with XTENSION (found {:?})",
                    String::from_utf8_lossy(&bytes[next_offset..bytes.len().min(next_offset + 16)])
                ),
            });
        }
        offset_bytes = next_offset;
    }
}

fn is_padding(rest: &[u8]) -> bool {
    rest.iter().all(|byte| *byte == 0 || *byte == b' ')
}

fn read_layout(
    bytes: &[u8],
    index: usize,
    header_offset_bytes: usize,
) -> Result<HduLayout, FitsError> {
    let (header, data_offset_bytes) = parse_header(bytes, header_offset_bytes)?;
    let data_bytes = declared_data_bytes(&header, index)?;

    let available_bytes = bytes.len().saturating_sub(data_offset_bytes);
    if data_bytes > available_bytes {
        return Err(FitsError::Truncated {
            hdu: Some(index),
            offset_bytes: data_offset_bytes as u64,
            expected_bytes: data_bytes as u64,
            available_bytes: available_bytes as u64,
        });
    }

    let kind = classify(&header, index);
    Ok(HduLayout {
        index,
        header,
        header_offset_bytes,
        data_offset_bytes,
        data_bytes,
        kind,
    })
}

/// Reads an integer keyword that the FITS standard requires.
pub fn required_int(header: &Header, hdu: usize, keyword: &str) -> Result<i64, FitsError> {
    header
        .get_i64(keyword)
        .ok_or_else(|| FitsError::InvalidKeyword {
            hdu,
            keyword: keyword.to_string(),
            detail: "expected an integer value".to_string(),
        })
}

/// Returns `NAXISn` values for `n = 1..=NAXIS`, each checked to be non-negative.
pub fn axes(header: &Header, hdu: usize, prefix: &str) -> Result<Vec<u64>, FitsError> {
    let naxis = required_int(header, hdu, prefix)?;
    if !(0..=999).contains(&naxis) {
        return Err(invalid(hdu, prefix, format!("{naxis} is outside 0..=999")));
    }

    (1..=naxis)
        .map(|axis| {
            let keyword = format!("{prefix}{axis}");
            let length = required_int(header, hdu, &keyword)?;
            u64::try_from(length)
                .map_err(|_| invalid(hdu, &keyword, format!("{length} is negative")))
        })
        .collect()
}

fn invalid(hdu: usize, keyword: &str, detail: String) -> FitsError {
    FitsError::InvalidKeyword {
        hdu,
        keyword: keyword.to_string(),
        detail,
    }
}

/// Computes `|BITPIX| / 8 * GCOUNT * (PCOUNT + NAXIS1 * ... * NAXISn)`, the FITS data size.
fn declared_data_bytes(header: &Header, hdu: usize) -> Result<usize, FitsError> {
    let bitpix = required_int(header, hdu, "BITPIX")?;
    if ![8, 16, 32, 64, -32, -64].contains(&bitpix) {
        return Err(invalid(
            hdu,
            "BITPIX",
            format!("{bitpix} is not 8, 16, 32, 64, -32 or -64"),
        ));
    }

    let axes = axes(header, hdu, "NAXIS")?;
    if axes.is_empty() {
        return Ok(0);
    }

    // Random groups have NAXIS1 = 0, which is not part of the group size.
    let counted_axes = if is_random_groups(header) {
        &axes[1..]
    } else {
        &axes[..]
    };
    let overflow = || invalid(hdu, "NAXIS", "the declared data size overflows".to_string());

    let elements = counted_axes
        .iter()
        .try_fold(1u64, |product, length| product.checked_mul(*length))
        .ok_or_else(overflow)?;
    let pcount = u64::try_from(header.get_i64("PCOUNT").unwrap_or(0))
        .map_err(|_| invalid(hdu, "PCOUNT", "PCOUNT is negative".to_string()))?;
    let gcount = u64::try_from(header.get_i64("GCOUNT").unwrap_or(1))
        .map_err(|_| invalid(hdu, "GCOUNT", "GCOUNT is negative".to_string()))?;

    let bytes = elements
        .checked_add(pcount)
        .and_then(|count| count.checked_mul(gcount))
        .and_then(|count| count.checked_mul(bitpix.unsigned_abs() / 8))
        .ok_or_else(overflow)?;
    usize::try_from(bytes).map_err(|_| overflow())
}

fn is_random_groups(header: &Header) -> bool {
    header.get_bool("GROUPS") == Some(true) && header.get_i64("NAXIS1") == Some(0)
}

fn classify(header: &Header, index: usize) -> HduKind {
    let extension = header.get_str("XTENSION").map(str::to_ascii_uppercase);

    match extension.as_deref() {
        None if is_random_groups(header) => {
            HduKind::Unsupported("random groups (GROUPS = T) primary array".to_string())
        }
        None | Some("IMAGE") | Some("IUEIMAGE") => classify_image(header, index),
        Some("BINTABLE") if header.get_bool("ZIMAGE") == Some(true) => {
            classify_compressed(header, index)
        }
        _ => HduKind::Table,
    }
}

fn classify_image(header: &Header, index: usize) -> HduKind {
    let Ok(axes) = axes(header, index, "NAXIS") else {
        return HduKind::Empty;
    };
    let has_plane = axes.len() >= 2 && axes.iter().all(|length| *length > 0);

    if has_plane {
        HduKind::Image
    } else {
        HduKind::Empty
    }
}

fn classify_compressed(header: &Header, index: usize) -> HduKind {
    let has_plane = axes(header, index, "ZNAXIS")
        .is_ok_and(|axes| axes.len() >= 2 && axes.iter().all(|length| *length > 0));
    if !has_plane {
        return HduKind::Empty;
    }

    let algorithm = header
        .get_str("ZCMPTYPE")
        .unwrap_or("")
        .to_ascii_uppercase();

    match algorithm.as_str() {
        "RICE_1" | "RICE_ONE" | "GZIP_1" | "GZIP_2" | "NOCOMPRESS" => HduKind::CompressedImage,
        "" => HduKind::Unsupported("compressed image without ZCMPTYPE".to_string()),
        other => HduKind::Unsupported(format!("{other} tile compression")),
    }
}
