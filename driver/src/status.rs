//! The one place where layer errors become gRPC statuses: each code is chosen here,
//! deliberately, with a message that names what went wrong.

use tonic::{Code, Status};

use crate::cloud::CloudError;
use crate::controller::error::ControllerError;
use crate::identity::IdentityError;
use crate::locks::LockError;

/// Longest piece of a request echoed in an error message.
const MAX_ECHO_CHARS: usize = 64;

/// A request value quoted for an error message, cut short if long: a status message
/// travels in an HTTP/2 header, and input may be megabytes long.
pub fn shown(value: &str) -> String {
    match value.char_indices().nth(MAX_ECHO_CHARS) {
        None => format!("{value:?}"),
        Some((cut, _)) => format!("{:?}… ({} bytes)", &value[..cut], value.len()),
    }
}

/// The status for a cloud error. Handlers that give an error a meaning of their own (a
/// 404 that makes DeleteVolume succeed, say) match on it before falling back to this.
pub fn cloud_status(err: &CloudError) -> Status {
    let code = match err {
        CloudError::NotFound { .. } => Code::NotFound,
        // Same name, and the caller did not recognise the volume as its own.
        CloudError::NameInUse { .. } => Code::AlreadyExists,
        // Attached or attaching: the caller must detach first.
        CloudError::VolumeInUse { .. }
        | CloudError::AlreadyAttached { .. }
        | CloudError::AttachmentNotFound { .. } => Code::FailedPrecondition,
        // The cloud runs one action at a time per droplet: the CO retries.
        CloudError::PendingEvent { .. } => Code::Aborted,
        CloudError::DropletLimit { .. } | CloudError::QuotaExceeded { .. } => {
            Code::ResourceExhausted
        }
        CloudError::Invalid { .. } => Code::InvalidArgument,
        // Transient: the CO retries with backoff.
        CloudError::RateLimited { .. } | CloudError::Transport { .. } => Code::Unavailable,
        CloudError::Api { status, .. } if *status >= 500 => Code::Unavailable,
        // The driver's own credentials, not the request's secrets: not UNAUTHENTICATED.
        CloudError::Unauthorized { .. } | CloudError::Api { .. } => Code::Internal,
        CloudError::Timeout { .. } => Code::DeadlineExceeded,
        CloudError::ActionErrored { .. } => Code::Internal,
    };
    Status::new(code, err.to_string())
}

impl From<CloudError> for Status {
    fn from(err: CloudError) -> Status {
        cloud_status(&err)
    }
}

// ---- Controller ----

/// The status for a Controller error.
pub fn controller_status(err: &ControllerError) -> Status {
    use ControllerError as E;
    let code = match err {
        E::Cloud(cloud) => return cloud_status(cloud),
        E::Lock(lock) => return lock_status(lock),
        E::Missing { .. }
        | E::TooLong { .. }
        | E::MapTooLarge { .. }
        | E::UnsupportedCapability { .. }
        | E::Parameters(_)
        | E::NegativeCapacity
        | E::ReadOnlyUnsupported
        | E::NegativeMaxEntries { .. }
        // The request asks for two regions at once.
        | E::RegionDiffersFromSource { .. } => Code::InvalidArgument,
        // spec: a token the plugin did not issue is ABORTED.
        E::ForeignToken { .. } => Code::Aborted,
        E::RequiredOverLimit { .. }
        | E::LimitBelowSmallest { .. }
        | E::OverLargest { .. }
        | E::NoWholeGib { .. }
        | E::SourceOverLimit { .. } => Code::OutOfRange,
        // spec: a topology that can't be met is RESOURCE_EXHAUSTED.
        E::NoKnownTopology
        | E::RegionOutsideRequisite { .. }
        | E::RegionUnavailable { .. }
        | E::TopologyUnavailable { .. }
        | E::NodeFull { .. }
        | E::CannotGrow { .. } => Code::ResourceExhausted,
        E::VolumeNotFound { .. }
        | E::SnapshotNotFound { .. }
        | E::SourceSnapshotNotFound { .. }
        | E::SourceVolumeNotFound { .. }
        | E::SourceGone { .. }
        | E::NodeNotFound { .. } => Code::NotFound,
        E::VolumeExists { .. } | E::SnapshotExists { .. } | E::PublishedReadWrite { .. } => {
            Code::AlreadyExists
        }
        // The volume's state (or the process's role) forbids it; retrying as is fails.
        E::StillPublished { .. }
        | E::VolumeInUse { .. }
        | E::SnapshotInUse { .. }
        | E::AttachedElsewhere { .. }
        | E::AttachingElsewhere { .. }
        | E::NoCloud => Code::FailedPrecondition,
        // Transient: the CO retries.
        E::DropletBusy { .. } | E::KeptChanging { .. } => Code::Aborted,
    };
    Status::new(code, err.to_string())
}

