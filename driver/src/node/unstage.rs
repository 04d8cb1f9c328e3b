//! NodeUnstageVolume: unmount the staging path (or remove the raw block staging
//! record), then let the volume's device go where its source plugged it in.

use std::path::{Path, PathBuf};

use super::device_source::Found;
use super::mounts::{block_record_at, describe, mounts_using, refuse_symlink, BLOCK_RECORD};
use super::NodeService;
use crate::mount::mountinfo::{FileOnFs, MountTable};
use crate::mount::paths::{self, Kind};
use crate::mount::vfs;
use crate::mount::MountError;

impl NodeService {
    pub(super) async fn unstage(
        &self,
        volume_id: String,
        staging: PathBuf,
    ) -> Result<(), MountError> {
        const FIELD: &str = "staging_target_path";
        // The device, held before anything is unmounted where its source plugged it in:
        // it may go by itself the moment its filesystem goes, and its number must not go
        // to another volume before it is unplugged here.
        let held = self.source.hold(&volume_id)?;
        let ours = held.map(|plugged| plugged.device().id);
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
                if !ours.admits(entry.device) {
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
                let ours = found.device.is_some_and(|id| ours.admits(id));
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
                        device: match &held {
                            Found::Attached(plugged) => plugged.device().path.clone(),
                            _ => found.path,
                        },
                        mounts: published,
                    });
                }
                staged_at = Some(found.path);
            }
        }
        let Found::Attached(plugged) = held else {
            match &staged_at {
                Some(mount) => {
                    vfs::unmount_all_patiently(mount).await?;
                    tracing::info!(volume_id, staging = %mount.display(), "unstaged");
                }
                // Not staged is fine, as long as the volume exists.
                None => self.source.check_exists(&volume_id)?,
            }
            return record.as_deref().map_or(Ok(()), remove_block_record);
        };
        // Unplug the device its source plugged in, which nothing else may use by now.
        let users: Vec<PathBuf> = mounts_using(&table, plugged.device())
            .into_iter()
            .filter(|m| Some(m) != staged_at.as_ref())
            .collect();
        if !users.is_empty() {
            if staged_at.is_none() {
                // Nothing staged here: the volume is staged at another path, and stays.
                return record.as_deref().map_or(Ok(()), remove_block_record);
            }
            return Err(MountError::InUse {
                device: plugged.device().path.clone(),
                mounts: users,
            });
        }
        let unmount = async {
            if let Some(mount) = &staged_at {
                vfs::unmount_all_patiently(mount).await?;
                tracing::info!(volume_id, staging = %mount.display(), "unstaged");
            }
            Ok(())
        };
        self.source
            .unplug(&volume_id, plugged, Box::pin(unmount))
            .await?;
        record.as_deref().map_or(Ok(()), remove_block_record)
    }
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
