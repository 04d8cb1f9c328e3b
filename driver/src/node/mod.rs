//! The Node service: stage, publish, stats and expansion on this node's real devices.
//!
//! **Where to read.** This file holds the `Node` service: its RPC handlers first, each
//! checking its request and taking the volume's lock, then the service's plumbing. The
//! work of each RPC is in the file named for it: [`stage`] (NodeStageVolume), [`unstage`]
//! (NodeUnstageVolume), [`publish`] (NodePublishVolume and NodeUnpublishVolume),
//! [`stats`] (NodeGetVolumeStats), [`expand`] (NodeExpandVolume). Under them:
//! [`capability`] (what a volume capability asks for), `mounts` (what the mount table
//! says about a volume) and [`device_source`] (how a volume's device is found).
//!
//! **Finding the device.** ControllerPublishVolume hands the node a device link name
//! (`publish_context["device-link"]`, relative to `--device-dir`). NodeStageVolume asks the
//! node's [`DeviceSource`] to make the device appear behind that link, bounded by the
//! request's deadline. In production (`--device-source digitalocean`) the hypervisor
//! plugs the volume in and the node waits for the link. The fake cloud's source
//! (`--device-source loop`, feature `fake-cloud`, `loop_source.rs`) plays the hypervisor
//! itself: it attaches the volume's image as a loop device and makes the link, and
//! NodeUnstageVolume detaches it again.
//!
//! **No state of our own.** Whether a volume is staged or published, where, and how, is
//! read from `/proc/self/mountinfo` every time, never from memory, so every call is
//! idempotent across retries and driver restarts. A second call on a volume while one is
//! in flight gets ABORTED; a call whose client gives up still runs to its end (it runs in
//! its own task), so a retry finds finished work rather than half-done work.
//!
//! **Formatting.** A device is formatted only when `blkid -p` finds no signature at all.
//! A filesystem of another type than requested, a partition table or anything else blkid
//! recognises is left alone and the call fails with FAILED_PRECONDITION.
//!
//! **Expansion.** NodeExpandVolume has the device source refresh the device's size and
//! grows a mounted filesystem: xfs online with xfs_growfs; ext4 online with resize2fs, which
//! needs CAP_SYS_RESOURCE: where that fails, the call fails with FAILED_PRECONDITION
//! quoting resize2fs. The honest way for ext4 then is offline: NodeStageVolume checks
//! whether an ext4 filesystem is smaller than its device (the controller grew the volume
//! while it was unstaged) and runs `e2fsck -f -p` and `resize2fs` before mounting it, so
//! unstage → ControllerExpandVolume → stage grows it. (Stage grows a too-small xfs too,
//! online, right after mounting.) Success is reported only once the filesystem's own
//! size covers the device and statvfs shows the growth.
//!
//! **Raw block volumes.** Staging one formats and mounts nothing from the device; it
//! bind-mounts the device node onto `<staging_target_path>/block-device`, a file the node
//! creates (never through a symlink) and removes again on unstage. That bind is the
//! record, in mountinfo like everything else, that the volume is staged there as a raw
//! block device: a filesystem stage at a path holding it, or a raw block stage at a path
//! holding a filesystem, is ALREADY_EXISTS, and publish checks it the way a filesystem
//! publish checks the staging mount. Publishing bind-mounts the device node onto a target
//! file the node creates.
//!
//! **Paths.** Request paths are checked by [`crate::mount::paths`]: nothing outside the
//! staging or target path is created, mounted or removed, and a target whose final
//! component is a symlink is refused. The node creates the target path (a directory, or a
//! file for a raw block volume) and removes it on unpublish; the staging path belongs to
//! the CO and is only mounted on and unmounted.

mod capability;
pub mod device_source;
pub mod error;
mod expand;
#[cfg(feature = "fake-cloud")]
mod loop_source;
mod mounts;
mod publish;
mod stage;
mod stats;
mod unstage;

use std::future::Future;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use csi_proto::v1::node_server::Node;
use csi_proto::v1::node_service_capability::rpc::Type as RpcType;
use csi_proto::v1::*;
use tokio::time::Instant;
use tonic::{Request, Response, Status};

