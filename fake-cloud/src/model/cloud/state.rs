//! The model's bookkeeping under its lock: actions started, advanced and applied, the
//! checks every change passes (region, quota, an idle droplet or volume), lookups, and
//! saving to `state.json`. [`super::Cloud`]'s public methods are built on these.

use super::*;

pub(super) fn is_attachment(kind: ActionKind) -> bool {
    matches!(kind, ActionKind::Attach | ActionKind::Detach)
}

fn scaled(d: Duration, factor: f64) -> Duration {
    Duration::try_from_secs_f64(d.as_secs_f64() * factor).unwrap_or(Duration::ZERO)
}

impl Core {
    pub(super) fn save(&mut self) -> Result<(), CloudError> {
        if !self.dirty {
            return Ok(());
        }
        if let Some(path) = &self.state_file {
            persist::write_atomic(path, &self.state)
                .map_err(|e| CloudError::io("write state.json", e))?;
        }
        self.dirty = false;
        Ok(())
    }

    /// Completes or errors every in-progress action due at or before `now`,
    /// in due-time order.
    pub(super) fn advance(&mut self, now: DateTime<Utc>) {
        let mut due: Vec<(DateTime<Utc>, u64)> = self
            .pending
            .iter()
            .filter_map(|id| self.state.actions.get(id))
            .filter(|r| r.due_at <= now)
            .map(|r| (r.due_at, r.action.id))
            .collect();
        due.sort();
        for (_, id) in due {
            self.finish_action(id);
        }
    }

    pub(super) fn finish_action(&mut self, id: u64) {
        self.pending.remove(&id);
        let Some(record) = self.state.actions.get(&id).cloned() else {
            return;
        };
        let outcome = match record.fails_with {
            Some(reason) => Err(reason),
            None => self.apply(&record.action),
        };
        if let Some(r) = self.state.actions.get_mut(&id) {
            r.action.completed_at = Some(r.due_at);
            match outcome {
                Ok(()) => r.action.status = ActionStatus::Completed,
                Err(reason) => {
                    r.action.status = ActionStatus::Errored;
                    r.action.error = Some(reason);
                }
            }
        }
        self.dirty = true;
    }

    /// The effect of a completed action.
    pub(super) fn apply(&mut self, action: &Action) -> Result<(), String> {
        let images = self.images.clone();
        let Some(volume) = self.state.volumes.get_mut(&action.volume_id) else {
            return Err("the volume no longer exists".to_string());
        };
        match (action.kind, action.droplet_id, action.size_gib) {
            (ActionKind::Attach, Some(droplet), _) => {
                if volume.droplet_ids.is_empty() {
                    volume.droplet_ids.push(droplet);
                }
                Ok(())
            }
            (ActionKind::Detach, Some(droplet), _) => {
                volume.droplet_ids.retain(|&d| d != droplet);
                Ok(())
            }
            (ActionKind::Resize, _, Some(size)) => {
                if let Some(images) = images {
                    let path = images.volume_path(&volume.id);
                    if let Err(err) = images.grow(&path, size * GIB) {
                        tracing::error!(volume = %volume.id, error = %err, "cannot grow volume image");
                        return Err(format!("cannot grow the volume image: {err}"));
                    }
                }
                volume.size_gib = volume.size_gib.max(size);
                Ok(())
            }
            _ => Err("malformed action".to_string()),
        }
    }

