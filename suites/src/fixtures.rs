//! Fixtures: the building blocks specs set up with. Everything a fixture creates is
//! recorded in the spec's [`Tracker`](crate::Tracker) and undone after the spec.
//!
//! Two shapes:
//! - `*_request(..)` builds the request a well-behaved CO would send (configured
//!   capability, size, parameters, secrets), for specs that then break one field;
//! - `*_with(req)` sends a request and returns the [`Call`], tracking what it created
//!   on success, for specs that check the outcome themselves;
//! - the plain form (`create_volume`, `controller_publish`, `node_stage`, …) must
//!   succeed; a failure names the step as "setting up: …".
//!
//! Higher up, [`Ctx::make_available`] runs the whole chain a CO would for a pod
//! (controller publish, stage, publish — each only when the driver advertises it).

use std::collections::HashMap;
use std::time::{Duration, Instant};

use csi_proto::v1::controller_service_capability::rpc::Type as ControllerRpc;
use csi_proto::v1::node_service_capability::rpc::Type as NodeRpc;
use csi_proto::v1::volume_capability::access_mode::Mode as AccessMode;
use csi_proto::v1::volume_capability::{self, AccessType};
use csi_proto::v1::{
    CapacityRange, ControllerPublishVolumeRequest, ControllerPublishVolumeResponse,
    ControllerUnpublishVolumeRequest, CreateSnapshotRequest, CreateSnapshotResponse,
    CreateVolumeRequest, CreateVolumeResponse, DeleteSnapshotRequest, DeleteVolumeRequest,
    GetSnapshotRequest, ListSnapshotsRequest, ListVolumesRequest, NodeGetInfoRequest,
    NodeGetInfoResponse, NodePublishVolumeRequest, NodePublishVolumeResponse,
    NodeStageVolumeRequest, NodeStageVolumeResponse, NodeUnpublishVolumeRequest,
    NodeUnstageVolumeRequest, Snapshot, Volume, VolumeCapability,
};
use tonic::Code;

use crate::call;
use crate::check::{Call, Failure};
use crate::context::Ctx;
use crate::retry::{retried_by_a_co, Backoff};
use crate::secrets::Secret;
use crate::tracker::Resource;

/// A volume made available on the node, as a CO would for a workload.
#[derive(Debug, Clone)]
pub struct Available {
    pub volume: Volume,
    /// The node it was published to.
    pub node_id: String,
    /// From ControllerPublishVolume (empty without PUBLISH_UNPUBLISH_VOLUME).
    pub publish_context: HashMap<String, String>,
    /// Where it is staged (with STAGE_UNSTAGE_VOLUME).
    pub staging_path: Option<String>,
    /// Where it is published.
    pub target_path: String,
}

const SETUP_RULE: &str =
    "setup: a valid request from a well-behaved CO must succeed before the rule can be checked";

impl Ctx {
    /// Send a call the way a CO does: while the answer is one a CO retries (ABORTED,
    /// UNAVAILABLE, DEADLINE_EXCEEDED, RESOURCE_EXHAUSTED), back off and send it again, within
    /// `--csi.retrybudget`. The setup steps use this, so a driver that asks a busy caller
    /// to come back (ABORTED for an operation in flight) is not failed for it.
    pub async fn as_co<T, F, Fut>(&self, mut send: F) -> Call<T>
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = Call<T>>,
    {
        let mut pacing = Backoff {
            first: Duration::from_millis(50),
            max: Duration::from_secs(1),
            budget: self.config().retry_budget,
        }
        .start();
        loop {
            let call = send().await;
            let again = match &call.result {
                // The compat profile sends setup calls once, as Go does.
                Err(status) => {
                    !self.compat()
                        && !crate::breaker::was_refused(status)
                        && retried_by_a_co(status.code())
                }
                Ok(_) => false,
            };
            if !(again && pacing.wait().await) {
                return call;
            }
        }
    }

    // ---- capabilities and ids ----

    /// The capability test volumes use: SINGLE_NODE_WRITER with the configured access
    /// type (`--csi.testvolumeaccesstype`, mount by default).
    pub fn default_capability(&self) -> VolumeCapability {
        self.capability(AccessMode::SingleNodeWriter)
    }

