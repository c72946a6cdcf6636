//! Local storage shared by every dataset: the content-addressed blob store.

pub mod blobs;
