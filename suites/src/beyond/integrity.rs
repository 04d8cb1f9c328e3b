//! Data integrity through the real node path: a pattern written where the volume is
//! published reads back unchanged after restaging, in a volume restored from a
//! snapshot, in a clone, and after expansion (which must also show the new size).

use csi_proto::v1::controller_service_capability::rpc::Type as ControllerRpc;
use csi_proto::v1::node_service_capability::rpc::Type as NodeRpc;
use csi_proto::v1::plugin_capability::volume_expansion::Type as VolumeExpansion;
use csi_proto::v1::volume_content_source::{SnapshotSource, Type as SourceType, VolumeSource};
use csi_proto::v1::{CapacityRange, Volume, VolumeContentSource};
use tonic::Code;

use super::co::{settle, RetryPolicy};
use super::data::{data_reachable, verify_pattern, visible_size, write_pattern, Written};
use super::{
    available_fresh, expand_request, node_expand_request, restage, seed, CREATE_DELETE, EXPAND,
    NODE, SNAPSHOTS,
};
use crate::check::{ensure, Stop};
use crate::{spec, Ctx, Need, Spec};

const GROUP: &str = "Beyond::DataIntegrity";

// Every spec here needs volumes, a node that really mounts, and the harness able to
// read what it publishes (root, paths on this host).

/// A volume with the pattern written through the node, then taken off the node
/// entirely (unpublish, unstage, controller unpublish), so everything is flushed.
async fn written_and_offline(ctx: &Ctx, what: &str) -> Result<(Volume, Written), Stop> {
    data_reachable(ctx)?;
    let v = ctx.create_volume(&ctx.unique_name(what)).await?;
    let a = ctx.make_available(&v).await?;
    let w = write_pattern(ctx, &a.target_path, seed(ctx)).await?;
    ctx.make_unavailable(&a).await?;
    Ok((v, w))
}

/// Create a volume from `source` (at least `min_bytes` big), make it available on
/// fresh paths, and check it holds what was written to the source.
async fn restore_and_verify(
    ctx: &Ctx,
    source: SourceType,
    min_bytes: i64,
    written: &Written,
    rule: &str,
) -> Result<(), Stop> {
    let mut req = ctx.volume_request(&ctx.unique_name("restored"));
    req.capacity_range = Some(CapacityRange {
        required_bytes: ctx.config().volume_size.max(min_bytes),
        limit_bytes: 0,
    });
    req.volume_content_source = Some(VolumeContentSource {
        r#type: Some(source),
    });
    let restored = ctx.create_volume_from(req).await?;
    let a = available_fresh(ctx, &restored).await?;
    verify_pattern(ctx, &a.target_path, written, rule).await
}

/// Expand a published volume the way the driver says it can: ControllerExpand (taking
/// the volume off the node first when the plugin expands only offline), then
/// NodeExpand when the node asks for it. When NodeExpand answers FAILED_PRECONDITION
/// (the filesystem can't grow online here), unpublish, unstage, stage and publish
/// again: staging grows the filesystem offline.
async fn expand_published(
    ctx: &Ctx,
    a: &crate::Available,
    bytes: i64,
    rule: &str,
) -> Result<(), Stop> {
    let online = ctx.caps().expansion.contains(&VolumeExpansion::Online);
    if !online {
        ctx.make_unavailable(a).await?;
    }
    let resp = settle(
        ctx,
        &expand_request(ctx, &a.volume.volume_id, bytes),
        RetryPolicy::patient(ctx),
    )
    .await?
    .ok(rule)?;
    if !online {
        // make_available reuses this spec's paths, which are a's.
        ctx.make_available(&a.volume).await?;
    }
    if !resp.node_expansion_required || !ctx.caps().node_has(NodeRpc::ExpandVolume) {
        return Ok(());
    }
    let c = settle(
        ctx,
        &node_expand_request(ctx, a, bytes),
        RetryPolicy::patient(ctx),
    )
    .await?;
    match c.ok_or_code_in(&[Code::FailedPrecondition], rule)? {
        Some(_) => Ok(()),
        None => restage(ctx, a).await.map_err(|f| {
            f.during("growing offline: NodeExpandVolume answered FAILED_PRECONDITION, so restaging")
        }),
    }
}

