//! JPEG structure checks that run before pixel decoding.
//!
//! [`check_jpeg`] walks the markers from SOI to EOI and fails with
//! [`ImageError::Truncated`] when the file ends first. For baseline and extended
//! sequential Huffman JPEGs (SOF0/SOF1) whose first scan contains every component, it
//! also walks the Huffman codes of that scan and checks that the scan codes every MCU
//! before the next marker. That catches a JPEG whose lower part is missing even when an
//! EOI marker was appended, which lenient decoders render as grey. Progressive and
//! arithmetic-coded scans are checked only for the EOI marker.

use crate::ImageError;

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

pub(crate) fn truncated(detail: String) -> ImageError {
    ImageError::Truncated {
        format: "JPEG",
        detail,
    }
}

pub(crate) fn corrupt(detail: String) -> ImageError {
    ImageError::Corrupt {
        format: "JPEG",
        detail,
    }
}

/// Frame component: id and sampling factors.
#[derive(Debug, Clone, Copy)]
struct FrameComponent {
    id: u8,
    horizontal: u8,
    vertical: u8,
}

/// Canonical Huffman table as `MAXCODE`/`VALPTR` lookups (ITU-T T.81, annex F), plus a
/// lookahead table that resolves codes of up to [`LOOKAHEAD_BITS`] bits in one step.
#[derive(Debug, Clone)]
struct HuffmanTable {
    max_code: [i32; 17],
    value_offset: [i32; 17],
    values: Vec<u8>,
    /// Indexed by the next `LOOKAHEAD_BITS` bits: `(code length, value)`, or length 0
    /// where the slow path must decide (longer code, invalid code or value out of range).
    lookahead: Vec<(u8, u8)>,
}

/// Bits resolved by one lookup in [`HuffmanTable::lookahead`].
const LOOKAHEAD_BITS: u32 = 11;

impl HuffmanTable {
    /// Matches the first `length` bits of `code` the way annex F's DECODE procedure does;
    /// `Some(Err(()))` for a code whose value index is out of range.
    fn lookup(&self, length: usize, code: i32) -> Option<Result<u8, ()>> {
        if code > self.max_code[length] {
            return None;
        }
        let index = (self.value_offset[length] + code) as usize;
        Some(self.values.get(index).copied().ok_or(()))
    }
}

/// Everything the scan check needs, gathered while walking the markers.
#[derive(Default)]
struct Walk {
    frame: Option<JpegInfo>,
    sequential_huffman: bool,
    components: Vec<FrameComponent>,
    dc_tables: [Option<HuffmanTable>; 4],
    ac_tables: [Option<HuffmanTable>; 4],
    restart_interval: u32,
    adobe_transform: Option<u8>,
    first_scan_checked: bool,
    seen_scan: bool,
}

/// Walks the JPEG structure as described in the module docs and returns frame facts.
pub fn check_jpeg(bytes: &[u8]) -> Result<JpegInfo, ImageError> {
    if !bytes.starts_with(&[0xff, 0xd8]) {
        return Err(corrupt("missing SOI marker at the start".to_string()));
    }

    let mut walk = Walk::default();
    let mut position = 2;

    loop {
        let (marker, after_marker) = next_marker(bytes, position)?;
        position = after_marker;

        match marker {
            0xd9 => break,
            0xd0..=0xd7 | 0x01 => continue,
            0xd8 => {
                return Err(corrupt(format!(
                    "second SOI marker at byte {}",
                    position - 2
                )));
            }
            _ => {}
        }

        let segment = read_segment(bytes, position, marker)?;
        position += 2 + segment.len();
        handle_segment(&mut walk, marker, segment)?;

        if marker == 0xda {
            position = handle_scan(&mut walk, bytes, segment, position)?;
        }
    }

    let frame = walk
        .frame
        .ok_or_else(|| corrupt("no start-of-frame (SOF) marker before EOI".to_string()))?;
    if !walk.seen_scan {
        return Err(corrupt("no scan (SOS) before EOI".to_string()));
    }
    Ok(JpegInfo {
        adobe_transform: walk.adobe_transform,
        ..frame
    })
}

