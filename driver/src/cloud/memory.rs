//! `--cloud memory`: the fake-cloud model in this process, configured from the driver's
//! flags. Volume images live at `<data dir>/volumes/<volume id>.img`, where the node plugin
//! finds them; without `--data-dir` the data dir is a temporary directory that lives as
//! long as the driver.

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::Context;

use super::wait::Waits;
use super::{
    Account, Action, ActionKind, ActionStatus, CloudApi, CloudError, Deadline, Droplet, NewVolume,
    PollPolicy, Snapshot, Volume,
};
use crate::config::Config;

/// Regions the in-process cloud always offers, besides `--region`.
pub const DEFAULT_REGIONS: [&str; 3] = ["nyc3", "sfo3", "ams3"];

/// Droplets registered in `--region` when no `--droplet` flag is given, so that specs can
/// publish to a second node.
pub const DEFAULT_DROPLETS: [u64; 3] = [1, 2, 3];

/// Largest list page the model serves.
const PAGE: u32 = fake_cloud::MAX_PER_PAGE;

/// Model calls running at once. The model is one mutex, so more threads would only wait
/// (and each blocking thread costs memory).
const CONCURRENT_CALLS: usize = 4;

/// The in-process fake cloud and the directory holding its images.
pub struct InProcess {
    /// The model; tests and the harness change latency and faults through it.
    pub cloud: fake_cloud::Cloud,
    /// Where the volume images are.
    pub data_dir: PathBuf,
    /// The temporary data dir, removed when the driver goes.
    _temp: Option<tempfile::TempDir>,
}

impl std::fmt::Debug for InProcess {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("InProcess")
            .field("data_dir", &self.data_dir)
            .finish_non_exhaustive()
    }
}

impl InProcess {
    /// Build the model from the flags: regions, droplets, latencies, volume limit, data dir.
    pub fn open(config: &Config, node_id: Option<&str>) -> anyhow::Result<InProcess> {
        let droplets = droplets_from_flags(config, node_id)?;
        let mut regions: Vec<String> = Vec::new();
        for region in std::iter::once(config.region.as_str())
            .chain(DEFAULT_REGIONS)
            .chain(droplets.iter().map(|(_, r)| r.as_str()))
        {
            if !regions.iter().any(|r| r == region) {
                regions.push(region.to_string());
            }
        }
        let (data_dir, temp) = match &config.data_dir {
            Some(dir) => (dir.clone(), None),
            None => {
                let temp = tempfile::Builder::new()
                    .prefix("csi-driver-cloud-")
                    .tempdir()
                    .context("creating a temporary data dir for the in-process cloud")?;
                (temp.path().to_path_buf(), Some(temp))
            }
        };
        let cloud_config = fake_cloud::CloudConfig {
            regions,
            droplets,
            volume_limit: u32::try_from(config.max_volumes_per_node.max(1)).unwrap_or(u32::MAX),
            latency: fake_cloud::LatencyConfig {
                attach: config.attach_latency,
                detach: config.detach_latency,
                resize: config.resize_latency,
                jitter: std::time::Duration::ZERO,
            },
            faults: fake_cloud::Faults::none(),
            data_dir: Some(data_dir.clone()),
            ..fake_cloud::CloudConfig::default()
        };
        // A data dir the user chose keeps the cloud's state across restarts, unless told
        // otherwise; a temporary one dies with the process, so its metadata need not be
        // written at all.
        let open = if temp.is_some() || config.cloud_ephemeral {
            fake_cloud::Cloud::open_unpersisted
        } else {
            fake_cloud::Cloud::open
        };
        let cloud = open(cloud_config).map_err(|e| {
            anyhow::anyhow!(
                "opening the in-process cloud in {}: {e}",
                data_dir.display()
            )
        })?;
        Ok(InProcess {
            cloud,
            data_dir,
            _temp: temp,
        })
    }

    /// Where the volume images are.
    pub fn data_dir(&self) -> &Path {
        &self.data_dir
    }
}

