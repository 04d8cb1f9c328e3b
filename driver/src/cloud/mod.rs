//! The cloud the controller talks to: one trait ([`CloudApi`]), one error enum
//! ([`CloudError`]), and two backends chosen by `--cloud`: the fake-cloud model in process
//! ([`memory`]) and a DigitalOcean-v2 HTTP client ([`http`]). Slow actions are waited on by
//! [`wait::wait_for_action`], the one function every caller uses.

pub mod deadline;
pub mod http;
#[cfg(feature = "fake-cloud")]
pub mod memory;
pub mod names;
pub mod wait;

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};

use crate::config::{CloudKind, Config, PollMode};
pub use deadline::Deadline;
pub use wait::PollPolicy;

/// Bytes in a GiB, the cloud's size unit.
pub const GIB: i64 = 1 << 30;
/// Smallest volume, GiB.
pub const MIN_VOLUME_GIB: u64 = 1;
/// Largest volume, GiB (16 TiB).
pub const MAX_VOLUME_GIB: u64 = 16 * 1024;

/// A failure talking to the cloud, classified by what the caller can do about it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CloudError {
    /// The resource does not exist (404).
    #[error("not found: {message}")]
    NotFound { message: String },
    /// A volume or snapshot with that name already exists (409 on create).
    #[error("name already in use: {message}")]
    NameInUse { message: String },
    /// The volume is attached, or an attach is in flight, so it can't be deleted (409).
    #[error("volume is in use: {message}")]
    VolumeInUse { message: String },
    /// The volume is already attached to a droplet (422 "This volume is already attached").
    #[error("{message}")]
    AlreadyAttached { message: String },
    /// The volume is not attached to that droplet (422 "Attachment not found").
    #[error("{message}")]
    AttachmentNotFound { message: String },
    /// The droplet or volume has another action in flight (422 "... pending event").
    #[error("{message}")]
    PendingEvent { message: String },
    /// The droplet holds as many volumes as it may (422 "cannot attach more volumes").
    #[error("{message}")]
    DropletLimit { message: String },
    /// The account's storage quota would be exceeded (403 "capacity limit exceeded").
    #[error("{message}")]
    QuotaExceeded { message: String },
    /// The cloud rejected the request's contents (400 or 422).
    #[error("invalid request: {message}")]
    Invalid { message: String },
    /// Too many requests (429), still so after waiting as long as the deadline allowed.
    #[error("the cloud API rate limit is exhausted{}", retry_hint(*.retry_after))]
    RateLimited { retry_after: Option<Duration> },
    /// The API token was refused (401, or 403 other than a quota).
    #[error("the cloud refused the API token: {message}")]
    Unauthorized { message: String },
    /// Any other answer the cloud gave, after retries for a 5xx.
    #[error("cloud API answered {status}: {message}")]
    Api { status: u16, message: String },
    /// The cloud could not be reached, or its answer could not be read.
    #[error("cloud API unreachable: {message}")]
    Transport { message: String },
    /// The request's deadline passed first.
    #[error("deadline exceeded: {what}")]
    Timeout { what: String },
    /// An action ended `errored`.
    #[error("{kind} action {action_id} on volume {volume_id} errored: {reason}")]
    ActionErrored {
        action_id: u64,
        kind: String,
        volume_id: String,
        reason: String,
    },
}

fn retry_hint(retry_after: Option<Duration>) -> String {
    match retry_after {
        Some(d) => format!("; retry after {}s", d.as_secs_f64().ceil()),
        None => String::new(),
    }
}

