//! The CSI conformance specs.
//!
//! A [`Spec`] is one rule of the CSI spec, named as a sentence, checked by an async
//! function over a [`Ctx`] (clients, configuration, the driver's capabilities and a
//! resource tracker). Specs are grouped by service. Each declares what it [`Need`]s, so
//! a runner can report a spec that doesn't apply as skipped, with the reason, before
//! calling anything. The runner lives in the `csi-sanity` crate; this crate only says
//! what conformance means.

pub mod check;
pub mod context;
pub mod identity;
pub mod spec;

pub use check::Failure;
pub use context::{Capabilities, Clients, Ctx, SuiteConfig};
pub use spec::{Need, Spec, SpecFuture};

/// Every spec, grouped by service, in a stable order.
pub fn all() -> Vec<Spec> {
    let mut specs = Vec::new();
    specs.extend(identity::specs());
    specs
}
