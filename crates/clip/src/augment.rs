//! Training-time image augmentation and CLIP pixel normalization.
//!
//! [`augment_batch`] turns stored RGB images into one channels-first `f32` batch of shape
//! `[batch, 3, crop_px, crop_px]`. Each image goes through these steps, in this order:
//!
//! 1. centred white padding to a square, as the dataset shards store their images, so a
//!    square input is unchanged;
//! 2. optional scaling of that square to `resize_px` pixels per side ([`resize_square`]);
//! 3. rotation counter-clockwise by `k`·90°, with `k` in `0..4` (see below for the direction);
//! 4. an up–down flip, then 5. a left–right flip;
//! 6. a `crop_px` × `crop_px` crop;
//! 7. CLIP normalization, `(pixel / 255 − mean) / std` per channel with [`CLIP_MEAN`] and
//!    [`CLIP_STD`].
//!
//! Steps 1 and 3 to 7 run as one pass that computes, for every output pixel, the source pixel
//! it comes from, so no padded, rotated or flipped copy is made. A source pixel outside the
//! image is white. Only step 2 allocates a new image, once per image and batch. Because
//! rotations by multiples of 90° and flips only move whole pixels, steps 3 to 6 never
//! interpolate.
//!
//! [`AugmentMode`] decides which of steps 3 to 6 are random and whether the batch shares them.
//! The draws from [`Rng`] take part in exact resumes, so their order is fixed:
//!
//! - [`AugmentMode::Paper`]: `below(4)` for the quarter turns of each image in batch order,
//!   then `coin()` for the up–down flip, `coin()` for the left–right flip, `below(side − crop
//!   + 1)` for the crop's top row and `below(side − crop + 1)` for its left column, all five
//!   shared by the batch; `batch + 4` draws in all;
//! - [`AugmentMode::PerImage`]: for each image in batch order, `below(4)`, `coin()` (up–down),
//!   `coin()` (left–right), `below(side − crop + 1)` (top), `below(side − crop + 1)` (left);
//!   `5 · batch` draws in all;
//! - [`AugmentMode::CenterCrop`]: no draws.
//!
//! A draw is made even when its range has one value, so the number of draws depends only on
//! the mode and the batch size. An empty batch draws nothing, and a call that returns an
//! error has not advanced the generator.
//!
//! Rotation direction: dm_pix's `rotate(image, angle)` (google-deepmind/dm_pix,
//! `dm_pix/_src/augment.py`) pulls output pixel `o` from `M·(o − c) + c` with
//! `M = [[cos, sin], [−sin, cos]]` over (row, column) and `c` the image centre. For
//! `angle = π/2` on an `n` × `n` image that is `out[i][j] = in[j][n − 1 − i]`, which is
//! `numpy.rot90(image, k=1)`: counter-clockwise as displayed with row 0 at the top. Here,
//! `k` quarter turns therefore equal `numpy.rot90(image, k)` and `dm_pix.rotate(image, k·π/2)`.
//!
//! NOTE: dm_pix rotates with float32 bilinear interpolation, where `cos(π/2)` is about
//! `−4.4e−8` instead of 0, and the original pipeline then truncated `image · 255` to `uint8`.
//! By that arithmetic a rotated pixel there can come out one grey level darker than the exact
//! index mapping used here; this estimate was not checked against a run of the original.

use serde::{Deserialize, Serialize};

use crate::error::ClipError;
use crate::rng::Rng;

/// Per-channel (R, G, B) mean of OpenAI CLIP's image preprocessing, on the `[0, 1]` scale.
pub const CLIP_MEAN: [f32; 3] = [0.481_454_66, 0.457_827_5, 0.408_210_73];

/// Per-channel (R, G, B) standard deviation of OpenAI CLIP's image preprocessing.
// The literals are OpenAI's published values digit for digit, so they can be searched for;
// two of them have more digits than an f32 holds.
#[allow(clippy::excessive_precision)]
pub const CLIP_STD: [f32; 3] = [0.268_629_54, 0.261_302_58, 0.275_777_11];

