//! The Node service: stage, publish, stats and expansion on this node's real devices.
//!
//! **Finding the device.** ControllerPublishVolume hands the node a device link name
//! (`publish_context["device-link"]`, relative to `--device-dir`). With
//! `--device-source digitalocean` NodeStageVolume waits for the hypervisor to create that
//! link, bounded by the request's deadline. With `--device-source loop` (the fake cloud)
//! NodeStageVolume plays the hypervisor first: it attaches the volume's image
//! `<data-dir>/volumes/<id>.img` as a loop device and creates the link; NodeUnstageVolume
//! removes the link and detaches the loop device again.
//!
//! **No state of our own.** Whether a volume is staged or published, where, and how, is
//! read from `/proc/self/mountinfo` every time, never from memory, so every call is
//! idempotent across retries and driver restarts. A second call on a volume while one is
//! in flight gets ABORTED; a call whose client gives up still runs to its end (it runs in
//! its own task), so a retry finds finished work rather than half-done work.
//!
//! **Formatting.** A device is formatted only when `blkid -p` finds no signature at all.
//! A filesystem of another type than requested, a partition table or anything else blkid
//! recognises is left alone and the call fails with FAILED_PRECONDITION.
//!
//! **Expansion.** NodeExpandVolume refreshes the loop device's size (loop mode) and grows
//! a mounted filesystem: xfs online with xfs_growfs; ext4 online with resize2fs, which
//! needs CAP_SYS_RESOURCE: where that fails, the call fails with FAILED_PRECONDITION
//! quoting resize2fs. The honest way for ext4 then is offline: NodeStageVolume checks
//! whether an ext4 filesystem is smaller than its device (the controller grew the volume
//! while it was unstaged) and runs `e2fsck -f -p` and `resize2fs` before mounting it, so
//! unstage → ControllerExpandVolume → stage grows it. (Stage grows a too-small xfs too,
//! online, right after mounting.) Success is reported only once the filesystem's own
//! size covers the device and statvfs shows the growth.
//!
//! **Raw block volumes.** Staging one formats and mounts nothing from the device; it
//! bind-mounts the device node onto `<staging_target_path>/block-device`, a file the node
//! creates (never through a symlink) and removes again on unstage. That bind is the
//! record, in mountinfo like everything else, that the volume is staged there as a raw
//! block device: a filesystem stage at a path holding it, or a raw block stage at a path
//! holding a filesystem, is ALREADY_EXISTS, and publish checks it the way a filesystem
//! publish checks the staging mount. Publishing bind-mounts the device node onto a target
//! file the node creates.
//!
//! **Loop devices** (loop mode) are found by the image's device and inode, or by the
//! kernel's record of its path once the image is deleted, so an unstage after DeleteVolume
//! still detaches them. They are attached with the kernel's autoclear on and held open
//! by the stage until it is done, so a stage that fails, or a driver that dies, before
//! anything holds the device leaves none behind. A filesystem's mount then holds it, and
//! when that mount disappears without NodeUnstageVolume (a test's mount namespace
//! ending), the kernel detaches the device by itself. A raw block device has no such
//! holder (a bind of its node does not open it), and autoclear would detach it under a
//! published target at the first close, whose number another volume could then take; so
//! a block stage turns autoclear off once its record is in place, and only
//! NodeUnstageVolume detaches it. Detaching goes through an open handle of the device,
//! never its name, so it cannot hit another volume's device that took the number over.
//!
//! **Stopping.** When a process that runs its own in-process cloud stops serving Node
//! (the harness's bundled driver at the end of a run), it detaches the loop devices of
//! that cloud's images, deleted or not, that nothing mounts: what a CO that skipped
//! NodeUnstageVolume left. A node-only process never does: the images belong to a cloud
//! elsewhere, and other nodes' mounts are in mount namespaces it cannot see.
//!
//! **Paths.** Request paths are checked by [`crate::mount::paths`]: nothing outside the
//! staging or target path is created, mounted or removed, and a target whose final
//! component is a symlink is refused. The node creates the target path (a directory, or a
//! file for a raw block volume) and removes it on unpublish; the staging path belongs to
//! the CO and is only mounted on and unmounted.

use std::collections::{BTreeSet, HashMap};
use std::future::Future;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use csi_proto::v1::node_server::Node;
use csi_proto::v1::node_service_capability::rpc::Type as RpcType;
use csi_proto::v1::volume_capability::access_mode::Mode;
use csi_proto::v1::volume_capability::AccessType;
use csi_proto::v1::*;
use nix::mount::MsFlags;
use tokio::time::Instant;
use tonic::{Request, Response, Status};

use crate::config::{
    self, DeviceSource, PUBLISH_CONTEXT_DEVICE_LINK, PUBLISH_CONTEXT_VOLUME_NAME,
    TOPOLOGY_REGION_KEY,
};
use crate::locks::OperationGuard;
use crate::mount::device::{self, BlockDevice, LoopHandle};
use crate::mount::fs::{self, FsType, Probe};
use crate::mount::mountinfo::{DeviceId, FileOnFs, MountEntry, MountTable};
use crate::mount::paths::{self, Kind, Pinned};
use crate::mount::vfs::{self, MountOptions};
use crate::mount::MountError;
use crate::Driver;

/// How long NodeStageVolume waits for a device when the request carries no deadline.
pub const DEFAULT_DEADLINE: Duration = Duration::from_secs(60);

/// The file in a staging directory that a raw block staging bind-mounts the device
/// node onto: the record that the volume is staged there as a raw block device.
pub const BLOCK_RECORD: &str = "block-device";

/// Serves Node on this machine.
#[derive(Clone)]
pub struct NodeService {
    driver: Arc<Driver>,
    /// Shared by every clone, so it runs when the last one goes: once the server has
    /// stopped and no node operation is still running.
    _janitor: Arc<LoopJanitor>,
}

/// Detaches, when the Node service goes away, the loop devices of this process's own
/// in-process cloud's images that nothing mounts (see the module docs, "Stopping").
struct LoopJanitor {
    /// `<data-dir>/volumes`, canonical; `None` when this process owns no cloud images.
    volumes: Option<PathBuf>,
    device_dir: PathBuf,
}

impl LoopJanitor {
    fn for_driver(driver: &Driver) -> LoopJanitor {
        let owned = driver.config.device_source == DeviceSource::Loop && driver.serves_node();
        let volumes = driver
            .cloud_data_dir()
            .filter(|_| owned)
            .and_then(|dir| std::fs::canonicalize(dir).ok())
            .map(|dir| dir.join("volumes"));
        LoopJanitor {
            volumes,
            device_dir: driver.config.device_dir.clone(),
        }
    }
}

impl Drop for LoopJanitor {
    fn drop(&mut self) {
        if let Some(volumes) = &self.volumes {
            release_idle_loops(volumes, &self.device_dir);
        }
    }
}

/// Detach the loop devices backed by images under `volumes` that no mount uses.
fn release_idle_loops(volumes: &Path, device_dir: &Path) {
    let found = match device::loops_backed_under(volumes) {
        Ok(found) if found.is_empty() => return,
        Ok(found) => found,
        Err(e) => {
            tracing::warn!(error = %e, "not releasing loop devices: cannot list them");
            return;
        }
    };
    let table = match MountTable::read() {
        Ok(table) => table,
        Err(e) => {
            tracing::warn!(error = %e, "not releasing loop devices: cannot read the mount table");
            return;
        }
    };
    for (handle, backing) in found {
        let device = handle.device().clone();
        let users = mounts_using(&table, &device);
        if !users.is_empty() {
            tracing::info!(device = %device.path.display(), backing, ?users, "loop device still in use; left attached");
            continue;
        }
        if let Err(e) =
            device::remove_links_to(device_dir, &config::device_link_name(""), device.id)
        {
            tracing::warn!(device = %device.path.display(), error = %e, "could not remove device links");
        }
        match handle.detach() {
            Ok(()) => {
                tracing::info!(device = %device.path.display(), backing, "detached an unused loop device as the node service stopped")
            }
            Err(e) => {
                tracing::warn!(device = %device.path.display(), backing, error = %e, "could not detach an unused loop device")
            }
        }
    }
}

/// What a volume capability asks of the node.
#[derive(Debug, Clone)]
struct Capability {
    access: Access,
    mode: Mode,
}

