//! The Controller service: volumes, attachments, snapshots and expansion in the cloud.
//!
//! The driver is stateless: the cloud is the source of truth, and every RPC reads it
//! before it changes it, so a retried call finds what the first one did and continues from
//! there. A volume's CSI name and source live in its description ([`names::VolumeRecord`]).
//! Attach, detach and resize are cloud actions, waited on by [`wait_for_action`] within the
//! request's deadline; a call retried after a timeout finds the action in flight and waits
//! on it instead of starting another. A second operation on a volume (or volume or
//! snapshot name) while one is in flight gets ABORTED at once.
//!
//! Every RPC's handler is in the `impl Controller` block at the top of this file; the
//! volume RPCs are served there, and the others hand over to a file by job:
//! `publish.rs` (ControllerPublish/Unpublish, with `attachments.rs` for the quick way and
//! the droplet's turn), `snapshots.rs`, `expand.rs`. `params.rs` judges requests,
//! `paging.rs` issues list tokens, and `error.rs` names every failure, which
//! [`crate::status`] turns into a code.

mod attachments;
pub mod error;
mod expand;
mod paging;
pub mod params;
mod publish;
mod snapshots;

use std::collections::HashMap;
use std::sync::Arc;

use csi_proto::v1::controller_server::Controller;
use csi_proto::v1::controller_service_capability::rpc::Type as Rpc;
use csi_proto::v1::volume_content_source::{SnapshotSource, Type as SourceType, VolumeSource};
use csi_proto::v1::*;
use futures::stream::{self, StreamExt, TryStreamExt};
use tonic::{Request, Response, Status};

use crate::cloud::names::{self, VolumeRecord};
use crate::cloud::wait::wait_for_action;
use crate::cloud::{
    self, Action, ActionKind, ActionStatus, CloudApi, CloudError, Deadline, NewVolume, GIB,
    MAX_VOLUME_GIB, MIN_VOLUME_GIB,
};
use crate::config::{self, PUBLISH_CONTEXT_DEVICE_LINK, PUBLISH_CONTEXT_VOLUME_NAME};
use crate::locks::OperationGuard;
use crate::Driver;
use error::{ControllerError, VolumeDiffers};
use params::{
    check_capabilities, check_capability, check_map_size, region_topology, require, Placement,
};

/// What this Controller advertises: exactly what works.
pub const CAPABILITIES: [Rpc; 14] = [
    Rpc::CreateDeleteVolume,
    Rpc::PublishUnpublishVolume,
    Rpc::ListVolumes,
    Rpc::GetCapacity,
    Rpc::CreateDeleteSnapshot,
    Rpc::ListSnapshots,
    Rpc::CloneVolume,
    Rpc::ExpandVolume,
    Rpc::ListVolumesPublishedNodes,
    Rpc::VolumeCondition,
    Rpc::GetVolume,
    Rpc::ModifyVolume,
    Rpc::GetSnapshot,
    Rpc::SingleNodeMultiWriter,
];

/// An action in progress longer than this makes the volume's condition abnormal.
const STUCK_AFTER: chrono::TimeDelta = chrono::TimeDelta::minutes(10);

/// Volume conditions fetched at once by ListVolumes.
const CONDITION_CONCURRENCY: usize = 8;

/// How many times a call re-reads the cloud after a race before giving up.
const RECONCILE_ROUNDS: usize = 4;

/// Serves Controller over the driver's cloud.
pub struct ControllerService {
    driver: Arc<Driver>,
}

impl ControllerService {
    pub fn new(driver: Arc<Driver>) -> Self {
        Self { driver }
    }

    /// Holds off a second operation on the same `kind/id` until this one is done.
    fn lock(&self, kind: &str, id: &str) -> Result<OperationGuard, ControllerError> {
        Ok(self.driver.locks.take(&format!("{kind}/{id}"))?)
    }

    fn cloud(&self) -> Result<&dyn CloudApi, ControllerError> {
        self.driver.cloud.as_deref().ok_or(ControllerError::NoCloud)
    }
}

type RpcResult<T> = Result<Response<T>, Status>;

