//! [`Cloud`]: the shared handle, its state machine and its lazy clock.
//!
//! Actions advance lazily: every call first completes (or errors) the actions
//! whose due time has passed on the clock, in due-time order, then does its
//! work. No background task is needed, so a virtual clock works and a restart
//! picks up where the persisted due times say.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use chrono::{DateTime, Utc};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde::{Deserialize, Serialize};

use super::validate;
use super::{
    Account, Action, ActionKind, ActionStatus, CloudConfig, CreateVolumeRequest, Droplet, Faults,
    LatencyConfig, Page, Snapshot, Volume,
};
use crate::clock::{Clock, SystemClock};
use crate::error::CloudError;
use crate::images::{ImageStore, GIB};
use crate::persist;

mod state;
use state::is_attachment;

/// Decorrelates the model's action RNG from the server's request RNG, which
/// share `Faults::seed`.
const ACTION_RNG_SALT: u64 = 0x5eed_ac71_0000_0001;

/// The longest an action can take, whatever the configured latency.
const MAX_ACTION_DELAY: Duration = Duration::from_secs(100 * 365 * 24 * 3600);

/// A handle on one cloud. Cloning is cheap and every clone sees the same
/// state; all methods take `&self` and are safe to call from many tasks.
#[derive(Clone)]
pub struct Cloud {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Cloud {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Cloud").finish_non_exhaustive()
    }
}

struct Inner {
    clock: Arc<dyn Clock>,
    core: Mutex<Core>,
}

/// What `state.json` holds.
#[derive(Debug, Default, Serialize, Deserialize)]
struct State {
    droplets: BTreeMap<u64, StoredDroplet>,
    volumes: BTreeMap<String, Volume>,
    snapshots: BTreeMap<String, Snapshot>,
    actions: BTreeMap<u64, ActionRecord>,
    next_action_id: u64,
    /// Node names that claimed a droplet (`claim_droplet`), for clusters whose nodes
    /// learn their droplet id from the fake cloud.
    #[serde(default)]
    node_names: BTreeMap<String, u64>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct StoredDroplet {
    id: u64,
    region: String,
    created_at: DateTime<Utc>,
}

/// An action with what the model decided about it when it started.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct ActionRecord {
    action: Action,
    /// Wall-clock time at which it completes or errors.
    due_at: DateTime<Utc>,
    /// Set when the action is fated to end `errored`, with the reason.
    fails_with: Option<String>,
}

struct Core {
    config: CloudConfig,
    state: State,
    /// Ids of in-progress actions (derived from `state`, not persisted).
    pending: BTreeSet<u64>,
    action_rng: StdRng,
    /// Bumped by every `set_faults`, so the server knows to reseed.
    faults_generation: u64,
    images: Option<ImageStore>,
    state_file: Option<PathBuf>,
    /// Changed since the last save.
    dirty: bool,
}

impl Cloud {
    /// A cloud on the system clock. With `config.data_dir`, it loads and
    /// persists state there; if that fails it logs the error and runs in
    /// memory only (use [`Cloud::open`] to get the error instead).
    pub fn new(config: CloudConfig) -> Cloud {
        Cloud::with_clock(config, Arc::new(SystemClock))
    }

    /// Like [`Cloud::new`], on the given clock (a `VirtualClock` in tests).
    pub fn with_clock(config: CloudConfig, clock: Arc<dyn Clock>) -> Cloud {
        match Cloud::open_with_clock(config.clone(), clock.clone()) {
            Ok(cloud) => cloud,
            Err(err) => {
                tracing::error!(error = %err, "cannot open the cloud as configured; running in memory only");
                let config = CloudConfig {
                    data_dir: None,
                    ..config
                };
                let cloud = Cloud::build(config, clock, State::default(), None);
                if let Err(err) = cloud.register_configured_droplets() {
                    tracing::error!(error = %err, "invalid configured droplet skipped");
                }
                cloud
            }
        }
    }

    /// A cloud on the system clock that loads `<data_dir>/state.json` when it
    /// exists, with every volume, snapshot, attachment and unfinished action.
    /// Fails on an unreadable data directory or an invalid configured droplet.
    pub fn open(config: CloudConfig) -> Result<Cloud, CloudError> {
        Cloud::open_with_clock(config, Arc::new(SystemClock))
    }

