//! The runner: connect, read capabilities, turn specs into trials, run, report.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use csi_proto::v1::{
    controller_service_capability, node_service_capability, plugin_capability,
    ControllerGetCapabilitiesRequest, GetPluginCapabilitiesRequest, NodeGetCapabilitiesRequest,
};
use csi_suites::{Capabilities, Clients, Ctx, Spec, SuiteConfig};
use libtest_mimic::{Arguments, Failed, Trial};

/// Everything a run needs.
#[derive(Debug, Clone)]
pub struct Config {
    /// The endpoint under test; `None` starts the bundled driver.
    pub endpoint: Option<String>,
    /// A separate controller endpoint, if the controller is served elsewhere.
    pub controller_endpoint: Option<String>,
    /// How long to wait for an endpoint to answer.
    pub connect_timeout: Duration,
    /// Settings for the specs.
    pub suite: SuiteConfig,
    /// libtest arguments: filters, `--list`, `--format`, `--test-threads`.
    pub args: Arguments,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            endpoint: None,
            controller_endpoint: None,
            connect_timeout: Duration::from_secs(10),
            suite: SuiteConfig::default(),
            args: Arguments::default(),
        }
    }
}

/// What a run found.
#[derive(Debug, Clone, Default)]
pub struct Report {
    pub passed: u64,
    pub failed: u64,
    pub skipped: u64,
}

impl Report {
    /// Whether the run had no failure.
    pub fn success(&self) -> bool {
        self.failed == 0
    }
}

async fn read_capabilities(clients: &Clients) -> anyhow::Result<Capabilities> {
    let mut caps = Capabilities {
        root: nix::unistd::geteuid().is_root(),
        ..Default::default()
    };
    let plugin = clients
        .identity
        .clone()
        .get_plugin_capabilities(GetPluginCapabilitiesRequest {})
        .await
        .context("GetPluginCapabilities failed")?
        .into_inner();
    for cap in plugin.capabilities {
        if let Some(plugin_capability::Type::Service(s)) = cap.r#type {
            if let Ok(t) = plugin_capability::service::Type::try_from(s.r#type) {
                caps.plugin.push(t);
            }
        }
    }
    if caps
        .plugin
        .contains(&plugin_capability::service::Type::ControllerService)
    {
        let resp = clients
            .controller
            .clone()
            .controller_get_capabilities(ControllerGetCapabilitiesRequest {})
            .await
            .context("ControllerGetCapabilities failed")?
            .into_inner();
        for cap in resp.capabilities {
            if let Some(controller_service_capability::Type::Rpc(rpc)) = cap.r#type {
                if let Ok(t) = controller_service_capability::rpc::Type::try_from(rpc.r#type) {
                    caps.controller.push(t);
                }
            }
        }
    }
    if let Ok(resp) = clients
        .node
        .clone()
        .node_get_capabilities(NodeGetCapabilitiesRequest {})
        .await
    {
        caps.node_service = true;
        for cap in resp.into_inner().capabilities {
            if let Some(node_service_capability::Type::Rpc(rpc)) = cap.r#type {
                if let Ok(t) = node_service_capability::rpc::Type::try_from(rpc.r#type) {
                    caps.node.push(t);
                }
            }
        }
    }
    Ok(caps)
}

/// A bundled driver, kept alive for the run.
struct Bundled {
    #[cfg(feature = "bundled")]
    _driver: csi_driver::RunningDriver,
    _dir: tempfile::TempDir,
}

#[cfg(feature = "bundled")]
async fn start_bundled() -> anyhow::Result<(String, Bundled)> {
    use clap::Parser;
    let dir = tempfile::Builder::new().prefix("csi-sanity-").tempdir()?;
    let socket = dir.path().join("csi.sock");
    let endpoint = format!("unix://{}", socket.display());
    let config = csi_driver::Config::try_parse_from([
        "csi-driver",
        "--endpoint",
        &endpoint,
        "--log-level",
        "warn",
    ])?;
    let driver = csi_driver::start(config)
        .await
        .context("starting the bundled driver")?;
    Ok((
        driver.endpoint.clone(),
        Bundled {
            _driver: driver,
            _dir: dir,
        },
    ))
}

#[cfg(not(feature = "bundled"))]
async fn start_bundled() -> anyhow::Result<(String, Bundled)> {
    anyhow::bail!(
        "no --csi.endpoint given, and this build has no bundled driver (feature `bundled`)"
    )
}

fn trial(
    spec: Spec,
    rt: &tokio::runtime::Handle,
    clients: &Clients,
    suite: &SuiteConfig,
    caps: &Capabilities,
) -> Trial {
    let name = spec.full_name();
    if let Some(need) = caps.first_unmet(spec.needs) {
        let reason = need.describe();
        return Trial::test(name, move || Err(Failed::from(reason))).with_ignored_flag(true);
    }
    let rt = rt.clone();
    let ctx = Ctx::new(clients.clone(), suite.clone(), caps.clone(), &name);
    Trial::test(name, move || {
        rt.block_on((spec.run)(ctx))
            .map_err(|f| Failed::from(f.to_string()))
    })
}

/// Run the suite described by `config`.
pub fn run(config: Config) -> anyhow::Result<Report> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    let (clients, caps, _bundled) = rt.block_on(async {
        let (endpoint, bundled) = match &config.endpoint {
            Some(e) => (e.clone(), None),
            None => {
                let (e, b) = start_bundled().await?;
                (e, Some(b))
            }
        };
        let node = crate::connect::connect(&endpoint, config.connect_timeout).await?;
        let controller = match &config.controller_endpoint {
            Some(c) => crate::connect::connect(c, config.connect_timeout).await?,
            None => node.clone(),
        };
        let clients = Clients::new(node, controller);
        let caps = read_capabilities(&clients).await?;
        anyhow::Ok((clients, caps, bundled))
    })?;
    let trials: Vec<Trial> = csi_suites::all()
        .into_iter()
        .map(|spec| trial(spec, rt.handle(), &clients, &config.suite, &caps))
        .collect();
    let conclusion = libtest_mimic::run(&config.args, trials);
    Ok(Report {
        passed: conclusion.num_passed,
        failed: conclusion.num_failed,
        skipped: conclusion.num_ignored + conclusion.num_filtered_out,
    })
}

#[doc(hidden)]
pub fn _unused(_: PathBuf, _: Arc<()>) {}
