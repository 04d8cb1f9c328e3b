//! The cloud model: its configuration, the resources it holds and the
//! [`Cloud`] handle that changes them.

mod cloud;
pub mod validate;

use std::path::PathBuf;
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

pub use cloud::Cloud;
pub use validate::{MAX_VOLUME_NAME_LEN, MAX_VOLUME_SIZE_GIB, MIN_VOLUME_SIZE_GIB};

/// Default page size of list calls.
pub const DEFAULT_PER_PAGE: u32 = 20;
/// Largest page size of list calls.
pub const MAX_PER_PAGE: u32 = 200;
/// Default per-droplet volume limit.
pub const DEFAULT_VOLUME_LIMIT: u32 = 7;
/// Default account-wide capacity quota, GiB.
pub const DEFAULT_CAPACITY_QUOTA_GIB: u64 = 100_000;
/// Default API budget per minute (DigitalOcean's burst limit).
pub const DEFAULT_RATE_LIMIT_PER_MINUTE: u32 = 250;
/// Default API budget per hour (DigitalOcean's limit per token).
pub const DEFAULT_RATE_LIMIT_PER_HOUR: u32 = 5_000;

/// How long each kind of action takes: a fixed latency plus a uniformly
/// random jitter in `[0, jitter]`. All zero by default, so an action completes
/// at the next read of the model.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct LatencyConfig {
    /// Latency of an attach.
    pub attach: Duration,
    /// Latency of a detach.
    pub detach: Duration,
    /// Latency of a resize.
    pub resize: Duration,
    /// Largest random extra delay, added to each action.
    pub jitter: Duration,
}

impl LatencyConfig {
    /// The fixed latency of `kind`.
    pub fn for_kind(&self, kind: ActionKind) -> Duration {
        match kind {
            ActionKind::Attach => self.attach,
            ActionKind::Detach => self.detach,
            ActionKind::Resize => self.resize,
        }
    }
}

/// Injected faults. All rates are probabilities in `[0, 1]`. Only
/// `action_error_rate` acts in the model; the others act in the HTTP server,
/// never in in-process calls. Every random choice comes from RNGs seeded with
/// `seed`, so the same seed and the same sequence of requests give the same
/// faults.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Faults {
    /// Seed of the fault RNGs.
    pub seed: u64,
    /// Share of HTTP requests answered 500 before anything is applied.
    pub error_rate_5xx: f64,
    /// Share of HTTP requests answered 429 (with `retry-after`), on top of the budget.
    pub rate_429: f64,
    /// Share of HTTP requests that are applied, but whose answer is lost (500).
    pub lost_response_rate: f64,
    /// Share of actions that end `errored`.
    pub action_error_rate: f64,
    /// HTTP requests allowed per minute; past it, 429. 0 means unlimited.
    pub rate_limit_per_minute: u32,
    /// HTTP requests allowed per hour; past it, 429. 0 means unlimited.
    #[serde(default)]
    pub rate_limit_per_hour: u32,
}

impl Default for Faults {
    fn default() -> Self {
        Faults {
            seed: 0,
            error_rate_5xx: 0.0,
            rate_429: 0.0,
            lost_response_rate: 0.0,
            action_error_rate: 0.0,
            rate_limit_per_minute: DEFAULT_RATE_LIMIT_PER_MINUTE,
            rate_limit_per_hour: DEFAULT_RATE_LIMIT_PER_HOUR,
        }
    }
}

impl Faults {
    /// No faults and no rate limit: what in-process tests and benchmarks want.
    pub fn none() -> Faults {
        Faults {
            rate_limit_per_minute: 0,
            rate_limit_per_hour: 0,
            ..Faults::default()
        }
    }

    /// A 422 naming the first rate outside `[0, 1]`.
    pub fn validate(&self) -> Result<(), crate::CloudError> {
        for (name, rate) in [
            ("error_rate_5xx", self.error_rate_5xx),
            ("rate_429", self.rate_429),
            ("lost_response_rate", self.lost_response_rate),
            ("action_error_rate", self.action_error_rate),
        ] {
            if !(0.0..=1.0).contains(&rate) {
                return Err(crate::CloudError::unprocessable(format!(
                    "{name} must be between 0 and 1, got {rate}"
                )));
            }
        }
        Ok(())
    }

