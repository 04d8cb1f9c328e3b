//! ControllerPublishVolume and ControllerUnpublishVolume: attach and detach, resuming an
//! action in flight, and answering for a droplet busy with another volume.

use csi_proto::v1::*;
use tonic::Request;

use super::*;

impl ControllerService {
    pub(super) async fn publish(
        &self,
        request: Request<ControllerPublishVolumeRequest>,
    ) -> RpcResult<ControllerPublishVolumeResponse> {
        let deadline = Deadline::from_metadata(request.metadata());
        let req = request.into_inner();
        require(&req.volume_id, "volume_id")?;
        require(&req.node_id, "node_id")?;
        check_capability(req.volume_capability.as_ref(), "volume_capability")?;
        let _guard = self.lock("volume", &req.volume_id)?;
        let cloud = self.cloud()?;
        let node = droplet_id(&req.node_id).ok_or_else(|| node_not_found(&req.node_id))?;
        if !req.readonly {
            if let Some(volume) = self
                .attach_known(cloud, &req.volume_id, node, deadline)
                .await?
            {
                return Ok(Response::new(ControllerPublishVolumeResponse {
                    publish_context: publish_context(&volume),
                }));
            }
        }

        for _ in 0..RECONCILE_ROUNDS {
            let volume = existing_volume(cloud, &req.volume_id, deadline).await?;
            match cloud.get_droplet(node, deadline).await {
                Ok(_) => {}
                Err(CloudError::NotFound { .. }) => return Err(node_not_found(&req.node_id).into()),
                Err(e) => return Err(e.into()),
            }
            if volume.droplet_ids.contains(&node) {
                if req.readonly {
                    return Err(ControllerError::PublishedReadWrite {
                        volume_id: volume.id,
                        node,
                    }
                    .into());
                }
                return Ok(Response::new(ControllerPublishVolumeResponse {
                    publish_context: publish_context(&volume),
                }));
            }
            if let Some(&other) = volume.droplet_ids.first() {
                return Err(ControllerError::AttachedElsewhere {
                    volume_id: volume.id,
                    node: other,
                }
                .into());
            }
            if req.readonly {
                return Err(ControllerError::ReadOnlyUnsupported.into());
            }
            // A retry after a timeout: resume the attach (or finish the detach) in flight.
            if let Some(action) = attachment_in_flight(cloud, &volume.id, deadline).await? {
                if let (ActionKind::Attach, Some(other)) = (&action.kind, action.droplet_id) {
                    if other != node {
                        return Err(ControllerError::AttachingElsewhere {
                            volume_id: volume.id,
                            node: other,
                        }
                        .into());
                    }
                }
                wait_for_action(cloud, action, deadline).await?;
                continue;
            }
            let _turn = self
                .droplet_turn(cloud, node, ActionKind::Attach, deadline)
                .await?;
            match cloud.attach(&volume, node, deadline).await {
                Ok(action) => {
                    wait_for_action(cloud, action, deadline).await?;
                    return Ok(Response::new(ControllerPublishVolumeResponse {
                        publish_context: publish_context(&volume),
                    }));
                }
                // Raced with another attach of this volume (or our own earlier attempt whose
                // answer was lost): look again.
                Err(CloudError::AlreadyAttached { .. }) => continue,
                Err(e @ CloudError::PendingEvent { .. }) => {
                    let attached = |v: &cloud::Volume| v.droplet_ids.contains(&node);
                    attachment_pending(cloud, &volume.id, node, e, deadline, attached).await?;
                    continue;
                }
                Err(CloudError::DropletLimit { message }) => {
                    return Err(ControllerError::NodeFull { node, message }.into())
                }
                Err(e) => return Err(e.into()),
            }
        }
        Err(kept_changing(&req.volume_id, &format!("published to node {node}")).into())
    }

