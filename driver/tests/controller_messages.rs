//! The exact code and message of every Controller error a CO can reach over gRPC, on both
//! cloud backends. Messages are part of the driver's behaviour (operators read them, and
//! COs log them), so a refactoring of how errors become statuses must leave each one
//! byte-for-byte as it is; this file pins them.

mod common;

use std::time::Duration;

use common::*;
use csi_proto::v1::volume_capability::access_mode::Mode;
use csi_proto::v1::volume_capability::{AccessMode, AccessType, MountVolume};
use csi_proto::v1::*;
use tonic::{Code, Status};

both_backends!(
    create_volume_messages,
    volume_rpc_messages,
    publish_messages,
    snapshot_messages,
    listing_messages,
    busy_and_slow_messages,
);

/// Collects every call whose answer differs from its pin, so one run shows them all.
#[derive(Default)]
struct Pins {
    mismatches: Vec<String>,
}

impl Pins {
    /// `result` must be an error with exactly `code` and `message`.
    fn check<T: std::fmt::Debug>(
        &mut self,
        label: &str,
        result: Result<T, Status>,
        code: Code,
        message: &str,
    ) {
        match result {
            Ok(value) => self.mismatches.push(format!(
                "{label}: expected {code:?} {message:?}, got OK {value:?}"
            )),
            Err(status) if status.code() == code && status.message() == message => {}
            Err(status) => self.mismatches.push(format!(
                "{label}: expected {code:?} {message:?}\n{label}: got      {:?} {:?}",
                status.code(),
                status.message()
            )),
        }
    }

    fn assert_all_held(self) {
        assert!(
            self.mismatches.is_empty(),
            "{} messages changed:\n{}",
            self.mismatches.len(),
            self.mismatches.join("\n")
        );
    }
}

fn long(n: usize) -> String {
    "x".repeat(n)
}

fn mount_fs(fs_type: &str) -> VolumeCapability {
    VolumeCapability {
        access_mode: Some(AccessMode {
            mode: Mode::SingleNodeWriter as i32,
        }),
        access_type: Some(AccessType::Mount(MountVolume {
            fs_type: fs_type.to_string(),
            ..Default::default()
        })),
    }
}

fn range(required_bytes: i64, limit_bytes: i64) -> Option<CapacityRange> {
    Some(CapacityRange {
        required_bytes,
        limit_bytes,
    })
}

fn requirement(requisite: Vec<Topology>) -> Option<TopologyRequirement> {
    Some(TopologyRequirement {
        requisite,
        preferred: vec![],
    })
}

fn snapshot_source(id: &str) -> Option<VolumeContentSource> {
    Some(VolumeContentSource {
        r#type: Some(volume_content_source::Type::Snapshot(
            volume_content_source::SnapshotSource {
                snapshot_id: id.to_string(),
            },
        )),
    })
}

fn volume_source(id: &str) -> Option<VolumeContentSource> {
    Some(VolumeContentSource {
        r#type: Some(volume_content_source::Type::Volume(
            volume_content_source::VolumeSource {
                volume_id: id.to_string(),
            },
        )),
    })
}

/// A map over the 4 KiB limit: 4097 bytes of keys and values.
fn oversized_map() -> std::collections::HashMap<String, String> {
    map(&[("k", &long(4096))])
}

async fn snapshot_of(env: &TestEnv, name: &str, volume_id: &str) -> Snapshot {
    env.controller()
        .create_snapshot(CreateSnapshotRequest {
            name: name.to_string(),
            source_volume_id: volume_id.to_string(),
            ..Default::default()
        })
        .await
        .unwrap_or_else(|e| panic!("CreateSnapshot {name}: {e:?}"))
        .into_inner()
        .snapshot
        .expect("snapshot")
}

