//! Cases from public bug reports and questions of people doing parts of this job
//! (querying MAST, decoding FITS and previews, constrained JSON, tar shards, SQL,
//! incremental pipelines, CLIP training). Each test builds the report's small input
//! offline, runs it through the product and checks the behaviour the product promises.
//! Its comment cites the report's URL.

mod clip;
mod fits;
mod images;
mod incremental;
mod json;
mod mast;
mod shards;
mod sql;
mod text;
