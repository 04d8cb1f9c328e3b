//! Block devices, filesystems and mounts on the node.
//!
//! One module per job: [`paths`] checks the paths a request names, [`mountinfo`] reads
//! what is mounted where (the only record of node state: it survives a restart),
//! [`vfs`] mounts and unmounts, [`device`] finds, attaches and sizes block devices,
//! [`fs`] probes, formats and grows filesystems, and [`command`] runs the tools they
//! need. Every failure is a [`MountError`]; `status.rs` turns it into a gRPC status.

pub mod command;
pub mod device;
pub mod fs;
pub mod mountinfo;
pub mod paths;
pub mod vfs;

use std::path::PathBuf;
use std::time::Duration;

/// A failure of the node's mount layer, or a node state that forbids the request.
#[derive(Debug, thiserror::Error)]
pub enum MountError {
    /// A required request field is empty or absent.
    #[error("{field} is required")]
    MissingField { field: &'static str },

    /// A request field has a value the node refuses; the message shows the value cut
    /// short ([`crate::status::shown`]).
    #[error("{field} {} is invalid: {reason}", crate::status::shown(value))]
    InvalidField {
        field: &'static str,
        value: String,
        reason: String,
    },

    /// The volume does not exist (loop mode: it has no image).
    #[error("volume {volume_id} not found: {reason}")]
    VolumeNotFound { volume_id: String, reason: String },

    /// A device (or the link that should name it) is not there.
    #[error("device {} not found", path.display())]
    DeviceNotFound { path: PathBuf },

    /// Something we wait for did not happen before the request's deadline.
    #[error("{what} did not happen within {waited:?}")]
    Timeout { what: String, waited: Duration },

    /// `path` holds no volume: it is missing or not a mount point.
    #[error("no volume at {}: {reason}", path.display())]
    NotMounted { path: PathBuf, reason: String },

    /// A mount cannot be removed because something still uses it.
    #[error("{} is busy (open files or nested mounts); unmount it later", path.display())]
    Busy { path: PathBuf },

    /// An external tool ran and failed.
    #[error("{program} {args} failed ({status}): {stderr}")]
    Command {
        program: String,
        args: String,
        status: String,
        stderr: String,
    },

    /// An external tool could not be started at all (most often: not installed).
    #[error("cannot run {program}: {source}")]
    Spawn {
        program: String,
        #[source]
        source: std::io::Error,
    },

    /// A system call or file operation failed.
    #[error("{context}: {source}")]
    Io {
        context: String,
        #[source]
        source: std::io::Error,
    },

    /// /proc/self/mountinfo could not be understood.
    #[error("unreadable /proc/self/mountinfo line {line:?}: {reason}")]
    MountTable { line: String, reason: String },

    /// The path already holds something other than what the request asks for.
    #[error("{} already holds {existing}; the request asks for {requested}", path.display())]
    Conflict {
        path: PathBuf,
        existing: String,
        requested: String,
    },

    /// The device holds a filesystem of another type than the one requested.
    #[error("{} holds a {found} filesystem, not the requested {requested}; it is never reformatted", device.display())]
    FilesystemMismatch {
        device: PathBuf,
        found: String,
        requested: String,
    },

    /// The device holds data that is not a filesystem we can mount (a partition table,
    /// a RAID member...). Formatting it would destroy that data.
    #[error("{} holds {what}, not a filesystem; refusing to format it", device.display())]
    UnrecognisedData { device: PathBuf, what: String },

    /// Publish found no staged volume at the staging path.
    #[error("volume {volume_id} is not staged: {reason}")]
    NotStaged { volume_id: String, reason: String },

    /// The volume is published at another target and its access mode allows only one.
    #[error("volume {volume_id} is already published at {} and access mode {mode} allows one target only", other.display())]
    PublishedElsewhere {
        volume_id: String,
        other: PathBuf,
        mode: String,
    },

    /// The device is still mounted somewhere, so it cannot be detached or re-used.
    #[error("{} is still in use at {}", device.display(), mounts.iter().map(|p| p.display().to_string()).collect::<Vec<_>>().join(", "))]
    InUse {
        device: PathBuf,
        mounts: Vec<PathBuf>,
    },

    /// A path a request names exists in a form the node will not touch.
    #[error("{field} {}: {reason}", path.display())]
    UnusablePath {
        field: &'static str,
        path: PathBuf,
        reason: String,
    },

    /// The filesystem cannot grow in its current state (for ext4 here: online growth
    /// needs CAP_SYS_RESOURCE).
    #[error("cannot grow the {fs_type} filesystem at {}: {reason}", path.display())]
    CannotGrow {
        path: PathBuf,
        fs_type: String,
        reason: String,
    },

    /// The node is not set up for this request (e.g. loop mode without a data dir).
    #[error("node not configured: {0}")]
    NotConfigured(String),
}

impl MountError {
    /// Wrap an I/O error with what we were doing.
    pub fn io(context: impl Into<String>, source: std::io::Error) -> MountError {
        MountError::Io {
            context: context.into(),
            source,
        }
    }

    /// Wrap a failed system call (nix errno) with what we were doing.
    pub fn sys(context: impl Into<String>, errno: nix::errno::Errno) -> MountError {
        MountError::Io {
            context: context.into(),
            source: std::io::Error::from(errno),
        }
    }
}