/// The value every image is padded with: white, as in the dataset shards.
const WHITE: [u8; 3] = [255, 255, 255];

/// Normalized value of every byte for each channel, computed as `rescale` and `normalize` in
/// Hugging Face's `transformers.image_transforms` do: `byte · (1/255)` in `f64` rounded to
/// `f32`, then `(x − mean) / std` in `f32`.
static NORMALIZED: [[f32; 256]; 3] = normalization_table();

const fn normalization_table() -> [[f32; 256]; 3] {
    let mut table = [[0.0; 256]; 3];
    let mut channel = 0;
    while channel < 3 {
        let mut byte = 0;
        while byte < 256 {
            let scaled = (byte as f64 * (1.0 / 255.0)) as f32;
            table[channel][byte] = (scaled - CLIP_MEAN[channel]) / CLIP_STD[channel];
            byte += 1;
        }
        channel += 1;
    }
    table
}

/// An 8-bit RGB image stored row-major, three bytes (R, G, B) per pixel.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RgbImage {
    width_px: usize,
    height_px: usize,
    pixels: Vec<u8>,
}

impl RgbImage {
    /// Wraps `pixels` after checking that both sides are at least 1 and that there are
    /// exactly `3 · width_px · height_px` bytes.
    pub fn new(width_px: usize, height_px: usize, pixels: Vec<u8>) -> Result<Self, ClipError> {
        if width_px == 0 || height_px == 0 {
            return Err(ClipError::Input(format!(
                "image size {width_px}×{height_px} px is invalid; both sides must be at least 1 px"
            )));
        }
        let expected_len = width_px
            .checked_mul(height_px)
            .and_then(|area| area.checked_mul(3));
        if expected_len != Some(pixels.len()) {
            return Err(ClipError::Input(format!(
                "image of {width_px}×{height_px} px needs 3 bytes per pixel \
                 ({width_px}·{height_px}·3 bytes, row-major RGB) but {} bytes were given",
                pixels.len()
            )));
        }
        Ok(Self {
            width_px,
            height_px,
            pixels,
        })
    }

    /// Creates an image of one colour.
    pub fn filled(width_px: usize, height_px: usize, rgb: [u8; 3]) -> Result<Self, ClipError> {
        let area = width_px.saturating_mul(height_px);
        let pixels = rgb.iter().copied().cycle().take(area.saturating_mul(3));
        Self::new(width_px, height_px, pixels.collect())
    }

    /// Returns the width in pixels.
    pub fn width_px(&self) -> usize {
        self.width_px
    }

    /// Returns the height in pixels.
    pub fn height_px(&self) -> usize {
        self.height_px
    }

    /// Returns the row-major RGB bytes.
    pub fn pixels(&self) -> &[u8] {
        &self.pixels
    }

    /// Returns the row-major RGB bytes, consuming the image.
    pub fn into_pixels(self) -> Vec<u8> {
        self.pixels
    }

    /// Returns the pixel in column `x_px` of row `y_px`, or `None` outside the image.
    pub fn pixel(&self, x_px: usize, y_px: usize) -> Option<[u8; 3]> {
        if x_px >= self.width_px || y_px >= self.height_px {
            return None;
        }
        let start = (y_px * self.width_px + x_px) * 3;
        Some([
            self.pixels[start],
            self.pixels[start + 1],
            self.pixels[start + 2],
        ])
    }

    /// Returns the side of the white-padded square this image is augmented as.
    fn square_side_px(&self) -> usize {
        self.width_px.max(self.height_px)
    }

