//! Published datasets: WebDataset shards, versions as Delta table versions, and the SQL
//! catalog over every version.

pub mod catalog;
pub mod diff;
pub mod shards;
pub mod verify;
pub mod versions;