#[tonic::async_trait]
impl Controller for ControllerService {
    async fn create_volume(
        &self,
        request: Request<CreateVolumeRequest>,
    ) -> RpcResult<CreateVolumeResponse> {
        let deadline = Deadline::from_metadata(request.metadata());
        let req = request.into_inner();
        require(&req.name, "name")?;
        check_capabilities(&req.volume_capabilities, "volume_capabilities")?;
        check_map_size(&req.parameters, "parameters")?;
        check_map_size(&req.mutable_parameters, "mutable_parameters")?;
        let params = params::parse_create_params(&req.parameters)?;
        let mutable = params::parse_mutable_params(&req.mutable_parameters)?;
        let range = req.capacity_range.as_ref();
        let size_gib = params::size_for_range(range)?;
        let source = Source::from_request(req.volume_content_source.as_ref())?;

        let _guard = self.lock("volume-name", &req.name)?;
        let cloud = self.cloud()?;
        let placement = Placement {
            requirement: req.accessibility_requirements.as_ref(),
            parameter: params.region.as_deref(),
            source: None,
            default: &self.driver.config.region,
        };
        let wanted = Wanted {
            name: &req.name,
            range,
            source: &source,
            placement,
        };
        if let Some(existing) = find_volume(cloud, &req.name, deadline).await? {
            wanted.check(&existing)?;
            return Ok(Response::new(CreateVolumeResponse {
                volume: Some(csi_volume(&existing)),
            }));
        }

        let (source_region, min_gib) = match &source {
            Source::Blank => (None, MIN_VOLUME_GIB),
            Source::Snapshot(id) => match cloud.get_snapshot(id, deadline).await {
                Ok(s) => (Some(s.region), s.min_disk_size_gib),
                Err(CloudError::NotFound { .. }) => {
                    return Err(ControllerError::SourceSnapshotNotFound {
                        snapshot_id: id.clone(),
                    }
                    .into())
                }
                Err(e) => return Err(e.into()),
            },
            Source::Volume(id) => match cloud.get_volume(id, deadline).await {
                Ok(v) => (Some(v.region), v.size_gib),
                Err(CloudError::NotFound { .. }) => {
                    return Err(ControllerError::SourceVolumeNotFound {
                        volume_id: id.clone(),
                    }
                    .into())
                }
                Err(e) => return Err(e.into()),
            },
        };
        let size_gib = params::fit_to_source(range, size_gib, min_gib, &source.describe())?;
        let available = cloud.regions(deadline).await?;
        let region = Placement {
            source: source_region.as_deref(),
            ..placement
        }
        .choose(&available)?;

        let record = VolumeRecord {
            csi_name: req.name.clone(),
            source_snapshot: match &source {
                Source::Snapshot(id) => Some(id.clone()),
                _ => None,
            },
            source_volume: match &source {
                Source::Volume(id) => Some(id.clone()),
                _ => None,
            },
            pvc: params.pvc.clone(),
            pv: params.pv.clone(),
        };
        let mut tags = params.tags.clone();
        for tag in mutable.tags.unwrap_or_default() {
            if !tags.contains(&tag) {
                tags.push(tag);
            }
        }
        let new = NewVolume {
            name: names::cloud_volume_name(&req.name),
            region,
            size_gib,
            description: record.to_description(),
            snapshot_id: record.source_snapshot.clone(),
            tags,
        };
        let created = match &source {
            Source::Volume(id) => cloud.clone_volume(id, new, deadline).await,
            _ => cloud.create_volume(new, deadline).await,
        };
        let volume = match created {
            Ok(v) => v,
            // A retried request whose first attempt was applied but whose answer was lost,
            // or a concurrent create: the volume is there now.
            Err(e @ CloudError::NameInUse { .. }) => {
                match find_volume(cloud, &req.name, deadline).await? {
                    Some(existing) => {
                        wanted.check(&existing)?;
                        existing
                    }
                    None => return Err(e.into()),
                }
            }
            Err(CloudError::NotFound { message }) if source != Source::Blank => {
                return Err(ControllerError::SourceGone {
                    origin: source.describe(),
                    message,
                }
                .into())
            }
            Err(e) => return Err(e.into()),
        };
        Ok(Response::new(CreateVolumeResponse {
            volume: Some(csi_volume(&volume)),
        }))
    }