#[derive(Debug, Clone)]
enum Access {
    /// A raw block device at the target.
    Block,
    /// A filesystem, mounted with these options.
    Mount { fs: FsType, options: MountOptions },
}

impl Capability {
    /// Parse and check a request's capability.
    fn parse(capability: Option<&VolumeCapability>) -> Result<Capability, MountError> {
        let capability = capability.ok_or(MountError::MissingField {
            field: "volume_capability",
        })?;
        let access_mode = capability.access_mode.ok_or(MountError::MissingField {
            field: "volume_capability.access_mode",
        })?;
        let mode = match Mode::try_from(access_mode.mode) {
            Ok(Mode::Unknown) | Err(_) => {
                return Err(MountError::InvalidField {
                    field: "volume_capability.access_mode.mode",
                    value: access_mode.mode.to_string(),
                    reason: "unknown access mode".into(),
                })
            }
            Ok(mode) => mode,
        };
        let access = match &capability.access_type {
            None => {
                return Err(MountError::MissingField {
                    field: "volume_capability.access_type",
                })
            }
            Some(AccessType::Block(_)) => Access::Block,
            Some(AccessType::Mount(mount)) => Access::Mount {
                fs: FsType::parse("volume_capability.mount.fs_type", &mount.fs_type)?,
                options: MountOptions::parse(
                    "volume_capability.mount.mount_flags",
                    &mount.mount_flags,
                )?,
            },
        };
        Ok(Capability { access, mode })
    }

    /// Reader-only modes are mounted read-only whatever `readonly` says.
    fn reader_only(&self) -> bool {
        matches!(
            self.mode,
            Mode::SingleNodeReaderOnly | Mode::MultiNodeReaderOnly
        )
    }

    /// Modes that allow one publish target on this node only.
    fn single_target(&self) -> bool {
        matches!(
            self.mode,
            Mode::SingleNodeWriter | Mode::SingleNodeSingleWriter | Mode::SingleNodeReaderOnly
        )
    }
}

/// Parse a `grpc-timeout` header value: up to 8 digits and a unit (H, M, S, m, u, n).
pub fn parse_grpc_timeout(value: &str) -> Option<Duration> {
    let unit = value.chars().last()?;
    let digits = &value[..value.len() - unit.len_utf8()];
    if digits.is_empty() || digits.len() > 8 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let n: u64 = digits.parse().ok()?;
    Some(match unit {
        'H' => Duration::from_secs(n.checked_mul(3600)?),
        'M' => Duration::from_secs(n.checked_mul(60)?),
        'S' => Duration::from_secs(n),
        'm' => Duration::from_millis(n),
        'u' => Duration::from_micros(n),
        'n' => Duration::from_nanos(n),
        _ => return None,
    })
}

/// When to stop waiting for this request: its gRPC deadline (or [`DEFAULT_DEADLINE`]),
/// less a small margin so the caller still hears why.
fn deadline_of<T>(request: &Request<T>) -> Instant {
    let timeout = request
        .metadata()
        .get("grpc-timeout")
        .and_then(|v| v.to_str().ok())
        .and_then(parse_grpc_timeout)
        .unwrap_or(DEFAULT_DEADLINE);
    let margin = (timeout / 10).min(Duration::from_secs(1));
    Instant::now() + (timeout - margin)
}

/// A required string field.
fn require(field: &'static str, value: &str) -> Result<(), MountError> {
    if value.is_empty() {
        Err(MountError::MissingField { field })
    } else {
        Ok(())
    }
}

/// An optional path field: validated when present.
fn optional_path(field: &'static str, value: &str) -> Result<Option<PathBuf>, MountError> {
    if value.is_empty() {
        Ok(None)
    } else {
        paths::validate(field, value).map(Some)
    }
}

/// Run an operation in its own task, holding the volume's lock until it ends: a client
/// that gives up does not cut the operation short halfway.
async fn detached<T, F>(guard: OperationGuard, work: F) -> Result<T, Status>
where
    T: Send + 'static,
    F: Future<Output = Result<T, MountError>> + Send + 'static,
{
    let task = tokio::spawn(async move {
        let _guard = guard;
        work.await
    });
    match task.await {
        Ok(result) => result.map_err(Status::from),
        Err(e) => Err(Status::internal(format!("node operation failed: {e}"))),
    }
}

/// Whether `target` already holds the publish asked for: a bind of `root` on `device` with
/// `options`' per-mount flags, left by an earlier call (a retry is OK). Anything else there
/// is a conflict; `source` names what was asked for in its message.
fn already_bound(
    table: &MountTable,
    target: &Path,
    device: DeviceId,
    root: &Path,
    options: &MountOptions,
    source: &str,
) -> Result<bool, MountError> {
    let Some(existing) = table.at(target) else {
        return Ok(false);
    };
    let expected = options.expected_per_mount();
    if existing.device == device
        && existing.root == root
        && vfs::observed_per_mount(existing) == expected
    {
        return Ok(true);
    }
    Err(MountError::Conflict {
        path: target.to_path_buf(),
        existing: describe(existing),
        requested: format!("a bind of {source} mounted {}", options_text(&expected)),
    })
}

/// Bind `source` onto the publish target (a directory for a filesystem, a file for a raw
/// block device), creating the target if needed, and removing it again if the bind fails.
fn bind_target(
    source: &Path,
    target: &Path,
    kind: &Kind,
    options: &MountOptions,
) -> Result<(), MountError> {
    let created = prepare_path("target_path", target, kind)?;
    let result = Pinned::open("target_path", target, kind)
        .and_then(|pinned| vfs::bind(source, &pinned, target, options.per_mount_flags()));
    if result.is_err() && created {
        let _ = paths::remove_target("target_path", target);
    }
    result
}

/// IN_USE when the device's filesystem is mounted anywhere: handing out the raw device
/// would let writes to it corrupt that filesystem.
fn refuse_if_mounted(table: &MountTable, device: &BlockDevice) -> Result<(), MountError> {
    let mounted: Vec<PathBuf> = table
        .of_device(device.id)
        .map(|e| e.mount_point.clone())
        .collect();
    if mounted.is_empty() {
        return Ok(());
    }
    Err(MountError::InUse {
        device: device.path.clone(),
        mounts: mounted,
    })
}

/// A mount, described for messages.
fn describe(entry: &MountEntry) -> String {
    format!(
        "{} ({}, {}{}) mounted {}",
        entry.source,
        entry.device,
        entry.fs_type,
        if entry.root == Path::new("/") {
            String::new()
        } else {
            format!(" {}", entry.root.display())
        },
        entry.mount_options.join(",")
    )
}

fn options_text(set: &BTreeSet<String>) -> String {
    set.iter().cloned().collect::<Vec<_>>().join(",")
}

/// A path field that must not be a symlink.
fn refuse_symlink(field: &'static str, path: &Path) -> MountError {
    MountError::InvalidField {
        field,
        value: path.display().to_string(),
        reason: "is a symlink; the node never follows one".into(),
    }
}

/// Every mount that uses `device`: filesystem mounts of it and bind mounts of its node.
fn mounts_using(table: &MountTable, device: &BlockDevice) -> Vec<PathBuf> {
    let mut users: Vec<PathBuf> = table
        .of_device(device.id)
        .map(|e| e.mount_point.clone())
        .collect();
    if let Some(node) = device_node_on_fs(table, device) {
        users.extend(table.binds_of(&node).map(|e| e.mount_point.clone()));
    }
    users
}

/// Where the device node lives, as mountinfo names the source of its bind mounts.
fn device_node_on_fs(table: &MountTable, device: &BlockDevice) -> Option<FileOnFs> {
    let meta = std::fs::metadata(&device.path).ok()?;
    let holder = DeviceId::from_dev_t(std::os::unix::fs::MetadataExt::dev(&meta));
    FileOnFs::locate(table, &device.path, holder)
}

impl NodeService {
    pub fn new(driver: Arc<Driver>) -> Self {
        let janitor = Arc::new(LoopJanitor::for_driver(&driver));
        Self {
            driver,
            _janitor: janitor,
        }
    }