impl CloudError {
    /// Classify an error answer of the DigitalOcean v2 API by its status and message,
    /// matching the message texts the API documents. Only the HTTP backend reads errors
    /// off the wire; the in-process one gets the model's typed refusal and maps its kind.
    pub fn from_api(status: u16, message: &str) -> CloudError {
        let message = message.to_string();
        let lower = message.to_lowercase();
        match status {
            404 => CloudError::NotFound { message },
            409 if lower.contains("attached") || lower.contains("pending") => {
                CloudError::VolumeInUse { message }
            }
            409 => CloudError::NameInUse { message },
            422 if lower.contains("pending") => CloudError::PendingEvent { message },
            422 if lower.contains("already attached") => CloudError::AlreadyAttached { message },
            422 if lower.contains("attachment not found") => {
                CloudError::AttachmentNotFound { message }
            }
            422 if lower.contains("cannot attach more volumes") => {
                CloudError::DropletLimit { message }
            }
            422 if lower.contains("already") && lower.contains("use") => {
                CloudError::NameInUse { message }
            }
            403 if lower.contains("capacity limit") || lower.contains("quota") => {
                CloudError::QuotaExceeded { message }
            }
            401 | 403 => CloudError::Unauthorized { message },
            429 => CloudError::RateLimited { retry_after: None },
            400 | 422 => CloudError::Invalid { message },
            _ => CloudError::Api { status, message },
        }
    }

    /// True for a 404.
    pub fn is_not_found(&self) -> bool {
        matches!(self, CloudError::NotFound { .. })
    }
}

/// A block storage volume as the controller sees it.
#[derive(Debug, Clone, PartialEq)]
pub struct Volume {
    /// The cloud's id (a UUID on DigitalOcean); the CSI volume id.
    pub id: String,
    /// The cloud's name: `[a-z][a-z0-9-]*`, at most 64 characters (see [`names`]).
    pub name: String,
    /// Free text; the driver keeps the CSI name and source here (see [`names`]).
    pub description: String,
    /// Size, GiB.
    pub size_gib: u64,
    /// Region slug.
    pub region: String,
    /// The droplet it is attached to, if any.
    pub droplet_ids: Vec<u64>,
    /// Creation time.
    pub created_at: DateTime<Utc>,
    /// Tags.
    pub tags: Vec<String>,
}

/// A volume snapshot.
#[derive(Debug, Clone, PartialEq)]
pub struct Snapshot {
    /// The cloud's id.
    pub id: String,
    /// The cloud's name.
    pub name: String,
    /// The volume it was taken from (which may since have been deleted).
    pub volume_id: String,
    /// Region slug.
    pub region: String,
    /// Creation time.
    pub created_at: DateTime<Utc>,
    /// The smallest volume it can be restored to, GiB.
    pub min_disk_size_gib: u64,
}

/// What an action does.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum ActionKind {
    Attach,
    Detach,
    Resize,
    /// A type this driver does not start.
    Other(String),
}

impl ActionKind {
    /// From the DigitalOcean type (`attach_volume`, ...).
    pub fn from_do_type(t: &str) -> ActionKind {
        match t {
            "attach_volume" | "attach" => ActionKind::Attach,
            "detach_volume" | "detach" => ActionKind::Detach,
            "resize_volume" | "resize" => ActionKind::Resize,
            other => ActionKind::Other(other.to_string()),
        }
    }

    /// The DigitalOcean type.
    pub fn as_do_type(&self) -> &str {
        match self {
            ActionKind::Attach => "attach_volume",
            ActionKind::Detach => "detach_volume",
            ActionKind::Resize => "resize_volume",
            ActionKind::Other(t) => t,
        }
    }

    /// Attach or detach: the kinds the cloud runs one at a time per droplet.
    pub fn is_attachment(&self) -> bool {
        matches!(self, ActionKind::Attach | ActionKind::Detach)
    }
}

/// Where an action is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ActionStatus {
    InProgress,
    Completed,
    Errored,
}

/// An asynchronous attach, detach or resize.
#[derive(Debug, Clone, PartialEq)]
pub struct Action {
    /// The cloud's id.
    pub id: u64,
    /// The volume it acts on.
    pub volume_id: String,
    /// What it does.
    pub kind: ActionKind,
    /// Current status.
    pub status: ActionStatus,
    /// The droplet, for attach and detach, when the cloud says.
    pub droplet_id: Option<u64>,
    /// Start time, when the cloud says.
    pub started_at: Option<DateTime<Utc>>,
    /// Why it errored, when the cloud says.
    pub error: Option<String>,
}

