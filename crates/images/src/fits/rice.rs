//! Rice coding as used by the FITS tiled-image convention (`RICE_1`) and CFITSIO.
//!
//! A tile starts with the first pixel stored in `bytepix` big-endian bytes. Pixels then
//! follow in blocks of 32 by default. Each block starts with an `fs` code of 3, 4 or 5
//! bits (for 1, 2 or 4 byte pixels). Code 0 means all differences are zero, the maximum
//! code means differences are stored raw, and other codes give Rice-coded differences.
//! Differences are zig-zag mapped (0, -1, 1, -2, ... to 0, 1, 2, 3, ...). Arithmetic
//! wraps at the pixel width, as it does in CFITSIO.

/// Error from Rice decoding: a plain description for the tile error message.
pub type RiceError = String;

struct Params {
    fs_bits: u32,
    fs_max: i64,
    raw_bits: u32,
}

fn params(bytepix: usize) -> Result<Params, RiceError> {
    match bytepix {
        1 => Ok(Params {
            fs_bits: 3,
            fs_max: 6,
            raw_bits: 8,
        }),
        2 => Ok(Params {
            fs_bits: 4,
            fs_max: 14,
            raw_bits: 16,
        }),
        4 => Ok(Params {
            fs_bits: 5,
            fs_max: 25,
            raw_bits: 32,
        }),
        other => Err(format!("BYTEPIX {other} is not 1, 2 or 4")),
    }
}

/// Sign-extends the low `bits` bits of a wrapped sum to an `i64` pixel value.
fn wrap(value: i64, bits: u32) -> i64 {
    let shift = 64 - bits;
    (value << shift) >> shift
}

struct BitReader<'a> {
    bytes: &'a [u8],
    position: usize,
}

impl BitReader<'_> {
    fn next_byte(&mut self) -> Result<u64, RiceError> {
        let byte = self
            .bytes
            .get(self.position)
            .ok_or_else(|| format!("compressed data ends after {} bytes", self.bytes.len()))?;
        self.position += 1;
        Ok(u64::from(*byte))
    }
}

/// Decodes `pixel_count` pixels of `bytepix` bytes each.
pub fn decode(
    input: &[u8],
    pixel_count: usize,
    bytepix: usize,
    block_size: usize,
) -> Result<Vec<i64>, RiceError> {
    let params = params(bytepix)?;
    if block_size == 0 {
        return Err("BLOCKSIZE is 0".to_string());
    }
    if input.len() < bytepix {
        return Err(format!(
            "tile has {} bytes, fewer than one {bytepix}-byte pixel",
            input.len()
        ));
    }

    let mut last_pixel = input[..bytepix]
        .iter()
        .fold(0i64, |value, byte| (value << 8) | i64::from(*byte));
    let mut reader = BitReader {
        bytes: input,
        position: bytepix,
    };
    let mut output = Vec::with_capacity(pixel_count);

    // `buffer` contains `bits` not-yet-used bits in its low end.
    let mut buffer = reader.next_byte()?;
    let mut bits: i64 = 8;

    while output.len() < pixel_count {
        let block_end = (output.len() + block_size).min(pixel_count);

        bits -= i64::from(params.fs_bits);
        while bits < 0 {
            buffer = (buffer << 8) | reader.next_byte()?;
            bits += 8;
        }
        let fs = (buffer >> bits) as i64 - 1;
        buffer &= (1u64 << bits) - 1;

        if fs < 0 {
            while output.len() < block_end {
                output.push(wrap(last_pixel, params.raw_bits));
            }
            continue;
        }

        while output.len() < block_end {
            let mapped = if fs == params.fs_max {
                read_raw(&mut reader, &mut buffer, &mut bits, params.raw_bits)?
            } else {
                read_rice(&mut reader, &mut buffer, &mut bits, fs as u32)?
            };
            let difference = unmap(mapped);
            last_pixel = wrap(last_pixel.wrapping_add(difference), params.raw_bits);
            output.push(last_pixel);
        }
    }

    Ok(output)
}

fn read_raw(
    reader: &mut BitReader,
    buffer: &mut u64,
    bits: &mut i64,
    raw_bits: u32,
) -> Result<u64, RiceError> {
    let mut needed = i64::from(raw_bits);
    let mut value = 0u64;

    while needed > 0 {
        if *bits == 0 {
            *buffer = reader.next_byte()?;
            *bits = 8;
        }
        let take = needed.min(*bits);
        *bits -= take;
        value = (value << take) | (*buffer >> *bits);
        *buffer &= (1u64 << *bits) - 1;
        needed -= take;
    }
    Ok(value)
}