async fn create_volume_messages(backend: Backend) {
    let env = TestEnv::start(backend).await;
    let mut c = env.controller();
    let mut pins = Pins::default();
    let base = || create_request("pinned", GIB);

    let mut req = base();
    req.name = String::new();
    pins.check(
        "no name",
        c.create_volume(req).await,
        Code::InvalidArgument,
        "name is required",
    );
    let mut req = base();
    req.name = long(129);
    pins.check(
        "long name",
        c.create_volume(req).await,
        Code::InvalidArgument,
        "name is 129 bytes; at most 128 are allowed",
    );
    let mut req = base();
    req.volume_capabilities.clear();
    pins.check(
        "no capabilities",
        c.create_volume(req).await,
        Code::InvalidArgument,
        "volume_capabilities is required",
    );
    let mut req = base();
    req.volume_capabilities[0].access_mode = None;
    pins.check(
        "no access mode",
        c.create_volume(req).await,
        Code::InvalidArgument,
        "volume_capabilities[0]: access_mode is required",
    );
    let mut req = base();
    req.volume_capabilities = vec![mount_cap(), capability(Mode::MultiNodeMultiWriter, true)];
    pins.check(
        "multi-node mode",
        c.create_volume(req).await,
        Code::InvalidArgument,
        "volume_capabilities[1]: access mode MULTI_NODE_MULTI_WRITER is not supported: a block \
         storage volume attaches to one droplet at a time",
    );
    let mut req = base();
    req.volume_capabilities[0].access_mode = Some(AccessMode { mode: 99 });
    pins.check(
        "unknown mode",
        c.create_volume(req).await,
        Code::InvalidArgument,
        "volume_capabilities[0]: access mode 99 is not a known mode",
    );
    let mut req = base();
    req.volume_capabilities[0].access_type = None;
    pins.check(
        "no access type",
        c.create_volume(req).await,
        Code::InvalidArgument,
        "volume_capabilities[0]: access_type is required: block or mount",
    );
    let mut req = base();
    req.volume_capabilities = vec![mount_fs("btrfs")];
    pins.check(
        "unsupported fs",
        c.create_volume(req).await,
        Code::InvalidArgument,
        "volume_capabilities[0]: fs_type \"btrfs\" is not supported; use one of ext4, xfs",
    );
    let mut req = base();
    req.parameters = oversized_map();
    pins.check(
        "oversized parameters",
        c.create_volume(req).await,
        Code::InvalidArgument,
        "parameters is 4097 bytes; at most 4096 are allowed",
    );
    let mut req = base();
    req.mutable_parameters = oversized_map();
    pins.check(
        "oversized mutable parameters",
        c.create_volume(req).await,
        Code::InvalidArgument,
        "mutable_parameters is 4097 bytes; at most 4096 are allowed",
    );
    let mut req = base();
    req.parameters = map(&[("iops", "3000")]);
    pins.check(
        "unknown parameter",
        c.create_volume(req).await,
        Code::InvalidArgument,
        "parameters: unknown key \"iops\"; accepted keys are csi.storage.k8s.io/fstype, \
         csi.storage.k8s.io/*, region and tags",
    );
    let mut req = base();
    req.parameters = map(&[("csi.storage.k8s.io/fstype", "ntfs")]);
    pins.check(
        "unsupported fstype parameter",
        c.create_volume(req).await,
        Code::InvalidArgument,
        "parameters: csi.storage.k8s.io/fstype \"ntfs\" is not supported; use one of ext4, xfs",
    );
    let mut req = base();
    req.parameters = map(&[("region", "NYC 3")]);
    pins.check(
        "bad region parameter",
        c.create_volume(req).await,
        Code::InvalidArgument,
        "parameters: region \"NYC 3\" is not a region slug (e.g. nyc3)",
    );
    let mut req = base();
    req.parameters = map(&[("tags", "ok,bad tag")]);
    pins.check(
        "bad tag",
        c.create_volume(req).await,
        Code::InvalidArgument,
        "parameters: tag \"bad tag\" is invalid; tags hold letters, digits, ':', '-' and '_', \
         at most 255 characters",
    );
    let mut req = base();
    req.mutable_parameters = map(&[("iops", "3000")]);
    pins.check(
        "unknown mutable parameter",
        c.create_volume(req).await,
        Code::InvalidArgument,
        "mutable_parameters: unknown key \"iops\"; accepted keys are tags (the only parameter \
         this driver can change on a volume)",
    );
    let mut req = base();
    req.capacity_range = range(-1, 0);
    pins.check(
        "negative range",
        c.create_volume(req).await,
        Code::InvalidArgument,
        "capacity_range: required_bytes and limit_bytes must not be negative",
    );
    let mut req = base();
    req.capacity_range = range(2 * GIB, GIB);
    pins.check(
        "required over limit",
        c.create_volume(req).await,
        Code::OutOfRange,
        "capacity_range: required_bytes 2147483648 bytes (2.00 GiB) exceeds limit_bytes \
         1073741824 bytes (1.00 GiB)",
    );
    let mut req = base();
    req.capacity_range = range(0, GIB / 2);
    pins.check(
        "limit under the smallest",
        c.create_volume(req).await,
        Code::OutOfRange,
        "capacity_range: limit_bytes 536870912 bytes (0.50 GiB) is below the smallest volume, \
         1 GiB",
    );
    let mut req = base();
    req.capacity_range = range(16385 * GIB, 0);
    pins.check(
        "over the largest",
        c.create_volume(req).await,
        Code::OutOfRange,
        "capacity_range: required_bytes 17593259786240 bytes (16385.00 GiB) exceeds the largest \
         volume, 16384 GiB",
    );
    let mut req = base();
    req.capacity_range = range(GIB + 1, GIB + 100);
    pins.check(
        "no whole GiB fits",
        c.create_volume(req).await,
        Code::OutOfRange,
        "capacity_range: volumes come in whole GiB, and none lies between 1073741825 bytes \
         (1.00 GiB) and 1073741924 bytes (1.00 GiB)",
    );
    let mut req = base();
    req.volume_content_source = snapshot_source("");
    pins.check(
        "empty snapshot source",
        c.create_volume(req).await,
        Code::InvalidArgument,
        "volume_content_source.snapshot.snapshot_id is required",
    );
    let mut req = base();
    req.volume_content_source = volume_source("");
    pins.check(
        "empty volume source",
        c.create_volume(req).await,
        Code::InvalidArgument,
        "volume_content_source.volume.volume_id is required",
    );
    let mut req = base();
    req.volume_content_source = snapshot_source("no-such-snapshot");
    pins.check(
        "missing snapshot source",
        c.create_volume(req).await,
        Code::NotFound,
        "source snapshot \"no-such-snapshot\" not found",
    );
    let mut req = base();
    req.volume_content_source = volume_source("no-such-volume");
    pins.check(
        "missing volume source",
        c.create_volume(req).await,
        Code::NotFound,
        "source volume \"no-such-volume\" not found",
    );

    // Topology and placement.
    let foreign = Topology {
        segments: map(&[("zone", "a")]),
    };
    let mut req = base();
    req.accessibility_requirements = requirement(vec![foreign]);
    pins.check(
        "foreign topology",
        c.create_volume(req).await,
        Code::ResourceExhausted,
        "no requisite topology term can be met: this driver's only topology key is \"region\"",
    );
    let mut req = base();
    req.accessibility_requirements = requirement(vec![topology("zzz9")]);
    pins.check(
        "unavailable requisite",
        c.create_volume(req).await,
        Code::ResourceExhausted,
        "the requested topology can't be met: none of its regions is available; available \
         regions: nyc3, sfo3, ams3",
    );
    let mut req = base();
    req.parameters = map(&[("region", "zzz9")]);
    pins.check(
        "unavailable region parameter",
        c.create_volume(req).await,
        Code::ResourceExhausted,
        "region zzz9 is not available; available regions: nyc3, sfo3, ams3",
    );
    let mut req = base();
    req.parameters = map(&[("region", "sfo3")]);
    req.accessibility_requirements = requirement(vec![topology("nyc3")]);
    pins.check(
        "region parameter outside requisite",
        c.create_volume(req).await,
        Code::ResourceExhausted,
        "the volume must be in region sfo3, which the requisite topology does not allow",
    );

    // A volume that exists under the name, but differs.
    let existing = env.create("pinned").await;
    let mut req = base();
    req.capacity_range = range(3 * GIB, 0);
    pins.check(
        "same name, other size",
        c.create_volume(req).await,
        Code::AlreadyExists,
        &format!(
            "volume \"pinned\" already exists as {existing} with 1 GiB, outside the requested \
             capacity_range"
        ),
    );
    let mut req = base();
    req.volume_content_source = volume_source(&existing);
    pins.check(
        "same name, other source",
        c.create_volume(req).await,
        Code::AlreadyExists,
        &format!(
            "volume \"pinned\" already exists as {existing} with no source as its source, not \
             volume {existing}"
        ),
    );
    let mut req = base();
    req.parameters = map(&[("region", "sfo3")]);
    pins.check(
        "same name, other region",
        c.create_volume(req).await,
        Code::AlreadyExists,
        &format!(
            "volume \"pinned\" already exists as {existing} with region nyc3, outside the \
             requested topology"
        ),
    );

    // Restoring from a source.
    let big = env
        .create_volume(create_request("big-source", 3 * GIB))
        .await;
    let mut req = create_request("from-big", GIB);
    req.capacity_range = range(GIB, 2 * GIB);
    req.volume_content_source = volume_source(&big.volume_id);
    pins.check(
        "source larger than the limit",
        c.create_volume(req).await,
        Code::OutOfRange,
        &format!(
            "volume {} holds 3 GiB, more than capacity_range.limit_bytes 2147483648 bytes \
             (2.00 GiB)",
            big.volume_id
        ),
    );
    let mut req = create_request("from-big-elsewhere", GIB);
    req.parameters = map(&[("region", "sfo3")]);
    req.volume_content_source = volume_source(&big.volume_id);
    pins.check(
        "source in another region",
        c.create_volume(req).await,
        Code::InvalidArgument,
        "parameters: region \"sfo3\" differs from the source's region \"nyc3\"; a volume is \
         made in its source's region",
    );
    pins.assert_all_held();
}

