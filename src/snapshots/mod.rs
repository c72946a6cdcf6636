//! Local archive snapshots: built from files, the built-in fixtures, and the embedded
//! archive that serves the fixtures during a run.

pub mod embedded;
pub mod files;
pub mod fixtures;
pub mod synth;
