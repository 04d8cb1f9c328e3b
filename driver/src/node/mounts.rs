//! What the mount table says about a volume on this node: mounts described for messages,
//! the mounts that use a device, raw block staging records, and making the paths the node
//! mounts on.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use crate::mount::device::BlockDevice;
use crate::mount::mountinfo::{DeviceId, FileOnFs, MountEntry, MountTable};
use crate::mount::paths::{self, Kind};
use crate::mount::MountError;

/// The file in a staging directory that a raw block staging bind-mounts the device
/// node onto: the record that the volume is staged there as a raw block device.
pub const BLOCK_RECORD: &str = "block-device";

/// IN_USE when the device's filesystem is mounted anywhere: handing out the raw device
/// would let writes to it corrupt that filesystem.
pub(super) fn refuse_if_mounted(
    table: &MountTable,
    device: &BlockDevice,
) -> Result<(), MountError> {
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
pub(super) fn describe(entry: &MountEntry) -> String {
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

pub(super) fn options_text(set: &BTreeSet<String>) -> String {
    set.iter().cloned().collect::<Vec<_>>().join(",")
}

/// A path field that must not be a symlink.
pub(super) fn refuse_symlink(field: &'static str, path: &Path) -> MountError {
    MountError::InvalidField {
        field,
        value: path.display().to_string(),
        reason: "is a symlink; the node never follows one".into(),
    }
}

/// Every mount that uses `device`: filesystem mounts of it and bind mounts of its node.
pub(super) fn mounts_using(table: &MountTable, device: &BlockDevice) -> Vec<PathBuf> {
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
pub(super) fn device_node_on_fs(table: &MountTable, device: &BlockDevice) -> Option<FileOnFs> {
    let meta = std::fs::metadata(&device.path).ok()?;
    let holder = DeviceId::from_dev_t(std::os::unix::fs::MetadataExt::dev(&meta));
    FileOnFs::locate(table, &device.path, holder)
}

/// Create a path to mount on (a target directory, or a file for a raw block target or
/// staging record) unless it is there already, never through a symlink. Returns whether
/// this call created it.
pub(super) fn prepare_path(
    field: &'static str,
    path: &Path,
    want: &Kind,
) -> Result<bool, MountError> {
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

/// A raw block staging record: what is mounted at `<staging>/block-device`.
pub(super) struct BlockRecord {
    pub(super) path: PathBuf,
    pub(super) entry: MountEntry,
    /// The device whose node is bound there; `None` when what is mounted there is not a
    /// device node (then it is not a record the node made).
    pub(super) device: Option<DeviceId>,
}

impl BlockRecord {
    pub(super) fn describe(&self) -> String {
        match self.device {
            Some(id) => format!("raw block device {id} bound at {}", self.path.display()),
            None => format!("{} at {}", describe(&self.entry), self.path.display()),
        }
    }
}

/// The raw block staging record in the (resolved) staging directory, if one is mounted.
pub(super) fn block_record_at(
    table: &MountTable,
    staging: &Path,
) -> Result<Option<BlockRecord>, MountError> {
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
pub(super) fn is_block_record(mount_point: &Path) -> bool {
    mount_point.file_name() == Some(std::ffi::OsStr::new(BLOCK_RECORD))
}
