//! Node: capabilities and info, stage and publish (and their undoing), volume stats,
//! expansion, and the node half of the volume lifecycle.

use std::collections::HashMap;

use csi_proto::v1::controller_service_capability::rpc::Type as ControllerRpc;
use csi_proto::v1::node_service_capability::{self, rpc::Type as NodeRpc};
use csi_proto::v1::volume_capability::access_mode::Mode as AccessMode;
use csi_proto::v1::volume_usage::Unit;
use csi_proto::v1::{
    CapacityRange, ControllerExpandVolumeRequest, NodeExpandVolumeRequest,
    NodeGetCapabilitiesRequest, NodeGetInfoRequest, NodeGetVolumeStatsRequest,
    NodeGetVolumeStatsResponse, NodePublishVolumeRequest, NodeStageVolumeRequest,
    NodeUnpublishVolumeRequest, NodeUnstageVolumeRequest, Volume,
};
use tonic::Code;

use crate::check::{ensure, ensure_call, Call, Failure};
use crate::paths::PathKind;
use crate::secrets::Secret;
use crate::{call, spec, Ctx, Need, Spec};

const NODE: &str = "Node";
const PUBLISH: &str = "Node::NodePublishVolume";
const UNPUBLISH: &str = "Node::NodeUnpublishVolume";
const STAGE: &str = "Node::NodeStageVolume";
const UNSTAGE: &str = "Node::NodeUnstageVolume";
const STATS: &str = "Node::NodeGetVolumeStats";
const EXPAND: &str = "Node::NodeExpandVolume";

const NODE_SERVICE: Need = Need::NodeService;
const STAGE_UNSTAGE: Need = Need::NodeCap(NodeRpc::StageUnstageVolume);
const GET_STATS: Need = Need::NodeCap(NodeRpc::GetVolumeStats);
const NODE_EXPAND: Need = Need::NodeCap(NodeRpc::ExpandVolume);
const CREATE_DELETE: Need = Need::ControllerCap(ControllerRpc::CreateDeleteVolume);

/// A volume to name in argument-validation specs: a real one when the driver can
/// create volumes (so a driver that looks the volume up first still gets as far as the
/// argument check), else one with an unknown id.
async fn some_volume(ctx: &Ctx) -> Result<Volume, Failure> {
    if ctx.caps().controller_has(ControllerRpc::CreateDeleteVolume) {
        ctx.create_volume(&ctx.unique_name("node-args")).await
    } else {
        Ok(Volume {
            volume_id: ctx.unknown_volume_id(),
            ..Default::default()
        })
    }
}

/// What a published target must look like: a directory for mount volumes, a file (or
/// a device node) for block volumes.
async fn check_published_target(ctx: &Ctx, target: &str) -> Result<(), Failure> {
    const RULE: &str = "spec NodePublishVolume: the SP makes the volume available at target_path (a directory for mount, a file for block)";
    let kind = ctx.check_path(target).await?;
    let ok = if ctx.config().is_block() {
        matches!(kind, PathKind::File | PathKind::Other)
    } else {
        kind == PathKind::Directory
    };
    ensure(
        ok,
        "NodePublishVolume",
        format!(
            "a {} at {target}",
            if ctx.config().is_block() {
                "file"
            } else {
                "directory"
            }
        ),
        kind,
        RULE,
    )
}

async fn stats(ctx: &Ctx, volume_id: &str, path: &str) -> Call<NodeGetVolumeStatsResponse> {
    call!(
        ctx.node(),
        node_get_volume_stats,
        "NodeGetVolumeStats",
        NodeGetVolumeStatsRequest {
            volume_id: volume_id.to_string(),
            volume_path: path.to_string(),
            staging_target_path: String::new(),
        }
    )
}

/// Whether a filesystem of `total` bytes can be a volume's own, for a volume expanded to
/// `expanded` bytes: a dedicated filesystem is never much larger than its volume, while
/// a directory on a shared filesystem (hostpath) shows the host's size.
pub(crate) fn own_filesystem(total: i64, expanded: i64) -> bool {
    total <= expanded.saturating_mul(2)
}

