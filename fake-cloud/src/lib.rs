//! `fake-cloud`: an in-memory block-storage cloud that behaves like a real one.
//!
//! It models regions, droplets (nodes), volumes, volume snapshots and the slow
//! asynchronous actions that attach, detach and resize volumes, with the rules
//! and error texts of the DigitalOcean v2 API. Actions take time (a configurable
//! latency plus jitter) and may fail; the clock can be virtual, so unit tests
//! of long delays run instantly. With a data directory, each volume's bytes
//! live in a sparse image file ([`volume_image`] says where) and the
//! metadata survives a restart (`<data_dir>/state.json`).
//!
//! The [`Cloud`] type is the library entry point, shared by the CSI driver's
//! in-memory backend. The [`server`] module serves the same model over HTTP with
//! the DigitalOcean v2 paths, bodies, status codes, pagination, authentication,
//! rate limits and injected faults (5xx, 429, lost responses); the `fake-cloud`
//! binary runs that server.

pub mod clock;
pub mod error;
mod images;
pub mod model;
mod persist;
pub mod server;

pub use error::CloudError;
pub use images::{volume_image, volume_images_dir};
pub use model::*;
