//! NodePublishVolume: bind-mount the staged filesystem (or the raw block device) onto
//! the target path, which the node creates; and NodeUnpublishVolume, its undo.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use super::capability::{Access, Capability};
use super::device_source::Found;
use super::mounts::{
    block_record_at, describe, device_node_on_fs, is_block_record, options_text, prepare_path,
    refuse_if_mounted, refuse_symlink,
};
use super::NodeService;
use crate::mount::device;
use crate::mount::fs::FsType;
use crate::mount::mountinfo::{DeviceId, MountTable};
use crate::mount::paths::{self, Kind, Pinned};
use crate::mount::vfs::{self, MountOptions};
use crate::mount::MountError;

impl NodeService {
    #[allow(clippy::too_many_arguments)]
    pub(super) async fn publish(
        &self,
        volume_id: String,
        staging: PathBuf,
        target: PathBuf,
        capability: Capability,
        readonly: bool,
        context: HashMap<String, String>,
    ) -> Result<(), MountError> {
        const FIELD: &str = "target_path";
        self.source.check_exists(&volume_id)?;
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
        let ours = self.source.find(volume_id)?.map(|device| device.id);
        if !ours.admits(staged.device) {
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
        let device = match self.source.find(volume_id)? {
            Found::Attached(device) => device,
            Found::Detached(why) => return Err(not_staged(why.into())),
            Found::Unknown => {
                let link = self.device_link(volume_id, context)?;
                match device::inspect(&link) {
                    Err(MountError::DeviceNotFound { .. }) => {
                        return Err(not_staged(format!("{} does not exist", link.display())))
                    }
                    other => other?,
                }
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

    pub(super) async fn unpublish(
        &self,
        volume_id: String,
        target: PathBuf,
    ) -> Result<(), MountError> {
        const FIELD: &str = "target_path";
        let Some(target) = paths::resolve(FIELD, &target)? else {
            return self.source.check_exists(&volume_id);
        };
        match paths::kind_of(&target)? {
            Kind::Missing => return self.source.check_exists(&volume_id),
            Kind::Symlink => return Err(refuse_symlink(FIELD, &target)),
            _ => {}
        }
        if MountTable::read()?.at(&target).is_none() {
            // spec: an unknown volume is NOT_FOUND; what it might have left is not touched.
            self.source.check_exists(&volume_id)?;
        }
        if vfs::unmount_all_patiently(&target).await? > 0 {
            tracing::info!(volume_id, target = %target.display(), "unpublished");
        }
        paths::remove_target(FIELD, &target)
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
