//! The resource tracker: everything a spec creates is recorded here and undone after
//! the spec, in the order that can succeed, even when the spec failed or panicked.
//!
//! The fixtures of [`Ctx`](crate::Ctx) (`create_volume`, `controller_publish`, `node_stage`, …)
//! record what they create. A spec that creates something by hand records it with
//! [`Tracker::track`]; one that undoes something by hand may [`Tracker::forget`] it (not
//! required: every undo tolerates "already gone").
//!
//! [`Ctx::cleanup`](crate::Ctx::cleanup) undoes, per phase and newest first within a phase:
//! node unpublish → node unstage → controller unpublish → delete group snapshots →
//! delete snapshots → delete volumes → remove paths. Anything that fails is retried
//! once after the rest (a clone may block its source, for example); what still fails is
//! reported as one failure naming every leftover.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use csi_proto::v1::controller_client::ControllerClient;
use csi_proto::v1::group_controller_client::GroupControllerClient;
use csi_proto::v1::node_client::NodeClient;
use csi_proto::v1::{
    ControllerUnpublishVolumeRequest, DeleteSnapshotRequest, DeleteVolumeGroupSnapshotRequest,
    DeleteVolumeRequest, NodeUnpublishVolumeRequest, NodeUnstageVolumeRequest,
};
use tonic::transport::Channel;
use tonic::Code;

use crate::check::{Call, Failure};
use crate::config::SuiteConfig;
use crate::paths::PathRole;
use crate::retry::{retried_by_a_co, Backoff};
use crate::secrets::Secret;

/// Something a spec created that must be undone.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Resource {
    /// A volume: undone with DeleteVolume.
    Volume { id: String },
    /// A snapshot: undone with DeleteSnapshot.
    Snapshot { id: String },
    /// A group snapshot and its member snapshots: undone with DeleteVolumeGroupSnapshot.
    GroupSnapshot {
        id: String,
        snapshot_ids: Vec<String>,
    },
    /// A volume published to a node: undone with ControllerUnpublishVolume.
    ControllerPublish { volume_id: String, node_id: String },
    /// A volume staged at a path: undone with NodeUnstageVolume.
    NodeStage {
        volume_id: String,
        staging_path: String,
    },
    /// A volume published at a path: undone with NodeUnpublishVolume.
    NodePublish {
        volume_id: String,
        target_path: String,
    },
    /// A directory the harness created for target or staging paths: removed last, with
    /// the configured remove command or `rmdir` (never recursively).
    Path { path: String, role: PathRole },
}

impl Resource {
    /// Undo order: lower first.
    fn phase(&self) -> u8 {
        match self {
            Resource::NodePublish { .. } => 0,
            Resource::NodeStage { .. } => 1,
            Resource::ControllerPublish { .. } => 2,
            Resource::GroupSnapshot { .. } => 3,
            Resource::Snapshot { .. } => 4,
            Resource::Volume { .. } => 5,
            Resource::Path { .. } => 6,
        }
    }
}

impl std::fmt::Display for Resource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Resource::Volume { id } => write!(f, "volume {id}"),
            Resource::Snapshot { id } => write!(f, "snapshot {id}"),
            Resource::GroupSnapshot { id, .. } => write!(f, "group snapshot {id}"),
            Resource::ControllerPublish { volume_id, node_id } => {
                write!(f, "volume {volume_id} published to node {node_id}")
            }
            Resource::NodeStage {
                volume_id,
                staging_path,
            } => write!(f, "volume {volume_id} staged at {staging_path}"),
            Resource::NodePublish {
                volume_id,
                target_path,
            } => write!(f, "volume {volume_id} published at {target_path}"),
            Resource::Path { path, .. } => write!(f, "directory {path}"),
        }
    }
}

/// What one run created, by id, so the runner can check at the end that nothing is
/// left over.
#[derive(Debug, Clone, Default)]
pub struct Ledger {
    /// Volume id → the spec that created it.
    pub volumes: BTreeMap<String, String>,
    /// Snapshot id → the spec that created it.
    pub snapshots: BTreeMap<String, String>,
}

/// What the tracker undoes through: the clients of the endpoints the spec's calls went
/// to, and the run's settings ([`Ctx::cleanup`](crate::Ctx::cleanup) hands them over).
pub struct Endpoints<'a> {
    pub controller: ControllerClient<Channel>,
    pub node: NodeClient<Channel>,
    pub group_controller: GroupControllerClient<Channel>,
    pub config: &'a SuiteConfig,
}

/// What one spec created and has not undone yet. Shared by the clones of a [`Ctx`](crate::Ctx).
pub struct Tracker {
    entries: Mutex<Vec<Resource>>,
    ledger: Arc<Mutex<Ledger>>,
    spec_name: String,
}

impl Tracker {
    pub(crate) fn new(ledger: Arc<Mutex<Ledger>>, spec_name: &str) -> Tracker {
        Tracker {
            entries: Mutex::new(Vec::new()),
            ledger,
            spec_name: spec_name.to_string(),
        }
    }

