//! The bundled driver: with no endpoint given, the harness runs the project's own
//! driver in process, on a temporary socket, with its in-memory cloud in nyc3.
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
    driver: Option<csi_driver::RunningDriver>,
    #[cfg(feature = "bundled")]
    nodes: Vec<csi_driver::RunningDriver>,
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

    /// Stop serving and wait for in-flight calls: the extra node plugins first, then the
    /// process that owns the cloud (and detaches the loop devices nothing mounts).
    pub async fn stop(mut self) {
        #[cfg(feature = "bundled")]
        {
            for node in self.nodes.drain(..) {
                if let Err(e) = node.stop().await {
                    eprintln!("csi-sanity: warning: stopping a bundled node plugin: {e:#}");
                }
            }
            if let Some(driver) = self.driver.take() {
                if let Err(e) = driver.stop().await {
                    eprintln!("csi-sanity: warning: stopping the bundled driver: {e:#}");
                }
            }
        }
        let _ = &mut self;
    }
}

/// Start the bundled driver under a fresh temporary directory, with `nodes` node plugins
/// (at least one).
#[cfg(feature = "bundled")]
pub async fn start(nodes: usize) -> anyhow::Result<Bundled> {
    use anyhow::Context;
    use clap::Parser;
    let nodes = nodes.max(1);
    let dir = tempfile::Builder::new().prefix("csi-sanity-").tempdir()?;
    let data_dir = dir.path().join("cloud");
    let device_dir = dir.path().join("by-id");
    std::fs::create_dir_all(&data_dir)?;
    std::fs::create_dir_all(&device_dir)?;
    let second_node = nodes + 1;
    let region = "nyc3";
    let common = |socket: &Path| {
        vec![
            "csi-driver".to_string(),
            "--endpoint".to_string(),
            format!("unix://{}", socket.display()),
            "--data-dir".to_string(),
            data_dir.display().to_string(),
            "--device-dir".to_string(),
            device_dir.display().to_string(),
            "--region".to_string(),
            region.to_string(),
            "--log-level".to_string(),
            "warn".to_string(),
        ]
    };
    let mut args = common(&dir.path().join("csi.sock"));
    // The data dir dies with this run, so the cloud need not write or fsync its state.
    args.push("--cloud-ephemeral".to_string());
    args.extend(["--node-id".to_string(), "1".to_string()]);
    // Droplets 1, 2 and 3 at least, as the specs' defaults expect, and one past the nodes.
    for droplet in 1..=second_node.max(3) {
        args.extend(["--droplet".to_string(), format!("{droplet}:{region}")]);
    }
    let config = csi_driver::Config::try_parse_from(args)?;
    let driver = csi_driver::start(config)
        .await
        .context("starting the bundled driver")?;
    let mut bundled = Bundled {
        endpoint: driver.endpoint.clone(),
        driver: Some(driver),
        nodes: Vec::new(),
        extra_node_endpoints: Vec::new(),
        second_node_id: second_node.to_string(),
        dir,
    };
    for droplet in 2..=nodes {
        let mut args = common(&bundled.dir.path().join(format!("node-{droplet}.sock")));
        args.extend([
            "--mode".to_string(),
            "node".to_string(),
            "--node-id".to_string(),
            droplet.to_string(),
        ]);
        let config = csi_driver::Config::try_parse_from(args)?;
        match csi_driver::start(config).await {
            Ok(node) => {
                bundled.extra_node_endpoints.push(node.endpoint.clone());
                bundled.nodes.push(node);
            }
            Err(e) => {
                bundled.stop().await;
                return Err(e.context(format!(
                    "starting the bundled node plugin of droplet {droplet}"
                )));
            }
        }
    }
    Ok(bundled)
}

/// Without the `bundled` feature there is nothing to start.
#[cfg(not(feature = "bundled"))]
pub async fn start(_nodes: usize) -> anyhow::Result<Bundled> {
    anyhow::bail!(
        "no --csi.endpoint given, and this build has no bundled driver (feature `bundled`)"
    )
}
