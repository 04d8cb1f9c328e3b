//! The JSON shapes of the DigitalOcean v2 API, as the server writes and reads
//! them. The model types stay free of wire concerns; these convert from them.

use chrono::{DateTime, SecondsFormat, Utc};
use serde::{Deserialize, Serialize};

use crate::model::{Account, Action, Droplet, Faults, LatencyConfig, Snapshot, Volume};

/// RFC 3339 in UTC with a `Z`, to the second, as DigitalOcean writes it.
pub fn timestamp(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Secs, true)
}

/// A region object.
#[derive(Debug, Serialize)]
pub struct RegionWire {
    pub slug: String,
    pub name: String,
    pub sizes: Vec<String>,
    pub features: Vec<String>,
    pub available: bool,
}

impl RegionWire {
    pub fn new(slug: &str) -> RegionWire {
        RegionWire {
            slug: slug.to_string(),
            name: region_name(slug),
            sizes: Vec::new(),
            features: ["storage"].map(String::from).to_vec(),
            available: true,
        }
    }
}

/// "nyc3" → "New York 3"; unknown prefixes keep the slug.
fn region_name(slug: &str) -> String {
    let split = slug
        .find(|c: char| c.is_ascii_digit())
        .unwrap_or(slug.len());
    let (city, number) = slug.split_at(split);
    let city = match city {
        "nyc" => "New York",
        "sfo" => "San Francisco",
        "ams" => "Amsterdam",
        "sgp" => "Singapore",
        "lon" => "London",
        "fra" => "Frankfurt",
        "tor" => "Toronto",
        "blr" => "Bangalore",
        "syd" => "Sydney",
        "atl" => "Atlanta",
        _ => return slug.to_string(),
    };
    format!("{city} {number}").trim_end().to_string()
}

#[derive(Debug, Serialize)]
pub struct VolumeWire {
    pub id: String,
    pub name: String,
    pub description: String,
    pub size_gigabytes: u64,
    pub region: RegionWire,
    pub droplet_ids: Vec<u64>,
    pub created_at: String,
    pub filesystem_type: String,
    pub filesystem_label: String,
    pub tags: Vec<String>,
    /// Not DigitalOcean: the snapshot the volume was made from.
    pub snapshot_id: Option<String>,
    /// Not DigitalOcean: the volume it was cloned from.
    pub source_volume_id: Option<String>,
}

impl From<Volume> for VolumeWire {
    fn from(v: Volume) -> Self {
        VolumeWire {
            region: RegionWire::new(&v.region),
            created_at: timestamp(v.created_at),
            id: v.id,
            name: v.name,
            description: v.description,
            size_gigabytes: v.size_gib,
            droplet_ids: v.droplet_ids,
            filesystem_type: v.filesystem_type,
            filesystem_label: v.filesystem_label,
            tags: v.tags,
            snapshot_id: v.snapshot_id,
            source_volume_id: v.source_volume_id,
        }
    }
}

#[derive(Debug, Serialize)]
pub struct ActionWire {
    pub id: u64,
    pub status: &'static str,
    #[serde(rename = "type")]
    pub kind: &'static str,
    pub started_at: String,
    pub completed_at: Option<String>,
    /// As on DigitalOcean, an integer: the droplet's id for attach and
    /// detach, 0 for resize.
    pub resource_id: u64,
    pub resource_type: &'static str,
    pub region: RegionWire,
    pub region_slug: String,
    /// Not DigitalOcean: the volume the action acts on.
    pub volume_id: String,
    /// Not DigitalOcean: why an errored action failed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error_message: Option<String>,
}

impl From<Action> for ActionWire {
    fn from(a: Action) -> Self {
        ActionWire {
            id: a.id,
            status: a.status.as_str(),
            kind: a.kind.as_do_type(),
            started_at: timestamp(a.started_at),
            completed_at: a.completed_at.map(timestamp),
            resource_id: a.droplet_id.unwrap_or(0),
            resource_type: "volume",
            region: RegionWire::new(&a.region),
            region_slug: a.region,
            volume_id: a.volume_id,
            error_message: a.error,
        }
    }
}

#[derive(Debug, Serialize)]
pub struct SnapshotWire {
    pub id: String,
    pub name: String,
    pub created_at: String,
    pub regions: Vec<String>,
    pub resource_id: String,
    pub resource_type: &'static str,
    pub min_disk_size: u64,
    pub size_gigabytes: f64,
    pub tags: Vec<String>,
}

impl From<Snapshot> for SnapshotWire {
    fn from(s: Snapshot) -> Self {
        SnapshotWire {
            id: s.id,
            name: s.name,
            created_at: timestamp(s.created_at),
            regions: vec![s.region],
            resource_id: s.volume_id,
            resource_type: "volume",
            min_disk_size: s.min_disk_size_gib,
            size_gigabytes: s.size_gib,
            tags: s.tags,
        }
    }
}

#[derive(Debug, Serialize)]
pub struct DropletWire {
    pub id: u64,
    pub name: String,
    pub memory: u64,
    pub vcpus: u64,
    pub disk: u64,
    pub locked: bool,
    pub status: &'static str,
    pub created_at: String,
    pub volume_ids: Vec<String>,
    pub region: RegionWire,
    pub size_slug: &'static str,
    pub features: Vec<String>,
    pub tags: Vec<String>,
}

