//! Shared by the harness's integration tests: the project's driver started the way a
//! driver author's test would start it, and a mutating proxy that forwards every call to
//! it but corrupts one chosen kind of response, to show that each spec can fail.

#![allow(dead_code)]

use std::collections::HashSet;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use clap::Parser;
use csi_proto::v1::controller_client::ControllerClient;
use csi_proto::v1::controller_server::{Controller, ControllerServer};
use csi_proto::v1::identity_client::IdentityClient;
use csi_proto::v1::identity_server::{Identity, IdentityServer};
use csi_proto::v1::node_client::NodeClient;
use csi_proto::v1::node_server::{Node, NodeServer};
use csi_proto::v1::*;
use tokio_stream::wrappers::UnixListenerStream;
use tonic::transport::Channel;
use tonic::{Request, Response, Status};

/// The project's driver, serving on a socket under a temporary directory.
pub struct TestDriver {
    pub driver: csi_driver::RunningDriver,
    pub dir: tempfile::TempDir,
}

impl TestDriver {
    pub async fn start() -> TestDriver {
        TestDriver::start_with(&[]).await
    }

    /// Start the driver with extra flags (e.g. `--attach-latency=2s`).
    pub async fn start_with(extra: &[&str]) -> TestDriver {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let (data, devices) = (dir.path().join("cloud"), dir.path().join("by-id"));
        std::fs::create_dir_all(&data).unwrap();
        std::fs::create_dir_all(&devices).unwrap();
        let mut args = vec![
            "csi-driver".to_string(),
            format!(
                "--endpoint=unix://{}",
                dir.path().join("csi.sock").display()
            ),
            format!("--data-dir={}", data.display()),
            format!("--device-dir={}", devices.display()),
            "--log-level=error".to_string(),
        ];
        args.extend(extra.iter().map(|s| s.to_string()));
        let config = csi_driver::Config::try_parse_from(args).unwrap();
        let driver = csi_driver::start(config).await.expect("the driver starts");
        TestDriver { driver, dir }
    }

    pub fn endpoint(&self) -> String {
        self.driver.endpoint.clone()
    }

    /// A run configuration against `endpoint` with paths under this driver's directory.
    pub fn config(&self, endpoint: &str) -> csi_sanity::Config {
        let mut config = csi_sanity::Config::for_endpoint(endpoint);
        let suite = &mut config.suite;
        suite.volume_size = 1 << 30;
        suite.mount_dir = self.dir.path().join("mount");
        suite.staging_dir = self.dir.path().join("staging");
        suite.second_node_id = Some("2".into());
        suite.mutable_parameters = [("tags".to_string(), "csi-sanity".to_string())].into();
        suite.idempotent_count = 2;
        // The inner runs' libtest output goes to a file: the outer test reports.
        config.args.logfile = Some(self.dir.path().join("libtest.log").display().to_string());
        config.print_summary = false;
        config
    }
}