/// ControllerExpandVolume to `to` bytes: OK, with capacity_bytes at least `to` (MUST),
/// and exactly `to` (Go's check; a plugin MAY round up, so only a warning here).
pub(crate) async fn expand_on_controller(
    ctx: &Ctx,
    volume_id: &str,
    to: i64,
) -> Result<(), Failure> {
    const RULE: &str = "spec ControllerExpandVolume: capacity_bytes is the capacity after expansion and MUST satisfy capacity_range.required_bytes";
    let c = call!(
        ctx.controller(),
        controller_expand_volume,
        "ControllerExpandVolume",
        ControllerExpandVolumeRequest {
            volume_id: volume_id.to_string(),
            capacity_range: Some(CapacityRange {
                required_bytes: to,
                limit_bytes: 0
            }),
            secrets: ctx.secrets(Secret::ControllerExpandVolume),
            volume_capability: if ctx.compat() {
                None
            } else {
                Some(ctx.default_capability())
            },
        }
    );
    let request = c.request.clone();
    let resp = c.ok(RULE)?;
    if ctx.compat() {
        return ensure_call(
            resp.capacity_bytes == to,
            "ControllerExpandVolume",
            &request,
            format!("capacity_bytes == {to}"),
            resp.capacity_bytes,
            "Go csi-sanity: capacity_bytes equals the requested size",
        );
    }
    ensure_call(
        resp.capacity_bytes >= to,
        "ControllerExpandVolume",
        &request,
        format!("capacity_bytes >= {to}"),
        resp.capacity_bytes,
        RULE,
    )?;
    ctx.should(ensure_call(resp.capacity_bytes == to, "ControllerExpandVolume", &request,
        format!("capacity_bytes == {to}, the size asked for (the Go csi-sanity requires it)"), resp.capacity_bytes,
        "spec ControllerExpandVolume: the plugin MAY round capacity up; a CO expects the size it asked for"));
    Ok(())
}

fn total_bytes(resp: &NodeGetVolumeStatsResponse) -> Option<i64> {
    resp.usage
        .iter()
        .find(|u| u.unit == Unit::Bytes as i32)
        .map(|u| u.total)
}

/// The node half of the lifecycle, with every call repeated `repeats` times:
/// create → [controller publish] → [stage] → publish → [stats] → unpublish →
/// [unstage] → [controller unpublish] → delete.
async fn node_lifecycle(ctx: &Ctx, repeats: u32) -> Result<(), Failure> {
    const RULE: &str =
        "spec: every Node RPC is idempotent — a repeated call with the same arguments MUST succeed";
    let repeats = repeats.max(1);
    let volume = ctx
        .create_volume(&ctx.unique_name("node-lifecycle"))
        .await?;
    let node_id = ctx.node_id().await?;
    let caps = ctx.caps().clone();
    let publish_context = if caps.controller_has(ControllerRpc::PublishUnpublishVolume) {
        ctx.controller_publish(&volume, &node_id).await?
    } else {
        HashMap::new()
    };
    let staging = if caps.node_has(NodeRpc::StageUnstageVolume) {
        let path = ctx.staging_path().await?;
        for i in 0..repeats {
            ctx.node_stage_with(ctx.node_stage_request(&volume, &path, &publish_context))
                .await
                .ok(RULE)
                .map_err(|f| f.during(format!("NodeStageVolume call {} of {repeats}", i + 1)))?;
        }
        Some(path)
    } else {
        None
    };
    let target = ctx.target_path().await?;
    for i in 0..repeats {
        ctx.node_publish_with(ctx.node_publish_request(
            &volume,
            staging.as_deref(),
            &target,
            &publish_context,
        ))
        .await
        .ok(RULE)
        .map_err(|f| f.during(format!("NodePublishVolume call {} of {repeats}", i + 1)))?;
    }
    check_published_target(ctx, &target).await?;
    ctx.check_mount_flags(
        &target,
        &ctx.node_publish_request(&volume, staging.as_deref(), &target, &publish_context),
    );
    if caps.node_has(NodeRpc::GetVolumeStats) {
        let c = stats(ctx, &volume.volume_id, &target).await;
        let request = c.request.clone();
        let resp = c.ok("NodeGetVolumeStats: a published volume's stats MUST be available")?;
        ensure_call(
            !resp.usage.is_empty(),
            "NodeGetVolumeStats",
            &request,
            "at least one usage entry",
            &resp,
            "spec NodeGetVolumeStats: usage is REQUIRED",
        )?;
    }
    for i in 0..repeats {
        call!(ctx.node(), node_unpublish_volume, "NodeUnpublishVolume", NodeUnpublishVolumeRequest {
            volume_id: volume.volume_id.clone(),
            target_path: target.clone(),
        })
        .ok("NodeUnpublishVolume: unpublishing (again) MUST succeed; a target that is not published → OK")
        .map_err(|f| f.during(format!("NodeUnpublishVolume call {} of {repeats}", i + 1)))?;
    }
    ctx.tracker().forget(&crate::Resource::NodePublish {
        volume_id: volume.volume_id.clone(),
        target_path: target,
    });
    if let Some(staging) = staging {
        for i in 0..repeats {
            call!(ctx.node(), node_unstage_volume, "NodeUnstageVolume", NodeUnstageVolumeRequest {
                volume_id: volume.volume_id.clone(),
                staging_target_path: staging.clone(),
            })
            .ok("NodeUnstageVolume: unstaging (again) MUST succeed; a volume that is not staged → OK")
            .map_err(|f| f.during(format!("NodeUnstageVolume call {} of {repeats}", i + 1)))?;
        }
        ctx.tracker().forget(&crate::Resource::NodeStage {
            volume_id: volume.volume_id.clone(),
            staging_path: staging,
        });
    }
    if caps.controller_has(ControllerRpc::PublishUnpublishVolume) {
        ctx.controller_unpublish(&volume.volume_id, &node_id)
            .await?;
    }
    ctx.delete_volume(&volume.volume_id).await
}

