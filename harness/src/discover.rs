//! What the run learns from the endpoints before any spec: the capabilities each
//! service advertises, and that the node endpoints are distinct nodes.

use std::time::Duration;

use anyhow::Context;
use csi_proto::v1::controller_service_capability::rpc::Type as ControllerRpc;
use csi_proto::v1::{
    controller_service_capability, group_controller_service_capability, node_service_capability,
    plugin_capability, ControllerGetCapabilitiesRequest, GetPluginCapabilitiesRequest,
    GroupControllerGetCapabilitiesRequest, NodeGetCapabilitiesRequest, NodeGetInfoRequest,
};
use csi_suites::{Capabilities, Clients};

fn with_timeout<T>(msg: T, timeout: Duration) -> tonic::Request<T> {
    let mut r = tonic::Request::new(msg);
    r.set_timeout(timeout);
    r
}

/// A run-level RPC error, said plainly.
fn rpc_error(rpc: &str, status: tonic::Status, timeout: Duration) -> anyhow::Error {
    match status.code() {
        tonic::Code::Cancelled | tonic::Code::DeadlineExceeded => {
            anyhow::anyhow!("no answer to {rpc} within {timeout:?}: is a CSI driver serving there?")
        }
        tonic::Code::Unimplemented => {
            anyhow::anyhow!("{rpc} is not implemented there: is this a CSI endpoint?")
        }
        code => anyhow::anyhow!("{rpc} failed: {code:?}: {}", status.message()),
    }
}

pub(crate) async fn read_capabilities(
    clients: &Clients,
    timeout: Duration,
) -> anyhow::Result<Capabilities> {
    let mut caps = Capabilities {
        root: nix::unistd::geteuid().is_root(),
        ..Default::default()
    };
    let plugin = clients
        .identity
        .clone()
        .get_plugin_capabilities(with_timeout(GetPluginCapabilitiesRequest {}, timeout))
        .await
        .map_err(|e| rpc_error("GetPluginCapabilities", e, timeout))?
        .into_inner();
    for cap in plugin.capabilities {
        match cap.r#type {
            Some(plugin_capability::Type::Service(s)) => {
                if let Ok(t) = plugin_capability::service::Type::try_from(s.r#type) {
                    caps.plugin.push(t);
                }
            }
            Some(plugin_capability::Type::VolumeExpansion(v)) => {
                if let Ok(t) = plugin_capability::volume_expansion::Type::try_from(v.r#type) {
                    caps.expansion.push(t);
                }
            }
            None => {}
        }
    }
    if caps
        .plugin
        .contains(&plugin_capability::service::Type::ControllerService)
    {
        let resp = clients
            .controller
            .clone()
            .controller_get_capabilities(with_timeout(ControllerGetCapabilitiesRequest {}, timeout))
            .await
            .map_err(|e| rpc_error("ControllerGetCapabilities", e, timeout))?
            .into_inner();
        for cap in resp.capabilities {
            if let Some(controller_service_capability::Type::Rpc(rpc)) = cap.r#type {
                if let Ok(t) = ControllerRpc::try_from(rpc.r#type) {
                    caps.controller.push(t);
                }
            }
        }
    }
    if caps
        .plugin
        .contains(&plugin_capability::service::Type::GroupControllerService)
    {
        // A failure here fails every spec that needs the group capabilities (as in Go),
        // with this message, instead of skipping them.
        match clients
            .group_controller
            .clone()
            .group_controller_get_capabilities(with_timeout(
                GroupControllerGetCapabilitiesRequest {},
                timeout,
            ))
            .await
        {
            Err(e) => {
                caps.group_caps_error =
                    Some(rpc_error("GroupControllerGetCapabilities", e, timeout).to_string())
            }
            Ok(resp) => {
                for cap in resp.into_inner().capabilities {
                    if let Some(group_controller_service_capability::Type::Rpc(rpc)) = cap.r#type {
                        if let Ok(t) =
                            group_controller_service_capability::rpc::Type::try_from(rpc.r#type)
                        {
                            caps.group_controller.push(t);
                        }
                    }
                }
            }
        }
    }
    match clients
        .node
        .clone()
        .node_get_capabilities(with_timeout(NodeGetCapabilitiesRequest {}, timeout))
        .await
    {
        Ok(resp) => {
            caps.node_service = true;
            for cap in resp.into_inner().capabilities {
                if let Some(node_service_capability::Type::Rpc(rpc)) = cap.r#type {
                    if let Ok(t) = node_service_capability::rpc::Type::try_from(rpc.r#type) {
                        caps.node.push(t);
                    }
                }
            }
        }
        // A controller-only endpoint: no node service, and its specs are skipped.
        Err(e) if e.code() == tonic::Code::Unimplemented => {}
        Err(e) => {
            caps.node_caps_error = Some(rpc_error("NodeGetCapabilities", e, timeout).to_string())
        }
    }
    Ok(caps)
}

/// With extra node endpoints: each must serve Node, and all must be different nodes
/// (two endpoints of one node would have specs contend for its attachments and limit),
/// none of them the second node of the two-node specs.
pub(crate) async fn check_node_pool(
    clients: &Clients,
    caps: &Capabilities,
    second_node_id: Option<&str>,
    timeout: Duration,
) -> anyhow::Result<()> {
    if !caps.node_service {
        anyhow::bail!("--csi.nodeendpoints: the driver does not serve the Node service");
    }
    let mut seen: Vec<String> = Vec::new();
    for (i, node) in clients.all_nodes().enumerate() {
        let which = if i == 0 {
            "--csi.endpoint".to_string()
        } else {
            format!("--csi.nodeendpoints entry {i}")
        };
        let id = node
            .clone()
            .node_get_info(with_timeout(NodeGetInfoRequest {}, timeout))
            .await
            .map_err(|e| rpc_error("NodeGetInfo", e, timeout))
            .with_context(|| format!("asking {which} for its node id"))?
            .into_inner()
            .node_id;
        if seen.contains(&id) {
            anyhow::bail!(
                "{which} is node {id:?} again: every node endpoint must be a different node"
            );
        }
        if second_node_id == Some(id.as_str()) {
            anyhow::bail!(
                "{which} is node {id:?}, which is also --csi.secondnodeid: the second node must be one no spec runs on"
            );
        }
        seen.push(id);
    }
    Ok(())
}
