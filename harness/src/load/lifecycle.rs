//! One lifecycle, forward and undone, over the nodes; the recording of its calls.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use anyhow::Context;
use csi_proto::v1::controller_client::ControllerClient;
use csi_proto::v1::controller_service_capability::rpc::Type as ControllerRpc;
use csi_proto::v1::node_client::NodeClient;
use csi_proto::v1::node_service_capability::rpc::Type as NodeRpc;
use csi_proto::v1::volume_capability::{access_mode, AccessMode, AccessType, MountVolume};
use csi_proto::v1::*;
use csi_suites::retry::{retried_by_a_co, Backoff};
use tonic::transport::Channel;

/// Everything a lifecycle records: latencies and error codes, shared by all workers.
#[derive(Default)]
pub(super) struct Recorder {
    /// Deadline of one call; a call still running then counts as DEADLINE_EXCEEDED.
    pub(super) rpc_timeout: Option<Duration>,
    pub(super) latencies: Mutex<BTreeMap<&'static str, Vec<Duration>>>,
    pub(super) errors: Mutex<BTreeMap<String, u64>>,
    /// The first message seen for each "RPC CODE", to say what went wrong.
    pub(super) samples: Mutex<BTreeMap<String, String>>,
}

impl Recorder {
    pub(super) async fn time<T, F>(&self, rpc: &'static str, call: F) -> Result<T, tonic::Status>
    where
        F: std::future::Future<Output = Result<tonic::Response<T>, tonic::Status>>,
    {
        let started = Instant::now();
        let result = match self.rpc_timeout {
            Some(limit) => match tokio::time::timeout(limit, call).await {
                Ok(result) => result,
                Err(_) => Err(tonic::Status::deadline_exceeded(format!(
                    "{rpc} took longer than {limit:?}"
                ))),
            },
            None => call.await,
        };
        let elapsed = started.elapsed();
        self.latencies
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .entry(rpc)
            .or_default()
            .push(elapsed);
        match result {
            Ok(r) => Ok(r.into_inner()),
            Err(status) => {
                let key = format!("{rpc} {:?}", status.code());
                let mut message = status.message().to_string();
                if message.len() > 300 {
                    let mut end = 300;
                    while !message.is_char_boundary(end) {
                        end -= 1;
                    }
                    message.truncate(end);
                }
                self.samples
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .entry(key.clone())
                    .or_insert(message);
                *self
                    .errors
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .entry(key)
                    .or_default() += 1;
                Err(status)
            }
        }
    }
}

/// What the run may do, decided once from the driver's capabilities.
#[derive(Debug, Clone)]
pub(super) struct Plan {
    pub(super) controller_publish: bool,
    pub(super) stage: bool,
    pub(super) node_steps: bool,
}

/// A node lifecycles run on: its node plugin, its id, and how busy it is.
pub(super) struct LoadNode {
    pub(super) client: NodeClient<Channel>,
    /// Empty when no step needs a node (and NodeGetInfo failed).
    pub(super) id: String,
    /// One permit per volume the node may hold: a CO never schedules more volumes on
    /// a node than it reports in max_volumes_per_node.
    pub(super) slots: Option<tokio::sync::Semaphore>,
    pub(super) in_flight: AtomicUsize,
    pub(super) ran: AtomicU64,
}

/// A lifecycle's hold on a node; the node counts one lifecycle fewer when it drops.
pub(super) struct NodeLease<'a> {
    pub(super) node: &'a LoadNode,
}

impl Drop for NodeLease<'_> {
    fn drop(&mut self) {
        self.node.in_flight.fetch_sub(1, Ordering::SeqCst);
    }
}

pub(super) struct Shared {
    pub(super) controller: ControllerClient<Channel>,
    /// --csi.endpoint's node first, then the others.
    pub(super) nodes: Vec<LoadNode>,
    /// Held while a lifecycle picks its node, so two that start at once see each other.
    pub(super) picking: Mutex<()>,
    pub(super) plan: Plan,
    pub(super) recorder: Recorder,
    pub(super) stopping: AtomicBool,
    pub(super) started: AtomicU64,
    pub(super) ok: AtomicU64,
    pub(super) failed: AtomicU64,
    pub(super) cut_short: AtomicU64,
    pub(super) leftovers: Mutex<Vec<String>>,
    pub(super) budget: Budget,
    pub(super) prefix: String,
    pub(super) mount_dir: PathBuf,
    pub(super) staging_dir: PathBuf,
    pub(super) volume_size: i64,
}

