//! How a CO calls a driver: every call has a deadline, and a call that times out or is
//! told to come back later (ABORTED) is retried with a growing backoff until it settles.
//!
//! [`send`] makes one call of any mutating RPC ([`Rpc`]), optionally under a client
//! deadline (sent as `grpc-timeout` and enforced locally, so the call is really cut
//! off), and keeps the spec's tracker right even when the call was cut off before the
//! driver answered. [`retry`] repeats it the way a CO does, under a [`RetryPolicy`].

use std::fmt::Debug;
use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

use csi_proto::v1::*;
use tonic::{Code, Status};

use crate::check::{describe_status, ensure_call, Call, Stop};
use crate::retry::{Backoff, TRANSIENT};
use crate::tracker::Resource;
use crate::Ctx;

/// The reply a client call resolves to.
pub(crate) type Pending<T> =
    Pin<Box<dyn Future<Output = Result<tonic::Response<T>, Status>> + Send>>;

/// A CSI RPC a CO retries, with what it leaves behind for the tracker.
pub(crate) trait Rpc: prost::Message + Clone + Send + Sync + 'static {
    type Response: Debug + Send + 'static;
    /// The RPC's name, as failures show it.
    const NAME: &'static str;
    /// Make the call.
    fn send(ctx: &Ctx, request: tonic::Request<Self>) -> Pending<Self::Response>;
    /// What the call may set up even when it is cut off before it answers, so it is
    /// tracked before the call (undoing something that was never done is harmless).
    fn may_set_up(&self) -> Option<Resource> {
        None
    }
    /// What a successful answer says was created.
    fn created(&self, _response: &Self::Response) -> Option<Resource> {
        None
    }
    /// What a successful call undid.
    fn undid(&self) -> Option<Resource> {
        None
    }
}

macro_rules! client_call {
    ($client:ident . $method:ident) => {
        fn send(ctx: &Ctx, request: tonic::Request<Self>) -> Pending<Self::Response> {
            let mut client = ctx.$client();
            Box::pin(async move { client.$method(request).await })
        }
    };
}

impl Rpc for CreateVolumeRequest {
    type Response = CreateVolumeResponse;
    const NAME: &'static str = "CreateVolume";
    client_call!(controller.create_volume);
    fn created(&self, r: &CreateVolumeResponse) -> Option<Resource> {
        let id = &r.volume.as_ref()?.volume_id;
        (!id.is_empty()).then(|| Resource::Volume { id: id.clone() })
    }
}

impl Rpc for DeleteVolumeRequest {
    type Response = DeleteVolumeResponse;
    const NAME: &'static str = "DeleteVolume";
    client_call!(controller.delete_volume);
    fn undid(&self) -> Option<Resource> {
        Some(Resource::Volume {
            id: self.volume_id.clone(),
        })
    }
}

impl Rpc for ControllerPublishVolumeRequest {
    type Response = ControllerPublishVolumeResponse;
    const NAME: &'static str = "ControllerPublishVolume";
    client_call!(controller.controller_publish_volume);
    fn may_set_up(&self) -> Option<Resource> {
        Some(Resource::ControllerPublish {
            volume_id: self.volume_id.clone(),
            node_id: self.node_id.clone(),
        })
    }
}

impl Rpc for ControllerUnpublishVolumeRequest {
    type Response = ControllerUnpublishVolumeResponse;
    const NAME: &'static str = "ControllerUnpublishVolume";
    client_call!(controller.controller_unpublish_volume);
    fn undid(&self) -> Option<Resource> {
        Some(Resource::ControllerPublish {
            volume_id: self.volume_id.clone(),
            node_id: self.node_id.clone(),
        })
    }
}

impl Rpc for NodeStageVolumeRequest {
    type Response = NodeStageVolumeResponse;
    const NAME: &'static str = "NodeStageVolume";
    client_call!(node.node_stage_volume);
    fn may_set_up(&self) -> Option<Resource> {
        Some(Resource::NodeStage {
            volume_id: self.volume_id.clone(),
            staging_path: self.staging_target_path.clone(),
        })
    }
}

impl Rpc for NodeUnstageVolumeRequest {
    type Response = NodeUnstageVolumeResponse;
    const NAME: &'static str = "NodeUnstageVolume";
    client_call!(node.node_unstage_volume);
    fn undid(&self) -> Option<Resource> {
        Some(Resource::NodeStage {
            volume_id: self.volume_id.clone(),
            staging_path: self.staging_target_path.clone(),
        })
    }
}

impl Rpc for NodePublishVolumeRequest {
    type Response = NodePublishVolumeResponse;
    const NAME: &'static str = "NodePublishVolume";
    client_call!(node.node_publish_volume);
    fn may_set_up(&self) -> Option<Resource> {
        Some(Resource::NodePublish {
            volume_id: self.volume_id.clone(),
            target_path: self.target_path.clone(),
        })
    }
}

