//! What a request's volume capability asks of the node: a raw block device or a
//! filesystem with mount options, and an access mode.

use csi_proto::v1::volume_capability::access_mode::Mode;
use csi_proto::v1::volume_capability::AccessType;
use csi_proto::v1::VolumeCapability;

use crate::mount::fs::FsType;
use crate::mount::vfs::MountOptions;
use crate::mount::MountError;

/// What a volume capability asks of the node.
#[derive(Debug, Clone)]
pub(super) struct Capability {
    pub(super) access: Access,
    pub(super) mode: Mode,
}

#[derive(Debug, Clone)]
pub(super) enum Access {
    /// A raw block device at the target.
    Block,
    /// A filesystem, mounted with these options.
    Mount { fs: FsType, options: MountOptions },
}

impl Capability {
    /// Parse and check a request's capability.
    pub(super) fn parse(capability: Option<&VolumeCapability>) -> Result<Capability, MountError> {
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
    pub(super) fn reader_only(&self) -> bool {
        matches!(
            self.mode,
            Mode::SingleNodeReaderOnly | Mode::MultiNodeReaderOnly
        )
    }

    /// Modes that allow one publish target on this node only.
    pub(super) fn single_target(&self) -> bool {
        matches!(
            self.mode,
            Mode::SingleNodeWriter | Mode::SingleNodeSingleWriter | Mode::SingleNodeReaderOnly
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use csi_proto::v1::volume_capability;

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