/// One way a driver can break the spec. The proxy corrupts only that.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// Forward everything unchanged.
    None,
    /// DeleteVolume of an id the driver never returned answers NOT_FOUND.
    DeleteUnknownVolumeNotFound,
    /// CreateVolume drops the capacity range (the driver picks its default size).
    CreateVolumeIgnoresCapacity,
    /// CreateVolume without a name makes one up instead of refusing.
    CreateVolumeAcceptsNoName,
    /// ListVolumes ignores the starting token (always the first page).
    ListVolumesIgnoresToken,
    /// GetPluginInfo returns a name that is not in reverse domain notation.
    PluginNameInvalid,
    /// Probe fails.
    ProbeFails,
    /// ValidateVolumeCapabilities never confirms.
    ValidateConfirmsNothing,
    /// ControllerPublishVolume to a node that does not exist says OK.
    PublishAcceptsMissingNode,
    /// CreateSnapshot ignores the name: a new snapshot every time.
    CreateSnapshotIgnoresName,
    /// DeleteSnapshot of an id the driver never returned answers NOT_FOUND.
    DeleteUnknownSnapshotNotFound,
    /// ListSnapshots ignores the snapshot_id filter.
    ListSnapshotsIgnoresSnapshotId,
    /// ControllerExpandVolume reports less than was asked for.
    ExpandReportsLess,
    /// ControllerGetCapabilities includes an UNKNOWN capability.
    ControllerCapabilityUnknown,
    /// NodeUnpublishVolume leaves the target directory behind.
    NodeUnpublishLeavesTarget,
    /// NodeGetVolumeStats answers OK where it should say NOT_FOUND.
    StatsNotFoundAnswersOk,
    /// NodeGetInfo returns no node id.
    NodeInfoWithoutNodeId,
    /// NodeStageVolume without a staging path says OK without doing anything.
    StageAcceptsNoStagingPath,
    /// DeleteVolume of a malformed id (not a UUID) answers INVALID_ARGUMENT instead of
    /// OK: the Go csi-sanity's `fake-vol-id` catches it.
    DeleteMalformedVolumeIdInvalid,
    /// NodeStageVolume and NodePublishVolume drop the capability's mount flags (a
    /// StorageClass's mountOptions never reach the mount).
    DropsMountFlags,
    /// CreateVolume never answers (a hostile driver: the call hangs until the client's
    /// deadline).
    CreateVolumeHangs,
    /// Snapshots in CreateSnapshot, ListSnapshots and GetSnapshot answers lack
    /// creation_time (a REQUIRED field; Go's verifySnapshotInfo).
    SnapshotWithoutCreationTime,
}

/// Forwards Identity, Controller and Node to the driver, with one fault.
#[derive(Clone)]
pub struct Proxy {
    identity: IdentityClient<Channel>,
    controller: ControllerClient<Channel>,
    node: NodeClient<Channel>,
    fault: Fault,
    volumes: Arc<Mutex<HashSet<String>>>,
    snapshots: Arc<Mutex<HashSet<String>>>,
}

/// A proxy serving on a socket; dropping it stops the server.
pub struct RunningProxy {
    pub endpoint: String,
    _dir: tempfile::TempDir,
    _stop: tokio::sync::oneshot::Sender<()>,
}

/// Clients of the three CSI services at `upstream`, for a proxy to forward to.
pub async fn connect_upstream(
    upstream: &str,
) -> (
    IdentityClient<Channel>,
    ControllerClient<Channel>,
    NodeClient<Channel>,
) {
    let channel = csi_sanity::connect::connect(upstream, std::time::Duration::from_secs(5))
        .await
        .expect("the proxy reaches the driver");
    (
        IdentityClient::new(channel.clone()),
        ControllerClient::new(channel.clone()),
        NodeClient::new(channel),
    )
}

/// Serve `proxy` as all three CSI services on a fresh socket.
pub fn serve_proxy<P: Identity + Controller + Node + Clone>(proxy: P) -> RunningProxy {
    let dir = tempfile::tempdir().unwrap();
    let socket: PathBuf = dir.path().join("proxy.sock");
    let listener = tokio::net::UnixListener::bind(&socket).unwrap();
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let server = tonic::transport::Server::builder()
        .add_service(IdentityServer::new(proxy.clone()))
        .add_service(ControllerServer::new(proxy.clone()))
        .add_service(NodeServer::new(proxy))
        .serve_with_incoming_shutdown(UnixListenerStream::new(listener), async {
            let _ = rx.await;
        });
    tokio::spawn(server);
    RunningProxy {
        endpoint: format!("unix://{}", socket.display()),
        _dir: dir,
        _stop: tx,
    }
}

impl Proxy {
    /// Serve a proxy to `upstream` with `fault` on a fresh socket.
    pub async fn start(upstream: &str, fault: Fault) -> RunningProxy {
        let (identity, controller, node) = connect_upstream(upstream).await;
        serve_proxy(Proxy {
            identity,
            controller,
            node,
            fault,
            volumes: Default::default(),
            snapshots: Default::default(),
        })
    }

    fn is(&self, fault: Fault) -> bool {
        self.fault == fault
    }
}

type Rpc<T> = Result<Response<T>, Status>;

