//! The bundled driver: with no endpoint given, the harness runs the project's own
//! driver in process, on a temporary socket, with its in-memory cloud in nyc3, through
//! the driver's embedding interface, `csi_driver::embedded` (and nothing else of it).
//!
//! One process serves Controller and the node plugin of droplet 1. With more nodes
//! ([`start`]'s `nodes`), droplets 2..=nodes get a node plugin each, on sockets of their
//! own, sharing the cloud's data dir, as node plugins on other machines of one cluster
//! would. The droplet after the last node is registered too, so the specs that publish
//! to a second node have one that no spec runs on.

use std::path::{Path, PathBuf};

/// The most nodes the bundled driver runs.
pub const MAX_NODES: usize = 64;

/// A bundled driver, kept alive for the run; [`Bundled::stop`] shuts it down before
/// its temporary directory goes away.
pub struct Bundled {
    #[cfg(feature = "bundled")]
    driver: Option<csi_driver::embedded::Embedded>,
    dir: tempfile::TempDir,
    /// The endpoint clients dial: Identity, Controller and droplet 1's Node.
    pub endpoint: String,
    /// The node plugins of droplets 2, 3, … (none unless more nodes were asked for).
    pub extra_node_endpoints: Vec<String>,
    /// A registered droplet that no node plugin of this driver serves.
    pub second_node_id: String,
}

impl Bundled {
    /// The temporary directory everything of this driver lives under.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// Where the bundled run puts target paths.
    pub fn mount_dir(&self) -> PathBuf {
        self.dir.path().join("mount")
    }

    /// Where the bundled run puts staging paths.
    pub fn staging_dir(&self) -> PathBuf {
        self.dir.path().join("staging")
    }

    /// The mutable parameters the bundled driver can change on a volume, with values it
    /// accepts: the specs' defaults when none are configured.
    pub fn mutable_parameters(&self) -> Vec<(String, String)> {
        #[cfg(feature = "bundled")]
        let known = csi_driver::embedded::MUTABLE_PARAMETERS;
        #[cfg(not(feature = "bundled"))]
        let known: &[(&str, &str)] = &[];
        known
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    /// Stop serving and wait for in-flight calls: the extra node plugins first, then the
    /// process that owns the cloud (and detaches the loop devices nothing mounts).
    pub async fn stop(mut self) {
        #[cfg(feature = "bundled")]
        if let Some(driver) = self.driver.take() {
            for problem in driver.stop().await {
                eprintln!("csi-sanity: warning: {problem:#}");
            }
        }
        let _ = &mut self;
    }
}

/// Start the bundled driver under a fresh temporary directory, with `nodes` node plugins
/// (at least one).
#[cfg(feature = "bundled")]
pub async fn start(nodes: usize) -> anyhow::Result<Bundled> {
    let dir = tempfile::Builder::new().prefix("csi-sanity-").tempdir()?;
    let driver = csi_driver::embedded::start(dir.path(), nodes).await?;
    Ok(Bundled {
        endpoint: driver.endpoint.clone(),
        extra_node_endpoints: driver.node_endpoints.clone(),
        second_node_id: driver.spare_node_id.clone(),
        driver: Some(driver),
        dir,
    })
}

/// Without the `bundled` feature there is nothing to start.
#[cfg(not(feature = "bundled"))]
pub async fn start(_nodes: usize) -> anyhow::Result<Bundled> {
    anyhow::bail!(
        "no --csi.endpoint given, and this build has no bundled driver (feature `bundled`)"
    )
}
