//! GroupController: volume group snapshots (gated on GROUP_CONTROLLER_SERVICE).

use csi_proto::v1::group_controller_service_capability::{self, rpc::Type as GroupRpc};
use csi_proto::v1::plugin_capability::service::Type as PluginService;
use csi_proto::v1::{
    CreateVolumeGroupSnapshotRequest, DeleteVolumeGroupSnapshotRequest,
    GetVolumeGroupSnapshotRequest, GroupControllerGetCapabilitiesRequest,
};
use tonic::Code;

use crate::check::ensure;
use crate::secrets::Secret;
use crate::{call, spec, Ctx, Need, Spec};

const GROUP: &str = "GroupController";

const SERVICE: Need = Need::PluginService(PluginService::GroupControllerService);
const GROUP_SNAPSHOTS: Need =
    Need::GroupControllerCap(GroupRpc::CreateDeleteGetVolumeGroupSnapshot);

/// A GetVolumeGroupSnapshot of `group_snapshot_id`, with the configured secrets.
fn get_request(ctx: &Ctx, group_snapshot_id: String) -> GetVolumeGroupSnapshotRequest {
    GetVolumeGroupSnapshotRequest {
        group_snapshot_id,
        snapshot_ids: vec![],
        secrets: ctx.secrets(Secret::GetVolumeGroupSnapshot),
    }
}

/// A DeleteVolumeGroupSnapshot of `group_snapshot_id`, with the configured secrets.
fn delete_request(ctx: &Ctx, group_snapshot_id: String) -> DeleteVolumeGroupSnapshotRequest {
    DeleteVolumeGroupSnapshotRequest {
        group_snapshot_id,
        snapshot_ids: vec![],
        secrets: ctx.secrets(Secret::DeleteVolumeGroupSnapshot),
    }
}

pub fn specs() -> Vec<Spec> {
    vec![
        spec!(
            GROUP,
            "GroupControllerGetCapabilities returns only known capability values",
            "spec GroupControllerGetCapabilities: each capability is a GroupControllerServiceCapability.RPC type defined by the spec",
            [SERVICE],
            |ctx: Ctx| async move {
                const RULE: &str = "GroupControllerGetCapabilities: every capability is a known RPC type (not UNKNOWN)";
                let c = call!(ctx.group_controller(), group_controller_get_capabilities, "GroupControllerGetCapabilities", GroupControllerGetCapabilitiesRequest {});
                let request = c.request.clone();
                let resp = c.ok(RULE)?;
                // Go fails an empty list (a plugin that serves GROUP_CONTROLLER_SERVICE
                // with nothing in it); the spec makes the list OPTIONAL, so full warns.
                let listed = crate::check::ensure_call(!resp.capabilities.is_empty(), "GroupControllerGetCapabilities", &request,
                    "at least one capability from a plugin that advertises GROUP_CONTROLLER_SERVICE", "an empty list",
                    "spec GroupControllerGetCapabilities: capabilities (OPTIONAL) lists what the group controller supports");
                if ctx.compat() {
                    listed?;
                } else {
                    ctx.should(listed);
                }
                for cap in &resp.capabilities {
                    let known = match &cap.r#type {
                        Some(group_controller_service_capability::Type::Rpc(rpc)) => matches!(
                            GroupRpc::try_from(rpc.r#type),
                            Ok(t) if t != GroupRpc::Unknown
                        ),
                        None => false,
                    };
                    ensure(known, "GroupControllerGetCapabilities", "a known RPC capability", cap, RULE)?;
                }
                Ok(())
            }
        ),
        spec!(
            GROUP,
            "CreateVolumeGroupSnapshot fails with INVALID_ARGUMENT when no name is given",
            "spec CreateVolumeGroupSnapshot: name is REQUIRED",
            [SERVICE, GROUP_SNAPSHOTS],
            |ctx: Ctx| async move {
                call!(ctx.group_controller(), create_volume_group_snapshot, "CreateVolumeGroupSnapshot", CreateVolumeGroupSnapshotRequest {
                    name: String::new(),
                    source_volume_ids: vec![ctx.unknown_volume_id()],
                    secrets: ctx.secrets(Secret::CreateVolumeGroupSnapshot),
                    parameters: ctx.config().snapshot_parameters.clone(),
                })
                .code(Code::InvalidArgument, "CreateVolumeGroupSnapshot: name is REQUIRED → INVALID_ARGUMENT")?;
                Ok(())
            }
        ),
        spec!(
            GROUP,
            "GetVolumeGroupSnapshot fails with INVALID_ARGUMENT when no group snapshot id is given",
            "spec GetVolumeGroupSnapshot: group_snapshot_id is REQUIRED",
            [SERVICE, GROUP_SNAPSHOTS],
            |ctx: Ctx| async move {
                call!(ctx.group_controller(), get_volume_group_snapshot, "GetVolumeGroupSnapshot", get_request(&ctx, String::new()))
                    .code(Code::InvalidArgument, "GetVolumeGroupSnapshot: group_snapshot_id is REQUIRED → INVALID_ARGUMENT")?;
                Ok(())
            }
        ),
        spec!(
            GROUP,
            "DeleteVolumeGroupSnapshot fails with INVALID_ARGUMENT when no group snapshot id is given",
            "spec DeleteVolumeGroupSnapshot: group_snapshot_id is REQUIRED",
            [SERVICE, GROUP_SNAPSHOTS],
            |ctx: Ctx| async move {
                call!(ctx.group_controller(), delete_volume_group_snapshot, "DeleteVolumeGroupSnapshot", delete_request(&ctx, String::new()))
                    .code(Code::InvalidArgument, "DeleteVolumeGroupSnapshot: group_snapshot_id is REQUIRED → INVALID_ARGUMENT")?;
                Ok(())
            }
        ),
        spec!(
            GROUP,
            "GetVolumeGroupSnapshot fails with NOT_FOUND for a group snapshot that does not exist",
            "spec GetVolumeGroupSnapshot: \"Volume group snapshot does not exist\" → 5 NOT_FOUND",
            [SERVICE, GROUP_SNAPSHOTS],
            |ctx: Ctx| async move {
                for id in ctx.unknown_volume_ids() {
                    call!(ctx.group_controller(), get_volume_group_snapshot, "GetVolumeGroupSnapshot", get_request(&ctx, id))
                        .code(Code::NotFound, "GetVolumeGroupSnapshot: an unknown group snapshot → NOT_FOUND")?;
                }
                Ok(())
            }
        ),
        spec!(
            GROUP,
            "DeleteVolumeGroupSnapshot succeeds for a group snapshot that does not exist",
            "spec DeleteVolumeGroupSnapshot: a group snapshot that does not exist → 0 OK",
            [SERVICE, GROUP_SNAPSHOTS],
            |ctx: Ctx| async move {
                for id in ctx.unknown_volume_ids() {
                    call!(ctx.group_controller(), delete_volume_group_snapshot, "DeleteVolumeGroupSnapshot", delete_request(&ctx, id))
                        .ok("DeleteVolumeGroupSnapshot: an unknown group snapshot MUST reply OK")?;
                }
                Ok(())
            }
        ),
    ]
}
