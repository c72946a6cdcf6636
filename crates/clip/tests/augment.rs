//! Exact pixel checks of the augmentation pipeline on tiny images, its draw order, and its
//! input errors.

use paperclip_clip::augment::{
    AugmentMode, CLIP_MEAN, CLIP_STD, ImageTransform, RgbImage, apply_transform, augment_batch,
    normalize_chw, resize_square,
};
use paperclip_clip::error::ClipError;
use paperclip_clip::rng::Rng;

/// Builds a 4×4 image whose red byte is `4·row + column` (0 to 15), green is red + 100 and blue is
/// red + 200, so every pixel and channel is distinct.
fn numbered_4x4() -> RgbImage {
    numbered(4, 4)
}

fn numbered(width_px: usize, height_px: usize) -> RgbImage {
    let mut pixels = Vec::new();
    for index in 0..width_px * height_px {
        let red = index as u8;
        pixels.extend_from_slice(&[red, red.wrapping_add(100), red.wrapping_add(200)]);
    }
    RgbImage::new(width_px, height_px, pixels).unwrap()
}

/// Builds an image of pseudo-random bytes drawn from `seed`.
fn noise(side_px: usize, seed: u64) -> RgbImage {
    let mut rng = Rng::seeded(seed);
    let pixels = (0..side_px * side_px * 3)
        .map(|_| rng.below(256) as u8)
        .collect();
    RgbImage::new(side_px, side_px, pixels).unwrap()
}

/// Converts one normalized value back to its byte.
fn to_byte(value: f32, channel: usize) -> u8 {
    let scaled = (value * CLIP_STD[channel] + CLIP_MEAN[channel]) * 255.0;
    scaled.round() as u8
}

/// Returns the red bytes of a normalized `[3, crop, crop]` buffer as rows.
fn red_rows(values: &[f32], crop_px: usize) -> Vec<Vec<u8>> {
    channel_rows(values, crop_px, 0)
}

fn channel_rows(values: &[f32], crop_px: usize, channel: usize) -> Vec<Vec<u8>> {
    let plane = &values[channel * crop_px * crop_px..(channel + 1) * crop_px * crop_px];
    plane
        .chunks(crop_px)
        .map(|row| row.iter().map(|&value| to_byte(value, channel)).collect())
        .collect()
}

fn transform(quarter_turns: u8, flip_up_down: bool, flip_left_right: bool) -> ImageTransform {
    ImageTransform {
        quarter_turns,
        flip_up_down,
        flip_left_right,
        crop_top_px: 0,
        crop_left_px: 0,
    }
}

fn apply(image: &RgbImage, transform: &ImageTransform, crop_px: usize) -> Vec<f32> {
    let mut out = vec![0.0; 3 * crop_px * crop_px];
    apply_transform(image, transform, crop_px, &mut out).unwrap();
    out
}

fn input_message(result: Result<impl std::fmt::Debug, ClipError>) -> String {
    match result {
        Err(ClipError::Input(message)) => message,
        other => panic!("expected an input error, got {other:?}"),
    }
}

#[test]
fn rgb_image_rejects_bad_sizes() {
    assert!(RgbImage::new(0, 4, Vec::new()).is_err());
    assert!(RgbImage::new(2, 2, vec![0; 11]).is_err());
    assert!(RgbImage::new(usize::MAX, 2, Vec::new()).is_err());
    let image = RgbImage::filled(2, 3, [1, 2, 3]).unwrap();
    assert_eq!(image.pixels().len(), 18);
    assert_eq!(image.pixel(1, 2), Some([1, 2, 3]));
    assert_eq!(image.pixel(2, 0), None);
}

#[test]
fn identity_keeps_pixels() {
    let out = apply(&numbered_4x4(), &transform(0, false, false), 4);
    let expected = vec![
        vec![0, 1, 2, 3],
        vec![4, 5, 6, 7],
        vec![8, 9, 10, 11],
        vec![12, 13, 14, 15],
    ];
    assert_eq!(red_rows(&out, 4), expected);
    let green: Vec<Vec<u8>> = expected
        .iter()
        .map(|row| row.iter().map(|v| v + 100).collect())
        .collect();
    assert_eq!(channel_rows(&out, 4, 1), green);
}