    /// A capability with `mode` and the configured access type.
    pub fn capability(&self, mode: AccessMode) -> VolumeCapability {
        let access_type = if self.config().is_block() {
            AccessType::Block(volume_capability::BlockVolume {})
        } else if self.compat() {
            AccessType::Mount(volume_capability::MountVolume::default())
        } else {
            // As Kubernetes sends a StorageClass's mountOptions.
            AccessType::Mount(volume_capability::MountVolume {
                mount_flags: self.config().mount_flags.clone(),
                ..Default::default()
            })
        };
        VolumeCapability {
            access_mode: Some(volume_capability::AccessMode { mode: mode as i32 }),
            access_type: Some(access_type),
        }
    }

    /// A volume id that no driver has: a fresh UUID.
    pub fn unknown_volume_id(&self) -> String {
        uuid::Uuid::new_v4().to_string()
    }

    /// A snapshot id that no driver has: a fresh UUID.
    pub fn unknown_snapshot_id(&self) -> String {
        uuid::Uuid::new_v4().to_string()
    }

    /// Unknown volume ids to try where the spec wants OK or NOT_FOUND for an unknown
    /// one: the malformed id the Go csi-sanity sends (`fake-vol-id`), and in the full
    /// profile also a well-formed one, so a driver that rejects either form is caught.
    pub fn unknown_volume_ids(&self) -> Vec<String> {
        let mut ids = vec!["fake-vol-id".to_string()];
        if !self.compat() {
            ids.push(self.unknown_volume_id());
        }
        ids
    }

    /// Like [`Ctx::unknown_volume_ids`], for snapshots (Go sends `reallyfakesnapshotid`).
    pub fn unknown_snapshot_ids(&self) -> Vec<String> {
        let mut ids = vec!["reallyfakesnapshotid".to_string()];
        if !self.compat() {
            ids.push(self.unknown_snapshot_id());
        }
        ids
    }

    /// A node id no cluster has. Numeric, so drivers with numeric node ids (cloud
    /// instance ids) see a well-formed but missing node.
    pub fn unknown_node_id(&self) -> String {
        "987654321098".to_string()
    }

    /// NodeGetInfo of this spec's node, asked once per run and node, and cached.
    pub async fn node_info(&self) -> Result<NodeGetInfoResponse, Failure> {
        self.spec
            .node
            .slot
            .info
            .get_or_try_init(|| async {
                call!(
                    self.node(),
                    node_get_info,
                    "NodeGetInfo",
                    NodeGetInfoRequest {}
                )
                .ok(SETUP_RULE)
                .map_err(|f| f.during("setting up: NodeGetInfo for the node id"))
            })
            .await
            .cloned()
    }

    /// This node's id (NodeGetInfo, cached).
    pub async fn node_id(&self) -> Result<String, Failure> {
        Ok(self.node_info().await?.node_id)
    }

    // ---- volumes ----

    /// The CreateVolume request a CO would send for a test volume named `name`:
    /// the configured size, capability, parameters, topology and secrets.
    pub fn volume_request(&self, name: &str) -> CreateVolumeRequest {
        let config = self.config();
        CreateVolumeRequest {
            name: name.to_string(),
            capacity_range: Some(CapacityRange {
                required_bytes: config.volume_size,
                limit_bytes: 0,
            }),
            volume_capabilities: vec![self.default_capability()],
            parameters: config.volume_parameters.clone(),
            secrets: self.secrets(Secret::CreateVolume),
            volume_content_source: None,
            accessibility_requirements: config.topology_requirements.clone(),
            mutable_parameters: HashMap::new(),
        }
    }

    /// Send CreateVolume; a volume it returns is tracked.
    pub async fn create_volume_with(&self, req: CreateVolumeRequest) -> Call<CreateVolumeResponse> {
        let c = call!(self.controller(), create_volume, "CreateVolume", req);
        if let Ok(resp) = &c.result {
            if let Some(v) = &resp.volume {
                if !v.volume_id.is_empty() {
                    self.tracker().track(Resource::Volume {
                        id: v.volume_id.clone(),
                    });
                }
            }
        }
        c
    }

    /// Create a test volume named `name` (use [`Ctx::unique_name`]); tracked.
    pub async fn create_volume(&self, name: &str) -> Result<Volume, Failure> {
        self.create_volume_from(self.volume_request(name)).await
    }