    /// Returns the pixel at signed image coordinates, or white outside the image.
    #[inline]
    fn pixel_or_white(&self, y_px: isize, x_px: isize) -> [u8; 3] {
        let (Ok(y), Ok(x)) = (usize::try_from(y_px), usize::try_from(x_px)) else {
            return WHITE;
        };
        self.pixel(x, y).unwrap_or(WHITE)
    }
}

/// Choice of the random augmentation parameters and of those the batch shares.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AugmentMode {
    /// The PAPERCLIP training recipe: a random number of quarter turns per image, and one
    /// up–down coin, one left–right coin and one crop offset shared by the whole batch.
    Paper,
    /// Quarter turns, both flips and the crop offset all drawn independently per image.
    PerImage,
    /// No randomness: no rotation or flip, and the centred crop (the PAPERCLIP evaluation).
    CenterCrop,
}

/// The geometric augmentation of one image, applied in field order after padding and
/// resizing. Offsets are in the rotated and flipped square.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ImageTransform {
    /// Counter-clockwise 90° turns, `0..4`, as in `numpy.rot90(image, k)`.
    pub quarter_turns: u8,
    /// Whether rows are reversed after the rotation.
    pub flip_up_down: bool,
    /// Whether columns are reversed after the up–down flip.
    pub flip_left_right: bool,
    /// First row of the crop.
    pub crop_top_px: usize,
    /// First column of the crop.
    pub crop_left_px: usize,
}

impl ImageTransform {
    /// Creates the transform without rotation or flip that takes the centred crop of a square
    /// of `side_px`. The offset is rounded down when `side_px − crop_px` is odd, as in
    /// `center_crop` of Hugging Face's `transformers.image_transforms`.
    pub fn centered(side_px: usize, crop_px: usize) -> Self {
        let offset_px = side_px.saturating_sub(crop_px) / 2;
        Self {
            quarter_turns: 0,
            flip_up_down: false,
            flip_left_right: false,
            crop_top_px: offset_px,
            crop_left_px: offset_px,
        }
    }

    /// Draws one image's transform in the order the module documentation gives.
    fn draw_one(rng: &mut Rng, side_px: usize, crop_px: usize) -> Self {
        let quarter_turns = draw_quarter_turns(rng);
        let flip_up_down = rng.coin();
        let flip_left_right = rng.coin();
        let (crop_top_px, crop_left_px) = draw_crop_offset(rng, side_px, crop_px);
        Self {
            quarter_turns,
            flip_up_down,
            flip_left_right,
            crop_top_px,
            crop_left_px,
        }
    }

    /// Maps crop pixel (`row`, `col`) to its row and column in the padded source square by
    /// undoing the crop, the flips and then the rotation. The map is affine.
    fn source_in_square(&self, side_px: isize, row: isize, col: isize) -> (isize, isize) {
        let last = side_px - 1;
        let mut y = self.crop_top_px as isize + row;
        let mut x = self.crop_left_px as isize + col;
        if self.flip_up_down {
            y = last - y;
        }
        if self.flip_left_right {
            x = last - x;
        }
        // Inverse of numpy.rot90(source, k): rotated[y][x] = source[returned pair].
        match self.quarter_turns % 4 {
            0 => (y, x),
            1 => (x, last - y),
            2 => (last - y, last - x),
            _ => (last - x, y),
        }
    }
}

fn draw_quarter_turns(rng: &mut Rng) -> u8 {
    // below(4) is at most 3, so the cast is exact.
    rng.below(4) as u8
}

fn draw_crop_offset(rng: &mut Rng, side_px: usize, crop_px: usize) -> (usize, usize) {
    let positions = side_px - crop_px + 1;
    let top_px = rng.below(positions);
    let left_px = rng.below(positions);
    (top_px, left_px)
}

