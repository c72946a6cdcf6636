//! Access to the Hubble (HST) holdings of MAST for the paperclip pipeline.
//!
//! - [`ids`]: MAST's numeric [`ObsId`], the mission [`MissionObsId`] and
//!   validated [`DataUri`]s.
//! - [`client`], [`invoke`], [`queries`], [`download`]: [`MastClient`], a
//!   client for the MAST Portal API (`/api/v0/invoke`) and the download
//!   endpoint, with long-polling, paging checks, bounded retries and query
//!   splitting.
//! - [`snapshot`] and [`server`]: a directory format for a frozen part of the
//!   archive and a local HTTP server that serves it through the same API
//!   shapes, so the pipeline runs and is tested without the network.

#[cfg(feature = "network")]
pub mod client;
#[cfg(feature = "network")]
pub mod download;
pub mod envelope;
pub mod error;
pub mod ids;
#[cfg(feature = "network")]
pub mod invoke;
pub mod model;
#[cfg(feature = "network")]
pub mod queries;
#[cfg(feature = "network")]
pub mod server;
#[cfg(feature = "network")]
pub mod snapshot;

#[cfg(feature = "network")]
pub use client::{ClientConfig, ClientStats, MastClient};
#[cfg(feature = "network")]
pub use download::Download;
pub use envelope::{Envelope, Field, MastRequest, Paging, Row};
pub use error::ArchiveError;
pub use ids::{DataUri, MissionObsId, ObsId};
pub use model::{
    Observation, ObservationList, Product, ProductList, QuarantineReason, QuarantinedProduct,
    RejectedRow,
};
#[cfg(feature = "network")]
pub use server::{DEFAULT_BIND_ADDR, RunningServer, ServeOptions, bind, bind_dir};
#[cfg(feature = "network")]
pub use snapshot::{Snapshot, SnapshotWriter, TableKind};
