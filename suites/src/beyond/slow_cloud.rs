//! Slow clouds: a CO whose every call has a deadline shorter than the cloud's attach,
//! detach or resize. Each attempt is cut off while the cloud's action is in flight; the
//! retries must resume that action (not fail with "already in progress" forever, not
//! start a second one) and answer OK once it finishes.
//!
//! The deadline is `--csi.shortdeadline`. Against a driver whose cloud is fast these
//! specs simply see calls that finish in time; the bundled driver's fake cloud can be
//! slowed with `--attach-latency`, `--detach-latency` and `--resize-latency`.

use super::co::{expect_same_again, settle, RetryPolicy};
use super::observe::{
    expect_published_to, look_up, reports_published_nodes, reports_volumes, VolumeCensus,
};
use super::{controller_unpublish_request, expand_request, CREATE_DELETE, EXPAND, NODE, PUBLISH};
use crate::check::ensure;
use crate::{spec, Ctx, Spec};

const GROUP: &str = "Beyond::SlowCloud";

const RULE: &str = "spec \"Timeouts\": a call that times out is retried, and the retry MUST continue the operation already in flight (ABORTED while it runs is allowed, forever is not); the final answer is OK with one operation done";

pub fn specs() -> Vec<Spec> {
    vec![
        spec!(
            GROUP,
            "ControllerPublishVolume retried under a deadline shorter than the attach completes the attach in flight, once",
            RULE,
            [CREATE_DELETE, PUBLISH, NODE],
            |ctx: Ctx| async move {
                let v = ctx.create_volume(&ctx.unique_name("slow-attach")).await?;
                let node = ctx.node_id().await?;
                let req = ctx.controller_publish_request(&v, &node);
                let first = settle(&ctx, &req, RetryPolicy::hurried(&ctx)).await?.ok(RULE)?;
                expect_same_again(&ctx, &req, &first, |r| r.publish_context.clone(), RULE).await?;
                if reports_published_nodes(&ctx) {
                    expect_published_to(&ctx, &v.volume_id, &[&node], RULE).await?;
                }
                Ok(())
            }
        ),
        spec!(
            GROUP,
            "ControllerUnpublishVolume retried under a deadline shorter than the detach completes the detach in flight",
            RULE,
            [CREATE_DELETE, PUBLISH, NODE],
            |ctx: Ctx| async move {
                let v = ctx.create_volume(&ctx.unique_name("slow-detach")).await?;
                let node = ctx.node_id().await?;
                ctx.controller_publish(&v, &node).await?;
                settle(&ctx, &controller_unpublish_request(&ctx, &v.volume_id, &node), RetryPolicy::hurried(&ctx))
                    .await?
                    .ok(RULE)?;
                if reports_published_nodes(&ctx) {
                    expect_published_to(&ctx, &v.volume_id, &[], RULE).await?;
                }
                Ok(())
            }
        ),
        spec!(
            GROUP,
            "ControllerExpandVolume retried under a deadline shorter than the resize completes the resize in flight, once",
            RULE,
            [CREATE_DELETE, EXPAND],
            |ctx: Ctx| async move {
                let v = ctx.create_volume(&ctx.unique_name("slow-resize")).await?;
                let size = ctx.config().expand_to();
                let req = expand_request(&ctx, &v.volume_id, size);
                let resp = settle(&ctx, &req, RetryPolicy::hurried(&ctx)).await?.ok(RULE)?;
                ensure(resp.capacity_bytes >= size, "ControllerExpandVolume", format!("capacity_bytes >= {size}"), resp.capacity_bytes, RULE)?;
                if reports_volumes(&ctx) {
                    let seen = look_up(&ctx, &v.volume_id).await?.map(|s| s.volume.capacity_bytes);
                    ensure(seen == Some(resp.capacity_bytes), "ControllerGetVolume/ListVolumes",
                        format!("the volume's capacity_bytes {}", resp.capacity_bytes), seen, RULE)?;
                }
                Ok(())
            }
        ),
        spec!(
            GROUP,
            "CreateVolume retried under a short deadline ends with exactly one volume",
            RULE,
            [CREATE_DELETE],
            |ctx: Ctx| async move {
                let census = VolumeCensus::take(&ctx).await?;
                let req = ctx.volume_request(&ctx.unique_name("slow-create"));
                let resp = settle(&ctx, &req, RetryPolicy::hurried(&ctx)).await?.ok(RULE)?;
                let id = resp.volume.map(|v| v.volume_id).unwrap_or_default();
                census.expect_only(&ctx, &[id], RULE).await
            }
        ),
    ]
}