    /// The fake cloud's data directory, where loop mode finds volume images: the
    /// in-process cloud's (which makes a temporary one when --data-dir is unset), else
    /// --data-dir (a node-only process next to a separate fake cloud).
    fn data_dir(&self) -> Option<PathBuf> {
        self.driver
            .cloud_data_dir()
            .map(Path::to_path_buf)
            .or_else(|| self.driver.config.data_dir.clone())
    }

    fn loop_mode(&self) -> bool {
        self.driver.config.device_source == DeviceSource::Loop
    }

    #[allow(clippy::result_large_err)]
    fn lock(&self, volume_id: &str) -> Result<OperationGuard, Status> {
        // Node keys are their own: a controller call on the same volume is not a conflict.
        self.driver.locks.try_lock(&format!("node/{volume_id}"))
    }

    /// Runs `work` on this volume under its lock, detached from the request (see
    /// [`detached`]). `work` gets its own handle on the service and the volume id.
    async fn locked<T, F, Fut>(&self, volume_id: String, work: F) -> Result<T, Status>
    where
        T: Send + 'static,
        F: FnOnce(NodeService, String) -> Fut,
        Fut: Future<Output = Result<T, MountError>> + Send + 'static,
    {
        let guard = self.lock(&volume_id)?;
        detached(guard, work(self.clone(), volume_id)).await
    }

    /// `<data-dir>/volumes/<id>.img`.
    fn image_path(&self, volume_id: &str) -> Result<PathBuf, MountError> {
        let dir = self.data_dir().ok_or_else(|| {
            MountError::NotConfigured(
                "--device-source loop needs --data-dir, where the fake cloud keeps volume images"
                    .into(),
            )
        })?;
        Ok(dir.join("volumes").join(format!("{volume_id}.img")))
    }

    /// In loop mode, the volume exists when its image does. Other device sources cannot
    /// tell from the node, and say yes.
    fn check_volume_exists(&self, volume_id: &str) -> Result<(), MountError> {
        if !self.loop_mode() {
            return Ok(());
        }
        let image = self.image_path(volume_id)?;
        if image.is_file() {
            Ok(())
        } else {
            Err(MountError::VolumeNotFound {
                volume_id: volume_id.to_string(),
                reason: format!("no image at {}", image.display()),
            })
        }
    }

    /// Loop mode: the volume's attached loop device, if any.
    fn attached_loop(&self, volume_id: &str) -> Result<Option<BlockDevice>, MountError> {
        device::find_loop(&self.image_path(volume_id)?)
    }

    /// The device link for a volume, from publish_context.
    fn device_link(
        &self,
        volume_id: &str,
        context: &HashMap<String, String>,
    ) -> Result<PathBuf, MountError> {
        const LINK_FIELD: &str = "publish_context[device-link]";
        let name = match (
            context.get(PUBLISH_CONTEXT_DEVICE_LINK),
            context.get(PUBLISH_CONTEXT_VOLUME_NAME),
        ) {
            (Some(link), _) => link.clone(),
            (None, Some(volume_name)) => config::device_link_name(volume_name),
            // The fake cloud's hot-plug is ours, so the link name is too.
            (None, None) if self.loop_mode() => config::device_link_name(volume_id),
            (None, None) => return Err(MountError::MissingField { field: LINK_FIELD }),
        };
        paths::validate_file_name(LINK_FIELD, &name)?;
        Ok(self.driver.config.device_dir.join(name))
    }

    /// Make the volume's device appear (loop mode: attach and link it) and wait for it.
    /// Returns the device and, when this call attached it, the handle that holds it (see
    /// [`device::attach_loop`]): the caller keeps it until the device has another holder,
    /// or gives it to [`Self::undo_attach`].
    async fn obtain_device(
        &self,
        volume_id: &str,
        context: &HashMap<String, String>,
        deadline: Instant,
    ) -> Result<(BlockDevice, Option<LoopHandle>), MountError> {
        let link = self.device_link(volume_id, context)?;
        let mut attached_here = None;
        if self.loop_mode() {
            self.check_volume_exists(volume_id)?;
            let (loop_device, handle) = device::attach_loop(&self.image_path(volume_id)?)?;
            if handle.is_some() {
                tracing::info!(volume_id, device = %loop_device.path.display(), "attached volume image as a loop device");
                attached_here = handle;
            }
            if let Err(e) = device::link_to(&link, &loop_device) {
                self.undo_attach(attached_here);
                return Err(e);
            }
        }
        match device::wait_for(&link, deadline).await {
            Ok(device) => Ok((device, attached_here)),
            Err(e) => {
                self.undo_attach(attached_here);
                Err(e)
            }
        }
    }

    /// Remove the links to a loop device this call attached, and detach it.
    fn undo_attach(&self, attached: Option<LoopHandle>) {
        let Some(handle) = attached else {
            return;
        };
        let device = handle.device().clone();
        let _ = device::remove_links_to(
            &self.driver.config.device_dir,
            &config::device_link_name(""),
            device.id,
        );
        if let Err(e) = handle.detach() {
            tracing::warn!(device = %device.path.display(), error = %e, "could not detach a loop device after a failed stage");
        }
    }

    // ---- NodeStageVolume ----

    async fn stage(
        &self,
        volume_id: String,
        staging: PathBuf,
        capability: Capability,
        context: HashMap<String, String>,
        deadline: Instant,
    ) -> Result<(), MountError> {
        let (device, attached_here) = self.obtain_device(&volume_id, &context, deadline).await?;
        let result = match &capability.access {
            Access::Block => {
                self.stage_block(&volume_id, &device, &staging, attached_here.as_ref())
            }
            Access::Mount { fs, options } => {
                let options = options.clone().with_read_only(capability.reader_only());
                self.stage_filesystem(&volume_id, &device, &staging, *fs, &options)
                    .await
            }
        };
        match result {
            // The device has its holder now (the filesystem's mount), or, staged as a
            // raw block device, no longer detaches by itself: the handle may go.
            Ok(()) => Ok(()),
            Err(e) => {
                self.undo_attach(attached_here);
                Err(e)
            }
        }
    }

    /// Stage a raw block volume: bind-mount its device node onto the staging record,
    /// `<staging>/block-device` (see the module docs). Nothing is formatted or mounted
    /// from the device itself.
    fn stage_block(
        &self,
        volume_id: &str,
        device: &BlockDevice,
        staging: &Path,
        attached_here: Option<&LoopHandle>,
    ) -> Result<(), MountError> {
        const FIELD: &str = "staging_target_path";
        let staging = staging_directory(staging)?;
        let requested = || {
            format!(
                "{} ({}) staged as a raw block device",
                device.path.display(),
                device.id
            )
        };
        let table = MountTable::read()?;
        if let Some(existing) = table.at(&staging) {
            return Err(MountError::Conflict {
                path: staging,
                existing: describe(existing),
                requested: requested(),
            });
        }
        let record = staging.join(BLOCK_RECORD);
        match block_record_at(&table, &staging)? {
            None => {}
            Some(found) if found.device == Some(device.id) => {
                // Staged already: make sure it stays attached (a retry after a stage that
                // bound the record but died before turning autoclear off).
                return self.keep_attached(device, attached_here);
            }
            Some(found) if self.is_stale(&found) => {
                // Its loop device was detached behind our back: the record names nothing.
                vfs::unmount_all(&found.path)?;
            }
            Some(found) => {
                return Err(MountError::Conflict {
                    path: found.path.clone(),
                    existing: found.describe(),
                    requested: requested(),
                })
            }
        }
        refuse_if_mounted(&table, device)?;
        let created = prepare_path(FIELD, &record, &Kind::File)?;
        let result = Pinned::open(FIELD, &record, &Kind::File)
            .and_then(|pinned| vfs::bind(&device.path, &pinned, &record, MsFlags::empty()))
            .and_then(|()| {
                self.keep_attached(device, attached_here).inspect_err(|_| {
                    let _ = vfs::unmount_all(&record);
                })
            });
        if let Err(e) = result {
            if created {
                let _ = paths::remove_target(FIELD, &record);
            }
            return Err(e);
        }
        tracing::info!(volume_id, device = %device.path.display(), record = %record.display(), "staged as a raw block device");
        Ok(())
    }

