//! For the self-test of the specs beyond csi-sanity: faults that depend on timing,
//! cancellation, concurrency and mounts, which the shared proxy in `common` (one
//! corrupted response per fault) has no machinery for.
//!
//! [`FaultProxy`] forwards every call to the driver through one generic path
//! ([`FaultProxy::call`]) that knows, per RPC and volume (or name), which calls are in
//! flight and which were cut off by the client before they answered. A fault acts
//! before a call is forwarded ([`FaultProxy::before`]) or on its answer
//! ([`FaultProxy::after`]).

#![allow(dead_code)]

use std::any::Any;
use std::collections::{HashMap, HashSet};
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use csi_proto::v1::controller_client::ControllerClient;
use csi_proto::v1::controller_server::Controller;
use csi_proto::v1::identity_client::IdentityClient;
use csi_proto::v1::identity_server::Identity;
use csi_proto::v1::node_client::NodeClient;
use csi_proto::v1::node_server::Node;
use csi_proto::v1::*;
use tonic::transport::Channel;
use tonic::{Code, Request, Response, Status};

/// One way a driver can break a rule that only the beyond specs check.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BeyondFault {
    None,
    // ---- the error table ----
    /// DeleteVolume of a published volume answers OK (the driver's FAILED_PRECONDITION is swallowed).
    DeleteInUseSucceeds,
    /// ControllerPublishVolume to a second node answers OK while the volume is attached elsewhere.
    PublishElsewhereSucceeds,
    /// NodeStageVolume at a staged path with another capability answers OK.
    StageIgnoresMismatch,
    /// NodePublishVolume at a published target with other arguments answers OK.
    NodePublishIgnoresMismatch,
    /// NodeUnstageVolume of a volume that is not staged answers NOT_FOUND.
    UnstageUnstagedNotFound,
    /// ControllerUnpublishVolume of a volume that is not attached answers NOT_FOUND.
    UnpublishUnattachedNotFound,
    /// CreateVolume with a name over 128 bytes answers INTERNAL.
    LongNameInternal,
    /// CreateVolume and CreateSnapshot with big parameter maps answer UNKNOWN.
    BigMapsUnknown,
    /// NodeStageVolume and NodePublishVolume refuse paths of 120 bytes and more.
    LongPathsRejected,
    /// ListSnapshots with a bad starting_token answers OK, with nothing.
    ListSnapshotsBadTokenOk,
    /// ControllerGetVolume of a missing volume answers INTERNAL.
    GetVolumeNotFoundInternal,
    /// GetSnapshot of a deleted snapshot still finds it.
    GetSnapshotDeletedOk,
    /// CreateVolume from a snapshot ignores the capacity range.
    RestoreIgnoresCapacity,
    /// CreateVolume with an existing name ignores a differing content source.
    ExistingNameIgnoresSource,
    /// ControllerExpandVolume of a missing volume answers OK.
    ExpandUnknownOk,
    /// NodeGetVolumeStats of nothing published answers OK.
    StatsNotFoundOk,
    /// Like hostpathplugin: ControllerGetVolume reports published_node_ids `[""]` for a
    /// volume the controller published (a real defect of the observation).
    PublishedNodesEmptyId,
    /// Like hostpathplugin: ControllerGetVolume answers OK for any volume id, also one
    /// that never existed.
    GetVolumeFindsAnything,
    /// Like hostpathplugin's shared filesystem: NodeGetVolumeStats shows a host's 270 GB
    /// that does not change when the volume grows (not a defect).
    StatsShowSharedFilesystem,
    /// NodePublishVolume without a staging path answers INVALID_ARGUMENT instead of FAILED_PRECONDITION.
    StageRequiredInvalidArgument,
    /// ControllerModifyVolume with an unsupported parameter changes the volume (grows it) before rejecting it.
    ModifyAppliesThenRejects,
    /// The plugin advertises OFFLINE expansion only, and refuses to expand a published
    /// volume with FAILED_PRECONDITION: a conforming offline-only driver.
    OfflineOnlyConforming,
    /// The plugin advertises OFFLINE expansion only, yet expands published volumes.
    OfflineOnlyExpandsPublished,
    // ---- retries ----
    /// A call cut off by the client leaves its operation "pending": the same call answers ABORTED for 5s.
    AbortedAfterCutOff,
    /// The first CreateVolume of a name takes 1s; when the client cuts it off, it still
    /// creates a volume, under another name.
    CreateVolumeLeaksOnCutOff,
    // ---- repeats ----
    /// CreateVolume answers with a volume_context that changes with every call.
    VolumeContextChangesOnRepeat,
    /// CreateSnapshot answers with the time of the call as creation_time.
    SnapshotTimeMoves,
    /// ControllerExpandVolume flips node_expansion_required on every call.
    ExpandFlipsNodeExpansion,
    /// ControllerModifyVolume fails when the volume already has the parameters.
    ModifyFailsOnRepeat,
    /// A repeated NodeStageVolume stacks a second mount on the staging path.
    StageStacksMounts,
    // ---- concurrency ----
    /// CreateVolume calls with one name that overlap create one volume each.
    CreateVolumeRacesOnName,
    /// ControllerPublishVolume calls to one node that overlap fail with INTERNAL ("pending event").
    ConcurrentPublishInternal,
    /// A repeated ControllerPublishVolume answers with the publish_context of the last other volume.
    PublishContextOfAnother,
    // ---- data integrity ----
    /// NodePublishVolume (mount) shows an empty tmpfs at the target instead of the volume.
    PublishShowsEmptyFs,
    // ---- CO simulation ----
    /// ControllerPublishVolume to node 2 answers OK without attaching.
    PublishDroppedForOtherNode,
    /// DeleteVolume takes 11s before it starts, longer than external-provisioner's 10s timeout.
    DeleteSlowerThanProvisionerTimeout,
    /// NodePublishVolume of a volume published at another target answers OK without publishing.
    NodePublishIgnoresNewTarget,
    // ---- slow clouds ----
    /// A ControllerPublishVolume retried after a cut-off restarts the attach (detaching first).
    AttachRestartsOnRetry,
    /// ControllerExpandVolume retried within 2s of a cut-off (while the resize runs) answers
    /// INTERNAL ("already resizing") instead of waiting for it or answering ABORTED.
    ResizeInProgressIsFinal,
    /// ControllerUnpublishVolume retried within 2s of a cut-off (while the detach runs)
    /// answers INTERNAL ("already detaching").
    DetachInProgressIsFinal,
}