impl Rpc for NodeUnpublishVolumeRequest {
    type Response = NodeUnpublishVolumeResponse;
    const NAME: &'static str = "NodeUnpublishVolume";
    client_call!(node.node_unpublish_volume);
    fn undid(&self) -> Option<Resource> {
        Some(Resource::NodePublish {
            volume_id: self.volume_id.clone(),
            target_path: self.target_path.clone(),
        })
    }
}

impl Rpc for CreateSnapshotRequest {
    type Response = CreateSnapshotResponse;
    const NAME: &'static str = "CreateSnapshot";
    client_call!(controller.create_snapshot);
    fn created(&self, r: &CreateSnapshotResponse) -> Option<Resource> {
        let id = &r.snapshot.as_ref()?.snapshot_id;
        (!id.is_empty()).then(|| Resource::Snapshot { id: id.clone() })
    }
}

impl Rpc for DeleteSnapshotRequest {
    type Response = DeleteSnapshotResponse;
    const NAME: &'static str = "DeleteSnapshot";
    client_call!(controller.delete_snapshot);
    fn undid(&self) -> Option<Resource> {
        Some(Resource::Snapshot {
            id: self.snapshot_id.clone(),
        })
    }
}

impl Rpc for ControllerExpandVolumeRequest {
    type Response = ControllerExpandVolumeResponse;
    const NAME: &'static str = "ControllerExpandVolume";
    client_call!(controller.controller_expand_volume);
}

impl Rpc for NodeExpandVolumeRequest {
    type Response = NodeExpandVolumeResponse;
    const NAME: &'static str = "NodeExpandVolume";
    client_call!(node.node_expand_volume);
}

impl Rpc for ControllerGetVolumeRequest {
    type Response = ControllerGetVolumeResponse;
    const NAME: &'static str = "ControllerGetVolume";
    client_call!(controller.controller_get_volume);
}

impl Rpc for ControllerModifyVolumeRequest {
    type Response = ControllerModifyVolumeResponse;
    const NAME: &'static str = "ControllerModifyVolume";
    client_call!(controller.controller_modify_volume);
}

impl Rpc for ListSnapshotsRequest {
    type Response = ListSnapshotsResponse;
    const NAME: &'static str = "ListSnapshots";
    client_call!(controller.list_snapshots);
}

impl Rpc for GetSnapshotRequest {
    type Response = GetSnapshotResponse;
    const NAME: &'static str = "GetSnapshot";
    client_call!(controller.get_snapshot);
}

impl Rpc for NodeGetVolumeStatsRequest {
    type Response = NodeGetVolumeStatsResponse;
    const NAME: &'static str = "NodeGetVolumeStats";
    client_call!(node.node_get_volume_stats);
}

impl Rpc for NodeGetCapabilitiesRequest {
    type Response = NodeGetCapabilitiesResponse;
    const NAME: &'static str = "NodeGetCapabilities";
    client_call!(node.node_get_capabilities);
}

/// Make one call, under `deadline` when given. A call still running when the deadline
/// passes is abandoned (the client cancels the stream, as a CO's does) and reported
/// as DEADLINE_EXCEEDED. The tracker records what the call may have set up before it
/// is sent, what it created when it answers, and forgets what it undid.
pub(crate) async fn send<R: Rpc>(
    ctx: &Ctx,
    req: &R,
    deadline: Option<Duration>,
) -> Call<R::Response> {
    if let Some(r) = req.may_set_up() {
        ctx.tracker().track(r);
    }
    let mut request = tonic::Request::new(req.clone());
    let started = std::time::Instant::now();
    let result = match (crate::breaker::before(R::NAME), deadline) {
        (Some(refused), _) => Err(refused),
        (None, None) => R::send(ctx, request).await,
        (None, Some(d)) => {
            request.set_timeout(d);
            match tokio::time::timeout(d, R::send(ctx, request)).await {
                Ok(r) => r,
                Err(_) => Err(Status::deadline_exceeded(format!(
                    "cut off by the client's {d:?} deadline"
                ))),
            }
        }
    }
    .map(|r| r.into_inner());
    crate::breaker::after(R::NAME, started, &result);
    if let Ok(resp) = &result {
        if let Some(r) = req.created(resp) {
            ctx.tracker().track(r);
        }
        if let Some(r) = req.undid() {
            ctx.tracker().forget(&r);
        }
    }
    Call::new(R::NAME, req, result)
}

/// How a CO retries one call.
#[derive(Debug, Clone, Copy)]
pub(crate) struct RetryPolicy {
    /// Who retries like this, for failure messages.
    pub who: &'static str,
    /// The deadline of each attempt.
    pub deadline: Duration,
    /// The pauses between attempts, and how long to keep trying before calling the
    /// call stuck.
    pub backoff: Backoff,
    /// The codes that mean "try again" (one of [`crate::retry`]'s sets).
    pub retry_on: &'static [Code],
}