    /// Create a volume from a full request, which must succeed; tracked.
    pub async fn create_volume_from(&self, req: CreateVolumeRequest) -> Result<Volume, Failure> {
        let c = self.as_co(|| self.create_volume_with(req.clone())).await;
        let request = c.request.clone();
        let resp = c
            .ok(SETUP_RULE)
            .map_err(|f| f.during("setting up: creating a test volume"))?;
        match resp.volume {
            Some(v) if !v.volume_id.is_empty() => Ok(v),
            other => Err(Failure {
                rpc: Some("CreateVolume".into()),
                request: Some(request),
                expected: "a volume with a non-empty volume_id".into(),
                actual: format!("{other:?}"),
                rule: "CreateVolume: volume and volume_id are REQUIRED in the response".into(),
                step: Some("setting up: creating a test volume".into()),
                skip: None,
            }),
        }
    }

    /// Delete a volume, which must succeed, and stop tracking it.
    pub async fn delete_volume(&self, id: &str) -> Result<(), Failure> {
        let req = DeleteVolumeRequest {
            volume_id: id.to_string(),
            secrets: self.secrets(Secret::DeleteVolume),
        };
        self.as_co(|| async {
            call!(
                self.controller(),
                delete_volume,
                "DeleteVolume",
                req.clone()
            )
        })
        .await
        .ok("DeleteVolume: deleting an existing, unpublished volume MUST succeed")?;
        self.tracker()
            .forget(&Resource::Volume { id: id.to_string() });
        Ok(())
    }

    /// Every volume ListVolumes returns, walking all pages (`max_entries` per page, 0
    /// for the driver's choice). Fails on an error or a walk that does not end.
    pub async fn list_all_volumes(&self, max_entries: i32) -> Result<Vec<Volume>, Failure> {
        let mut out = Vec::new();
        let mut token = String::new();
        let mut seen_tokens = std::collections::HashSet::new();
        loop {
            let c = call!(
                self.controller(),
                list_volumes,
                "ListVolumes",
                ListVolumesRequest {
                    max_entries,
                    starting_token: token.clone(),
                }
            );
            let request = c.request.clone();
            let resp = c.ok("ListVolumes: a valid request MUST succeed")?;
            out.extend(resp.entries.into_iter().filter_map(|e| e.volume));
            if resp.next_token.is_empty() {
                return Ok(out);
            }
            if !seen_tokens.insert(resp.next_token.clone()) || seen_tokens.len() > 100_000 {
                return Err(Failure {
                    rpc: Some("ListVolumes".into()),
                    request: Some(request),
                    expected: "the walk of pages to end (next_token empty)".into(),
                    actual: format!("next_token {:?} came back again", resp.next_token),
                    rule: "ListVolumes: next_token continues the listing; the last page has an empty next_token".into(),
                    ..Default::default()
                });
            }
            token = resp.next_token;
        }
    }

    // ---- snapshots ----

    /// The CreateSnapshot request a CO would send.
    pub fn snapshot_request(&self, name: &str, source_volume_id: &str) -> CreateSnapshotRequest {
        CreateSnapshotRequest {
            source_volume_id: source_volume_id.to_string(),
            name: name.to_string(),
            secrets: self.secrets(Secret::CreateSnapshot),
            parameters: self.config().snapshot_parameters.clone(),
        }
    }

    /// Send CreateSnapshot; a snapshot it returns is tracked.
    pub async fn create_snapshot_with(
        &self,
        req: CreateSnapshotRequest,
    ) -> Call<CreateSnapshotResponse> {
        let c = call!(
            self.controller(),
            create_snapshot,
            "CreateSnapshot",
            req.clone()
        );
        if let Ok(resp) = &c.result {
            if let Some(s) = &resp.snapshot {
                if !s.snapshot_id.is_empty() {
                    self.tracker().track(Resource::Snapshot {
                        id: s.snapshot_id.clone(),
                    });
                    self.spec
                        .snapshot_requests
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .insert(s.snapshot_id.clone(), req);
                }
            }
        }
        c
    }

