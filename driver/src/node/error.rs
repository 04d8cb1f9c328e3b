//! What can go wrong in a Node RPC beyond the mount layer's own errors; `status.rs` chooses
//! each one's code and message.

use crate::locks::LockError;
use crate::mount::MountError;

/// A Node RPC's failure.
#[derive(Debug, thiserror::Error)]
pub enum NodeError {
    /// The mount layer refused or failed.
    #[error(transparent)]
    Mount(#[from] MountError),
    /// Another operation holds the volume.
    #[error(transparent)]
    Lock(#[from] LockError),
    /// The task running the operation panicked or was cancelled: a bug, not the request's.
    #[error("{what} failed: {source}")]
    TaskFailed {
        what: &'static str,
        source: tokio::task::JoinError,
    },
    /// NodeGetInfo in a process started without a node id.
    #[error("this process has no node id")]
    NoNodeId,
}