fn handle_segment(walk: &mut Walk, marker: u8, segment: &[u8]) -> Result<(), ImageError> {
    if is_start_of_frame(marker) {
        let (frame, components) = parse_frame(segment, marker)?;
        walk.frame = Some(frame);
        walk.components = components;
        walk.sequential_huffman = matches!(marker, 0xc0 | 0xc1);
    } else if marker == 0xc4 {
        parse_huffman_tables(walk, segment)?;
    } else if marker == 0xdd && segment.len() >= 2 {
        walk.restart_interval = u32::from(u16::from_be_bytes([segment[0], segment[1]]));
    } else if marker == 0xee && segment.starts_with(b"Adobe") && segment.len() >= 12 {
        walk.adobe_transform = Some(segment[11]);
    }
    Ok(())
}

/// Skips the entropy-coded data of a scan, checking the first sequential scan's MCUs.
fn handle_scan(
    walk: &mut Walk,
    bytes: &[u8],
    header: &[u8],
    data_start: usize,
) -> Result<usize, ImageError> {
    walk.seen_scan = true;
    let data_end = skip_entropy_data(bytes, data_start)?;

    if walk.sequential_huffman && !walk.first_scan_checked {
        walk.first_scan_checked = true;
        check_sequential_scan(walk, header, &bytes[data_start..data_end])?;
    }
    Ok(data_end)
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
        Some(other) => {
            return Err(corrupt(format!(
                "expected a marker at byte {cursor}, found 0x{other:02X}"
            )));
        }
    }

    while bytes.get(cursor) == Some(&0xff) {
        cursor += 1;
    }
    match bytes.get(cursor) {
        Some(marker) => Ok((*marker, cursor + 1)),
        None => Err(truncated(format!(
            "the file ends at byte {} inside a marker",
            bytes.len()
        ))),
    }
}

fn read_segment(bytes: &[u8], position: usize, marker: u8) -> Result<&[u8], ImageError> {
    let Some(length_bytes) = bytes.get(position..position + 2) else {
        return Err(truncated(format!(
            "the file ends inside the 0x{marker:02X} segment length"
        )));
    };
    let length = usize::from(u16::from_be_bytes([length_bytes[0], length_bytes[1]]));
    if length < 2 {
        return Err(corrupt(format!(
            "segment 0x{marker:02X} at byte {position} has invalid length {length}"
        )));
    }
    bytes.get(position + 2..position + length).ok_or_else(|| {
        truncated(format!(
            "the file ends inside the 0x{marker:02X} segment at byte {position}"
        ))
    })
}

fn is_start_of_frame(marker: u8) -> bool {
    (0xc0..=0xcf).contains(&marker) && !matches!(marker, 0xc4 | 0xc8 | 0xcc)
}

fn parse_frame(segment: &[u8], marker: u8) -> Result<(JpegInfo, Vec<FrameComponent>), ImageError> {
    if segment.len() < 6 {
        return Err(corrupt(format!(
            "SOF segment of {} bytes is too short",
            segment.len()
        )));
    }
    let height_px = u32::from(u16::from_be_bytes([segment[1], segment[2]]));
    let width_px = u32::from(u16::from_be_bytes([segment[3], segment[4]]));
    if width_px == 0 || height_px == 0 {
        return Err(corrupt(format!(
            "SOF declares an empty {width_px}x{height_px} frame"
        )));
    }

    let count = usize::from(segment[5]);
    let component_bytes = segment.get(6..6 + 3 * count).ok_or_else(|| {
        corrupt(format!(
            "SOF lists {count} components but is too short for them"
        ))
    })?;
    let components = component_bytes
        .chunks_exact(3)
        .map(|entry| FrameComponent {
            id: entry[0],
            horizontal: (entry[1] >> 4).max(1),
            vertical: (entry[1] & 0x0f).max(1),
        })
        .collect();

    let info = JpegInfo {
        width_px,
        height_px,
        components: segment[5],
        progressive: matches!(marker, 0xc2 | 0xc6 | 0xca | 0xce),
        adobe_transform: None,
    };
    Ok((info, components))
}

fn parse_huffman_tables(walk: &mut Walk, segment: &[u8]) -> Result<(), ImageError> {
    let mut rest = segment;
    while !rest.is_empty() {
        if rest.len() < 17 {
            return Err(corrupt(
                "DHT segment ends inside a table header".to_string(),
            ));
        }
        let class = rest[0] >> 4;
        let id = usize::from(rest[0] & 0x0f);
        let counts: [u8; 16] = rest[1..17].try_into().unwrap_or_default();
        let total: usize = counts.iter().map(|count| usize::from(*count)).sum();
        let values = rest
            .get(17..17 + total)
            .ok_or_else(|| corrupt("DHT segment ends inside a table".to_string()))?
            .to_vec();

        let table = build_table(&counts, values);
        match (class, id) {
            (0, 0..=3) => walk.dc_tables[id] = Some(table),
            (1, 0..=3) => walk.ac_tables[id] = Some(table),
            _ => return Err(corrupt(format!("DHT has invalid class {class} or id {id}"))),
        }
        rest = &rest[17 + total..];
    }
    Ok(())
}

