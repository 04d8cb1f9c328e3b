//! ControllerExpandVolume.

use csi_proto::v1::controller_service_capability::rpc::Type as ControllerRpc;
use csi_proto::v1::{CapacityRange, ControllerExpandVolumeRequest};
use tonic::Code;

use crate::secrets::Secret;
use crate::{call, spec, Ctx, Need, Spec};

const GROUP: &str = "Controller::ControllerExpandVolume";

const EXPAND: Need = Need::ControllerCap(ControllerRpc::ExpandVolume);
const CREATE_DELETE: Need = Need::ControllerCap(ControllerRpc::CreateDeleteVolume);

pub fn specs() -> Vec<Spec> {
    vec![
        spec!(
            GROUP,
            "fails with INVALID_ARGUMENT when no volume id is given",
            "spec ControllerExpandVolume: volume_id is REQUIRED",
            [EXPAND],
            |ctx: Ctx| async move {
                call!(ctx.controller(), controller_expand_volume, "ControllerExpandVolume", ControllerExpandVolumeRequest {
                    volume_id: String::new(),
                    capacity_range: Some(CapacityRange { required_bytes: ctx.config().expand_to(), limit_bytes: 0 }),
                    secrets: ctx.secrets(Secret::ControllerExpandVolume),
                    volume_capability: Some(ctx.default_capability()),
                })
                .code(Code::InvalidArgument, "ControllerExpandVolume: volume_id is REQUIRED → INVALID_ARGUMENT")?;
                Ok(())
            }
        ),
        spec!(
            GROUP,
            "fails with INVALID_ARGUMENT when no capacity range is given",
            "spec ControllerExpandVolume: capacity_range is REQUIRED",
            [EXPAND, CREATE_DELETE],
            |ctx: Ctx| async move {
                let v = ctx.create_volume(&ctx.unique_name("expand-nocapacity")).await?;
                call!(ctx.controller(), controller_expand_volume, "ControllerExpandVolume", ControllerExpandVolumeRequest {
                    volume_id: v.volume_id.clone(),
                    capacity_range: None,
                    secrets: ctx.secrets(Secret::ControllerExpandVolume),
                    volume_capability: Some(ctx.default_capability()),
                })
                .code(Code::InvalidArgument, "ControllerExpandVolume: capacity_range is REQUIRED → INVALID_ARGUMENT")?;
                Ok(())
            }
        ),
        spec!(
            GROUP,
            "expands a volume to at least the requested capacity",
            "spec ControllerExpandVolume: capacity_bytes in the response is the new capacity, at least required_bytes",
            [EXPAND, CREATE_DELETE],
            |ctx: Ctx| async move {
                let v = ctx.create_volume(&ctx.unique_name("expand")).await?;
                Ok(crate::node::expand_on_controller(&ctx, &v.volume_id, ctx.config().expand_to()).await?)
            }
        ),
    ]
}