pub fn specs() -> Vec<Spec> {
    vec![
        spec!(
            GROUP,
            "data written through a published volume reads back after it is taken off the node and made available again",
            "spec: a volume's data persists across NodeUnpublish, NodeUnstage, ControllerUnpublish and the calls that make it available again — they change where the volume is, not what it holds",
            [CREATE_DELETE, NODE, Need::Mounts, Need::Root],
            |ctx: Ctx| async move {
                const RULE: &str = "data written at the target path reads back, byte for byte, after unpublish, unstage, detach, attach, stage and publish";
                let (v, w) = written_and_offline(&ctx, "persist").await?;
                let a = ctx.make_available(&v).await?;
                verify_pattern(&ctx, &a.target_path, &w, RULE).await
            }
        ),
        spec!(
            GROUP,
            "a volume restored from a snapshot holds the data its source held when the snapshot was taken",
            "spec CreateVolume with a snapshot volume_content_source: the new volume is pre-populated with the snapshot's content",
            [CREATE_DELETE, NODE, Need::Mounts, Need::Root, SNAPSHOTS],
            |ctx: Ctx| async move {
                const RULE: &str = "a volume created from a snapshot holds, byte for byte, what its source held when the snapshot was cut";
                let (v, w) = written_and_offline(&ctx, "snapshot-source").await?;
                let s = ctx.create_ready_snapshot(&ctx.unique_name("integrity"), &v.volume_id).await?;
                let size = s.size_bytes;
                restore_and_verify(&ctx, SourceType::Snapshot(SnapshotSource { snapshot_id: s.snapshot_id }), size, &w, RULE).await
            }
        ),
        spec!(
            GROUP,
            "a clone holds the data of its source volume",
            "spec CreateVolume with a volume volume_content_source (CLONE_VOLUME): the new volume is pre-populated with the source volume's content",
            [CREATE_DELETE, NODE, Need::Mounts, Need::Root, Need::ControllerCap(ControllerRpc::CloneVolume)],
            |ctx: Ctx| async move {
                const RULE: &str = "a cloned volume holds, byte for byte, what its source held";
                let (v, w) = written_and_offline(&ctx, "clone-source").await?;
                let size = v.capacity_bytes;
                restore_and_verify(&ctx, SourceType::Volume(VolumeSource { volume_id: v.volume_id }), size, &w, RULE).await
            }
        ),
        spec!(
            GROUP,
            "an expanded volume shows its new size where it is published and keeps its data",
            "spec ControllerExpandVolume / NodeExpandVolume: after expansion the volume (and its filesystem) has the new capacity; a \"filesystem can't grow in this state\" answer is 9 FAILED_PRECONDITION, after which growth happens offline",
            [CREATE_DELETE, NODE, Need::Mounts, Need::Root, EXPAND],
            |ctx: Ctx| async move {
                const RULE: &str = "after ControllerExpandVolume (and NodeExpandVolume, or offline growth at NodeStageVolume), the published volume shows the new size and its data is intact";
                data_reachable(&ctx)?;
                let v = ctx.create_volume(&ctx.unique_name("grow")).await?;
                let a = ctx.make_available(&v).await?;
                let w = write_pattern(&ctx, &a.target_path, seed(&ctx)).await?;
                let before = visible_size(&ctx, &a.target_path).await?;
                let bytes = ctx.config().expand_to();
                expand_published(&ctx, &a, bytes, RULE).await?;
                let after = visible_size(&ctx, &a.target_path).await?;
                // A filesystem keeps some of the device for itself; a block volume shows all of it.
                let grown_by = (bytes - v.capacity_bytes.max(0)).max(0) as u64;
                let want = if ctx.config().is_block() { bytes as u64 } else { before + grown_by * 8 / 10 };
                if !ctx.config().is_block() && !crate::node::own_filesystem(before as i64, bytes) {
                    // A directory on a shared filesystem (hostpath's kind of volume): the
                    // size statvfs shows is the host's, and no rule says it must change.
                    verify_pattern(&ctx, &a.target_path, &w, RULE).await?;
                    return Err(Stop::skip(format!(
                        "the size check does not apply: the filesystem at the target has {before} bytes, far above the volume's {bytes}, so it is not the volume's own (the data check passed)"
                    )));
                }
                ensure(after >= want, "statvfs/size at the target", format!("at least {want} bytes (was {before}, expanded to {bytes})"), after, RULE)?;
                verify_pattern(&ctx, &a.target_path, &w, RULE).await
            }
        ),
    ]
}
