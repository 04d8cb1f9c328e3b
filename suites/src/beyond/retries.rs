//! Idempotency as a CO retries: each mutating call is first cut off by short client
//! deadlines (the CO never sees those answers), then retried normally until it
//! settles. The outcome must be as if the call ran once.

use super::co::{cut_off_then_settle, expect_same_again};
use super::observe::{
    expect_at_most_one_mount, expect_attached_once, expect_expanded,
    expect_published_to_where_reported, mounts_at, reports_volumes, snapshots_of, VolumeCensus,
};
use super::{
    attach_if_advertised, controller_unpublish_request, delete_snapshot_request,
    delete_volume_request, expand_request, node_unpublish_request, node_unstage_request,
    stage_fresh, CREATE_DELETE, EXPAND, NODE, PUBLISH, SNAPSHOTS, STAGE,
};
use crate::check::{ensure, Stop};
use crate::{spec, Ctx, Need, Spec};

const GROUP: &str = "Beyond::Retries";

/// The spec's rule on timeouts, which every spec of this group enforces.
const RULE: &str = "spec \"Timeouts\": calls may time out and be retried; the plugin MUST be idempotent, so a retried call has the effect of one call and continues where the cut-off one left off";

/// Nothing may stay mounted at `path` after an undo, when the mount was visible here
/// before it.
fn expect_unmounted(path: &str, was_visible: bool, rpc: &str) -> Result<(), Stop> {
    let now = mounts_at(path).unwrap_or(0);
    Ok(ensure(
        !was_visible || now == 0,
        rpc,
        format!("nothing mounted at {path} any more"),
        format!("{now} mounts there (/proc/self/mountinfo)"),
        RULE,
    )?)
}