fn build_table(counts: &[u8; 16], values: Vec<u8>) -> HuffmanTable {
    let mut max_code = [-1i32; 17];
    let mut value_offset = [0i32; 17];
    let mut code = 0i32;
    let mut index = 0i32;

    for length in 1..=16 {
        let count = i32::from(counts[length - 1]);
        if count > 0 {
            value_offset[length] = index - code;
            code += count;
            index += count;
            max_code[length] = code - 1;
        }
        code <<= 1;
    }
    let mut table = HuffmanTable {
        max_code,
        value_offset,
        values,
        lookahead: Vec::new(),
    };
    table.lookahead = (0..1u32 << LOOKAHEAD_BITS)
        .map(|bits| lookahead_entry(&table, bits))
        .collect();
    table
}

/// Runs the bit-by-bit decode on the top bits of `bits`, so the lookahead table agrees
/// with the slow path on every input, malformed tables included.
fn lookahead_entry(table: &HuffmanTable, bits: u32) -> (u8, u8) {
    for length in 1..=LOOKAHEAD_BITS {
        let code = (bits >> (LOOKAHEAD_BITS - length)) as i32;
        match table.lookup(length as usize, code) {
            None => continue,
            Some(Ok(value)) => return (length as u8, value),
            Some(Err(())) => return (0, 0),
        }
    }
    (0, 0)
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

/// Reads entropy-coded bits, removing stuffed zero bytes and stopping at markers.
///
/// Bits are kept left-aligned in a 64-bit buffer. A marker or the end of the data stops
/// the refill until [`ScanBits::restart`] passes an RSTn marker.
struct ScanBits<'a> {
    data: &'a [u8],
    /// Next byte to load into the buffer.
    position: usize,
    buffer: u64,
    /// Valid bits at the top of `buffer`.
    count: u32,
    /// A marker (or the end of the data) sits at `position`.
    at_marker: bool,
}

impl<'a> ScanBits<'a> {
    fn new(data: &'a [u8]) -> Self {
        Self {
            data,
            position: 0,
            buffer: 0,
            count: 0,
            at_marker: false,
        }
    }

    fn refill(&mut self) {
        if self.refill_word() {
            return;
        }
        while self.count <= 56 && !self.at_marker {
            let Some(&byte) = self.data.get(self.position) else {
                self.at_marker = true;
                return;
            };
            if byte == 0xff {
                if self.data.get(self.position + 1) != Some(&0x00) {
                    self.at_marker = true;
                    return;
                }
                self.position += 1;
            }
            self.position += 1;
            self.buffer |= u64::from(byte) << (56 - self.count);
            self.count += 8;
        }
    }

    /// Fast path of [`ScanBits::refill`]: loads whole bytes from the next eight at once
    /// when none of them is 0xFF. Returns false when the byte loop must run instead.
    fn refill_word(&mut self) -> bool {
        if self.at_marker || self.count > 56 {
            return false;
        }
        let Some(chunk) = self.data.get(self.position..self.position + 8) else {
            return false;
        };
        let word = u64::from_be_bytes(chunk.try_into().expect("eight bytes"));
        let inverted = !word;
        let has_ff_byte =
            inverted.wrapping_sub(0x0101_0101_0101_0101) & !inverted & 0x8080_8080_8080_8080 != 0;
        if has_ff_byte {
            return false;
        }

        let bytes = (64 - self.count) / 8;
        let loaded = if bytes == 8 {
            word
        } else {
            word & !(u64::MAX >> (8 * bytes))
        };
        self.buffer |= loaded >> self.count;
        self.count += 8 * bytes;
        self.position += bytes as usize;
        true
    }

    fn consume(&mut self, count: u32) {
        self.buffer <<= count;
        self.count -= count;
    }

    /// Skips `count` bits (at most 16); `None` when a marker or the end comes first.
    fn skip(&mut self, count: u8) -> Option<()> {
        let count = u32::from(count);
        if self.count < count {
            self.refill();
            if self.count < count {
                return None;
            }
        }
        self.consume(count);
        Some(())
    }

