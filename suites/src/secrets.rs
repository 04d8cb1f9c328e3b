//! Per-RPC secrets, keyed like csi-sanity's secrets file (`--csi.secrets`).

use std::collections::HashMap;

/// The RPCs that carry secrets, each with its key in the secrets file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Secret {
    CreateVolume,
    DeleteVolume,
    ControllerPublishVolume,
    ControllerUnpublishVolume,
    ControllerValidateVolumeCapabilities,
    NodeStageVolume,
    NodePublishVolume,
    CreateSnapshot,
    DeleteSnapshot,
    ListSnapshots,
    GetSnapshot,
    ControllerExpandVolume,
    ControllerModifyVolume,
    NodeExpandVolume,
    CreateVolumeGroupSnapshot,
    DeleteVolumeGroupSnapshot,
    GetVolumeGroupSnapshot,
}

impl Secret {
    /// The key in the secrets file, e.g. `CreateVolumeSecret`. The first eleven are
    /// csi-sanity's; the rest follow the same pattern.
    pub fn key(&self) -> &'static str {
        match self {
            Secret::CreateVolume => "CreateVolumeSecret",
            Secret::DeleteVolume => "DeleteVolumeSecret",
            Secret::ControllerPublishVolume => "ControllerPublishVolumeSecret",
            Secret::ControllerUnpublishVolume => "ControllerUnpublishVolumeSecret",
            Secret::ControllerValidateVolumeCapabilities => {
                "ControllerValidateVolumeCapabilitiesSecret"
            }
            Secret::NodeStageVolume => "NodeStageVolumeSecret",
            Secret::NodePublishVolume => "NodePublishVolumeSecret",
            Secret::CreateSnapshot => "CreateSnapshotSecret",
            Secret::DeleteSnapshot => "DeleteSnapshotSecret",
            Secret::ListSnapshots => "ListSnapshotsSecret",
            Secret::GetSnapshot => "GetSnapshotSecret",
            Secret::ControllerExpandVolume => "ControllerExpandVolumeSecret",
            Secret::ControllerModifyVolume => "ControllerModifyVolumeSecret",
            Secret::NodeExpandVolume => "NodeExpandVolumeSecret",
            Secret::CreateVolumeGroupSnapshot => "CreateVolumeGroupSnapshotSecret",
            Secret::DeleteVolumeGroupSnapshot => "DeleteVolumeGroupSnapshotSecret",
            Secret::GetVolumeGroupSnapshot => "GetVolumeGroupSnapshotSecret",
        }
    }

    /// The secrets `file` (keyed like csi-sanity's, [`Secret::key`]) holds for this RPC;
    /// empty when it holds none.
    pub fn in_file(
        self,
        file: &HashMap<String, HashMap<String, String>>,
    ) -> HashMap<String, String> {
        file.get(self.key()).cloned().unwrap_or_default()
    }

    /// Every key, for validating a secrets file.
    pub const ALL: &'static [Secret] = &[
        Secret::CreateVolume,
        Secret::DeleteVolume,
        Secret::ControllerPublishVolume,
        Secret::ControllerUnpublishVolume,
        Secret::ControllerValidateVolumeCapabilities,
        Secret::NodeStageVolume,
        Secret::NodePublishVolume,
        Secret::CreateSnapshot,
        Secret::DeleteSnapshot,
        Secret::ListSnapshots,
        Secret::GetSnapshot,
        Secret::ControllerExpandVolume,
        Secret::ControllerModifyVolume,
        Secret::NodeExpandVolume,
        Secret::CreateVolumeGroupSnapshot,
        Secret::DeleteVolumeGroupSnapshot,
        Secret::GetVolumeGroupSnapshot,
    ];
}