impl RetryPolicy {
    /// A CO with the harness's normal per-call deadline.
    pub fn patient(ctx: &Ctx) -> RetryPolicy {
        RetryPolicy {
            who: "a CO",
            deadline: ctx.config().rpc_timeout,
            backoff: Backoff {
                first: Duration::from_millis(100),
                max: Duration::from_secs(2),
                budget: ctx.config().retry_budget,
            },
            retry_on: TRANSIENT,
        }
    }

    /// A CO whose every call has the short deadline (`short_deadline`): on a slow
    /// cloud, each attempt is cut off until the action in flight finishes.
    pub fn hurried(ctx: &Ctx) -> RetryPolicy {
        let patient = RetryPolicy::patient(ctx);
        RetryPolicy {
            who: "a CO with a short deadline",
            deadline: ctx.config().short_deadline,
            backoff: Backoff {
                max: Duration::from_millis(500),
                ..patient.backoff
            },
            ..patient
        }
    }

    /// The same policy, also retrying on `codes`.
    pub fn retrying(self, codes: &'static [Code]) -> RetryPolicy {
        RetryPolicy {
            retry_on: codes,
            ..self
        }
    }
}

const SETTLE_RULE: &str = "spec \"Timeouts\": a call may time out and be retried; the plugin MUST be idempotent and a retry continues where the first call left off; ABORTED (\"operation pending\") MUST NOT last forever";

/// Call `attempt` (given each attempt's deadline) until it answers with anything but
/// a retryable code, pausing with a doubling backoff. Returns the settled call; fails
/// when it still answers with a retryable code after the policy's budget.
pub(crate) async fn retry<T, F, Fut>(policy: RetryPolicy, mut attempt: F) -> Result<Call<T>, Stop>
where
    T: Debug,
    F: FnMut(Duration) -> Fut,
    Fut: Future<Output = Call<T>>,
{
    let mut pacing = policy.backoff.start();
    let mut attempts = 0u32;
    loop {
        attempts += 1;
        let c = attempt(policy.deadline).await;
        let retryable = match &c.result {
            Ok(_) => false,
            Err(s) => policy.retry_on.contains(&s.code()) && !crate::breaker::was_refused(s),
        };
        if !retryable {
            return Ok(c);
        }
        if !pacing.wait().await {
            let last = match &c.result {
                Err(s) => describe_status(s),
                Ok(_) => "OK".into(),
            };
            return Err(c.failure(
                format!(
                    "the call to settle within {:?}, retried as {} does (deadline {:?} per attempt)",
                    policy.backoff.budget, policy.who, policy.deadline
                ),
                format!("{attempts} attempts over {:?}, the last: {last}", pacing.elapsed()),
                SETTLE_RULE,
            )
            .into());
        }
    }
}

/// Send `req` under `policy` until it settles.
pub(crate) async fn settle<R: Rpc>(
    ctx: &Ctx,
    req: &R,
    policy: RetryPolicy,
) -> Result<Call<R::Response>, Stop> {
    retry(policy, |d| send(ctx, req, Some(d))).await
}

/// The deadlines a CO that gives up early would cut one call off with: a quarter, a
/// half and all of the configured short deadline, so the cut-offs land at different
/// points of the driver's work.
pub(crate) fn cut_off_deadlines(ctx: &Ctx) -> [Duration; 3] {
    let short = ctx.config().short_deadline;
    [short / 4, short / 2, short]
}

/// The retry shape of the "cut off, then retried" specs: send `req` under each of the
/// cut-off deadlines (whatever those calls answer: they stand for calls whose answers
/// the CO never saw), then retry it normally until it settles, which it must with OK.
pub(crate) async fn cut_off_then_settle<R: Rpc>(
    ctx: &Ctx,
    req: &R,
    rule: &str,
) -> Result<R::Response, Stop> {
    for d in cut_off_deadlines(ctx) {
        let _ = send(ctx, req, Some(d)).await;
    }
    settle(ctx, req, RetryPolicy::patient(ctx))
        .await?
        .ok(rule)
        .map_err(|f| {
            f.during(format!(
                "retrying {} after calls cut off by short deadlines",
                R::NAME
            ))
        })
        .map_err(Stop::from)
}

/// Send `req` once more, normally, as a CO that lost the earlier answer would: it must
/// succeed, and its `view` (the fields that must not change) must equal `first`'s.
pub(crate) async fn expect_same_again<R, V>(
    ctx: &Ctx,
    req: &R,
    first: &R::Response,
    view: impl Fn(&R::Response) -> V,
    rule: &str,
) -> Result<R::Response, Stop>
where
    R: Rpc,
    V: PartialEq + Debug,
{
    let c = send(ctx, req, None).await;
    let request = c.request.clone();
    let again = c.ok(rule)?;
    let (want, got) = (view(first), view(&again));
    ensure_call(
        got == want,
        R::NAME,
        &request,
        format!("the same answer as before: {want:?}"),
        &got,
        rule,
    )?;
    Ok(again)
}
