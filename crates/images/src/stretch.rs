//! Astronomy stretches that map physical FITS values to 8-bit grey.
//!
//! - [`Stretch::Asinh`] (default): limits at the 0.25th and 99.75th percentiles of the
//!   finite pixels, then `asinh(x / a) / asinh(1 / a)` with softening `a = 0.1` on the
//!   normalised value `x`. The curve is linear for faint values and logarithmic for
//!   bright ones, so faint structure stays visible
//!   while bright cores keep their shape instead of saturating. It suits the wide
//!   dynamic range of HST frames with stars, galaxies and planets, which is why it is
//!   the default.
//! - [`Stretch::Zscale`]: the IRAF/DS9 display default. It fits a line to sorted
//!   samples with iterative rejection and shows a linear range around the median,
//!   tuned for noise-dominated frames. Bright sources saturate.
//!
//! Masked pixels (NaN, infinities, `BLANK`) are drawn as background (0, black) and
//! counted by the FITS reader; they do not take part in the limits. An image without
//! finite pixels, or whose finite pixels all have one value, is [`ImageError::Blank`].

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::ImageError;

/// Display stretch for FITS images.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Stretch {
    #[default]
    Asinh,
    Zscale,
}

impl Stretch {
    /// Returns the lower-case name accepted by [`FromStr`].
    pub fn as_str(&self) -> &'static str {
        match self {
            Stretch::Asinh => "asinh",
            Stretch::Zscale => "zscale",
        }
    }
}

impl fmt::Display for Stretch {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.write_str(self.as_str())
    }
}

/// Error for an unknown stretch name.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown stretch {name:?}; valid values are \"asinh\" and \"zscale\"")]
pub struct ParseStretchError {
    pub name: String,
}

impl FromStr for Stretch {
    type Err = ParseStretchError;

    fn from_str(name: &str) -> Result<Self, Self::Err> {
        match name.trim().to_ascii_lowercase().as_str() {
            "asinh" => Ok(Stretch::Asinh),
            "zscale" => Ok(Stretch::Zscale),
            _ => Err(ParseStretchError {
                name: name.to_string(),
            }),
        }
    }
}

/// Lower percentile of the asinh limits.
pub const ASINH_LOW_PERCENT: f64 = 0.25;

/// Upper percentile of the asinh limits.
pub const ASINH_HIGH_PERCENT: f64 = 99.75;

/// Softening `a` of the asinh curve, in units of the normalised range.
pub const ASINH_SOFTENING: f64 = 0.1;

/// Maximum number of pixels used to estimate the asinh percentiles.
const PERCENTILE_SAMPLES: usize = 1_000_000;

/// Maps physical values to 8-bit grey; masked pixels become 0.
pub fn render(pixels: &[f32], stretch: Stretch) -> Result<Vec<u8>, ImageError> {
    let finite: Vec<f32> = strided_finite(pixels, PERCENTILE_SAMPLES);
    if finite.is_empty() {
        return Err(ImageError::Blank {
            detail: format!("all {} pixels are masked (NaN or BLANK)", pixels.len()),
        });
    }

    let (low, high) = match stretch {
        Stretch::Asinh => percentile_limits(finite)?,
        Stretch::Zscale => zscale_limits(pixels)?,
    };

    let span = f64::from(high) - f64::from(low);
    let output = pixels
        .iter()
        .map(|value| {
            if !value.is_finite() {
                return 0;
            }
            let normalised = ((f64::from(*value) - f64::from(low)) / span).clamp(0.0, 1.0);
            let shaped = match stretch {
                Stretch::Asinh => {
                    (normalised / ASINH_SOFTENING).asinh() / (1.0 / ASINH_SOFTENING).asinh()
                }
                Stretch::Zscale => normalised,
            };
            (shaped * 255.0).round() as u8
        })
        .collect();
    Ok(output)
}

/// Returns up to `max_count` finite values taken at an even stride, deterministically.
fn strided_finite(pixels: &[f32], max_count: usize) -> Vec<f32> {
    let finite_count = pixels.iter().filter(|value| value.is_finite()).count();
    let stride = finite_count.div_ceil(max_count).max(1);
    pixels
        .iter()
        .filter(|value| value.is_finite())
        .step_by(stride)
        .copied()
        .collect()
}