/// `--droplet ID:REGION` flags, then the node id (if numeric) in `--region`; with no
/// `--droplet` flag, also droplets 1, 2 and 3 in `--region`.
fn droplets_from_flags(
    config: &Config,
    node_id: Option<&str>,
) -> anyhow::Result<Vec<(u64, String)>> {
    let mut droplets: Vec<(u64, String)> = Vec::new();
    for flag in &config.droplets {
        let (id, region) = flag
            .split_once(':')
            .with_context(|| format!("--droplet {flag:?}: expected ID:REGION, e.g. 4:nyc3"))?;
        let id: u64 = id
            .trim()
            .parse()
            .ok()
            .filter(|&id| id > 0)
            .with_context(|| format!("--droplet {flag:?}: the id must be a positive number"))?;
        let region = region.trim();
        if region.is_empty() {
            anyhow::bail!("--droplet {flag:?}: the region is empty");
        }
        match droplets.iter().find(|(d, _)| *d == id) {
            Some((_, r)) if r != region => {
                anyhow::bail!("--droplet {id} is given in both {r} and {region}")
            }
            Some(_) => {}
            None => droplets.push((id, region.to_string())),
        }
    }
    let mut implicit: Vec<u64> = Vec::new();
    if let Some(id) = node_id
        .and_then(|n| n.parse::<u64>().ok())
        .filter(|&id| id > 0)
    {
        implicit.push(id);
    }
    if config.droplets.is_empty() {
        implicit.extend(DEFAULT_DROPLETS);
    }
    for id in implicit {
        if !droplets.iter().any(|(d, _)| *d == id) {
            droplets.push((id, config.region.clone()));
        }
    }
    Ok(droplets)
}

/// The [`CloudApi`] over the in-process model. Model calls may write images and state to
/// the data dir, so they run on the blocking pool, a few at a time.
pub struct MemoryCloud {
    cloud: fake_cloud::Cloud,
    slots: tokio::sync::Semaphore,
    waits: Waits,
}

impl MemoryCloud {
    /// Polls cost nothing here, so actions are polled often by default: the first
    /// look a millisecond after the start, when an action with no latency is done (a
    /// 4 ms first look made a serial full-profile run 1.55 s rather than 1.3 s).
    pub fn new(cloud: fake_cloud::Cloud) -> MemoryCloud {
        MemoryCloud {
            cloud,
            slots: tokio::sync::Semaphore::new(CONCURRENT_CALLS),
            waits: Waits::new(PollPolicy::Backoff {
                min: std::time::Duration::from_millis(1),
                max: std::time::Duration::from_secs(1),
                share: 0.08,
            }),
        }
    }

