//! paperclip turns a telescope archive and the observing-proposal texts behind it into
//! versioned, SQL-queryable, training-ready image-text datasets.
//!
//! Data flow of the main job ([`pipeline::run`]): the proposal catalog and the archive's
//! observation and product tables become Arrow tables. SQL models over DataFusion select
//! the images ([`sql`]). Selected products are downloaded into a content-addressed store
//! ([`store`]) and prepared with the image crate. The samples are written as WebDataset
//! shards and published as a Delta table version ([`dataset`]). The models can also run
//! on an Apache Ballista cluster ([`cluster`]).

pub mod cluster;
pub mod dataset;
pub mod error;
pub mod eval;
pub mod pipeline;
pub mod runs;
pub mod schedule;
pub mod snapshots;
pub mod sql;
pub mod store;
pub mod summaries;
pub mod train;
