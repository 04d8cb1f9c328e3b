//! Every mutating call repeated N times (`--csi.idempotentcount`) answers the same,
//! field by field, and leaves the effect of one call.

use std::fmt::Debug;

use csi_proto::v1::controller_service_capability::rpc::Type as ControllerRpc;
use csi_proto::v1::ControllerModifyVolumeRequest;

use super::co::{expect_same_again, send, Rpc};
use super::observe::expect_at_most_one_mount;
use super::{expand_request, stage_fresh, CREATE_DELETE, EXPAND, NODE, SNAPSHOTS};
use crate::check::Stop;
use crate::secrets::Secret;
use crate::{spec, Ctx, Need, Spec};

const GROUP: &str = "Beyond::Repeats";

const RULE: &str = "spec: all RPCs are idempotent — the same call with the same arguments, repeated, MUST succeed and answer as the first did";

/// Send `req` `--csi.idempotentcount` times; every answer must succeed and have the
/// same `view` (the fields that must not change) as the first. Returns the first.
async fn repeat_same<R, V>(
    ctx: &Ctx,
    req: &R,
    view: impl Fn(&R::Response) -> V,
) -> Result<R::Response, Stop>
where
    R: Rpc,
    V: PartialEq + Debug,
{
    let n = ctx.config().idempotent_count.max(2);
    let first = send(ctx, req, None).await.ok(RULE)?;
    for i in 2..=n {
        expect_same_again(ctx, req, &first, &view, RULE)
            .await
            .map_err(|f| f.during(format!("{} call {i} of {n}", R::NAME)))?;
    }
    Ok(first)
}

pub fn specs() -> Vec<Spec> {
    vec![
        spec!(
            GROUP,
            "CreateVolume repeated N times answers with the same Volume every time, field by field",
            RULE,
            [CREATE_DELETE, Need::IdempotentRepeats],
            |ctx: Ctx| async move {
                let req = ctx.volume_request(&ctx.unique_name("repeat-create"));
                repeat_same(&ctx, &req, |r| r.volume.clone()).await?;
                Ok(())
            }
        ),
        spec!(
            GROUP,
            "CreateSnapshot repeated N times answers with the same snapshot id, source, size and creation time",
            RULE,
            [CREATE_DELETE, SNAPSHOTS, Need::IdempotentRepeats],
            |ctx: Ctx| async move {
                let v = ctx.create_volume(&ctx.unique_name("repeat-snapshot-source")).await?;
                let req = ctx.snapshot_request(&ctx.unique_name("repeat-snapshot"), &v.volume_id);
                // ready_to_use may turn true between calls; everything else is fixed.
                repeat_same(&ctx, &req, |r| {
                    r.snapshot.as_ref().map(|s| (s.snapshot_id.clone(), s.source_volume_id.clone(), s.size_bytes, s.creation_time, s.group_snapshot_id.clone()))
                })
                .await?;
                Ok(())
            }
        ),
        spec!(
            GROUP,
            "ControllerExpandVolume repeated N times answers with the same capacity and node_expansion_required",
            RULE,
            [CREATE_DELETE, EXPAND, Need::IdempotentRepeats],
            |ctx: Ctx| async move {
                let v = ctx.create_volume(&ctx.unique_name("repeat-expand")).await?;
                let req = expand_request(&ctx, &v.volume_id, ctx.config().expand_to());
                repeat_same(&ctx, &req, |r| (r.capacity_bytes, r.node_expansion_required)).await?;
                Ok(())
            }
        ),
        spec!(
            GROUP,
            "NodeStageVolume and NodePublishVolume repeated N times leave one mount each",
            RULE,
            [CREATE_DELETE, NODE, Need::Mounts, Need::IdempotentRepeats],
            |ctx: Ctx| async move {
                let v = ctx.create_volume(&ctx.unique_name("repeat-node")).await?;
                let s = stage_fresh(&ctx, &v).await?;
                if let Some(staging) = &s.staging_path {
                    repeat_same(&ctx, &ctx.node_stage_request(&v, staging, &s.publish_context), |_| ()).await?;
                    expect_at_most_one_mount(staging, "NodeStageVolume", RULE)?;
                }
                let target = ctx.target_path().await?;
                let req = ctx.node_publish_request(&v, s.staging_path.as_deref(), &target, &s.publish_context);
                repeat_same(&ctx, &req, |_| ()).await?;
                expect_at_most_one_mount(&target, "NodePublishVolume", RULE)
            }
        ),
        spec!(
            GROUP,
            "ControllerModifyVolume repeated N times succeeds every time",
            RULE,
            [CREATE_DELETE, Need::ControllerCap(ControllerRpc::ModifyVolume), Need::MutableParameters, Need::IdempotentRepeats],
            |ctx: Ctx| async move {
                let v = ctx.create_volume(&ctx.unique_name("repeat-modify")).await?;
                let req = ControllerModifyVolumeRequest {
                    volume_id: v.volume_id.clone(),
                    secrets: ctx.secrets(Secret::ControllerModifyVolume),
                    mutable_parameters: ctx.config().mutable_parameters.clone(),
                };
                repeat_same(&ctx, &req, |_| ()).await?;
                Ok(())
            }
        ),
    ]
}
