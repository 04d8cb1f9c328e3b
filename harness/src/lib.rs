//! `csi-sanity`: a CSI conformance harness.
//!
//! It connects to a CSI endpoint (or, with none given, starts the bundled driver on a
//! temporary socket), reads what the driver advertises, and runs the specs of the
//! `csi-suites` crate as libtest-mimic trials.

pub mod connect;
pub mod runner;

pub use csi_suites::SuiteConfig;
pub use runner::{run, Config, Report};