    /// Create a snapshot of `source_volume_id`, which must succeed; tracked. It may not
    /// be ready to use yet: see [`Ctx::wait_snapshot_ready`].
    pub async fn create_snapshot(
        &self,
        name: &str,
        source_volume_id: &str,
    ) -> Result<Snapshot, Failure> {
        let req = self.snapshot_request(name, source_volume_id);
        let c = self.as_co(|| self.create_snapshot_with(req.clone())).await;
        let request = c.request.clone();
        let resp = c
            .ok(SETUP_RULE)
            .map_err(|f| f.during("setting up: creating a test snapshot"))?;
        let snapshot = resp.snapshot.unwrap_or_default();
        check_snapshot_info("CreateSnapshot", &request, &snapshot)
            .map_err(|f| f.during("setting up: creating a test snapshot"))?;
        Ok(snapshot)
    }

    /// Create a snapshot and wait until it is ready to use.
    pub async fn create_ready_snapshot(
        &self,
        name: &str,
        source_volume_id: &str,
    ) -> Result<Snapshot, Failure> {
        let s = self.create_snapshot(name, source_volume_id).await?;
        if s.ready_to_use {
            return Ok(s);
        }
        self.wait_snapshot_ready(&s.snapshot_id).await
    }

    /// Delete a snapshot, which must succeed, and stop tracking it.
    pub async fn delete_snapshot(&self, id: &str) -> Result<(), Failure> {
        let req = DeleteSnapshotRequest {
            snapshot_id: id.to_string(),
            secrets: self.secrets(Secret::DeleteSnapshot),
        };
        self.as_co(|| async {
            call!(
                self.controller(),
                delete_snapshot,
                "DeleteSnapshot",
                req.clone()
            )
        })
        .await
        .ok("DeleteSnapshot: deleting an existing snapshot MUST succeed")?;
        self.tracker()
            .forget(&Resource::Snapshot { id: id.to_string() });
        Ok(())
    }

    /// Look a snapshot up by id: GetSnapshot when advertised, else ListSnapshots
    /// filtered by id, else CreateSnapshot repeated with the original request (which is
    /// idempotent, and how a CO polls). `None` when the driver says it doesn't exist.
    pub async fn find_snapshot(&self, id: &str) -> Result<Option<Snapshot>, Failure> {
        const RULE: &str = "snapshots: a created snapshot can be looked up by its id";
        let caps = self.caps();
        if caps.controller_has(ControllerRpc::GetSnapshot) {
            let c = call!(
                self.controller(),
                get_snapshot,
                "GetSnapshot",
                GetSnapshotRequest {
                    snapshot_id: id.to_string(),
                    secrets: self.secrets(Secret::GetSnapshot),
                }
            );
            return Ok(c
                .ok_or_code_in(&[Code::NotFound], RULE)?
                .and_then(|r| r.snapshot));
        }
        if caps.controller_has(ControllerRpc::ListSnapshots) {
            let c = call!(
                self.controller(),
                list_snapshots,
                "ListSnapshots",
                ListSnapshotsRequest {
                    snapshot_id: id.to_string(),
                    secrets: self.secrets(Secret::ListSnapshots),
                    ..Default::default()
                }
            );
            let resp = c.ok(RULE)?;
            return Ok(resp
                .entries
                .into_iter()
                .filter_map(|e| e.snapshot)
                .find(|s| s.snapshot_id == id));
        }
        let req = self
            .spec
            .snapshot_requests
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(id)
            .cloned();
        match req {
            Some(req) => {
                let c = call!(self.controller(), create_snapshot, "CreateSnapshot", req);
                Ok(c.ok(RULE)?.snapshot)
            }
            None => Err(Failure::new(
                "a way to look the snapshot up",
                "the driver advertises neither GET_SNAPSHOT nor LIST_SNAPSHOTS, and this spec did not create the snapshot",
                RULE,
            )),
        }
    }

