//! The rows of the spec's error tables that csi-sanity leaves out, each set up where
//! the driver's capabilities allow.

use std::collections::HashMap;

use csi_proto::v1::controller_service_capability::rpc::Type as ControllerRpc;
use csi_proto::v1::node_service_capability::rpc::Type as NodeRpc;
use csi_proto::v1::plugin_capability::volume_expansion::Type as VolumeExpansion;
use csi_proto::v1::volume_capability::{self, AccessType};
use csi_proto::v1::volume_content_source::{SnapshotSource, Type as SourceType};
use csi_proto::v1::{
    CapacityRange, ControllerGetVolumeRequest, ControllerModifyVolumeRequest, CreateVolumeResponse,
    GetSnapshotRequest, ListSnapshotsRequest, NodeGetVolumeStatsRequest, VolumeCapability,
    VolumeContentSource,
};
use tonic::Code;

use super::co::send;
use super::observe::{look_up, reports_volumes};
use super::{
    attach_if_advertised, controller_unpublish_request, delete_volume_request, expand_request,
    node_unstage_request, stage_fresh, CREATE_DELETE, EXPAND, NODE, PUBLISH, SNAPSHOTS, STAGE,
};
use crate::check::{ensure, Call, Failure, Stop};
use crate::paths::PathRole;
use crate::secrets::Secret;
use crate::tracker::Resource;
use crate::{spec, Ctx, Need, Spec};

const GROUP: &str = "Beyond::ErrorTable";

const GET_VOLUME: Need = Need::ControllerCap(ControllerRpc::GetVolume);
const GET_SNAPSHOT: Need = Need::ControllerCap(ControllerRpc::GetSnapshot);
const LIST_SNAPSHOTS: Need = Need::ControllerCap(ControllerRpc::ListSnapshots);
const MODIFY: Need = Need::ControllerCap(ControllerRpc::ModifyVolume);
const GET_STATS: Need = Need::NodeCap(NodeRpc::GetVolumeStats);

/// A size limit the spec sets but does not require plugins to enforce: a value over
/// it may be accepted, or rejected with INVALID_ARGUMENT — never with another code.
fn accepted_or_invalid<T: std::fmt::Debug>(c: Call<T>, rule: &str) -> Result<(), Stop> {
    c.ok_or_code_in(&[Code::InvalidArgument], rule)?;
    Ok(())
}

/// Whether `message` names `id` as a word of its own (a node id "1" is not named by
/// a volume id that happens to contain a 1).
fn names(message: &str, id: &str) -> bool {
    message
        .split(|c: char| c.is_whitespace() || ",;:()[]{}<>\"'`=".contains(c))
        .any(|word| word.trim_end_matches('.') == id)
}

/// The capability of the other access type (block for mount, mount for block).
fn other_access_type(ctx: &Ctx) -> VolumeCapability {
    let mut cap = ctx.default_capability();
    cap.access_type = Some(if ctx.config().is_block() {
        AccessType::Mount(volume_capability::MountVolume::default())
    } else {
        AccessType::Block(volume_capability::BlockVolume {})
    });
    cap
}

/// Filler parameters that bring `base` to about `bytes` bytes of keys and values.
fn padded_parameters(base: &HashMap<String, String>, bytes: usize) -> HashMap<String, String> {
    let mut params = base.clone();
    let size =
        |p: &HashMap<String, String>| p.iter().map(|(k, v)| k.len() + v.len()).sum::<usize>();
    let mut i = 0;
    while size(&params) + 128 <= bytes {
        params.insert(format!("beyond.csi.example.com/pad-{i:02}"), "x".repeat(96));
        i += 1;
    }
    params
}

