//! A CO simulation: the exact call order Kubernetes uses for a pod's volume, with the
//! deadlines and retry backoffs of the components that make each call:
//!
//! - external-provisioner (CreateVolume, DeleteVolume): `--timeout` 10s per call,
//!   `--retry-interval-start` 1s doubling up to `--retry-interval-max` 5m, retrying
//!   the codes it treats as not final (CANCELLED, DEADLINE_EXCEEDED, UNAVAILABLE,
//!   RESOURCE_EXHAUSTED, ABORTED);
//! - external-attacher (ControllerPublish/Unpublish): `--timeout` 15s,
//!   `--retry-interval-start` 1s doubling up to 5m;
//! - kubelet (NodeStage/Unstage, NodePublish/Unpublish, NodeGetVolumeStats): the CSI
//!   volume plugin's `csiTimeout` of 2 minutes per call, and the operation executor's
//!   exponential backoff, 500ms doubling up to about 2 minutes.
//!
//! (kubernetes-csi/external-provisioner cmd/csi-provisioner/csi-provisioner.go,
//! kubernetes-csi/external-attacher cmd/csi-attacher flags, kubernetes
//! pkg/volume/csi/csi_plugin.go and pkg/util/goroutinemap/exponentialbackoff.)
//! Each spec still stops retrying after the harness's retry budget.

use std::time::Duration;

use csi_proto::v1::node_service_capability::rpc::Type as NodeRpc;
use csi_proto::v1::{NodeGetCapabilitiesRequest, NodeGetVolumeStatsRequest};

use super::co::{settle, RetryPolicy, Rpc};
use super::data::{data_reachable, verify_pattern, write_pattern};
use super::observe::expect_published_to_where_reported;
use super::{
    attaches, controller_unpublish_request, delete_volume_request, node_unpublish_request,
    node_unstage_request, seed, CREATE_DELETE, NODE, PUBLISH,
};
use crate::check::Stop;
use crate::retry::{Backoff, NOT_FINAL};
use crate::{spec, Ctx, Need, Spec};

const GROUP: &str = "Beyond::CoSimulation";

fn provisioner(ctx: &Ctx) -> RetryPolicy {
    RetryPolicy {
        who: "external-provisioner (--timeout 10s, retry 1s doubling to 5m)",
        deadline: Duration::from_secs(10),
        backoff: Backoff {
            first: Duration::from_secs(1),
            max: Duration::from_secs(300),
            budget: ctx.config().retry_budget,
        },
        retry_on: NOT_FINAL,
    }
}

fn attacher(ctx: &Ctx) -> RetryPolicy {
    RetryPolicy {
        who: "external-attacher (--timeout 15s, retry 1s doubling to 5m)",
        deadline: Duration::from_secs(15),
        ..provisioner(ctx)
    }
}

fn kubelet(ctx: &Ctx) -> RetryPolicy {
    let provisioner = provisioner(ctx);
    RetryPolicy {
        who: "kubelet (csiTimeout 2m, backoff 500ms doubling to 2m)",
        deadline: Duration::from_secs(120),
        backoff: Backoff {
            first: Duration::from_millis(500),
            max: Duration::from_secs(120),
            ..provisioner.backoff
        },
        ..provisioner
    }
}

const RULE: &str = "Kubernetes' volume lifecycle: CreateVolume → ControllerPublishVolume → NodeStageVolume → NodePublishVolume → NodeUnpublishVolume → NodeUnstageVolume → ControllerUnpublishVolume → DeleteVolume, each call under its caller's deadline and retried with its backoff, MUST complete";

/// One step of the simulation: `req` under `policy`, retried until it settles, which
/// must be OK.
async fn step<R: Rpc>(ctx: &Ctx, req: &R, policy: RetryPolicy) -> Result<R::Response, Stop> {
    settle(ctx, req, policy)
        .await?
        .ok(RULE)
        .map_err(|f| f.during(format!("{} by {}", R::NAME, policy.who)).into())
}

/// kubelet asks for the node's capabilities before each stage and unstage.
async fn kubelet_checks_capabilities(ctx: &Ctx) -> Result<(), Stop> {
    step(ctx, &NodeGetCapabilitiesRequest {}, kubelet(ctx))
        .await
        .map(|_| ())
}

/// A pod's volume on this node, as kubelet mounted it.
struct Mounted {
    staging: Option<String>,
    target: String,
}

/// kubelet's MountDevice and SetUp: NodeStage (when advertised), NodePublish.
async fn kubelet_mounts(
    ctx: &Ctx,
    v: &csi_proto::v1::Volume,
    publish_context: &std::collections::HashMap<String, String>,
) -> Result<Mounted, Stop> {
    kubelet_checks_capabilities(ctx).await?;
    let staging = if ctx.caps().node_has(NodeRpc::StageUnstageVolume) {
        let path = ctx.staging_path().await?;
        step(
            ctx,
            &ctx.node_stage_request(v, &path, publish_context),
            kubelet(ctx),
        )
        .await?;
        Some(path)
    } else {
        None
    };
    let target = ctx.new_target_path().await?;
    step(
        ctx,
        &ctx.node_publish_request(v, staging.as_deref(), &target, publish_context),
        kubelet(ctx),
    )
    .await?;
    Ok(Mounted { staging, target })
}

/// kubelet's TearDown and UnmountDevice: NodeUnpublish, NodeUnstage (when staged).
async fn kubelet_unmounts(ctx: &Ctx, volume_id: &str, m: &Mounted) -> Result<(), Stop> {
    step(
        ctx,
        &node_unpublish_request(volume_id, &m.target),
        kubelet(ctx),
    )
    .await?;
    if let Some(staging) = &m.staging {
        kubelet_checks_capabilities(ctx).await?;
        step(ctx, &node_unstage_request(volume_id, staging), kubelet(ctx)).await?;
    }
    Ok(())
}