    async fn delete_volume(
        &self,
        request: Request<DeleteVolumeRequest>,
    ) -> RpcResult<DeleteVolumeResponse> {
        let deadline = Deadline::from_metadata(request.metadata());
        let req = request.into_inner();
        require(&req.volume_id, "volume_id")?;
        let _guard = self.lock("volume", &req.volume_id)?;
        let cloud = self.cloud()?;
        // Delete straight away: the cloud refuses an attached volume itself, and only
        // then is the volume read, to name the node in the answer. One request, not two,
        // on the usual path.
        let message = match cloud.delete_volume(&req.volume_id, deadline).await {
            // spec: DeleteVolume of an unknown id MUST succeed.
            Ok(()) | Err(CloudError::NotFound { .. }) => {
                return Ok(Response::new(DeleteVolumeResponse {}))
            }
            Err(CloudError::VolumeInUse { message }) => message,
            Err(e) => return Err(e.into()),
        };
        let volume = match cloud.get_volume(&req.volume_id, deadline).await {
            Ok(v) => v,
            Err(CloudError::NotFound { .. }) => return Ok(Response::new(DeleteVolumeResponse {})),
            Err(e) => return Err(e.into()),
        };
        match volume.droplet_ids.first() {
            Some(&node) => Err(ControllerError::StillPublished {
                volume_id: volume.id,
                node,
            }
            .into()),
            None => Err(ControllerError::VolumeInUse {
                volume_id: volume.id,
                message,
            }
            .into()),
        }
    }

    async fn controller_publish_volume(
        &self,
        request: Request<ControllerPublishVolumeRequest>,
    ) -> RpcResult<ControllerPublishVolumeResponse> {
        self.publish(request).await
    }

    async fn controller_unpublish_volume(
        &self,
        request: Request<ControllerUnpublishVolumeRequest>,
    ) -> RpcResult<ControllerUnpublishVolumeResponse> {
        self.unpublish(request).await
    }

    async fn validate_volume_capabilities(
        &self,
        request: Request<ValidateVolumeCapabilitiesRequest>,
    ) -> RpcResult<ValidateVolumeCapabilitiesResponse> {
        let deadline = Deadline::from_metadata(request.metadata());
        let req = request.into_inner();
        require(&req.volume_id, "volume_id")?;
        if req.volume_capabilities.is_empty() {
            return Err(ControllerError::Missing {
                field: "volume_capabilities",
            }
            .into());
        }
        check_map_size(&req.parameters, "parameters")?;
        check_map_size(&req.mutable_parameters, "mutable_parameters")?;
        check_map_size(&req.volume_context, "volume_context")?;
        let cloud = self.cloud()?;
        existing_volume(cloud, &req.volume_id, deadline).await?;
        let unsupported =
            params::first_unsupported(&req.volume_capabilities, "volume_capabilities")
                .or_else(|| {
                    params::parse_create_params(&req.parameters)
                        .err()
                        .map(Into::into)
                })
                .or_else(|| {
                    params::parse_mutable_params(&req.mutable_parameters)
                        .err()
                        .map(Into::into)
                })
                .map(|e: ControllerError| e.to_string());
        if let Some(message) = unsupported {
            return Ok(Response::new(ValidateVolumeCapabilitiesResponse {
                confirmed: None,
                message,
            }));
        }
        Ok(Response::new(ValidateVolumeCapabilitiesResponse {
            confirmed: Some(validate_volume_capabilities_response::Confirmed {
                volume_context: req.volume_context,
                volume_capabilities: req.volume_capabilities,
                parameters: req.parameters,
                mutable_parameters: req.mutable_parameters,
            }),
            message: String::new(),
        }))
    }

    async fn list_volumes(
        &self,
        request: Request<ListVolumesRequest>,
    ) -> RpcResult<ListVolumesResponse> {
        let deadline = Deadline::from_metadata(request.metadata());
        let req = request.into_inner();
        let cloud = self.cloud()?;
        // Check the token before asking the cloud for anything.
        paging::validate(&req.starting_token, "volumes", req.max_entries)?;
        let volumes = cloud.list_volumes(deadline).await?;
        let page = paging::page(
            volumes,
            |v| (v.created_at, v.id.as_str()),
            "volumes",
            &req.starting_token,
            req.max_entries,
        )?;
        let entries: Vec<list_volumes_response::Entry> = stream::iter(page.items)
            .map(|v| async move {
                let condition = volume_condition(cloud, &v.id, deadline).await?;
                Ok::<_, CloudError>(list_volumes_response::Entry {
                    volume: Some(csi_volume(&v)),
                    status: Some(list_volumes_response::VolumeStatus {
                        published_node_ids: published_node_ids(&v),
                        volume_condition: Some(condition),
                    }),
                })
            })
            .buffered(CONDITION_CONCURRENCY)
            .try_collect()
            .await?;
        Ok(Response::new(ListVolumesResponse {
            entries,
            next_token: page.next_token,
        }))
    }

