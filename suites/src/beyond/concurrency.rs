//! Concurrency: a CO calls in parallel — the same name from two workers after a
//! restart, many volumes to one node, many pods at once. The driver may answer
//! ABORTED while it works on the same volume, but must never mix volumes up.

use csi_proto::v1::ControllerPublishVolumeResponse;
use futures::future::join_all;
use tonic::Code;

use super::co::{expect_same_again, send, settle, RetryPolicy};
use super::data::{data_reachable, verify_pattern, write_pattern};
use super::observe::{expect_published_to_where_reported, volumes_published_to, VolumeCensus};
use super::{available_fresh, seed, CREATE_DELETE, NODE, PUBLISH};
use crate::check::{ensure, Stop};
use crate::retry::NOT_FINAL;
use crate::{spec, Ctx, Need, Spec};

const GROUP: &str = "Beyond::Concurrency";

/// How many calls the same-name spec sends at once.
const SAME_NAME_CALLS: usize = 8;

/// How many volumes the one-node specs use: up to 4, and at most half the node's
/// limit, since other specs may be attaching volumes to the node at the same time.
async fn volumes_for_one_node(ctx: &Ctx) -> Result<usize, Stop> {
    let max = ctx.node_info().await?.max_volumes_per_node;
    Ok(if max > 0 {
        (max as usize / 2).clamp(1, 4)
    } else {
        4
    })
}

/// Retried as a CO retries, and also on RESOURCE_EXHAUSTED (what the sidecars do):
/// another spec may hold some of the node's slots for a moment.
fn publish_policy(ctx: &Ctx) -> RetryPolicy {
    RetryPolicy::patient(ctx).retrying(NOT_FINAL)
}

pub fn specs() -> Vec<Spec> {
    vec![
        spec!(
            GROUP,
            "parallel CreateVolume calls with one name create exactly one volume, each answering OK or ABORTED",
            "spec CreateVolume: idempotent by name — \"if a volume corresponding to the specified volume name already exists ... the plugin MUST reply 0 OK\"; a pending operation on it → 10 ABORTED",
            [CREATE_DELETE],
            |ctx: Ctx| async move {
                const RULE: &str = "CreateVolume: concurrent calls with one name → each OK (with the one volume) or ABORTED; one volume exists afterwards";
                let census = VolumeCensus::take(&ctx).await?;
                let req = ctx.volume_request(&ctx.unique_name("same-name"));
                let calls = join_all((0..SAME_NAME_CALLS).map(|_| send(&ctx, &req, None))).await;
                let mut ids = Vec::new();
                for c in calls {
                    let resp = match c.ok_or_code_in(&[Code::Aborted], RULE)? {
                        Some(resp) => resp,
                        None => settle(&ctx, &req, RetryPolicy::patient(&ctx)).await?.ok(RULE)?,
                    };
                    ids.push(resp.volume.map(|v| v.volume_id).unwrap_or_default());
                }
                ensure(ids.iter().all(|id| *id == ids[0]), "CreateVolume", "every call to answer with the same volume id", &ids, RULE)?;
                census.expect_only(&ctx, &ids[..1], RULE).await
            }
        ),
        spec!(
            GROUP,
            "parallel ControllerPublishVolume calls of distinct volumes to one node attach every volume, within the node's limit",
            "spec ControllerPublishVolume: publishing distinct volumes is independent; NodeGetInfo max_volumes_per_node is the most a node takes (more → 8 RESOURCE_EXHAUSTED)",
            [CREATE_DELETE, PUBLISH, NODE],
            |ctx: Ctx| async move {
                const RULE: &str = "ControllerPublishVolume: parallel publishes of distinct volumes to one node all succeed (retrying ABORTED), and the node never holds more than max_volumes_per_node";
                let info = ctx.node_info().await?;
                let k = volumes_for_one_node(&ctx).await?;
                // Every call runs to its end even when one fails: a create cut off in
                // flight would leave a volume nobody recorded, so nobody deletes.
                let volumes = join_all((0..k).map(|i| {
                    let ctx = ctx.clone();
                    async move { ctx.create_volume(&ctx.unique_name(&format!("one-node-{i}"))).await }
                }))
                .await
                .into_iter()
                .collect::<Result<Vec<_>, _>>()?;
                let policy = publish_policy(&ctx);
                let settled = join_all(volumes.iter().map(|v| {
                    let req = ctx.controller_publish_request(v, &info.node_id);
                    let ctx = ctx.clone();
                    async move { settle(&ctx, &req, policy).await }
                }))
                .await;
                for c in settled {
                    c?.ok(RULE)?;
                }
                for v in &volumes {
                    expect_published_to_where_reported(&ctx, &v.volume_id, &[&info.node_id], RULE).await?;
                }
                if let (Some(count), true) = (volumes_published_to(&ctx, &info.node_id).await?, info.max_volumes_per_node > 0) {
                    ensure(count as i64 <= info.max_volumes_per_node, "ListVolumes",
                        format!("at most {} volumes published to node {}", info.max_volumes_per_node, info.node_id), count, RULE)?;
                }
                Ok(())
            }
        ),
        spec!(
            GROUP,
            "parallel lifecycles of distinct volumes keep each volume's publish_context and data to itself",
            "spec: each RPC acts on the volume it names — a volume's publish_context is for that volume, and what is published at a target_path is that volume",
            [CREATE_DELETE, NODE, Need::Mounts],
            |ctx: Ctx| async move {
                const RULE: &str = "parallel lifecycles: each volume keeps its own publish_context (a later publish of it answers the same) and its own data";
                let k = volumes_for_one_node(&ctx).await?;
                let with_data = data_reachable(&ctx).is_ok();
                let base_seed = seed(&ctx);
                // join_all, not try_join_all: a failing lifecycle must not cut off the
                // others mid-create, leaving volumes nobody recorded.
                let lives = join_all((0..k).map(|i| {
                    let ctx = ctx.clone();
                    async move {
                        let v = ctx.create_volume(&ctx.unique_name(&format!("parallel-{i}"))).await?;
                        let a = available_fresh(&ctx, &v).await?;
                        let written = if with_data {
                            Some(write_pattern(&ctx, &a.target_path, base_seed.wrapping_add(i as u64)).await?)
                        } else {
                            None
                        };
                        Ok::<_, Stop>((a, written))
                    }
                }))
                .await
                .into_iter()
                .collect::<Result<Vec<_>, _>>()?;
                for (a, written) in &lives {
                    if let Some(w) = written {
                        verify_pattern(&ctx, &a.target_path, w, RULE).await?;
                    }
                    if super::attaches(&ctx) {
                        let req = ctx.controller_publish_request(&a.volume, &a.node_id);
                        let first = ControllerPublishVolumeResponse { publish_context: a.publish_context.clone() };
                        expect_same_again(&ctx, &req, &first, |r| r.publish_context.clone(), RULE).await?;
                    }
                }
                let undone = join_all(lives.iter().map(|(a, _)| ctx.make_unavailable(a))).await;
                for u in undone {
                    u.map_err(|f| f.during("taking the volumes off the node in parallel"))?;
                }
                Ok(())
            }
        ),
    ]
}