/// When to stop starting lifecycles, and how fast to start them.
pub(super) struct Budget {
    pub(super) lifecycles: Option<u64>,
    pub(super) until: Option<Instant>,
    pub(super) rate: Option<f64>,
    pub(super) t0: Instant,
}

pub(super) fn capability() -> VolumeCapability {
    VolumeCapability {
        access_mode: Some(AccessMode {
            mode: access_mode::Mode::SingleNodeWriter as i32,
        }),
        access_type: Some(AccessType::Mount(MountVolume {
            fs_type: "ext4".into(),
            mount_flags: vec![],
            volume_mount_group: String::new(),
        })),
    }
}

/// How load mode retries a step, as a CO would: 20 ms doubling to 2 s, for a minute.
pub(super) const BACKOFF: Backoff = Backoff {
    first: Duration::from_millis(20),
    max: Duration::from_secs(2),
    budget: Duration::from_secs(60),
};

/// How a lifecycle, or its forward half, ended.
pub(super) enum Outcome {
    /// Every step succeeded (and, for the whole lifecycle, was undone).
    Done,
    /// A stop request ended it (a step a CO would have retried counts too), and what
    /// it made was undone.
    Stopped,
    /// A step failed, or something could not be undone.
    Failed,
}

/// What one lifecycle has done so far, so it can be undone in reverse.
#[derive(Default)]
pub(super) struct Done {
    pub(super) volume_id: Option<String>,
    pub(super) published: bool,
    pub(super) staging: Option<String>,
    pub(super) staged: bool,
    pub(super) target: Option<String>,
    pub(super) node_published: bool,
}

impl Shared {
    pub(super) fn stopping(&self) -> bool {
        self.stopping.load(Ordering::SeqCst)
    }

    /// Take the next lifecycle number, waiting for the rate; None when the budget is spent.
    pub(super) async fn next_lifecycle(&self) -> Option<u64> {
        if self.stopping() {
            return None;
        }
        let n = self.started.fetch_add(1, Ordering::SeqCst);
        if self.budget.lifecycles.is_some_and(|max| n >= max) {
            return None;
        }
        if let Some(rate) = self.budget.rate.filter(|r| *r > 0.0) {
            let at = self.budget.t0 + Duration::from_secs_f64(n as f64 / rate);
            tokio::time::sleep_until(at.into()).await;
        }
        if self.budget.until.is_some_and(|u| Instant::now() >= u) || self.stopping() {
            return None;
        }
        Some(n)
    }

    /// Run one lifecycle: forward until done or a step fails or a stop is asked, then
    /// undo in reverse.
    pub(super) async fn lifecycle(&self, n: u64) -> Outcome {
        let lease = self.pick_node();
        let node = lease.node;
        let _slot = match &node.slots {
            Some(slots) => slots.acquire().await.ok(),
            None => None,
        };
        let mut done = Done::default();
        let forward = self.forward(n, node, &mut done).await;
        let undone = self.undo(node, &mut done).await;
        if undone {
            forward
        } else {
            Outcome::Failed
        }
    }

    /// How a forward step that answered `status` ends the lifecycle: a code a CO would
    /// have gone on retrying, had the run not been stopped, only cuts it short.
    pub(super) fn ended_by(&self, status: &tonic::Status) -> Outcome {
        if self.stopping() && retried_by_a_co(status.code()) {
            Outcome::Stopped
        } else {
            Outcome::Failed
        }
    }

