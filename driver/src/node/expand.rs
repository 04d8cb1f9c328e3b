//! NodeExpandVolume: make the device see the size the controller grew the volume to, and
//! grow the filesystem mounted from it, checking that it really grew.

use std::path::{Path, PathBuf};

use super::NodeService;
use crate::mount::device::{self, BlockDevice};
use crate::mount::fs::{self, FsType};
use crate::mount::MountError;

impl NodeService {
    pub(super) async fn expand(
        &self,
        volume_id: String,
        path: PathBuf,
        required_bytes: u64,
    ) -> Result<u64, MountError> {
        let at = self.volume_at(&volume_id, &path)?;
        let device = device::by_number(at.device)?;
        self.source.refresh_size(&device).await?;
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

    /// Grow a mounted filesystem, then insist that its own size covers the device and
    /// that statvfs shows more space than before.
    pub(super) async fn grow_and_verify(
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
}

fn statvfs_total(path: &Path) -> Result<u64, MountError> {
    let s = nix::sys::statvfs::statvfs(path)
        .map_err(|e| MountError::sys(format!("statvfs {}", path.display()), e))?;
    Ok(s.blocks().saturating_mul(s.fragment_size()))
}