use crate::cloud::deadline;
use crate::config::TOPOLOGY_REGION_KEY;
use crate::locks::{LockError, OperationGuard};
use crate::mount::paths;
use crate::mount::MountError;
use crate::Driver;
use capability::Capability;
use device_source::Janitor;
pub use device_source::{DeviceSource, Found, HypervisorLinks, Plugged};
use error::NodeError;
pub use mounts::BLOCK_RECORD;

/// Serves Node on this machine.
#[derive(Clone)]
pub struct NodeService {
    driver: Arc<Driver>,
    /// How this node finds a volume's device.
    source: Arc<dyn DeviceSource>,
    /// Shared by every clone, so it runs when the last one goes: once the server has
    /// stopped and no node operation is still running.
    _janitor: Arc<Janitor>,
}

#[tonic::async_trait]
impl Node for NodeService {
    async fn node_stage_volume(
        &self,
        request: Request<NodeStageVolumeRequest>,
    ) -> Result<Response<NodeStageVolumeResponse>, Status> {
        let deadline = deadline_of(&request);
        let r = request.into_inner();
        paths::validate_volume_id(&r.volume_id)?;
        let staging = paths::validate("staging_target_path", &r.staging_target_path)?;
        let capability = Capability::parse(r.volume_capability.as_ref())?;
        self.locked(r.volume_id, |node, volume_id| async move {
            node.stage(volume_id, staging, capability, r.publish_context, deadline)
                .await
        })
        .await?;
        Ok(Response::new(NodeStageVolumeResponse {}))
    }

    async fn node_unstage_volume(
        &self,
        request: Request<NodeUnstageVolumeRequest>,
    ) -> Result<Response<NodeUnstageVolumeResponse>, Status> {
        let r = request.into_inner();
        paths::validate_volume_id(&r.volume_id)?;
        let staging = paths::validate("staging_target_path", &r.staging_target_path)?;
        self.locked(r.volume_id, |node, volume_id| async move {
            node.unstage(volume_id, staging).await
        })
        .await?;
        Ok(Response::new(NodeUnstageVolumeResponse {}))
    }

    async fn node_publish_volume(
        &self,
        request: Request<NodePublishVolumeRequest>,
    ) -> Result<Response<NodePublishVolumeResponse>, Status> {
        let r = request.into_inner();
        paths::validate_volume_id(&r.volume_id)?;
        let target = paths::validate("target_path", &r.target_path)?;
        let capability = Capability::parse(r.volume_capability.as_ref())?;
        // spec: with STAGE_UNSTAGE_VOLUME advertised, a missing staging path is
        // FAILED_PRECONDITION, not INVALID_ARGUMENT.
        let staging =
            optional_path("staging_target_path", &r.staging_target_path)?.ok_or_else(|| {
                MountError::NotStaged {
                    volume_id: r.volume_id.clone(),
                    reason: "staging_target_path is empty, and this node stages volumes".into(),
                }
            })?;
        self.locked(r.volume_id, |node, volume_id| async move {
            node.publish(
                volume_id,
                staging,
                target,
                capability,
                r.readonly,
                r.publish_context,
            )
            .await
        })
        .await?;
        Ok(Response::new(NodePublishVolumeResponse {}))
    }

    async fn node_unpublish_volume(
        &self,
        request: Request<NodeUnpublishVolumeRequest>,
    ) -> Result<Response<NodeUnpublishVolumeResponse>, Status> {
        let r = request.into_inner();
        paths::validate_volume_id(&r.volume_id)?;
        let target = paths::validate("target_path", &r.target_path)?;
        self.locked(r.volume_id, |node, volume_id| async move {
            node.unpublish(volume_id, target).await
        })
        .await?;
        Ok(Response::new(NodeUnpublishVolumeResponse {}))
    }