    async fn get_capacity(
        &self,
        request: Request<GetCapacityRequest>,
    ) -> RpcResult<GetCapacityResponse> {
        let deadline = Deadline::from_metadata(request.metadata());
        let req = request.into_inner();
        check_map_size(&req.parameters, "parameters")?;
        let params = params::parse_create_params(&req.parameters)?;
        let cloud = self.cloud()?;
        let answer = |available: i64| {
            Ok(Response::new(GetCapacityResponse {
                available_capacity: available,
                maximum_volume_size: Some(gib_bytes(MAX_VOLUME_GIB)),
                minimum_volume_size: Some(gib_bytes(MIN_VOLUME_GIB)),
            }))
        };
        // Capacity for volumes this driver can't make is zero.
        if req
            .volume_capabilities
            .iter()
            .any(|c| params::capability_support(c).is_err())
        {
            return answer(0);
        }
        let topology_region = match &req.accessible_topology {
            None => None,
            Some(t) => match params::term_region(t) {
                Some(r) => Some(r),
                None => return answer(0),
            },
        };
        if let (Some(t), Some(p)) = (topology_region, params.region.as_deref()) {
            if t != p {
                return answer(0);
            }
        }
        if let Some(region) = topology_region.or(params.region.as_deref()) {
            if !cloud.regions(deadline).await?.iter().any(|r| r == region) {
                return answer(0);
            }
        }
        let account = cloud.account(deadline).await?;
        let available = match (account.quota_gib, account.used_gib) {
            (Some(quota), used) => gib_bytes(quota.saturating_sub(used.unwrap_or(0))),
            // The API reports no quota (DigitalOcean): the largest volume is the honest bound.
            (None, _) => gib_bytes(MAX_VOLUME_GIB),
        };
        answer(available)
    }

    async fn controller_get_capabilities(
        &self,
        _request: Request<ControllerGetCapabilitiesRequest>,
    ) -> RpcResult<ControllerGetCapabilitiesResponse> {
        let capabilities = CAPABILITIES
            .iter()
            .map(|rpc| ControllerServiceCapability {
                r#type: Some(controller_service_capability::Type::Rpc(
                    controller_service_capability::Rpc {
                        r#type: *rpc as i32,
                    },
                )),
            })
            .collect();
        Ok(Response::new(ControllerGetCapabilitiesResponse {
            capabilities,
        }))
    }

    async fn create_snapshot(
        &self,
        request: Request<CreateSnapshotRequest>,
    ) -> RpcResult<CreateSnapshotResponse> {
        self.snapshot_create(request).await
    }

    async fn delete_snapshot(
        &self,
        request: Request<DeleteSnapshotRequest>,
    ) -> RpcResult<DeleteSnapshotResponse> {
        self.snapshot_delete(request).await
    }

    async fn list_snapshots(
        &self,
        request: Request<ListSnapshotsRequest>,
    ) -> RpcResult<ListSnapshotsResponse> {
        self.snapshot_list(request).await
    }

    async fn get_snapshot(
        &self,
        request: Request<GetSnapshotRequest>,
    ) -> RpcResult<GetSnapshotResponse> {
        self.snapshot_get(request).await
    }

    async fn controller_expand_volume(
        &self,
        request: Request<ControllerExpandVolumeRequest>,
    ) -> RpcResult<ControllerExpandVolumeResponse> {
        self.expand(request).await
    }

    async fn controller_get_volume(
        &self,
        request: Request<ControllerGetVolumeRequest>,
    ) -> RpcResult<ControllerGetVolumeResponse> {
        let deadline = Deadline::from_metadata(request.metadata());
        let req = request.into_inner();
        require(&req.volume_id, "volume_id")?;
        let cloud = self.cloud()?;
        let volume = existing_volume(cloud, &req.volume_id, deadline).await?;
        let condition = volume_condition(cloud, &volume.id, deadline).await?;
        Ok(Response::new(ControllerGetVolumeResponse {
            volume: Some(csi_volume(&volume)),
            status: Some(controller_get_volume_response::VolumeStatus {
                published_node_ids: published_node_ids(&volume),
                volume_condition: Some(condition),
            }),
        }))
    }

    async fn controller_modify_volume(
        &self,
        request: Request<ControllerModifyVolumeRequest>,
    ) -> RpcResult<ControllerModifyVolumeResponse> {
        let deadline = Deadline::from_metadata(request.metadata());
        let req = request.into_inner();
        require(&req.volume_id, "volume_id")?;
        check_map_size(&req.mutable_parameters, "mutable_parameters")?;
        let _guard = self.lock("volume", &req.volume_id)?;
        let cloud = self.cloud()?;
        // An unknown volume is NOT_FOUND whatever the parameters say; the spec's error
        // table puts "volume does not exist" before any parameter judgement.
        existing_volume(cloud, &req.volume_id, deadline).await?;
        // Validate everything before applying anything. Empty mutable_parameters ask for
        // no change: "only the keys given are modified", so the answer is OK.
        let mutable = params::parse_mutable_params(&req.mutable_parameters)?;
        if let Some(tags) = mutable.tags {
            cloud
                .set_volume_tags(&req.volume_id, tags, deadline)
                .await
                .map_err(|e| volume_error(&req.volume_id, e))?;
        }
        Ok(Response::new(ControllerModifyVolumeResponse {}))
    }
}

