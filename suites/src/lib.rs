//! The CSI conformance specs.
//!
//! A [`Spec`] is one rule of the CSI spec, named as a sentence, checked by an async
//! function over a [`Ctx`] (clients, configuration, the driver's capabilities and a
//! resource tracker). Specs are grouped by service, one file per service or RPC
//! family. Each declares what it [`Need`]s, so a runner can report a spec that doesn't
//! apply as skipped, with the reason, before calling anything. The runner lives in the
//! `csi-sanity` crate; this crate only says what conformance means.
//!
//! # Writing a spec
//!
//! ```
//! use csi_suites::{spec, Ctx, Need, Spec};
//! use csi_proto::v1::controller_service_capability::rpc::Type as ControllerRpc;
//!
//! fn specs() -> Vec<Spec> {
//!     vec![spec!(
//!         "Controller::Example",
//!         "a volume created by a fixture can be deleted",
//!         "spec DeleteVolume: deleting an existing volume MUST succeed",
//!         [Need::ControllerCap(ControllerRpc::CreateDeleteVolume)],
//!         |ctx: Ctx| async move {
//!             // Tracked: deleted after the spec even if a later step fails.
//!             let volume = ctx.create_volume(&ctx.unique_name("example")).await?;
//!             ctx.delete_volume(&volume.volume_id).await?;
//!             Ok(())
//!         }
//!     )]
//! }
//! # let _ = specs();
//! ```
//!
//! # The tracker and fixtures (the API for new spec groups)
//!
//! - Names: [`Ctx::unique_name`] (`<run prefix>-<spec>-<what>-<n>`), unique per run and
//!   spec, so specs can run in parallel.
//! - Paths: [`Ctx::target_path`] and [`Ctx::staging_path`] (this spec's, created on
//!   first use with the configured commands), [`Ctx::new_target_path`] and
//!   [`Ctx::new_staging_path`] for more, [`Ctx::check_path`] to look at one.
//! - Fixtures, all tracked: [`Ctx::create_volume`], [`Ctx::create_snapshot`],
//!   [`Ctx::create_ready_snapshot`], [`Ctx::wait_snapshot_ready`],
//!   [`Ctx::controller_publish`], [`Ctx::node_stage`], [`Ctx::node_publish`],
//!   [`Ctx::make_available`] (the whole chain). Each has a `*_request` builder and a
//!   `*_with(request) -> Call` form for specs that check the outcome themselves.
//! - Configuration: [`Ctx::default_capability`], [`Ctx::capability`],
//!   [`Ctx::secrets`] (per RPC, [`Secret`]), [`Ctx::node_id`] (cached NodeGetInfo).
//! - The tracker: [`Ctx::tracker`] → [`Tracker::track`] / [`Tracker::forget`] with a
//!   [`Resource`]; [`Ctx::cleanup`] undoes in order (node unpublish, node unstage,
//!   controller unpublish, delete group snapshots, snapshots, volumes, remove paths).
//!   The runner calls it after every spec, also after a failure or a panic.
//! - Checks: [`call!`] makes an RPC and keeps its name and (redacted) request;
//!   [`Call::ok`], [`Call::code`], [`Call::code_in`] and [`check::ensure`] produce
//!   [`Failure`]s that name the RPC, the request, the expected and actual outcome, and
//!   the rule. [`Stop::skip`] reports at run time that a spec does not apply: a skip is an
//!   outcome of its own, and a [`Failure`] becomes a [`Stop`] with `?`.

// A `Failure` carries the whole story of what went wrong (RPC, request, expected,
// actual, rule); it is built on the cold path only, so its size doesn't matter.
#![allow(clippy::result_large_err)]

pub mod breaker;
pub mod capabilities;
pub mod check;
pub mod config;
pub mod context;
pub mod fixtures;
pub mod go_names;
pub mod paths;
pub mod retry;
pub mod secrets;
pub mod spec;
pub mod tracker;
pub mod units;

pub mod beyond;
pub mod controller;
pub mod create_volume;
pub mod expand;
pub mod group_controller;
pub mod identity;
pub mod modify;
pub mod node;
pub mod publish;
pub mod snapshots;

pub use capabilities::{Capabilities, Need};
pub use check::{Call, Failure, Stop};
pub use config::{Profile, SuiteConfig};
pub use context::{Clients, Ctx, RunState};
pub use fixtures::Available;
pub use paths::{PathKind, PathRole};
pub use secrets::Secret;
pub use spec::{Spec, SpecFuture};
pub use tracker::{Endpoints, Ledger, Resource, Tracker};

/// Every spec, grouped by service, in a stable order.
pub fn all() -> Vec<Spec> {
    let mut specs = Vec::new();
    specs.extend(identity::specs());
    specs.extend(controller::specs());
    specs.extend(create_volume::specs());
    specs.extend(publish::specs());
    specs.extend(snapshots::specs());
    specs.extend(expand::specs());
    specs.extend(modify::specs());
    specs.extend(group_controller::specs());
    specs.extend(node::specs());
    specs.extend(beyond::specs());
    for spec in &mut specs {
        spec.go_name = go_names::go_name(&spec.full_name());
    }
    specs
}
