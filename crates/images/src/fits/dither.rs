//! Float quantisation with subtractive dithering, as defined by the FITS tiled-image
//! convention and written by CFITSIO.
//!
//! Each quantised integer `q` restores to `(q - r + 0.5) * ZSCALE + ZZERO`, where `r` is
//! taken from a fixed table of 10,000 pseudo-random numbers. The table position for a
//! tile starts at `(tile_row - 1 + ZDITHER0 - 1) mod 10000` (tile rows and `ZDITHER0`
//! are one-based) and advances by one per pixel, null pixels included.

use std::sync::OnceLock;

/// Length of the dithering table.
const RANDOM_COUNT: usize = 10_000;

/// Integer written for exact zeros by `SUBTRACTIVE_DITHER_2`.
pub const DITHER2_ZERO: i64 = -2_147_483_646;

/// Quantisation method from `ZQUANTIZ`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Quantize {
    NoDither,
    SubtractiveDither1,
    SubtractiveDither2,
}

/// Returns the CFITSIO dithering table (a Park–Miller generator with seed 1).
fn randoms() -> &'static [f32] {
    static TABLE: OnceLock<Vec<f32>> = OnceLock::new();
    TABLE.get_or_init(|| {
        let multiplier = 16_807.0f64;
        let modulus = 2_147_483_647.0f64;
        let mut seed = 1.0f64;
        (0..RANDOM_COUNT)
            .map(|_| {
                let product = multiplier * seed;
                seed = product - modulus * (product / modulus).trunc();
                (seed / modulus) as f32
            })
            .collect()
    })
}

/// Position in the dithering table; CFITSIO reads the table as `float`.
struct Dither {
    seed_index: usize,
    next: usize,
}

impl Dither {
    fn new(tile_row: usize, zdither0: i64) -> Self {
        let start = (tile_row as i64 - 1 + zdither0 - 1).rem_euclid(RANDOM_COUNT as i64) as usize;
        Self {
            seed_index: start,
            next: (randoms()[start] * 500.0) as usize,
        }
    }

    fn advance(&mut self) -> f64 {
        let value = f64::from(randoms()[self.next]);
        self.next += 1;
        if self.next == RANDOM_COUNT {
            self.seed_index = (self.seed_index + 1) % RANDOM_COUNT;
            self.next = (randoms()[self.seed_index] * 500.0) as usize;
        }
        value
    }
}

/// Tile parameters needed to restore or produce quantised values.
#[derive(Debug, Clone, Copy)]
pub struct TileQuantization {
    pub method: Quantize,
    pub scale: f64,
    pub zero: f64,
    pub blank: Option<i64>,
    /// One-based row of the tile in the compressed table.
    pub tile_row: usize,
    pub zdither0: i64,
}

/// Restores float values from quantised integers; blank integers become NaN.
pub fn unquantize(values: &[i64], tile: &TileQuantization) -> Vec<f32> {
    let mut dither = Dither::new(tile.tile_row, tile.zdither0);

    values
        .iter()
        .map(|value| {
            let random = if tile.method == Quantize::NoDither {
                0.5
            } else {
                dither.advance()
            };
            if tile.blank == Some(*value) {
                f32::NAN
            } else if tile.method == Quantize::SubtractiveDither2 && *value == DITHER2_ZERO {
                0.0
            } else {
                ((*value as f64 - random + 0.5) * tile.scale + tile.zero) as f32
            }
        })
        .collect()
}

/// Quantises floats for writing fixtures; NaN becomes `tile.blank` (required then).
pub fn quantize(values: &[f64], tile: &TileQuantization) -> Vec<i64> {
    let mut dither = Dither::new(tile.tile_row, tile.zdither0);
    let blank = tile.blank.unwrap_or(i64::from(i32::MIN));

    values
        .iter()
        .map(|value| {
            let random = if tile.method == Quantize::NoDither {
                0.5
            } else {
                dither.advance()
            };
            if value.is_nan() {
                blank
            } else {
                ((value - tile.zero) / tile.scale + random - 0.5).round() as i64
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn random_table_matches_cfitsio_check_value() {
        // CFITSIO checks that the generator state after 10,000 draws is 1043618065.
        let last = f64::from(randoms()[RANDOM_COUNT - 1]) * 2_147_483_647.0;
        assert!((last - 1_043_618_065.0).abs() < 200.0, "last seed {last}");
    }

    #[test]
    fn quantize_round_trip_within_half_scale() {
        let tile = TileQuantization {
            method: Quantize::SubtractiveDither1,
            scale: 0.01,
            zero: 3.0,
            blank: Some(-2_147_483_648),
            tile_row: 3,
            zdither0: 42,
        };
        let values: Vec<f64> = (0..200).map(|index| (index as f64).sin() * 5.0).collect();
        let restored = unquantize(&quantize(&values, &tile), &tile);
        for (original, back) in values.iter().zip(&restored) {
            assert!(
                (original - f64::from(*back)).abs() <= 0.0051,
                "{original} vs {back}"
            );
        }
    }
}
