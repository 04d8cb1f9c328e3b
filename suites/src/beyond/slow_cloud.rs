//! Slow clouds: a CO whose every call has a deadline shorter than the cloud's attach,
//! detach or resize. Each attempt is cut off while the cloud's action is in flight; the
//! retries must resume that action (not fail with "already in progress" forever, not
//! start a second one) and answer OK once it finishes.
//!
//! The deadline is `--csi.shortdeadline`. Against a driver whose cloud is fast these
//! specs simply see calls that finish in time; the bundled driver's fake cloud can be
//! slowed with `--attach-latency`, `--detach-latency` and `--resize-latency`.

use super::co::{settle, RetryPolicy, Rpc};
use super::observe::{
    expect_attached_once, expect_expanded, expect_published_to_where_reported, VolumeCensus,
};
use super::{controller_unpublish_request, expand_request, CREATE_DELETE, EXPAND, NODE, PUBLISH};
use crate::check::Stop;
use crate::{spec, Ctx, Spec};

const GROUP: &str = "Beyond::SlowCloud";

const RULE: &str = "spec \"Timeouts\": a call that times out is retried, and the retry MUST continue the operation already in flight (ABORTED while it runs is allowed, forever is not); the final answer is OK with one operation done";

/// Send `req` as a CO whose every call has the short deadline does, until it
/// settles; it must settle with OK.
async fn settle_hurried<R: Rpc>(ctx: &Ctx, req: &R) -> Result<R::Response, Stop> {
    Ok(settle(ctx, req, RetryPolicy::hurried(ctx))
        .await?
        .ok(RULE)?)
}

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
                let first = settle_hurried(&ctx, &req).await?;
                expect_attached_once(&ctx, &req, &first, RULE).await
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
                settle_hurried(&ctx, &controller_unpublish_request(&ctx, &v.volume_id, &node)).await?;
                expect_published_to_where_reported(&ctx, &v.volume_id, &[], RULE).await
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
                let resp = settle_hurried(&ctx, &req).await?;
                expect_expanded(&ctx, &v.volume_id, size, resp.capacity_bytes, RULE).await
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
                let resp = settle_hurried(&ctx, &req).await?;
                let id = resp.volume.map(|v| v.volume_id).unwrap_or_default();
                census.expect_only(&ctx, &[id], RULE).await
            }
        ),
    ]
}