/// A volume's source, as requested.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Source {
    Blank,
    Snapshot(String),
    Volume(String),
}

impl Source {
    fn from_request(source: Option<&VolumeContentSource>) -> Result<Source, ControllerError> {
        match source.and_then(|s| s.r#type.as_ref()) {
            None => Ok(Source::Blank),
            Some(SourceType::Snapshot(s)) => {
                require(&s.snapshot_id, "volume_content_source.snapshot.snapshot_id")?;
                Ok(Source::Snapshot(s.snapshot_id.clone()))
            }
            Some(SourceType::Volume(v)) => {
                require(&v.volume_id, "volume_content_source.volume.volume_id")?;
                Ok(Source::Volume(v.volume_id.clone()))
            }
        }
    }

    fn of_record(record: &VolumeRecord) -> Source {
        match (&record.source_snapshot, &record.source_volume) {
            (Some(s), _) => Source::Snapshot(s.clone()),
            (None, Some(v)) => Source::Volume(v.clone()),
            (None, None) => Source::Blank,
        }
    }

    fn to_csi(&self) -> Option<VolumeContentSource> {
        let r#type = match self {
            Source::Blank => return None,
            Source::Snapshot(id) => SourceType::Snapshot(SnapshotSource {
                snapshot_id: id.clone(),
            }),
            Source::Volume(id) => SourceType::Volume(VolumeSource {
                volume_id: id.clone(),
            }),
        };
        Some(VolumeContentSource {
            r#type: Some(r#type),
        })
    }

    fn describe(&self) -> String {
        match self {
            Source::Blank => "no source".to_string(),
            Source::Snapshot(id) => format!("snapshot {id}"),
            Source::Volume(id) => format!("volume {id}"),
        }
    }
}

fn gib_bytes(gib: u64) -> i64 {
    i64::try_from(gib)
        .unwrap_or(i64::MAX / GIB)
        .saturating_mul(GIB)
}

/// The CSI view of a cloud volume.
fn csi_volume(v: &cloud::Volume) -> Volume {
    let record = VolumeRecord::of(&v.name, &v.description);
    Volume {
        capacity_bytes: gib_bytes(v.size_gib),
        volume_id: v.id.clone(),
        volume_context: HashMap::new(),
        content_source: Source::of_record(&record).to_csi(),
        accessible_topology: vec![region_topology(&v.region)],
    }
}

/// A cloud error about a volume the request named: not found names the volume.
fn volume_error(volume_id: &str, e: CloudError) -> ControllerError {
    match e {
        CloudError::NotFound { .. } => ControllerError::VolumeNotFound {
            volume_id: volume_id.to_string(),
        },
        e => e.into(),
    }
}

/// The volume the request named, which must exist.
async fn existing_volume(
    cloud: &dyn CloudApi,
    volume_id: &str,
    deadline: Deadline,
) -> Result<cloud::Volume, ControllerError> {
    cloud
        .get_volume(volume_id, deadline)
        .await
        .map_err(|e| volume_error(volume_id, e))
}

/// After [`RECONCILE_ROUNDS`] re-reads that each found the volume changed again.
fn kept_changing(volume_id: &str, while_being: &str) -> ControllerError {
    ControllerError::KeptChanging {
        volume_id: volume_id.to_string(),
        while_being: while_being.to_string(),
    }
}