#[tonic::async_trait]
impl Identity for Proxy {
    async fn get_plugin_info(
        &self,
        r: Request<GetPluginInfoRequest>,
    ) -> Rpc<GetPluginInfoResponse> {
        let mut resp = self
            .identity
            .clone()
            .get_plugin_info(r.into_inner())
            .await?;
        if self.is(Fault::PluginNameInvalid) {
            resp.get_mut().name = "Not A Valid Plugin Name!".into();
        }
        Ok(resp)
    }
    async fn get_plugin_capabilities(
        &self,
        r: Request<GetPluginCapabilitiesRequest>,
    ) -> Rpc<GetPluginCapabilitiesResponse> {
        self.identity
            .clone()
            .get_plugin_capabilities(r.into_inner())
            .await
    }
    async fn probe(&self, r: Request<ProbeRequest>) -> Rpc<ProbeResponse> {
        if self.is(Fault::ProbeFails) {
            return Err(Status::failed_precondition(
                "proxy: the backend is not ready",
            ));
        }
        self.identity.clone().probe(r.into_inner()).await
    }
}

#[tonic::async_trait]
impl Controller for Proxy {
    async fn create_volume(&self, r: Request<CreateVolumeRequest>) -> Rpc<CreateVolumeResponse> {
        let mut req = r.into_inner();
        if self.is(Fault::CreateVolumeHangs) {
            std::future::pending::<()>().await;
        }
        if self.is(Fault::CreateVolumeIgnoresCapacity) {
            req.capacity_range = None;
        }
        if self.is(Fault::CreateVolumeAcceptsNoName) && req.name.is_empty() {
            req.name = format!("proxy-{}", uuid::Uuid::new_v4().simple());
        }
        let resp = self.controller.clone().create_volume(req).await?;
        if let Some(v) = &resp.get_ref().volume {
            self.volumes.lock().unwrap().insert(v.volume_id.clone());
        }
        Ok(resp)
    }
    async fn delete_volume(&self, r: Request<DeleteVolumeRequest>) -> Rpc<DeleteVolumeResponse> {
        let req = r.into_inner();
        if self.is(Fault::DeleteUnknownVolumeNotFound)
            && !req.volume_id.is_empty()
            && !self.volumes.lock().unwrap().contains(&req.volume_id)
        {
            return Err(Status::not_found(format!(
                "proxy: no volume {}",
                req.volume_id
            )));
        }
        if self.is(Fault::DeleteMalformedVolumeIdInvalid)
            && !req.volume_id.is_empty()
            && uuid::Uuid::parse_str(&req.volume_id).is_err()
        {
            return Err(Status::invalid_argument(format!(
                "proxy: {} is not a volume id",
                req.volume_id
            )));
        }
        self.controller.clone().delete_volume(req).await
    }
    async fn controller_publish_volume(
        &self,
        r: Request<ControllerPublishVolumeRequest>,
    ) -> Rpc<ControllerPublishVolumeResponse> {
        let req = r.into_inner();
        if self.is(Fault::PublishAcceptsMissingNode)
            && !req.node_id.is_empty()
            && !["1", "2", "3"].contains(&req.node_id.as_str())
        {
            return Ok(Response::new(ControllerPublishVolumeResponse::default()));
        }
        self.controller.clone().controller_publish_volume(req).await
    }
    async fn controller_unpublish_volume(
        &self,
        r: Request<ControllerUnpublishVolumeRequest>,
    ) -> Rpc<ControllerUnpublishVolumeResponse> {
        self.controller
            .clone()
            .controller_unpublish_volume(r.into_inner())
            .await
    }
    async fn validate_volume_capabilities(
        &self,
        r: Request<ValidateVolumeCapabilitiesRequest>,
    ) -> Rpc<ValidateVolumeCapabilitiesResponse> {
        let mut resp = self
            .controller
            .clone()
            .validate_volume_capabilities(r.into_inner())
            .await?;
        if self.is(Fault::ValidateConfirmsNothing) {
            resp.get_mut().confirmed = None;
        }
        Ok(resp)
    }
    async fn list_volumes(&self, r: Request<ListVolumesRequest>) -> Rpc<ListVolumesResponse> {
        let mut req = r.into_inner();
        if self.is(Fault::ListVolumesIgnoresToken) {
            req.starting_token.clear();
        }
        self.controller.clone().list_volumes(req).await
    }
    async fn get_capacity(&self, r: Request<GetCapacityRequest>) -> Rpc<GetCapacityResponse> {
        self.controller.clone().get_capacity(r.into_inner()).await
    }
    async fn controller_get_capabilities(
        &self,
        r: Request<ControllerGetCapabilitiesRequest>,
    ) -> Rpc<ControllerGetCapabilitiesResponse> {
        let mut resp = self
            .controller
            .clone()
            .controller_get_capabilities(r.into_inner())
            .await?;
        if self.is(Fault::ControllerCapabilityUnknown) {
            resp.get_mut()
                .capabilities
                .push(ControllerServiceCapability {
                    r#type: Some(controller_service_capability::Type::Rpc(
                        controller_service_capability::Rpc { r#type: 0 },
                    )),
                });
        }
        Ok(resp)
    }
    async fn create_snapshot(
        &self,
        r: Request<CreateSnapshotRequest>,
    ) -> Rpc<CreateSnapshotResponse> {
        let mut req = r.into_inner();
        if self.is(Fault::CreateSnapshotIgnoresName) && !req.name.is_empty() {
            // A fresh name of the same length, so length limits still hold.
            let suffix = format!("-{}", &uuid::Uuid::new_v4().simple().to_string()[..6]);
            let keep = req.name.len().saturating_sub(suffix.len()).max(1);
            req.name = format!("{}{suffix}", &req.name[..keep]);
        }
        let mut resp = self.controller.clone().create_snapshot(req).await?;
        if let Some(s) = &resp.get_ref().snapshot {
            self.snapshots.lock().unwrap().insert(s.snapshot_id.clone());
        }
        if self.is(Fault::SnapshotWithoutCreationTime) {
            if let Some(s) = resp.get_mut().snapshot.as_mut() {
                s.creation_time = None;
            }
        }
        Ok(resp)
    }
    async fn delete_snapshot(
        &self,
        r: Request<DeleteSnapshotRequest>,
    ) -> Rpc<DeleteSnapshotResponse> {
        let req = r.into_inner();
        if self.is(Fault::DeleteUnknownSnapshotNotFound)
            && !req.snapshot_id.is_empty()
            && !self.snapshots.lock().unwrap().contains(&req.snapshot_id)
        {
            return Err(Status::not_found(format!(
                "proxy: no snapshot {}",
                req.snapshot_id
            )));
        }
        self.controller.clone().delete_snapshot(req).await
    }
    async fn list_snapshots(&self, r: Request<ListSnapshotsRequest>) -> Rpc<ListSnapshotsResponse> {
        let mut req = r.into_inner();
        if self.is(Fault::ListSnapshotsIgnoresSnapshotId) {
            req.snapshot_id.clear();
        }
        let mut resp = self.controller.clone().list_snapshots(req).await?;
        if self.is(Fault::SnapshotWithoutCreationTime) {
            for e in &mut resp.get_mut().entries {
                if let Some(s) = e.snapshot.as_mut() {
                    s.creation_time = None;
                }
            }
        }
        Ok(resp)
    }
    async fn get_snapshot(&self, r: Request<GetSnapshotRequest>) -> Rpc<GetSnapshotResponse> {
        let mut resp = self.controller.clone().get_snapshot(r.into_inner()).await?;
        if self.is(Fault::SnapshotWithoutCreationTime) {
            if let Some(s) = resp.get_mut().snapshot.as_mut() {
                s.creation_time = None;
            }
        }
        Ok(resp)
    }
    async fn controller_expand_volume(
        &self,
        r: Request<ControllerExpandVolumeRequest>,
    ) -> Rpc<ControllerExpandVolumeResponse> {
        let req = r.into_inner();
        let asked = req.capacity_range.map(|c| c.required_bytes).unwrap_or(0);
        let mut resp = self
            .controller
            .clone()
            .controller_expand_volume(req)
            .await?;
        if self.is(Fault::ExpandReportsLess) {
            resp.get_mut().capacity_bytes = asked / 2;
        }
        Ok(resp)
    }
    async fn controller_get_volume(
        &self,
        r: Request<ControllerGetVolumeRequest>,
    ) -> Rpc<ControllerGetVolumeResponse> {
        self.controller
            .clone()
            .controller_get_volume(r.into_inner())
            .await
    }
    async fn controller_modify_volume(
        &self,
        r: Request<ControllerModifyVolumeRequest>,
    ) -> Rpc<ControllerModifyVolumeResponse> {
        self.controller
            .clone()
            .controller_modify_volume(r.into_inner())
            .await
    }
}