    fn decode(&mut self, table: &HuffmanTable) -> Result<Option<u8>, String> {
        if self.count < 16 {
            self.refill();
        }
        let (length, value) = table.lookahead[(self.buffer >> (64 - LOOKAHEAD_BITS)) as usize];
        if length != 0 && u32::from(length) <= self.count {
            self.consume(u32::from(length));
            return Ok(Some(value));
        }
        self.decode_slowly(table)
    }

    /// Decodes an AC symbol and skips the extra bits its size announces, in one step when
    /// code and extra bits fit the lookahead.
    fn decode_ac(&mut self, table: &HuffmanTable) -> Result<Option<u8>, String> {
        if self.count < 32 {
            self.refill();
        }
        let (length, symbol) = table.lookahead[(self.buffer >> (64 - LOOKAHEAD_BITS)) as usize];
        let total = u32::from(length) + u32::from(symbol & 0x0f);
        if length != 0 && total <= self.count {
            self.consume(total);
            return Ok(Some(symbol));
        }

        let Some(symbol) = self.decode(table)? else {
            return Ok(None);
        };
        Ok(self.skip(symbol & 0x0f).map(|()| symbol))
    }

    /// Annex F's DECODE, one code length at a time, for codes the lookahead cannot settle.
    fn decode_slowly(&mut self, table: &HuffmanTable) -> Result<Option<u8>, String> {
        for length in 1..=16u32 {
            if length > self.count {
                return Ok(None);
            }
            let code = (self.buffer >> (64 - length)) as i32;
            match table.lookup(length as usize, code) {
                None => continue,
                Some(Ok(value)) => {
                    self.consume(length);
                    return Ok(Some(value));
                }
                Some(Err(())) => return Err("Huffman value out of range".to_string()),
            }
        }
        Err(format!(
            "invalid Huffman code at scan byte {}",
            self.position
        ))
    }

    /// Drops the bits up to the byte boundary and passes an RSTn marker, if one follows.
    fn restart(&mut self) {
        self.consume(self.count % 8);
        if self.count > 0 {
            return;
        }
        let is_restart = self.data.get(self.position) == Some(&0xff)
            && self
                .data
                .get(self.position + 1)
                .is_some_and(|marker| (0xd0..=0xd7).contains(marker));
        if is_restart {
            self.position += 2;
            self.at_marker = false;
        }
    }
}

/// Tables and block counts of each scan component, in scan order.
struct ScanComponent<'a> {
    dc: &'a HuffmanTable,
    ac: &'a HuffmanTable,
    blocks_per_mcu: u32,
}

fn check_sequential_scan(walk: &Walk, header: &[u8], data: &[u8]) -> Result<(), ImageError> {
    let Some(frame) = walk.frame else {
        return Err(corrupt("SOS before SOF".to_string()));
    };
    let Some((components, total_mcus)) = scan_layout(walk, header, &frame) else {
        // A partial first scan or missing tables: leave the check to the decoder.
        return Ok(());
    };

    let mut bits = ScanBits::new(data);
    for mcu in 0..total_mcus {
        let restart_due = walk.restart_interval > 0 && mcu > 0 && mcu % walk.restart_interval == 0;
        if restart_due {
            bits.restart();
        }

        let coded = decode_mcu(&mut bits, &components)
            .map_err(|detail| corrupt(format!("{detail} in MCU {mcu}")))?;
        if !coded {
            return Err(truncated(format!(
                "the scan data ends after {mcu} of {total_mcus} MCUs, so the lower part of the image is missing"
            )));
        }
    }
    Ok(())
}

