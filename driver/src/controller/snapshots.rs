//! CreateSnapshot, DeleteSnapshot, ListSnapshots and GetSnapshot.

use csi_proto::v1::*;
use tonic::Request;

use super::*;

impl ControllerService {
    pub(super) async fn snapshot_create(
        &self,
        request: Request<CreateSnapshotRequest>,
    ) -> RpcResult<CreateSnapshotResponse> {
        let deadline = Deadline::from_metadata(request.metadata());
        let req = request.into_inner();
        require(&req.name, "name")?;
        require(&req.source_volume_id, "source_volume_id")?;
        check_map_size(&req.parameters, "parameters")?;
        let tags = params::parse_snapshot_params(&req.parameters)?;
        let _name_guard = self.lock("snapshot-name", &req.name)?;
        let _volume_guard = self.lock("volume", &req.source_volume_id)?;
        let cloud = self.cloud()?;
        let same_or_conflict = |s: cloud::Snapshot| {
            if s.volume_id == req.source_volume_id {
                Ok(Response::new(CreateSnapshotResponse {
                    snapshot: Some(csi_snapshot(&s)),
                }))
            } else {
                Err(ControllerError::SnapshotExists {
                    name: req.name.clone(),
                    snapshot_id: s.id,
                    volume_id: s.volume_id,
                    wanted_volume_id: req.source_volume_id.clone(),
                }
                .into())
            }
        };
        if let Some(existing) = find_snapshot(cloud, &req.name, deadline).await? {
            return same_or_conflict(existing);
        }
        match cloud
            .create_snapshot(
                &req.source_volume_id,
                &names::cloud_snapshot_name(&req.name),
                tags,
                deadline,
            )
            .await
        {
            Ok(s) => same_or_conflict(s),
            Err(CloudError::NotFound { .. }) => Err(ControllerError::SourceVolumeNotFound {
                volume_id: req.source_volume_id.clone(),
            }
            .into()),
            // A retry whose first attempt was applied, or a concurrent create.
            Err(e @ CloudError::NameInUse { .. }) => {
                match find_snapshot(cloud, &req.name, deadline).await? {
                    Some(existing) => same_or_conflict(existing),
                    None => Err(e.into()),
                }
            }
            Err(e) => Err(e.into()),
        }
    }

    pub(super) async fn snapshot_delete(
        &self,
        request: Request<DeleteSnapshotRequest>,
    ) -> RpcResult<DeleteSnapshotResponse> {
        let deadline = Deadline::from_metadata(request.metadata());
        let req = request.into_inner();
        require(&req.snapshot_id, "snapshot_id")?;
        let _guard = self.lock("snapshot", &req.snapshot_id)?;
        let cloud = self.cloud()?;
        match cloud.delete_snapshot(&req.snapshot_id, deadline).await {
            // spec: DeleteSnapshot of an unknown id MUST succeed.
            Ok(()) | Err(CloudError::NotFound { .. }) => {
                Ok(Response::new(DeleteSnapshotResponse {}))
            }
            Err(CloudError::VolumeInUse { message } | CloudError::NameInUse { message }) => {
                Err(ControllerError::SnapshotInUse {
                    snapshot_id: req.snapshot_id.clone(),
                    message,
                }
                .into())
            }
            Err(e) => Err(e.into()),
        }
    }

    pub(super) async fn snapshot_list(
        &self,
        request: Request<ListSnapshotsRequest>,
    ) -> RpcResult<ListSnapshotsResponse> {
        let deadline = Deadline::from_metadata(request.metadata());
        let req = request.into_inner();
        params::check_length(&req.snapshot_id, "snapshot_id")?;
        params::check_length(&req.source_volume_id, "source_volume_id")?;
        let cloud = self.cloud()?;
        paging::validate(&req.starting_token, "snapshots", req.max_entries)?;
        let snapshots = if !req.snapshot_id.is_empty() {
            match cloud.get_snapshot(&req.snapshot_id, deadline).await {
                Ok(s) => vec![s],
                Err(CloudError::NotFound { .. }) => Vec::new(),
                Err(e) => return Err(e.into()),
            }
        } else if !req.source_volume_id.is_empty() {
            match cloud
                .list_snapshots(Some(&req.source_volume_id), deadline)
                .await
            {
                Ok(all) => all,
                Err(CloudError::NotFound { .. }) => Vec::new(),
                Err(e) => return Err(e.into()),
            }
        } else {
            cloud.list_snapshots(None, deadline).await?
        };
        let snapshots: Vec<cloud::Snapshot> = snapshots
            .into_iter()
            .filter(|s| req.source_volume_id.is_empty() || s.volume_id == req.source_volume_id)
            .collect();
        let page = paging::page(
            snapshots,
            |s| (s.created_at, s.id.as_str()),
            "snapshots",
            &req.starting_token,
            req.max_entries,
        )?;
        Ok(Response::new(ListSnapshotsResponse {
            entries: page
                .items
                .iter()
                .map(|s| list_snapshots_response::Entry {
                    snapshot: Some(csi_snapshot(s)),
                })
                .collect(),
            next_token: page.next_token,
        }))
    }

    pub(super) async fn snapshot_get(
        &self,
        request: Request<GetSnapshotRequest>,
    ) -> RpcResult<GetSnapshotResponse> {
        let deadline = Deadline::from_metadata(request.metadata());
        let req = request.into_inner();
        require(&req.snapshot_id, "snapshot_id")?;
        let cloud = self.cloud()?;
        match cloud.get_snapshot(&req.snapshot_id, deadline).await {
            Ok(s) => Ok(Response::new(GetSnapshotResponse {
                snapshot: Some(csi_snapshot(&s)),
            })),
            Err(CloudError::NotFound { .. }) => Err(ControllerError::SnapshotNotFound {
                snapshot_id: req.snapshot_id.clone(),
            }
            .into()),
            Err(e) => Err(e.into()),
        }
    }
}

/// The CSI view of a cloud snapshot. The cloud answers only once a snapshot exists, so it
/// is ready to use.
fn csi_snapshot(s: &cloud::Snapshot) -> Snapshot {
    Snapshot {
        size_bytes: gib_bytes(s.min_disk_size_gib),
        snapshot_id: s.id.clone(),
        source_volume_id: s.volume_id.clone(),
        creation_time: Some(prost_types::Timestamp {
            seconds: s.created_at.timestamp(),
            nanos: i32::try_from(s.created_at.timestamp_subsec_nanos()).unwrap_or(0),
        }),
        ready_to_use: true,
        group_snapshot_id: String::new(),
    }
}

/// The snapshot with this CSI name.
async fn find_snapshot(
    cloud: &dyn CloudApi,
    csi_name: &str,
    deadline: Deadline,
) -> Result<Option<cloud::Snapshot>, CloudError> {
    let cloud_name = names::cloud_snapshot_name(csi_name);
    Ok(cloud
        .list_snapshots(None, deadline)
        .await?
        .into_iter()
        .find(|s| s.name == cloud_name))
}