pub fn specs() -> Vec<Spec> {
    let mut specs = info_specs();
    specs.extend(publish_specs());
    specs.extend(stage_specs());
    specs.extend(stats_specs());
    specs.extend(lifecycle_specs());
    specs.extend(expand_specs());
    specs
}

fn info_specs() -> Vec<Spec> {
    vec![
        spec!(
            NODE,
            "NodeGetCapabilities returns only known capability values",
            "spec NodeGetCapabilities: each capability is a NodeServiceCapability.RPC type defined by the spec",
            [NODE_SERVICE],
            |ctx: Ctx| async move {
                const RULE: &str = "NodeGetCapabilities: every capability is a known RPC type (not UNKNOWN)";
                let resp = call!(ctx.node(), node_get_capabilities, "NodeGetCapabilities", NodeGetCapabilitiesRequest {}).ok(RULE)?;
                for cap in &resp.capabilities {
                    let known = match &cap.r#type {
                        Some(node_service_capability::Type::Rpc(rpc)) => matches!(
                            NodeRpc::try_from(rpc.r#type),
                            Ok(t) if t != NodeRpc::Unknown
                        ),
                        None => false,
                    };
                    ensure(known, "NodeGetCapabilities", "a known RPC capability", cap, RULE)?;
                }
                Ok(())
            }
        ),
        spec!(
            NODE,
            "NodeGetInfo returns a node id and a non-negative volume limit",
            "spec NodeGetInfo: node_id is REQUIRED; max_volumes_per_node is OPTIONAL (0: no limit), never negative",
            [NODE_SERVICE],
            |ctx: Ctx| async move {
                const RULE: &str = "NodeGetInfo: node_id is REQUIRED; max_volumes_per_node >= 0";
                let c = call!(ctx.node(), node_get_info, "NodeGetInfo", NodeGetInfoRequest {});
                let request = c.request.clone();
                let resp = c.ok(RULE)?;
                ensure_call(!resp.node_id.is_empty() && resp.max_volumes_per_node >= 0, "NodeGetInfo", &request,
                    "a non-empty node_id and max_volumes_per_node >= 0", &resp, RULE)?;
                // Go: a plugin with VOLUME_ACCESSIBILITY_CONSTRAINTS says where the node is.
                // The spec makes accessible_topology OPTIONAL, so the full profile warns.
                let constrained = ctx.caps().plugin.contains(&csi_proto::v1::plugin_capability::service::Type::VolumeAccessibilityConstraints);
                let topology = ensure_call(!constrained || resp.accessible_topology.is_some(), "NodeGetInfo", &request,
                    "accessible_topology set, since the plugin advertises VOLUME_ACCESSIBILITY_CONSTRAINTS", &resp.accessible_topology,
                    "spec NodeGetInfo: accessible_topology (OPTIONAL) is where the node's volumes are accessible; a CO needs it to honour VOLUME_ACCESSIBILITY_CONSTRAINTS");
                if ctx.compat() {
                    return Ok(topology?);
                }
                ctx.should(topology);
                Ok(())
            }
        ),
    ]
}