/// Augments and normalizes a batch into one `[batch, 3, crop_px, crop_px]` channels-first
/// `f32` buffer, following the steps and the draw order in the module documentation.
///
/// With `resize_px` set, each image's white-padded square is first scaled to that side by
/// [`resize_square`]; an image whose square already has that side is used as is.
///
/// # Errors
///
/// [`ClipError::Input`] when `crop_px` or `resize_px` is 0, when an image is smaller than the
/// crop after padding and resizing, or when [`AugmentMode::Paper`] gets images whose squares
/// differ in size (the shared crop offset needs one size). The generator is not advanced.
pub fn augment_batch(
    images: &[&RgbImage],
    mode: AugmentMode,
    crop_px: usize,
    resize_px: Option<usize>,
    rng: &mut Rng,
) -> Result<Vec<f32>, ClipError> {
    let sides_px = check_batch(images, mode, crop_px, resize_px)?;
    let transforms = draw_transforms(mode, &sides_px, crop_px, rng);

    let image_len = 3 * crop_px * crop_px;
    let mut batch = vec![0.0f32; images.len() * image_len];
    let outputs = batch.chunks_exact_mut(image_len);
    for ((image, transform), out) in images.iter().zip(&transforms).zip(outputs) {
        match resize_px {
            Some(side_px) if image.square_side_px() != side_px => {
                let resized = resize_square(image, side_px)?;
                apply_transform(&resized, transform, crop_px, out)?;
            }
            _ => apply_transform(image, transform, crop_px, out)?,
        }
    }
    Ok(batch)
}

/// Checks the arguments of [`augment_batch`] and returns the square side each image will
/// have after padding and resizing.
fn check_batch(
    images: &[&RgbImage],
    mode: AugmentMode,
    crop_px: usize,
    resize_px: Option<usize>,
) -> Result<Vec<usize>, ClipError> {
    if crop_px == 0 {
        return Err(ClipError::Input(
            "crop_px is 0; set it to the model's image size, for example 224".into(),
        ));
    }
    if resize_px == Some(0) {
        return Err(ClipError::Input(
            "resize_px is 0; set it to at least crop_px, or leave it unset to keep the stored size"
                .into(),
        ));
    }

    let sides_px: Vec<usize> = images
        .iter()
        .map(|image| resize_px.unwrap_or(image.square_side_px()))
        .collect();
    for (index, (image, &side_px)) in images.iter().zip(&sides_px).enumerate() {
        check_fits_crop(index, image, side_px, crop_px, resize_px)?;
    }
    if mode == AugmentMode::Paper {
        check_same_side(&sides_px)?;
    }
    Ok(sides_px)
}

fn check_fits_crop(
    index: usize,
    image: &RgbImage,
    side_px: usize,
    crop_px: usize,
    resize_px: Option<usize>,
) -> Result<(), ClipError> {
    if side_px >= crop_px {
        return Ok(());
    }
    let size = format!("{}×{} px", image.width_px, image.height_px);
    let message = match resize_px {
        Some(resize) => format!(
            "image {index} of the batch ({size}) is resized to {resize} px, smaller than the \
             {crop_px} px crop; set resize_px to at least {crop_px} or use a model with a \
             smaller image size"
        ),
        None => format!(
            "image {index} of the batch is {size}, smaller than the {crop_px} px crop; set \
             resize_px to at least {crop_px} or use a model with a smaller image size"
        ),
    };
    Err(ClipError::Input(message))
}

fn check_same_side(sides_px: &[usize]) -> Result<(), ClipError> {
    let Some(&first_px) = sides_px.first() else {
        return Ok(());
    };
    let Some(index) = sides_px.iter().position(|&side_px| side_px != first_px) else {
        return Ok(());
    };
    Err(ClipError::Input(format!(
        "paper augmentation shares one crop offset across the batch, but image 0 is a \
         {first_px} px square and image {index} a {} px square after white padding; set \
         resize_px so every image has the same side, or use the per_image mode",
        sides_px[index]
    )))
}