    /// Record that the spec created `resource`. Recording the same thing twice is
    /// harmless (an idempotent retry returns the same volume): it is undone once.
    pub fn track(&self, resource: Resource) {
        {
            let mut ledger = self.ledger.lock().unwrap_or_else(|e| e.into_inner());
            match &resource {
                Resource::Volume { id } => {
                    ledger.volumes.insert(id.clone(), self.spec_name.clone());
                }
                Resource::Snapshot { id } => {
                    ledger.snapshots.insert(id.clone(), self.spec_name.clone());
                }
                Resource::GroupSnapshot { snapshot_ids, .. } => {
                    for id in snapshot_ids {
                        ledger.snapshots.insert(id.clone(), self.spec_name.clone());
                    }
                }
                _ => {}
            }
        }
        let mut entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        if !entries.contains(&resource) {
            entries.push(resource);
        }
    }

    /// Forget `resource` (the spec undid it itself). Returns whether it was tracked.
    pub fn forget(&self, resource: &Resource) -> bool {
        let mut entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        let before = entries.len();
        entries.retain(|r| r != resource);
        before != entries.len()
    }

    /// What is tracked now, oldest first.
    pub fn resources(&self) -> Vec<Resource> {
        self.entries
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Take everything out, in undo order.
    fn drain_in_undo_order(&self) -> Vec<Resource> {
        let mut entries: Vec<Resource> =
            std::mem::take(&mut *self.entries.lock().unwrap_or_else(|e| e.into_inner()));
        entries.reverse();
        // Stable sort: newest first within a phase.
        entries.sort_by_key(Resource::phase);
        entries
    }
}

/// Whether an undo that failed with `code` is worth another try: a CO would retry it,
/// or the driver is still finishing the previous step (FAILED_PRECONDITION).
fn undo_again(code: Code) -> bool {
    retried_by_a_co(code) || code == Code::FailedPrecondition
}

/// Codes that mean "already undone".
const GONE: &[Code] = &[Code::NotFound];

const CLEANUP_RULE: &str = "cleanup: every resource a spec created must be removable after it (node unpublish, node unstage, controller unpublish, delete snapshots, delete volumes)";

impl Tracker {
    /// Undo everything tracked, in order, through `via`. Every step accepts OK and
    /// NOT_FOUND.
    pub async fn undo_all(&self, via: &Endpoints<'_>) -> Result<(), Failure> {
        let mut pending = self.drain_in_undo_order();
        let mut errors: Vec<(Resource, Failure)> = Vec::new();
        for round in 0..2 {
            errors.clear();
            for resource in std::mem::take(&mut pending) {
                if let Err(f) = undo_with_retries(via, &resource).await {
                    errors.push((resource, f));
                }
            }
            if errors.is_empty() || round == 1 {
                break;
            }
            pending = errors.iter().map(|(r, _)| r.clone()).collect();
            pending.sort_by_key(Resource::phase);
        }
        if errors.is_empty() {
            return Ok(());
        }
        let (first_resource, first) = errors[0].clone();
        let mut failure = first;
        failure.step = Some(format!("cleanup: undoing {first_resource}"));
        if errors.len() > 1 {
            let others: Vec<String> = errors[1..]
                .iter()
                .map(|(r, f)| format!("{r} ({})", f.actual))
                .collect();
            failure.actual = format!("{}; also left over: {}", failure.actual, others.join("; "));
        }
        failure.rule = CLEANUP_RULE.to_string();
        Err(failure)
    }
}

async fn undo_with_retries(via: &Endpoints<'_>, resource: &Resource) -> Result<(), Failure> {
    // As a CO would, keep at a busy driver for as long as `--csi.retrybudget` allows:
    // with parallel specs sharing one node, detaches queue behind each other.
    let mut pacing = Backoff {
        first: Duration::from_millis(100),
        max: Duration::from_secs(3),
        budget: via.config.retry_budget,
    }
    .start();
    loop {
        let Err((code, failure)) = undo(via, resource).await else {
            return Ok(());
        };
        // The compat profile cleans up as Go does: once, no retries.
        if via.config.compat() || !undo_again(code) || !pacing.wait().await {
            return Err(failure);
        }
    }
}

/// One undo attempt; on failure, the code (for retry decisions) and the failure.
async fn undo(via: &Endpoints<'_>, resource: &Resource) -> Result<(), (Code, Failure)> {
    // Go accepts NOT_FOUND only from the node's unpublish and unstage; the
    // controller's unpublish and the deletes must answer OK there.
    let compat = via.config.compat();
    let node_side = matches!(
        resource,
        Resource::NodePublish { .. } | Resource::NodeStage { .. }
    );
    let gone: &[Code] = if compat && !node_side { &[] } else { GONE };
    fn settle_with<T: std::fmt::Debug>(
        call: Call<T>,
        gone: &[Code],
    ) -> Result<(), (Code, Failure)> {
        // The breaker's refusal (an RPC cut off, the endpoint gone) is final: no
        // code worth retrying.
        let code = match &call.result {
            Err(s) if crate::breaker::was_refused(s) => Code::Unknown,
            _ => call.status_code(),
        };
        call.ok_or_code_in(gone, CLEANUP_RULE)
            .map(|_| ())
            .map_err(|f| (code, f))
    }
    macro_rules! settle {
        ($call:expr) => {
            settle_with($call, gone)
        };
    }
    match resource {
        Resource::NodePublish {
            volume_id,
            target_path,
        } => settle!(crate::call!(
            via.node.clone(),
            node_unpublish_volume,
            "NodeUnpublishVolume",
            NodeUnpublishVolumeRequest {
                volume_id: volume_id.clone(),
                target_path: target_path.clone(),
            }
        )),
        Resource::NodeStage {
            volume_id,
            staging_path,
        } => settle!(crate::call!(
            via.node.clone(),
            node_unstage_volume,
            "NodeUnstageVolume",
            NodeUnstageVolumeRequest {
                volume_id: volume_id.clone(),
                staging_target_path: staging_path.clone(),
            }
        )),
        Resource::ControllerPublish { volume_id, node_id } => settle!(crate::call!(
            via.controller.clone(),
            controller_unpublish_volume,
            "ControllerUnpublishVolume",
            ControllerUnpublishVolumeRequest {
                volume_id: volume_id.clone(),
                node_id: node_id.clone(),
                secrets: Secret::ControllerUnpublishVolume.in_file(&via.config.secrets),
            }
        )),
        Resource::GroupSnapshot { id, snapshot_ids } => settle!(crate::call!(
            via.group_controller.clone(),
            delete_volume_group_snapshot,
            "DeleteVolumeGroupSnapshot",
            DeleteVolumeGroupSnapshotRequest {
                group_snapshot_id: id.clone(),
                snapshot_ids: snapshot_ids.clone(),
                secrets: Secret::DeleteVolumeGroupSnapshot.in_file(&via.config.secrets),
            }
        )),
        Resource::Snapshot { id } => settle!(crate::call!(
            via.controller.clone(),
            delete_snapshot,
            "DeleteSnapshot",
            DeleteSnapshotRequest {
                snapshot_id: id.clone(),
                secrets: Secret::DeleteSnapshot.in_file(&via.config.secrets),
            }
        )),
        Resource::Volume { id } => settle!(crate::call!(
            via.controller.clone(),
            delete_volume,
            "DeleteVolume",
            DeleteVolumeRequest {
                volume_id: id.clone(),
                secrets: Secret::DeleteVolume.in_file(&via.config.secrets),
            }
        )),
        Resource::Path { path, role } => crate::paths::remove_path(via.config, path, *role)
            .await
            .map_err(|f| (Code::Unknown, f)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn undo_order_is_by_phase_then_newest_first() {
        let t = Tracker::new(Default::default(), "spec");
        let vol = |id: &str| Resource::Volume { id: id.into() };
        t.track(Resource::Path {
            path: "/t".into(),
            role: PathRole::Target,
        });
        t.track(vol("a"));
        t.track(Resource::ControllerPublish {
            volume_id: "a".into(),
            node_id: "1".into(),
        });
        t.track(Resource::NodeStage {
            volume_id: "a".into(),
            staging_path: "/s".into(),
        });
        t.track(Resource::NodePublish {
            volume_id: "a".into(),
            target_path: "/t/target".into(),
        });
        t.track(Resource::Snapshot { id: "s1".into() });
        t.track(vol("b"));
        t.track(vol("a")); // tracked twice, undone once
        let order: Vec<String> = t
            .drain_in_undo_order()
            .iter()
            .map(|r| r.to_string())
            .collect();
        assert_eq!(
            order,
            [
                "volume a published at /t/target",
                "volume a staged at /s",
                "volume a published to node 1",
                "snapshot s1",
                "volume b",
                "volume a",
                "directory /t",
            ]
        );
        assert!(t.resources().is_empty());
    }

    #[test]
    fn tracked_volumes_and_snapshots_land_in_the_run_ledger() {
        let ledger: Arc<Mutex<Ledger>> = Default::default();
        let t = Tracker::new(ledger.clone(), "my spec");
        t.track(Resource::Volume { id: "v".into() });
        t.track(Resource::Snapshot { id: "s".into() });
        assert!(t.forget(&Resource::Volume { id: "v".into() }));
        let ledger = ledger.lock().unwrap();
        // Forgetting does not erase the ledger: the end-of-run check still looks for it.
        assert_eq!(ledger.volumes.get("v").map(String::as_str), Some("my spec"));
        assert_eq!(
            ledger.snapshots.get("s").map(String::as_str),
            Some("my spec")
        );
    }
}
