//! The JSON shapes of the DigitalOcean v2 API as the client reads them. Fields the driver
//! does not need are left out; optional ones default, so a richer answer still parses.

use chrono::{DateTime, Utc};
use serde::Deserialize;

use crate::cloud::{Action, ActionKind, ActionStatus, Droplet, Snapshot, Volume};

/// An RFC 3339 time; the epoch when absent or unreadable (only ordering depends on it).
fn time(text: &str) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(text)
        .map(|t| t.with_timezone(&Utc))
        .unwrap_or_default()
}

/// `{"id":"not_found","message":"…","request_id":"…"}`.
#[derive(Debug, Deserialize)]
pub struct ErrorBody {
    #[serde(default)]
    pub message: String,
}

/// A region in a volume or droplet, `{slug, name, …}`.
#[derive(Debug, Default, Deserialize)]
pub struct RegionRef {
    #[serde(default)]
    pub slug: String,
}

/// A region in `GET /v2/regions`.
#[derive(Debug, Deserialize)]
pub struct RegionWire {
    pub slug: String,
    #[serde(default)]
    pub available: bool,
    #[serde(default)]
    pub features: Vec<String>,
}

#[derive(Debug, Deserialize)]
pub struct VolumeWire {
    pub id: String,
    pub name: String,
    #[serde(default)]
    pub description: Option<String>,
    pub size_gigabytes: u64,
    #[serde(default)]
    pub region: RegionRef,
    #[serde(default)]
    pub droplet_ids: Option<Vec<u64>>,
    #[serde(default)]
    pub created_at: String,
    #[serde(default)]
    pub tags: Option<Vec<String>>,
}

impl From<VolumeWire> for Volume {
    fn from(v: VolumeWire) -> Volume {
        Volume {
            created_at: time(&v.created_at),
            id: v.id,
            name: v.name,
            description: v.description.unwrap_or_default(),
            size_gib: v.size_gigabytes,
            region: v.region.slug,
            droplet_ids: v.droplet_ids.unwrap_or_default(),
            tags: v.tags.unwrap_or_default(),
        }
    }
}

#[derive(Debug, Deserialize)]
pub struct ActionWire {
    pub id: u64,
    pub status: String,
    #[serde(rename = "type")]
    pub kind: String,
    #[serde(default)]
    pub started_at: Option<String>,
    /// For attach and detach, the droplet (0 or absent when unknown).
    #[serde(default)]
    pub resource_id: Option<serde_json::Value>,
    /// fake-cloud's reason for an errored action; DigitalOcean gives none.
    #[serde(default)]
    pub error_message: Option<String>,
}

impl ActionWire {
    /// The action, on the volume whose path it was read from.
    pub fn into_action(self, volume_id: &str) -> Action {
        Action {
            id: self.id,
            volume_id: volume_id.to_string(),
            kind: ActionKind::from_do_type(&self.kind),
            status: match self.status.as_str() {
                "completed" => ActionStatus::Completed,
                "errored" => ActionStatus::Errored,
                _ => ActionStatus::InProgress,
            },
            droplet_id: self
                .resource_id
                .as_ref()
                .and_then(serde_json::Value::as_u64)
                .filter(|&id| id > 0),
            started_at: self.started_at.as_deref().map(time),
            error: self.error_message,
        }
    }
}

#[derive(Debug, Deserialize)]
pub struct SnapshotWire {
    pub id: String,
    pub name: String,
    #[serde(default)]
    pub created_at: String,
    #[serde(default)]
    pub regions: Vec<String>,
    #[serde(default)]
    pub resource_id: String,
    #[serde(default)]
    pub min_disk_size: u64,
}

impl From<SnapshotWire> for Snapshot {
    fn from(s: SnapshotWire) -> Snapshot {
        Snapshot {
            created_at: time(&s.created_at),
            region: s.regions.into_iter().next().unwrap_or_default(),
            id: s.id,
            name: s.name,
            volume_id: s.resource_id,
            min_disk_size_gib: s.min_disk_size,
        }
    }
}

#[derive(Debug, Deserialize)]
pub struct DropletWire {
    pub id: u64,
    #[serde(default)]
    pub volume_ids: Vec<String>,
    #[serde(default)]
    pub region: RegionRef,
}

impl From<DropletWire> for Droplet {
    fn from(d: DropletWire) -> Droplet {
        Droplet {
            id: d.id,
            region: d.region.slug,
            volume_ids: d.volume_ids,
        }
    }
}

#[derive(Debug, Deserialize)]
pub struct AccountWire {
    #[serde(default)]
    pub volume_limit: Option<u32>,
    /// fake-cloud extension.
    #[serde(default)]
    pub volume_quota_gigabytes: Option<u64>,
    /// fake-cloud extension.
    #[serde(default)]
    pub volume_used_gigabytes: Option<u64>,
}

/// `{"<key>": object}`: one object answers.
#[derive(Debug, Deserialize)]
pub struct VolumeBody {
    pub volume: VolumeWire,
}

#[derive(Debug, Deserialize)]
pub struct ActionBody {
    pub action: ActionWire,
}

#[derive(Debug, Deserialize)]
pub struct SnapshotBody {
    pub snapshot: SnapshotWire,
}

#[derive(Debug, Deserialize)]
pub struct DropletBody {
    pub droplet: DropletWire,
}

#[derive(Debug, Deserialize)]
pub struct AccountBody {
    pub account: AccountWire,
}

/// `links.pages.next`, present while there are more pages.
#[derive(Debug, Default, Deserialize)]
pub struct Links {
    #[serde(default)]
    pub pages: PageLinks,
}

#[derive(Debug, Default, Deserialize)]
pub struct PageLinks {
    #[serde(default)]
    pub next: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
pub struct Meta {
    #[serde(default)]
    pub total: Option<u64>,
}

/// One page of a list answer: the items under `key`, plus `links` and `meta`.
#[derive(Debug)]
pub struct ListPage<T> {
    pub items: Vec<T>,
    pub has_next: bool,
    pub total: Option<u64>,
}

impl<T: serde::de::DeserializeOwned> ListPage<T> {
    /// Parse a list answer whose items are under `key`.
    pub fn parse(bytes: &[u8], key: &str) -> Result<ListPage<T>, serde_json::Error> {
        let mut value: serde_json::Value = serde_json::from_slice(bytes)?;
        let items = match value.get_mut(key).map(serde_json::Value::take) {
            Some(items) => serde_json::from_value(items)?,
            None => Vec::new(),
        };
        let links: Links = match value.get_mut("links").map(serde_json::Value::take) {
            Some(links) => serde_json::from_value(links)?,
            None => Links::default(),
        };
        let meta: Meta = match value.get_mut("meta").map(serde_json::Value::take) {
            Some(meta) => serde_json::from_value(meta)?,
            None => Meta::default(),
        };
        Ok(ListPage {
            items,
            has_next: links.pages.next.is_some(),
            total: meta.total,
        })
    }
}