/// Draws the transforms of a checked batch in the documented order.
fn draw_transforms(
    mode: AugmentMode,
    sides_px: &[usize],
    crop_px: usize,
    rng: &mut Rng,
) -> Vec<ImageTransform> {
    match mode {
        AugmentMode::CenterCrop => sides_px
            .iter()
            .map(|&side_px| ImageTransform::centered(side_px, crop_px))
            .collect(),
        AugmentMode::PerImage => sides_px
            .iter()
            .map(|&side_px| ImageTransform::draw_one(rng, side_px, crop_px))
            .collect(),
        AugmentMode::Paper => draw_paper_transforms(sides_px, crop_px, rng),
    }
}

fn draw_paper_transforms(sides_px: &[usize], crop_px: usize, rng: &mut Rng) -> Vec<ImageTransform> {
    let Some(&side_px) = sides_px.first() else {
        return Vec::new();
    };
    let quarter_turns: Vec<u8> = sides_px.iter().map(|_| draw_quarter_turns(rng)).collect();
    let flip_up_down = rng.coin();
    let flip_left_right = rng.coin();
    let (crop_top_px, crop_left_px) = draw_crop_offset(rng, side_px, crop_px);
    quarter_turns
        .into_iter()
        .map(|quarter_turns| ImageTransform {
            quarter_turns,
            flip_up_down,
            flip_left_right,
            crop_top_px,
            crop_left_px,
        })
        .collect()
}

/// Writes the normalized `[3, crop_px, crop_px]` crop of `image` under `transform` into
/// `out`, treating `image` as its centred white-padded square (steps 1 and 3 to 7 of the
/// module documentation, without resizing).
///
/// # Errors
///
/// [`ClipError::Input`] when `quarter_turns` is above 3, when the crop does not lie inside the
/// padded square, or when `out` does not hold exactly `3 · crop_px²` values.
pub fn apply_transform(
    image: &RgbImage,
    transform: &ImageTransform,
    crop_px: usize,
    out: &mut [f32],
) -> Result<(), ClipError> {
    check_transform(image, transform, crop_px, out.len())?;

    let side_px = image.square_side_px() as isize;
    let pad_top_px = (side_px - image.height_px as isize) / 2;
    let pad_left_px = (side_px - image.width_px as isize) / 2;
    let origin = transform.source_in_square(side_px, 0, 0);
    let next_col = transform.source_in_square(side_px, 0, 1);
    let next_row = transform.source_in_square(side_px, 1, 0);
    let col_step = (next_col.0 - origin.0, next_col.1 - origin.1);
    let row_step = (next_row.0 - origin.0, next_row.1 - origin.1);

    let plane_len = crop_px * crop_px;
    let (red, rest) = out.split_at_mut(plane_len);
    let (green, blue) = rest.split_at_mut(plane_len);
    let planes = red
        .chunks_exact_mut(crop_px)
        .zip(green.chunks_exact_mut(crop_px))
        .zip(blue.chunks_exact_mut(crop_px));
    for (row, ((red, green), blue)) in planes.enumerate() {
        let start = (
            origin.0 + row as isize * row_step.0 - pad_top_px,
            origin.1 + row as isize * row_step.1 - pad_left_px,
        );
        let source = RowSource {
            image,
            start,
            step: col_step,
        };
        if source.lies_inside(crop_px) {
            source.write_inside([red, green, blue]);
        } else {
            source.write_with_padding([red, green, blue]);
        }
    }
    Ok(())
}

/// The source pixels of one output row: a straight line of image pixels from `start`
/// (row, column) moving by `step` per output pixel.
struct RowSource<'a> {
    image: &'a RgbImage,
    start: (isize, isize),
    step: (isize, isize),
}