/// Expected values are `numpy.rot90(numpy.arange(16).reshape(4, 4), k)`.
#[test]
fn rotation_matches_numpy_rot90() {
    let cases: [(u8, [[u8; 4]; 4]); 3] = [
        (
            1,
            [[3, 7, 11, 15], [2, 6, 10, 14], [1, 5, 9, 13], [0, 4, 8, 12]],
        ),
        (
            2,
            [[15, 14, 13, 12], [11, 10, 9, 8], [7, 6, 5, 4], [3, 2, 1, 0]],
        ),
        (
            3,
            [[12, 8, 4, 0], [13, 9, 5, 1], [14, 10, 6, 2], [15, 11, 7, 3]],
        ),
    ];
    for (quarter_turns, expected) in cases {
        let out = apply(&numbered_4x4(), &transform(quarter_turns, false, false), 4);
        let expected: Vec<Vec<u8>> = expected.iter().map(|row| row.to_vec()).collect();
        assert_eq!(red_rows(&out, 4), expected, "k = {quarter_turns}");
    }
}

#[test]
fn rotation_by_one_moves_corners_counter_clockwise() {
    let out = apply(&numbered_4x4(), &transform(1, false, false), 4);
    let rows = red_rows(&out, 4);
    assert_eq!(rows[0][0], 3, "top-left shows the former top-right");
    assert_eq!(rows[3][0], 0, "bottom-left shows the former top-left");
    assert_eq!(rows[3][3], 12, "bottom-right shows the former bottom-left");
    assert_eq!(rows[0][3], 15, "top-right shows the former bottom-right");
}

#[test]
fn flips_reverse_rows_and_columns() {
    let up_down = apply(&numbered_4x4(), &transform(0, true, false), 4);
    assert_eq!(red_rows(&up_down, 4)[0], vec![12, 13, 14, 15]);
    assert_eq!(red_rows(&up_down, 4)[3], vec![0, 1, 2, 3]);

    let left_right = apply(&numbered_4x4(), &transform(0, false, true), 4);
    assert_eq!(red_rows(&left_right, 4)[0], vec![3, 2, 1, 0]);
    assert_eq!(red_rows(&left_right, 4)[3], vec![15, 14, 13, 12]);

    let both = apply(&numbered_4x4(), &transform(0, true, true), 4);
    let half_turn = apply(&numbered_4x4(), &transform(2, false, false), 4);
    assert_eq!(both, half_turn);
}

/// rot90(k=1) gives rows [3 7 11 15], [2 6 10 14], [1 5 9 13], [0 4 8 12]; flipping up–down
/// reverses them, and the 2×2 crop at row 1, column 2 is [[9 13], [10 14]].
#[test]
fn rotation_flip_and_crop_compose_in_order() {
    let combined = ImageTransform {
        crop_top_px: 1,
        crop_left_px: 2,
        ..transform(1, true, false)
    };
    let out = apply(&numbered_4x4(), &combined, 2);
    assert_eq!(red_rows(&out, 2), vec![vec![9, 13], vec![10, 14]]);
    assert_eq!(
        channel_rows(&out, 2, 2),
        vec![vec![209, 213], vec![210, 214]]
    );
}