    /// The same faults with every rate clamped into `[0, 1]` (NaN becomes 0).
    pub fn clamped(self) -> Faults {
        let clamp = |r: f64| if r.is_nan() { 0.0 } else { r.clamp(0.0, 1.0) };
        Faults {
            error_rate_5xx: clamp(self.error_rate_5xx),
            rate_429: clamp(self.rate_429),
            lost_response_rate: clamp(self.lost_response_rate),
            action_error_rate: clamp(self.action_error_rate),
            ..self
        }
    }
}

/// Everything a [`Cloud`] is built from.
#[derive(Debug, Clone)]
pub struct CloudConfig {
    /// Region slugs volumes and droplets may use.
    pub regions: Vec<String>,
    /// Droplets registered at start, as (id, region slug).
    pub droplets: Vec<(u64, String)>,
    /// Most volumes attached to one droplet (in-flight attaches included).
    pub volume_limit: u32,
    /// Account-wide total of volume sizes, GiB.
    pub capacity_quota_gib: u64,
    /// Action latencies.
    pub latency: LatencyConfig,
    /// Injected faults.
    pub faults: Faults,
    /// Where images and `state.json` live; None keeps everything in memory.
    pub data_dir: Option<PathBuf>,
}

impl Default for CloudConfig {
    fn default() -> Self {
        CloudConfig {
            regions: ["nyc3", "sfo3", "ams3"].map(String::from).to_vec(),
            droplets: Vec::new(),
            volume_limit: DEFAULT_VOLUME_LIMIT,
            capacity_quota_gib: DEFAULT_CAPACITY_QUOTA_GIB,
            latency: LatencyConfig::default(),
            faults: Faults::default(),
            data_dir: None,
        }
    }
}

/// A block storage volume.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Volume {
    /// UUID.
    pub id: String,
    /// Name, unique in its region.
    pub name: String,
    /// Free text.
    pub description: String,
    /// Size in GiB.
    pub size_gib: u64,
    /// Region slug.
    pub region: String,
    /// The droplet it is attached to, if any (at most one element).
    pub droplet_ids: Vec<u64>,
    /// Creation time.
    pub created_at: DateTime<Utc>,
    /// "ext4", "xfs" or empty.
    pub filesystem_type: String,
    /// Filesystem label, usually empty.
    pub filesystem_label: String,
    /// Tags.
    pub tags: Vec<String>,
    /// The snapshot it was created from.
    pub snapshot_id: Option<String>,
    /// The volume it was cloned from (not a DigitalOcean feature).
    pub source_volume_id: Option<String>,
}

/// A snapshot of a volume.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Snapshot {
    /// UUID.
    pub id: String,
    /// Name, unique across snapshots.
    pub name: String,
    /// The volume it was taken from (which may since have been deleted).
    pub volume_id: String,
    /// Creation time.
    pub created_at: DateTime<Utc>,
    /// Region slug.
    pub region: String,
    /// The smallest volume that can be made from it: its volume's size.
    pub min_disk_size_gib: u64,
    /// Size of the snapshot, GiB.
    pub size_gib: f64,
    /// Tags.
    pub tags: Vec<String>,
}

/// Where an action is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ActionStatus {
    /// Started, not yet done.
    InProgress,
    /// Done; its effect is visible.
    Completed,
    /// Failed; nothing changed. `Action::error` says why.
    Errored,
}

impl ActionStatus {
    /// The DigitalOcean spelling: `in-progress`, `completed`, `errored`.
    pub fn as_str(self) -> &'static str {
        match self {
            ActionStatus::InProgress => "in-progress",
            ActionStatus::Completed => "completed",
            ActionStatus::Errored => "errored",
        }
    }
}

/// What an action does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ActionKind {
    /// Attach a volume to a droplet.
    Attach,
    /// Detach a volume from a droplet.
    Detach,
    /// Grow a volume.
    Resize,
}