impl RowSource<'_> {
    fn lies_inside(&self, len: usize) -> bool {
        let last = len as isize - 1;
        let end = (
            self.start.0 + last * self.step.0,
            self.start.1 + last * self.step.1,
        );
        let inside = |(y, x): (isize, isize)| {
            (0..self.image.height_px as isize).contains(&y)
                && (0..self.image.width_px as isize).contains(&x)
        };
        inside(self.start) && inside(end)
    }

    /// Writes a row whose every source pixel is inside the image, stepping a byte offset.
    fn write_inside(&self, [red, green, blue]: [&mut [f32]; 3]) {
        let width = self.image.width_px as isize;
        let mut at = (self.start.0 * width + self.start.1) * 3;
        let step = (self.step.0 * width + self.step.1) * 3;
        let outputs = red.iter_mut().zip(green.iter_mut()).zip(blue.iter_mut());
        for ((red, green), blue) in outputs {
            // lies_inside checked both ends of the line, so `at` stays in bounds.
            let rgb = &self.image.pixels[at as usize..][..3];
            *red = NORMALIZED[0][usize::from(rgb[0])];
            *green = NORMALIZED[1][usize::from(rgb[1])];
            *blue = NORMALIZED[2][usize::from(rgb[2])];
            at += step;
        }
    }

    /// Writes a row that reaches into the white padding, checking every pixel.
    fn write_with_padding(&self, [red, green, blue]: [&mut [f32]; 3]) {
        let (mut y, mut x) = self.start;
        let outputs = red.iter_mut().zip(green.iter_mut()).zip(blue.iter_mut());
        for ((red, green), blue) in outputs {
            let [r, g, b] = self.image.pixel_or_white(y, x);
            *red = NORMALIZED[0][usize::from(r)];
            *green = NORMALIZED[1][usize::from(g)];
            *blue = NORMALIZED[2][usize::from(b)];
            y += self.step.0;
            x += self.step.1;
        }
    }
}

fn check_transform(
    image: &RgbImage,
    transform: &ImageTransform,
    crop_px: usize,
    out_len: usize,
) -> Result<(), ClipError> {
    if transform.quarter_turns > 3 {
        return Err(ClipError::Input(format!(
            "quarter_turns is {}; use 0 to 3 counter-clockwise 90° turns",
            transform.quarter_turns
        )));
    }
    let side_px = image.square_side_px();
    let bottom_px = transform.crop_top_px.saturating_add(crop_px);
    let right_px = transform.crop_left_px.saturating_add(crop_px);
    if crop_px == 0 || bottom_px > side_px || right_px > side_px {
        return Err(ClipError::Input(format!(
            "a {crop_px} px crop at row {} and column {} does not fit the {side_px} px padded \
             square of a {}×{} px image; use a crop of at least 1 px that ends inside the square",
            transform.crop_top_px, transform.crop_left_px, image.width_px, image.height_px
        )));
    }
    let expected_len = 3 * crop_px * crop_px;
    if out_len != expected_len {
        return Err(ClipError::Input(format!(
            "output buffer holds {out_len} values but a 3×{crop_px}×{crop_px} crop needs \
             {expected_len}; pass a slice of exactly that length"
        )));
    }
    Ok(())
}

/// Normalizes a whole image, unpadded and unaugmented, into `[3, height_px, width_px]`
/// channels-first values.
pub fn normalize_chw(image: &RgbImage) -> Vec<f32> {
    let plane_len = image.width_px * image.height_px;
    let mut out = vec![0.0f32; 3 * plane_len];
    for (index, rgb) in image.pixels.chunks_exact(3).enumerate() {
        for (channel, &byte) in rgb.iter().enumerate() {
            out[channel * plane_len + index] = NORMALIZED[channel][usize::from(byte)];
        }
    }
    out
}