#[tonic::async_trait]
impl Node for Proxy {
    async fn node_stage_volume(
        &self,
        r: Request<NodeStageVolumeRequest>,
    ) -> Rpc<NodeStageVolumeResponse> {
        let mut req = r.into_inner();
        if self.is(Fault::DropsMountFlags) {
            drop_mount_flags(req.volume_capability.as_mut());
        }
        if self.is(Fault::StageAcceptsNoStagingPath) && req.staging_target_path.is_empty() {
            return Ok(Response::new(NodeStageVolumeResponse {}));
        }
        self.node.clone().node_stage_volume(req).await
    }
    async fn node_unstage_volume(
        &self,
        r: Request<NodeUnstageVolumeRequest>,
    ) -> Rpc<NodeUnstageVolumeResponse> {
        self.node.clone().node_unstage_volume(r.into_inner()).await
    }
    async fn node_publish_volume(
        &self,
        r: Request<NodePublishVolumeRequest>,
    ) -> Rpc<NodePublishVolumeResponse> {
        let mut req = r.into_inner();
        if self.is(Fault::DropsMountFlags) {
            drop_mount_flags(req.volume_capability.as_mut());
        }
        self.node.clone().node_publish_volume(req).await
    }
    async fn node_unpublish_volume(
        &self,
        r: Request<NodeUnpublishVolumeRequest>,
    ) -> Rpc<NodeUnpublishVolumeResponse> {
        let req = r.into_inner();
        let target = req.target_path.clone();
        let resp = self.node.clone().node_unpublish_volume(req).await?;
        if self.is(Fault::NodeUnpublishLeavesTarget) && !target.is_empty() {
            let _ = std::fs::create_dir_all(&target);
        }
        Ok(resp)
    }
    async fn node_get_volume_stats(
        &self,
        r: Request<NodeGetVolumeStatsRequest>,
    ) -> Rpc<NodeGetVolumeStatsResponse> {
        match self
            .node
            .clone()
            .node_get_volume_stats(r.into_inner())
            .await
        {
            Err(s)
                if s.code() == tonic::Code::NotFound && self.is(Fault::StatsNotFoundAnswersOk) =>
            {
                Ok(Response::new(NodeGetVolumeStatsResponse {
                    usage: vec![VolumeUsage {
                        available: 1,
                        total: 1,
                        used: 0,
                        unit: 1,
                    }],
                    volume_condition: None,
                }))
            }
            other => other,
        }
    }
    async fn node_expand_volume(
        &self,
        r: Request<NodeExpandVolumeRequest>,
    ) -> Rpc<NodeExpandVolumeResponse> {
        self.node.clone().node_expand_volume(r.into_inner()).await
    }
    async fn node_get_capabilities(
        &self,
        r: Request<NodeGetCapabilitiesRequest>,
    ) -> Rpc<NodeGetCapabilitiesResponse> {
        self.node
            .clone()
            .node_get_capabilities(r.into_inner())
            .await
    }
    async fn node_get_info(&self, r: Request<NodeGetInfoRequest>) -> Rpc<NodeGetInfoResponse> {
        let mut resp = self.node.clone().node_get_info(r.into_inner()).await?;
        if self.is(Fault::NodeInfoWithoutNodeId) {
            resp.get_mut().node_id.clear();
        }
        Ok(resp)
    }
}

/// Clear the mount flags of a mount capability.
fn drop_mount_flags(cap: Option<&mut VolumeCapability>) {
    if let Some(volume_capability::AccessType::Mount(m)) = cap.and_then(|c| c.access_type.as_mut())
    {
        m.mount_flags.clear();
    }
}