pub fn specs() -> Vec<Spec> {
    vec![
        spec!(
            GROUP,
            "CreateVolume cut off by short deadlines and retried creates exactly one volume",
            RULE,
            [CREATE_DELETE],
            |ctx: Ctx| async move {
                let census = VolumeCensus::take(&ctx).await?;
                let req = ctx.volume_request(&ctx.unique_name("cut-create"));
                let first = cut_off_then_settle(&ctx, &req, RULE).await?;
                expect_same_again(&ctx, &req, &first, |r| r.volume.clone(), RULE).await?;
                let id = first.volume.map(|v| v.volume_id).unwrap_or_default();
                census.expect_only(&ctx, &[id], RULE).await
            }
        ),
        spec!(
            GROUP,
            "DeleteVolume cut off by short deadlines and retried leaves the volume gone",
            RULE,
            [CREATE_DELETE],
            |ctx: Ctx| async move {
                let v = ctx.create_volume(&ctx.unique_name("cut-delete")).await?;
                cut_off_then_settle(&ctx, &delete_volume_request(&ctx, &v.volume_id), RULE).await?;
                if reports_volumes(&ctx) {
                    super::observe::expect_gone(&ctx, &v.volume_id, RULE).await?;
                }
                Ok(())
            }
        ),
        spec!(
            GROUP,
            "ControllerPublishVolume cut off by short deadlines and retried attaches the volume once, to the node",
            RULE,
            [CREATE_DELETE, PUBLISH, NODE],
            |ctx: Ctx| async move {
                let v = ctx.create_volume(&ctx.unique_name("cut-publish")).await?;
                let node = ctx.node_id().await?;
                let req = ctx.controller_publish_request(&v, &node);
                let first = cut_off_then_settle(&ctx, &req, RULE).await?;
                expect_attached_once(&ctx, &req, &first, RULE).await
            }
        ),
        spec!(
            GROUP,
            "ControllerUnpublishVolume cut off by short deadlines and retried leaves the volume detached and publishable again",
            RULE,
            [CREATE_DELETE, PUBLISH, NODE],
            |ctx: Ctx| async move {
                let v = ctx.create_volume(&ctx.unique_name("cut-unpublish")).await?;
                let node = ctx.node_id().await?;
                ctx.controller_publish(&v, &node).await?;
                cut_off_then_settle(&ctx, &controller_unpublish_request(&ctx, &v.volume_id, &node), RULE).await?;
                expect_published_to_where_reported(&ctx, &v.volume_id, &[], RULE).await?;
                ctx.controller_publish(&v, &node)
                    .await
                    .map_err(|f| f.during("publishing again after the retried unpublish"))?;
                Ok(())
            }
        ),
        spec!(
            GROUP,
            "NodeStageVolume cut off by short deadlines and retried stages the volume once, ready to publish",
            RULE,
            [CREATE_DELETE, NODE, STAGE, Need::Mounts],
            |ctx: Ctx| async move {
                let v = ctx.create_volume(&ctx.unique_name("cut-stage")).await?;
                let publish_context = attach_if_advertised(&ctx, &v).await?;
                let staging = ctx.staging_path().await?;
                cut_off_then_settle(&ctx, &ctx.node_stage_request(&v, &staging, &publish_context), RULE).await?;
                expect_at_most_one_mount(&staging, "NodeStageVolume", RULE)?;
                ctx.node_publish(&v, Some(&staging), &publish_context)
                    .await
                    .map_err(|f| f.during("publishing the volume the retried stage staged"))?;
                Ok(())
            }
        ),
        spec!(
            GROUP,
            "NodeUnstageVolume cut off by short deadlines and retried leaves nothing mounted at the staging path",
            RULE,
            [CREATE_DELETE, NODE, STAGE, Need::Mounts],
            |ctx: Ctx| async move {
                let v = ctx.create_volume(&ctx.unique_name("cut-unstage")).await?;
                let s = stage_fresh(&ctx, &v).await?;
                let staging = s.staging_path.unwrap_or_default();
                let visible = mounts_at(&staging).unwrap_or(0) > 0;
                cut_off_then_settle(&ctx, &node_unstage_request(&v.volume_id, &staging), RULE).await?;
                expect_unmounted(&staging, visible, "NodeUnstageVolume")
            }
        ),
        spec!(
            GROUP,
            "NodePublishVolume cut off by short deadlines and retried publishes the volume once at the target",
            RULE,
            [CREATE_DELETE, NODE, Need::Mounts],
            |ctx: Ctx| async move {
                let v = ctx.create_volume(&ctx.unique_name("cut-node-publish")).await?;
                let s = stage_fresh(&ctx, &v).await?;
                let target = ctx.target_path().await?;
                let req = ctx.node_publish_request(&v, s.staging_path.as_deref(), &target, &s.publish_context);
                cut_off_then_settle(&ctx, &req, RULE).await?;
                expect_at_most_one_mount(&target, "NodePublishVolume", RULE)
            }
        ),
        spec!(
            GROUP,
            "NodeUnpublishVolume cut off by short deadlines and retried leaves nothing mounted at the target",
            RULE,
            [CREATE_DELETE, NODE, Need::Mounts],
            |ctx: Ctx| async move {
                let v = ctx.create_volume(&ctx.unique_name("cut-node-unpublish")).await?;
                let a = ctx.make_available(&v).await?;
                let visible = mounts_at(&a.target_path).unwrap_or(0) > 0;
                cut_off_then_settle(&ctx, &node_unpublish_request(&v.volume_id, &a.target_path), RULE).await?;
                expect_unmounted(&a.target_path, visible, "NodeUnpublishVolume")
            }
        ),
        spec!(
            GROUP,
            "CreateSnapshot cut off by short deadlines and retried creates exactly one snapshot of the source",
            RULE,
            [CREATE_DELETE, SNAPSHOTS],
            |ctx: Ctx| async move {
                let v = ctx.create_volume(&ctx.unique_name("cut-snapshot-source")).await?;
                let req = ctx.snapshot_request(&ctx.unique_name("cut-snapshot"), &v.volume_id);
                let first = cut_off_then_settle(&ctx, &req, RULE).await?;
                let id = first.snapshot.map(|s| s.snapshot_id).unwrap_or_default();
                let all = snapshots_of(&ctx, &v.volume_id).await?;
                let ids: Vec<&str> = all.iter().map(|s| s.snapshot_id.as_str()).collect();
                Ok(ensure(ids == [id.as_str()], "ListSnapshots", format!("exactly one snapshot of {}: {id}", v.volume_id), &ids, RULE)?)
            }
        ),
        spec!(
            GROUP,
            "DeleteSnapshot cut off by short deadlines and retried leaves the snapshot gone",
            RULE,
            [CREATE_DELETE, SNAPSHOTS],
            |ctx: Ctx| async move {
                let v = ctx.create_volume(&ctx.unique_name("cut-delete-snapshot-source")).await?;
                let s = ctx.create_snapshot(&ctx.unique_name("cut-delete-snapshot"), &v.volume_id).await?;
                cut_off_then_settle(&ctx, &delete_snapshot_request(&ctx, &s.snapshot_id), RULE).await?;
                let found = ctx.find_snapshot(&s.snapshot_id).await?;
                Ok(ensure(found.is_none(), "GetSnapshot/ListSnapshots", "the snapshot gone", &found, RULE)?)
            }
        ),
        spec!(
            GROUP,
            "ControllerExpandVolume cut off by short deadlines and retried expands the volume once, to the requested size",
            RULE,
            [CREATE_DELETE, EXPAND],
            |ctx: Ctx| async move {
                let v = ctx.create_volume(&ctx.unique_name("cut-expand")).await?;
                let size = ctx.config().expand_to();
                let req = expand_request(&ctx, &v.volume_id, size);
                let first = cut_off_then_settle(&ctx, &req, RULE).await?;
                expect_expanded(&ctx, &v.volume_id, size, first.capacity_bytes, RULE).await?;
                expect_same_again(&ctx, &req, &first, |r| r.capacity_bytes, RULE).await?;
                Ok(())
            }
        ),
    ]
}
