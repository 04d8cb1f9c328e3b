//! The driver embedded in another program, over its in-process fake cloud (feature
//! `fake-cloud`): the whole interface the harness's bundled driver uses.
//!
//! [`start`] runs, under a directory the embedder owns, one process's worth of driver: the
//! controller and the node plugin of droplet 1 on one socket, and for more nodes a node
//! plugin per droplet 2, 3, … on sockets of their own, sharing the cloud's data dir, as
//! node plugins on other machines of one cluster would. [`MUTABLE_PARAMETERS`] says what it
//! can change on a volume. Tests and benchmarks reach the fake cloud behind a running
//! driver through [`Driver::fake_cloud`].

use std::path::Path;

use anyhow::Context;
use clap::Parser;

use crate::controller::params::PARAM_TAGS;
use crate::{Config, Driver, RunningDriver};

/// The region the embedded cloud's droplets are in.
pub const REGION: &str = "nyc3";

/// The mutable parameters (ControllerModifyVolume, CreateVolume's
/// `mutable_parameters`) the embedded driver can change on a volume, each with a value it
/// accepts.
pub const MUTABLE_PARAMETERS: &[(&str, &str)] = &[(PARAM_TAGS, "csi-sanity")];

/// A controller and its node plugins over one in-process fake cloud, serving until
/// [`Embedded::stop`].
pub struct Embedded {
    controller: Option<RunningDriver>,
    nodes: Vec<RunningDriver>,
    /// The endpoint of Identity, Controller and droplet 1's Node.
    pub endpoint: String,
    /// The node plugins of droplets 2, 3, … (none unless more nodes were asked for).
    pub node_endpoints: Vec<String>,
    /// A droplet the cloud knows that no node plugin serves: a second node no spec runs on.
    pub spare_node_id: String,
}

/// Start the controller and `nodes` node plugins (at least one) under `dir`: the cloud's
/// data in `dir/cloud`, device links in `dir/by-id`, sockets in `dir`. The cloud knows
/// droplets 1, 2 and 3 at least, and the one after the last node.
pub async fn start(dir: &Path, nodes: usize) -> anyhow::Result<Embedded> {
    let nodes = nodes.max(1);
    let data_dir = dir.join("cloud");
    let device_dir = dir.join("by-id");
    std::fs::create_dir_all(&data_dir)?;
    std::fs::create_dir_all(&device_dir)?;
    let spare_node = nodes + 1;
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
            REGION.to_string(),
            "--log-level".to_string(),
            "warn".to_string(),
        ]
    };
    let mut args = common(&dir.join("csi.sock"));
    // The data dir dies with the embedder's directory, so the cloud need not write or
    // fsync its state.
    args.push("--cloud-ephemeral".to_string());
    args.extend(["--node-id".to_string(), "1".to_string()]);
    for droplet in 1..=spare_node.max(3) {
        args.extend(["--droplet".to_string(), format!("{droplet}:{REGION}")]);
    }
    let controller = crate::start(Config::try_parse_from(args)?)
        .await
        .context("starting the bundled driver")?;
    let mut embedded = Embedded {
        endpoint: controller.endpoint.clone(),
        controller: Some(controller),
        nodes: Vec::new(),
        node_endpoints: Vec::new(),
        spare_node_id: spare_node.to_string(),
    };
    for droplet in 2..=nodes {
        let mut args = common(&dir.join(format!("node-{droplet}.sock")));
        args.extend([
            "--mode".to_string(),
            "node".to_string(),
            "--node-id".to_string(),
            droplet.to_string(),
        ]);
        let started = match Config::try_parse_from(args) {
            Ok(config) => crate::start(config).await,
            Err(e) => Err(e.into()),
        };
        match started {
            Ok(node) => {
                embedded.node_endpoints.push(node.endpoint.clone());
                embedded.nodes.push(node);
            }
            Err(e) => {
                for problem in embedded.stop().await {
                    tracing::warn!("{problem:#}");
                }
                return Err(e.context(format!(
                    "starting the bundled node plugin of droplet {droplet}"
                )));
            }
        }
    }
    Ok(embedded)
}

impl Embedded {
    /// Stop serving and wait for in-flight calls: the extra node plugins first, then the
    /// process that owns the cloud (and detaches the loop devices nothing mounts). Returns
    /// what went wrong on the way, if anything.
    pub async fn stop(mut self) -> Vec<anyhow::Error> {
        let mut problems = Vec::new();
        for node in self.nodes.drain(..) {
            if let Err(e) = node.stop().await {
                problems.push(e.context("stopping a bundled node plugin"));
            }
        }
        if let Some(controller) = self.controller.take() {
            if let Err(e) = controller.stop().await {
                problems.push(e.context("stopping the bundled driver"));
            }
        }
        problems
    }
}

impl Driver {
    /// The in-process fake cloud (`--cloud memory`), so tests and the harness can change its
    /// latency and faults at run time.
    pub fn fake_cloud(&self) -> Option<fake_cloud::Cloud> {
        self.in_process_cloud.as_ref().map(|c| c.cloud.clone())
    }

    /// The in-process cloud's data directory, where it keeps volume images: `--data-dir`,
    /// or the temporary directory made for this process when it is unset.
    pub fn cloud_data_dir(&self) -> Option<&Path> {
        self.in_process_cloud.as_ref().map(|c| c.data_dir())
    }
}