fn publish_specs() -> Vec<Spec> {
    vec![
        spec!(
            PUBLISH,
            "fails with INVALID_ARGUMENT when no volume id is given",
            "spec NodePublishVolume: volume_id is REQUIRED",
            [NODE_SERVICE],
            |ctx: Ctx| async move {
                let target = ctx.target_path().await?;
                let staging = if ctx.caps().node_has(NodeRpc::StageUnstageVolume) { Some(ctx.staging_path().await?) } else { None };
                call!(ctx.node(), node_publish_volume, "NodePublishVolume",
                    ctx.node_publish_request(&Volume::default(), staging.as_deref(), &target, &HashMap::new()))
                    .code(Code::InvalidArgument, "NodePublishVolume: volume_id is REQUIRED → INVALID_ARGUMENT")?;
                Ok(())
            }
        ),
        spec!(
            PUBLISH,
            "fails with INVALID_ARGUMENT when no target path is given",
            "spec NodePublishVolume: target_path is REQUIRED",
            [NODE_SERVICE],
            |ctx: Ctx| async move {
                let volume = some_volume(&ctx).await?;
                let staging = if ctx.caps().node_has(NodeRpc::StageUnstageVolume) { Some(ctx.staging_path().await?) } else { None };
                call!(ctx.node(), node_publish_volume, "NodePublishVolume",
                    ctx.node_publish_request(&volume, staging.as_deref(), "", &HashMap::new()))
                .code(Code::InvalidArgument, "NodePublishVolume: target_path is REQUIRED → INVALID_ARGUMENT")?;
                Ok(())
            }
        ),
        spec!(
            PUBLISH,
            "fails with INVALID_ARGUMENT when no volume capability is given",
            "spec NodePublishVolume: volume_capability is REQUIRED",
            [NODE_SERVICE],
            |ctx: Ctx| async move {
                let volume = some_volume(&ctx).await?;
                let target = ctx.target_path().await?;
                let staging = if ctx.caps().node_has(NodeRpc::StageUnstageVolume) { Some(ctx.staging_path().await?) } else { None };
                call!(ctx.node(), node_publish_volume, "NodePublishVolume", NodePublishVolumeRequest {
                    volume_capability: None,
                    ..ctx.node_publish_request(&volume, staging.as_deref(), &target, &HashMap::new())
                })
                .code(Code::InvalidArgument, "NodePublishVolume: volume_capability is REQUIRED → INVALID_ARGUMENT")?;
                Ok(())
            }
        ),
        spec!(
            PUBLISH,
            "fails with FAILED_PRECONDITION when a SINGLE_NODE_SINGLE_WRITER volume is published at a second target",
            "spec NodePublishVolume: a volume published with SINGLE_NODE_SINGLE_WRITER at another target path → 9 FAILED_PRECONDITION",
            [NODE_SERVICE, CREATE_DELETE, Need::NodeCap(NodeRpc::SingleNodeMultiWriter), Need::Mounts],
            |ctx: Ctx| async move {
                let cap = ctx.capability(AccessMode::SingleNodeSingleWriter);
                let mut req = ctx.volume_request(&ctx.unique_name("single-writer"));
                req.volume_capabilities = vec![cap.clone()];
                let volume = ctx.create_volume_from(req).await?;
                let node_id = ctx.node_id().await?;
                let publish_context = if ctx.caps().controller_has(ControllerRpc::PublishUnpublishVolume) {
                    let mut req = ctx.controller_publish_request(&volume, &node_id);
                    req.volume_capability = Some(cap.clone());
                    ctx.as_co(|| ctx.controller_publish_with(req.clone())).await.ok("setup: ControllerPublishVolume with SINGLE_NODE_SINGLE_WRITER")?.publish_context
                } else {
                    HashMap::new()
                };
                let staging = if ctx.caps().node_has(NodeRpc::StageUnstageVolume) {
                    let path = ctx.staging_path().await?;
                    let req = NodeStageVolumeRequest { volume_capability: Some(cap.clone()), ..ctx.node_stage_request(&volume, &path, &publish_context) };
                    ctx.as_co(|| ctx.node_stage_with(req.clone())).await.ok("setup: NodeStageVolume with SINGLE_NODE_SINGLE_WRITER")?;
                    Some(path)
                } else {
                    None
                };
                let first = ctx.target_path().await?;
                let req = NodePublishVolumeRequest { volume_capability: Some(cap.clone()), ..ctx.node_publish_request(&volume, staging.as_deref(), &first, &publish_context) };
                ctx.as_co(|| ctx.node_publish_with(req.clone())).await.ok("setup: NodePublishVolume at the first target")?;
                let second = ctx.new_target_path().await?;
                let req = NodePublishVolumeRequest { volume_capability: Some(cap), ..ctx.node_publish_request(&volume, staging.as_deref(), &second, &publish_context) };
                ctx.node_publish_with(req).await
                    .code(Code::FailedPrecondition, "NodePublishVolume: SINGLE_NODE_SINGLE_WRITER allows one target path; a second → FAILED_PRECONDITION")?;
                Ok(())
            }
        ),
        spec!(
            UNPUBLISH,
            "fails with INVALID_ARGUMENT when no volume id is given",
            "spec NodeUnpublishVolume: volume_id is REQUIRED",
            [NODE_SERVICE],
            |ctx: Ctx| async move {
                call!(ctx.node(), node_unpublish_volume, "NodeUnpublishVolume", NodeUnpublishVolumeRequest {
                    volume_id: String::new(),
                    target_path: ctx.target_path().await?,
                })
                .code(Code::InvalidArgument, "NodeUnpublishVolume: volume_id is REQUIRED → INVALID_ARGUMENT")?;
                Ok(())
            }
        ),
        spec!(
            UNPUBLISH,
            "fails with INVALID_ARGUMENT when no target path is given",
            "spec NodeUnpublishVolume: target_path is REQUIRED",
            [NODE_SERVICE],
            |ctx: Ctx| async move {
                let volume = some_volume(&ctx).await?;
                call!(ctx.node(), node_unpublish_volume, "NodeUnpublishVolume", NodeUnpublishVolumeRequest {
                    volume_id: volume.volume_id.clone(),
                    target_path: String::new(),
                })
                .code(Code::InvalidArgument, "NodeUnpublishVolume: target_path is REQUIRED → INVALID_ARGUMENT")?;
                Ok(())
            }
        ),
        spec!(
            UNPUBLISH,
            "removes the target path it unpublishes",
            "spec NodeUnpublishVolume: \"the SP MUST delete the file or directory it created at target_path\"",
            [NODE_SERVICE, CREATE_DELETE, Need::Mounts],
            |ctx: Ctx| async move {
                const RULE: &str = "NodeUnpublishVolume: after OK, nothing is left at target_path (the SP created it and deletes it)";
                let volume = ctx.create_volume(&ctx.unique_name("unpublish-removes")).await?;
                let a = ctx.make_available(&volume).await?;
                check_published_target(&ctx, &a.target_path).await?;
                ctx.node_unpublish(&volume.volume_id, &a.target_path).await?;
                let kind = ctx.check_path(&a.target_path).await?;
                Ok(ensure(kind == PathKind::NotFound, "NodeUnpublishVolume",
                    format!("nothing at {} (not_found)", a.target_path), kind, RULE)?)
            }
        ),
        spec!(
            UNPUBLISH,
            "answers an unknown volume id as configured (NOT_FOUND per the spec table, or OK)",
            "spec NodeUnpublishVolume: \"Volume not found\" → 5 NOT_FOUND (spec issue #433 would allow OK; set --csi.nodeunpublish-notfound=ok to accept it)",
            [NODE_SERVICE],
            |ctx: Ctx| async move {
                let c = call!(ctx.node(), node_unpublish_volume, "NodeUnpublishVolume", NodeUnpublishVolumeRequest {
                    volume_id: ctx.unknown_volume_id(),
                    target_path: ctx.target_path().await?,
                });
                if ctx.config().node_unpublish_not_found_ok {
                    c.ok_or_code_in(&[Code::NotFound], "NodeUnpublishVolume: an unknown volume → NOT_FOUND, or OK (--csi.nodeunpublish-notfound=ok)")?;
                } else if c.is_ok() {
                    // An open question of the spec (issue #433): many drivers answer OK, and
                    // kubelet treats both alike. A warning, not a failure.
                    let request = c.request.clone();
                    ctx.warn(Failure::about("NodeUnpublishVolume", &request, "NOT_FOUND for an unknown volume (the error table)", "OK",
                        "spec NodeUnpublishVolume: \"Volume not found\" → 5 NOT_FOUND, an open question (spec issue #433): SHOULD-level"));
                } else {
                    c.code(Code::NotFound, "NodeUnpublishVolume: an unknown volume → NOT_FOUND (spec error table; --csi.nodeunpublish-notfound=ok accepts OK)")?;
                }
                Ok(())
            }
        ),
    ]
}