/// While the pod runs: its data goes in and comes back, and kubelet polls stats.
async fn pod_runs(ctx: &Ctx, volume_id: &str, m: &Mounted) -> Result<(), Stop> {
    if data_reachable(ctx).is_ok() {
        let w = write_pattern(ctx, &m.target, seed(ctx)).await?;
        verify_pattern(ctx, &m.target, &w, RULE).await?;
    }
    if ctx.caps().node_has(NodeRpc::GetVolumeStats) {
        let req = NodeGetVolumeStatsRequest {
            volume_id: volume_id.to_string(),
            volume_path: m.target.clone(),
            staging_target_path: m.staging.clone().unwrap_or_default(),
        };
        step(ctx, &req, kubelet(ctx)).await?;
    }
    Ok(())
}

pub fn specs() -> Vec<Spec> {
    vec![
        spec!(
            GROUP,
            "a volume goes through a pod's whole lifecycle in Kubernetes' call order under the sidecars' and kubelet's deadlines",
            "Kubernetes defaults: external-provisioner --timeout=10s, --retry-interval-start=1s, --retry-interval-max=5m (cmd/csi-provisioner/csi-provisioner.go); external-attacher --timeout=15s, same retry flags (cmd/csi-attacher/config/flags.go); kubelet csiTimeout = 2 * time.Minute (pkg/volume/csi/csi_plugin.go), backoff 500ms doubling to ~2m (pkg/util/goroutinemap/exponentialbackoff)",
            [CREATE_DELETE, NODE, Need::Mounts],
            |ctx: Ctx| async move {
                let node = ctx.node_id().await?;
                let created = step(&ctx, &ctx.volume_request(&ctx.unique_name("pvc")), provisioner(&ctx)).await?;
                let v = created.volume.unwrap_or_default();
                let publish_context = if attaches(&ctx) {
                    step(&ctx, &ctx.controller_publish_request(&v, &node), attacher(&ctx)).await?.publish_context
                } else {
                    Default::default()
                };
                let m = kubelet_mounts(&ctx, &v, &publish_context).await?;
                pod_runs(&ctx, &v.volume_id, &m).await?;
                kubelet_unmounts(&ctx, &v.volume_id, &m).await?;
                if attaches(&ctx) {
                    step(&ctx, &controller_unpublish_request(&ctx, &v.volume_id, &node), attacher(&ctx)).await?;
                }
                step(&ctx, &delete_volume_request(&ctx, &v.volume_id), provisioner(&ctx)).await?;
                Ok(())
            }
        ),
        spec!(
            GROUP,
            "a pod moving to another node has its volume detached from the first node and attached to the second",
            "Kubernetes: when a pod moves, kubelet unmounts on the old node, external-attacher calls ControllerUnpublishVolume for it, then ControllerPublishVolume for the new node (the new node's stage and publish need that node's endpoint and are not run)",
            [CREATE_DELETE, PUBLISH, NODE, Need::Mounts, Need::SecondNode],
            |ctx: Ctx| async move {
                let first = ctx.node_id().await?;
                let second = ctx.config().second_node_id.clone().unwrap_or_default();
                let created = step(&ctx, &ctx.volume_request(&ctx.unique_name("moving-pvc")), provisioner(&ctx)).await?;
                let v = created.volume.unwrap_or_default();
                let publish_context = step(&ctx, &ctx.controller_publish_request(&v, &first), attacher(&ctx)).await?.publish_context;
                let m = kubelet_mounts(&ctx, &v, &publish_context).await?;
                pod_runs(&ctx, &v.volume_id, &m).await?;
                kubelet_unmounts(&ctx, &v.volume_id, &m).await?;
                step(&ctx, &controller_unpublish_request(&ctx, &v.volume_id, &first), attacher(&ctx)).await?;
                step(&ctx, &ctx.controller_publish_request(&v, &second), attacher(&ctx)).await?;
                expect_published_to_where_reported(&ctx, &v.volume_id, &[&second], RULE).await
            }
        ),
        spec!(
            GROUP,
            "a pod restarted on the same node gets its volume at a new target while it stays staged, data intact",
            "Kubernetes: a replacement pod on the same node gets a new pod directory; kubelet NodeUnpublishes the old target and NodePublishes the new one, and the volume stays staged (NodeStage is per node, NodePublish per pod)",
            [CREATE_DELETE, NODE, Need::Mounts],
            |ctx: Ctx| async move {
                let node = ctx.node_id().await?;
                let created = step(&ctx, &ctx.volume_request(&ctx.unique_name("restarted-pod")), provisioner(&ctx)).await?;
                let v = created.volume.unwrap_or_default();
                let publish_context = if attaches(&ctx) {
                    step(&ctx, &ctx.controller_publish_request(&v, &node), attacher(&ctx)).await?.publish_context
                } else {
                    Default::default()
                };
                let old = kubelet_mounts(&ctx, &v, &publish_context).await?;
                let written = if data_reachable(&ctx).is_ok() {
                    Some(write_pattern(&ctx, &old.target, seed(&ctx)).await?)
                } else {
                    None
                };
                step(&ctx, &node_unpublish_request(&v.volume_id, &old.target), kubelet(&ctx)).await?;
                let target = ctx.new_target_path().await?;
                step(&ctx, &ctx.node_publish_request(&v, old.staging.as_deref(), &target, &publish_context), kubelet(&ctx)).await?;
                if let Some(w) = written {
                    verify_pattern(&ctx, &target, &w, RULE).await?;
                }
                Ok(())
            }
        ),
    ]
}
