//! Storage shared by every dataset: the local content-addressed blob store, and object
//! stores at `s3://`, `gs://` and `az://` URLs, also registered for DataFusion.

pub mod blobs;
pub mod registry;
pub mod remote;