/// The RPCs that change something, which a CO retries after a cut-off.
const MUTATING: &[&str] = &[
    "CreateVolume",
    "DeleteVolume",
    "ControllerPublishVolume",
    "ControllerUnpublishVolume",
    "NodeStageVolume",
    "NodeUnstageVolume",
    "NodePublishVolume",
    "NodeUnpublishVolume",
    "CreateSnapshot",
    "DeleteSnapshot",
    "ControllerExpandVolume",
];

/// How long a cut-off call stays "pending" under [`BeyondFault::AbortedAfterCutOff`].
const PENDING_FOR: Duration = Duration::from_secs(5);

type Rpc<T> = Result<Response<T>, Status>;
type CallKey = (&'static str, String);

#[derive(Default)]
struct State {
    in_flight: Mutex<HashMap<CallKey, usize>>,
    cut_off: Mutex<HashMap<CallKey, Instant>>,
    calls: Mutex<HashMap<CallKey, u64>>,
    busy_nodes: Mutex<HashSet<String>>,
    /// The publish contexts answered, newest last, by volume.
    contexts: Mutex<Vec<(String, HashMap<String, String>)>>,
    /// Node targets each volume was published at.
    targets: Mutex<HashMap<String, HashSet<String>>>,
    /// Staging paths where the proxy stacked an extra mount.
    stacked: Mutex<HashSet<String>>,
}

/// What to do with a call after [`FaultProxy::before`].
enum Step {
    Forward,
    Fail(Status),
    Answer(Box<dyn Any + Send>),
}

/// Counts a call in flight; a call dropped before it answered was cut off.
struct InFlight {
    state: Arc<State>,
    key: CallKey,
    answered: bool,
    /// Under CreateVolumeLeaksOnCutOff: what to create when the call is cut off.
    leak: Option<(ControllerClient<Channel>, CreateVolumeRequest)>,
}

impl Drop for InFlight {
    fn drop(&mut self) {
        if let Some(n) = self.state.in_flight.lock().unwrap().get_mut(&self.key) {
            *n = n.saturating_sub(1);
        }
        if self.answered {
            return;
        }
        self.state
            .cut_off
            .lock()
            .unwrap()
            .insert(self.key.clone(), Instant::now());
        if let Some((mut client, mut req)) = self.leak.take() {
            req.name = format!("{}-leaked", req.name);
            tokio::spawn(async move {
                let _ = client.create_volume(req).await;
            });
        }
    }
}

/// The volume id (or, for creations, the name) a request is about.
fn key_of(req: &dyn Any) -> String {
    macro_rules! field {
        ($($t:ty => $f:ident),* $(,)?) => {
            $(if let Some(r) = req.downcast_ref::<$t>() { return r.$f.clone(); })*
        };
    }
    field!(
        CreateVolumeRequest => name,
        CreateSnapshotRequest => name,
        DeleteSnapshotRequest => snapshot_id,
        GetSnapshotRequest => snapshot_id,
        DeleteVolumeRequest => volume_id,
        ControllerPublishVolumeRequest => volume_id,
        ControllerUnpublishVolumeRequest => volume_id,
        NodeStageVolumeRequest => volume_id,
        NodeUnstageVolumeRequest => volume_id,
        NodePublishVolumeRequest => volume_id,
        NodeUnpublishVolumeRequest => volume_id,
        ControllerExpandVolumeRequest => volume_id,
        NodeExpandVolumeRequest => volume_id,
        ControllerModifyVolumeRequest => volume_id,
        ControllerGetVolumeRequest => volume_id,
        NodeGetVolumeStatsRequest => volume_id,
    );
    String::new()
}

/// The mounts at `path`, oldest first, as (filesystem type) from /proc/self/mountinfo.
pub fn mounts_at(path: &str) -> Vec<String> {
    let table = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    table
        .lines()
        .filter(|l| l.split(' ').nth(4) == Some(path))
        .filter_map(|l| l.split(" - ").nth(1)?.split(' ').next().map(str::to_string))
        .collect()
}

fn map_size(m: &HashMap<String, String>) -> usize {
    m.iter().map(|(k, v)| k.len() + v.len()).sum()
}

/// Forwards Identity, Controller and Node to the driver, with one [`BeyondFault`].
#[derive(Clone)]
pub struct FaultProxy {
    identity: IdentityClient<Channel>,
    controller: ControllerClient<Channel>,
    node: NodeClient<Channel>,
    fault: BeyondFault,
    state: Arc<State>,
}

pub use crate::common::RunningProxy;

impl FaultProxy {
    /// Serve a proxy to `upstream` with `fault` on a fresh socket.
    pub async fn start(upstream: &str, fault: BeyondFault) -> RunningProxy {
        let (identity, controller, node) = crate::common::connect_upstream(upstream).await;
        crate::common::serve_proxy(FaultProxy {
            identity,
            controller,
            node,
            fault,
            state: Arc::default(),
        })
    }

    /// The nodes the driver says `volume_id` is published to; `None` when
    /// ControllerGetVolume fails or reports no status.
    async fn published_nodes(&self, volume_id: &str) -> Option<Vec<String>> {
        self.controller
            .clone()
            .controller_get_volume(ControllerGetVolumeRequest {
                volume_id: volume_id.to_string(),
            })
            .await
            .ok()
            .and_then(|v| v.into_inner().status)
            .map(|s| s.published_node_ids)
    }

    fn calls_so_far(&self, key: &CallKey) -> u64 {
        let mut calls = self.state.calls.lock().unwrap();
        let n = calls.entry(key.clone()).or_default();
        *n += 1;
        *n - 1
    }

    fn was_cut_off(&self, key: &CallKey) -> bool {
        self.state.cut_off.lock().unwrap().contains_key(key)
    }

    /// Every call goes through here: the fault's `before`, the driver, the fault's `after`.
    async fn call<Req, Resp, Fut>(
        &self,
        rpc: &'static str,
        r: Request<Req>,
        forward: impl FnOnce(Req) -> Fut,
    ) -> Rpc<Resp>
    where
        Req: Any + Send + Sync + Clone,
        Resp: Any + Send,
        Fut: Future<Output = Rpc<Resp>>,
    {
        let mut req = r.into_inner();
        let key: CallKey = (rpc, key_of(&req));
        *self
            .state
            .in_flight
            .lock()
            .unwrap()
            .entry(key.clone())
            .or_default() += 1;
        let leak = match (
            self.fault,
            (&req as &dyn Any).downcast_ref::<CreateVolumeRequest>(),
        ) {
            (BeyondFault::CreateVolumeLeaksOnCutOff, Some(r)) => {
                Some((self.controller.clone(), r.clone()))
            }
            _ => None,
        };
        let mut flight = InFlight {
            state: self.state.clone(),
            key: key.clone(),
            answered: false,
            leak,
        };
        let step = self.before(&key, &mut req).await;
        let mut result = match step {
            Step::Forward => forward(req.clone()).await,
            Step::Fail(status) => Err(status),
            Step::Answer(any) => Ok(Response::new(
                *any.downcast::<Resp>()
                    .expect("a fault answered with the wrong type"),
            )),
        };
        flight.answered = true;
        flight.leak = None;
        self.after(&key, &req, &mut result).await;
        result
    }

    async fn before<Req: Any + Send>(&self, key: &CallKey, req: &mut Req) -> Step {
        use BeyondFault as F;
        let (rpc, id) = (key.0, key.1.as_str());
        let any = req as &mut (dyn Any + Send);
        match self.fault {
            F::LongNameInternal => {
                if let Some(r) = any.downcast_ref::<CreateVolumeRequest>() {
                    if r.name.len() > 128 {
                        return Step::Fail(Status::internal(
                            "proxy: the name does not fit the database column",
                        ));
                    }
                }
            }
            F::BigMapsUnknown => {
                let big = any
                    .downcast_ref::<CreateVolumeRequest>()
                    .map(|r| map_size(&r.parameters))
                    .or_else(|| {
                        any.downcast_ref::<CreateSnapshotRequest>()
                            .map(|r| map_size(&r.parameters))
                    });
                if big.is_some_and(|n| n > 3000) {
                    return Step::Fail(Status::unknown(
                        "proxy: request too large for the cloud API",
                    ));
                }
            }
            F::LongPathsRejected => {
                let path = any
                    .downcast_ref::<NodeStageVolumeRequest>()
                    .map(|r| r.staging_target_path.len())
                    .or_else(|| {
                        any.downcast_ref::<NodePublishVolumeRequest>()
                            .map(|r| r.target_path.len())
                    });
                if path.is_some_and(|n| n >= 120) {
                    return Step::Fail(Status::invalid_argument(
                        "proxy: path longer than 119 bytes",
                    ));
                }
            }
            F::UnstageUnstagedNotFound => {
                if let Some(r) = any.downcast_ref::<NodeUnstageVolumeRequest>() {
                    if mounts_at(&r.staging_target_path).is_empty() {
                        return Step::Fail(Status::not_found(
                            "proxy: the volume is not staged there",
                        ));
                    }
                }
            }
            F::UnpublishUnattachedNotFound => {
                if let Some(r) = any.downcast_ref::<ControllerUnpublishVolumeRequest>() {
                    let attached = self
                        .published_nodes(&r.volume_id)
                        .await
                        .is_some_and(|nodes| nodes.contains(&r.node_id));
                    if !attached {
                        return Step::Fail(Status::not_found(
                            "proxy: the volume is not attached to the node",
                        ));
                    }
                }
            }
            F::RestoreIgnoresCapacity => {
                if let Some(r) = any.downcast_mut::<CreateVolumeRequest>() {
                    if r.volume_content_source.is_some() {
                        r.capacity_range = None;
                    }
                }
            }
            F::ModifyAppliesThenRejects => {
                if let Some(r) = any.downcast_ref::<ControllerModifyVolumeRequest>() {
                    if r.mutable_parameters.keys().any(|k| k != "tags") {
                        let mut c = self.controller.clone();
                        let size = c
                            .controller_get_volume(ControllerGetVolumeRequest {
                                volume_id: r.volume_id.clone(),
                            })
                            .await
                            .ok()
                            .and_then(|v| v.into_inner().volume)
                            .map(|v| v.capacity_bytes)
                            .unwrap_or(1 << 30);
                        let _ = c
                            .controller_expand_volume(ControllerExpandVolumeRequest {
                                volume_id: r.volume_id.clone(),
                                capacity_range: Some(CapacityRange {
                                    required_bytes: size + (1 << 30),
                                    limit_bytes: 0,
                                }),
                                ..Default::default()
                            })
                            .await;
                        return Step::Fail(Status::invalid_argument(
                            "proxy: unsupported mutable parameter",
                        ));
                    }
                }
            }
            F::AbortedAfterCutOff if MUTATING.contains(&rpc) => {
                let pending = self
                    .state
                    .cut_off
                    .lock()
                    .unwrap()
                    .get(key)
                    .is_some_and(|t| t.elapsed() < PENDING_FOR);
                if pending {
                    return Step::Fail(Status::aborted(format!(
                        "proxy: an operation on {id} is pending"
                    )));
                }
                tokio::time::sleep(Duration::from_millis(300)).await;
            }
            // The first call of a name only.
            F::CreateVolumeLeaksOnCutOff
                if rpc == "CreateVolume" && self.calls_so_far(key) == 0 =>
            {
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
            F::ModifyFailsOnRepeat
                if rpc == "ControllerModifyVolume" && self.calls_so_far(key) > 0 =>
            {
                return Step::Fail(Status::failed_precondition(
                    "proxy: the volume already has these parameters",
                ));
            }
            F::StageStacksMounts => {
                if let Some(r) = any.downcast_ref::<NodeUnstageVolumeRequest>() {
                    if self
                        .state
                        .stacked
                        .lock()
                        .unwrap()
                        .remove(&r.staging_target_path)
                    {
                        let _ = nix::mount::umount(r.staging_target_path.as_str());
                    }
                }
            }
            F::CreateVolumeRacesOnName => {
                if let Some(r) = any.downcast_mut::<CreateVolumeRequest>() {
                    let others = self
                        .state
                        .in_flight
                        .lock()
                        .unwrap()
                        .get(key)
                        .copied()
                        .unwrap_or(1)
                        - 1;
                    if others > 0 {
                        r.name = format!("{}-race-{}", r.name, uuid::Uuid::new_v4().simple());
                    }
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }
            F::ConcurrentPublishInternal => {
                if let Some(r) = any.downcast_ref::<ControllerPublishVolumeRequest>() {
                    let node = r.node_id.clone();
                    if !self.state.busy_nodes.lock().unwrap().insert(node.clone()) {
                        return Step::Fail(Status::internal(format!(
                            "proxy: droplet {node} has a pending event"
                        )));
                    }
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    self.state.busy_nodes.lock().unwrap().remove(&node);
                }
            }
            F::PublishDroppedForOtherNode => {
                if let Some(r) = any.downcast_ref::<ControllerPublishVolumeRequest>() {
                    if r.node_id == "2" {
                        return Step::Answer(Box::new(ControllerPublishVolumeResponse::default()));
                    }
                }
            }
            F::DeleteSlowerThanProvisionerTimeout if rpc == "DeleteVolume" => {
                tokio::time::sleep(Duration::from_secs(11)).await;
            }
            F::NodePublishIgnoresNewTarget => {
                if let Some(r) = any.downcast_ref::<NodePublishVolumeRequest>() {
                    let elsewhere = self
                        .state
                        .targets
                        .lock()
                        .unwrap()
                        .get(&r.volume_id)
                        .is_some_and(|t| t.iter().any(|p| p != &r.target_path));
                    if elsewhere {
                        let _ = std::fs::create_dir_all(&r.target_path);
                        return Step::Answer(Box::new(NodePublishVolumeResponse {}));
                    }
                }
            }
            F::PublishShowsEmptyFs => {
                if let Some(r) = any.downcast_ref::<NodeUnpublishVolumeRequest>() {
                    if mounts_at(&r.target_path).last().map(String::as_str) == Some("tmpfs") {
                        let _ = nix::mount::umount(r.target_path.as_str());
                    }
                }
            }
            F::ResizeInProgressIsFinal | F::DetachInProgressIsFinal
                if (self.fault, rpc) == (F::ResizeInProgressIsFinal, "ControllerExpandVolume")
                    || (self.fault, rpc)
                        == (F::DetachInProgressIsFinal, "ControllerUnpublishVolume") =>
            {
                let in_progress = self
                    .state
                    .cut_off
                    .lock()
                    .unwrap()
                    .get(key)
                    .is_some_and(|t| t.elapsed() < Duration::from_secs(2));
                if in_progress {
                    return Step::Fail(Status::internal(format!(
                        "proxy: {rpc} of {id} is already in progress"
                    )));
                }
            }
            F::OfflineOnlyConforming => {
                if let Some(r) = any.downcast_ref::<ControllerExpandVolumeRequest>() {
                    let published = self
                        .published_nodes(&r.volume_id)
                        .await
                        .is_some_and(|nodes| !nodes.is_empty());
                    if published {
                        return Step::Fail(Status::failed_precondition(
                            "proxy: the volume is published; this plugin expands offline only",
                        ));
                    }
                }
            }
            F::AttachRestartsOnRetry => {
                if let Some(r) = any.downcast_ref::<ControllerPublishVolumeRequest>() {
                    if self.was_cut_off(key) {
                        // Undo the attach before the retry, to its end: run in its own task,
                        // a CO's cut-off cannot cancel the undo halfway (which would leave the
                        // attach to finish, and the fault to vanish), and a busy volume is
                        // waited for.
                        let mut controller = self.controller.clone();
                        let undo = ControllerUnpublishVolumeRequest {
                            volume_id: r.volume_id.clone(),
                            node_id: r.node_id.clone(),
                            secrets: Default::default(),
                        };
                        let restart = tokio::spawn(async move {
                            for _ in 0..100 {
                                match controller.controller_unpublish_volume(undo.clone()).await {
                                    Err(s) if s.code() == Code::Aborted => {
                                        tokio::time::sleep(Duration::from_millis(100)).await
                                    }
                                    _ => break,
                                }
                            }
                        });
                        let _ = restart.await;
                    }
                }
            }
            _ => {}
        }
        Step::Forward
    }

    async fn after<Req: Any + Send + Sync, Resp: Any + Send>(
        &self,
        key: &CallKey,
        req: &Req,
        result: &mut Rpc<Resp>,
    ) {
        use BeyondFault as F;
        let req = req as &(dyn Any + Send + Sync);
        let code = result.as_ref().err().map(Status::code);
        match self.fault {
            F::DeleteInUseSucceeds if code == Some(Code::FailedPrecondition) => {
                answer(result, Box::new(DeleteVolumeResponse {}));
            }
            F::PublishElsewhereSucceeds if code == Some(Code::FailedPrecondition) => {
                answer(result, Box::new(ControllerPublishVolumeResponse::default()));
            }
            F::StageIgnoresMismatch
                if code == Some(Code::AlreadyExists) && key.0 == "NodeStageVolume" =>
            {
                answer(result, Box::new(NodeStageVolumeResponse {}));
            }
            F::OfflineOnlyConforming | F::OfflineOnlyExpandsPublished => {
                if let Some(r) =
                    ok_mut(result).and_then(|r| r.downcast_mut::<GetPluginCapabilitiesResponse>())
                {
                    for cap in &mut r.capabilities {
                        if let Some(plugin_capability::Type::VolumeExpansion(e)) =
                            cap.r#type.as_mut()
                        {
                            e.r#type = plugin_capability::volume_expansion::Type::Offline as i32;
                        }
                    }
                }
            }
            F::NodePublishIgnoresMismatch if code == Some(Code::AlreadyExists) => {
                answer(result, Box::new(NodePublishVolumeResponse {}));
            }
            F::ListSnapshotsBadTokenOk if code == Some(Code::Aborted) => {
                answer(result, Box::new(ListSnapshotsResponse::default()));
            }
            F::PublishedNodesEmptyId => {
                if let Some(r) =
                    ok_mut(result).and_then(|r| r.downcast_mut::<ControllerGetVolumeResponse>())
                {
                    if let Some(status) = r.status.as_mut() {
                        if !status.published_node_ids.is_empty() {
                            status.published_node_ids = vec![String::new()];
                        }
                    }
                }
            }
            F::GetVolumeFindsAnything
                if code == Some(Code::NotFound) && key.0 == "ControllerGetVolume" =>
            {
                if let Some(r) = req.downcast_ref::<ControllerGetVolumeRequest>() {
                    let found = ControllerGetVolumeResponse {
                        volume: Some(Volume {
                            volume_id: r.volume_id.clone(),
                            ..Default::default()
                        }),
                        status: Some(controller_get_volume_response::VolumeStatus {
                            published_node_ids: vec![],
                            volume_condition: Some(VolumeCondition {
                                abnormal: true,
                                message: "proxy: volume not found".into(),
                            }),
                        }),
                    };
                    answer(result, Box::new(found));
                }
            }
            F::StatsShowSharedFilesystem => {
                if let Some(r) =
                    ok_mut(result).and_then(|r| r.downcast_mut::<NodeGetVolumeStatsResponse>())
                {
                    for u in &mut r.usage {
                        if u.unit == 1 {
                            u.total = 270_000_000_000;
                            u.available = 200_000_000_000;
                        }
                    }
                }
            }
            F::GetVolumeNotFoundInternal
                if code == Some(Code::NotFound) && key.0 == "ControllerGetVolume" =>
            {
                *result = Err(Status::internal("proxy: lookup failed"));
            }
            F::GetSnapshotDeletedOk if code == Some(Code::NotFound) => {
                if let Some(r) = req.downcast_ref::<GetSnapshotRequest>() {
                    let snapshot = Snapshot {
                        snapshot_id: r.snapshot_id.clone(),
                        ready_to_use: true,
                        size_bytes: 1 << 30,
                        ..Default::default()
                    };
                    answer(
                        result,
                        Box::new(GetSnapshotResponse {
                            snapshot: Some(snapshot),
                        }),
                    );
                }
            }
            F::ExistingNameIgnoresSource if code == Some(Code::AlreadyExists) => {
                if let Some(r) = req.downcast_ref::<CreateVolumeRequest>() {
                    if r.volume_content_source.is_some() {
                        let mut plain = r.clone();
                        plain.volume_content_source = None;
                        if let Ok(resp) = self.controller.clone().create_volume(plain).await {
                            answer(result, Box::new(resp.into_inner()));
                        }
                    }
                }
            }
            F::ExpandUnknownOk if code == Some(Code::NotFound) => {
                if let Some(r) = req.downcast_ref::<ControllerExpandVolumeRequest>() {
                    let asked = r.capacity_range.as_ref().map_or(0, |c| c.required_bytes);
                    answer(
                        result,
                        Box::new(ControllerExpandVolumeResponse {
                            capacity_bytes: asked,
                            node_expansion_required: false,
                        }),
                    );
                }
            }
            F::StatsNotFoundOk if code == Some(Code::NotFound) => {
                let usage = vec![VolumeUsage {
                    available: 1,
                    total: 1,
                    used: 0,
                    unit: 1,
                }];
                answer(
                    result,
                    Box::new(NodeGetVolumeStatsResponse {
                        usage,
                        volume_condition: None,
                    }),
                );
            }
            F::StageRequiredInvalidArgument
                if code == Some(Code::FailedPrecondition)
                    && req
                        .downcast_ref::<NodePublishVolumeRequest>()
                        .is_some_and(|r| r.staging_target_path.is_empty()) =>
            {
                *result = Err(Status::invalid_argument(
                    "proxy: staging_target_path is required",
                ));
            }
            F::VolumeContextChangesOnRepeat => {
                let n = self.calls_so_far(key);
                if let Some(r) =
                    ok_mut(result).and_then(|r| r.downcast_mut::<CreateVolumeResponse>())
                {
                    if let Some(v) = r.volume.as_mut() {
                        v.volume_context.insert("proxy-call".into(), n.to_string());
                    }
                }
            }
            F::SnapshotTimeMoves => {
                if let Some(r) =
                    ok_mut(result).and_then(|r| r.downcast_mut::<CreateSnapshotResponse>())
                {
                    if let Some(s) = r.snapshot.as_mut() {
                        let now = std::time::SystemTime::now()
                            .duration_since(std::time::UNIX_EPOCH)
                            .unwrap_or_default();
                        let mut t = s.creation_time.unwrap_or_default();
                        (t.seconds, t.nanos) = (now.as_secs() as i64, now.subsec_nanos() as i32);
                        s.creation_time = Some(t);
                    }
                }
            }
            F::ExpandFlipsNodeExpansion => {
                let n = self.calls_so_far(key);
                if let Some(r) =
                    ok_mut(result).and_then(|r| r.downcast_mut::<ControllerExpandVolumeResponse>())
                {
                    r.node_expansion_required = n % 2 == 1;
                }
            }
            F::StageStacksMounts if code.is_none() => {
                if let Some(r) = req.downcast_ref::<NodeStageVolumeRequest>() {
                    let path = r.staging_target_path.clone();
                    if self.calls_so_far(key) > 0
                        && self.state.stacked.lock().unwrap().insert(path.clone())
                    {
                        let flags = nix::mount::MsFlags::MS_BIND;
                        let _ = nix::mount::mount(
                            Some(path.as_str()),
                            path.as_str(),
                            None::<&str>,
                            flags,
                            None::<&str>,
                        );
                    }
                }
            }
            F::PublishContextOfAnother => {
                let vol = key.1.clone();
                if let Some(r) =
                    ok_mut(result).and_then(|r| r.downcast_mut::<ControllerPublishVolumeResponse>())
                {
                    let mut contexts = self.state.contexts.lock().unwrap();
                    let repeated = contexts.iter().any(|(v, _)| *v == vol);
                    let other = contexts
                        .iter()
                        .rev()
                        .find(|(v, _)| *v != vol)
                        .map(|(_, c)| c.clone());
                    contexts.push((vol, r.publish_context.clone()));
                    if let (true, Some(other)) = (repeated, other) {
                        r.publish_context = other;
                    }
                }
            }
            F::NodePublishIgnoresNewTarget if code.is_none() => {
                if let Some(r) = req.downcast_ref::<NodePublishVolumeRequest>() {
                    self.state
                        .targets
                        .lock()
                        .unwrap()
                        .entry(r.volume_id.clone())
                        .or_default()
                        .insert(r.target_path.clone());
                }
            }
            F::PublishShowsEmptyFs if code.is_none() => {
                if let Some(r) = req.downcast_ref::<NodePublishVolumeRequest>() {
                    let is_mount = matches!(
                        r.volume_capability
                            .as_ref()
                            .and_then(|c| c.access_type.as_ref()),
                        Some(volume_capability::AccessType::Mount(_))
                    );
                    if is_mount
                        && mounts_at(&r.target_path).last().map(String::as_str) != Some("tmpfs")
                    {
                        let _ = nix::mount::mount(
                            Some("tmpfs"),
                            r.target_path.as_str(),
                            Some("tmpfs"),
                            nix::mount::MsFlags::empty(),
                            Some("size=64m"),
                        );
                    }
                }
            }
            _ => {}
        }
    }
}

/// The successful answer of a call, to change it.
fn ok_mut<Resp: Any + Send>(result: &mut Rpc<Resp>) -> Option<&mut (dyn Any + Send)> {
    result
        .as_mut()
        .ok()
        .map(|r| r.get_mut() as &mut (dyn Any + Send))
}

/// Replace a call's outcome with `resp`, when it is the call's response type.
fn answer<Resp: Any + Send>(result: &mut Rpc<Resp>, resp: Box<dyn Any + Send>) {
    if let Ok(resp) = resp.downcast::<Resp>() {
        *result = Ok(Response::new(*resp));
    }
}

/// The service impls: every RPC through [`FaultProxy::call`].
macro_rules! forward {
    ($trait:ident, $client:ident, { $($method:ident($req:ty) -> $resp:ty, $name:literal;)* }) => {
        #[tonic::async_trait]
        impl $trait for FaultProxy {
            $(
                async fn $method(&self, r: Request<$req>) -> Rpc<$resp> {
                    let mut client = self.$client.clone();
                    self.call($name, r, |req| async move { client.$method(req).await }).await
                }
            )*
        }
    };
}

forward!(Identity, identity, {
    get_plugin_info(GetPluginInfoRequest) -> GetPluginInfoResponse, "GetPluginInfo";
    get_plugin_capabilities(GetPluginCapabilitiesRequest) -> GetPluginCapabilitiesResponse, "GetPluginCapabilities";
    probe(ProbeRequest) -> ProbeResponse, "Probe";
});

forward!(Controller, controller, {
    create_volume(CreateVolumeRequest) -> CreateVolumeResponse, "CreateVolume";
    delete_volume(DeleteVolumeRequest) -> DeleteVolumeResponse, "DeleteVolume";
    controller_publish_volume(ControllerPublishVolumeRequest) -> ControllerPublishVolumeResponse, "ControllerPublishVolume";
    controller_unpublish_volume(ControllerUnpublishVolumeRequest) -> ControllerUnpublishVolumeResponse, "ControllerUnpublishVolume";
    validate_volume_capabilities(ValidateVolumeCapabilitiesRequest) -> ValidateVolumeCapabilitiesResponse, "ValidateVolumeCapabilities";
    list_volumes(ListVolumesRequest) -> ListVolumesResponse, "ListVolumes";
    get_capacity(GetCapacityRequest) -> GetCapacityResponse, "GetCapacity";
    controller_get_capabilities(ControllerGetCapabilitiesRequest) -> ControllerGetCapabilitiesResponse, "ControllerGetCapabilities";
    create_snapshot(CreateSnapshotRequest) -> CreateSnapshotResponse, "CreateSnapshot";
    delete_snapshot(DeleteSnapshotRequest) -> DeleteSnapshotResponse, "DeleteSnapshot";
    list_snapshots(ListSnapshotsRequest) -> ListSnapshotsResponse, "ListSnapshots";
    get_snapshot(GetSnapshotRequest) -> GetSnapshotResponse, "GetSnapshot";
    controller_expand_volume(ControllerExpandVolumeRequest) -> ControllerExpandVolumeResponse, "ControllerExpandVolume";
    controller_get_volume(ControllerGetVolumeRequest) -> ControllerGetVolumeResponse, "ControllerGetVolume";
    controller_modify_volume(ControllerModifyVolumeRequest) -> ControllerModifyVolumeResponse, "ControllerModifyVolume";
});

forward!(Node, node, {
    node_stage_volume(NodeStageVolumeRequest) -> NodeStageVolumeResponse, "NodeStageVolume";
    node_unstage_volume(NodeUnstageVolumeRequest) -> NodeUnstageVolumeResponse, "NodeUnstageVolume";
    node_publish_volume(NodePublishVolumeRequest) -> NodePublishVolumeResponse, "NodePublishVolume";
    node_unpublish_volume(NodeUnpublishVolumeRequest) -> NodeUnpublishVolumeResponse, "NodeUnpublishVolume";
    node_get_volume_stats(NodeGetVolumeStatsRequest) -> NodeGetVolumeStatsResponse, "NodeGetVolumeStats";
    node_expand_volume(NodeExpandVolumeRequest) -> NodeExpandVolumeResponse, "NodeExpandVolume";
    node_get_capabilities(NodeGetCapabilitiesRequest) -> NodeGetCapabilitiesResponse, "NodeGetCapabilities";
    node_get_info(NodeGetInfoRequest) -> NodeGetInfoResponse, "NodeGetInfo";
});