    /// Wait until snapshot `id` is ready to use (up to the configured ready timeout),
    /// polling with a growing delay. Returns the ready snapshot.
    pub async fn wait_snapshot_ready(&self, id: &str) -> Result<Snapshot, Failure> {
        const RULE: &str = "CreateSnapshot: a snapshot reports ready_to_use once it can be used as a volume source; a CO polls until it does";
        let deadline = Instant::now() + self.config().ready_timeout;
        let mut delay = Duration::from_millis(50);
        loop {
            let found = self
                .find_snapshot(id)
                .await
                .map_err(|f| f.during("waiting for a snapshot to be ready"))?;
            match found {
                Some(s) if s.ready_to_use => return Ok(s),
                Some(s) if Instant::now() >= deadline => {
                    return Err(Failure::new(
                        format!(
                            "snapshot {id} ready to use within {:?}",
                            self.config().ready_timeout
                        ),
                        format!("{s:?}"),
                        RULE,
                    ))
                }
                Some(_) => {}
                None => {
                    return Err(Failure::new(
                        format!("snapshot {id} to exist"),
                        "the driver says it does not (NOT_FOUND or absent from ListSnapshots)",
                        RULE,
                    ))
                }
            }
            tokio::time::sleep(delay).await;
            delay = (delay * 2).min(Duration::from_secs(2));
        }
    }

    // ---- controller publish ----

    /// The ControllerPublishVolume request a CO would send.
    pub fn controller_publish_request(
        &self,
        volume: &Volume,
        node_id: &str,
    ) -> ControllerPublishVolumeRequest {
        ControllerPublishVolumeRequest {
            volume_id: volume.volume_id.clone(),
            node_id: node_id.to_string(),
            volume_capability: Some(self.default_capability()),
            readonly: false,
            secrets: self.secrets(Secret::ControllerPublishVolume),
            volume_context: volume.volume_context.clone(),
        }
    }

    /// Send ControllerPublishVolume; on success the attachment is tracked.
    pub async fn controller_publish_with(
        &self,
        req: ControllerPublishVolumeRequest,
    ) -> Call<ControllerPublishVolumeResponse> {
        let track = Resource::ControllerPublish {
            volume_id: req.volume_id.clone(),
            node_id: req.node_id.clone(),
        };
        let c = call!(
            self.controller(),
            controller_publish_volume,
            "ControllerPublishVolume",
            req
        );
        if c.is_ok() {
            self.tracker().track(track);
        }
        c
    }

    /// Publish `volume` to `node_id`, which must succeed; tracked. Returns the
    /// publish context.
    pub async fn controller_publish(
        &self,
        volume: &Volume,
        node_id: &str,
    ) -> Result<HashMap<String, String>, Failure> {
        let req = self.controller_publish_request(volume, node_id);
        Ok(self
            .as_co(|| self.controller_publish_with(req.clone()))
            .await
            .ok(SETUP_RULE)
            .map_err(|f| f.during("setting up: ControllerPublishVolume"))?
            .publish_context)
    }

    /// Unpublish `volume_id` from `node_id`, which must succeed; stops tracking it.
    pub async fn controller_unpublish(
        &self,
        volume_id: &str,
        node_id: &str,
    ) -> Result<(), Failure> {
        let req = ControllerUnpublishVolumeRequest {
            volume_id: volume_id.to_string(),
            node_id: node_id.to_string(),
            secrets: self.secrets(Secret::ControllerUnpublishVolume),
        };
        self.as_co(|| async {
            call!(
                self.controller(),
                controller_unpublish_volume,
                "ControllerUnpublishVolume",
                req.clone()
            )
        })
        .await
        .ok("ControllerUnpublishVolume: unpublishing a published volume MUST succeed")?;
        self.tracker().forget(&Resource::ControllerPublish {
            volume_id: volume_id.to_string(),
            node_id: node_id.to_string(),
        });
        Ok(())
    }

    // ---- node stage and publish ----

    /// The NodeStageVolume request a CO would send.
    pub fn node_stage_request(
        &self,
        volume: &Volume,
        staging_path: &str,
        publish_context: &HashMap<String, String>,
    ) -> NodeStageVolumeRequest {
        NodeStageVolumeRequest {
            volume_id: volume.volume_id.clone(),
            publish_context: publish_context.clone(),
            staging_target_path: staging_path.to_string(),
            volume_capability: Some(self.default_capability()),
            secrets: self.secrets(Secret::NodeStageVolume),
            volume_context: volume.volume_context.clone(),
        }
    }

