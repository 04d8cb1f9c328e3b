//! A DigitalOcean-style block-storage CSI driver.
//!
//! One process serves Identity plus the Controller, the Node, or both (`--mode`). The
//! controller talks to a cloud through [`cloud::CloudApi`], backed either by the fake-cloud
//! model in process or by a DigitalOcean-v2 HTTP client. The node finds an attached
//! volume's device through a [`node::DeviceSource`] and turns it into a real filesystem and
//! mounts ([`mount`]). Start reading at [`server::start`], then `identity.rs`,
//! `controller.rs` and `node/mod.rs`.
//!
//! **The fake cloud is a feature.** The fake cloud (`--cloud memory`, `--device-source
//! loop`) and [`embedded`], the interface the harness's bundled driver uses, exist only
//! with the `fake-cloud` feature (on by default, for the tests, the benchmarks and the
//! harness). A production build, `--no-default-features`, does not link fake-cloud.

pub mod cloud;
pub mod config;
pub mod controller;
#[cfg(feature = "fake-cloud")]
pub mod embedded;
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
    #[cfg(feature = "fake-cloud")]
    pub in_process_cloud: Option<cloud::memory::InProcess>,
    /// How the node finds a volume's device, when it serves Node.
    pub device_source: Option<Arc<dyn node::DeviceSource>>,
    /// Operations in flight, by volume id or name.
    pub locks: locks::OperationLocks,
}

impl Driver {
    /// Build the shared state from the flags: read the node id, open the cloud backend.
    pub fn from_config(config: Config) -> anyhow::Result<Driver> {
        identity::validate_driver_name(&config.driver_name)
            .map_err(|e| anyhow::anyhow!("--driver-name: {e}"))?;
        let node_id = read_node_id(&config)?;
        let opened = match config.mode {
            Mode::All | Mode::Controller => Some(cloud::open(&config, node_id.as_deref())?),
            Mode::Node => None,
        };
        if matches!(config.mode, Mode::All | Mode::Node) && node_id.is_none() {
            anyhow::bail!(
                "--node-id or --node-id-file is required in {:?} mode",
                config.mode
            );
        }
        let mut driver = Driver {
            config,
            node_id,
            cloud: opened.as_ref().map(|o| o.api.clone()),
            #[cfg(feature = "fake-cloud")]
            in_process_cloud: opened.and_then(|o| o.in_process),
            device_source: None,
            locks: locks::OperationLocks::new(),
        };
        if driver.serves_node() {
            driver.device_source = Some(node::device_source::open(&driver)?);
        }
        Ok(driver)
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
