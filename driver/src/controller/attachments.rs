//! Attach and detach with as few cloud requests as can be, and in turn per droplet.
//!
//! The quick way: for a volume whose name and region the cloud backend already knows
//! ([`CloudApi::known_volume`]), ask for the attach or detach straight away and wait on
//! it. Any refusal other than a deadline sends the RPC the careful way (read the volume,
//! look for an action in flight, then act), which knows what every state means, so the
//! quick way never decides an answer the careful way would not.
//!
//! Both ways take the droplet's turn ([`OperationLocks::droplet_turn`]) before asking,
//! so publishes of different volumes to one node queue in the driver instead of
//! colliding in the cloud.
//!
//! [`OperationLocks::droplet_turn`]: crate::locks::OperationLocks::droplet_turn

use super::error::ControllerError;
use super::ControllerService;
use crate::cloud::wait::wait_for_action;
use crate::cloud::{self, ActionKind, CloudApi, CloudError, Deadline};
use crate::locks::DropletTurn;

impl ControllerService {
    /// The droplet's turn for an action of `kind`, given up (ABORTED) when it would come
    /// too late for that kind's usual duration to fit before the deadline.
    pub(super) async fn droplet_turn(
        &self,
        cloud: &dyn CloudApi,
        droplet: u64,
        kind: ActionKind,
        deadline: Deadline,
    ) -> Result<DropletTurn, ControllerError> {
        let needs = cloud.waits().expected(&kind).unwrap_or_default();
        Ok(self
            .driver
            .locks
            .droplet_turn(droplet, deadline, needs)
            .await?)
    }

    /// Attach a volume the backend knows to `node` the quick way. `Some(volume)` once
    /// attached; None when the careful way must decide.
    pub(super) async fn attach_known(
        &self,
        cloud: &dyn CloudApi,
        volume_id: &str,
        node: u64,
        deadline: Deadline,
    ) -> Result<Option<cloud::Volume>, ControllerError> {
        let Some(volume) = cloud.known_volume(volume_id) else {
            return Ok(None);
        };
        let _turn = self
            .droplet_turn(cloud, node, ActionKind::Attach, deadline)
            .await?;
        match cloud.attach(&volume, node, deadline).await {
            Ok(action) => {
                wait_for_action(cloud, action, deadline).await?;
                Ok(Some(volume))
            }
            Err(e) => careful_unless_out_of_time(e).map(|()| None),
        }
    }

    /// Detach a volume the backend knows from `node` the quick way. True once detached;
    /// false when the careful way must decide.
    pub(super) async fn detach_known(
        &self,
        cloud: &dyn CloudApi,
        volume_id: &str,
        node: u64,
        deadline: Deadline,
    ) -> Result<bool, ControllerError> {
        let Some(volume) = cloud.known_volume(volume_id) else {
            return Ok(false);
        };
        let _turn = self
            .droplet_turn(cloud, node, ActionKind::Detach, deadline)
            .await?;
        match cloud.detach(&volume, node, deadline).await {
            Ok(action) => {
                wait_for_action(cloud, action, deadline).await?;
                Ok(true)
            }
            Err(e) => careful_unless_out_of_time(e).map(|()| false),
        }
    }
}

/// A refusal of the quick way: the careful way looks into it, unless time or the
/// request budget has run out, which it would only meet again.
fn careful_unless_out_of_time(e: CloudError) -> Result<(), ControllerError> {
    match e {
        CloudError::Timeout { .. } | CloudError::RateLimited { .. } => Err(e.into()),
        _ => Ok(()),
    }
}