    /// Loop mode: a raw block device has no holder, so it must not detach at its next
    /// last close (see the module docs): turn its autoclear off.
    fn keep_attached(
        &self,
        device: &BlockDevice,
        attached_here: Option<&LoopHandle>,
    ) -> Result<(), MountError> {
        if !(self.loop_mode() && device::is_loop(device)) {
            return Ok(());
        }
        match attached_here {
            Some(handle) => handle.set_autoclear(false),
            None => LoopHandle::open(device)?.set_autoclear(false),
        }
    }

    /// Whether a block staging record names a loop device that is no longer attached
    /// (loop mode; elsewhere a record is never taken for stale).
    fn is_stale(&self, record: &BlockRecord) -> bool {
        self.loop_mode()
            && record
                .device
                .is_some_and(|id| id.major == device::LOOP_MAJOR && !device::is_bound_loop(id))
    }

    async fn stage_filesystem(
        &self,
        volume_id: &str,
        device: &BlockDevice,
        staging: &Path,
        fs: FsType,
        options: &MountOptions,
    ) -> Result<(), MountError> {
        const FIELD: &str = "staging_target_path";
        let staging = staging_directory(staging)?;
        let table = MountTable::read()?;
        if let Some(existing) = table.at(&staging) {
            let expected = options.expected_per_mount();
            let same = existing.device == device.id
                && existing.root == Path::new("/")
                && existing.fs_type == fs.name()
                && vfs::observed_per_mount(existing) == expected;
            if same {
                return Ok(());
            }
            return Err(MountError::Conflict {
                path: staging,
                existing: describe(existing),
                requested: format!(
                    "{} ({}, {}) mounted {}",
                    device.path.display(),
                    device.id,
                    fs.name(),
                    options_text(&expected)
                ),
            });
        }

        // Staged here as a raw block device (this volume or another).
        if let Some(found) = block_record_at(&table, &staging)? {
            return Err(MountError::Conflict {
                path: staging,
                existing: format!("a raw block staging: {}", found.describe()),
                requested: format!("a {} filesystem", fs.name()),
            });
        }
        // Staged or published elsewhere as a raw block device: not a filesystem now.
        if let Some(node) = device_node_on_fs(&table, device) {
            if let Some(bind) = table.binds_of(&node).next() {
                return Err(MountError::Conflict {
                    path: staging,
                    existing: format!(
                        "nothing, but the volume is in use as a raw block device at {}",
                        bind.mount_point.display()
                    ),
                    requested: format!("a {} filesystem", fs.name()),
                });
            }
        }

        match fs::probe(&device.path).await? {
            Probe::Blank => {
                fs::format(&device.path, fs).await?;
                tracing::info!(volume_id, device = %device.path.display(), fs = fs.name(), "formatted a blank device");
            }
            Probe::Filesystem(found) if found == fs.name() => {
                // e2fsck and an offline resize only on a filesystem nothing has mounted
                // (a second staging path shares the mounted one as it is).
                if fs == FsType::Ext4 && table.of_device(device.id).next().is_none() {
                    self.grow_ext4_before_mount(volume_id, device).await?;
                }
            }
            Probe::Filesystem(found) => {
                return Err(MountError::FilesystemMismatch {
                    device: device.path.clone(),
                    found,
                    requested: fs.name().to_string(),
                })
            }
            Probe::Other(what) => {
                return Err(MountError::UnrecognisedData {
                    device: device.path.clone(),
                    what,
                })
            }
        }

        let mut options = options.clone();
        if fs == FsType::Xfs && !options.data.iter().any(|d| d == "nouuid") {
            // A volume restored from a snapshot shares its xfs UUID with the source.
            options.data.push("nouuid".into());
        }
        let pinned = Pinned::open(FIELD, &staging, &Kind::Directory)?;
        vfs::mount_filesystem(&device.path, &pinned, &staging, fs.name(), &options)?;
        tracing::info!(volume_id, device = %device.path.display(), staging = %staging.display(), "staged");

        if fs == FsType::Xfs {
            if let Err(e) = self.grow_xfs_after_mount(device, &staging).await {
                let _ = vfs::unmount_all_patiently(&staging).await;
                return Err(e);
            }
        }
        if self.loop_mode() && device::is_loop(device) {
            // Attached by this call, it has autoclear already; attached earlier (by an
            // older driver), it gets it now. Only a safety net: NodeUnstageVolume
            // detaches it anyway.
            if let Err(e) = device::set_autoclear(device) {
                tracing::warn!(volume_id, error = %e, "loop device not set to autoclear");
            }
        }
        Ok(())
    }

    /// Offline growth: an ext4 filesystem smaller than its device was grown by the
    /// controller while unstaged; check and resize it before it is mounted.
    async fn grow_ext4_before_mount(
        &self,
        volume_id: &str,
        device: &BlockDevice,
    ) -> Result<(), MountError> {
        let fs_bytes = fs::size_bytes(FsType::Ext4, &device.path).await?;
        let device_bytes = device::size_bytes(&device.path)?;
        if !fs::needs_growth(fs_bytes, device_bytes) {
            return Ok(());
        }
        fs::grow_ext4_offline(&device.path).await?;
        let grown = fs::size_bytes(FsType::Ext4, &device.path).await?;
        if fs::needs_growth(grown, device_bytes) {
            return Err(MountError::CannotGrow {
                path: device.path.clone(),
                fs_type: "ext4".into(),
                reason: format!(
                    "resize2fs left it at {grown} bytes on a {device_bytes}-byte device"
                ),
            });
        }
        tracing::info!(
            volume_id,
            from = fs_bytes,
            to = grown,
            "grew ext4 offline before mounting"
        );
        Ok(())
    }

    /// An xfs filesystem smaller than its device grows right after mounting (online).
    async fn grow_xfs_after_mount(
        &self,
        device: &BlockDevice,
        mount_point: &Path,
    ) -> Result<(), MountError> {
        let fs_bytes = fs::size_bytes(FsType::Xfs, mount_point).await?;
        let device_bytes = device::size_bytes(&device.path)?;
        if fs::needs_growth(fs_bytes, device_bytes) {
            self.grow_and_verify(FsType::Xfs, device, mount_point, device_bytes)
                .await?;
        }
        Ok(())
    }

    /// Grow a mounted filesystem, then insist that its own size covers the device and
    /// that statvfs shows more space than before.
    async fn grow_and_verify(
        &self,
        fs: FsType,
        device: &BlockDevice,
        mount_point: &Path,
        device_bytes: u64,
    ) -> Result<(), MountError> {
        let size_at = match fs {
            FsType::Ext4 => device.path.as_path(),
            FsType::Xfs => mount_point,
        };
        let before = statvfs_total(mount_point)?;
        fs::grow_online(fs, &device.path, mount_point).await?;
        let grown = fs::size_bytes(fs, size_at).await?;
        let after = statvfs_total(mount_point)?;
        let cannot = |reason: String| MountError::CannotGrow {
            path: mount_point.to_path_buf(),
            fs_type: fs.name().to_string(),
            reason,
        };
        if fs::needs_growth(grown, device_bytes) {
            return Err(cannot(format!(
                "after growing, the filesystem is {grown} bytes on a {device_bytes}-byte device"
            )));
        }
        if after <= before {
            return Err(cannot(format!(
                "the filesystem reports {grown} bytes, but statvfs still shows {after} bytes (before: {before})"
            )));
        }
        tracing::info!(mount_point = %mount_point.display(), before, after, "grew the filesystem online");
        Ok(())
    }

    // ---- NodeUnstageVolume ----