fn stage_specs() -> Vec<Spec> {
    vec![
        spec!(
            STAGE,
            "fails with INVALID_ARGUMENT when no volume id is given",
            "spec NodeStageVolume: volume_id is REQUIRED",
            [NODE_SERVICE, STAGE_UNSTAGE],
            |ctx: Ctx| async move {
                let staging = ctx.staging_path().await?;
                call!(
                    ctx.node(),
                    node_stage_volume,
                    "NodeStageVolume",
                    ctx.node_stage_request(&Volume::default(), &staging, &HashMap::new())
                )
                .code(
                    Code::InvalidArgument,
                    "NodeStageVolume: volume_id is REQUIRED → INVALID_ARGUMENT",
                )?;
                Ok(())
            }
        ),
        spec!(
            STAGE,
            "fails with INVALID_ARGUMENT when no staging path is given",
            "spec NodeStageVolume: staging_target_path is REQUIRED",
            [NODE_SERVICE, STAGE_UNSTAGE],
            |ctx: Ctx| async move {
                let volume = some_volume(&ctx).await?;
                call!(
                    ctx.node(),
                    node_stage_volume,
                    "NodeStageVolume",
                    ctx.node_stage_request(&volume, "", &HashMap::new())
                )
                .code(
                    Code::InvalidArgument,
                    "NodeStageVolume: staging_target_path is REQUIRED → INVALID_ARGUMENT",
                )?;
                Ok(())
            }
        ),
        spec!(
            STAGE,
            "fails with INVALID_ARGUMENT when no volume capability is given",
            "spec NodeStageVolume: volume_capability is REQUIRED",
            [NODE_SERVICE, STAGE_UNSTAGE],
            |ctx: Ctx| async move {
                let volume = some_volume(&ctx).await?;
                let staging = ctx.staging_path().await?;
                call!(
                    ctx.node(),
                    node_stage_volume,
                    "NodeStageVolume",
                    NodeStageVolumeRequest {
                        volume_capability: None,
                        ..ctx.node_stage_request(&volume, &staging, &HashMap::new())
                    }
                )
                .code(
                    Code::InvalidArgument,
                    "NodeStageVolume: volume_capability is REQUIRED → INVALID_ARGUMENT",
                )?;
                Ok(())
            }
        ),
        spec!(
            UNSTAGE,
            "fails with INVALID_ARGUMENT when no volume id is given",
            "spec NodeUnstageVolume: volume_id is REQUIRED",
            [NODE_SERVICE, STAGE_UNSTAGE],
            |ctx: Ctx| async move {
                call!(
                    ctx.node(),
                    node_unstage_volume,
                    "NodeUnstageVolume",
                    NodeUnstageVolumeRequest {
                        volume_id: String::new(),
                        staging_target_path: ctx.staging_path().await?,
                    }
                )
                .code(
                    Code::InvalidArgument,
                    "NodeUnstageVolume: volume_id is REQUIRED → INVALID_ARGUMENT",
                )?;
                Ok(())
            }
        ),
        spec!(
            UNSTAGE,
            "fails with INVALID_ARGUMENT when no staging path is given",
            "spec NodeUnstageVolume: staging_target_path is REQUIRED",
            [NODE_SERVICE, STAGE_UNSTAGE],
            |ctx: Ctx| async move {
                let volume = some_volume(&ctx).await?;
                call!(
                    ctx.node(),
                    node_unstage_volume,
                    "NodeUnstageVolume",
                    NodeUnstageVolumeRequest {
                        volume_id: volume.volume_id.clone(),
                        staging_target_path: String::new(),
                    }
                )
                .code(
                    Code::InvalidArgument,
                    "NodeUnstageVolume: staging_target_path is REQUIRED → INVALID_ARGUMENT",
                )?;
                Ok(())
            }
        ),
    ]
}