fn read_rice(
    reader: &mut BitReader,
    buffer: &mut u64,
    bits: &mut i64,
    fs: u32,
) -> Result<u64, RiceError> {
    // Count leading zeros of the unary part, which may span several bytes.
    let mut zeros: u64 = 0;
    loop {
        if *bits == 0 {
            *buffer = reader.next_byte()?;
            *bits = 8;
        }
        *bits -= 1;
        if (*buffer >> *bits) & 1 == 1 {
            *buffer &= (1u64 << *bits) - 1;
            break;
        }
        zeros += 1;
        if zeros > 1 << 33 {
            return Err("unary code longer than any valid difference".to_string());
        }
    }

    let low = read_raw(reader, buffer, bits, fs)?;
    Ok((zeros << fs) | low)
}

fn unmap(mapped: u64) -> i64 {
    if mapped & 1 == 0 {
        (mapped >> 1) as i64
    } else {
        !((mapped >> 1) as i64)
    }
}

fn map(difference: i64) -> u64 {
    if difference < 0 {
        ((!difference) as u64) << 1 | 1
    } else {
        (difference as u64) << 1
    }
}

struct BitWriter {
    bytes: Vec<u8>,
    buffer: u64,
    bits: u32,
}

impl BitWriter {
    fn push(&mut self, value: u64, count: u32) {
        for shift in (0..count).rev() {
            self.buffer = (self.buffer << 1) | ((value >> shift) & 1);
            self.bits += 1;
            if self.bits == 8 {
                self.bytes.push(self.buffer as u8);
                self.buffer = 0;
                self.bits = 0;
            }
        }
    }

    fn finish(mut self) -> Vec<u8> {
        if self.bits > 0 {
            self.bytes.push((self.buffer << (8 - self.bits)) as u8);
        }
        self.bytes
    }
}

/// Encodes pixels with the same block structure CFITSIO writes; used for fixtures.
pub fn encode(pixels: &[i64], bytepix: usize, block_size: usize) -> Vec<u8> {
    let params = params(bytepix).unwrap_or(Params {
        fs_bits: 5,
        fs_max: 25,
        raw_bits: 32,
    });
    let mask = if params.raw_bits == 64 {
        u64::MAX
    } else {
        (1u64 << params.raw_bits) - 1
    };
    let mut writer = BitWriter {
        bytes: Vec::new(),
        buffer: 0,
        bits: 0,
    };

    let first = pixels.first().copied().unwrap_or(0);
    writer.push(first as u64 & mask, params.raw_bits);

    let mut last_pixel = first;
    for block in pixels.chunks(block_size.max(1)) {
        let mapped: Vec<u64> = block
            .iter()
            .map(|pixel| {
                let difference = wrap(pixel.wrapping_sub(last_pixel), params.raw_bits);
                last_pixel = *pixel;
                map(difference) & mask
            })
            .collect();
        write_block(&mut writer, &mapped, &params);
    }

    writer.finish()
}

fn write_block(writer: &mut BitWriter, mapped: &[u64], params: &Params) {
    let sum: u64 = mapped
        .iter()
        .fold(0u64, |total, value| total.saturating_add(*value));
    let mean = sum / mapped.len() as u64;
    let fs = if mean == 0 {
        0
    } else {
        63 - mean.leading_zeros() as i64
    };

    if sum == 0 {
        writer.push(0, params.fs_bits);
    } else if fs >= params.fs_max - 1 {
        writer.push((params.fs_max + 1) as u64, params.fs_bits);
        for value in mapped {
            writer.push(*value, params.raw_bits);
        }
    } else {
        writer.push((fs + 1) as u64, params.fs_bits);
        for value in mapped {
            let top = value >> fs;
            writer.push(0, top as u32);
            writer.push(1, 1);
            writer.push(*value & ((1u64 << fs) - 1), fs as u32);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rice_round_trips_all_block_kinds() {
        let mut pixels: Vec<i64> = vec![7; 40];
        pixels.extend((0..50).map(|index| (index * 37 % 11) - 5));
        pixels.extend([i64::from(i32::MIN), i64::from(i32::MAX), 0, -1, 123_456_789]);
        let encoded = encode(&pixels, 4, 32);
        let decoded = decode(&encoded, pixels.len(), 4, 32).unwrap();
        assert_eq!(decoded, pixels);
    }

    #[test]
    fn rice_round_trips_short_and_byte_pixels() {
        let shorts: Vec<i64> = (0..100)
            .map(|index| (index * 997 % 65536) as i64 - 32768)
            .collect();
        let decoded = decode(&encode(&shorts, 2, 32), shorts.len(), 2, 32).unwrap();
        assert_eq!(decoded, shorts);

        let bytes: Vec<i64> = (0..70)
            .map(|index| (index * 13 % 256) as i64 - 128)
            .collect();
        let decoded = decode(&encode(&bytes, 1, 16), bytes.len(), 1, 16).unwrap();
        assert_eq!(decoded, bytes);
    }

    #[test]
    fn rice_reports_short_input() {
        let pixels: Vec<i64> = (0..64).map(|index| index * 1000).collect();
        let encoded = encode(&pixels, 4, 32);
        let error = decode(&encoded[..encoded.len() / 2], pixels.len(), 4, 32).unwrap_err();
        assert!(error.contains("ends after"), "{error}");
    }
}