#[test]
fn non_square_image_is_padded_white_and_centred() {
    // 2 wide, 1 high: the 2 px square has the image in row 0, since (2 − 1) / 2 = 0.
    let wide = numbered(2, 1);
    let rows = red_rows(&apply(&wide, &transform(0, false, false), 2), 2);
    assert_eq!(rows, vec![vec![0, 1], vec![255, 255]]);

    // 1 wide, 3 high: the 3 px square has the image in column 1.
    let tall = numbered(1, 3);
    let rows = red_rows(&apply(&tall, &transform(0, false, false), 3), 3);
    assert_eq!(
        rows,
        vec![vec![255, 0, 255], vec![255, 1, 255], vec![255, 2, 255]]
    );

    // A quarter turn of the padded square turns the white column into a white row.
    let rows = red_rows(&apply(&tall, &transform(1, false, false), 3), 3);
    assert_eq!(
        rows,
        vec![vec![255, 255, 255], vec![0, 1, 2], vec![255, 255, 255]]
    );
}

/// Builds the padded square, rotates, flips and crops it as separate materialized steps.
fn reference_crop(image: &RgbImage, transform: &ImageTransform, crop_px: usize) -> Vec<[u8; 3]> {
    let side = image.width_px().max(image.height_px());
    let pad_top = (side - image.height_px()) / 2;
    let pad_left = (side - image.width_px()) / 2;
    let mut grid = vec![vec![[255u8; 3]; side]; side];
    for (y, row) in grid.iter_mut().enumerate() {
        for (x, pixel) in row.iter_mut().enumerate() {
            if let (Some(image_y), Some(image_x)) =
                (y.checked_sub(pad_top), x.checked_sub(pad_left))
                && let Some(rgb) = image.pixel(image_x, image_y)
            {
                *pixel = rgb;
            }
        }
    }
    for _ in 0..transform.quarter_turns {
        // numpy.rot90 with k = 1: rotated[i][j] = grid[j][n − 1 − i].
        grid = (0..side)
            .map(|i| (0..side).map(|j| grid[j][side - 1 - i]).collect())
            .collect();
    }
    if transform.flip_up_down {
        grid.reverse();
    }
    if transform.flip_left_right {
        grid.iter_mut().for_each(|row| row.reverse());
    }
    let mut crop = Vec::new();
    for row in &grid[transform.crop_top_px..transform.crop_top_px + crop_px] {
        crop.extend_from_slice(&row[transform.crop_left_px..transform.crop_left_px + crop_px]);
    }
    crop
}

fn output_pixels(values: &[f32], crop_px: usize) -> Vec<[u8; 3]> {
    let plane_len = crop_px * crop_px;
    (0..plane_len)
        .map(|index| [0, 1, 2].map(|channel| to_byte(values[channel * plane_len + index], channel)))
        .collect()
}

#[test]
fn single_pass_matches_materialized_steps() {
    for image in [
        numbered(5, 3),
        numbered(3, 5),
        numbered(4, 4),
        numbered(6, 1),
    ] {
        let side = image.width_px().max(image.height_px());
        let crop_px = side - 1;
        for quarter_turns in 0..4 {
            for flips in 0..4 {
                for (crop_top_px, crop_left_px) in [(0, 0), (0, 1), (1, 0), (1, 1)] {
                    let transform = ImageTransform {
                        quarter_turns,
                        flip_up_down: flips & 1 == 1,
                        flip_left_right: flips & 2 == 2,
                        crop_top_px,
                        crop_left_px,
                    };
                    let out = apply(&image, &transform, crop_px);
                    assert_eq!(
                        output_pixels(&out, crop_px),
                        reference_crop(&image, &transform, crop_px),
                        "{}×{} image, {transform:?}",
                        image.width_px(),
                        image.height_px()
                    );
                }
            }
        }
    }
}

#[test]
fn normalization_of_white_and_black() {
    let white = normalize_chw(&RgbImage::filled(1, 1, [255, 255, 255]).unwrap());
    let black = normalize_chw(&RgbImage::filled(1, 1, [0, 0, 0]).unwrap());
    let expected_white = [1.930_336, 2.074_884, 2.145_897];
    let expected_black = [-1.792_263, -1.752_097, -1.480_22];
    for channel in 0..3 {
        let white_formula = (1.0 - CLIP_MEAN[channel]) / CLIP_STD[channel];
        let black_formula = -CLIP_MEAN[channel] / CLIP_STD[channel];
        assert!((white[channel] - white_formula).abs() < 1e-6, "{white:?}");
        assert!((black[channel] - black_formula).abs() < 1e-6, "{black:?}");
        assert!(
            (white[channel] - expected_white[channel]).abs() < 1e-5,
            "{white:?}"
        );
        assert!(
            (black[channel] - expected_black[channel]).abs() < 1e-5,
            "{black:?}"
        );
    }
}