fn stats_specs() -> Vec<Spec> {
    vec![
        spec!(
            STATS,
            "fails with INVALID_ARGUMENT when no volume id is given",
            "spec NodeGetVolumeStats: volume_id is REQUIRED",
            [NODE_SERVICE, GET_STATS],
            |ctx: Ctx| async move {
                let path = ctx.new_staging_path().await?;
                stats(&ctx, "", &path).await
                    .code(Code::InvalidArgument, "NodeGetVolumeStats: volume_id is REQUIRED → INVALID_ARGUMENT")?;
                Ok(())
            }
        ),
        spec!(
            STATS,
            "fails with INVALID_ARGUMENT when no volume path is given",
            "spec NodeGetVolumeStats: volume_path is REQUIRED",
            [NODE_SERVICE, GET_STATS],
            |ctx: Ctx| async move {
                let volume = some_volume(&ctx).await?;
                stats(&ctx, &volume.volume_id, "").await
                    .code(Code::InvalidArgument, "NodeGetVolumeStats: volume_path is REQUIRED → INVALID_ARGUMENT")?;
                Ok(())
            }
        ),
        spec!(
            STATS,
            "fails with NOT_FOUND for a volume that does not exist",
            "spec NodeGetVolumeStats: \"Volume does not exist\" → 5 NOT_FOUND",
            [NODE_SERVICE, GET_STATS],
            |ctx: Ctx| async move {
                let path = ctx.new_staging_path().await?;
                stats(&ctx, &ctx.unknown_volume_id(), &path).await
                    .code(Code::NotFound, "NodeGetVolumeStats: an unknown volume → NOT_FOUND")?;
                Ok(())
            }
        ),
        spec!(
            STATS,
            "fails with NOT_FOUND when the volume is not at the given path",
            "spec NodeGetVolumeStats: \"Volume does not exist on specified volume_path\" → 5 NOT_FOUND",
            [NODE_SERVICE, GET_STATS, CREATE_DELETE, Need::Mounts],
            |ctx: Ctx| async move {
                let volume = ctx.create_volume(&ctx.unique_name("stats-elsewhere")).await?;
                ctx.make_available(&volume).await?;
                // Go's request: a relative path, where no volume can be.
                stats(&ctx, &volume.volume_id, "some/path").await
                    .code(Code::NotFound, "NodeGetVolumeStats: the volume is not at volume_path \"some/path\" → NOT_FOUND")?;
                if ctx.compat() {
                    return Ok(());
                }
                // An existing, empty directory: the volume is not there either.
                let elsewhere = ctx.new_staging_path().await?;
                stats(&ctx, &volume.volume_id, &elsewhere).await
                    .code(Code::NotFound, "NodeGetVolumeStats: the volume is not at volume_path → NOT_FOUND")?;
                Ok(())
            }
        ),
    ]
}