    /// Like [`Cloud::open`], but the metadata lives only in memory: volume and snapshot
    /// images still go to the data directory, and `state.json` is never written. For an
    /// in-process cloud whose life is the process's, where an fsync per change would only
    /// cost time.
    pub fn open_unpersisted(config: CloudConfig) -> Result<Cloud, CloudError> {
        Cloud::open_inner(config, Arc::new(SystemClock), false)
    }

    /// Like [`Cloud::open`], on the given clock.
    pub fn open_with_clock(
        config: CloudConfig,
        clock: Arc<dyn Clock>,
    ) -> Result<Cloud, CloudError> {
        Cloud::open_inner(config, clock, true)
    }

    fn open_inner(
        config: CloudConfig,
        clock: Arc<dyn Clock>,
        persist_state: bool,
    ) -> Result<Cloud, CloudError> {
        let storage = match &config.data_dir {
            None => None,
            Some(dir) => {
                std::fs::create_dir_all(dir)
                    .map_err(|e| CloudError::io("create data directory", e))?;
                let images =
                    ImageStore::open(dir).map_err(|e| CloudError::io("create image folders", e))?;
                let images = if persist_state {
                    images
                } else {
                    images.not_durable()
                };
                let state_file = persist::state_path(dir);
                let state = if persist_state {
                    persist::read::<State>(&state_file)
                        .map_err(|e| CloudError::io("read state.json", e))?
                        .unwrap_or_default()
                } else {
                    State::default()
                };
                let reclaimed = images
                    .reclaim_unnamed(
                        |id| state.volumes.contains_key(id),
                        |id| state.snapshots.contains_key(id),
                    )
                    .map_err(|e| CloudError::io("reclaim images the state does not name", e))?;
                if !reclaimed.is_empty() {
                    tracing::info!(
                        data_dir = %dir.display(),
                        images = reclaimed.len(),
                        "removed images that no volume or snapshot names"
                    );
                }
                Some((images, persist_state.then_some(state_file), state))
            }
        };
        let cloud = match storage {
            None => Cloud::build(config, clock, State::default(), None),
            Some((images, file, state)) => Cloud::build(config, clock, state, Some((images, file))),
        };
        cloud.register_configured_droplets()?;
        Ok(cloud)
    }

    fn register_configured_droplets(&self) -> Result<(), CloudError> {
        let droplets = self.lock().config.droplets.clone();
        for (id, region) in droplets {
            self.add_droplet(id, &region)?;
        }
        Ok(())
    }

    fn build(
        config: CloudConfig,
        clock: Arc<dyn Clock>,
        state: State,
        storage: Option<(ImageStore, Option<PathBuf>)>,
    ) -> Cloud {
        let (images, state_file) = storage.unzip();
        let state_file = state_file.flatten();
        let faults = config.faults.clamped();
        let pending = state
            .actions
            .values()
            .filter(|r| r.action.status == ActionStatus::InProgress)
            .map(|r| r.action.id)
            .collect();
        let core = Core {
            config: CloudConfig { faults, ..config },
            state,
            pending,
            action_rng: action_rng(faults.seed),
            faults_generation: 0,
            images,
            state_file,
            dirty: false,
        };
        Cloud::from_core(clock, core)
    }