    async fn unstage(&self, volume_id: String, staging: PathBuf) -> Result<(), MountError> {
        const FIELD: &str = "staging_target_path";
        // Loop mode: the simulated disk, held open before anything is unmounted, because
        // its autoclear may detach it the moment its filesystem goes, and its number must
        // not go to another volume before it is detached here.
        let loop_handle = if self.loop_mode() {
            device::open_loop(&self.image_path(&volume_id)?)?
        } else {
            None
        };
        let loop_device = loop_handle.as_ref().map(|h| h.device().clone());
        let table = MountTable::read()?;
        // What is staged at this path: the filesystem's mount, or the raw block record.
        let mut staged_at = None;
        let mut record = None;
        if let Some(staging) = paths::resolve(FIELD, &staging)? {
            if paths::kind_of(&staging)? == Kind::Symlink {
                return Err(refuse_symlink(FIELD, &staging));
            }
            record = Some(staging.join(BLOCK_RECORD));
            if let Some(entry) = table.at(&staging) {
                if self.loop_mode() && loop_device.as_ref().map(|d| d.id) != Some(entry.device) {
                    return Err(MountError::UnusablePath {
                        field: FIELD,
                        path: staging,
                        reason: format!(
                            "holds {}, which is not volume {volume_id}; not unmounting it",
                            describe(entry)
                        ),
                    });
                }
                let elsewhere: Vec<PathBuf> = table
                    .of_device(entry.device)
                    .filter(|e| e.mount_point != staging)
                    .map(|e| e.mount_point.clone())
                    .collect();
                if !elsewhere.is_empty() {
                    return Err(MountError::InUse {
                        device: PathBuf::from(&entry.source),
                        mounts: elsewhere,
                    });
                }
                staged_at = Some(staging);
            } else if let Some(found) = block_record_at(&table, &staging)? {
                let ours = match (found.device, &loop_device) {
                    (Some(id), Some(device)) => id == device.id,
                    // Other device sources cannot tell whose a device is.
                    (Some(_), None) => !self.loop_mode(),
                    (None, _) => false,
                };
                if !ours && !self.is_stale(&found) {
                    return Err(MountError::UnusablePath {
                        field: FIELD,
                        path: staging,
                        reason: format!(
                            "holds {}, which is not volume {volume_id}; not unmounting it",
                            found.describe()
                        ),
                    });
                }
                let node = FileOnFs {
                    device: found.entry.device,
                    root: found.entry.root.clone(),
                };
                let published: Vec<PathBuf> = table
                    .binds_of(&node)
                    .filter(|e| e.mount_point != found.path)
                    .map(|e| e.mount_point.clone())
                    .collect();
                if !published.is_empty() {
                    return Err(MountError::InUse {
                        device: loop_device.map_or(found.path, |d| d.path),
                        mounts: published,
                    });
                }
                staged_at = Some(found.path);
            }
        }
        let Some(loop_handle) = loop_handle else {
            match &staged_at {
                Some(mount) => {
                    vfs::unmount_all_patiently(mount).await?;
                    tracing::info!(volume_id, staging = %mount.display(), "unstaged");
                }
                // Not staged is fine, as long as the volume exists.
                None => self.check_volume_exists(&volume_id)?,
            }
            return record.as_deref().map_or(Ok(()), remove_block_record);
        };
        // Loop mode: unplug the simulated disk, which nothing else may use by now.
        let users: Vec<PathBuf> = mounts_using(&table, loop_handle.device())
            .into_iter()
            .filter(|m| Some(m) != staged_at.as_ref())
            .collect();
        if !users.is_empty() {
            if staged_at.is_none() {
                // Nothing staged here: the volume is staged at another path, and stays.
                return record.as_deref().map_or(Ok(()), remove_block_record);
            }
            return Err(MountError::InUse {
                device: loop_handle.device().path.clone(),
                mounts: users,
            });
        }
        // Links first: once detached, the loop device's number may go to another volume,
        // whose link must not be taken for ours.
        let links = device::remove_links_to(
            &self.driver.config.device_dir,
            &config::device_link_name(""),
            loop_handle.device().id,
        )?;
        if let Some(mount) = &staged_at {
            if let Err(e) = vfs::unmount_all_patiently(mount).await {
                for link in &links {
                    let _ = device::link_to(link, loop_handle.device());
                }
                return Err(e);
            }
            tracing::info!(volume_id, staging = %mount.display(), "unstaged");
        }
        let loop_path = loop_handle.device().path.clone();
        loop_handle.detach()?;
        tracing::info!(volume_id, device = %loop_path.display(), "detached loop device");
        record.as_deref().map_or(Ok(()), remove_block_record)
    }

    // ---- NodePublishVolume ----

    #[allow(clippy::too_many_arguments)]
    async fn publish(
        &self,
        volume_id: String,
        staging: PathBuf,
        target: PathBuf,
        capability: Capability,
        readonly: bool,
        context: HashMap<String, String>,
    ) -> Result<(), MountError> {
        const FIELD: &str = "target_path";
        self.check_volume_exists(&volume_id)?;
        let target = paths::resolve(FIELD, &target)?.ok_or_else(|| MountError::UnusablePath {
            field: FIELD,
            path: target.clone(),
            reason: "its parent directory does not exist".into(),
        })?;
        let read_only = readonly || capability.reader_only();
        match &capability.access {
            Access::Mount { fs, options } => {
                let options = options.clone().with_read_only(read_only);
                self.publish_mount(&volume_id, &staging, &target, &capability, *fs, &options)
            }
            Access::Block => {
                let options = MountOptions::default().with_read_only(read_only);
                self.publish_block(
                    &volume_id,
                    &staging,
                    &target,
                    &capability,
                    &options,
                    &context,
                )
            }
        }
    }

    fn publish_mount(
        &self,
        volume_id: &str,
        staging: &Path,
        target: &Path,
        capability: &Capability,
        fs: FsType,
        options: &MountOptions,
    ) -> Result<(), MountError> {
        let not_staged = |reason: String| MountError::NotStaged {
            volume_id: volume_id.to_string(),
            reason,
        };
        let staging = paths::resolve("staging_target_path", staging)?
            .ok_or_else(|| not_staged(format!("{} does not exist", staging.display())))?;
        let table = MountTable::read()?;
        let staged = table
            .at(&staging)
            .ok_or_else(|| not_staged(format!("nothing is mounted at {}", staging.display())))?;
        if self.loop_mode() && self.attached_loop(volume_id)?.map(|d| d.id) != Some(staged.device) {
            return Err(not_staged(format!(
                "{} holds {}, not this volume",
                staging.display(),
                describe(staged)
            )));
        }
        if staged.fs_type != fs.name() {
            return Err(MountError::FilesystemMismatch {
                device: staging.clone(),
                found: staged.fs_type.clone(),
                requested: fs.name().to_string(),
            });
        }
        let source = staging.display().to_string();
        if already_bound(
            &table,
            target,
            staged.device,
            &staged.root,
            options,
            &source,
        )? {
            return Ok(());
        }
        if capability.single_target() {
            if let Some(other) = table
                .of_device(staged.device)
                .find(|e| e.mount_point != staging && e.mount_point != target)
            {
                return Err(MountError::PublishedElsewhere {
                    volume_id: volume_id.to_string(),
                    other: other.mount_point.clone(),
                    mode: capability.mode.as_str_name().to_string(),
                });
            }
        }
        bind_target(&staging, target, &Kind::Directory, options)?;
        tracing::info!(volume_id, target = %target.display(), "published");
        Ok(())
    }

    fn publish_block(
        &self,
        volume_id: &str,
        staging: &Path,
        target: &Path,
        capability: &Capability,
        options: &MountOptions,
        context: &HashMap<String, String>,
    ) -> Result<(), MountError> {
        let not_staged = |reason: String| MountError::NotStaged {
            volume_id: volume_id.to_string(),
            reason,
        };
        let device = if self.loop_mode() {
            self.attached_loop(volume_id)?
                .ok_or_else(|| not_staged("its image is not attached as a loop device".into()))?
        } else {
            let link = self.device_link(volume_id, context)?;
            match device::inspect(&link) {
                Err(MountError::DeviceNotFound { .. }) => {
                    return Err(not_staged(format!("{} does not exist", link.display())))
                }
                other => other?,
            }
        };
        let table = MountTable::read()?;
        // Staged as a filesystem: handing out the raw device would corrupt it.
        refuse_if_mounted(&table, &device)?;
        let staging = paths::resolve("staging_target_path", staging)?
            .ok_or_else(|| not_staged(format!("{} does not exist", staging.display())))?;
        match block_record_at(&table, &staging)? {
            Some(found) if found.device == Some(device.id) => {}
            Some(found) => {
                return Err(not_staged(format!(
                    "{} holds {}, not this volume",
                    staging.display(),
                    found.describe()
                )))
            }
            None => {
                return Err(not_staged(format!(
                    "nothing is staged at {} as a raw block device",
                    staging.display()
                )))
            }
        }
        let node = device_node_on_fs(&table, &device).ok_or_else(|| {
            MountError::io(
                format!("finding the mount that holds {}", device.path.display()),
                std::io::Error::from(std::io::ErrorKind::NotFound),
            )
        })?;
        let source = format!("block device {}", device.path.display());
        if already_bound(&table, target, node.device, &node.root, options, &source)? {
            return Ok(());
        }
        if capability.single_target() {
            // Staging records are binds of the node too, but not publishes.
            if let Some(other) = table
                .binds_of(&node)
                .find(|e| e.mount_point != target && !is_block_record(&e.mount_point))
            {
                return Err(MountError::PublishedElsewhere {
                    volume_id: volume_id.to_string(),
                    other: other.mount_point.clone(),
                    mode: capability.mode.as_str_name().to_string(),
                });
            }
        }
        bind_target(&device.path, target, &Kind::File, options)?;
        tracing::info!(volume_id, target = %target.display(), device = %device.path.display(), "published block device");
        Ok(())
    }