    /// The node with the fewest lifecycles in flight (the first such one on a tie).
    pub(super) fn pick_node(&self) -> NodeLease<'_> {
        let _picking = self.picking.lock().unwrap_or_else(|e| e.into_inner());
        let node = self
            .nodes
            .iter()
            .min_by_key(|n| n.in_flight.load(Ordering::SeqCst))
            .expect("at least one node");
        node.in_flight.fetch_add(1, Ordering::SeqCst);
        node.ran.fetch_add(1, Ordering::SeqCst);
        NodeLease { node }
    }

    /// The forward half: each step is retried while it fails with a code a CO retries
    /// (every failed attempt still counts in the errors), and a stop request ends it.
    pub(super) async fn forward(&self, n: u64, node: &LoadNode, done: &mut Done) -> Outcome {
        let name = format!("{}-{n}", self.prefix);
        let create = CreateVolumeRequest {
            name: name.clone(),
            capacity_range: Some(CapacityRange {
                required_bytes: self.volume_size,
                limit_bytes: 0,
            }),
            volume_capabilities: vec![capability()],
            ..Default::default()
        };
        let created = self
            .call_retrying("CreateVolume", || {
                let (mut c, r) = (self.controller.clone(), create.clone());
                async move { c.create_volume(r).await }
            })
            .await;
        let volume = match created.map(|r| r.volume) {
            Ok(Some(v)) => v,
            Ok(None) => return Outcome::Failed,
            Err(status) => return self.ended_by(&status),
        };
        done.volume_id = Some(volume.volume_id.clone());
        let volume_id = volume.volume_id;
        if self.stopping() {
            return Outcome::Stopped;
        }
        let mut publish_context = Default::default();
        if self.plan.controller_publish {
            let publish = ControllerPublishVolumeRequest {
                volume_id: volume_id.clone(),
                node_id: node.id.clone(),
                volume_capability: Some(capability()),
                volume_context: volume.volume_context.clone(),
                ..Default::default()
            };
            // Undone even if it fails: a failed attach may have started.
            done.published = true;
            match self
                .call_retrying("ControllerPublishVolume", || {
                    let (mut c, r) = (self.controller.clone(), publish.clone());
                    async move { c.controller_publish_volume(r).await }
                })
                .await
            {
                Ok(r) => publish_context = r.publish_context,
                Err(status) => return self.ended_by(&status),
            }
        }
        if self.stopping() {
            return Outcome::Stopped;
        }
        if !self.plan.node_steps {
            return Outcome::Done;
        }
        let staging = self.staging_dir.join(&name).display().to_string();
        if self.plan.stage {
            if std::fs::create_dir_all(&staging).is_err() {
                return Outcome::Failed;
            }
            done.staging = Some(staging.clone());
            let stage = NodeStageVolumeRequest {
                volume_id: volume_id.clone(),
                publish_context: publish_context.clone(),
                staging_target_path: staging.clone(),
                volume_capability: Some(capability()),
                volume_context: volume.volume_context.clone(),
                ..Default::default()
            };
            done.staged = true;
            let staged = self
                .call_retrying("NodeStageVolume", || {
                    let (mut c, r) = (node.client.clone(), stage.clone());
                    async move { c.node_stage_volume(r).await }
                })
                .await;
            if let Err(status) = staged {
                return self.ended_by(&status);
            }
            if self.stopping() {
                return Outcome::Stopped;
            }
        }
        let target = self.mount_dir.join(&name).display().to_string();
        if std::fs::create_dir_all(&self.mount_dir).is_err() {
            return Outcome::Failed;
        }
        done.target = Some(target.clone());
        let publish = NodePublishVolumeRequest {
            volume_id,
            publish_context,
            staging_target_path: if self.plan.stage {
                staging
            } else {
                String::new()
            },
            target_path: target,
            volume_capability: Some(capability()),
            volume_context: volume.volume_context,
            ..Default::default()
        };
        done.node_published = true;
        let published = self
            .call_retrying("NodePublishVolume", || {
                let (mut c, r) = (node.client.clone(), publish.clone());
                async move { c.node_publish_volume(r).await }
            })
            .await;
        match published {
            Err(status) => self.ended_by(&status),
            Ok(_) if self.stopping() => Outcome::Stopped,
            Ok(_) => Outcome::Done,
        }
    }

    /// Undo what `done` says was done, in reverse order. Each step is retried, as a CO
    /// would, while it fails with a retriable code, for at most a minute.
    pub(super) async fn undo(&self, node: &LoadNode, done: &mut Done) -> bool {
        let Some(volume_id) = done.volume_id.clone() else {
            return true;
        };
        let mut clean = true;
        if done.node_published {
            let target = done.target.clone().unwrap_or_default();
            let request = NodeUnpublishVolumeRequest {
                volume_id: volume_id.clone(),
                target_path: target.clone(),
            };
            let ok = self
                .retrying("NodeUnpublishVolume", || {
                    let (mut c, request) = (node.client.clone(), request.clone());
                    async move { c.node_unpublish_volume(request).await }
                })
                .await;
            if !ok {
                self.left(format!("target {target} of {volume_id}"));
                clean = false;
            }
            let _ = std::fs::remove_dir(&target);
        }
        if done.staged {
            let staging = done.staging.clone().unwrap_or_default();
            let request = NodeUnstageVolumeRequest {
                volume_id: volume_id.clone(),
                staging_target_path: staging.clone(),
            };
            let ok = self
                .retrying("NodeUnstageVolume", || {
                    let (mut c, request) = (node.client.clone(), request.clone());
                    async move { c.node_unstage_volume(request).await }
                })
                .await;
            if !ok {
                self.left(format!("staging {staging} of {volume_id}"));
                clean = false;
            }
        }
        if let Some(staging) = &done.staging {
            let _ = std::fs::remove_dir(staging);
        }
        if done.published {
            let request = ControllerUnpublishVolumeRequest {
                volume_id: volume_id.clone(),
                node_id: node.id.clone(),
                ..Default::default()
            };
            let ok = self
                .retrying("ControllerUnpublishVolume", || {
                    let (mut c, request) = (self.controller.clone(), request.clone());
                    async move { c.controller_unpublish_volume(request).await }
                })
                .await;
            if !ok {
                self.left(format!("attachment of {volume_id} to node {}", node.id));
                clean = false;
            }
        }
        let request = DeleteVolumeRequest {
            volume_id: volume_id.clone(),
            ..Default::default()
        };
        let deleted = self
            .retrying("DeleteVolume", || {
                let (mut c, request) = (self.controller.clone(), request.clone());
                async move { c.delete_volume(request).await }
            })
            .await;
        if !deleted {
            self.left(format!("volume {volume_id}"));
            clean = false;
        }
        clean
    }

    /// Call until OK, retrying codes a CO retries, for at most a minute; a stop request
    /// ends the retries of forward steps (undo steps pass `undoing`).
    pub(super) async fn call_retrying<T, F, Fut>(
        &self,
        rpc: &'static str,
        call: F,
    ) -> Result<T, tonic::Status>
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = Result<tonic::Response<T>, tonic::Status>>,
    {
        self.call_retrying_while(rpc, false, call).await
    }

    pub(super) async fn call_retrying_while<T, F, Fut>(
        &self,
        rpc: &'static str,
        undoing: bool,
        mut call: F,
    ) -> Result<T, tonic::Status>
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = Result<tonic::Response<T>, tonic::Status>>,
    {
        let mut pacing = BACKOFF.start();
        loop {
            let status = match self.recorder.time(rpc, call()).await {
                Ok(r) => return Ok(r),
                Err(status) => status,
            };
            let again = retried_by_a_co(status.code()) && (undoing || !self.stopping());
            if !(again && pacing.wait().await) {
                return Err(status);
            }
        }
    }

    /// An undo step: retried like the forward ones, even after a stop request.
    pub(super) async fn retrying<T, F, Fut>(&self, rpc: &'static str, call: F) -> bool
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = Result<tonic::Response<T>, tonic::Status>>,
    {
        self.call_retrying_while(rpc, true, call).await.is_ok()
    }

    pub(super) fn left(&self, what: String) {
        self.leftovers
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(what);
    }
}