    async fn node_get_volume_stats(
        &self,
        request: Request<NodeGetVolumeStatsRequest>,
    ) -> Result<Response<NodeGetVolumeStatsResponse>, Status> {
        let r = request.into_inner();
        require("volume_id", &r.volume_id)?;
        require("volume_path", &r.volume_path)?;
        paths::validate_volume_id(&r.volume_id)?;
        self.source.check_exists(&r.volume_id)?;
        // No volume is ever published or staged at a relative path, so the answer for one
        // is NOT_FOUND ("the volume does not exist on the specified path"), and it needs no
        // filesystem access. Other malformed paths stay INVALID_ARGUMENT.
        if !r.volume_path.starts_with('/') {
            return Err(MountError::NotMounted {
                path: PathBuf::from(crate::status::shown(&r.volume_path)),
                reason: "a relative path holds no volume".into(),
            }
            .into());
        }
        let path = paths::validate("volume_path", &r.volume_path)?;
        let staging = optional_path("staging_target_path", &r.staging_target_path)?;
        // Read-only and frequent (kubelet polls it), so it takes no lock.
        let node = self.clone();
        let response = tokio::task::spawn_blocking(move || {
            node.stats(&r.volume_id, &path, staging.as_deref())
        })
        .await
        .map_err(|source| NodeError::TaskFailed {
            what: "NodeGetVolumeStats",
            source,
        })??;
        Ok(Response::new(response))
    }

    async fn node_expand_volume(
        &self,
        request: Request<NodeExpandVolumeRequest>,
    ) -> Result<Response<NodeExpandVolumeResponse>, Status> {
        let r = request.into_inner();
        require("volume_id", &r.volume_id)?;
        require("volume_path", &r.volume_path)?;
        paths::validate_volume_id(&r.volume_id)?;
        self.source.check_exists(&r.volume_id)?;
        let path = paths::validate("volume_path", &r.volume_path)?;
        optional_path("staging_target_path", &r.staging_target_path)?;
        if r.volume_capability.is_some() {
            Capability::parse(r.volume_capability.as_ref())?;
        }
        let required = match r.capacity_range {
            Some(range) if range.required_bytes < 0 || range.limit_bytes < 0 => {
                return Err(MountError::InvalidField {
                    field: "capacity_range",
                    value: format!("{range:?}"),
                    reason: "sizes cannot be negative".into(),
                }
                .into())
            }
            Some(range) => range.required_bytes.unsigned_abs(),
            None => 0,
        };
        let capacity = self
            .locked(r.volume_id, |node, volume_id| async move {
                node.expand(volume_id, path, required).await
            })
            .await?;
        Ok(Response::new(NodeExpandVolumeResponse {
            capacity_bytes: clamp(capacity),
        }))
    }

    async fn node_get_capabilities(
        &self,
        _request: Request<NodeGetCapabilitiesRequest>,
    ) -> Result<Response<NodeGetCapabilitiesResponse>, Status> {
        let capabilities = CAPABILITIES
            .iter()
            .map(|&t| NodeServiceCapability {
                r#type: Some(node_service_capability::Type::Rpc(
                    node_service_capability::Rpc { r#type: t as i32 },
                )),
            })
            .collect();
        Ok(Response::new(NodeGetCapabilitiesResponse { capabilities }))
    }

    async fn node_get_info(
        &self,
        _request: Request<NodeGetInfoRequest>,
    ) -> Result<Response<NodeGetInfoResponse>, Status> {
        let node_id = self.driver.node_id.clone().ok_or(NodeError::NoNodeId)?;
        Ok(Response::new(NodeGetInfoResponse {
            node_id,
            max_volumes_per_node: self.driver.config.max_volumes_per_node,
            accessible_topology: Some(Topology {
                segments: [(
                    TOPOLOGY_REGION_KEY.to_string(),
                    self.driver.config.region.clone(),
                )]
                .into_iter()
                .collect(),
            }),
        }))
    }
}

/// The node capabilities, each one implemented.
const CAPABILITIES: &[RpcType] = &[
    RpcType::StageUnstageVolume,
    RpcType::GetVolumeStats,
    RpcType::ExpandVolume,
    RpcType::VolumeCondition,
    RpcType::SingleNodeMultiWriter,
];

impl NodeService {
    /// The Node service of `driver`, which must serve Node (it then has a device source).
    pub fn new(driver: Arc<Driver>) -> Self {
        let source = driver
            .device_source
            .clone()
            .unwrap_or_else(|| Arc::new(HypervisorLinks));
        Self {
            driver,
            _janitor: Arc::new(Janitor(source.clone())),
            source,
        }
    }

    fn lock(&self, volume_id: &str) -> Result<OperationGuard, LockError> {
        // Node keys are their own: a controller call on the same volume is not a conflict.
        self.driver.locks.take(&format!("node/{volume_id}"))
    }

