//! The units of every flag and report: the workspace's one grammar, from `csi-units`.

pub use csi_units::*;