/// Scales the centred white-padded square of `image` to `side_px` × `side_px`.
///
/// Downscaling averages areas: each output pixel is the mean of the source square it covers,
/// with partly covered source pixels weighted by the covered fraction. Upscaling is bilinear
/// with pixel centres at half-integers and edge pixels repeated. Both run separably in `f32`,
/// first along y and then along x, and round half up to the nearest byte. A square of the
/// requested side is returned unchanged.
///
/// # Errors
///
/// [`ClipError::Input`] when `side_px` is 0.
pub fn resize_square(image: &RgbImage, side_px: usize) -> Result<RgbImage, ClipError> {
    if side_px == 0 {
        return Err(ClipError::Input(
            "resize side is 0 px; use at least the crop size".into(),
        ));
    }
    if image.width_px == side_px && image.height_px == side_px {
        return Ok(image.clone());
    }
    let taps = AxisTaps::new(image.square_side_px(), side_px);
    let rows = resample_columns(image, &taps);
    let pixels = resample_rows(&rows, &taps);
    RgbImage::new(side_px, side_px, pixels)
}

/// For every output pixel of a resampled axis, the source pixels it reads and their weights.
/// Every output reads the same number of consecutive source pixels (`taps_per_output`);
/// shorter tap lists are padded with zero weights, which keeps the inner loops uniform.
struct AxisTaps {
    source_px: usize,
    taps_per_output: usize,
    firsts: Vec<usize>,
    weights: Vec<f32>,
}

impl AxisTaps {
    fn new(source_px: usize, output_px: usize) -> Self {
        let lists: Vec<(usize, Vec<f32>)> = (0..output_px)
            .map(|index| {
                if output_px < source_px {
                    area_taps(source_px, output_px, index)
                } else {
                    bilinear_taps(source_px, output_px, index)
                }
            })
            .collect();
        let taps_per_output = lists.iter().map(|(_, list)| list.len()).max().unwrap_or(1);

        let mut firsts = Vec::with_capacity(output_px);
        let mut weights = vec![0.0f32; output_px * taps_per_output];
        for (index, (first, list)) in lists.into_iter().enumerate() {
            // Every list lies inside 0..source_px, so taps_per_output ≤ source_px.
            let window_first = first.min(source_px - taps_per_output);
            let shift = first - window_first;
            let row = &mut weights[index * taps_per_output..(index + 1) * taps_per_output];
            row[shift..shift + list.len()].copy_from_slice(&list);
            firsts.push(window_first);
        }
        Self {
            source_px,
            taps_per_output,
            firsts,
            weights,
        }
    }

    fn output_px(&self) -> usize {
        self.firsts.len()
    }

    /// Returns the first source pixel and the weights of output pixel `index`.
    fn of(&self, index: usize) -> (usize, &[f32]) {
        let weights = &self.weights[index * self.taps_per_output..][..self.taps_per_output];
        (self.firsts[index], weights)
    }
}

/// Returns the source pixels covered by output pixel `index`, weighted by the covered length.
fn area_taps(source_px: usize, output_px: usize, index: usize) -> (usize, Vec<f32>) {
    let scale = source_px as f64 / output_px as f64;
    let start = index as f64 * scale;
    let end = (index + 1) as f64 * scale;
    let first = start.floor() as usize;
    let past_last = (end.ceil() as usize).min(source_px);
    let weights = (first..past_last)
        .map(|source| {
            let covered = end.min(source as f64 + 1.0) - start.max(source as f64);
            (covered.max(0.0) / scale) as f32
        })
        .collect();
    (first, weights)
}

/// Returns the two source pixels around the centre of output pixel `index`, clamped at the
/// edges, with their weights.
fn bilinear_taps(source_px: usize, output_px: usize, index: usize) -> (usize, Vec<f32>) {
    let scale = source_px as f64 / output_px as f64;
    let last = (source_px - 1) as f64;
    let centre = ((index as f64 + 0.5) * scale - 0.5).clamp(0.0, last);
    let first = centre.floor() as usize;
    let fraction = (centre - first as f64) as f32;
    if first + 1 < source_px {
        (first, vec![1.0 - fraction, fraction])
    } else {
        (first, vec![1.0])
    }
}