impl ActionKind {
    /// The DigitalOcean action type: `attach_volume`, `detach_volume`, `resize_volume`.
    pub fn as_do_type(self) -> &'static str {
        match self {
            ActionKind::Attach => "attach_volume",
            ActionKind::Detach => "detach_volume",
            ActionKind::Resize => "resize_volume",
        }
    }
}

/// An asynchronous attach, detach or resize.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Action {
    /// Numeric id, unique in the cloud.
    pub id: u64,
    /// Current status.
    pub status: ActionStatus,
    /// What it does.
    pub kind: ActionKind,
    /// The volume it acts on.
    pub volume_id: String,
    /// The droplet, for attach and detach.
    pub droplet_id: Option<u64>,
    /// The new size, for resize.
    pub size_gib: Option<u64>,
    /// Start time.
    pub started_at: DateTime<Utc>,
    /// End time; None while in progress.
    pub completed_at: Option<DateTime<Utc>>,
    /// Region slug.
    pub region: String,
    /// Why it errored.
    pub error: Option<String>,
}

impl Action {
    /// True once completed or errored.
    pub fn is_done(&self) -> bool {
        self.status != ActionStatus::InProgress
    }
}

/// A droplet (a node) that volumes attach to.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Droplet {
    /// Numeric id.
    pub id: u64,
    /// `droplet-<id>`.
    pub name: String,
    /// Region slug.
    pub region: String,
    /// Ids of the volumes attached to it now.
    pub volume_ids: Vec<String>,
    /// Registration time.
    pub created_at: DateTime<Utc>,
}

/// Account limits and usage.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Account {
    /// Most volumes attached to one droplet.
    pub volume_limit: u32,
    /// Account-wide capacity quota, GiB.
    pub capacity_quota_gib: u64,
    /// GiB used by volumes (pending resizes counted at their new size).
    pub used_gib: u64,
    /// Number of volumes.
    pub volume_count: u64,
    /// Number of snapshots.
    pub snapshot_count: u64,
    /// Number of droplets.
    pub droplet_count: u64,
}

/// What a new volume should be.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct CreateVolumeRequest {
    /// Name, unique in the region.
    pub name: String,
    /// Region slug.
    pub region: String,
    /// Size, GiB.
    pub size_gib: u64,
    /// Free text.
    pub description: String,
    /// Start from this snapshot's data.
    pub snapshot_id: Option<String>,
    /// Tags.
    pub tags: Vec<String>,
    /// "ext4", "xfs" or None.
    pub filesystem_type: Option<String>,
}

/// One page of a list.
#[derive(Debug, Clone, PartialEq)]
pub struct Page<T> {
    /// The items on this page.
    pub items: Vec<T>,
    /// Items on all pages.
    pub total: u64,
    /// This page's number, from 1.
    pub page: u32,
    /// Page size.
    pub per_page: u32,
}

impl<T> Page<T> {
    /// Cuts `all` into pages and returns page `page`. A 400 if `page` is 0 or
    /// `per_page` is outside `1..=200`. A page past the end is empty.
    pub fn of(all: Vec<T>, page: u32, per_page: u32) -> Result<Page<T>, crate::CloudError> {
        if page == 0 {
            return Err(crate::CloudError::bad_request("page must be at least 1"));
        }
        if per_page == 0 || per_page > MAX_PER_PAGE {
            return Err(crate::CloudError::bad_request(format!(
                "per_page must be between 1 and {MAX_PER_PAGE}"
            )));
        }
        let total = all.len() as u64;
        let skip = (u64::from(page) - 1) * u64::from(per_page);
        let items = all
            .into_iter()
            .skip(usize::try_from(skip).unwrap_or(usize::MAX))
            .take(per_page as usize)
            .collect();
        Ok(Page {
            items,
            total,
            page,
            per_page,
        })
    }

    /// The number of the last page (1 when there are no items).
    pub fn last_page(&self) -> u32 {
        let pages = self.total.div_ceil(u64::from(self.per_page.max(1))).max(1);
        u32::try_from(pages).unwrap_or(u32::MAX)
    }
}