/// The volume with this CSI name, whatever its region.
async fn find_volume(
    cloud: &dyn CloudApi,
    csi_name: &str,
    deadline: Deadline,
) -> Result<Option<cloud::Volume>, CloudError> {
    let cloud_name = names::cloud_volume_name(csi_name);
    Ok(cloud
        .volumes_named(&cloud_name, deadline)
        .await?
        .into_iter()
        .find(|v| VolumeRecord::of(&v.name, &v.description).csi_name == csi_name))
}

/// The newest action of the volume still in progress whose kind is `wanted`.
async fn newest_in_flight(
    cloud: &dyn CloudApi,
    volume_id: &str,
    deadline: Deadline,
    wanted: impl Fn(&ActionKind) -> bool,
) -> Result<Option<Action>, CloudError> {
    Ok(cloud
        .volume_actions(volume_id, deadline)
        .await?
        .into_iter()
        .filter(|a| a.status == ActionStatus::InProgress && wanted(&a.kind))
        .max_by_key(|a| a.id))
}

/// The newest attach or detach of the volume still in progress.
async fn attachment_in_flight(
    cloud: &dyn CloudApi,
    volume_id: &str,
    deadline: Deadline,
) -> Result<Option<Action>, CloudError> {
    newest_in_flight(cloud, volume_id, deadline, ActionKind::is_attachment).await
}

/// The newest resize of the volume still in progress.
async fn resize_in_flight(
    cloud: &dyn CloudApi,
    volume_id: &str,
    deadline: Deadline,
) -> Result<Option<Action>, CloudError> {
    newest_in_flight(cloud, volume_id, deadline, |k| *k == ActionKind::Resize).await
}

/// A volume's condition, from its actions: abnormal when the latest one errored or one has
/// been in progress for too long.
async fn volume_condition(
    cloud: &dyn CloudApi,
    volume_id: &str,
    deadline: Deadline,
) -> Result<VolumeCondition, CloudError> {
    let actions = match cloud.volume_actions(volume_id, deadline).await {
        Ok(actions) => actions,
        Err(CloudError::NotFound { .. }) => Vec::new(),
        Err(e) => return Err(e),
    };
    let now = chrono::Utc::now();
    if let Some(stuck) = actions.iter().find(|a| {
        a.status == ActionStatus::InProgress && a.started_at.is_some_and(|t| now - t > STUCK_AFTER)
    }) {
        return Ok(VolumeCondition {
            abnormal: true,
            message: format!(
                "{} action {} has been in progress for more than {} minutes",
                stuck.kind.as_do_type(),
                stuck.id,
                STUCK_AFTER.num_minutes()
            ),
        });
    }
    if let Some(last) = actions.iter().max_by_key(|a| a.id) {
        if last.status == ActionStatus::Errored {
            return Ok(VolumeCondition {
                abnormal: true,
                message: format!(
                    "the last {} action ({}) errored: {}",
                    last.kind.as_do_type(),
                    last.id,
                    last.error.as_deref().unwrap_or("the cloud gave no reason")
                ),
            });
        }
    }
    Ok(VolumeCondition {
        abnormal: false,
        message: "volume is healthy".to_string(),
    })
}

fn published_node_ids(v: &cloud::Volume) -> Vec<String> {
    v.droplet_ids.iter().map(u64::to_string).collect()
}

/// What a CreateVolume asks for, to compare with a volume that already has its name.
struct Wanted<'a> {
    name: &'a str,
    range: Option<&'a CapacityRange>,
    source: &'a Source,
    placement: Placement<'a>,
}

impl Wanted<'_> {
    /// OK when `existing` is what was asked for, else an error saying how it differs.
    fn check(&self, existing: &cloud::Volume) -> Result<(), ControllerError> {
        let record = VolumeRecord::of(&existing.name, &existing.description);
        let differs = |differs: VolumeDiffers| {
            Err(ControllerError::VolumeExists {
                name: self.name.to_string(),
                volume_id: existing.id.clone(),
                differs,
            })
        };
        if !params::range_allows(self.range, existing.size_gib) {
            return differs(VolumeDiffers::Size {
                gib: existing.size_gib,
            });
        }
        let source = Source::of_record(&record);
        if &source != self.source {
            return differs(VolumeDiffers::Source {
                existing: source.describe(),
                wanted: self.source.describe(),
            });
        }
        if !self.placement.allows(&existing.region) {
            return differs(VolumeDiffers::Region {
                region: existing.region.clone(),
            });
        }
        Ok(())
    }
}
