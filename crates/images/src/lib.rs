//! Image preparation for paperclip datasets: decodes a preview (JPEG or PNG) or a FITS
//! file and produces the square JPEG that the PAPERCLIP method trains on.
//!
//! [`prepare`] runs these steps:
//! 1. sniff the format from the bytes ([`decode::sniff`]);
//! 2. reject dimensions over [`PrepareOptions::max_source_pixels`] before decoding;
//! 3. decode to 8-bit greyscale or RGB ([`decode`]), or read the first FITS image plane
//!    ([`fits`]) and map it to 8 bits with an astronomy stretch ([`stretch`]);
//! 4. apply the source rules (minimum short side, optional maximum aspect ratio) and
//!    reject blank images;
//! 5. scale the longest side to `size_px` with Lanczos3 and centre the result on a
//!    white square ([`geometry`]);
//! 6. encode the square as RGB JPEG with `jpeg_quality` ([`encode`]).
//!
//! Invariants, exercised by the property tests in `tests/robustness.rs`: `prepare`
//! returns an error instead of panicking on malformed input, and the same bytes and
//! options give the same JPEG bytes on the same machine. Every failure is an [`ImageError`]
//! whose [`ImageError::reason_code`] is a stable snake_case label for skip reports.

pub mod decode;
pub mod encode;
pub mod fits;
pub mod geometry;
pub mod stretch;
pub mod synth;

mod error;
mod prepare;

pub use decode::SourceFormat;
pub use encode::{Samples, encode_jpeg};
pub use error::ImageError;
pub use prepare::{PrepareOptions, PreparedImage, prepare};
pub use stretch::Stretch;
