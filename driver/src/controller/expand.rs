//! ControllerExpandVolume: grow a volume through the cloud's resize action, resuming one in
//! flight.

use csi_proto::v1::*;
use tonic::Request;

use super::*;

impl ControllerService {
    pub(super) async fn expand(
        &self,
        request: Request<ControllerExpandVolumeRequest>,
    ) -> RpcResult<ControllerExpandVolumeResponse> {
        let deadline = Deadline::from_metadata(request.metadata());
        let req = request.into_inner();
        require(&req.volume_id, "volume_id")?;
        let range = req
            .capacity_range
            .as_ref()
            .ok_or(ControllerError::Missing {
                field: "capacity_range",
            })?;
        if let Some(cap) = &req.volume_capability {
            check_capability(Some(cap), "volume_capability")?;
        }
        let target_gib = params::size_for_range(Some(range))?;
        // A filesystem must still be grown on the node. A raw block device needs the node
        // too: a hot-plugged disk reports its new size by itself, but the fake cloud's loop
        // device must be told to re-read its backing file, and the node call is cheap.
        let node_expansion_required = true;
        let _guard = self.lock("volume", &req.volume_id)?;
        let cloud = self.cloud()?;

        for _ in 0..RECONCILE_ROUNDS {
            let volume = existing_volume(cloud, &req.volume_id, deadline).await?;
            // Volumes never shrink: a smaller request is already satisfied.
            if volume.size_gib >= target_gib {
                return Ok(Response::new(ControllerExpandVolumeResponse {
                    capacity_bytes: gib_bytes(volume.size_gib),
                    node_expansion_required,
                }));
            }
            if let Some(action) = resize_in_flight(cloud, &volume.id, deadline).await? {
                wait_for_action(cloud, action, deadline).await?;
                continue;
            }
            match cloud.resize(&volume, target_gib, deadline).await {
                Ok(action) => {
                    wait_for_action(cloud, action, deadline).await?;
                }
                Err(CloudError::PendingEvent { .. }) => continue,
                Err(CloudError::QuotaExceeded { message }) => {
                    return Err(ControllerError::CannotGrow {
                        volume_id: volume.id,
                        target_gib,
                        message,
                    }
                    .into())
                }
                Err(e) => return Err(e.into()),
            }
        }
        Err(kept_changing(&req.volume_id, "expanded").into())
    }
}
