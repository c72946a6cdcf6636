//! Published datasets: WebDataset shards, versions as Delta table versions, and the SQL
//! catalog over every version.

pub mod catalog;
pub mod data_files;
pub mod delta_log;
pub mod diff;
pub mod gc;
pub mod mirror;
pub mod remote_catalog;
pub mod retention;
pub mod shards;
pub mod sql_hints;
pub mod verify;
pub mod versions;