#[test]
fn normalize_chw_is_channels_first() {
    let image = RgbImage::new(2, 1, vec![0, 255, 0, 255, 0, 0]).unwrap();
    let out = normalize_chw(&image);
    assert_eq!(out.len(), 6);
    assert_eq!(to_byte(out[0], 0), 0);
    assert_eq!(to_byte(out[1], 0), 255);
    assert_eq!(to_byte(out[2], 1), 255);
    assert_eq!(to_byte(out[3], 1), 0);
    assert_eq!(to_byte(out[4], 2), 0);
    assert_eq!(to_byte(out[5], 2), 0);
}

/// Replays the documented paper draw order: quarter turns per image, up–down coin,
/// left–right coin, crop top, crop left.
fn replay_paper(
    rng: &mut Rng,
    batch: usize,
    side_px: usize,
    crop_px: usize,
) -> Vec<ImageTransform> {
    let quarter_turns: Vec<u8> = (0..batch).map(|_| rng.below(4) as u8).collect();
    let flip_up_down = rng.coin();
    let flip_left_right = rng.coin();
    let crop_top_px = rng.below(side_px - crop_px + 1);
    let crop_left_px = rng.below(side_px - crop_px + 1);
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

fn replay_per_image(
    rng: &mut Rng,
    batch: usize,
    side_px: usize,
    crop_px: usize,
) -> Vec<ImageTransform> {
    (0..batch)
        .map(|_| ImageTransform {
            quarter_turns: rng.below(4) as u8,
            flip_up_down: rng.coin(),
            flip_left_right: rng.coin(),
            crop_top_px: rng.below(side_px - crop_px + 1),
            crop_left_px: rng.below(side_px - crop_px + 1),
        })
        .collect()
}

fn expected_batch(image: &RgbImage, transforms: &[ImageTransform], crop_px: usize) -> Vec<f32> {
    transforms
        .iter()
        .flat_map(|transform| apply(image, transform, crop_px))
        .collect()
}

#[test]
fn paper_mode_follows_documented_draw_order() {
    let image = noise(12, 1);
    let images = vec![&image; 6];
    for seed in 0..20 {
        let mut rng = Rng::seeded(seed);
        let mut replay = rng.clone();
        let out = augment_batch(&images, AugmentMode::Paper, 5, None, &mut rng).unwrap();
        let transforms = replay_paper(&mut replay, images.len(), 12, 5);
        assert_eq!(out, expected_batch(&image, &transforms, 5), "seed {seed}");
        assert_eq!(
            rng, replay,
            "seed {seed}: paper mode draws batch + 4 values"
        );
    }
}

#[test]
fn per_image_mode_follows_documented_draw_order() {
    let image = noise(12, 2);
    let images = vec![&image; 6];
    for seed in 0..20 {
        let mut rng = Rng::seeded(seed);
        let mut replay = rng.clone();
        let out = augment_batch(&images, AugmentMode::PerImage, 5, None, &mut rng).unwrap();
        let transforms = replay_per_image(&mut replay, images.len(), 12, 5);
        assert_eq!(out, expected_batch(&image, &transforms, 5), "seed {seed}");
        assert_eq!(
            rng, replay,
            "seed {seed}: per-image mode draws 5 values per image"
        );
    }
}

/// Returns the four rotations of a `[3, n, n]` buffer by 0 to 3 quarter turns.
fn rotations(values: &[f32], crop_px: usize) -> Vec<Vec<f32>> {
    let plane_len = crop_px * crop_px;
    (0..4)
        .map(|quarter_turns| {
            let mut rotated = vec![0.0; values.len()];
            for channel in 0..3 {
                for row in 0..crop_px {
                    for col in 0..crop_px {
                        // numpy.rot90: rotated[i][j] = source[j][n − 1 − i], repeated.
                        let (mut y, mut x) = (row, col);
                        for _ in 0..quarter_turns {
                            (y, x) = (x, crop_px - 1 - y);
                        }
                        rotated[channel * plane_len + row * crop_px + col] =
                            values[channel * plane_len + y * crop_px + x];
                    }
                }
            }
            rotated
        })
        .collect()
}

#[test]
fn paper_outputs_differ_only_by_rotation() {
    // With the crop as large as the image the crop offset is 0, so identical inputs can only
    // differ by their quarter turns when both flips are shared by the batch.
    let image = noise(6, 3);
    let images = vec![&image; 8];
    for seed in 0..20 {
        let mut rng = Rng::seeded(seed);
        let out = augment_batch(&images, AugmentMode::Paper, 6, None, &mut rng).unwrap();
        let outputs: Vec<&[f32]> = out.chunks(3 * 36).collect();
        let first_rotations = rotations(outputs[0], 6);
        for (index, output) in outputs.iter().enumerate() {
            assert!(
                first_rotations.iter().any(|rotated| rotated == output),
                "seed {seed}: image {index} is not a rotation of image 0"
            );
        }
    }
}

#[test]
fn paper_mode_shares_crop_offset() {
    // The replayed draws give every image the same offset, and each output must equal the
    // crop of the same image at that offset.
    let image = noise(20, 4);
    let images = vec![&image; 8];
    let mut rng = Rng::seeded(11);
    let mut replay = rng.clone();
    let out = augment_batch(&images, AugmentMode::Paper, 7, None, &mut rng).unwrap();
    let transforms = replay_paper(&mut replay, 8, 20, 7);
    let offsets: Vec<(usize, usize)> = transforms
        .iter()
        .map(|transform| (transform.crop_top_px, transform.crop_left_px))
        .collect();
    assert!(offsets.windows(2).all(|pair| pair[0] == pair[1]));
    for (index, output) in out.chunks(3 * 49).enumerate() {
        assert_eq!(
            output,
            apply(&image, &transforms[index], 7),
            "image {index}"
        );
    }
}

#[test]
fn per_image_outputs_are_not_all_rotations() {
    let image = noise(6, 5);
    let images = vec![&image; 8];
    let found_reflection = (0..20).any(|seed| {
        let mut rng = Rng::seeded(seed);
        let out = augment_batch(&images, AugmentMode::PerImage, 6, None, &mut rng).unwrap();
        let outputs: Vec<&[f32]> = out.chunks(3 * 36).collect();
        let first_rotations = rotations(outputs[0], 6);
        outputs
            .iter()
            .any(|output| !first_rotations.iter().any(|rotated| rotated == output))
    });
    assert!(
        found_reflection,
        "per-image flips never differed within a batch"
    );
}

#[test]
fn center_crop_is_deterministic() {
    let image = noise(512, 6);
    let images = vec![&image; 2];
    let mut first_rng = Rng::seeded(1);
    let mut second_rng = Rng::seeded(2);
    let first = augment_batch(&images, AugmentMode::CenterCrop, 224, None, &mut first_rng).unwrap();
    let second =
        augment_batch(&images, AugmentMode::CenterCrop, 224, None, &mut second_rng).unwrap();
    assert_eq!(first, second);
    assert_eq!(first_rng, Rng::seeded(1), "center crop draws nothing");

    let centered = ImageTransform::centered(512, 224);
    assert_eq!((centered.crop_top_px, centered.crop_left_px), (144, 144));
    assert_eq!(
        &first[..3 * 224 * 224],
        apply(&image, &centered, 224).as_slice()
    );
}

#[test]
fn same_seed_gives_same_batch() {
    let images_owned: Vec<RgbImage> = (0..4).map(|seed| noise(32, seed)).collect();
    let images: Vec<&RgbImage> = images_owned.iter().collect();
    for mode in [AugmentMode::Paper, AugmentMode::PerImage] {
        let run = |seed| augment_batch(&images, mode, 16, None, &mut Rng::seeded(seed)).unwrap();
        assert_eq!(run(9), run(9), "{mode:?}");
        assert_ne!(run(9), run(10), "{mode:?}");
        assert_eq!(run(9).len(), 4 * 3 * 16 * 16);
    }
}

#[test]
fn empty_batch_draws_nothing() {
    let mut rng = Rng::seeded(3);
    let out = augment_batch(&[], AugmentMode::Paper, 224, None, &mut rng).unwrap();
    assert!(out.is_empty());
    assert_eq!(rng, Rng::seeded(3));
}

#[test]
fn too_small_image_is_rejected() {
    let small = RgbImage::filled(100, 90, [0, 0, 0]).unwrap();
    let mut rng = Rng::seeded(4);
    let message = input_message(augment_batch(
        &[&small],
        AugmentMode::Paper,
        224,
        None,
        &mut rng,
    ));
    assert!(message.contains("100×90 px"), "{message}");
    assert!(message.contains("224 px crop"), "{message}");
    assert!(message.contains("resize_px"), "{message}");
    assert_eq!(rng, Rng::seeded(4), "a rejected batch draws nothing");

    let message = input_message(augment_batch(
        &[&small],
        AugmentMode::Paper,
        224,
        Some(128),
        &mut rng,
    ));
    assert!(message.contains("resized to 128 px"), "{message}");

    let fits = augment_batch(&[&small], AugmentMode::Paper, 224, Some(224), &mut rng);
    assert_eq!(fits.unwrap().len(), 3 * 224 * 224);
}

#[test]
fn zero_sizes_are_rejected() {
    let image = noise(8, 7);
    let mut rng = Rng::seeded(5);
    let message = input_message(augment_batch(
        &[&image],
        AugmentMode::Paper,
        0,
        None,
        &mut rng,
    ));
    assert!(message.contains("crop_px is 0"), "{message}");
    let message = input_message(augment_batch(
        &[&image],
        AugmentMode::Paper,
        4,
        Some(0),
        &mut rng,
    ));
    assert!(message.contains("resize_px is 0"), "{message}");
}

#[test]
fn paper_mode_rejects_mixed_sides() {
    let large = noise(16, 8);
    let small = noise(12, 9);
    let mut rng = Rng::seeded(6);
    let message = input_message(augment_batch(
        &[&large, &small],
        AugmentMode::Paper,
        8,
        None,
        &mut rng,
    ));
    assert!(message.contains("image 1 a 12 px square"), "{message}");
    for mode in [AugmentMode::PerImage, AugmentMode::CenterCrop] {
        assert!(augment_batch(&[&large, &small], mode, 8, None, &mut rng).is_ok());
    }
    assert!(augment_batch(&[&large, &small], AugmentMode::Paper, 8, Some(12), &mut rng).is_ok());
}

#[test]
fn apply_transform_rejects_bad_transforms() {
    let image = numbered_4x4();
    let mut out = vec![0.0; 3 * 4];
    let bad_turns = transform(4, false, false);
    let message = input_message(apply_transform(&image, &bad_turns, 2, &mut out));
    assert!(message.contains("quarter_turns is 4"), "{message}");

    let outside = ImageTransform {
        crop_top_px: 3,
        ..transform(0, false, false)
    };
    let message = input_message(apply_transform(&image, &outside, 2, &mut out));
    assert!(message.contains("does not fit"), "{message}");

    let mut short = vec![0.0; 5];
    let message = input_message(apply_transform(
        &image,
        &transform(0, false, false),
        2,
        &mut short,
    ));
    assert!(message.contains("holds 5 values"), "{message}");
}

#[test]
fn area_downscale_averages_blocks() {
    // 4×4 → 2×2: each output pixel is the mean of a 2×2 block of reds 0 to 15.
    let resized = resize_square(&numbered_4x4(), 2).unwrap();
    let reds: Vec<u8> = resized.pixels().chunks(3).map(|rgb| rgb[0]).collect();
    // Block means 2.5, 4.5, 10.5 and 12.5 round half up.
    assert_eq!(reds, vec![3, 5, 11, 13]);

    // 3 → 2 covers 1.5 source pixels per output pixel: (0 + 0.5·1) / 1.5 and
    // (0.5·1 + 2) / 1.5 along a row of reds 0, 1, 2.
    let row = RgbImage::new(
        3,
        3,
        [0u8, 1, 2]
            .repeat(3)
            .iter()
            .flat_map(|&v| [v, v, v])
            .collect(),
    )
    .unwrap();
    let resized = resize_square(&row, 2).unwrap();
    let reds: Vec<u8> = resized.pixels().chunks(3).map(|rgb| rgb[0]).collect();
    assert_eq!(reds, vec![0, 2, 0, 2]);
}

#[test]
fn bilinear_upscale_interpolates() {
    // 2×2 with columns 0 and 200 → 4×4: centres at −0.25 (clamped), 0.25, 0.75, 1.25 (clamped).
    let image = RgbImage::new(
        2,
        2,
        [0u8, 200, 0, 200].iter().flat_map(|&v| [v, v, v]).collect(),
    )
    .unwrap();
    let resized = resize_square(&image, 4).unwrap();
    let first_row: Vec<u8> = resized.pixels()[..12].chunks(3).map(|rgb| rgb[0]).collect();
    assert_eq!(first_row, vec![0, 50, 150, 200]);
}

#[test]
fn resize_pads_non_square_with_white() {
    let wide = RgbImage::filled(4, 2, [0, 0, 0]).unwrap();
    let resized = resize_square(&wide, 2).unwrap();
    // The 4 px square has black rows 1 and 2; each output row averages one black and one
    // white row.
    let reds: Vec<u8> = resized.pixels().chunks(3).map(|rgb| rgb[0]).collect();
    assert_eq!(reds, vec![128, 128, 128, 128]);

    let same = noise(5, 10);
    assert_eq!(resize_square(&same, 5).unwrap(), same);
    assert!(resize_square(&same, 0).is_err());
}

#[test]
fn resize_then_crop_in_batch() {
    let image = noise(64, 11);
    let mut rng = Rng::seeded(12);
    let out = augment_batch(&[&image], AugmentMode::CenterCrop, 32, Some(32), &mut rng).unwrap();
    let expected = normalize_chw(&resize_square(&image, 32).unwrap());
    assert_eq!(out, expected);
}

/// Prints the time of one paper-mode batch of 32 stored-size images.
/// Run with `cargo test -p paperclip-clip --test augment -- --ignored --nocapture`.
#[test]
#[ignore = "timing only; prints milliseconds per batch"]
fn paper_batch_timing() {
    let images_owned: Vec<RgbImage> = (0..32).map(|seed| noise(512, seed)).collect();
    let images: Vec<&RgbImage> = images_owned.iter().collect();
    let mut rng = Rng::seeded(0);
    let cases = [
        ("no resize", None),
        ("resize 256", Some(256)),
        ("resize 224", Some(224)),
    ];
    for (label, resize_px) in cases {
        let repeats = 20;
        let start = std::time::Instant::now();
        for _ in 0..repeats {
            let out = augment_batch(&images, AugmentMode::Paper, 224, resize_px, &mut rng).unwrap();
            std::hint::black_box(out);
        }
        let per_batch_ms = start.elapsed().as_secs_f64() * 1000.0 / f64::from(repeats);
        println!("32 × 512² → 224², {label}: {per_batch_ms:.2} ms per batch");
    }
}