    pub(super) fn start_action(
        &mut self,
        now: DateTime<Utc>,
        kind: ActionKind,
        volume_id: &str,
        region: &str,
        droplet_id: Option<u64>,
        size_gib: Option<u64>,
    ) -> Action {
        // Draw both numbers for every action, so the sequence of draws depends
        // only on the sequence of actions, not on the rates.
        let jitter_share: f64 = self.action_rng.random();
        let fail_draw: f64 = self.action_rng.random();
        let latency = self.config.latency;
        let delay = latency
            .for_kind(kind)
            .saturating_add(scaled(latency.jitter, jitter_share));
        // An absurd latency is capped (at a century), not a panic, and keeps
        // the due time a date that state.json can hold.
        let due_at = chrono::Duration::from_std(delay.min(MAX_ACTION_DELAY))
            .ok()
            .and_then(|d| now.checked_add_signed(d))
            .unwrap_or(now);
        let fails_with = (fail_draw < self.config.faults.action_error_rate).then(|| {
            format!(
                "{} failed: injected fault (action_error_rate)",
                kind.as_do_type()
            )
        });
        self.state.next_action_id = self.state.next_action_id.max(1);
        let id = self.state.next_action_id;
        self.state.next_action_id += 1;
        let action = Action {
            id,
            status: ActionStatus::InProgress,
            kind,
            volume_id: volume_id.to_string(),
            droplet_id,
            size_gib,
            started_at: now,
            completed_at: None,
            region: region.to_string(),
            error: None,
        };
        self.state.actions.insert(
            id,
            ActionRecord {
                action: action.clone(),
                due_at,
                fails_with,
            },
        );
        self.pending.insert(id);
        self.dirty = true;
        action
    }

    pub(super) fn check_region(&self, region: &str) -> Result<(), CloudError> {
        validate::region_slug(region)?;
        if self.config.regions.iter().any(|r| r == region) {
            Ok(())
        } else {
            Err(CloudError::unprocessable(format!(
                "region {region:?} is not available; available regions: {}",
                self.config.regions.join(", ")
            )))
        }
    }

    pub(super) fn check_quota(&self, extra_gib: u64) -> Result<(), CloudError> {
        let used = self.used_gib();
        if used.saturating_add(extra_gib) > self.config.capacity_quota_gib {
            Err(CloudError::quota_exceeded(format!(
                "capacity limit exceeded: {used} of {} GiB in use, {extra_gib} GiB more requested",
                self.config.capacity_quota_gib
            )))
        } else {
            Ok(())
        }
    }

    /// GiB of all volumes, each at its pending resize size if larger.
    pub(super) fn used_gib(&self) -> u64 {
        let sizes: u64 = self.state.volumes.values().map(|v| v.size_gib).sum();
        // At most one resize per volume is pending, so growths add up.
        let growth: u64 = self
            .pending_actions()
            .filter_map(|a| match (a.kind, a.size_gib) {
                (ActionKind::Resize, Some(target)) => self
                    .state
                    .volumes
                    .get(&a.volume_id)
                    .map(|v| target.saturating_sub(v.size_gib)),
                _ => None,
            })
            .sum();
        sizes + growth
    }

    pub(super) fn pending_actions(&self) -> impl Iterator<Item = &Action> {
        self.pending
            .iter()
            .filter_map(|id| self.state.actions.get(id))
            .map(|r| &r.action)
    }

    pub(super) fn pending_on_volume(
        &self,
        volume_id: &str,
        kind: impl Fn(ActionKind) -> bool,
    ) -> bool {
        self.pending_actions()
            .any(|a| a.volume_id == volume_id && kind(a.kind))
    }

    pub(super) fn check_droplet_idle(&self, droplet_id: u64) -> Result<(), CloudError> {
        if self
            .pending_actions()
            .any(|a| a.droplet_id == Some(droplet_id) && is_attachment(a.kind))
        {
            Err(CloudError::pending_event(
                "Droplet already has a pending event",
            ))
        } else {
            Ok(())
        }
    }

    pub(super) fn check_volume_idle(&self, volume_id: &str) -> Result<(), CloudError> {
        if self.pending_on_volume(volume_id, is_attachment) {
            Err(CloudError::pending_event(
                "Volume already has a pending event",
            ))
        } else {
            Ok(())
        }
    }