    /// Runs `work` on this volume under its lock, detached from the request (see
    /// [`detached`]). `work` gets its own handle on the service and the volume id.
    async fn locked<T, F, Fut>(&self, volume_id: String, work: F) -> Result<T, Status>
    where
        T: Send + 'static,
        F: FnOnce(NodeService, String) -> Fut,
        Fut: Future<Output = Result<T, MountError>> + Send + 'static,
    {
        let guard = self.lock(&volume_id)?;
        detached(guard, work(self.clone(), volume_id)).await
    }
}

/// When to stop waiting for this request: its gRPC deadline (or
/// [`deadline::DEFAULT_TIMEOUT`]), less the node's margin, so the caller still hears why.
fn deadline_of<T>(request: &Request<T>) -> Instant {
    let timeout =
        deadline::requested_timeout(request.metadata()).unwrap_or(deadline::DEFAULT_TIMEOUT);
    // The node's margin: a tenth of the timeout, at most a second (a device may take long
    // to appear, and the answer is cheap once it has).
    let margin = (timeout / 10).min(Duration::from_secs(1));
    Instant::now() + (timeout - margin)
}

/// A required string field.
fn require(field: &'static str, value: &str) -> Result<(), MountError> {
    if value.is_empty() {
        Err(MountError::MissingField { field })
    } else {
        Ok(())
    }
}

/// An optional path field: validated when present.
fn optional_path(field: &'static str, value: &str) -> Result<Option<PathBuf>, MountError> {
    if value.is_empty() {
        Ok(None)
    } else {
        paths::validate(field, value).map(Some)
    }
}

/// Run an operation in its own task, holding the volume's lock until it ends: a client
/// that gives up does not cut the operation short halfway.
async fn detached<T, F>(guard: OperationGuard, work: F) -> Result<T, Status>
where
    T: Send + 'static,
    F: Future<Output = Result<T, MountError>> + Send + 'static,
{
    let task = tokio::spawn(async move {
        let _guard = guard;
        work.await
    });
    match task.await {
        Ok(result) => result.map_err(Status::from),
        Err(source) => Err(NodeError::TaskFailed {
            what: "node operation",
            source,
        }
        .into()),
    }
}

/// A byte count as the `int64` CSI messages carry.
fn clamp(value: u64) -> i64 {
    i64::try_from(value).unwrap_or(i64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mount_errors_map_to_the_codes_the_spec_expects() {
        use tonic::Code;
        let path = || PathBuf::from("/p");
        let cases = [
            (
                MountError::MissingField { field: "volume_id" },
                Code::InvalidArgument,
            ),
            (
                MountError::VolumeNotFound {
                    volume_id: "v".into(),
                    reason: "no image".into(),
                },
                Code::NotFound,
            ),
            (
                MountError::NotMounted {
                    path: path(),
                    reason: "not a mount point".into(),
                },
                Code::NotFound,
            ),
            (
                MountError::Conflict {
                    path: path(),
                    existing: "a".into(),
                    requested: "b".into(),
                },
                Code::AlreadyExists,
            ),
            (
                MountError::PublishedElsewhere {
                    volume_id: "v".into(),
                    other: path(),
                    mode: "SINGLE_NODE_WRITER".into(),
                },
                Code::FailedPrecondition,
            ),
            (
                MountError::NotStaged {
                    volume_id: "v".into(),
                    reason: "r".into(),
                },
                Code::FailedPrecondition,
            ),
            (
                MountError::CannotGrow {
                    path: path(),
                    fs_type: "ext4".into(),
                    reason: "resize2fs: Permission denied".into(),
                },
                Code::FailedPrecondition,
            ),
            (
                MountError::Timeout {
                    what: "w".into(),
                    waited: Duration::from_secs(1),
                },
                Code::DeadlineExceeded,
            ),
            (
                MountError::Spawn {
                    program: "mkfs.xfs".into(),
                    source: std::io::Error::from(std::io::ErrorKind::NotFound),
                },
                Code::FailedPrecondition,
            ),
            (
                MountError::Command {
                    program: "mkfs.ext4".into(),
                    args: "/dev/loop0".into(),
                    status: "exit code 1".into(),
                    stderr: "boom".into(),
                },
                Code::Internal,
            ),
        ];
        for (err, code) in cases {
            let message = err.to_string();
            let status = Status::from(err);
            assert_eq!(status.code(), code, "{message}");
            assert_eq!(status.message(), message);
        }
    }
}