    // ---- NodeUnpublishVolume ----

    async fn unpublish(&self, volume_id: String, target: PathBuf) -> Result<(), MountError> {
        const FIELD: &str = "target_path";
        let Some(target) = paths::resolve(FIELD, &target)? else {
            return self.check_volume_exists(&volume_id);
        };
        match paths::kind_of(&target)? {
            Kind::Missing => return self.check_volume_exists(&volume_id),
            Kind::Symlink => return Err(refuse_symlink(FIELD, &target)),
            _ => {}
        }
        if MountTable::read()?.at(&target).is_none() {
            // spec: an unknown volume is NOT_FOUND; what it might have left is not touched.
            self.check_volume_exists(&volume_id)?;
        }
        if vfs::unmount_all_patiently(&target).await? > 0 {
            tracing::info!(volume_id, target = %target.display(), "unpublished");
        }
        paths::remove_target(FIELD, &target)
    }

    // ---- NodeGetVolumeStats ----

    /// The volume mounted (or bound, for a raw block volume) at `path`.
    fn volume_at(&self, volume_id: &str, path: &Path) -> Result<VolumeAt, MountError> {
        const FIELD: &str = "volume_path";
        let not_mounted = |reason: &str| MountError::NotMounted {
            path: path.to_path_buf(),
            reason: reason.to_string(),
        };
        let resolved = paths::resolve(FIELD, path)?
            .ok_or_else(|| not_mounted("its parent directory does not exist"))?;
        let kind = paths::kind_of(&resolved)?;
        match kind {
            Kind::Missing => return Err(not_mounted("it does not exist")),
            Kind::Symlink => return Err(refuse_symlink(FIELD, &resolved)),
            _ => {}
        }
        let table = MountTable::read()?;
        let entry = table
            .at(&resolved)
            .cloned()
            .ok_or_else(|| not_mounted("not a mount point"))?;
        let block = kind == Kind::BlockDevice;
        let device = if block {
            device::inspect(&resolved)?.id
        } else {
            entry.device
        };
        if self.loop_mode() {
            let ours = self.attached_loop(volume_id)?.map(|d| d.id);
            if ours != Some(device) {
                return Err(not_mounted(&format!(
                    "it holds {}, not volume {volume_id}",
                    describe(&entry)
                )));
            }
        }
        Ok(VolumeAt {
            path: resolved,
            entry,
            device,
            block,
            table,
        })
    }

    fn stats(
        &self,
        volume_id: &str,
        path: &Path,
        staging: Option<&Path>,
    ) -> Result<NodeGetVolumeStatsResponse, MountError> {
        let at = self.volume_at(volume_id, path)?;
        let mut problems = Vec::new();
        if !device::exists(at.device) {
            problems.push(format!("device {} is gone", at.device));
        }
        if !at.block && at.entry.filesystem_read_only() && !at.entry.read_only() {
            problems.push(
                "the filesystem turned read-only though it is mounted read-write (errors?)"
                    .to_string(),
            );
        }
        if let Some(staging) = staging {
            let resolved = paths::resolve("staging_target_path", staging)?;
            let staged = match (resolved, at.block) {
                (Some(s), true) => block_record_at(&at.table, &s)?.and_then(|r| r.device),
                (Some(s), false) => at.table.at(&s).map(|e| e.device),
                (None, _) => None,
            };
            if staged != Some(at.device) {
                problems.push(format!(
                    "the staging {} at {} is gone",
                    if at.block { "record" } else { "mount" },
                    staging.display()
                ));
            }
        }
        let usage = if at.block {
            match device::size_bytes(&at.path) {
                Ok(total) => vec![VolumeUsage {
                    total: clamp(total),
                    unit: volume_usage::Unit::Bytes as i32,
                    ..Default::default()
                }],
                Err(e) => {
                    problems.push(e.to_string());
                    vec![]
                }
            }
        } else {
            match nix::sys::statvfs::statvfs(&at.path) {
                Ok(s) => filesystem_usage(&s),
                Err(e) => {
                    problems.push(format!("statvfs {}: {e}", at.path.display()));
                    vec![]
                }
            }
        };
        Ok(NodeGetVolumeStatsResponse {
            usage,
            volume_condition: Some(VolumeCondition {
                abnormal: !problems.is_empty(),
                message: if problems.is_empty() {
                    "healthy".to_string()
                } else {
                    problems.join("; ")
                },
            }),
        })
    }

    // ---- NodeExpandVolume ----

    async fn expand(
        &self,
        volume_id: String,
        path: PathBuf,
        required_bytes: u64,
    ) -> Result<u64, MountError> {
        let at = self.volume_at(&volume_id, &path)?;
        let device = device::by_number(at.device)?;
        if self.loop_mode() {
            // The controller grew the image file; the loop device learns it here.
            device::refresh_loop_capacity(&device).await?;
        }
        let device_bytes = device::size_bytes(&device.path)?;
        if device_bytes < required_bytes {
            return Err(MountError::CannotGrow {
                path: at.path,
                fs_type: if at.block { "block".into() } else { at.entry.fs_type },
                reason: format!(
                    "the device is {device_bytes} bytes, less than the {required_bytes} requested; has ControllerExpandVolume finished?"
                ),
            });
        }
        if at.block {
            return Ok(device_bytes);
        }
        let fs = FsType::from_name(&at.entry.fs_type).ok_or_else(|| MountError::CannotGrow {
            path: at.path.clone(),
            fs_type: at.entry.fs_type.clone(),
            reason: "the node grows only ext4 and xfs".into(),
        })?;
        let size_at = match fs {
            FsType::Ext4 => device.path.as_path(),
            FsType::Xfs => at.path.as_path(),
        };
        let fs_bytes = fs::size_bytes(fs, size_at).await?;
        if fs::needs_growth(fs_bytes, device_bytes) {
            self.grow_and_verify(fs, &device, &at.path, device_bytes)
                .await?;
        }
        Ok(device_bytes)
    }
}

/// What [`NodeService::volume_at`] found.
struct VolumeAt {
    /// The path, parents resolved.
    path: PathBuf,
    /// The mount there.
    entry: MountEntry,
    /// The volume's device.
    device: DeviceId,
    /// A raw block volume (a bind of the device node) rather than a filesystem.
    block: bool,
    table: MountTable,
}

/// Create a path to mount on (a target directory, or a file for a raw block target or
/// staging record) unless it is there already, never through a symlink. Returns whether
/// this call created it.
fn prepare_path(field: &'static str, path: &Path, want: &Kind) -> Result<bool, MountError> {
    if paths::kind_of(path)? == Kind::Missing {
        let created = match want {
            Kind::Directory => paths::create_dir(field, path)?,
            _ => paths::create_file(field, path)?,
        };
        if created {
            return Ok(true);
        }
    }
    // It existed, or appeared meanwhile: take it only as an empty thing of the right kind
    // (the node removes it again later, and must not take anything with it).
    let not_empty = || MountError::UnusablePath {
        field,
        path: path.to_path_buf(),
        reason: "exists and is not empty".into(),
    };
    match paths::kind_of(path)? {
        Kind::Symlink => Err(refuse_symlink(field, path)),
        Kind::Directory if want == &Kind::Directory => {
            if paths::dir_is_empty(path)? {
                Ok(false)
            } else {
                Err(not_empty())
            }
        }
        Kind::File if want == &Kind::File => {
            let meta = std::fs::symlink_metadata(path)
                .map_err(|e| MountError::io(format!("inspecting {}", path.display()), e))?;
            if meta.len() == 0 {
                Ok(false)
            } else {
                Err(not_empty())
            }
        }
        other => Err(MountError::UnusablePath {
            field,
            path: path.to_path_buf(),
            reason: format!("is {}, expected {}", other.describe(), want.describe()),
        }),
    }
}