    pub(super) async fn unpublish(
        &self,
        request: Request<ControllerUnpublishVolumeRequest>,
    ) -> RpcResult<ControllerUnpublishVolumeResponse> {
        let deadline = Deadline::from_metadata(request.metadata());
        let req = request.into_inner();
        require(&req.volume_id, "volume_id")?;
        params::check_length(&req.node_id, "node_id")?;
        let _guard = self.lock("volume", &req.volume_id)?;
        let cloud = self.cloud()?;
        let done = || Ok(Response::new(ControllerUnpublishVolumeResponse {}));
        // An empty node id means every node.
        let node = if req.node_id.is_empty() {
            None
        } else {
            match droplet_id(&req.node_id) {
                Some(id) => Some(id),
                // No such node, so nothing is attached to it.
                None => return done(),
            }
        };

        if let Some(node) = node {
            if self
                .detach_known(cloud, &req.volume_id, node, deadline)
                .await?
            {
                return done();
            }
        }

        for _ in 0..RECONCILE_ROUNDS {
            let volume = match cloud.get_volume(&req.volume_id, deadline).await {
                Ok(v) => v,
                // Gone, and so safely unpublished.
                Err(CloudError::NotFound { .. }) => return done(),
                Err(e) => return Err(e.into()),
            };
            // An attach in flight finishes first (it can't be cancelled), then is undone.
            if let Some(action) = attachment_in_flight(cloud, &volume.id, deadline).await? {
                let concerns_node =
                    node.is_none() || action.droplet_id.is_none() || action.droplet_id == node;
                if concerns_node {
                    match wait_for_action(cloud, action, deadline).await {
                        Ok(_) | Err(CloudError::ActionErrored { .. }) => continue,
                        Err(e) => return Err(e.into()),
                    }
                }
            }
            let attached = volume
                .droplet_ids
                .iter()
                .copied()
                .find(|d| node.is_none_or(|n| n == *d));
            let Some(droplet) = attached else {
                // spec: unpublishing a volume that is not attached MUST succeed.
                return done();
            };
            let _turn = self
                .droplet_turn(cloud, droplet, ActionKind::Detach, deadline)
                .await?;
            match cloud.detach(&volume, droplet, deadline).await {
                Ok(action) => {
                    wait_for_action(cloud, action, deadline).await?;
                    return done();
                }
                Err(CloudError::AttachmentNotFound { .. }) | Err(CloudError::NotFound { .. }) => {
                    continue
                }
                Err(e @ CloudError::PendingEvent { .. }) => {
                    let detached = |v: &cloud::Volume| !v.droplet_ids.contains(&droplet);
                    attachment_pending(cloud, &volume.id, droplet, e, deadline, detached).await?;
                    continue;
                }
                Err(e) => return Err(e.into()),
            }
        }
        Err(kept_changing(&req.volume_id, "unpublished").into())
    }
}

/// What the node needs to find the attached device.
fn publish_context(v: &cloud::Volume) -> HashMap<String, String> {
    [
        (PUBLISH_CONTEXT_VOLUME_NAME.to_string(), v.name.clone()),
        (
            PUBLISH_CONTEXT_DEVICE_LINK.to_string(),
            config::device_link_name(&v.name),
        ),
    ]
    .into_iter()
    .collect()
}

/// A node id is a droplet id: a positive number. Anything else names no node.
fn droplet_id(node_id: &str) -> Option<u64> {
    node_id.parse::<u64>().ok().filter(|&id| id > 0)
}

fn node_not_found(node_id: &str) -> ControllerError {
    ControllerError::NodeNotFound {
        node_id: node_id.to_string(),
    }
}

/// What a PENDING_EVENT from an attach or detach means. With an attach or detach of this
/// volume in flight, the caller raced it and looks again (`Ok`); so too when the volume
/// already is as wanted (`done`), because the action it raced has just finished.
/// Otherwise the droplet is busy with another volume, and the CO retries later (ABORTED).
async fn attachment_pending(
    cloud: &dyn CloudApi,
    volume_id: &str,
    droplet: u64,
    pending: CloudError,
    deadline: Deadline,
    done: impl Fn(&cloud::Volume) -> bool,
) -> Result<(), ControllerError> {
    if attachment_in_flight(cloud, volume_id, deadline)
        .await?
        .is_some()
    {
        return Ok(());
    }
    match cloud.get_volume(volume_id, deadline).await {
        Ok(volume) if done(&volume) => return Ok(()),
        Err(CloudError::NotFound { .. }) => return Ok(()),
        _ => {}
    }
    Err(ControllerError::DropletBusy {
        node: droplet,
        pending,
    })
}