async fn volume_rpc_messages(backend: Backend) {
    let env = TestEnv::start(backend).await;
    let mut c = env.controller();
    let mut pins = Pins::default();
    let id = env.create("pinned-volume").await;

    pins.check(
        "delete without id",
        c.delete_volume(DeleteVolumeRequest::default()).await,
        Code::InvalidArgument,
        "volume_id is required",
    );
    pins.check(
        "delete long id",
        c.delete_volume(DeleteVolumeRequest {
            volume_id: long(200),
            ..Default::default()
        })
        .await,
        Code::InvalidArgument,
        "volume_id is 200 bytes; at most 128 are allowed",
    );

    // ValidateVolumeCapabilities.
    let validate = |volume_id: &str| ValidateVolumeCapabilitiesRequest {
        volume_id: volume_id.to_string(),
        volume_capabilities: vec![mount_cap()],
        ..Default::default()
    };
    pins.check(
        "validate without id",
        c.validate_volume_capabilities(validate("")).await,
        Code::InvalidArgument,
        "volume_id is required",
    );
    let mut req = validate(&id);
    req.volume_capabilities.clear();
    pins.check(
        "validate without capabilities",
        c.validate_volume_capabilities(req).await,
        Code::InvalidArgument,
        "volume_capabilities is required",
    );
    let mut req = validate(&id);
    req.volume_context = oversized_map();
    pins.check(
        "validate oversized context",
        c.validate_volume_capabilities(req).await,
        Code::InvalidArgument,
        "volume_context is 4097 bytes; at most 4096 are allowed",
    );
    pins.check(
        "validate unknown volume",
        c.validate_volume_capabilities(validate("no-such-volume"))
            .await,
        Code::NotFound,
        "volume \"no-such-volume\" not found",
    );

    // ControllerGetVolume.
    pins.check(
        "get without id",
        c.controller_get_volume(ControllerGetVolumeRequest::default())
            .await,
        Code::InvalidArgument,
        "volume_id is required",
    );
    pins.check(
        "get unknown volume",
        c.controller_get_volume(ControllerGetVolumeRequest {
            volume_id: "no-such-volume".into(),
        })
        .await,
        Code::NotFound,
        "volume \"no-such-volume\" not found",
    );

    // ControllerModifyVolume.
    let modify = |volume_id: &str, params: &[(&str, &str)]| ControllerModifyVolumeRequest {
        volume_id: volume_id.to_string(),
        mutable_parameters: map(params),
        ..Default::default()
    };
    pins.check(
        "modify without id",
        c.controller_modify_volume(modify("", &[])).await,
        Code::InvalidArgument,
        "volume_id is required",
    );
    pins.check(
        "modify unknown volume",
        c.controller_modify_volume(modify("no-such-volume", &[("iops", "1")]))
            .await,
        Code::NotFound,
        "volume \"no-such-volume\" not found",
    );
    pins.check(
        "modify unknown key",
        c.controller_modify_volume(modify(&id, &[("iops", "1")]))
            .await,
        Code::InvalidArgument,
        "mutable_parameters: unknown key \"iops\"; accepted keys are tags (the only parameter \
         this driver can change on a volume)",
    );
    let mut req = modify(&id, &[]);
    req.mutable_parameters = oversized_map();
    pins.check(
        "modify oversized",
        c.controller_modify_volume(req).await,
        Code::InvalidArgument,
        "mutable_parameters is 4097 bytes; at most 4096 are allowed",
    );

    // ControllerExpandVolume.
    let expand = |volume_id: &str, range: Option<CapacityRange>| ControllerExpandVolumeRequest {
        volume_id: volume_id.to_string(),
        capacity_range: range,
        ..Default::default()
    };
    pins.check(
        "expand without id",
        c.controller_expand_volume(expand("", range(2 * GIB, 0)))
            .await,
        Code::InvalidArgument,
        "volume_id is required",
    );
    pins.check(
        "expand without range",
        c.controller_expand_volume(expand(&id, None)).await,
        Code::InvalidArgument,
        "capacity_range is required",
    );
    let mut req = expand(&id, range(2 * GIB, 0));
    req.volume_capability = Some(capability(Mode::MultiNodeReaderOnly, false));
    pins.check(
        "expand unsupported capability",
        c.controller_expand_volume(req).await,
        Code::InvalidArgument,
        "volume_capability: access mode MULTI_NODE_READER_ONLY is not supported: a block storage \
         volume attaches to one droplet at a time",
    );
    pins.check(
        "expand beyond the largest",
        c.controller_expand_volume(expand(&id, range(16385 * GIB, 0)))
            .await,
        Code::OutOfRange,
        "capacity_range: required_bytes 17593259786240 bytes (16385.00 GiB) exceeds the largest \
         volume, 16384 GiB",
    );
    pins.check(
        "expand unknown volume",
        c.controller_expand_volume(expand("no-such-volume", range(2 * GIB, 0)))
            .await,
        Code::NotFound,
        "volume \"no-such-volume\" not found",
    );

    // GetCapacity.
    pins.check(
        "capacity unknown parameter",
        c.get_capacity(GetCapacityRequest {
            parameters: map(&[("iops", "1")]),
            ..Default::default()
        })
        .await,
        Code::InvalidArgument,
        "parameters: unknown key \"iops\"; accepted keys are csi.storage.k8s.io/fstype, \
         csi.storage.k8s.io/*, region and tags",
    );
    pins.check(
        "capacity oversized parameters",
        c.get_capacity(GetCapacityRequest {
            parameters: oversized_map(),
            ..Default::default()
        })
        .await,
        Code::InvalidArgument,
        "parameters is 4097 bytes; at most 4096 are allowed",
    );

    // Delete of a published volume names the node.
    env.publish(&id, NODE).await;
    pins.check(
        "delete published",
        c.delete_volume(DeleteVolumeRequest {
            volume_id: id.clone(),
            ..Default::default()
        })
        .await,
        Code::FailedPrecondition,
        &format!("volume {id} is published to node 1; unpublish it before deleting"),
    );
    pins.assert_all_held();
}