    /// Send NodeStageVolume; on success the staging is tracked.
    pub async fn node_stage_with(
        &self,
        req: NodeStageVolumeRequest,
    ) -> Call<NodeStageVolumeResponse> {
        let track = Resource::NodeStage {
            volume_id: req.volume_id.clone(),
            staging_path: req.staging_target_path.clone(),
        };
        let c = call!(self.node(), node_stage_volume, "NodeStageVolume", req);
        if c.is_ok() {
            self.tracker().track(track);
        }
        c
    }

    /// Stage `volume` at this spec's staging path, which must succeed; tracked.
    /// Returns the staging path.
    pub async fn node_stage(
        &self,
        volume: &Volume,
        publish_context: &HashMap<String, String>,
    ) -> Result<String, Failure> {
        let staging = self.staging_path().await?;
        let req = self.node_stage_request(volume, &staging, publish_context);
        self.as_co(|| self.node_stage_with(req.clone()))
            .await
            .ok(SETUP_RULE)
            .map_err(|f| f.during("setting up: NodeStageVolume"))?;
        Ok(staging)
    }

    /// Unstage, which must succeed; stops tracking it.
    pub async fn node_unstage(&self, volume_id: &str, staging_path: &str) -> Result<(), Failure> {
        let req = NodeUnstageVolumeRequest {
            volume_id: volume_id.to_string(),
            staging_target_path: staging_path.to_string(),
        };
        self.as_co(|| async {
            call!(
                self.node(),
                node_unstage_volume,
                "NodeUnstageVolume",
                req.clone()
            )
        })
        .await
        .ok("NodeUnstageVolume: unstaging a staged volume MUST succeed")?;
        self.tracker().forget(&Resource::NodeStage {
            volume_id: volume_id.to_string(),
            staging_path: staging_path.to_string(),
        });
        Ok(())
    }

    /// The NodePublishVolume request a CO would send.
    pub fn node_publish_request(
        &self,
        volume: &Volume,
        staging_path: Option<&str>,
        target_path: &str,
        publish_context: &HashMap<String, String>,
    ) -> NodePublishVolumeRequest {
        NodePublishVolumeRequest {
            volume_id: volume.volume_id.clone(),
            publish_context: publish_context.clone(),
            staging_target_path: staging_path.unwrap_or_default().to_string(),
            target_path: target_path.to_string(),
            volume_capability: Some(self.default_capability()),
            readonly: false,
            secrets: self.secrets(Secret::NodePublishVolume),
            volume_context: volume.volume_context.clone(),
        }
    }

    /// Send NodePublishVolume; on success the publication is tracked.
    pub async fn node_publish_with(
        &self,
        req: NodePublishVolumeRequest,
    ) -> Call<NodePublishVolumeResponse> {
        let track = Resource::NodePublish {
            volume_id: req.volume_id.clone(),
            target_path: req.target_path.clone(),
        };
        let c = call!(self.node(), node_publish_volume, "NodePublishVolume", req);
        if c.is_ok() {
            self.tracker().track(track);
        }
        c
    }

    /// Publish `volume` at this spec's target path, which must succeed; tracked.
    /// Returns the target path.
    pub async fn node_publish(
        &self,
        volume: &Volume,
        staging_path: Option<&str>,
        publish_context: &HashMap<String, String>,
    ) -> Result<String, Failure> {
        let target = self.target_path().await?;
        let req = self.node_publish_request(volume, staging_path, &target, publish_context);
        self.as_co(|| self.node_publish_with(req.clone()))
            .await
            .ok(SETUP_RULE)
            .map_err(|f| f.during("setting up: NodePublishVolume"))?;
        Ok(target)
    }