/// The staging directory of a stage request, parents resolved: it must exist (the CO
/// creates it) and be a directory, not a symlink.
fn staging_directory(staging: &Path) -> Result<PathBuf, MountError> {
    const FIELD: &str = "staging_target_path";
    let not_there = || MountError::UnusablePath {
        field: FIELD,
        path: staging.to_path_buf(),
        reason: "does not exist; the CO creates the staging directory".into(),
    };
    let resolved = paths::resolve(FIELD, staging)?.ok_or_else(not_there)?;
    match paths::kind_of(&resolved)? {
        Kind::Directory => Ok(resolved),
        Kind::Missing => Err(not_there()),
        Kind::Symlink => Err(refuse_symlink(FIELD, &resolved)),
        other => Err(MountError::UnusablePath {
            field: FIELD,
            path: resolved,
            reason: format!("is {}, not a directory", other.describe()),
        }),
    }
}

/// A raw block staging record: what is mounted at `<staging>/block-device`.
struct BlockRecord {
    path: PathBuf,
    entry: MountEntry,
    /// The device whose node is bound there; `None` when what is mounted there is not a
    /// device node (then it is not a record the node made).
    device: Option<DeviceId>,
}

impl BlockRecord {
    fn describe(&self) -> String {
        match self.device {
            Some(id) => format!("raw block device {id} bound at {}", self.path.display()),
            None => format!("{} at {}", describe(&self.entry), self.path.display()),
        }
    }
}

/// The raw block staging record in the (resolved) staging directory, if one is mounted.
fn block_record_at(table: &MountTable, staging: &Path) -> Result<Option<BlockRecord>, MountError> {
    let path = staging.join(BLOCK_RECORD);
    let Some(entry) = table.at(&path) else {
        return Ok(None);
    };
    // The mount point shows what is mounted there: for a record, the device node.
    let meta = std::fs::symlink_metadata(&path)
        .map_err(|e| MountError::io(format!("inspecting {}", path.display()), e))?;
    let device = std::os::unix::fs::FileTypeExt::is_block_device(&meta.file_type())
        .then(|| DeviceId::from_dev_t(std::os::unix::fs::MetadataExt::rdev(&meta)));
    Ok(Some(BlockRecord {
        path,
        entry: entry.clone(),
        device,
    }))
}

/// Whether a mount point is a raw block staging record (by its name).
fn is_block_record(mount_point: &Path) -> bool {
    mount_point.file_name() == Some(std::ffi::OsStr::new(BLOCK_RECORD))
}

