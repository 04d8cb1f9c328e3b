//! NodeGetVolumeStats: the space and inodes of the volume at a path, and whether it is
//! healthy; and [`NodeService::volume_at`], which NodeExpandVolume shares.

use std::path::{Path, PathBuf};

use csi_proto::v1::{volume_usage, NodeGetVolumeStatsResponse, VolumeCondition, VolumeUsage};

use super::mounts::{block_record_at, describe, refuse_symlink};
use super::{clamp, NodeService};
use crate::mount::device;
use crate::mount::mountinfo::{DeviceId, MountEntry, MountTable};
use crate::mount::paths::{self, Kind};
use crate::mount::MountError;

impl NodeService {
    pub(super) fn stats(
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

    /// The volume mounted (or bound, for a raw block volume) at `path`.
    pub(super) fn volume_at(&self, volume_id: &str, path: &Path) -> Result<VolumeAt, MountError> {
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
        let ours = self.source.find(volume_id)?.map(|device| device.id);
        if !ours.admits(device) {
            return Err(not_mounted(&format!(
                "it holds {}, not volume {volume_id}",
                describe(&entry)
            )));
        }
        Ok(VolumeAt {
            path: resolved,
            entry,
            device,
            block,
            table,
        })
    }
}

/// What [`NodeService::volume_at`] found.
pub(super) struct VolumeAt {
    /// The path, parents resolved.
    pub(super) path: PathBuf,
    /// The mount there.
    pub(super) entry: MountEntry,
    /// The volume's device.
    pub(super) device: DeviceId,
    /// A raw block volume (a bind of the device node) rather than a filesystem.
    pub(super) block: bool,
    pub(super) table: MountTable,
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