async fn publish_messages(backend: Backend) {
    let env = TestEnv::start_with(
        backend,
        Options {
            volume_limit: 1,
            ..Options::default()
        },
    )
    .await;
    let mut c = env.controller();
    let mut pins = Pins::default();
    let id = env.create("pinned-publish").await;

    let mut req = publish_request("", NODE);
    pins.check(
        "publish without volume",
        c.controller_publish_volume(req.clone()).await,
        Code::InvalidArgument,
        "volume_id is required",
    );
    req.volume_id = id.clone();
    req.node_id = String::new();
    pins.check(
        "publish without node",
        c.controller_publish_volume(req.clone()).await,
        Code::InvalidArgument,
        "node_id is required",
    );
    req.node_id = NODE.to_string();
    req.volume_capability = None;
    pins.check(
        "publish without capability",
        c.controller_publish_volume(req.clone()).await,
        Code::InvalidArgument,
        "volume_capability is required",
    );
    req.volume_capability = Some(mount_fs("btrfs"));
    pins.check(
        "publish unsupported fs",
        c.controller_publish_volume(req).await,
        Code::InvalidArgument,
        "volume_capability: fs_type \"btrfs\" is not supported; use one of ext4, xfs",
    );
    pins.check(
        "publish to a non-numeric node",
        c.controller_publish_volume(publish_request(&id, "node-a"))
            .await,
        Code::NotFound,
        "node \"node-a\" not found: node ids are droplet ids, and no such droplet exists",
    );
    pins.check(
        "publish to an unknown droplet",
        c.controller_publish_volume(publish_request(&id, "99"))
            .await,
        Code::NotFound,
        "node \"99\" not found: node ids are droplet ids, and no such droplet exists",
    );
    pins.check(
        "publish unknown volume",
        c.controller_publish_volume(publish_request("no-such-volume", NODE))
            .await,
        Code::NotFound,
        "volume \"no-such-volume\" not found",
    );
    let mut readonly = publish_request(&id, NODE);
    readonly.readonly = true;
    pins.check(
        "read-only publish",
        c.controller_publish_volume(readonly.clone()).await,
        Code::InvalidArgument,
        "readonly: PUBLISH_READONLY is not supported: volumes attach read-write; use a \
         read-only access mode or mount option instead",
    );
    env.publish(&id, NODE).await;
    pins.check(
        "read-only publish of a read-write one",
        c.controller_publish_volume(readonly).await,
        Code::AlreadyExists,
        &format!(
            "volume {id} is already published to node 1 read-write; a read-only publish is \
             incompatible"
        ),
    );
    pins.check(
        "publish to a second node",
        c.controller_publish_volume(publish_request(&id, OTHER_NODE))
            .await,
        Code::FailedPrecondition,
        &format!(
            "volume {id} is published to node 1; a block storage volume attaches to one node at \
             a time, so unpublish it from node 1 first"
        ),
    );
    let second = env.create("pinned-second").await;
    let limit = c
        .controller_publish_volume(publish_request(&second, NODE))
        .await;
    let message = "node 1 has as many volumes as it can hold: cannot attach more volumes to the \
                   Droplet: the limit is 1";
    pins.check(
        "publish beyond the limit",
        limit,
        Code::ResourceExhausted,
        message,
    );

    // ControllerUnpublishVolume.
    pins.check(
        "unpublish without volume",
        c.controller_unpublish_volume(unpublish_request("", NODE))
            .await,
        Code::InvalidArgument,
        "volume_id is required",
    );
    pins.check(
        "unpublish long node",
        c.controller_unpublish_volume(unpublish_request(&id, &long(129)))
            .await,
        Code::InvalidArgument,
        "node_id is 129 bytes; at most 128 are allowed",
    );
    pins.assert_all_held();
}