/// Remove a raw block staging record's file, nothing being mounted on it any more. Only
/// an empty regular file, the way the node created it: anything else there is not ours.
fn remove_block_record(record: &Path) -> Result<(), MountError> {
    match std::fs::symlink_metadata(record) {
        Ok(meta) if meta.file_type().is_file() && meta.len() == 0 => {
            match std::fs::remove_file(record) {
                Ok(()) => Ok(()),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
                Err(e) => Err(MountError::io(format!("removing {}", record.display()), e)),
            }
        }
        Ok(_) => {
            tracing::warn!(path = %record.display(), "not removing it: not an empty regular file, so not the node's");
            Ok(())
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(MountError::io(
            format!("inspecting {}", record.display()),
            e,
        )),
    }
}

fn statvfs_total(path: &Path) -> Result<u64, MountError> {
    let s = nix::sys::statvfs::statvfs(path)
        .map_err(|e| MountError::sys(format!("statvfs {}", path.display()), e))?;
    Ok(s.blocks().saturating_mul(s.fragment_size()))
}

fn clamp(value: u64) -> i64 {
    i64::try_from(value).unwrap_or(i64::MAX)
}

/// Bytes and inodes of a mounted filesystem.
fn filesystem_usage(s: &nix::sys::statvfs::Statvfs) -> Vec<VolumeUsage> {
    let unit = s.fragment_size();
    vec![
        VolumeUsage {
            available: clamp(s.blocks_available().saturating_mul(unit)),
            total: clamp(s.blocks().saturating_mul(unit)),
            used: clamp(
                s.blocks()
                    .saturating_sub(s.blocks_free())
                    .saturating_mul(unit),
            ),
            unit: volume_usage::Unit::Bytes as i32,
        },
        VolumeUsage {
            available: clamp(s.files_available()),
            total: clamp(s.files()),
            used: clamp(s.files().saturating_sub(s.files_free())),
            unit: volume_usage::Unit::Inodes as i32,
        },
    ]
}

/// The node capabilities, each one implemented.
const CAPABILITIES: &[RpcType] = &[
    RpcType::StageUnstageVolume,
    RpcType::GetVolumeStats,
    RpcType::ExpandVolume,
    RpcType::VolumeCondition,
    RpcType::SingleNodeMultiWriter,
];

#[tonic::async_trait]
impl Node for NodeService {
    async fn node_stage_volume(
        &self,
        request: Request<NodeStageVolumeRequest>,
    ) -> Result<Response<NodeStageVolumeResponse>, Status> {
        let deadline = deadline_of(&request);
        let r = request.into_inner();
        paths::validate_volume_id(&r.volume_id)?;
        let staging = paths::validate("staging_target_path", &r.staging_target_path)?;
        let capability = Capability::parse(r.volume_capability.as_ref())?;
        self.locked(r.volume_id, |node, volume_id| async move {
            node.stage(volume_id, staging, capability, r.publish_context, deadline)
                .await
        })
        .await?;
        Ok(Response::new(NodeStageVolumeResponse {}))
    }

    async fn node_unstage_volume(
        &self,
        request: Request<NodeUnstageVolumeRequest>,
    ) -> Result<Response<NodeUnstageVolumeResponse>, Status> {
        let r = request.into_inner();
        paths::validate_volume_id(&r.volume_id)?;
        let staging = paths::validate("staging_target_path", &r.staging_target_path)?;
        self.locked(r.volume_id, |node, volume_id| async move {
            node.unstage(volume_id, staging).await
        })
        .await?;
        Ok(Response::new(NodeUnstageVolumeResponse {}))
    }

    async fn node_publish_volume(
        &self,
        request: Request<NodePublishVolumeRequest>,
    ) -> Result<Response<NodePublishVolumeResponse>, Status> {
        let r = request.into_inner();
        paths::validate_volume_id(&r.volume_id)?;
        let target = paths::validate("target_path", &r.target_path)?;
        let capability = Capability::parse(r.volume_capability.as_ref())?;
        // spec: with STAGE_UNSTAGE_VOLUME advertised, a missing staging path is
        // FAILED_PRECONDITION, not INVALID_ARGUMENT.
        let staging =
            optional_path("staging_target_path", &r.staging_target_path)?.ok_or_else(|| {
                MountError::NotStaged {
                    volume_id: r.volume_id.clone(),
                    reason: "staging_target_path is empty, and this node stages volumes".into(),
                }
            })?;
        self.locked(r.volume_id, |node, volume_id| async move {
            node.publish(
                volume_id,
                staging,
                target,
                capability,
                r.readonly,
                r.publish_context,
            )
            .await
        })
        .await?;
        Ok(Response::new(NodePublishVolumeResponse {}))
    }

    async fn node_unpublish_volume(
        &self,
        request: Request<NodeUnpublishVolumeRequest>,
    ) -> Result<Response<NodeUnpublishVolumeResponse>, Status> {
        let r = request.into_inner();
        paths::validate_volume_id(&r.volume_id)?;
        let target = paths::validate("target_path", &r.target_path)?;
        self.locked(r.volume_id, |node, volume_id| async move {
            node.unpublish(volume_id, target).await
        })
        .await?;
        Ok(Response::new(NodeUnpublishVolumeResponse {}))
    }

    async fn node_get_volume_stats(
        &self,
        request: Request<NodeGetVolumeStatsRequest>,
    ) -> Result<Response<NodeGetVolumeStatsResponse>, Status> {
        let r = request.into_inner();
        require("volume_id", &r.volume_id)?;
        require("volume_path", &r.volume_path)?;
        paths::validate_volume_id(&r.volume_id)?;
        self.check_volume_exists(&r.volume_id)?;
        // No volume is ever published or staged at a relative path, so the answer for one
        // is NOT_FOUND ("the volume does not exist on the specified path"), and it needs no
        // filesystem access. Other malformed paths stay INVALID_ARGUMENT.
        if !r.volume_path.starts_with('/') {
            return Err(MountError::NotMounted {
                path: PathBuf::from(crate::status::shown(&r.volume_path)),
                reason: "a relative path holds no volume".into(),
            }
            .into());
        }
        let path = paths::validate("volume_path", &r.volume_path)?;
        let staging = optional_path("staging_target_path", &r.staging_target_path)?;
        // Read-only and frequent (kubelet polls it), so it takes no lock.
        let node = self.clone();
        let response = tokio::task::spawn_blocking(move || {
            node.stats(&r.volume_id, &path, staging.as_deref())
        })
        .await
        .map_err(|e| Status::internal(format!("NodeGetVolumeStats failed: {e}")))??;
        Ok(Response::new(response))
    }

    async fn node_expand_volume(
        &self,
        request: Request<NodeExpandVolumeRequest>,
    ) -> Result<Response<NodeExpandVolumeResponse>, Status> {
        let r = request.into_inner();
        require("volume_id", &r.volume_id)?;
        require("volume_path", &r.volume_path)?;
        paths::validate_volume_id(&r.volume_id)?;
        self.check_volume_exists(&r.volume_id)?;
        let path = paths::validate("volume_path", &r.volume_path)?;
        optional_path("staging_target_path", &r.staging_target_path)?;
        if r.volume_capability.is_some() {
            Capability::parse(r.volume_capability.as_ref())?;
        }
        let required = match r.capacity_range {
            Some(range) if range.required_bytes < 0 || range.limit_bytes < 0 => {
                return Err(MountError::InvalidField {
                    field: "capacity_range",
                    value: format!("{range:?}"),
                    reason: "sizes cannot be negative".into(),
                }
                .into())
            }
            Some(range) => range.required_bytes.unsigned_abs(),
            None => 0,
        };
        let capacity = self
            .locked(r.volume_id, |node, volume_id| async move {
                node.expand(volume_id, path, required).await
            })
            .await?;
        Ok(Response::new(NodeExpandVolumeResponse {
            capacity_bytes: clamp(capacity),
        }))
    }

    async fn node_get_capabilities(
        &self,
        _request: Request<NodeGetCapabilitiesRequest>,
    ) -> Result<Response<NodeGetCapabilitiesResponse>, Status> {
        let capabilities = CAPABILITIES
            .iter()
            .map(|&t| NodeServiceCapability {
                r#type: Some(node_service_capability::Type::Rpc(
                    node_service_capability::Rpc { r#type: t as i32 },
                )),
            })
            .collect();
        Ok(Response::new(NodeGetCapabilitiesResponse { capabilities }))
    }

    async fn node_get_info(
        &self,
        _request: Request<NodeGetInfoRequest>,
    ) -> Result<Response<NodeGetInfoResponse>, Status> {
        let node_id = self
            .driver
            .node_id
            .clone()
            .ok_or_else(|| Status::failed_precondition("this process has no node id"))?;
        Ok(Response::new(NodeGetInfoResponse {
            node_id,
            max_volumes_per_node: self.driver.config.max_volumes_per_node,
            accessible_topology: Some(Topology {
                segments: [(
                    TOPOLOGY_REGION_KEY.to_string(),
                    self.driver.config.region.clone(),
                )]
                .into_iter()
                .collect(),
            }),
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mount_errors_map_to_the_codes_the_spec_expects() {
        use tonic::Code;
        let path = || PathBuf::from("/p");
        let cases = [
            (
                MountError::MissingField { field: "volume_id" },
                Code::InvalidArgument,
            ),
            (
                MountError::VolumeNotFound {
                    volume_id: "v".into(),
                    reason: "no image".into(),
                },
                Code::NotFound,
            ),
            (
                MountError::NotMounted {
                    path: path(),
                    reason: "not a mount point".into(),
                },
                Code::NotFound,
            ),
            (
                MountError::Conflict {
                    path: path(),
                    existing: "a".into(),
                    requested: "b".into(),
                },
                Code::AlreadyExists,
            ),
            (
                MountError::PublishedElsewhere {
                    volume_id: "v".into(),
                    other: path(),
                    mode: "SINGLE_NODE_WRITER".into(),
                },
                Code::FailedPrecondition,
            ),
            (
                MountError::NotStaged {
                    volume_id: "v".into(),
                    reason: "r".into(),
                },
                Code::FailedPrecondition,
            ),
            (
                MountError::CannotGrow {
                    path: path(),
                    fs_type: "ext4".into(),
                    reason: "resize2fs: Permission denied".into(),
                },
                Code::FailedPrecondition,
            ),
            (
                MountError::Timeout {
                    what: "w".into(),
                    waited: Duration::from_secs(1),
                },
                Code::DeadlineExceeded,
            ),
            (
                MountError::Spawn {
                    program: "mkfs.xfs".into(),
                    source: std::io::Error::from(std::io::ErrorKind::NotFound),
                },
                Code::FailedPrecondition,
            ),
            (
                MountError::Command {
                    program: "mkfs.ext4".into(),
                    args: "/dev/loop0".into(),
                    status: "exit code 1".into(),
                    stderr: "boom".into(),
                },
                Code::Internal,
            ),
        ];
        for (err, code) in cases {
            let message = err.to_string();
            let status = Status::from(err);
            assert_eq!(status.code(), code, "{message}");
            assert_eq!(status.message(), message);
        }
    }

    #[test]
    fn grpc_timeouts_parse_in_every_unit() {
        assert_eq!(parse_grpc_timeout("10S"), Some(Duration::from_secs(10)));
        assert_eq!(parse_grpc_timeout("2M"), Some(Duration::from_secs(120)));
        assert_eq!(parse_grpc_timeout("1H"), Some(Duration::from_secs(3600)));
        assert_eq!(parse_grpc_timeout("500m"), Some(Duration::from_millis(500)));
        assert_eq!(
            parse_grpc_timeout("59999862u"),
            Some(Duration::from_micros(59_999_862))
        );
        assert_eq!(parse_grpc_timeout("7n"), Some(Duration::from_nanos(7)));
        for bad in ["", "S", "10", "10s", "123456789S", "-1S", "1.5S", "é"] {
            assert_eq!(parse_grpc_timeout(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn capabilities_need_an_access_type_and_a_known_mode() {
        use volume_capability::{AccessMode, MountVolume};
        let mode = |m: Mode| Some(AccessMode { mode: m as i32 });
        let mount = |fs: &str| {
            Some(AccessType::Mount(MountVolume {
                fs_type: fs.into(),
                ..Default::default()
            }))
        };
        let parse = |c: VolumeCapability| Capability::parse(Some(&c));
        assert!(matches!(
            Capability::parse(None),
            Err(MountError::MissingField {
                field: "volume_capability"
            })
        ));
        assert!(matches!(
            parse(VolumeCapability {
                access_mode: mode(Mode::SingleNodeWriter),
                access_type: None
            }),
            Err(MountError::MissingField {
                field: "volume_capability.access_type"
            })
        ));
        assert!(parse(VolumeCapability {
            access_mode: mode(Mode::Unknown),
            access_type: mount("")
        })
        .is_err());
        assert!(parse(VolumeCapability {
            access_mode: mode(Mode::SingleNodeWriter),
            access_type: mount("btrfs")
        })
        .is_err());
        let ok = parse(VolumeCapability {
            access_mode: mode(Mode::SingleNodeReaderOnly),
            access_type: mount("xfs"),
        })
        .unwrap();
        assert!(ok.reader_only() && ok.single_target());
        let multi = parse(VolumeCapability {
            access_mode: mode(Mode::SingleNodeMultiWriter),
            access_type: Some(AccessType::Block(Default::default())),
        })
        .unwrap();
        assert!(!multi.single_target() && !multi.reader_only());
    }
}