fn blank_range(low: f32) -> ImageError {
    ImageError::Blank {
        detail: format!("all unmasked pixels have the value {low}"),
    }
}

fn percentile_limits(mut values: Vec<f32>) -> Result<(f32, f32), ImageError> {
    let low = select_percentile(&mut values, ASINH_LOW_PERCENT);
    let mut high = select_percentile(&mut values, ASINH_HIGH_PERCENT);

    if high <= low {
        // Sparse images (a few stars on a flat sky) can have equal percentiles.
        high = values.iter().copied().fold(low, f32::max);
    }
    if high <= low {
        return Err(blank_range(low));
    }
    Ok((low, high))
}

fn select_percentile(values: &mut [f32], percent: f64) -> f32 {
    let last = values.len() - 1;
    let rank = ((percent / 100.0) * last as f64).round() as usize;
    let (_, value, _) = values.select_nth_unstable_by(rank.min(last), f32::total_cmp);
    *value
}

/// Number of samples, rejection threshold, contrast and limits of IRAF's zscale.
const ZSCALE_SAMPLES: usize = 1000;
const ZSCALE_CONTRAST: f64 = 0.25;
const ZSCALE_REJECT_SIGMA: f64 = 2.5;
const ZSCALE_MAX_REJECT: f64 = 0.5;
const ZSCALE_MIN_PIXELS: usize = 5;
const ZSCALE_MAX_ITERATIONS: usize = 5;

/// Computes zscale limits following astropy's `ZScaleInterval` (IRAF algorithm).
fn zscale_limits(pixels: &[f32]) -> Result<(f32, f32), ImageError> {
    let mut samples = strided_finite(pixels, ZSCALE_SAMPLES);
    samples.sort_by(f32::total_cmp);
    let count = samples.len();
    let (mut low, mut high) = (samples[0], samples[count - 1]);
    if high <= low {
        return Err(blank_range(low));
    }

    let min_pixels = ZSCALE_MIN_PIXELS.max((count as f64 * ZSCALE_MAX_REJECT) as usize);
    if count <= min_pixels {
        return Ok((low, high));
    }

    let Some(slope) = fit_slope_with_rejection(&samples, min_pixels) else {
        return Ok((low, high));
    };

    let center = (count - 1) / 2;
    let median = if count % 2 == 1 {
        f64::from(samples[center])
    } else {
        (f64::from(samples[center]) + f64::from(samples[center + 1])) / 2.0
    };
    let slope = slope / ZSCALE_CONTRAST;
    low = low.max((median - (center as f64 - 1.0) * slope) as f32);
    high = high.min((median + (count - center) as f64 * slope) as f32);

    if high <= low {
        return Ok((samples[0], samples[count - 1]));
    }
    Ok((low, high))
}

/// Fits `value = a + slope * index`, rejecting outliers and growing rejected runs.
fn fit_slope_with_rejection(samples: &[f32], min_pixels: usize) -> Option<f64> {
    let count = samples.len();
    let grow = 1.max((count as f64 * 0.01) as usize);
    let mut good = vec![true; count];
    let mut good_count = count;
    let mut last_good_count = count + 1;
    let mut slope = 0.0;

    for _ in 0..ZSCALE_MAX_ITERATIONS {
        if good_count >= last_good_count || good_count < min_pixels {
            break;
        }

        let (intercept, fitted_slope) = least_squares(samples, &good)?;
        slope = fitted_slope;
        let residuals: Vec<f64> = (0..count)
            .map(|index| f64::from(samples[index]) - (intercept + slope * index as f64))
            .collect();
        let threshold = ZSCALE_REJECT_SIGMA * standard_deviation(&residuals, &good);

        let bad: Vec<bool> = residuals
            .iter()
            .map(|residual| residual.abs() > threshold)
            .collect();
        good = grow_rejection(&bad, grow);
        last_good_count = good_count;
        good_count = good.iter().filter(|flag| **flag).count();
    }

    (good_count >= min_pixels).then_some(slope)
}