    /// Volumes attached to the droplet, plus attaches to it in flight.
    pub(super) fn attachments_of(&self, droplet_id: u64) -> usize {
        let attached = self
            .state
            .volumes
            .values()
            .filter(|v| v.droplet_ids.contains(&droplet_id))
            .count();
        let in_flight = self
            .pending_actions()
            .filter(|a| a.kind == ActionKind::Attach && a.droplet_id == Some(droplet_id))
            .count();
        attached + in_flight
    }

    pub(super) fn volume(&self, id: &str) -> Result<&Volume, CloudError> {
        self.state
            .volumes
            .get(id)
            .ok_or_else(CloudError::resource_not_found)
    }

    pub(super) fn volume_mut(&mut self, id: &str) -> Result<&mut Volume, CloudError> {
        self.state
            .volumes
            .get_mut(id)
            .ok_or_else(CloudError::resource_not_found)
    }

    pub(super) fn snapshot(&self, id: &str) -> Result<&Snapshot, CloudError> {
        self.state
            .snapshots
            .get(id)
            .ok_or_else(CloudError::resource_not_found)
    }

    pub(super) fn stored_droplet(&self, id: u64) -> Result<&StoredDroplet, CloudError> {
        self.state
            .droplets
            .get(&id)
            .ok_or_else(CloudError::resource_not_found)
    }

    pub(super) fn droplet(&self, id: u64) -> Result<Droplet, CloudError> {
        let d = self.stored_droplet(id)?;
        let volume_ids = self
            .state
            .volumes
            .values()
            .filter(|v| v.droplet_ids.contains(&id))
            .map(|v| v.id.clone())
            .collect();
        Ok(Droplet {
            id,
            name: format!("droplet-{id}"),
            region: d.region.clone(),
            volume_ids,
            created_at: d.created_at,
        })
    }

    /// Validates `req` and builds the volume it asks for (not yet stored).
    pub(super) fn new_volume(
        &self,
        req: &CreateVolumeRequest,
        now: DateTime<Utc>,
    ) -> Result<Volume, CloudError> {
        validate::volume_name(&req.name)?;
        self.check_region(&req.region)?;
        validate::volume_size(req.size_gib)?;
        validate::description(&req.description)?;
        validate::tags(&req.tags)?;
        let filesystem_type = req.filesystem_type.clone().unwrap_or_default();
        validate::filesystem_type(&filesystem_type)?;
        if self
            .state
            .volumes
            .values()
            .any(|v| v.name == req.name && v.region == req.region)
        {
            return Err(CloudError::name_taken(format!(
                "a volume with the name {:?} already exists in {}",
                req.name, req.region
            )));
        }
        self.check_quota(req.size_gib)?;
        Ok(Volume {
            id: uuid::Uuid::new_v4().to_string(),
            name: req.name.clone(),
            description: req.description.clone(),
            size_gib: req.size_gib,
            region: req.region.clone(),
            droplet_ids: Vec::new(),
            created_at: now,
            filesystem_type,
            filesystem_label: String::new(),
            tags: req.tags.clone(),
            snapshot_id: req.snapshot_id.clone(),
            source_volume_id: None,
        })
    }

    /// Creates the volume's image (a copy of `source` if given, else blank),
    /// then stores the volume.
    pub(super) fn insert_volume(
        &mut self,
        volume: Volume,
        source: Option<&Path>,
    ) -> Result<Volume, CloudError> {
        if let Some(images) = &self.images {
            let path = images.volume_path(&volume.id);
            let size = volume.size_gib * GIB;
            match source {
                Some(src) => images
                    .copy(src, &path, size)
                    .map_err(|e| CloudError::io("copy source image", e))?,
                None => images
                    .create_blank(&path, size)
                    .map_err(|e| CloudError::io("create volume image", e))?,
            }
        }
        self.state.volumes.insert(volume.id.clone(), volume.clone());
        self.dirty = true;
        Ok(volume)
    }
}