/// A droplet: a node volumes attach to.
#[derive(Debug, Clone, PartialEq)]
pub struct Droplet {
    pub id: u64,
    /// Region slug.
    pub region: String,
    /// Volumes attached now.
    pub volume_ids: Vec<String>,
}

/// Account limits and usage; each field is None when the cloud does not report it.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Account {
    /// Most volumes per droplet.
    pub volume_limit: Option<u32>,
    /// Account-wide storage quota, GiB (a fake-cloud extension).
    pub quota_gib: Option<u64>,
    /// Storage in use, GiB (a fake-cloud extension).
    pub used_gib: Option<u64>,
}

/// What a new volume should be.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct NewVolume {
    pub name: String,
    pub region: String,
    pub size_gib: u64,
    pub description: String,
    /// Restore from this snapshot.
    pub snapshot_id: Option<String>,
    pub tags: Vec<String>,
}

/// What the controller needs from a block-storage cloud. Every call is bounded by the
/// request's [`Deadline`]; a backend that retries stops retrying at it.
#[async_trait::async_trait]
pub trait CloudApi: Send + Sync {
    /// Cheap reachability (and credentials) check, for Probe.
    async fn ping(&self, deadline: Deadline) -> Result<(), CloudError>;

    /// Limits and usage.
    async fn account(&self, deadline: Deadline) -> Result<Account, CloudError>;

    /// Region slugs where volumes can be made.
    async fn regions(&self, deadline: Deadline) -> Result<Vec<String>, CloudError>;

    /// Create a blank volume, or one restored from `req.snapshot_id`.
    async fn create_volume(&self, req: NewVolume, deadline: Deadline)
        -> Result<Volume, CloudError>;

    /// Create a volume holding a copy of another volume's data, in the source's region.
    async fn clone_volume(
        &self,
        source_volume_id: &str,
        req: NewVolume,
        deadline: Deadline,
    ) -> Result<Volume, CloudError>;

    /// A volume by id.
    async fn get_volume(&self, id: &str, deadline: Deadline) -> Result<Volume, CloudError>;

    /// Volumes with this exact cloud name, in every region.
    async fn volumes_named(
        &self,
        name: &str,
        deadline: Deadline,
    ) -> Result<Vec<Volume>, CloudError>;

    /// Every volume.
    async fn list_volumes(&self, deadline: Deadline) -> Result<Vec<Volume>, CloudError>;

    /// Delete a volume.
    async fn delete_volume(&self, id: &str, deadline: Deadline) -> Result<(), CloudError>;

    /// Replace a volume's tags.
    async fn set_volume_tags(
        &self,
        id: &str,
        tags: Vec<String>,
        deadline: Deadline,
    ) -> Result<Volume, CloudError>;

    /// Start attaching a volume to a droplet.
    async fn attach(
        &self,
        volume: &Volume,
        droplet_id: u64,
        deadline: Deadline,
    ) -> Result<Action, CloudError>;

    /// Start detaching a volume from a droplet.
    async fn detach(
        &self,
        volume: &Volume,
        droplet_id: u64,
        deadline: Deadline,
    ) -> Result<Action, CloudError>;

    /// Start growing a volume.
    async fn resize(
        &self,
        volume: &Volume,
        size_gib: u64,
        deadline: Deadline,
    ) -> Result<Action, CloudError>;

    /// An action on a volume, by id.
    async fn get_action(
        &self,
        volume_id: &str,
        action_id: u64,
        deadline: Deadline,
    ) -> Result<Action, CloudError>;

    /// A volume's actions.
    async fn volume_actions(
        &self,
        volume_id: &str,
        deadline: Deadline,
    ) -> Result<Vec<Action>, CloudError>;

    /// A droplet by id.
    async fn get_droplet(&self, id: u64, deadline: Deadline) -> Result<Droplet, CloudError>;

    /// Snapshot a volume.
    async fn create_snapshot(
        &self,
        volume_id: &str,
        name: &str,
        tags: Vec<String>,
        deadline: Deadline,
    ) -> Result<Snapshot, CloudError>;

