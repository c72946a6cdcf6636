//! Per-stage image throughput: what each step of `prepare` costs on one core, against
//! the libraries' own rates on the same previews, and how decode plus resize scales
//! when every core prepares its own image (the pipeline's layout).
//!
//!   cargo bench -p paperclip-images --bench stages -- [DIR_OF_JPEGS] [MAX_FILES]
//!
//! Without a directory it generates 24 synthetic sky previews of 512 to 4,500 pixels.
//! Prints a Markdown table; results are recorded in docs/benchmarks.md.

use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Instant;

use fast_image_resize::images::{Image, ImageRef};
use fast_image_resize::{FilterType, PixelType, ResizeAlg, ResizeOptions, Resizer};
use paperclip_images::decode::{Raster, check_jpeg, decode_inspected, inspect};
use paperclip_images::{PrepareOptions, Samples, SourceFormat, encode_jpeg, geometry, prepare};
use sha2::Digest;
use zune_core::bytestream::ZCursor;
use zune_jpeg::JpegDecoder;

fn main() {
    let args: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| a != "--bench")
        .collect();
    let max_files = args.get(1).and_then(|n| n.parse().ok()).unwrap_or(60);
    let previews = match args.first() {
        Some(dir) => read_previews(Path::new(dir), max_files),
        None => synthetic_previews(),
    };
    let source_mpx: f64 = previews.iter().map(|p| p.megapixels).sum();
    let count = previews.len() as f64;
    println!(
        "{} previews, {:.1} MB, {:.2} megapixels on average",
        previews.len(),
        previews.iter().map(|p| p.bytes.len()).sum::<usize>() as f64 / 1e6,
        source_mpx / count
    );

    let decoded: Vec<Raster> = previews.iter().map(|p| decode(&p.bytes)).collect();
    let squares: Vec<_> = decoded
        .iter()
        .map(|raster| geometry::fit_on_white_square(raster, 512).expect("resizes"))
        .collect();

    let rows = [
        time("SHA-256 (sha2)", &previews, |p| {
            std::hint::black_box(sha2::Sha256::digest(&p.bytes));
        }),
        time("scan check (check_jpeg)", &previews, |p| {
            check_jpeg(&p.bytes).expect("valid JPEG");
        }),
        time("decode, library (zune-jpeg)", &previews, |p| {
            let mut decoder = JpegDecoder::new(ZCursor::new(&p.bytes[..]));
            std::hint::black_box(decoder.decode().expect("decodes"));
        }),
        time(
            "scan check and strict decode (inspect, decode_inspected)",
            &previews,
            |p| {
                std::hint::black_box(decode(&p.bytes));
            },
        ),
        time_each("resize, library (fast_image_resize)", &decoded, resize_only),
        time_each("resize and pad (fit_on_white_square)", &decoded, |raster| {
            std::hint::black_box(geometry::fit_on_white_square(raster, 512).expect("resizes"));
        }),
        time_each("encode 512 q95 (jpeg-encoder)", &squares, |square| {
            let jpeg = encode_jpeg(square.as_raw(), 512, 512, Samples::Rgb, 95);
            std::hint::black_box(jpeg.expect("encodes"));
        }),
        time("prepare (all of the above)", &previews, |p| {
            std::hint::black_box(prepare(&p.bytes, &PrepareOptions::default()).expect("ok"));
        }),
    ];

    println!("\n| stage, one core | ms per preview | source megapixels/s |");
    println!("|---|---:|---:|");
    for (name, secs) in &rows {
        println!(
            "| {name} | {:.2} | {:.0} |",
            secs * 1e3 / count,
            source_mpx / secs
        );
    }

    let single_secs = rows[2].1 + rows[4].1;
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let parallel_secs = decode_and_resize_on_threads(&previews, cores);
    let efficiency = single_secs / (parallel_secs * cores as f64);
    println!(
        "\nlibrary decode + resize: {:.1} previews/s on one core; {:.1} previews/s with {cores} threads, one preview each; {:.0}% of {cores} x the one-core rate",
        count / single_secs,
        count / parallel_secs,
        efficiency * 100.0
    );
}