impl From<ControllerError> for Status {
    fn from(err: ControllerError) -> Status {
        controller_status(&err)
    }
}

impl From<crate::controller::params::ParamError> for Status {
    fn from(err: crate::controller::params::ParamError) -> Status {
        controller_status(&ControllerError::Parameters(err))
    }
}

/// The status for a lock refused: the CO retries later.
pub fn lock_status(err: &LockError) -> Status {
    match err {
        LockError::Busy { .. } | LockError::TurnTooLate { .. } => {
            Status::new(Code::Aborted, err.to_string())
        }
    }
}

impl From<LockError> for Status {
    fn from(err: LockError) -> Status {
        lock_status(&err)
    }
}

impl From<IdentityError> for Status {
    fn from(err: IdentityError) -> Status {
        let code = match err {
            // Probe's answer when the plugin can't serve yet.
            IdentityError::NotReady { .. } => Code::FailedPrecondition,
        };
        Status::new(code, err.to_string())
    }
}

// ---- Node: mount-layer errors ----

/// The status for a node (mount layer) error.
pub fn mount_status(err: &crate::mount::MountError) -> Status {
    use crate::mount::MountError as E;
    let code = match err {
        E::MissingField { .. } | E::InvalidField { .. } => Code::InvalidArgument,
        E::VolumeNotFound { .. } | E::DeviceNotFound { .. } | E::NotMounted { .. } => {
            Code::NotFound
        }
        // spec: staged or published at this path, but differently.
        E::Conflict { .. } => Code::AlreadyExists,
        // The node's state (or the CO's order of calls) forbids it; retrying as is fails.
        E::FilesystemMismatch { .. }
        | E::UnrecognisedData { .. }
        | E::NotStaged { .. }
        | E::PublishedElsewhere { .. }
        | E::InUse { .. }
        | E::Busy { .. }
        | E::UnusablePath { .. }
        | E::CannotGrow { .. }
        | E::NotConfigured(_) => Code::FailedPrecondition,
        // A tool the node needs is not installed.
        E::Spawn { source, .. } if source.kind() == std::io::ErrorKind::NotFound => {
            Code::FailedPrecondition
        }
        E::Timeout { .. } => Code::DeadlineExceeded,
        E::Command { .. } | E::Spawn { .. } | E::Io { .. } | E::MountTable { .. } => Code::Internal,
    };
    Status::new(code, err.to_string())
}

impl From<crate::mount::MountError> for Status {
    fn from(err: crate::mount::MountError) -> Status {
        mount_status(&err)
    }
}

impl From<crate::node::error::NodeError> for Status {
    fn from(err: crate::node::error::NodeError) -> Status {
        use crate::node::error::NodeError as E;
        match err {
            E::Mount(err) => mount_status(&err),
            E::Lock(err) => lock_status(&err),
            // A panicked or cancelled task is our bug, never the request's.
            E::TaskFailed { .. } => Status::new(Code::Internal, err.to_string()),
            // NodeGetInfo from a process that serves no node: the deployment, not the
            // request, must change.
            E::NoNodeId => Status::new(Code::FailedPrecondition, err.to_string()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cloud_errors_map_to_the_codes_the_spec_expects() {
        let cases = [
            (CloudError::from_api(404, "x"), Code::NotFound),
            (
                CloudError::from_api(409, "name in use"),
                Code::AlreadyExists,
            ),
            (
                CloudError::from_api(409, "attached volume cannot be deleted"),
                Code::FailedPrecondition,
            ),
            (
                CloudError::from_api(422, "Droplet already has a pending event"),
                Code::Aborted,
            ),
            (
                CloudError::from_api(422, "cannot attach more volumes to the Droplet"),
                Code::ResourceExhausted,
            ),
            (CloudError::from_api(503, "down"), Code::Unavailable),
            (
                CloudError::RateLimited { retry_after: None },
                Code::Unavailable,
            ),
            (
                CloudError::Timeout { what: "w".into() },
                Code::DeadlineExceeded,
            ),
        ];
        for (err, code) in cases {
            let status = Status::from(err.clone());
            assert_eq!(status.code(), code, "{err}");
            assert_eq!(status.message(), err.to_string());
        }
        let errored = CloudError::ActionErrored {
            action_id: 3,
            kind: "attach_volume".into(),
            volume_id: "v".into(),
            reason: "injected fault".into(),
        };
        let status = cloud_status(&errored);
        assert_eq!(status.code(), Code::Internal);
        assert!(status.message().contains("injected fault"));
    }
}
