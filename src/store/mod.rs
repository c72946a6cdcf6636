//! Storage shared by every dataset: the local content-addressed blob store, its copy on
//! object storage, and object stores at `s3://`, `gs://` and `az://` URLs, also
//! registered for DataFusion.

pub mod blobs;
pub mod registry;
pub mod remote;
pub mod remote_blobs;
