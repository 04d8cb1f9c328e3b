//! `csi-sanity`: a CSI conformance harness.
//!
//! It connects to a CSI endpoint (or, with none given, starts the bundled driver on a
//! temporary socket), reads what the driver advertises, and runs the specs of the
//! `csi-suites` crate as libtest-mimic trials: each spec with its own names and paths,
//! gated on the capabilities it needs (skipped with the reason when they are missing),
//! and followed by the cleanup of everything it created, even when it failed. At the end
//! it checks that nothing the run created is left over, prints
//! `N passed, N failed, N skipped`, and writes JUnit XML when asked.
//!
//! # As a library, from a driver's own `cargo test`
//!
//! One `#[test]` runs the whole suite against your driver: start it the way you do,
//! in a runtime of its own, and hand its endpoint to [`run`]. Here the driver is this
//! project's (`csi_driver`); `harness/tests/library.rs` runs exactly this.
//!
//! ```no_run
//! use clap::Parser;
//!
//! // The body of `#[test] fn csi_sanity()` in your crate:
//! let rt = tokio::runtime::Runtime::new()?;
//! let driver = rt.block_on(csi_driver::start(csi_driver::Config::try_parse_from([
//!     "csi-driver", "--endpoint", "unix:///tmp/my-driver.sock",
//! ])?))?;
//!
//! let mut config = csi_sanity::Config::for_endpoint(driver.endpoint.clone());
//! config.suite.volume_size = 1 << 30; // what the backend makes quickly
//! let report = csi_sanity::run(config)?; // Err: the run could not start at all
//! assert!(report.success(), "{report}"); // the failures in full, then the summary
//! # Ok::<(), anyhow::Error>(())
//! ```
//!
//! With no endpoint, [`Config::default`] runs against the bundled driver (the crate's
//! `bundled` feature), which is what `harness/tests/library.rs` does. For a
//! `harness = false` test target that takes the same flags as the binary (filters,
//! `--csi.*`), use [`cli::parse`] on `std::env::args()`.
//!
//! [`run`] must not be called from inside an async runtime: it runs its own.

pub mod bundled;
pub mod cli;
pub mod connect;
mod discover;
pub mod findings;
mod leftovers;
pub mod load;
pub mod report;
pub mod runner;
pub mod select;

pub use csi_suites::SuiteConfig;
pub use report::{Outcome, Status};
pub use runner::{run, run_specs, Config, Report};