    /// A snapshot by id.
    async fn get_snapshot(&self, id: &str, deadline: Deadline) -> Result<Snapshot, CloudError>;

    /// Every volume snapshot, or those of one volume.
    async fn list_snapshots(
        &self,
        volume_id: Option<&str>,
        deadline: Deadline,
    ) -> Result<Vec<Snapshot>, CloudError>;

    /// Delete a snapshot.
    async fn delete_snapshot(&self, id: &str, deadline: Deadline) -> Result<(), CloudError>;

    /// How [`wait::wait_for_action`] polls this backend's actions, and what it has
    /// learned of their durations.
    fn waits(&self) -> &wait::Waits;

    /// What is known of a volume without asking the cloud: its id, name and region
    /// (which never change) from an earlier answer. Its other fields may be stale; None
    /// when the backend keeps no such record.
    fn known_volume(&self, _id: &str) -> Option<Volume> {
        None
    }
}

/// The backend `--cloud` chose, and for the in-process one the fake-cloud handle.
pub struct OpenedCloud {
    /// The cloud, as the controller uses it.
    pub api: Arc<dyn CloudApi>,
    /// The in-process fake cloud, for `--cloud memory`.
    #[cfg(feature = "fake-cloud")]
    pub in_process: Option<memory::InProcess>,
}

/// Open the backend chosen by `--cloud`.
pub fn open(config: &Config, node_id: Option<&str>) -> anyhow::Result<OpenedCloud> {
    let chosen = config.poll_policy.map(|mode| match mode {
        PollMode::Learned => PollPolicy::Learned,
        PollMode::EverySecond => PollPolicy::EVERY_SECOND,
        PollMode::Backoff => PollPolicy::SHORT_START_BACKOFF,
    });
    let opened = match config.cloud {
        #[cfg(feature = "fake-cloud")]
        CloudKind::Memory => {
            let in_process = memory::InProcess::open(config, node_id)?;
            OpenedCloud {
                api: Arc::new(memory::MemoryCloud::new(in_process.cloud.clone())),
                in_process: Some(in_process),
            }
        }
        #[cfg(not(feature = "fake-cloud"))]
        CloudKind::Memory => {
            let _ = node_id;
            anyhow::bail!(crate::config::MEMORY_CLOUD_NEEDS_FEATURE)
        }
        CloudKind::Http => OpenedCloud {
            api: Arc::new(http::HttpCloud::from_config(config)?),
            #[cfg(feature = "fake-cloud")]
            in_process: None,
        },
    };
    if let Some(policy) = chosen {
        opened.api.waits().set_policy(policy);
    }
    Ok(opened)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn api_errors_are_classified_by_status_and_documented_message() {
        let c = CloudError::from_api;
        assert!(matches!(
            c(422, "Droplet already has a pending event"),
            CloudError::PendingEvent { .. }
        ));
        assert!(matches!(
            c(422, "This volume is already attached"),
            CloudError::AlreadyAttached { .. }
        ));
        assert!(matches!(
            c(422, "Attachment not found"),
            CloudError::AttachmentNotFound { .. }
        ));
        assert!(matches!(
            c(
                422,
                "cannot attach more volumes to the Droplet: the limit is 7"
            ),
            CloudError::DropletLimit { .. }
        ));
        assert!(matches!(
            c(409, "attached volume cannot be deleted"),
            CloudError::VolumeInUse { .. }
        ));
        assert!(matches!(
            c(409, "a volume with the name \"x\" already exists in nyc3"),
            CloudError::NameInUse { .. }
        ));
        assert!(matches!(
            c(403, "capacity limit exceeded: 10 of 10 GiB in use"),
            CloudError::QuotaExceeded { .. }
        ));
        assert!(matches!(
            c(401, "Unable to authenticate you."),
            CloudError::Unauthorized { .. }
        ));
        assert!(matches!(c(404, "nope"), CloudError::NotFound { .. }));
        assert!(matches!(
            c(503, "down"),
            CloudError::Api { status: 503, .. }
        ));
    }
}