    fn from_core(clock: Arc<dyn Clock>, core: Core) -> Cloud {
        Cloud {
            inner: Arc::new(Inner {
                clock,
                core: Mutex::new(core),
            }),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Core> {
        // A panic while holding the lock is a bug; the state is still usable.
        self.inner.core.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Runs `f` on the state after advancing due actions, then saves if
    /// anything changed. A read never fails because a save failed; a change
    /// does.
    fn with_core<R>(
        &self,
        f: impl FnOnce(&mut Core, DateTime<Utc>) -> Result<R, CloudError>,
    ) -> Result<R, CloudError> {
        let now = self.inner.clock.now();
        let mut core = self.lock();
        core.advance(now);
        if let Err(err) = core.save() {
            tracing::warn!(error = %err, "cannot save state.json");
        }
        let result = f(&mut core, now);
        match core.save() {
            Err(err) if result.is_ok() => Err(err),
            Err(err) => {
                tracing::warn!(error = %err, "cannot save state.json");
                result
            }
            Ok(()) => result,
        }
    }

    /// The current time on the cloud's clock.
    pub fn now(&self) -> DateTime<Utc> {
        self.inner.clock.now()
    }

    /// The configuration, with the current faults and latency.
    pub fn config(&self) -> CloudConfig {
        self.lock().config.clone()
    }

    /// Registers a droplet. Registering the same id in the same region again
    /// returns it unchanged; in another region it is a 409.
    pub fn add_droplet(&self, id: u64, region: &str) -> Result<Droplet, CloudError> {
        self.with_core(|core, now| {
            if id == 0 {
                return Err(CloudError::unprocessable(
                    "droplet id must be a positive integer",
                ));
            }
            core.check_region(region)?;
            match core.state.droplets.get(&id) {
                Some(d) if d.region == region => {}
                Some(d) => {
                    return Err(CloudError::name_taken(format!(
                        "droplet {id} already exists in region {}",
                        d.region
                    )))
                }
                None => {
                    core.state.droplets.insert(
                        id,
                        StoredDroplet {
                            id,
                            region: region.to_string(),
                            created_at: now,
                        },
                    );
                    core.dirty = true;
                }
            }
            core.droplet(id)
        })
    }

    /// The droplet that the node `node_name` is: the one it claimed before, else the
    /// lowest unclaimed droplet in `region`, else a new droplet there. Not a DigitalOcean
    /// call; in a cluster it plays the metadata service's part.
    pub fn claim_droplet(&self, node_name: &str, region: &str) -> Result<Droplet, CloudError> {
        let name = node_name.trim();
        if name.is_empty() || name.len() > 253 {
            return Err(CloudError::unprocessable(
                "node name must be 1 to 253 characters",
            ));
        }
        self.with_core(|core, now| {
            if let Some(id) = core.state.node_names.get(name) {
                return core.droplet(*id);
            }
            core.check_region(region)?;
            let claimed: std::collections::BTreeSet<u64> =
                core.state.node_names.values().copied().collect();
            let free = core
                .state
                .droplets
                .values()
                .find(|d| d.region == region && !claimed.contains(&d.id))
                .map(|d| d.id);
            let id = match free {
                Some(id) => id,
                None => {
                    let id = core.state.droplets.keys().next_back().copied().unwrap_or(0) + 1;
                    core.state.droplets.insert(
                        id,
                        StoredDroplet {
                            id,
                            region: region.to_string(),
                            created_at: now,
                        },
                    );
                    id
                }
            };
            core.state.node_names.insert(name.to_string(), id);
            core.dirty = true;
            core.droplet(id)
        })
    }

    /// A droplet, with the volumes attached to it now.
    pub fn get_droplet(&self, id: u64) -> Result<Droplet, CloudError> {
        self.with_core(|core, _| core.droplet(id))
    }

    /// Every droplet, by id.
    pub fn list_droplets(&self) -> Vec<Droplet> {
        self.with_core(|core, _| {
            let ids: Vec<u64> = core.state.droplets.keys().copied().collect();
            Ok(ids
                .into_iter()
                .filter_map(|id| core.droplet(id).ok())
                .collect())
        })
        .unwrap_or_default()
    }

    /// Limits and usage.
    pub fn account(&self) -> Account {
        let fallback = Account {
            volume_limit: 0,
            capacity_quota_gib: 0,
            used_gib: 0,
            volume_count: 0,
            snapshot_count: 0,
            droplet_count: 0,
        };
        self.with_core(|core, _| {
            Ok(Account {
                volume_limit: core.config.volume_limit,
                capacity_quota_gib: core.config.capacity_quota_gib,
                used_gib: core.used_gib(),
                volume_count: core.state.volumes.len() as u64,
                snapshot_count: core.state.snapshots.len() as u64,
                droplet_count: core.state.droplets.len() as u64,
            })
        })
        .unwrap_or(fallback)
    }

    /// Region slugs.
    pub fn regions(&self) -> Vec<String> {
        self.lock().config.regions.clone()
    }

    /// Creates a volume, blank or from `req.snapshot_id`'s data.
    ///
    /// Errors: 422 for an invalid name, size, region, tag or filesystem type,
    /// or a size below the snapshot's `min_disk_size`; 404 for an unknown
    /// snapshot; 409 for a name in use in the region; 403 past the quota.
    pub fn create_volume(&self, req: CreateVolumeRequest) -> Result<Volume, CloudError> {
        self.with_core(|core, now| {
            let volume = core.new_volume(&req, now)?;
            let source = match &req.snapshot_id {
                Some(snapshot_id) => {
                    let snapshot = core.snapshot(snapshot_id)?;
                    if snapshot.region != req.region {
                        return Err(CloudError::unprocessable(format!(
                            "snapshot {snapshot_id} is in region {}, not {}",
                            snapshot.region, req.region
                        )));
                    }
                    if req.size_gib < snapshot.min_disk_size_gib {
                        return Err(CloudError::unprocessable(format!(
                            "size_gigabytes must be at least the snapshot's min_disk_size of {} GiB",
                            snapshot.min_disk_size_gib
                        )));
                    }
                    core.images
                        .as_ref()
                        .map(|images| images.snapshot_path(snapshot_id))
                }
                None => None,
            };
            core.insert_volume(volume, source.as_deref())
        })
    }

    /// Creates a volume holding a copy of another volume's data (not a
    /// DigitalOcean call; CSI volume cloning uses it). Same errors as
    /// [`Cloud::create_volume`], plus 422 when the region differs or the size
    /// is below the source's.
    pub fn clone_volume(
        &self,
        source_volume_id: &str,
        req: CreateVolumeRequest,
    ) -> Result<Volume, CloudError> {
        self.with_core(|core, now| {
            let source = core.volume(source_volume_id)?.clone();
            if req.snapshot_id.is_some() {
                return Err(CloudError::unprocessable(
                    "a volume can be created from a snapshot or from a volume, not both",
                ));
            }
            if source.region != req.region {
                return Err(CloudError::unprocessable(format!(
                    "source volume {source_volume_id} is in region {}, not {}",
                    source.region, req.region
                )));
            }
            if req.size_gib < source.size_gib {
                return Err(CloudError::unprocessable(format!(
                    "size_gigabytes must be at least the source volume's size of {} GiB",
                    source.size_gib
                )));
            }
            let mut volume = core.new_volume(&req, now)?;
            volume.source_volume_id = Some(source.id.clone());
            let source_path = core.images.as_ref().map(|i| i.volume_path(&source.id));
            core.insert_volume(volume, source_path.as_deref())
        })
    }

    /// A volume by id; 404 if unknown.
    pub fn get_volume(&self, id: &str) -> Result<Volume, CloudError> {
        self.with_core(|core, _| core.volume(id).cloned())
    }

    /// Volumes in creation order, filtered by exact name and region.
    pub fn list_volumes(
        &self,
        name: Option<&str>,
        region: Option<&str>,
        page: u32,
        per_page: u32,
    ) -> Result<Page<Volume>, CloudError> {
        self.with_core(|core, _| {
            let mut all: Vec<Volume> = core
                .state
                .volumes
                .values()
                .filter(|v| name.is_none_or(|n| v.name == n))
                .filter(|v| region.is_none_or(|r| v.region == r))
                .cloned()
                .collect();
            all.sort_by(|a, b| (a.created_at, &a.id).cmp(&(b.created_at, &b.id)));
            Page::of(all, page, per_page)
        })
    }

    /// Deletes a volume and its image. 404 if unknown; 409 while attached or
    /// while an action on it is in progress. Its snapshots survive.
    pub fn delete_volume(&self, id: &str) -> Result<(), CloudError> {
        self.with_core(|core, _| {
            let volume = core.volume(id)?;
            if !volume.droplet_ids.is_empty() || core.pending_on_volume(id, is_attachment) {
                return Err(CloudError::volume_in_use(
                    "attached volume cannot be deleted",
                ));
            }
            if core.pending_on_volume(id, |k| k == ActionKind::Resize) {
                return Err(CloudError::volume_in_use(
                    "volume has a pending resize event",
                ));
            }
            if let Some(images) = &core.images {
                images
                    .remove(&images.volume_path(id))
                    .map_err(|e| CloudError::io("remove volume image", e))?;
            }
            core.state.volumes.remove(id);
            core.dirty = true;
            Ok(())
        })
    }

    /// Replaces a volume's tags (not a DigitalOcean call).
    pub fn update_tags(&self, id: &str, tags: Vec<String>) -> Result<Volume, CloudError> {
        self.with_core(|core, _| {
            validate::tags(&tags)?;
            let volume = core.volume_mut(id)?;
            volume.tags = tags;
            let volume = volume.clone();
            core.dirty = true;
            Ok(volume)
        })
    }

    /// Starts attaching a volume to a droplet. Until the action completes the
    /// volume is not attached.
    ///
    /// Errors: 404 for an unknown volume or droplet; 422 "Droplet already has a
    /// pending event", "Volume already has a pending event", "This volume is
    /// already attached", "cannot attach more volumes to the Droplet", or a
    /// region mismatch.
    pub fn attach(&self, volume_id: &str, droplet_id: u64) -> Result<Action, CloudError> {
        self.with_core(|core, now| {
            let volume = core.volume(volume_id)?;
            let region = volume.region.clone();
            let attached = !volume.droplet_ids.is_empty();
            let droplet = core.stored_droplet(droplet_id)?;
            if droplet.region != region {
                return Err(CloudError::unprocessable(format!(
                    "volume is in region {region} and droplet {droplet_id} in {}; they must be in the same region",
                    droplet.region
                )));
            }
            core.check_droplet_idle(droplet_id)?;
            core.check_volume_idle(volume_id)?;
            if attached {
                return Err(CloudError::already_attached());
            }
            if core.attachments_of(droplet_id) >= core.config.volume_limit as usize {
                return Err(CloudError::droplet_full(core.config.volume_limit));
            }
            Ok(core.start_action(now, ActionKind::Attach, volume_id, &region, Some(droplet_id), None))
        })
    }

    /// Starts detaching a volume from a droplet. Until the action completes
    /// the volume stays attached.
    ///
    /// Errors: 404 for an unknown volume or droplet; 422 "Droplet already has a
    /// pending event", "Volume already has a pending event" or "Attachment not
    /// found".
    pub fn detach(&self, volume_id: &str, droplet_id: u64) -> Result<Action, CloudError> {
        self.with_core(|core, now| {
            let volume = core.volume(volume_id)?;
            let region = volume.region.clone();
            let attached_here = volume.droplet_ids.contains(&droplet_id);
            core.stored_droplet(droplet_id)?;
            core.check_droplet_idle(droplet_id)?;
            core.check_volume_idle(volume_id)?;
            if !attached_here {
                return Err(CloudError::attachment_not_found());
            }
            Ok(core.start_action(
                now,
                ActionKind::Detach,
                volume_id,
                &region,
                Some(droplet_id),
                None,
            ))
        })
    }

    /// Starts growing a volume to `size_gib`; the image grows when the action
    /// completes. The new size counts against the quota at once.
    ///
    /// Errors: 404; 422 for a size out of range or not above the current one,
    /// or a resize already pending; 403 past the quota.
    pub fn resize(&self, volume_id: &str, size_gib: u64) -> Result<Action, CloudError> {
        self.with_core(|core, now| {
            let volume = core.volume(volume_id)?;
            let (region, current) = (volume.region.clone(), volume.size_gib);
            validate::volume_size(size_gib)?;
            if core.pending_on_volume(volume_id, |k| k == ActionKind::Resize) {
                return Err(CloudError::pending_event(
                    "Volume already has a pending resize event",
                ));
            }
            if size_gib <= current {
                return Err(CloudError::unprocessable(format!(
                    "new size must be greater than the current size of {current} GiB"
                )));
            }
            core.check_quota(size_gib - current)?;
            Ok(core.start_action(
                now,
                ActionKind::Resize,
                volume_id,
                &region,
                None,
                Some(size_gib),
            ))
        })
    }

    /// An action by id; 404 if unknown.
    pub fn get_action(&self, action_id: u64) -> Result<Action, CloudError> {
        self.with_core(|core, _| {
            core.state
                .actions
                .get(&action_id)
                .map(|r| r.action.clone())
                .ok_or_else(CloudError::resource_not_found)
        })
    }

    /// A volume's actions, oldest first; 404 if the volume is unknown.
    pub fn list_volume_actions(&self, volume_id: &str) -> Result<Vec<Action>, CloudError> {
        self.with_core(|core, _| {
            core.volume(volume_id)?;
            Ok(core
                .state
                .actions
                .values()
                .filter(|r| r.action.volume_id == volume_id)
                .map(|r| r.action.clone())
                .collect())
        })
    }

    /// Snapshots a volume, copying its image. 404 for an unknown volume; 422
    /// for an invalid name or tag; 409 for a name in use.
    pub fn create_snapshot(
        &self,
        volume_id: &str,
        name: &str,
        tags: Vec<String>,
    ) -> Result<Snapshot, CloudError> {
        self.with_core(|core, now| {
            let volume = core.volume(volume_id)?.clone();
            validate::snapshot_name(name)?;
            validate::tags(&tags)?;
            if core.state.snapshots.values().any(|s| s.name == name) {
                return Err(CloudError::name_taken(format!(
                    "a snapshot with the name {name:?} already exists"
                )));
            }
            let snapshot = Snapshot {
                id: uuid::Uuid::new_v4().to_string(),
                name: name.to_string(),
                volume_id: volume.id.clone(),
                created_at: now,
                region: volume.region.clone(),
                min_disk_size_gib: volume.size_gib,
                size_gib: volume.size_gib as f64,
                tags,
            };
            if let Some(images) = &core.images {
                images
                    .copy(
                        &images.volume_path(&volume.id),
                        &images.snapshot_path(&snapshot.id),
                        0,
                    )
                    .map_err(|e| CloudError::io("copy volume image to snapshot", e))?;
            }
            core.state
                .snapshots
                .insert(snapshot.id.clone(), snapshot.clone());
            core.dirty = true;
            Ok(snapshot)
        })
    }

    /// A snapshot by id; 404 if unknown.
    pub fn get_snapshot(&self, id: &str) -> Result<Snapshot, CloudError> {
        self.with_core(|core, _| core.snapshot(id).cloned())
    }

    /// Snapshots in creation order, all or those of one volume (404 if that
    /// volume is unknown).
    pub fn list_snapshots(
        &self,
        volume_id: Option<&str>,
        page: u32,
        per_page: u32,
    ) -> Result<Page<Snapshot>, CloudError> {
        self.with_core(|core, _| {
            if let Some(id) = volume_id {
                core.volume(id)?;
            }
            let mut all: Vec<Snapshot> = core
                .state
                .snapshots
                .values()
                .filter(|s| volume_id.is_none_or(|v| s.volume_id == v))
                .cloned()
                .collect();
            all.sort_by(|a, b| (a.created_at, &a.id).cmp(&(b.created_at, &b.id)));
            Page::of(all, page, per_page)
        })
    }

    /// Deletes a snapshot and its image; 404 if unknown. Volumes made from it
    /// keep their data.
    pub fn delete_snapshot(&self, id: &str) -> Result<(), CloudError> {
        self.with_core(|core, _| {
            core.snapshot(id)?;
            if let Some(images) = &core.images {
                images
                    .remove(&images.snapshot_path(id))
                    .map_err(|e| CloudError::io("remove snapshot image", e))?;
            }
            core.state.snapshots.remove(id);
            core.dirty = true;
            Ok(())
        })
    }

    /// The injected faults in force.
    pub fn faults(&self) -> Faults {
        self.lock().config.faults
    }

    /// Replaces the injected faults (rates are clamped into `[0, 1]`) and
    /// reseeds every fault RNG from `f.seed`, the server's included.
    pub fn set_faults(&self, f: Faults) {
        let f = f.clamped();
        let mut core = self.lock();
        core.config.faults = f;
        core.action_rng = action_rng(f.seed);
        core.faults_generation += 1;
    }

    /// The faults and a counter bumped by every `set_faults`.
    pub(crate) fn faults_with_generation(&self) -> (Faults, u64) {
        let core = self.lock();
        (core.config.faults, core.faults_generation)
    }

    /// The action latencies in force.
    pub fn latency(&self) -> LatencyConfig {
        self.lock().config.latency
    }

    /// Replaces the action latencies; actions already started keep their due time.
    pub fn set_latency(&self, l: LatencyConfig) {
        self.lock().config.latency = l;
    }

    /// `<data_dir>/volumes/<volume_id>.img`; None without a data directory.
    /// The path is returned whether or not the volume exists.
    pub fn volume_image_path(&self, volume_id: &str) -> Option<PathBuf> {
        self.lock()
            .images
            .as_ref()
            .map(|i| i.volume_path(volume_id))
    }

    /// `<data_dir>/snapshots/<snapshot_id>.img`; None without a data directory.
    pub fn snapshot_image_path(&self, snapshot_id: &str) -> Option<PathBuf> {
        self.lock()
            .images
            .as_ref()
            .map(|i| i.snapshot_path(snapshot_id))
    }
}

fn action_rng(seed: u64) -> StdRng {
    StdRng::seed_from_u64(seed ^ ACTION_RNG_SALT)
}