    /// Where the harness sees the target's mount (same host, same mount namespace), each
    /// mount flag the capability asked for must show in its options. The node lifecycle
    /// spec checks it, once, so a driver that drops flags gets one finding, not one per
    /// spec that publishes. The spec only says
    /// the flags "can be used", so a driver that drops them gets a warning.
    pub fn check_mount_flags(&self, target: &str, req: &NodePublishVolumeRequest) {
        let Some(AccessType::Mount(mount)) = req
            .volume_capability
            .as_ref()
            .and_then(|c| c.access_type.as_ref())
        else {
            return;
        };
        if mount.mount_flags.is_empty() {
            return;
        }
        let Some(options) = crate::beyond::observe::mount_options_at(target) else {
            return;
        };
        let missing: Vec<&str> = mount
            .mount_flags
            .iter()
            .flat_map(|f| f.split(','))
            .filter(|f| !f.is_empty() && !options.iter().any(|o| o == f))
            .collect();
        if missing.is_empty() {
            return;
        }
        self.warn(Failure::about(
            "NodePublishVolume",
            &crate::check::describe_request("NodePublishVolume", req),
            format!("the target mounted with {:?}", mount.mount_flags),
            format!("{missing:?} missing from the mount options at {target}: {}", options.join(",")),
            "spec VolumeCapability.MountVolume.mount_flags: the mount options a CO asks for (a StorageClass's mountOptions) are to be used when mounting (SHOULD-level)",
        ));
    }

    /// Unpublish, which must succeed; stops tracking it.
    pub async fn node_unpublish(&self, volume_id: &str, target_path: &str) -> Result<(), Failure> {
        let req = NodeUnpublishVolumeRequest {
            volume_id: volume_id.to_string(),
            target_path: target_path.to_string(),
        };
        self.as_co(|| async {
            call!(
                self.node(),
                node_unpublish_volume,
                "NodeUnpublishVolume",
                req.clone()
            )
        })
        .await
        .ok("NodeUnpublishVolume: unpublishing a published volume MUST succeed")?;
        self.tracker().forget(&Resource::NodePublish {
            volume_id: volume_id.to_string(),
            target_path: target_path.to_string(),
        });
        Ok(())
    }

    /// Make `volume` available on this node the way a CO does for a workload:
    /// ControllerPublishVolume (with PUBLISH_UNPUBLISH_VOLUME), NodeStageVolume (with
    /// STAGE_UNSTAGE_VOLUME), then NodePublishVolume. All tracked.
    pub async fn make_available(&self, volume: &Volume) -> Result<Available, Failure> {
        let node_id = self.node_id().await?;
        let publish_context = if self
            .caps()
            .controller_has(ControllerRpc::PublishUnpublishVolume)
        {
            self.controller_publish(volume, &node_id).await?
        } else {
            HashMap::new()
        };
        let staging_path = if self.caps().node_has(NodeRpc::StageUnstageVolume) {
            Some(self.node_stage(volume, &publish_context).await?)
        } else {
            None
        };
        let target_path = self
            .node_publish(volume, staging_path.as_deref(), &publish_context)
            .await?;
        Ok(Available {
            volume: volume.clone(),
            node_id,
            publish_context,
            staging_path,
            target_path,
        })
    }

    /// Undo [`Ctx::make_available`] in order, each step required to succeed.
    pub async fn make_unavailable(&self, a: &Available) -> Result<(), Failure> {
        self.node_unpublish(&a.volume.volume_id, &a.target_path)
            .await?;
        if let Some(staging) = &a.staging_path {
            self.node_unstage(&a.volume.volume_id, staging).await?;
        }
        if self
            .caps()
            .controller_has(ControllerRpc::PublishUnpublishVolume)
        {
            self.controller_unpublish(&a.volume.volume_id, &a.node_id)
                .await?;
        }
        Ok(())
    }
}

/// The REQUIRED fields of a Snapshot in any response (what the Go csi-sanity's
/// verifySnapshotInfo checks): snapshot_id, source_volume_id and creation_time.
pub fn check_snapshot_info(rpc: &str, request: &str, s: &Snapshot) -> Result<(), Failure> {
    let missing: Vec<&str> = [
        ("snapshot_id", s.snapshot_id.is_empty()),
        ("source_volume_id", s.source_volume_id.is_empty()),
        ("creation_time", s.creation_time.is_none()),
    ]
    .into_iter()
    .filter_map(|(field, absent)| absent.then_some(field))
    .collect();
    if missing.is_empty() {
        return Ok(());
    }
    Err(Failure::about(
        rpc,
        request,
        "a snapshot with snapshot_id, source_volume_id and creation_time set",
        format!("{s:?} (missing {})", missing.join(", ")),
        "spec Snapshot: snapshot_id, source_volume_id and creation_time are REQUIRED fields of every Snapshot a plugin returns",
    ))
}