struct Preview {
    bytes: Vec<u8>,
    megapixels: f64,
}

fn read_previews(dir: &Path, max_files: usize) -> Vec<Preview> {
    let mut paths: Vec<_> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", dir.display()))
        .filter_map(|entry| entry.ok().map(|e| e.path()))
        .filter(|path| path.extension().is_some_and(|ext| ext == "jpg"))
        .collect();
    paths.sort();
    paths
        .iter()
        .take(max_files)
        .map(|path| preview(std::fs::read(path).expect("readable preview")))
        .collect()
}

fn synthetic_previews() -> Vec<Preview> {
    (0..24u64)
        .map(|seed| {
            // Sides from 512 to about 4,500 pixels, every other preview in colour.
            let side = (512.0 * 8.8f64.powf(seed as f64 / 23.0)) as u32;
            let bytes =
                paperclip_images::synth::sky_jpeg(seed, side, side * 9 / 10, seed % 2 == 1, 90);
            preview(bytes)
        })
        .collect()
}

fn preview(bytes: Vec<u8>) -> Preview {
    let header = inspect(&bytes, SourceFormat::Jpeg).expect("a JPEG preview");
    let megapixels = f64::from(header.width_px) * f64::from(header.height_px) / 1e6;
    Preview { bytes, megapixels }
}

fn decode(bytes: &[u8]) -> Raster {
    let header = inspect(bytes, SourceFormat::Jpeg).expect("a JPEG preview");
    decode_inspected(bytes, &header, u64::MAX)
        .expect("decodes")
        .raster
}

fn resize_only(raster: &Raster) {
    let (samples, pixel_type) = match raster {
        Raster::Grey(grey) => (grey.as_raw(), PixelType::U8),
        Raster::Rgb(rgb) => (rgb.as_raw(), PixelType::U8x3),
    };
    let (width, height) = (raster.width_px(), raster.height_px());
    let (target_width, target_height) = geometry::scaled_size(width, height, 512);
    let source = ImageRef::new(width, height, samples, pixel_type).expect("valid buffer");
    let mut target = Image::new(target_width, target_height, pixel_type);
    let options = ResizeOptions::new().resize_alg(ResizeAlg::Convolution(FilterType::Lanczos3));
    Resizer::new()
        .resize(&source, &mut target, &options)
        .expect("resizes");
    std::hint::black_box(target);
}

fn time(
    name: &'static str,
    previews: &[Preview],
    mut step: impl FnMut(&Preview),
) -> (&'static str, f64) {
    time_each(name, previews, &mut step)
}

fn time_each<T>(name: &'static str, items: &[T], mut step: impl FnMut(&T)) -> (&'static str, f64) {
    let clock = Instant::now();
    for item in items {
        step(item);
    }
    (name, clock.elapsed().as_secs_f64())
}

/// Library decode plus resize of every preview with `threads` threads taking the next
/// preview from a shared counter; returns the wall-clock seconds.
fn decode_and_resize_on_threads(previews: &[Preview], threads: usize) -> f64 {
    let next = AtomicUsize::new(0);
    let clock = Instant::now();
    std::thread::scope(|scope| {
        for _ in 0..threads {
            scope.spawn(|| {
                while let Some(preview) = previews.get(next.fetch_add(1, Ordering::Relaxed)) {
                    let mut decoder = JpegDecoder::new(ZCursor::new(&preview.bytes[..]));
                    let samples = decoder.decode().expect("decodes");
                    let info = decoder.info().expect("header read");
                    let (width, height) = (u32::from(info.width), u32::from(info.height));
                    let raster = if samples.len() == (width * height) as usize {
                        Raster::Grey(
                            image::GrayImage::from_raw(width, height, samples).expect("size"),
                        )
                    } else {
                        Raster::Rgb(
                            image::RgbImage::from_raw(width, height, samples).expect("size"),
                        )
                    };
                    resize_only(&raster);
                }
            });
        }
    });
    clock.elapsed().as_secs_f64()
}
