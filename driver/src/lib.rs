//! A DigitalOcean-style block-storage CSI driver.
//!
//! One process serves Identity plus the Controller, the Node, or both (`--mode`). The
//! controller talks to a cloud through [`cloud::CloudApi`], backed either by the fake-cloud
//! model in process or by a DigitalOcean-v2 HTTP client. The node turns an attached volume
//! into a real block device, filesystem and mounts ([`mount`]). Start reading at
//! [`server::start`], then `identity.rs`, `controller.rs` and `node.rs`.

pub mod cloud;
pub mod config;
pub mod controller;
pub mod identity;
pub mod locks;
pub mod logging;
pub mod metrics;
pub mod mount;
pub mod node;
pub mod server;
pub mod status;

use std::sync::Arc;

pub use config::Config;
pub use server::{start, RunningDriver};

use config::Mode;

/// State shared by the services of one driver process.
pub struct Driver {
    /// The flags this process started with.
    pub config: Config,
    /// This node's id (the droplet id), when it serves Node.
    pub node_id: Option<String>,
    /// The cloud, when it serves Controller.
    pub cloud: Option<Arc<dyn cloud::CloudApi>>,
    /// The in-process fake cloud behind `cloud`, with `--cloud memory`.
    pub in_process_cloud: Option<cloud::memory::InProcess>,
    /// Operations in flight, by volume id or name.
    pub locks: locks::OperationLocks,
}

impl Driver {
    /// Build the shared state from the flags: read the node id, open the cloud backend.
    pub fn from_config(config: Config) -> anyhow::Result<Driver> {
        identity::validate_driver_name(&config.driver_name)
            .map_err(|e| anyhow::anyhow!("--driver-name: {e}"))?;
        let node_id = read_node_id(&config)?;
        let (cloud, in_process_cloud) = match config.mode {
            Mode::All | Mode::Controller => {
                let opened = cloud::open(&config, node_id.as_deref())?;
                (Some(opened.api), opened.in_process)
            }
            Mode::Node => (None, None),
        };
        if matches!(config.mode, Mode::All | Mode::Node) && node_id.is_none() {
            anyhow::bail!(
                "--node-id or --node-id-file is required in {:?} mode",
                config.mode
            );
        }
        Ok(Driver {
            config,
            node_id,
            cloud,
            in_process_cloud,
            locks: locks::OperationLocks::new(),
        })
    }

    /// The in-process fake cloud (`--cloud memory`), so tests and the harness can change its
    /// latency and faults at run time.
    pub fn fake_cloud(&self) -> Option<fake_cloud::Cloud> {
        self.in_process_cloud.as_ref().map(|c| c.cloud.clone())
    }

    /// Where the in-process cloud keeps volume images (`<dir>/volumes/<id>.img`): `--data-dir`,
    /// or the temporary directory made for this process when it is unset.
    pub fn cloud_data_dir(&self) -> Option<&std::path::Path> {
        self.in_process_cloud.as_ref().map(|c| c.data_dir())
    }

    /// Whether this process serves the Controller service.
    pub fn serves_controller(&self) -> bool {
        matches!(self.config.mode, Mode::All | Mode::Controller)
    }

    /// Whether this process serves the Node service.
    pub fn serves_node(&self) -> bool {
        matches!(self.config.mode, Mode::All | Mode::Node)
    }

    /// Ready when every dependency answers: the cloud for a controller.
    pub async fn readiness(&self) -> Result<(), String> {
        if let Some(cloud) = &self.cloud {
            cloud
                .ping(cloud::Deadline::after(std::time::Duration::from_secs(10)))
                .await
                .map_err(|e| format!("cloud API unreachable: {e}"))?;
        }
        Ok(())
    }
}

fn read_node_id(config: &Config) -> anyhow::Result<Option<String>> {
    if let Some(path) = &config.node_id_file {
        let id = std::fs::read_to_string(path)
            .map_err(|e| anyhow::anyhow!("--node-id-file {}: {e}", path.display()))?;
        let id = id.trim().to_string();
        if id.is_empty() {
            anyhow::bail!("--node-id-file {} is empty", path.display());
        }
        return Ok(Some(id));
    }
    match (&config.node_id, config.mode, config.cloud) {
        (Some(id), _, _) => Ok(Some(id.clone())),
        // With the in-process cloud, a single-process driver is droplet 1 by default.
        (None, Mode::All | Mode::Node, config::CloudKind::Memory) => Ok(Some("1".to_string())),
        (None, _, _) => Ok(None),
    }
}
