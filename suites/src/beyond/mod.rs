//! Specs beyond what kubernetes-csi's csi-sanity checks:
//!
//! - [`errors`]: the rows of the spec's error tables that csi-sanity leaves out;
//! - [`retries`]: every mutating call cut off by a short client deadline, then retried
//!   as a CO would, ends as if it had run once;
//! - [`repeats`]: a call repeated N times answers the same, field by field;
//! - [`concurrency`]: parallel calls on one name, one node, many volumes;
//! - [`integrity`]: data written through the real node path survives restaging,
//!   snapshots, clones and expansion;
//! - [`co_sim`]: Kubernetes' call order with the sidecars' and kubelet's deadlines;
//! - [`slow_cloud`]: every attempt cut off while the cloud's action is in flight, until
//!   the action finishes.
//!
//! The shared shapes live in [`co`] (deadlines and retries), [`observe`] (looking at
//! what the driver did) and [`data`] (patterns written and read through the node).

use std::collections::HashMap;

use csi_proto::v1::controller_service_capability::rpc::Type as ControllerRpc;
use csi_proto::v1::node_service_capability::rpc::Type as NodeRpc;
use csi_proto::v1::{
    CapacityRange, ControllerExpandVolumeRequest, ControllerUnpublishVolumeRequest,
    DeleteSnapshotRequest, DeleteVolumeRequest, NodeExpandVolumeRequest,
    NodeUnpublishVolumeRequest, NodeUnstageVolumeRequest, Volume,
};

use crate::check::Stop;
use crate::fixtures::Available;
use crate::secrets::Secret;
use crate::{Ctx, Need, Spec};

pub(crate) mod co;
pub(crate) mod data;
pub(crate) mod observe;

pub mod co_sim;
pub mod concurrency;
pub mod errors;
pub mod integrity;
pub mod repeats;
pub mod retries;
pub mod slow_cloud;

/// Every spec beyond csi-sanity, in a stable order.
pub fn specs() -> Vec<Spec> {
    let mut specs = Vec::new();
    specs.extend(errors::specs());
    specs.extend(retries::specs());
    specs.extend(repeats::specs());
    specs.extend(concurrency::specs());
    specs.extend(integrity::specs());
    specs.extend(co_sim::specs());
    specs.extend(slow_cloud::specs());
    specs
}

pub(crate) const CREATE_DELETE: Need = Need::ControllerCap(ControllerRpc::CreateDeleteVolume);
pub(crate) const PUBLISH: Need = Need::ControllerCap(ControllerRpc::PublishUnpublishVolume);
pub(crate) const SNAPSHOTS: Need = Need::ControllerCap(ControllerRpc::CreateDeleteSnapshot);
pub(crate) const EXPAND: Need = Need::ControllerCap(ControllerRpc::ExpandVolume);
pub(crate) const STAGE: Need = Need::NodeCap(NodeRpc::StageUnstageVolume);
pub(crate) const NODE: Need = Need::NodeService;

/// A volume published to this node and staged (each step only when the driver
/// advertises it), on paths of its own.
#[derive(Debug, Clone)]
pub(crate) struct Staged {
    pub volume: Volume,
    pub node_id: String,
    pub publish_context: HashMap<String, String>,
    pub staging_path: Option<String>,
}

/// Whether the driver attaches volumes to nodes (PUBLISH_UNPUBLISH_VOLUME).
pub(crate) fn attaches(ctx: &Ctx) -> bool {
    ctx.caps()
        .controller_has(ControllerRpc::PublishUnpublishVolume)
}

/// ControllerPublish to this node when the driver advertises PUBLISH_UNPUBLISH_VOLUME
/// (tracked); the publish context, empty otherwise.
pub(crate) async fn attach_if_advertised(
    ctx: &Ctx,
    volume: &Volume,
) -> Result<HashMap<String, String>, Stop> {
    if !attaches(ctx) {
        return Ok(HashMap::new());
    }
    Ok(ctx
        .controller_publish(volume, &ctx.node_id().await?)
        .await?)
}

/// ControllerPublish to this node (with PUBLISH_UNPUBLISH_VOLUME), then NodeStage at a
/// fresh staging path (with STAGE_UNSTAGE_VOLUME). All tracked.
pub(crate) async fn stage_fresh(ctx: &Ctx, volume: &Volume) -> Result<Staged, Stop> {
    let node_id = ctx.node_id().await?;
    let publish_context = attach_if_advertised(ctx, volume).await?;
    let staging_path = if ctx.caps().node_has(NodeRpc::StageUnstageVolume) {
        let path = ctx.new_staging_path().await?;
        let req = ctx.node_stage_request(volume, &path, &publish_context);
        ctx.as_co(|| ctx.node_stage_with(req.clone()))
            .await
            .ok("setup: staging a published volume must succeed")
            .map_err(|f| f.during("setting up: NodeStageVolume"))?;
        Some(path)
    } else {
        None
    };
    Ok(Staged {
        volume: volume.clone(),
        node_id,
        publish_context,
        staging_path,
    })
}