/// Resamples the padded square along y: `output_px` rows of `source_px` RGB values each.
fn resample_columns(image: &RgbImage, taps: &AxisTaps) -> Vec<f32> {
    let row_len = taps.source_px * 3;
    let pad_top_px = (taps.source_px - image.height_px) / 2;
    let pad_left_len = (taps.source_px - image.width_px) / 2 * 3;
    let image_row_len = image.width_px * 3;

    let mut rows = vec![0.0f32; taps.output_px() * row_len];
    for (index, out_row) in rows.chunks_exact_mut(row_len).enumerate() {
        let (first, weights) = taps.of(index);
        for (offset, &weight) in weights.iter().enumerate() {
            let image_y = (first + offset)
                .checked_sub(pad_top_px)
                .filter(|&y| y < image.height_px);
            let Some(image_y) = image_y else {
                add_white(out_row, weight);
                continue;
            };
            let bytes = &image.pixels[image_y * image_row_len..][..image_row_len];
            let (left, rest) = out_row.split_at_mut(pad_left_len);
            let (middle, right) = rest.split_at_mut(image_row_len);
            add_white(left, weight);
            add_white(right, weight);
            for (total, &byte) in middle.iter_mut().zip(bytes) {
                *total += weight * f32::from(byte);
            }
        }
    }
    rows
}

fn add_white(values: &mut [f32], weight: f32) {
    let white = weight * 255.0;
    for value in values {
        *value += white;
    }
}

/// Resamples the column-resampled rows along x and rounds them to bytes.
fn resample_rows(rows: &[f32], taps: &AxisTaps) -> Vec<u8> {
    let output_row_len = taps.output_px() * 3;
    let mut pixels = vec![0u8; taps.output_px() * output_row_len];
    let source_rows = rows.chunks_exact(taps.source_px * 3);
    for (row, out) in source_rows.zip(pixels.chunks_exact_mut(output_row_len)) {
        // A fixed tap count lets the compiler unroll the inner loop; it runs for every pixel.
        match taps.taps_per_output {
            1 => resample_row::<1>(row, taps, out),
            2 => resample_row::<2>(row, taps, out),
            3 => resample_row::<3>(row, taps, out),
            4 => resample_row::<4>(row, taps, out),
            5 => resample_row::<5>(row, taps, out),
            _ => resample_row_any(row, taps, out),
        }
    }
    pixels
}

fn resample_row<const TAPS: usize>(row: &[f32], taps: &AxisTaps, out: &mut [u8]) {
    for (index, rgb_out) in out.chunks_exact_mut(3).enumerate() {
        let (first, weights) = taps.of(index);
        let window = &row[first * 3..][..TAPS * 3];
        let mut sum = [0.0f32; 3];
        for (tap, &weight) in weights[..TAPS].iter().enumerate() {
            sum[0] += weight * window[tap * 3];
            sum[1] += weight * window[tap * 3 + 1];
            sum[2] += weight * window[tap * 3 + 2];
        }
        rgb_out.copy_from_slice(&sum.map(round_to_byte));
    }
}

fn resample_row_any(row: &[f32], taps: &AxisTaps, out: &mut [u8]) {
    for (index, rgb_out) in out.chunks_exact_mut(3).enumerate() {
        let (first, weights) = taps.of(index);
        let window = &row[first * 3..(first + weights.len()) * 3];
        let mut sum = [0.0f32; 3];
        for (&weight, rgb) in weights.iter().zip(window.chunks_exact(3)) {
            sum[0] += weight * rgb[0];
            sum[1] += weight * rgb[1];
            sum[2] += weight * rgb[2];
        }
        rgb_out.copy_from_slice(&sum.map(round_to_byte));
    }
}

/// Rounds a non-negative value half up to a byte, saturating at 255; cheaper here than
/// `f32::round`, which is a library call.
#[inline]
fn round_to_byte(value: f32) -> u8 {
    (value + 0.5) as u8
}