/// A path of exactly `len` bytes inside `parent` (or as short as can be, when `parent`
/// is already longer): a staging directory is created and tracked; a target is left
/// for the driver to create.
fn path_of_len(ctx: &Ctx, parent: &str, len: usize, role: PathRole) -> Result<String, Stop> {
    let base = format!("{}/", parent.trim_end_matches('/'));
    if base.len() + 1 >= len {
        return Ok(match role {
            PathRole::Staging => parent.to_string(),
            PathRole::Target => format!("{base}target"),
        });
    }
    let path = format!("{base}{}", "p".repeat(len - base.len()));
    if role == PathRole::Staging {
        std::fs::create_dir(&path).map_err(|e| {
            Failure::new(
                format!("to create {path}"),
                e.to_string(),
                "harness setup: a long staging path",
            )
        })?;
        ctx.tracker().track(Resource::Path {
            path: path.clone(),
            role,
        });
    }
    Ok(path)
}

pub fn specs() -> Vec<Spec> {
    vec![
        spec!(
            GROUP,
            "DeleteVolume fails with FAILED_PRECONDITION while the volume is published to a node, and the volume stays",
            "spec DeleteVolume errors: \"Volume in use\" → 9 FAILED_PRECONDITION: the volume could not be deleted because it is in use by another resource",
            [CREATE_DELETE, PUBLISH, NODE],
            |ctx: Ctx| async move {
                const RULE: &str = "DeleteVolume: a volume still published to a node is in use → FAILED_PRECONDITION, and it is not deleted";
                let v = ctx.create_volume(&ctx.unique_name("in-use")).await?;
                ctx.controller_publish(&v, &ctx.node_id().await?).await?;
                let c = send(&ctx, &delete_volume_request(&ctx, &v.volume_id), None).await;
                if c.is_ok() {
                    // "In use" is the plugin's judgement: a plugin that can delete a
                    // published volume may do so. A warning, not a failure.
                    ctx.warn(crate::Failure::about("DeleteVolume", &c.request, "FAILED_PRECONDITION for a volume published to a node",
                        "OK: the published volume was deleted",
                        "spec DeleteVolume errors: \"Volume in use\" → 9 FAILED_PRECONDITION is the plugin's judgement (SHOULD-level)"));
                    return Ok(());
                }
                c.code(Code::FailedPrecondition, RULE)?;
                if reports_volumes(&ctx) {
                    let seen = look_up(&ctx, &v.volume_id).await?;
                    ensure(seen.is_some(), "ControllerGetVolume/ListVolumes", format!("volume {} still there", v.volume_id), "gone", RULE)?;
                }
                Ok(())
            }
        ),
        spec!(
            GROUP,
            "ControllerPublishVolume fails with FAILED_PRECONDITION naming the holding node when a SINGLE_NODE_WRITER volume is published to a second node",
            "spec ControllerPublishVolume errors: \"Volume published to another node\" → 9 FAILED_PRECONDITION; the plugin SHOULD name the node the volume is published at in the status message",
            [CREATE_DELETE, PUBLISH, NODE, Need::SecondNode],
            |ctx: Ctx| async move {
                const RULE: &str = "ControllerPublishVolume: published to another node and not MULTI_NODE → FAILED_PRECONDITION, naming that node";
                let v = ctx.create_volume(&ctx.unique_name("two-nodes")).await?;
                let first = ctx.node_id().await?;
                let second = ctx.config().second_node_id.clone().unwrap_or_default();
                ctx.controller_publish(&v, &first).await?;
                let c = ctx.controller_publish_with(ctx.controller_publish_request(&v, &second)).await;
                let request = c.request.clone();
                let status = c.code(Code::FailedPrecondition, RULE)?;
                // "SHOULD name the node": a warning when the message does not.
                ctx.should(crate::check::ensure_call(
                    names(status.message(), &first),
                    "ControllerPublishVolume",
                    &request,
                    format!("a message naming node {first}"),
                    status.message(),
                    "spec ControllerPublishVolume errors: the plugin SHOULD name the node the volume is published at in the status message",
                ));
                if super::observe::reports_published_nodes(&ctx) {
                    super::observe::expect_published_to(&ctx, &v.volume_id, &[&first], RULE).await?;
                }
                Ok(())
            }
        ),
        spec!(
            GROUP,
            "NodeStageVolume fails with ALREADY_EXISTS when the volume is staged at the path with the other access type",
            "spec NodeStageVolume errors: \"Volume published but is incompatible\" → 6 ALREADY_EXISTS: already staged at staging_target_path but incompatible with the volume_capability",
            [CREATE_DELETE, NODE, STAGE, Need::Mounts],
            |ctx: Ctx| async move {
                let v = ctx.create_volume(&ctx.unique_name("stage-mismatch")).await?;
                let s = stage_fresh(&ctx, &v).await?;
                let staging = s.staging_path.clone().unwrap_or_default();
                let mut req = ctx.node_stage_request(&v, &staging, &s.publish_context);
                req.volume_capability = Some(other_access_type(&ctx));
                ctx.node_stage_with(req).await.code(
                    Code::AlreadyExists,
                    "NodeStageVolume: staged at this path with an incompatible capability → ALREADY_EXISTS",
                )?;
                Ok(())
            }
        ),
        spec!(
            GROUP,
            "NodePublishVolume fails with ALREADY_EXISTS when the target is published with another readonly setting",
            "spec NodePublishVolume errors: \"Volume published but is incompatible\" → 6 ALREADY_EXISTS: already published at target_path but incompatible with the readonly flag or capability",
            [CREATE_DELETE, NODE, Need::Mounts],
            |ctx: Ctx| async move {
                let v = ctx.create_volume(&ctx.unique_name("publish-mismatch")).await?;
                let a = ctx.make_available(&v).await?;
                let mut req = ctx.node_publish_request(&v, a.staging_path.as_deref(), &a.target_path, &a.publish_context);
                req.readonly = true;
                ctx.node_publish_with(req).await.code(
                    Code::AlreadyExists,
                    "NodePublishVolume: same target, different arguments (readonly) → ALREADY_EXISTS",
                )?;
                Ok(())
            }
        ),
        spec!(
            GROUP,
            "NodeUnstageVolume succeeds for a volume that is not staged",
            "spec NodeUnstageVolume: this RPC MUST be idempotent; a volume that is not staged at staging_target_path → OK",
            [CREATE_DELETE, NODE, STAGE],
            |ctx: Ctx| async move {
                let v = ctx.create_volume(&ctx.unique_name("never-staged")).await?;
                attach_if_advertised(&ctx, &v).await?;
                let staging = ctx.staging_path().await?;
                send(&ctx, &node_unstage_request(&v.volume_id, &staging), None)
                    .await
                    .ok("NodeUnstageVolume: not staged → OK (idempotent)")?;
                Ok(())
            }
        ),
        spec!(
            GROUP,
            "ControllerUnpublishVolume succeeds for a volume that is not published to the node",
            "spec ControllerUnpublishVolume: \"If the volume is not attached to the node, the plugin MUST reply 0 OK\"",
            [CREATE_DELETE, PUBLISH, NODE],
            |ctx: Ctx| async move {
                let v = ctx.create_volume(&ctx.unique_name("never-published")).await?;
                send(&ctx, &controller_unpublish_request(&ctx, &v.volume_id, &ctx.node_id().await?), None)
                    .await
                    .ok("ControllerUnpublishVolume: not attached → OK")?;
                Ok(())
            }
        ),
        spec!(
            GROUP,
            "CreateVolume accepts a name longer than 128 bytes or rejects it with INVALID_ARGUMENT, never another code",
            "spec \"Size limits\": a string field is at most 128 bytes; plugins SHOULD reject longer values with INVALID_ARGUMENT (enforcing the limit is not a MUST)",
            [CREATE_DELETE],
            |ctx: Ctx| async move {
                let c = ctx.create_volume_with(ctx.volume_request(&ctx.unique_name_of_len(129))).await;
                accepted_or_invalid(c, "CreateVolume: a 129-byte name → OK or INVALID_ARGUMENT")
            }
        ),
        spec!(
            GROUP,
            "CreateVolume accepts a parameters map of nearly 4 KiB or rejects it with INVALID_ARGUMENT, never another code",
            "spec \"Size limits\": a map field is at most 4 KiB in total; a plugin that does not know a parameter rejects it with INVALID_ARGUMENT",
            [CREATE_DELETE],
            |ctx: Ctx| async move {
                let mut req = ctx.volume_request(&ctx.unique_name("big-params"));
                req.parameters = padded_parameters(&req.parameters, 4000);
                let c = ctx.create_volume_with(req).await;
                accepted_or_invalid(c, "CreateVolume: a 4000-byte parameters map → OK or INVALID_ARGUMENT")
            }
        ),
        spec!(
            GROUP,
            "CreateSnapshot accepts a parameters map of nearly 4 KiB or rejects it with INVALID_ARGUMENT, never another code",
            "spec \"Size limits\": a map field is at most 4 KiB in total; a plugin that does not know a parameter rejects it with INVALID_ARGUMENT",
            [CREATE_DELETE, SNAPSHOTS],
            |ctx: Ctx| async move {
                let v = ctx.create_volume(&ctx.unique_name("big-params-source")).await?;
                let mut req = ctx.snapshot_request(&ctx.unique_name("big-params"), &v.volume_id);
                req.parameters = padded_parameters(&req.parameters, 4000);
                let c = ctx.create_snapshot_with(req).await;
                accepted_or_invalid(c, "CreateSnapshot: a 4000-byte parameters map → OK or INVALID_ARGUMENT")
            }
        ),
        spec!(
            GROUP,
            "NodeStageVolume and NodePublishVolume work with staging and target paths of 128 bytes",
            "spec NodeStageVolume / NodePublishVolume: staging_target_path and target_path MUST be supported up to at least 128 bytes",
            [CREATE_DELETE, NODE, Need::Mounts],
            |ctx: Ctx| async move {
                const RULE: &str = "NodeStageVolume/NodePublishVolume: paths of 128 bytes MUST work";
                let config = ctx.config();
                if config.create_target_path_cmd.is_some() || config.create_staging_path_cmd.is_some() {
                    return Err(Stop::skip("paths are created by commands on another host; the harness can't make one of a given length"));
                }
                let v = ctx.create_volume(&ctx.unique_name("long-paths")).await?;
                let publish_context = attach_if_advertised(&ctx, &v).await?;
                let staging = if ctx.caps().node_has(NodeRpc::StageUnstageVolume) {
                    let path = path_of_len(&ctx, &ctx.new_staging_path().await?, 128, PathRole::Staging)?;
                    ctx.node_stage_with(ctx.node_stage_request(&v, &path, &publish_context)).await.ok(RULE)?;
                    Some(path)
                } else {
                    None
                };
                let parent = ctx.new_target_path().await?;
                let parent = parent.trim_end_matches("/target");
                let target = path_of_len(&ctx, parent, 128, PathRole::Target)?;
                ctx.node_publish_with(ctx.node_publish_request(&v, staging.as_deref(), &target, &publish_context))
                    .await
                    .ok(RULE)?;
                Ok(())
            }
        ),
        spec!(
            GROUP,
            "ListSnapshots fails with ABORTED when the starting_token is invalid",
            "spec ListSnapshots errors: \"Invalid starting_token\" → 10 ABORTED",
            [LIST_SNAPSHOTS],
            |ctx: Ctx| async move {
                let req = ListSnapshotsRequest {
                    starting_token: format!("beyond-not-a-token-{}", ctx.unknown_snapshot_id()),
                    secrets: ctx.secrets(Secret::ListSnapshots),
                    ..Default::default()
                };
                send(&ctx, &req, None).await.code(Code::Aborted, "ListSnapshots: an invalid starting_token → ABORTED")?;
                Ok(())
            }
        ),
        spec!(
            GROUP,
            "ControllerGetVolume fails with NOT_FOUND for an unknown volume id and for a deleted volume",
            "spec ControllerGetVolume errors: \"Volume does not exist\" → 5 NOT_FOUND",
            [GET_VOLUME],
            |ctx: Ctx| async move {
                const RULE: &str = "ControllerGetVolume: a volume that does not exist → NOT_FOUND";
                let get = |id: String| ControllerGetVolumeRequest { volume_id: id };
                send(&ctx, &get(ctx.unknown_volume_id()), None).await.code(Code::NotFound, RULE)?;
                if ctx.caps().controller_has(ControllerRpc::CreateDeleteVolume) {
                    let v = ctx.create_volume(&ctx.unique_name("get-deleted")).await?;
                    ctx.delete_volume(&v.volume_id).await?;
                    send(&ctx, &get(v.volume_id), None)
                        .await
                        .code(Code::NotFound, RULE)
                        .map_err(|f| f.during("looking up a volume that was just deleted"))?;
                }
                Ok(())
            }
        ),
        spec!(
            GROUP,
            "ControllerGetVolume and ListVolumes report published_node_ids exactly: the node after ControllerPublishVolume, no node after ControllerUnpublishVolume",
            "spec ControllerGetVolume / ListVolumes VolumeStatus.published_node_ids: \"A list of all the node_id of nodes that this volume is controller published on\"",
            [CREATE_DELETE, PUBLISH, NODE],
            |ctx: Ctx| async move {
                const RULE: &str = "published_node_ids lists exactly the nodes the volume is controller-published to";
                if !super::observe::reports_published_nodes(&ctx) {
                    return Err(Stop::skip("the driver advertises neither GET_VOLUME nor LIST_VOLUMES_PUBLISHED_NODES"));
                }
                let v = ctx.create_volume(&ctx.unique_name("published-nodes")).await?;
                let node = ctx.node_id().await?;
                super::observe::expect_published_to(&ctx, &v.volume_id, &[], RULE)
                    .await
                    .map_err(|f| f.during("before ControllerPublishVolume"))?;
                ctx.controller_publish(&v, &node).await?;
                super::observe::expect_published_to(&ctx, &v.volume_id, &[node.as_str()], RULE)
                    .await
                    .map_err(|f| f.during("after ControllerPublishVolume"))?;
                ctx.controller_unpublish(&v.volume_id, &node).await?;
                super::observe::expect_published_to(&ctx, &v.volume_id, &[], RULE)
                    .await
                    .map_err(|f| f.during("after ControllerUnpublishVolume"))
            }
        ),
        spec!(
            GROUP,
            "GetSnapshot fails with NOT_FOUND for a snapshot that was deleted",
            "spec GetSnapshot errors: \"Snapshot does not exist\" → 5 NOT_FOUND",
            [GET_SNAPSHOT, SNAPSHOTS, CREATE_DELETE],
            |ctx: Ctx| async move {
                let v = ctx.create_volume(&ctx.unique_name("snap-deleted-source")).await?;
                let s = ctx.create_snapshot(&ctx.unique_name("snap-deleted"), &v.volume_id).await?;
                ctx.delete_snapshot(&s.snapshot_id).await?;
                let req = GetSnapshotRequest {
                    snapshot_id: s.snapshot_id,
                    secrets: ctx.secrets(Secret::GetSnapshot),
                };
                send(&ctx, &req, None).await.code(Code::NotFound, "GetSnapshot: a deleted snapshot → NOT_FOUND")?;
                Ok(())
            }
        ),
        spec!(
            GROUP,
            "CreateVolume fails with OUT_OF_RANGE when asked for less capacity than its source snapshot",
            "spec CreateVolume errors: \"Unsupported capacity_range\" → 11 OUT_OF_RANGE, e.g. when trying to create a volume smaller than the source snapshot",
            [CREATE_DELETE, SNAPSHOTS],
            |ctx: Ctx| async move {
                let v = ctx.create_volume(&ctx.unique_name("small-restore-source")).await?;
                let s = ctx.create_ready_snapshot(&ctx.unique_name("small-restore"), &v.volume_id).await?;
                if s.size_bytes <= 1 {
                    return Err(Stop::skip("the snapshot reports no size_bytes, so a smaller capacity can't be chosen"));
                }
                let mut req = ctx.volume_request(&ctx.unique_name("small-restore"));
                let half = s.size_bytes / 2;
                req.capacity_range = Some(CapacityRange { required_bytes: half, limit_bytes: half });
                req.volume_content_source = Some(VolumeContentSource {
                    r#type: Some(SourceType::Snapshot(SnapshotSource { snapshot_id: s.snapshot_id })),
                });
                ctx.create_volume_with(req).await.code(
                    Code::OutOfRange,
                    "CreateVolume: a capacity limit below the source snapshot's size → OUT_OF_RANGE",
                )?;
                Ok(())
            }
        ),
        spec!(
            GROUP,
            "CreateVolume fails with ALREADY_EXISTS when the name exists with another content source",
            "spec CreateVolume errors: \"Volume already exists but is incompatible\" → 6 ALREADY_EXISTS (name exists with a different volume_content_source)",
            [CREATE_DELETE, SNAPSHOTS],
            |ctx: Ctx| async move {
                let source = ctx.create_volume(&ctx.unique_name("source")).await?;
                let s = ctx.create_ready_snapshot(&ctx.unique_name("source"), &source.volume_id).await?;
                let name = ctx.unique_name("plain");
                ctx.create_volume(&name).await?;
                let mut req = ctx.volume_request(&name);
                req.volume_content_source = Some(VolumeContentSource {
                    r#type: Some(SourceType::Snapshot(SnapshotSource { snapshot_id: s.snapshot_id })),
                });
                let c: Call<CreateVolumeResponse> = ctx.create_volume_with(req).await;
                c.code(Code::AlreadyExists, "CreateVolume: same name, a different content source → ALREADY_EXISTS")?;
                Ok(())
            }
        ),
        spec!(
            GROUP,
            "ControllerExpandVolume fails with NOT_FOUND for a volume that does not exist",
            "spec ControllerExpandVolume errors: \"Volume does not exist\" → 5 NOT_FOUND",
            [EXPAND],
            |ctx: Ctx| async move {
                let req = expand_request(&ctx, &ctx.unknown_volume_id(), ctx.config().expand_to());
                send(&ctx, &req, None).await.code(Code::NotFound, "ControllerExpandVolume: an unknown volume → NOT_FOUND")?;
                Ok(())
            }
        ),
        spec!(
            GROUP,
            "ControllerExpandVolume fails with FAILED_PRECONDITION for a published volume when the plugin expands only offline",
            "spec ControllerExpandVolume errors: \"Volume in use\" → 9 FAILED_PRECONDITION when the volume is published and the plugin only has the OFFLINE expansion capability",
            [EXPAND, CREATE_DELETE, PUBLISH, NODE],
            |ctx: Ctx| async move {
                let expansion = &ctx.caps().expansion;
                if expansion.contains(&VolumeExpansion::Online) || !expansion.contains(&VolumeExpansion::Offline) {
                    return Err(Stop::skip("the plugin does not advertise OFFLINE-only volume expansion"));
                }
                let v = ctx.create_volume(&ctx.unique_name("offline-expand")).await?;
                ctx.controller_publish(&v, &ctx.node_id().await?).await?;
                send(&ctx, &expand_request(&ctx, &v.volume_id, ctx.config().expand_to()), None)
                    .await
                    .code(Code::FailedPrecondition, "ControllerExpandVolume: published, OFFLINE expansion only → FAILED_PRECONDITION")?;
                Ok(())
            }
        ),
        spec!(
            GROUP,
            "NodeGetVolumeStats fails with NOT_FOUND at a target the volume was unpublished from",
            "spec NodeGetVolumeStats errors: \"Volume does not exist\" → 5 NOT_FOUND: no volume at the specified volume_path",
            [CREATE_DELETE, NODE, GET_STATS, Need::Mounts],
            |ctx: Ctx| async move {
                let v = ctx.create_volume(&ctx.unique_name("stats-gone")).await?;
                let a = ctx.make_available(&v).await?;
                ctx.node_unpublish(&v.volume_id, &a.target_path).await?;
                let req = NodeGetVolumeStatsRequest {
                    volume_id: v.volume_id.clone(),
                    volume_path: a.target_path.clone(),
                    staging_target_path: a.staging_path.clone().unwrap_or_default(),
                };
                send(&ctx, &req, None).await.code(Code::NotFound, "NodeGetVolumeStats: nothing published at volume_path → NOT_FOUND")?;
                Ok(())
            }
        ),
        spec!(
            GROUP,
            "NodePublishVolume fails with FAILED_PRECONDITION when a driver that stages gets no staging path",
            "spec NodePublishVolume errors: \"Stage required\" → 9 FAILED_PRECONDITION: STAGE_UNSTAGE_VOLUME is advertised but no staging_target_path was set",
            [CREATE_DELETE, NODE, STAGE],
            |ctx: Ctx| async move {
                let v = ctx.create_volume(&ctx.unique_name("no-staging")).await?;
                let publish_context = attach_if_advertised(&ctx, &v).await?;
                let target = ctx.target_path().await?;
                ctx.node_publish_with(ctx.node_publish_request(&v, None, &target, &publish_context))
                    .await
                    .code(Code::FailedPrecondition, "NodePublishVolume: STAGE_UNSTAGE_VOLUME advertised, no staging_target_path → FAILED_PRECONDITION")?;
                Ok(())
            }
        ),
        spec!(
            GROUP,
            "ControllerModifyVolume rejected with INVALID_ARGUMENT for one unsupported parameter leaves the volume as it was",
            "spec ControllerModifyVolume errors: \"Parameters not supported\" → 3 INVALID_ARGUMENT; the plugin MUST NOT apply any of the parameters when it fails",
            [CREATE_DELETE, MODIFY, Need::MutableParameters],
            |ctx: Ctx| async move {
                const RULE: &str = "ControllerModifyVolume: unsupported parameters → INVALID_ARGUMENT with nothing applied (the volume as ControllerGetVolume/ListVolumes shows it is unchanged)";
                if !reports_volumes(&ctx) {
                    return Err(Stop::skip("the driver advertises neither GET_VOLUME nor LIST_VOLUMES, so an unchanged volume can't be observed"));
                }
                let v = ctx.create_volume(&ctx.unique_name("modify-nothing")).await?;
                let before = look_up(&ctx, &v.volume_id).await?;
                let mut params = ctx.config().mutable_parameters.clone();
                params.insert(format!("beyond.csi.example.com/unsupported-{}", ctx.unknown_volume_id()), "1".into());
                let req = ControllerModifyVolumeRequest {
                    volume_id: v.volume_id.clone(),
                    secrets: ctx.secrets(Secret::ControllerModifyVolume),
                    mutable_parameters: params,
                };
                send(&ctx, &req, None).await.code(Code::InvalidArgument, RULE)?;
                let after = look_up(&ctx, &v.volume_id).await?;
                Ok(ensure(after == before, "ControllerGetVolume/ListVolumes", format!("the volume unchanged: {before:?}"), &after, RULE)?)
            }
        ),
    ]
}

#[cfg(test)]
mod tests {
    use super::padded_parameters;
    use std::collections::HashMap;

    #[test]
    fn a_node_is_named_only_as_a_word() {
        assert!(super::names("volume 9d1 is attached to droplet 1.", "1"));
        assert!(super::names("published at node \"node-a\"", "node-a"));
        assert!(!super::names("volume 9d1 is attached elsewhere", "1"));
    }

    #[test]
    fn padding_stays_under_the_map_limit() {
        let p = padded_parameters(&HashMap::new(), 4000);
        let size: usize = p.iter().map(|(k, v)| k.len() + v.len()).sum();
        assert!(size > 3800 && size <= 4000, "{size}");
    }
}