/// NodePublish a staged volume at a fresh target path; tracked.
pub(crate) async fn publish_fresh(ctx: &Ctx, s: &Staged) -> Result<Available, Stop> {
    let target_path = ctx.new_target_path().await?;
    let req = ctx.node_publish_request(
        &s.volume,
        s.staging_path.as_deref(),
        &target_path,
        &s.publish_context,
    );
    ctx.as_co(|| ctx.node_publish_with(req.clone()))
        .await
        .ok("setup: publishing a staged volume must succeed")
        .map_err(|f| f.during("setting up: NodePublishVolume"))?;
    Ok(Available {
        volume: s.volume.clone(),
        node_id: s.node_id.clone(),
        publish_context: s.publish_context.clone(),
        staging_path: s.staging_path.clone(),
        target_path,
    })
}

/// [`Ctx::make_available`] on paths of the volume's own, so one spec can make many
/// volumes available at once.
pub(crate) async fn available_fresh(ctx: &Ctx, volume: &Volume) -> Result<Available, Stop> {
    let staged = stage_fresh(ctx, volume).await?;
    publish_fresh(ctx, &staged).await
}

/// Take a volume off the node (NodeUnpublish, NodeUnstage), leaving it attached, and
/// stage and publish it again at the same paths, as a node reboot or a pod moving away
/// and back does.
pub(crate) async fn restage(ctx: &Ctx, a: &Available) -> Result<(), Stop> {
    let id = &a.volume.volume_id;
    ctx.node_unpublish(id, &a.target_path).await?;
    if let Some(staging) = &a.staging_path {
        ctx.node_unstage(id, staging).await?;
        ctx.node_stage_with(ctx.node_stage_request(&a.volume, staging, &a.publish_context))
            .await
            .ok("NodeStageVolume: staging an unstaged volume again MUST succeed")
            .map_err(|f| f.during("staging the volume again"))?;
    }
    ctx.node_publish_with(ctx.node_publish_request(
        &a.volume,
        a.staging_path.as_deref(),
        &a.target_path,
        &a.publish_context,
    ))
    .await
    .ok("NodePublishVolume: publishing an unpublished volume again MUST succeed")
    .map_err(|f| f.during("publishing the volume again"))?;
    Ok(())
}

// ---- the requests of the undoing RPCs, as a CO sends them ----

pub(crate) fn delete_volume_request(ctx: &Ctx, volume_id: &str) -> DeleteVolumeRequest {
    DeleteVolumeRequest {
        volume_id: volume_id.to_string(),
        secrets: ctx.secrets(Secret::DeleteVolume),
    }
}

pub(crate) fn controller_unpublish_request(
    ctx: &Ctx,
    volume_id: &str,
    node_id: &str,
) -> ControllerUnpublishVolumeRequest {
    ControllerUnpublishVolumeRequest {
        volume_id: volume_id.to_string(),
        node_id: node_id.to_string(),
        secrets: ctx.secrets(Secret::ControllerUnpublishVolume),
    }
}

pub(crate) fn node_unstage_request(
    volume_id: &str,
    staging_path: &str,
) -> NodeUnstageVolumeRequest {
    NodeUnstageVolumeRequest {
        volume_id: volume_id.to_string(),
        staging_target_path: staging_path.to_string(),
    }
}

pub(crate) fn node_unpublish_request(
    volume_id: &str,
    target_path: &str,
) -> NodeUnpublishVolumeRequest {
    NodeUnpublishVolumeRequest {
        volume_id: volume_id.to_string(),
        target_path: target_path.to_string(),
    }
}

pub(crate) fn delete_snapshot_request(ctx: &Ctx, snapshot_id: &str) -> DeleteSnapshotRequest {
    DeleteSnapshotRequest {
        snapshot_id: snapshot_id.to_string(),
        secrets: ctx.secrets(Secret::DeleteSnapshot),
    }
}

pub(crate) fn expand_request(
    ctx: &Ctx,
    volume_id: &str,
    bytes: i64,
) -> ControllerExpandVolumeRequest {
    ControllerExpandVolumeRequest {
        volume_id: volume_id.to_string(),
        capacity_range: Some(CapacityRange {
            required_bytes: bytes,
            limit_bytes: 0,
        }),
        secrets: ctx.secrets(Secret::ControllerExpandVolume),
        volume_capability: Some(ctx.default_capability()),
    }
}

pub(crate) fn node_expand_request(ctx: &Ctx, a: &Available, bytes: i64) -> NodeExpandVolumeRequest {
    NodeExpandVolumeRequest {
        volume_id: a.volume.volume_id.clone(),
        volume_path: a.target_path.clone(),
        capacity_range: Some(CapacityRange {
            required_bytes: bytes,
            limit_bytes: 0,
        }),
        staging_target_path: a.staging_path.clone().unwrap_or_default(),
        volume_capability: Some(ctx.default_capability()),
        secrets: ctx.secrets(Secret::NodeExpandVolume),
    }
}

/// A seed for data patterns, different for every spec and call.
pub(crate) fn seed(ctx: &Ctx) -> u64 {
    ctx.unique_name("seed")
        .bytes()
        .fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
            (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
        })
}