fn lifecycle_specs() -> Vec<Spec> {
    vec![
        spec!(
            NODE,
            "a volume can be staged, published, unpublished and unstaged",
            "spec: the node half of the volume lifecycle: [ControllerPublish] → [NodeStage] → NodePublish → NodeUnpublish → [NodeUnstage] → [ControllerUnpublish]",
            [NODE_SERVICE, CREATE_DELETE, Need::Mounts],
            |ctx: Ctx| async move { Ok(node_lifecycle(&ctx, 1).await?) }
        ),
        spec!(
            NODE,
            "every call of the node lifecycle can be repeated with the same result",
            "spec: Node RPCs are idempotent; a CO retries after timeouts",
            [NODE_SERVICE, CREATE_DELETE, Need::Mounts, Need::IdempotentRepeats],
            |ctx: Ctx| async move { Ok(node_lifecycle(&ctx, ctx.config().idempotent_count).await?) }
        ),
    ]
}

fn expand_specs() -> Vec<Spec> {
    vec![
        spec!(
            EXPAND,
            "fails with INVALID_ARGUMENT when no volume id is given",
            "spec NodeExpandVolume: volume_id is REQUIRED",
            [NODE_SERVICE, NODE_EXPAND],
            |ctx: Ctx| async move {
                let path = ctx.new_staging_path().await?;
                call!(ctx.node(), node_expand_volume, "NodeExpandVolume", NodeExpandVolumeRequest {
                    volume_id: String::new(),
                    volume_path: path,
                    capacity_range: Some(CapacityRange { required_bytes: ctx.config().expand_to(), limit_bytes: 0 }),
                    secrets: ctx.secrets(Secret::NodeExpandVolume),
                    ..Default::default()
                })
                .code(Code::InvalidArgument, "NodeExpandVolume: volume_id is REQUIRED → INVALID_ARGUMENT")?;
                Ok(())
            }
        ),
        spec!(
            EXPAND,
            "fails with INVALID_ARGUMENT when no volume path is given",
            "spec NodeExpandVolume: volume_path is REQUIRED",
            [NODE_SERVICE, NODE_EXPAND],
            |ctx: Ctx| async move {
                let volume = some_volume(&ctx).await?;
                call!(ctx.node(), node_expand_volume, "NodeExpandVolume", NodeExpandVolumeRequest {
                    volume_id: volume.volume_id.clone(),
                    volume_path: String::new(),
                    capacity_range: Some(CapacityRange { required_bytes: ctx.config().expand_to(), limit_bytes: 0 }),
                    secrets: ctx.secrets(Secret::NodeExpandVolume),
                    ..Default::default()
                })
                .code(Code::InvalidArgument, "NodeExpandVolume: volume_path is REQUIRED → INVALID_ARGUMENT")?;
                Ok(())
            }
        ),
        spec!(
            EXPAND,
            "fails with NOT_FOUND for a volume that does not exist",
            "spec NodeExpandVolume: \"Volume not found\" → 5 NOT_FOUND",
            [NODE_SERVICE, NODE_EXPAND],
            |ctx: Ctx| async move {
                let path = ctx.new_staging_path().await?;
                call!(ctx.node(), node_expand_volume, "NodeExpandVolume", NodeExpandVolumeRequest {
                    volume_id: ctx.unknown_volume_id(),
                    volume_path: path,
                    capacity_range: Some(CapacityRange { required_bytes: ctx.config().expand_to(), limit_bytes: 0 }),
                    secrets: ctx.secrets(Secret::NodeExpandVolume),
                    ..Default::default()
                })
                .code(Code::NotFound, "NodeExpandVolume: an unknown volume → NOT_FOUND")?;
                Ok(())
            }
        ),
        spec!(
            EXPAND,
            "expands a published volume to at least the requested capacity",
            "spec NodeExpandVolume: after ControllerExpandVolume (when advertised), the node grows the filesystem; capacity_bytes is the new size",
            [NODE_SERVICE, NODE_EXPAND, CREATE_DELETE, Need::Mounts],
            |ctx: Ctx| async move {
                const RULE: &str = "NodeExpandVolume: expanding a published volume MUST succeed, with capacity_bytes >= required_bytes (0: unknown)";
                let volume = ctx.create_volume(&ctx.unique_name("node-expand")).await?;
                let to = ctx.config().expand_to();
                // As Go does and as Kubernetes does for a plugin without ONLINE expansion:
                // the controller expands the volume before it is published, so a plugin
                // that expands only offline is judged fairly.
                if ctx.caps().controller_has(ControllerRpc::ExpandVolume) {
                    expand_on_controller(&ctx, &volume.volume_id, to)
                        .await
                        .map_err(|f| f.during("expanding on the controller first"))?;
                }
                let a = ctx.make_available(&volume).await?;
                let with_stats = ctx.caps().node_has(NodeRpc::GetVolumeStats) && !ctx.config().is_block();
                let before = if with_stats {
                    stats(&ctx, &volume.volume_id, &a.target_path).await.ok("NodeGetVolumeStats of a published volume MUST succeed")?
                } else {
                    Default::default()
                };
                let mut request = NodeExpandVolumeRequest {
                    volume_id: volume.volume_id.clone(),
                    volume_path: a.target_path.clone(),
                    capacity_range: Some(CapacityRange { required_bytes: to, limit_bytes: 0 }),
                    ..Default::default()
                };
                if !ctx.compat() {
                    request.staging_target_path = a.staging_path.clone().unwrap_or_default();
                    request.volume_capability = Some(ctx.default_capability());
                    request.secrets = ctx.secrets(Secret::NodeExpandVolume);
                }
                let c = call!(ctx.node(), node_expand_volume, "NodeExpandVolume", request);
                let request = c.request.clone();
                let resp = c.ok(RULE)?;
                if ctx.compat() {
                    return Ok(());
                }
                ensure_call(resp.capacity_bytes == 0 || resp.capacity_bytes >= to, "NodeExpandVolume", &request,
                    format!("capacity_bytes >= {to} (or 0)"), resp.capacity_bytes, RULE)?;
                if with_stats {
                    let after = stats(&ctx, &volume.volume_id, &a.target_path).await.ok("NodeGetVolumeStats of a published volume MUST succeed")?;
                    if let (Some(b), Some(n)) = (total_bytes(&before), total_bytes(&after)) {
                        if own_filesystem(b, to) {
                            ensure(n >= b && n as f64 >= 0.8 * to as f64, "NodeGetVolumeStats", format!("total bytes near {to} after the expansion (the filesystem at the target is the volume's own: {b} bytes before)"), n,
                                "NodeExpandVolume: the filesystem on a published volume grows to the new size")?;
                        }
                        // Otherwise the target is a directory on a filesystem shared with
                        // other data (hostpath's kind of volume): its size says nothing
                        // about the volume, and no rule says it must change.
                    }
                }
                Ok(())
            }
        ),
    ]
}