/// Decide which steps apply, from what the driver advertises.
pub(super) async fn plan(
    controller: &mut ControllerClient<Channel>,
    node: &mut NodeClient<Channel>,
    bundled: bool,
) -> anyhow::Result<(Plan, Vec<String>, NodeGetInfoResponse)> {
    let caps: Vec<i32> = controller
        .controller_get_capabilities(ControllerGetCapabilitiesRequest {})
        .await
        .context("ControllerGetCapabilities")?
        .into_inner()
        .capabilities
        .into_iter()
        .filter_map(|c| {
            c.r#type
                .map(|controller_service_capability::Type::Rpc(r)| r.r#type)
        })
        .collect();
    if !caps.contains(&(ControllerRpc::CreateDeleteVolume as i32)) {
        anyhow::bail!(
            "the driver does not advertise CREATE_DELETE_VOLUME; there is nothing to load"
        );
    }
    let mut skipped = Vec::new();
    let controller_publish = caps.contains(&(ControllerRpc::PublishUnpublishVolume as i32));
    if !controller_publish {
        skipped.push(
            "ControllerPublishVolume/ControllerUnpublishVolume (no PUBLISH_UNPUBLISH_VOLUME)"
                .to_string(),
        );
    }
    let node_caps: Vec<i32> = match node
        .node_get_capabilities(NodeGetCapabilitiesRequest {})
        .await
    {
        Ok(r) => r
            .into_inner()
            .capabilities
            .into_iter()
            .filter_map(|c| {
                c.r#type
                    .map(|node_service_capability::Type::Rpc(r)| r.r#type)
            })
            .collect(),
        Err(_) => Vec::new(),
    };
    let first_node = match node.node_get_info(NodeGetInfoRequest {}).await {
        Ok(r) => Some(r.into_inner()),
        Err(e) if controller_publish => {
            anyhow::bail!("NodeGetInfo failed, so there is no node to publish to: {e}")
        }
        Err(_) => None,
    };
    let root = nix::unistd::geteuid().is_root();
    let has_node = first_node.as_ref().is_some_and(|n| !n.node_id.is_empty());
    let node_steps = (!bundled || root) && has_node;
    let stage = node_caps.contains(&(NodeRpc::StageUnstageVolume as i32));
    if !has_node {
        skipped.push(
            "NodeStageVolume/NodePublishVolume and their undo (NodeGetInfo gave no node id)"
                .to_string(),
        );
    } else if !node_steps {
        skipped.push(
            "NodeStageVolume/NodePublishVolume and their undo (skipped: needs root, the \
             bundled driver mounts in this process)"
                .to_string(),
        );
    } else if !stage {
        skipped.push("NodeStageVolume/NodeUnstageVolume (no STAGE_UNSTAGE_VOLUME)".to_string());
    }
    Ok((
        Plan {
            controller_publish,
            stage,
            node_steps,
        },
        skipped,
        first_node.unwrap_or_default(),
    ))
}

/// The nodes lifecycles run on: --csi.endpoint's (`first`), then each of `extra`, which
/// must answer NodeGetInfo with a node id no other node has. A node gets slots when its
/// max_volumes_per_node is below its share of the concurrency.
pub(super) async fn load_nodes(
    first: (NodeClient<Channel>, NodeGetInfoResponse),
    extra: Vec<(String, NodeClient<Channel>)>,
    volume_limited: bool,
    concurrency: usize,
) -> anyhow::Result<(Vec<LoadNode>, Vec<String>)> {
    let mut infos = vec![("--csi.endpoint".to_string(), first.0, first.1)];
    for (endpoint, mut client) in extra {
        let info = client
            .node_get_info(NodeGetInfoRequest {})
            .await
            .with_context(|| format!("--csi.nodeendpoints: NodeGetInfo of {endpoint}"))?
            .into_inner();
        if info.node_id.is_empty() {
            anyhow::bail!("--csi.nodeendpoints: {endpoint} answered NodeGetInfo with no node id");
        }
        if let Some((other, _, _)) = infos.iter().find(|(_, _, i)| i.node_id == info.node_id) {
            anyhow::bail!(
                "--csi.nodeendpoints: {endpoint} is node {:?}, as {other} is: every node endpoint must be a different node",
                info.node_id
            );
        }
        infos.push((endpoint, client, info));
    }
    // Lifecycles go to the least busy node, so none holds more than its share at once.
    let share = concurrency.div_ceil(infos.len());
    let mut notes = Vec::new();
    let nodes = infos
        .into_iter()
        .map(|(_, client, info)| {
            let max = info.max_volumes_per_node;
            let limited = volume_limited && max > 0 && (max as usize) < share;
            if limited {
                notes.push(format!(
                    "node {}: lifecycles wait for a slot beyond its max_volumes_per_node ({max})",
                    info.node_id
                ));
            }
            LoadNode {
                client,
                id: info.node_id,
                slots: limited.then(|| tokio::sync::Semaphore::new(max as usize)),
                in_flight: AtomicUsize::new(0),
                ran: AtomicU64::new(0),
            }
        })
        .collect();
    Ok((nodes, notes))
}