fn least_squares(samples: &[f32], good: &[bool]) -> Option<(f64, f64)> {
    let points: Vec<(f64, f64)> = samples
        .iter()
        .enumerate()
        .filter(|(index, _)| good[*index])
        .map(|(index, value)| (index as f64, f64::from(*value)))
        .collect();
    let n = points.len() as f64;
    let mean_x = points.iter().map(|point| point.0).sum::<f64>() / n;
    let mean_y = points.iter().map(|point| point.1).sum::<f64>() / n;
    let covariance: f64 = points
        .iter()
        .map(|(x, y)| (x - mean_x) * (y - mean_y))
        .sum();
    let variance: f64 = points.iter().map(|(x, _)| (x - mean_x).powi(2)).sum();
    if variance == 0.0 {
        return None;
    }
    let slope = covariance / variance;
    Some((mean_y - slope * mean_x, slope))
}

fn standard_deviation(residuals: &[f64], good: &[bool]) -> f64 {
    let selected: Vec<f64> = residuals
        .iter()
        .zip(good)
        .filter(|(_, flag)| **flag)
        .map(|(residual, _)| *residual)
        .collect();
    let n = selected.len().max(1) as f64;
    let mean = selected.iter().sum::<f64>() / n;
    (selected
        .iter()
        .map(|value| (value - mean).powi(2))
        .sum::<f64>()
        / n)
        .sqrt()
}

/// Marks pixels within `grow` of a rejected pixel as rejected too; returns the good mask.
fn grow_rejection(bad: &[bool], grow: usize) -> Vec<bool> {
    let count = bad.len();
    let mut good = vec![true; count];
    for (index, is_bad) in bad.iter().enumerate() {
        if *is_bad {
            let start = index.saturating_sub(grow);
            let end = (index + grow + 1).min(count);
            good[start..end].iter_mut().for_each(|flag| *flag = false);
        }
    }
    good
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stretch_parses_names_and_lists_valid_values() {
        assert_eq!("asinh".parse::<Stretch>(), Ok(Stretch::Asinh));
        assert_eq!(" ZScale ".parse::<Stretch>(), Ok(Stretch::Zscale));
        let error = "log".parse::<Stretch>().unwrap_err();
        assert!(
            error.to_string().contains("\"asinh\" and \"zscale\""),
            "{error}"
        );
        assert_eq!(Stretch::Zscale.as_str(), "zscale");
    }

    #[test]
    fn asinh_lifts_faint_source_above_sky() {
        // Sky 100..106, a faint source at 300 (2 %) and a bright star at 10000 (1 %).
        let mut pixels: Vec<f32> = (0..10_000)
            .map(|index| 100.0 + (index % 7) as f32)
            .collect();
        pixels[..200].fill(300.0);
        pixels[200..300].fill(10_000.0);

        let grey = render(&pixels, Stretch::Asinh).unwrap();
        let linear_faint = (200.0 / 9_900.0 * 255.0f32).round() as u8;
        assert_eq!(grey[250], 255, "bright star");
        assert!(grey[1000] <= 1, "sky {}", grey[1000]);
        assert!(grey[0] > 10, "faint source {}", grey[0]);
        assert!(
            grey[0] > 2 * linear_faint,
            "asinh {} vs linear {linear_faint}",
            grey[0]
        );
    }

    #[test]
    fn masked_pixels_render_black() {
        let pixels = vec![1.0, f32::NAN, 3.0, f32::INFINITY, 2.0];
        let grey = render(&pixels, Stretch::Asinh).unwrap();
        assert_eq!(grey[1], 0);
        assert_eq!(grey[3], 0);
        assert_eq!(grey[2], 255);
    }

    #[test]
    fn uniform_or_fully_masked_is_blank() {
        for stretch in [Stretch::Asinh, Stretch::Zscale] {
            let error = render(&[4.0; 100], stretch).unwrap_err();
            assert_eq!(error.reason_code(), "blank");
            let error = render(&[f32::NAN; 100], stretch).unwrap_err();
            assert_eq!(error.reason_code(), "blank");
        }
    }

    #[test]
    fn zscale_clips_bright_outliers() {
        let mut pixels: Vec<f32> = (0..4096)
            .map(|index| 100.0 + ((index * 37) % 17) as f32)
            .collect();
        pixels[100] = 1.0e6;
        let (low, high) = zscale_limits(&pixels).unwrap();
        assert!(low >= 100.0, "low {low}");
        assert!(high < 1000.0, "high {high}");
    }
}
