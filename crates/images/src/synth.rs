//! Synthetic telescope-like images for fixtures: a dark noisy sky, a few hundred
//! Gaussian stars with a power-law brightness distribution (the brightest saturate),
//! and one or two elliptical galaxies with exponential profiles.
//!
//! Invariant: output depends only on the arguments, because the generator is a
//! SplitMix64 stream seeded with `seed`. The same call gives the same pixels on any
//! platform whose `f64` math functions agree (`exp`, `ln`, `sin`, `cos`, `asinh`).

use image::{DynamicImage, GrayImage, RgbImage};

use crate::encode::{Samples, encode_jpeg};
use crate::fits::FitsValue;
use crate::fits::write::uint16_image;

/// SplitMix64 (Steele, Lea and Flood 2014): small, fast and good enough for fixtures.
pub struct SplitMix64(pub u64);

impl SplitMix64 {
    /// Returns the next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut mixed = self.0;
        mixed = (mixed ^ (mixed >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        mixed = (mixed ^ (mixed >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        mixed ^ (mixed >> 31)
    }

    /// Uniform value in `[0, 1)` with 53 random bits.
    pub fn uniform(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }

    /// Standard normal value (Box–Muller).
    fn normal(&mut self) -> f64 {
        let radius = (-2.0 * (1.0 - self.uniform()).ln()).sqrt();
        radius * (std::f64::consts::TAU * self.uniform()).cos()
    }
}

/// Linear flux per pixel and channel, before display mapping; 1.0 is saturation.
struct SkyFlux {
    width_px: usize,
    height_px: usize,
    channels: usize,
    flux: Vec<f64>,
}

impl SkyFlux {
    fn add(&mut self, x: usize, y: usize, tint: &[f64; 3], value: f64) {
        let base = (y * self.width_px + x) * self.channels;
        let pixel = &mut self.flux[base..base + self.channels];
        for (sample, weight) in pixel.iter_mut().zip(tint) {
            *sample += value * weight;
        }
    }
}

fn render_flux(seed: u64, width_px: u32, height_px: u32, channels: usize) -> SkyFlux {
    let mut random = SplitMix64(seed);
    let (width, height) = (width_px as usize, height_px as usize);
    let mut sky = SkyFlux {
        width_px: width,
        height_px: height,
        channels,
        flux: Vec::with_capacity(width * height * channels),
    };

    for _ in 0..width * height * channels {
        sky.flux.push(0.02 + 0.006 * random.normal());
    }

    let galaxy_count = 1 + (random.next_u64() % 2) as usize;
    for _ in 0..galaxy_count {
        add_galaxy(&mut sky, &mut random);
    }

    let star_count = 200 + (width * height / 4000).min(400);
    for _ in 0..star_count {
        add_star(&mut sky, &mut random);
    }
    sky
}

fn random_tint(random: &mut SplitMix64) -> [f64; 3] {
    // Blue-white to orange, roughly hot to cool stars.
    let warmth = random.uniform();
    [0.8 + 0.4 * warmth, 0.9 + 0.1 * warmth, 1.2 - 0.5 * warmth]
}

fn add_star(sky: &mut SkyFlux, random: &mut SplitMix64) {
    let x0 = random.uniform() * sky.width_px as f64;
    let y0 = random.uniform() * sky.height_px as f64;
    // Pareto-distributed peak flux: many faint stars, a few that saturate.
    let peak = 0.03 * (1.0 - random.uniform()).powf(-1.0 / 1.2);
    let sigma = 0.7 + 0.6 * random.uniform() + 0.3 * peak.min(5.0).ln_1p();
    let tint = random_tint(random);
    draw_gaussian(sky, x0, y0, sigma, peak, &tint);
}

fn draw_gaussian(sky: &mut SkyFlux, x0: f64, y0: f64, sigma: f64, peak: f64, tint: &[f64; 3]) {
    let radius = (4.0 * sigma).ceil() as i64;
    for y in (y0 as i64 - radius)..=(y0 as i64 + radius) {
        for x in (x0 as i64 - radius)..=(x0 as i64 + radius) {
            if x < 0 || y < 0 || x >= sky.width_px as i64 || y >= sky.height_px as i64 {
                continue;
            }
            let distance2 = (x as f64 + 0.5 - x0).powi(2) + (y as f64 + 0.5 - y0).powi(2);
            let value = peak * (-distance2 / (2.0 * sigma * sigma)).exp();
            sky.add(x as usize, y as usize, tint, value);
        }
    }
}

fn add_galaxy(sky: &mut SkyFlux, random: &mut SplitMix64) {
    let short_side = sky.width_px.min(sky.height_px) as f64;
    let x0 = (0.2 + 0.6 * random.uniform()) * sky.width_px as f64;
    let y0 = (0.2 + 0.6 * random.uniform()) * sky.height_px as f64;
    let scale = (0.03 + 0.05 * random.uniform()) * short_side;
    let axis_ratio = 0.3 + 0.6 * random.uniform();
    let angle = random.uniform() * std::f64::consts::PI;
    let peak = 0.3 + 0.5 * random.uniform();
    let tint = [1.1, 1.0, 0.85];
    let (sin, cos) = angle.sin_cos();

    let reach = (scale * 6.0).ceil() as i64;
    for y in (y0 as i64 - reach).max(0)..(y0 as i64 + reach).min(sky.height_px as i64) {
        for x in (x0 as i64 - reach).max(0)..(x0 as i64 + reach).min(sky.width_px as i64) {
            let (dx, dy) = (x as f64 - x0, y as f64 - y0);
            let major = dx * cos + dy * sin;
            let minor = (-dx * sin + dy * cos) / axis_ratio;
            let radius = (major * major + minor * minor).sqrt();
            sky.add(
                x as usize,
                y as usize,
                &tint,
                peak * (-radius / scale).exp(),
            );
        }
    }
}

/// Maps linear flux to 8 bits with an asinh curve, saturating at flux 1.0.
fn display_byte(flux: f64) -> u8 {
    let shaped = (flux.max(0.0) * 20.0).asinh() / 20.0f64.asinh();
    (shaped.min(1.0) * 255.0).round() as u8
}

/// Generates a telescope-like preview (see module docs), greyscale or RGB.
pub fn sky_image(seed: u64, width_px: u32, height_px: u32, colour: bool) -> DynamicImage {
    let channels = if colour { 3 } else { 1 };
    let sky = render_flux(seed, width_px.max(1), height_px.max(1), channels);
    let bytes: Vec<u8> = sky.flux.iter().map(|flux| display_byte(*flux)).collect();
    let (width, height) = (sky.width_px as u32, sky.height_px as u32);

    if colour {
        RgbImage::from_raw(width, height, bytes).map(DynamicImage::ImageRgb8)
    } else {
        GrayImage::from_raw(width, height, bytes).map(DynamicImage::ImageLuma8)
    }
    .unwrap_or_else(|| DynamicImage::new_luma8(width, height))
}

/// Encodes [`sky_image`] as JPEG at `quality` (1–100, clamped).
pub fn sky_jpeg(seed: u64, width_px: u32, height_px: u32, colour: bool, quality: u8) -> Vec<u8> {
    let image = sky_image(seed, width_px, height_px, colour);
    let (samples, layout) = match &image {
        DynamicImage::ImageRgb8(rgb) => (rgb.as_raw(), Samples::Rgb),
        DynamicImage::ImageLuma8(grey) => (grey.as_raw(), Samples::Grey),
        _ => unreachable!("sky_image makes 8-bit greyscale or RGB images"),
    };
    // JPEG cannot encode sides beyond 65535 pixels; such a request gives empty bytes.
    encode_jpeg(
        samples,
        image.width(),
        image.height(),
        layout,
        quality.clamp(1, 100),
    )
    .unwrap_or_default()
}

/// Writes the greyscale sky as a FITS primary image: `BITPIX = 16`, `BZERO = 32768`
/// (unsigned 16-bit counts), `TELESCOP = 'HST'`, then `extra_cards`.
///
/// Rows are stored bottom-first, as FITS expects, so a reader that flips FITS rows for
/// display shows the same orientation as [`sky_image`].
pub fn sky_fits(
    seed: u64,
    width_px: u32,
    height_px: u32,
    extra_cards: &[(&str, FitsValue)],
) -> Vec<u8> {
    let sky = render_flux(seed, width_px.max(1), height_px.max(1), 1);
    let counts: Vec<u16> = sky
        .flux
        .chunks_exact(sky.width_px)
        .rev()
        .flatten()
        .map(|flux| (1000.0 + flux * 40_000.0).clamp(0.0, 65_535.0).round() as u16)
        .collect();

    let mut cards = vec![("TELESCOP", FitsValue::Str("HST".to_string()))];
    cards.extend(extra_cards.iter().cloned());
    uint16_image(sky.width_px, sky.height_px, &counts, &cards)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fits;

    #[test]
    fn sky_image_is_deterministic_per_seed() {
        let first = sky_image(42, 96, 64, true);
        let again = sky_image(42, 96, 64, true);
        let other = sky_image(43, 96, 64, true);
        assert_eq!(first.as_bytes(), again.as_bytes());
        assert_ne!(first.as_bytes(), other.as_bytes());
        assert_eq!((first.width(), first.height()), (96, 64));
    }

    #[test]
    fn sky_image_looks_like_sky() {
        let grey = sky_image(7, 256, 256, false).to_luma8();
        let mut values: Vec<u8> = grey.as_raw().clone();
        values.sort_unstable();
        let median = values[values.len() / 2];
        let saturated = values.iter().filter(|value| **value == 255).count();

        assert!(median < 90, "background median {median} is not dark");
        assert!(saturated > 0, "no saturated stars");
        assert!(
            saturated < values.len() / 10,
            "{saturated} saturated pixels is too many"
        );
    }

    #[test]
    fn colour_sky_has_colour() {
        let rgb = sky_image(3, 128, 128, true).to_rgb8();
        let tinted = rgb
            .pixels()
            .filter(|pixel| pixel.0[0] != pixel.0[2])
            .count();
        assert!(tinted > 100, "only {tinted} tinted pixels");
    }

    #[test]
    fn sky_jpeg_decodes() {
        let jpeg = sky_jpeg(5, 80, 60, true, 90);
        let decoded = image::load_from_memory(&jpeg).unwrap();
        assert_eq!((decoded.width(), decoded.height()), (80, 60));
    }

    #[test]
    fn sky_fits_round_trips_with_cards() {
        let cards = [
            ("PROPOSID", FitsValue::Int(13012)),
            ("TARGNAME", FitsValue::Str("URANUS".to_string())),
            ("INSTRUME", FitsValue::Str("ACS".to_string())),
        ];
        let bytes = sky_fits(9, 40, 30, &cards);
        assert_eq!(bytes.len() % 2880, 0);

        let header = &fits::read_headers(&bytes).unwrap()[0];
        assert_eq!(header.get_str("TELESCOP"), Some("HST"));
        assert_eq!(header.get_i64("PROPOSID"), Some(13012));
        assert_eq!(header.get_str("TARGNAME"), Some("URANUS"));
        assert_eq!(header.get_i64("BZERO"), Some(32768));

        let image = fits::read_image(&bytes, fits::DEFAULT_MAX_PIXELS).unwrap();
        assert_eq!((image.width_px, image.height_px), (40, 30));
        assert!(
            image
                .pixels
                .iter()
                .all(|value| (0.0..=65535.0).contains(value))
        );
        assert!(
            image.pixels.iter().any(|value| *value > 1500.0),
            "no stars above the sky level"
        );
    }
}
