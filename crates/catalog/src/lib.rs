//! Readers for HST observing-proposal texts and the captions built from them.
//!
//! - [`parse_abstracts_cat`] reads STScI's `abstracts.cat` catalog with the same semantics as
//!   the PAPERCLIP reference parser, and reports every record it does not keep.
//! - [`parse_phase2_pro`] reads one proposal in the Phase II `.pro` text form.
//! - [`caption`] builds PAPERCLIP-form or normalized caption text from a [`Proposal`].
//!
//! The crate does no I/O: every reader takes the file's bytes. Input may be UTF-8 (with or
//! without a byte order mark), Latin-1, or a mix line by line, with LF, CRLF or CR line ends.
//! Lines that are not valid UTF-8 are decoded as Latin-1 and recorded in
//! [`Proposal::text_repairs`]; no reader panics on any input.

mod abstracts_cat;
pub mod caption;
mod catalog;
mod error;
mod phase2;
mod proposal;
mod text;

pub use abstracts_cat::parse_abstracts_cat;
pub use caption::{CaptionForm, caption, clean_caption, paper_caption};
pub use catalog::{Catalog, CatalogSkip, SkipReason};
pub use error::CatalogError;
pub use phase2::parse_phase2_pro;
pub use proposal::{MAX_PLAUSIBLE_CYCLE, Proposal, RepairKind, TextRepair, field};