impl From<Droplet> for DropletWire {
    fn from(d: Droplet) -> Self {
        DropletWire {
            id: d.id,
            name: d.name,
            memory: 1024,
            vcpus: 1,
            disk: 25,
            locked: false,
            status: "active",
            created_at: timestamp(d.created_at),
            volume_ids: d.volume_ids,
            region: RegionWire::new(&d.region),
            size_slug: "s-1vcpu-1gb",
            features: Vec::new(),
            tags: Vec::new(),
        }
    }
}

#[derive(Debug, Serialize)]
pub struct AccountWire {
    /// In fake-cloud, the per-droplet volume limit.
    pub volume_limit: u32,
    pub droplet_limit: u32,
    pub floating_ip_limit: u32,
    pub email: &'static str,
    pub uuid: &'static str,
    pub email_verified: bool,
    pub status: &'static str,
    pub status_message: &'static str,
    /// Not DigitalOcean: the account-wide capacity quota, GiB.
    pub volume_quota_gigabytes: u64,
    /// Not DigitalOcean: GiB in use.
    pub volume_used_gigabytes: u64,
}

impl From<Account> for AccountWire {
    fn from(a: Account) -> Self {
        AccountWire {
            volume_limit: a.volume_limit,
            droplet_limit: 25,
            floating_ip_limit: 3,
            email: "fake-cloud@example.com",
            uuid: "00000000-0000-4000-8000-000000000000",
            email_verified: true,
            status: "active",
            status_message: "",
            volume_quota_gigabytes: a.capacity_quota_gib,
            volume_used_gigabytes: a.used_gib,
        }
    }
}

/// `links.pages`: only the entries that apply.
#[derive(Debug, Default, Serialize)]
pub struct PageLinks {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub first: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub prev: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub next: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last: Option<String>,
}

#[derive(Debug, Serialize)]
pub struct Links {
    pub pages: PageLinks,
}

/// `POST /v2/volumes`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreateVolumeBody {
    pub size_gigabytes: u64,
    pub name: String,
    #[serde(default)]
    pub description: Option<String>,
    #[serde(default)]
    pub region: Option<String>,
    #[serde(default)]
    pub snapshot_id: Option<String>,
    #[serde(default)]
    pub filesystem_type: Option<String>,
    #[serde(default)]
    pub tags: Option<Vec<String>>,
    /// Not DigitalOcean: clone this volume.
    #[serde(default)]
    pub source_volume_id: Option<String>,
}

/// `PATCH /v2/volumes/{id}` (not DigitalOcean).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UpdateVolumeBody {
    pub tags: Vec<String>,
}

/// `POST /v2/volumes/{id}/actions`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VolumeActionBody {
    #[serde(rename = "type")]
    pub kind: String,
    #[serde(default)]
    pub droplet_id: Option<u64>,
    #[serde(default)]
    pub region: Option<String>,
    #[serde(default)]
    pub size_gigabytes: Option<u64>,
    /// Accepted, as DigitalOcean does for attach, and ignored.
    #[serde(default, rename = "tags")]
    pub _tags: Option<Vec<String>>,
}

/// `POST /v2/volumes/{id}/snapshots`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreateSnapshotBody {
    pub name: String,
    #[serde(default)]
    pub tags: Option<Vec<String>>,
}

/// `POST /admin/droplets`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AddDropletBody {
    pub id: u64,
    pub region: String,
}

/// `PUT /admin/faults`: any subset of the fields of [`Faults`].
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FaultsPatch {
    pub seed: Option<u64>,
    pub error_rate_5xx: Option<f64>,
    pub rate_429: Option<f64>,
    pub lost_response_rate: Option<f64>,
    pub action_error_rate: Option<f64>,
    pub rate_limit_per_minute: Option<u32>,
    pub rate_limit_per_hour: Option<u32>,
}

impl FaultsPatch {
    pub fn apply(self, f: Faults) -> Faults {
        Faults {
            seed: self.seed.unwrap_or(f.seed),
            error_rate_5xx: self.error_rate_5xx.unwrap_or(f.error_rate_5xx),
            rate_429: self.rate_429.unwrap_or(f.rate_429),
            lost_response_rate: self.lost_response_rate.unwrap_or(f.lost_response_rate),
            action_error_rate: self.action_error_rate.unwrap_or(f.action_error_rate),
            rate_limit_per_minute: self
                .rate_limit_per_minute
                .unwrap_or(f.rate_limit_per_minute),
            rate_limit_per_hour: self.rate_limit_per_hour.unwrap_or(f.rate_limit_per_hour),
        }
    }
}

/// `GET /admin/latency`, and `PUT` with any subset of the fields, in milliseconds.
#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LatencyWire {
    pub attach_ms: Option<u64>,
    pub detach_ms: Option<u64>,
    pub resize_ms: Option<u64>,
    pub jitter_ms: Option<u64>,
}

fn millis(d: std::time::Duration) -> Option<u64> {
    Some(u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

impl From<LatencyConfig> for LatencyWire {
    fn from(l: LatencyConfig) -> Self {
        LatencyWire {
            attach_ms: millis(l.attach),
            detach_ms: millis(l.detach),
            resize_ms: millis(l.resize),
            jitter_ms: millis(l.jitter),
        }
    }
}

impl LatencyWire {
    pub fn apply(self, l: LatencyConfig) -> LatencyConfig {
        let ms = std::time::Duration::from_millis;
        LatencyConfig {
            attach: self.attach_ms.map_or(l.attach, ms),
            detach: self.detach_ms.map_or(l.detach, ms),
            resize: self.resize_ms.map_or(l.resize, ms),
            jitter: self.jitter_ms.map_or(l.jitter, ms),
        }
    }
}