async fn snapshot_messages(backend: Backend) {
    let env = TestEnv::start(backend).await;
    let mut c = env.controller();
    let mut pins = Pins::default();
    let id = env.create("pinned-snap-source").await;
    let other = env.create("pinned-snap-other").await;
    let snap = snapshot_of(&env, "pinned-snap", &id).await;

    let create = |name: &str, source: &str| CreateSnapshotRequest {
        name: name.to_string(),
        source_volume_id: source.to_string(),
        ..Default::default()
    };
    pins.check(
        "snapshot without name",
        c.create_snapshot(create("", &id)).await,
        Code::InvalidArgument,
        "name is required",
    );
    pins.check(
        "snapshot without source",
        c.create_snapshot(create("s", "")).await,
        Code::InvalidArgument,
        "source_volume_id is required",
    );
    let mut req = create("s", &id);
    req.parameters = map(&[("iops", "1")]);
    pins.check(
        "snapshot unknown parameter",
        c.create_snapshot(req).await,
        Code::InvalidArgument,
        "parameters: unknown key \"iops\"; accepted keys are tags and csi.storage.k8s.io/*",
    );
    let mut req = create("s", &id);
    req.parameters = oversized_map();
    pins.check(
        "snapshot oversized parameters",
        c.create_snapshot(req).await,
        Code::InvalidArgument,
        "parameters is 4097 bytes; at most 4096 are allowed",
    );
    pins.check(
        "snapshot of an unknown volume",
        c.create_snapshot(create("s", "no-such-volume")).await,
        Code::NotFound,
        "source volume \"no-such-volume\" not found",
    );
    pins.check(
        "snapshot name taken by another volume's",
        c.create_snapshot(create("pinned-snap", &other)).await,
        Code::AlreadyExists,
        &format!(
            "snapshot \"pinned-snap\" already exists as {} of volume {id}, not of volume {other}",
            snap.snapshot_id
        ),
    );
    pins.check(
        "delete snapshot without id",
        c.delete_snapshot(DeleteSnapshotRequest::default()).await,
        Code::InvalidArgument,
        "snapshot_id is required",
    );
    pins.check(
        "get snapshot without id",
        c.get_snapshot(GetSnapshotRequest::default()).await,
        Code::InvalidArgument,
        "snapshot_id is required",
    );
    pins.check(
        "get unknown snapshot",
        c.get_snapshot(GetSnapshotRequest {
            snapshot_id: "no-such-snapshot".into(),
            ..Default::default()
        })
        .await,
        Code::NotFound,
        "snapshot \"no-such-snapshot\" not found",
    );
    let mut req = create_request("from-snap", GIB);
    req.capacity_range = range(GIB, GIB);
    req.volume_content_source = snapshot_source(&snap.snapshot_id);
    let restored = c.create_volume(req).await;
    assert!(restored.is_ok(), "restore fits: {restored:?}");
    pins.assert_all_held();
}

