//! What can go wrong in a Controller RPC, each variant named for what happened. The
//! message a CO sees is the variant's text; its gRPC code is chosen in
//! [`crate::status`], the one place codes are chosen.

use crate::cloud::{CloudError, GIB, MAX_VOLUME_GIB};
use crate::config::TOPOLOGY_REGION_KEY;
use crate::locks::LockError;
use crate::status::shown;

use super::params::{CapabilityError, ParamError, MAX_MAP_BYTES, MAX_STRING_BYTES};

/// A Controller RPC's failure.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ControllerError {
    // ---- The request itself ----
    /// A required field is empty.
    #[error("{field} is required")]
    Missing { field: &'static str },
    /// A string field is over the spec's size limit.
    #[error("{field} is {len} bytes; at most {} are allowed", MAX_STRING_BYTES)]
    TooLong { field: &'static str, len: usize },
    /// A map field is over the spec's size limit.
    #[error("{field} is {size} bytes; at most {} are allowed", MAX_MAP_BYTES)]
    MapTooLarge { field: &'static str, size: usize },
    /// A volume capability this driver can't serve (`field` names which one).
    #[error("{field}: {why}")]
    UnsupportedCapability { field: String, why: CapabilityError },
    /// A parameter or mutable parameter this driver does not accept.
    #[error(transparent)]
    Parameters(#[from] ParamError),
    /// A negative size in `capacity_range`.
    #[error("capacity_range: required_bytes and limit_bytes must not be negative")]
    NegativeCapacity,
    /// ControllerPublishVolume with `readonly`, which the cloud can't do.
    #[error(
        "readonly: PUBLISH_READONLY is not supported: volumes attach read-write; use a \
         read-only access mode or mount option instead"
    )]
    ReadOnlyUnsupported,
    /// A negative `max_entries`.
    #[error("max_entries must not be negative, got {max_entries}")]
    NegativeMaxEntries { max_entries: i32 },
    /// A `starting_token` this driver did not issue for this listing.
    #[error(
        "starting_token {} is not a token this driver issued for listing {kind}",
        shown(token)
    )]
    ForeignToken { token: String, kind: &'static str },

    // ---- Sizes no volume can meet ----
    /// `required_bytes` over `limit_bytes`.
    #[error(
        "capacity_range: required_bytes {} exceeds limit_bytes {}",
        gib_text(*required),
        gib_text(*limit)
    )]
    RequiredOverLimit { required: i64, limit: i64 },
    /// `limit_bytes` under the smallest volume.
    #[error(
        "capacity_range: limit_bytes {} is below the smallest volume, 1 GiB",
        gib_text(*limit)
    )]
    LimitBelowSmallest { limit: i64 },
    /// `required_bytes` over the largest volume.
    #[error(
        "capacity_range: required_bytes {} exceeds the largest volume, {} GiB",
        gib_text(*required),
        MAX_VOLUME_GIB
    )]
    OverLargest { required: i64 },
    /// No whole number of GiB lies in the range.
    #[error(
        "capacity_range: volumes come in whole GiB, and none lies between {} and {}",
        gib_text(*required),
        gib_text(*limit)
    )]
    NoWholeGib { required: i64, limit: i64 },
    /// The snapshot or volume to copy holds more than the range's limit.
    #[error(
        "{origin} holds {min_gib} GiB, more than capacity_range.limit_bytes {}",
        gib_text(*limit)
    )]
    SourceOverLimit {
        origin: String,
        min_gib: u64,
        limit: i64,
    },

    // ---- Placement ----
    /// No requisite topology term uses only the keys this driver knows.
    #[error(
        "no requisite topology term can be met: this driver's only topology key is {:?}",
        TOPOLOGY_REGION_KEY
    )]
    NoKnownTopology,
    /// The `region` parameter names another region than the source's.
    #[error(
        "parameters: region {parameter:?} differs from the source's region {origin:?}; a \
         volume is made in its source's region"
    )]
    RegionDiffersFromSource { parameter: String, origin: String },
    /// The region the volume must be in is outside the requisite topology.
    #[error("the volume must be in region {region}, which the requisite topology does not allow")]
    RegionOutsideRequisite { region: String },
    /// The region the volume must be in is not offered by the cloud.
    #[error(
        "region {region} is not available; available regions: {}",
        available.join(", ")
    )]
    RegionUnavailable {
        region: String,
        available: Vec<String>,
    },
    /// None of the requested topology's regions is offered by the cloud.
    #[error(
        "the requested topology can't be met: none of its regions is available; available \
         regions: {}",
        available.join(", ")
    )]
    TopologyUnavailable { available: Vec<String> },

    // ---- What the request names does not exist ----
    /// The volume the request names.
    #[error("volume {volume_id:?} not found")]
    VolumeNotFound { volume_id: String },
    /// The snapshot the request names.
    #[error("snapshot {snapshot_id:?} not found")]
    SnapshotNotFound { snapshot_id: String },
    /// The snapshot to restore a new volume from.
    #[error("source snapshot {snapshot_id:?} not found")]
    SourceSnapshotNotFound { snapshot_id: String },
    /// The volume to clone, or to snapshot.
    #[error("source volume {volume_id:?} not found")]
    SourceVolumeNotFound { volume_id: String },
    /// The source vanished between being read and being copied.
    #[error("{origin} not found: {message}")]
    SourceGone { origin: String, message: String },
    /// The node id names no droplet.
    #[error("node {node_id:?} not found: node ids are droplet ids, and no such droplet exists")]
    NodeNotFound { node_id: String },

    // ---- It exists, but not as asked ----
    /// A volume has the requested name but differs from the request.
    #[error("volume {name:?} already exists as {volume_id} with {differs}")]
    VolumeExists {
        name: String,
        volume_id: String,
        differs: VolumeDiffers,
    },
    /// A snapshot has the requested name but is of another volume.
    #[error(
        "snapshot {name:?} already exists as {snapshot_id} of volume {volume_id}, not of \
         volume {wanted_volume_id}"
    )]
    SnapshotExists {
        name: String,
        snapshot_id: String,
        volume_id: String,
        wanted_volume_id: String,
    },
    /// A read-only publish of a volume published read-write to that node.
    #[error(
        "volume {volume_id} is already published to node {node} read-write; a read-only \
         publish is incompatible"
    )]
    PublishedReadWrite { volume_id: String, node: u64 },

    // ---- The state forbids it ----
    /// DeleteVolume of a volume still attached.
    #[error("volume {volume_id} is published to node {node}; unpublish it before deleting")]
    StillPublished { volume_id: String, node: u64 },
    /// DeleteVolume of a volume the cloud says is in use, though attached nowhere.
    #[error("volume {volume_id} is in use: {message}")]
    VolumeInUse { volume_id: String, message: String },
    /// DeleteSnapshot of a snapshot the cloud says is in use.
    #[error("snapshot {snapshot_id} is in use: {message}")]
    SnapshotInUse {
        snapshot_id: String,
        message: String,
    },
    /// Publish to one node of a volume attached to another.
    #[error(
        "volume {volume_id} is published to node {node}; a block storage volume attaches to \
         one node at a time, so unpublish it from node {node} first"
    )]
    AttachedElsewhere { volume_id: String, node: u64 },
    /// Publish to one node of a volume being attached to another.
    #[error(
        "volume {volume_id} is being attached to node {node}; unpublish it from node {node} \
         first"
    )]
    AttachingElsewhere { volume_id: String, node: u64 },
    /// The process runs no cloud backend (a node-only process).
    #[error("this process has no cloud backend")]
    NoCloud,

    // ---- Try again later ----
    /// The droplet runs another volume's attach or detach.
    #[error("node {node} has another attach or detach in progress; retry later ({pending})")]
    DropletBusy { node: u64, pending: CloudError },
    /// The volume changed under every re-read.
    #[error("volume {volume_id} kept changing while being {while_being}; retry")]
    KeptChanging {
        volume_id: String,
        while_being: String,
    },
    /// Another operation holds the volume, or the droplet's turn came too late.
    #[error(transparent)]
    Lock(#[from] LockError),

    // ---- Out of room ----
    /// The droplet holds as many volumes as it may.
    #[error("node {node} has as many volumes as it can hold: {message}")]
    NodeFull { node: u64, message: String },
    /// The account's quota leaves no room for the growth.
    #[error("volume {volume_id} can't grow to {target_gib} GiB: {message}")]
    CannotGrow {
        volume_id: String,
        target_gib: u64,
        message: String,
    },

    /// Any other cloud failure, as the cloud layer classified it.
    #[error(transparent)]
    Cloud(#[from] CloudError),
}

/// How a volume with the requested name differs from the request.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum VolumeDiffers {
    #[error("{gib} GiB, outside the requested capacity_range")]
    Size { gib: u64 },
    #[error("{existing} as its source, not {wanted}")]
    Source { existing: String, wanted: String },
    #[error("region {region}, outside the requested topology")]
    Region { region: String },
}

/// A byte count with its GiB, for messages about sizes.
pub(crate) fn gib_text(bytes: i64) -> String {
    format!("{} bytes ({:.2} GiB)", bytes, bytes as f64 / GIB as f64)
}
