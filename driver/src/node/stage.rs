//! NodeStageVolume: make the volume's device appear (through the node's
//! [`DeviceSource`](super::device_source::DeviceSource)), then mount its filesystem on the
//! staging path, formatting a blank device first, or record a raw block staging.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use nix::mount::MsFlags;
use tokio::time::Instant;

use super::capability::{Access, Capability};
use super::device_source::Plugged;
use super::mounts::{
    block_record_at, describe, device_node_on_fs, options_text, prepare_path, refuse_if_mounted,
    refuse_symlink, BlockRecord, BLOCK_RECORD,
};
use super::NodeService;
use crate::config::{self, PUBLISH_CONTEXT_DEVICE_LINK, PUBLISH_CONTEXT_VOLUME_NAME};
use crate::mount::device::{self, BlockDevice};
use crate::mount::fs::{self, FsType, Probe};
use crate::mount::mountinfo::MountTable;
use crate::mount::paths::{self, Kind, Pinned};
use crate::mount::vfs::{self, MountOptions};
use crate::mount::MountError;

impl NodeService {
    pub(super) async fn stage(
        &self,
        volume_id: String,
        staging: PathBuf,
        capability: Capability,
        context: HashMap<String, String>,
        deadline: Instant,
    ) -> Result<(), MountError> {
        let link = self.device_link(&volume_id, &context)?;
        let (device, attached_here) = self.source.obtain(&volume_id, &link, deadline).await?;
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
                self.source.undo(attached_here);
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
        attached_here: Option<&Plugged>,
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
                return self.source.keep_attached(device, attached_here);
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
                self.source
                    .keep_attached(device, attached_here)
                    .inspect_err(|_| {
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
        self.source.after_mount(volume_id, device);
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

    /// Whether a block staging record names a device its source unplugged behind the
    /// node's back.
    pub(super) fn is_stale(&self, record: &BlockRecord) -> bool {
        record.device.is_some_and(|id| self.source.is_stale(id))
    }

    /// The device link for a volume, from publish_context.
    pub(super) fn device_link(
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
            (None, None) => self
                .source
                .default_link_name(volume_id)
                .ok_or(MountError::MissingField { field: LINK_FIELD })?,
        };
        paths::validate_file_name(LINK_FIELD, &name)?;
        Ok(self.driver.config.device_dir.join(name))
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