    async fn call<R, F>(&self, call: &'static str, f: F) -> Result<R, CloudError>
    where
        R: Send + 'static,
        F: FnOnce(&fake_cloud::Cloud) -> Result<R, fake_cloud::CloudError> + Send + 'static,
    {
        let cloud = self.cloud.clone();
        let started = Instant::now();
        let result = match self.slots.acquire().await {
            Ok(_slot) => tokio::task::spawn_blocking(move || f(&cloud)).await,
            // Never closed; run inline rather than fail.
            Err(_) => Ok(f(&cloud)),
        };
        let (status, result) = match result {
            Ok(Ok(value)) => ("200".to_string(), Ok(value)),
            Ok(Err(e)) => (e.status.to_string(), Err(typed(e))),
            Err(e) => (
                "error".to_string(),
                Err(CloudError::Transport {
                    message: format!("in-process cloud call failed: {e}"),
                }),
            ),
        };
        crate::metrics::record_cloud_call(call, &status, started.elapsed());
        result
    }

    /// [`call`](Self::call) for a model call about one resource: `f` gets its id.
    async fn call_on<R, F>(&self, call: &'static str, id: &str, f: F) -> Result<R, CloudError>
    where
        R: Send + 'static,
        F: FnOnce(&fake_cloud::Cloud, &str) -> Result<R, fake_cloud::CloudError> + Send + 'static,
    {
        let id = id.to_string();
        self.call(call, move |c| f(c, &id)).await
    }

    /// An attach, detach or resize of the volume.
    async fn volume_action<F>(&self, v: &Volume, f: F) -> Result<Action, CloudError>
    where
        F: FnOnce(&fake_cloud::Cloud, &str) -> Result<fake_cloud::Action, fake_cloud::CloudError>
            + Send
            + 'static,
    {
        self.call_on("volume_action", &v.id, f).await.map(action)
    }

    /// Every page of a list.
    fn all_pages<T>(
        mut page: impl FnMut(u32) -> Result<fake_cloud::Page<T>, fake_cloud::CloudError>,
    ) -> Result<Vec<T>, fake_cloud::CloudError> {
        let mut all = Vec::new();
        for n in 1.. {
            let p = page(n)?;
            let last = p.last_page();
            all.extend(p.items);
            if n >= last {
                break;
            }
        }
        Ok(all)
    }
}

/// The model's refusal as the driver's error, by its kind: the model says what it
/// refused, so nothing is read from the message.
fn typed(e: fake_cloud::CloudError) -> CloudError {
    use fake_cloud::error::ErrorKind;
    let message = e.message;
    match e.kind {
        ErrorKind::NotFound => CloudError::NotFound { message },
        ErrorKind::NameTaken => CloudError::NameInUse { message },
        ErrorKind::VolumeInUse => CloudError::VolumeInUse { message },
        ErrorKind::PendingEvent => CloudError::PendingEvent { message },
        ErrorKind::AlreadyAttached => CloudError::AlreadyAttached { message },
        ErrorKind::AttachmentNotFound => CloudError::AttachmentNotFound { message },
        ErrorKind::DropletFull => CloudError::DropletLimit { message },
        ErrorKind::QuotaExceeded => CloudError::QuotaExceeded { message },
        ErrorKind::Invalid => CloudError::Invalid { message },
        ErrorKind::Unauthorized => CloudError::Unauthorized { message },
        ErrorKind::RateLimited => CloudError::RateLimited { retry_after: None },
        ErrorKind::Server | ErrorKind::Other => CloudError::Api {
            status: e.status,
            message,
        },
    }
}

fn volume(v: fake_cloud::Volume) -> Volume {
    Volume {
        id: v.id,
        name: v.name,
        description: v.description,
        size_gib: v.size_gib,
        region: v.region,
        droplet_ids: v.droplet_ids,
        created_at: v.created_at,
        tags: v.tags,
    }
}

fn snapshot(s: fake_cloud::Snapshot) -> Snapshot {
    Snapshot {
        id: s.id,
        name: s.name,
        volume_id: s.volume_id,
        region: s.region,
        created_at: s.created_at,
        min_disk_size_gib: s.min_disk_size_gib,
    }
}

fn action(a: fake_cloud::Action) -> Action {
    Action {
        id: a.id,
        volume_id: a.volume_id,
        kind: match a.kind {
            fake_cloud::ActionKind::Attach => ActionKind::Attach,
            fake_cloud::ActionKind::Detach => ActionKind::Detach,
            fake_cloud::ActionKind::Resize => ActionKind::Resize,
        },
        status: match a.status {
            fake_cloud::ActionStatus::InProgress => ActionStatus::InProgress,
            fake_cloud::ActionStatus::Completed => ActionStatus::Completed,
            fake_cloud::ActionStatus::Errored => ActionStatus::Errored,
        },
        droplet_id: a.droplet_id,
        started_at: Some(a.started_at),
        error: a.error,
    }
}

fn request(req: NewVolume) -> fake_cloud::CreateVolumeRequest {
    fake_cloud::CreateVolumeRequest {
        name: req.name,
        region: req.region,
        size_gib: req.size_gib,
        description: req.description,
        snapshot_id: req.snapshot_id,
        tags: req.tags,
        filesystem_type: None,
    }
}

#[async_trait::async_trait]
impl CloudApi for MemoryCloud {
    async fn ping(&self, _deadline: Deadline) -> Result<(), CloudError> {
        Ok(())
    }

    async fn account(&self, _deadline: Deadline) -> Result<Account, CloudError> {
        self.call("account", |c| {
            let a = c.account();
            Ok(Account {
                volume_limit: Some(a.volume_limit),
                quota_gib: Some(a.capacity_quota_gib),
                used_gib: Some(a.used_gib),
            })
        })
        .await
    }

    async fn regions(&self, _deadline: Deadline) -> Result<Vec<String>, CloudError> {
        Ok(self.cloud.regions())
    }

    async fn create_volume(
        &self,
        req: NewVolume,
        _deadline: Deadline,
    ) -> Result<Volume, CloudError> {
        self.call("create_volume", move |c| c.create_volume(request(req)))
            .await
            .map(volume)
    }

    async fn clone_volume(
        &self,
        source_volume_id: &str,
        req: NewVolume,
        _deadline: Deadline,
    ) -> Result<Volume, CloudError> {
        self.call_on("clone_volume", source_volume_id, move |c, source| {
            c.clone_volume(source, request(req))
        })
        .await
        .map(volume)
    }

    async fn get_volume(&self, id: &str, _deadline: Deadline) -> Result<Volume, CloudError> {
        self.call_on("get_volume", id, |c, id| c.get_volume(id))
            .await
            .map(volume)
    }

    async fn volumes_named(
        &self,
        name: &str,
        _deadline: Deadline,
    ) -> Result<Vec<Volume>, CloudError> {
        self.call_on("list_volumes", name, |c, name| {
            Self::all_pages(|n| c.list_volumes(Some(name), None, n, PAGE))
        })
        .await
        .map(|all| all.into_iter().map(volume).collect())
    }

    async fn list_volumes(&self, _deadline: Deadline) -> Result<Vec<Volume>, CloudError> {
        self.call("list_volumes", |c| {
            Self::all_pages(|n| c.list_volumes(None, None, n, PAGE))
        })
        .await
        .map(|all| all.into_iter().map(volume).collect())
    }

    async fn delete_volume(&self, id: &str, _deadline: Deadline) -> Result<(), CloudError> {
        self.call_on("delete_volume", id, |c, id| c.delete_volume(id))
            .await
    }

    async fn set_volume_tags(
        &self,
        id: &str,
        tags: Vec<String>,
        _deadline: Deadline,
    ) -> Result<Volume, CloudError> {
        self.call_on("update_volume", id, |c, id| c.update_tags(id, tags))
            .await
            .map(volume)
    }

    async fn attach(
        &self,
        v: &Volume,
        droplet_id: u64,
        _deadline: Deadline,
    ) -> Result<Action, CloudError> {
        self.volume_action(v, move |c, id| c.attach(id, droplet_id))
            .await
    }

    async fn detach(
        &self,
        v: &Volume,
        droplet_id: u64,
        _deadline: Deadline,
    ) -> Result<Action, CloudError> {
        self.volume_action(v, move |c, id| c.detach(id, droplet_id))
            .await
    }

    async fn resize(
        &self,
        v: &Volume,
        size_gib: u64,
        _deadline: Deadline,
    ) -> Result<Action, CloudError> {
        self.volume_action(v, move |c, id| c.resize(id, size_gib))
            .await
    }

    async fn get_action(
        &self,
        volume_id: &str,
        action_id: u64,
        _deadline: Deadline,
    ) -> Result<Action, CloudError> {
        self.call_on("get_action", volume_id, move |c, volume_id| {
            let a = c.get_action(action_id)?;
            if a.volume_id == volume_id {
                Ok(a)
            } else {
                Err(fake_cloud::CloudError::resource_not_found())
            }
        })
        .await
        .map(action)
    }

    async fn volume_actions(
        &self,
        volume_id: &str,
        _deadline: Deadline,
    ) -> Result<Vec<Action>, CloudError> {
        self.call_on("list_volume_actions", volume_id, |c, volume_id| {
            c.list_volume_actions(volume_id)
        })
        .await
        .map(|all| all.into_iter().map(action).collect())
    }

    async fn get_droplet(&self, id: u64, _deadline: Deadline) -> Result<Droplet, CloudError> {
        self.call("get_droplet", move |c| c.get_droplet(id))
            .await
            .map(|d| Droplet {
                id: d.id,
                region: d.region,
                volume_ids: d.volume_ids,
            })
    }

    async fn create_snapshot(
        &self,
        volume_id: &str,
        name: &str,
        tags: Vec<String>,
        _deadline: Deadline,
    ) -> Result<Snapshot, CloudError> {
        let (volume_id, name) = (volume_id.to_string(), name.to_string());
        self.call("create_snapshot", move |c| {
            c.create_snapshot(&volume_id, &name, tags)
        })
        .await
        .map(snapshot)
    }

    async fn get_snapshot(&self, id: &str, _deadline: Deadline) -> Result<Snapshot, CloudError> {
        self.call_on("get_snapshot", id, |c, id| c.get_snapshot(id))
            .await
            .map(snapshot)
    }

    async fn list_snapshots(
        &self,
        volume_id: Option<&str>,
        _deadline: Deadline,
    ) -> Result<Vec<Snapshot>, CloudError> {
        let volume_id = volume_id.map(str::to_string);
        self.call("list_snapshots", move |c| {
            Self::all_pages(|n| c.list_snapshots(volume_id.as_deref(), n, PAGE))
        })
        .await
        .map(|all| all.into_iter().map(snapshot).collect())
    }

    async fn delete_snapshot(&self, id: &str, _deadline: Deadline) -> Result<(), CloudError> {
        self.call_on("delete_snapshot", id, |c, id| c.delete_snapshot(id))
            .await
    }

    fn waits(&self) -> &Waits {
        &self.waits
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    fn config(args: &[&str]) -> Config {
        let mut all = vec!["csi-driver"];
        all.extend_from_slice(args);
        Config::try_parse_from(all).unwrap()
    }

    #[test]
    fn each_refusal_kind_becomes_the_error_the_http_backend_reads_off_the_wire() {
        use fake_cloud::CloudError as Model;
        let refusals = [
            Model::resource_not_found(),
            Model::name_taken("a volume with the name \"x\" already exists in nyc3"),
            Model::volume_in_use("attached volume cannot be deleted"),
            Model::volume_in_use("volume has a pending resize event"),
            Model::pending_event("Droplet already has a pending event"),
            Model::already_attached(),
            Model::attachment_not_found(),
            Model::droplet_full(7),
            Model::quota_exceeded("capacity limit exceeded: 10 of 10 GiB in use"),
            Model::unprocessable("size_gigabytes must be between 1 and 16384, got 0"),
            Model::bad_request("page must be at least 1"),
            Model::unauthorized(),
            Model::too_many_requests(),
            Model::server_error("write state.json: disk full"),
        ];
        for e in refusals {
            let wire = CloudError::from_api(e.status, &e.message);
            assert_eq!(typed(e.clone()), wire, "{e}");
        }
    }

    #[test]
    fn a_refusal_is_classified_by_its_kind_not_by_words_in_its_message() {
        // A user's region slug that happens to say "pending" is still bad input.
        let e = fake_cloud::CloudError::unprocessable("invalid region slug \"pending\"");
        assert!(matches!(typed(e), CloudError::Invalid { .. }));
        let e = fake_cloud::CloudError::name_taken("a snapshot named \"attached\" exists");
        assert!(matches!(typed(e), CloudError::NameInUse { .. }));
    }

    #[test]
    fn without_droplet_flags_the_node_and_droplets_1_to_3_are_registered() {
        let d = droplets_from_flags(&config(&["--region", "sfo3"]), Some("42")).unwrap();
        let ids: Vec<u64> = d.iter().map(|(id, _)| *id).collect();
        assert_eq!(ids, [42, 1, 2, 3]);
        assert!(d.iter().all(|(_, r)| r == "sfo3"));
    }

    #[test]
    fn droplet_flags_replace_the_defaults_and_bad_ones_are_refused() {
        let d = droplets_from_flags(
            &config(&["--droplet", "7:ams3", "--droplet", "8:nyc3"]),
            Some("not-a-number"),
        )
        .unwrap();
        assert_eq!(d, [(7, "ams3".to_string()), (8, "nyc3".to_string())]);
        for bad in ["7", "x:nyc3", "0:nyc3", "7:"] {
            assert!(
                droplets_from_flags(&config(&["--droplet", bad]), None).is_err(),
                "{bad}"
            );
        }
        assert!(droplets_from_flags(
            &config(&["--droplet", "7:ams3", "--droplet", "7:nyc3"]),
            None
        )
        .is_err());
    }

    #[test]
    fn the_temporary_data_dir_lives_as_long_as_the_cloud() {
        let opened = InProcess::open(&config(&[]), Some("1")).unwrap();
        let dir = opened.data_dir().to_path_buf();
        assert!(dir.join("volumes").is_dir(), "{}", dir.display());
        assert_eq!(opened.cloud.list_droplets().len(), 3);
        drop(opened);
        assert!(!dir.exists());
    }

    fn a_volume(cloud: &fake_cloud::Cloud, name: &str) -> fake_cloud::Volume {
        cloud
            .create_volume(fake_cloud::CreateVolumeRequest {
                name: name.to_string(),
                region: "nyc3".to_string(),
                size_gib: 1,
                description: String::new(),
                snapshot_id: None,
                tags: Vec::new(),
                filesystem_type: None,
            })
            .unwrap()
    }

    #[test]
    fn a_chosen_data_dir_keeps_state_unless_the_cloud_is_ephemeral() {
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().to_str().unwrap();
        let durable = InProcess::open(&config(&["--data-dir", data]), Some("1")).unwrap();
        let kept = a_volume(&durable.cloud, "kept");
        assert!(dir.path().join("state.json").is_file());
        drop(durable);
        let reopened = InProcess::open(&config(&["--data-dir", data]), Some("1")).unwrap();
        assert_eq!(reopened.cloud.get_volume(&kept.id).unwrap().name, "kept");
        drop(reopened);

        let other = tempfile::tempdir().unwrap();
        let data = other.path().to_str().unwrap();
        let flags = ["--data-dir", data, "--cloud-ephemeral"];
        let ephemeral = InProcess::open(&config(&flags), Some("1")).unwrap();
        let gone = a_volume(&ephemeral.cloud, "gone");
        // The image is there for the node to attach; the metadata is not written.
        assert!(other
            .path()
            .join("volumes")
            .join(format!("{}.img", gone.id))
            .is_file());
        assert!(!other.path().join("state.json").exists());
        drop(ephemeral);
        let reopened = InProcess::open(&config(&flags), Some("1")).unwrap();
        assert!(reopened.cloud.get_volume(&gone.id).is_err());
        assert!(other.path().exists(), "a chosen data dir is never removed");
    }
}