async fn listing_messages(backend: Backend) {
    let env = TestEnv::start(backend).await;
    let mut c = env.controller();
    let mut pins = Pins::default();
    pins.check(
        "list volumes foreign token",
        c.list_volumes(ListVolumesRequest {
            starting_token: "invalid-token".into(),
            ..Default::default()
        })
        .await,
        Code::Aborted,
        "starting_token \"invalid-token\" is not a token this driver issued for listing volumes",
    );
    pins.check(
        "list volumes negative max",
        c.list_volumes(ListVolumesRequest {
            max_entries: -1,
            ..Default::default()
        })
        .await,
        Code::InvalidArgument,
        "max_entries must not be negative, got -1",
    );
    pins.check(
        "list snapshots foreign token",
        c.list_snapshots(ListSnapshotsRequest {
            starting_token: long(70),
            ..Default::default()
        })
        .await,
        Code::Aborted,
        "starting_token \"xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx\"… \
         (70 bytes) is not a token this driver issued for listing snapshots",
    );
    pins.check(
        "list snapshots negative max",
        c.list_snapshots(ListSnapshotsRequest {
            max_entries: -5,
            ..Default::default()
        })
        .await,
        Code::InvalidArgument,
        "max_entries must not be negative, got -5",
    );
    pins.check(
        "list snapshots long id",
        c.list_snapshots(ListSnapshotsRequest {
            snapshot_id: long(129),
            ..Default::default()
        })
        .await,
        Code::InvalidArgument,
        "snapshot_id is 129 bytes; at most 128 are allowed",
    );
    pins.check(
        "list snapshots long source",
        c.list_snapshots(ListSnapshotsRequest {
            source_volume_id: long(129),
            ..Default::default()
        })
        .await,
        Code::InvalidArgument,
        "source_volume_id is 129 bytes; at most 128 are allowed",
    );
    pins.assert_all_held();
}