/// Returns the scan's components and the MCU count, or `None` when the check does not apply.
fn scan_layout<'a>(
    walk: &'a Walk,
    header: &[u8],
    frame: &JpegInfo,
) -> Option<(Vec<ScanComponent<'a>>, u32)> {
    let count = usize::from(*header.first()?);
    if count != walk.components.len() || header.len() < 1 + 2 * count {
        return None;
    }

    let max_horizontal = u32::from(
        walk.components
            .iter()
            .map(|component| component.horizontal)
            .max()?,
    );
    let max_vertical = u32::from(
        walk.components
            .iter()
            .map(|component| component.vertical)
            .max()?,
    );
    let mut components = Vec::new();

    for entry in header[1..1 + 2 * count].chunks_exact(2) {
        let frame_component = walk
            .components
            .iter()
            .find(|component| component.id == entry[0])?;
        let blocks_per_mcu = if count == 1 {
            1
        } else {
            u32::from(frame_component.horizontal) * u32::from(frame_component.vertical)
        };
        components.push(ScanComponent {
            dc: walk.dc_tables.get(usize::from(entry[1] >> 4))?.as_ref()?,
            ac: walk.ac_tables.get(usize::from(entry[1] & 0x0f))?.as_ref()?,
            blocks_per_mcu,
        });
    }

    let total_mcus = if count == 1 {
        let component = walk.components[0];
        let width = (frame.width_px * u32::from(component.horizontal)).div_ceil(max_horizontal);
        let height = (frame.height_px * u32::from(component.vertical)).div_ceil(max_vertical);
        width.div_ceil(8) * height.div_ceil(8)
    } else {
        frame.width_px.div_ceil(8 * max_horizontal) * frame.height_px.div_ceil(8 * max_vertical)
    };
    Some((components, total_mcus))
}

/// Walks the Huffman codes of one MCU; returns `Ok(false)` when the data ends first.
fn decode_mcu(bits: &mut ScanBits, components: &[ScanComponent]) -> Result<bool, String> {
    for component in components {
        for _ in 0..component.blocks_per_mcu {
            if !decode_block(bits, component)? {
                return Ok(false);
            }
        }
    }
    Ok(true)
}

fn decode_block(bits: &mut ScanBits, component: &ScanComponent) -> Result<bool, String> {
    let Some(dc_size) = bits.decode(component.dc)? else {
        return Ok(false);
    };
    if dc_size > 16 {
        return Err(format!("DC coefficient size {dc_size} exceeds 16 bits"));
    }
    if bits.skip(dc_size).is_none() {
        return Ok(false);
    }

    let mut index = 1;
    while index < 64 {
        // The symbol's extra bits are skipped with it: the check needs only run and size.
        let Some(symbol) = bits.decode_ac(component.ac)? else {
            return Ok(false);
        };
        let (run, size) = (symbol >> 4, symbol & 0x0f);
        if size == 0 {
            if run != 15 {
                break;
            }
            index += 16;
            continue;
        }
        index += usize::from(run) + 1;
    }
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// Decodes without the lookahead table, as the reference for the fast path.
    fn decode_reference(bits: &mut ScanBits, table: &HuffmanTable) -> Result<Option<u8>, String> {
        bits.refill();
        bits.decode_slowly(table)
    }

    proptest! {
        #[test]
        fn lookahead_matches_bit_by_bit_decoding(
            counts in proptest::array::uniform16(0u8..6),
            values in proptest::collection::vec(any::<u8>(), 0..80),
            data in proptest::collection::vec(prop_oneof![any::<u8>(), Just(0xff), Just(0x00)], 0..64),
            skips in proptest::collection::vec(0u8..17, 1..8),
        ) {
            let table = build_table(&counts, values);
            let mut fast = ScanBits::new(&data);
            let mut reference = ScanBits::new(&data);
            for step in 0..200 {
                let expected = decode_reference(&mut reference, &table).map_err(|_| ());
                let actual = fast.decode(&table).map_err(|_| ());
                prop_assert_eq!(actual, expected, "step {}", step);
                if !matches!(expected, Ok(Some(_))) {
                    break;
                }
                let skip = skips[step % skips.len()];
                prop_assert_eq!(fast.skip(skip), reference.skip(skip));

                let expected = decode_reference(&mut reference, &table)
                    .map(|symbol| symbol.and_then(|s| reference.skip(s & 0x0f).map(|()| s)))
                    .map_err(|_| ());
                prop_assert_eq!(fast.decode_ac(&table).map_err(|_| ()), expected, "AC step {}", step);
                if !matches!(expected, Ok(Some(_))) {
                    break;
                }
            }
        }
    }

    #[test]
    fn reader_skips_stuffing_and_stops_at_markers() {
        let data = [0b1010_1010, 0xff, 0x00, 0x0f, 0xff, 0xd9];
        let mut bits = ScanBits::new(&data);
        bits.skip(8).unwrap();
        bits.skip(8).unwrap();
        assert_eq!(bits.buffer >> 56, 0x0f);
        bits.skip(8).unwrap();
        assert!(bits.skip(1).is_none(), "the EOI marker ends the scan data");
    }
}
