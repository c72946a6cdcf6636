//! Storage shared by every dataset: the local content-addressed blob store, its copy on
//! object storage, and object stores at `s3://`, `gs://` and `az://` URLs, also
//! registered for DataFusion.

pub mod blobs;
pub mod registry;
pub mod remote;
pub mod remote_blobs;

/// Returns paperclip's cache folder: `$PAPERCLIP_CACHE`, or `~/.cache/paperclip`. An
/// empty `PAPERCLIP_CACHE` counts as unset, as in tools/fetch-clip-vocabulary.sh.
pub fn cache_dir() -> std::path::PathBuf {
    std::env::var_os("PAPERCLIP_CACHE")
        .filter(|dir| !dir.is_empty())
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| {
            let home =
                std::env::var_os("HOME").map_or_else(|| ".".into(), std::path::PathBuf::from);
            home.join(".cache").join("paperclip")
        })
}