async fn busy_and_slow_messages(backend: Backend) {
    let env = TestEnv::start(backend).await;
    let mut pins = Pins::default();
    let id = env.create("pinned-slow").await;
    env.set_latency(Duration::from_millis(1500), Duration::ZERO, Duration::ZERO);

    // A second operation on a volume with one in flight is ABORTED at once.
    let slow = {
        let mut c = env.controller();
        let req = publish_request(&id, NODE);
        tokio::spawn(async move { c.controller_publish_volume(req).await })
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    pins.check(
        "busy volume",
        env.controller()
            .delete_volume(DeleteVolumeRequest {
                volume_id: id.clone(),
                ..Default::default()
            })
            .await,
        Code::Aborted,
        &format!("an operation on volume/{id} is already in progress; retry later"),
    );
    slow.await.expect("publish task").expect("slow publish");

    // An attach that outlasts the request's deadline continues in the cloud.
    let other = env.create("pinned-slower").await;
    env.set_latency(Duration::from_secs(3), Duration::ZERO, Duration::ZERO);
    let result = env
        .controller()
        .controller_publish_volume(with_timeout(
            publish_request(&other, OTHER_NODE),
            Duration::from_millis(800),
        ))
        .await;
    match &result {
        Err(status) if status.code() == Code::DeadlineExceeded => {
            let message = status.message();
            assert!(
                message.starts_with("deadline exceeded: attach_volume action ")
                    && message.ends_with(&format!(
                        " on volume {other} is still in progress; it continues in the cloud \
                         and a retry resumes it"
                    )),
                "{message}"
            );
        }
        other => panic!("expected DEADLINE_EXCEEDED, got {other:?}"),
    }
    pins.assert_all_held();
}
