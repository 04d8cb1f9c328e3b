//! ControllerModifyVolume: changing a volume's mutable parameters.

use std::collections::HashMap;

use csi_proto::v1::controller_service_capability::rpc::Type as ControllerRpc;
use csi_proto::v1::ControllerModifyVolumeRequest;
use tonic::Code;

use crate::check::Failure;
use crate::secrets::Secret;
use crate::{call, spec, Ctx, Need, Spec};

const GROUP: &str = "Controller::ControllerModifyVolume";

const MODIFY: Need = Need::ControllerCap(ControllerRpc::ModifyVolume);
const CREATE_DELETE: Need = Need::ControllerCap(ControllerRpc::CreateDeleteVolume);

/// A mutable parameter no driver supports: its key is in a domain reserved for this
/// harness, so a driver that accepts it accepts anything.
pub(crate) fn unsupported() -> HashMap<String, String> {
    HashMap::from([(
        "csi-sanity.invalid/unsupported-parameter".to_string(),
        "unsupported-value".to_string(),
    )])
}

async fn modify(
    ctx: &Ctx,
    volume_id: &str,
    params: HashMap<String, String>,
) -> crate::Call<csi_proto::v1::ControllerModifyVolumeResponse> {
    call!(
        ctx.controller(),
        controller_modify_volume,
        "ControllerModifyVolume",
        ControllerModifyVolumeRequest {
            volume_id: volume_id.to_string(),
            secrets: ctx.secrets(Secret::ControllerModifyVolume),
            mutable_parameters: params,
        }
    )
}

/// A test volume, created with the configured mutable parameters when `with_class`.
async fn volume(ctx: &Ctx, tag: &str, with_class: bool) -> Result<String, Failure> {
    let mut req = ctx.volume_request(&ctx.unique_name(tag));
    if with_class {
        req.mutable_parameters = ctx.config().mutable_parameters.clone();
    }
    Ok(ctx.create_volume_from(req).await?.volume_id)
}

pub fn specs() -> Vec<Spec> {
    vec![
        spec!(
            GROUP,
            "fails with INVALID_ARGUMENT when no volume id is given",
            "spec ControllerModifyVolume: volume_id is REQUIRED",
            [MODIFY],
            |ctx: Ctx| async move {
                modify(&ctx, "", ctx.config().mutable_parameters.clone()).await
                    .code(Code::InvalidArgument, "ControllerModifyVolume: volume_id is REQUIRED → INVALID_ARGUMENT")?;
                Ok(())
            }
        ),
        spec!(
            GROUP,
            "fails with NOT_FOUND for a volume that does not exist",
            "spec ControllerModifyVolume: \"Volume does not exist\" → 5 NOT_FOUND",
            [MODIFY],
            |ctx: Ctx| async move {
                modify(&ctx, &ctx.unknown_volume_id(), ctx.config().mutable_parameters.clone()).await
                    .code(Code::NotFound, "ControllerModifyVolume: an unknown volume → NOT_FOUND")?;
                Ok(())
            }
        ),
        spec!(
            GROUP,
            "fails with INVALID_ARGUMENT for unsupported mutable parameters",
            "spec ControllerModifyVolume: \"Parameters not supported\" → 3 INVALID_ARGUMENT, with nothing applied",
            [MODIFY, CREATE_DELETE],
            |ctx: Ctx| async move {
                let id = volume(&ctx, "modify-bad", false).await?;
                modify(&ctx, &id, unsupported()).await
                    .code(Code::InvalidArgument, "ControllerModifyVolume: unsupported mutable_parameters → INVALID_ARGUMENT")?;
                Ok(())
            }
        ),
        spec!(
            GROUP,
            "modifies a volume that was created without mutable parameters",
            "spec ControllerModifyVolume: supported mutable_parameters are applied to the volume",
            [MODIFY, CREATE_DELETE],
            |ctx: Ctx| async move {
                let id = volume(&ctx, "modify-plain", false).await?;
                modify(&ctx, &id, ctx.config().mutable_parameters.clone()).await
                    .ok("ControllerModifyVolume: the configured (supported) mutable_parameters MUST be accepted")?;
                Ok(())
            }
        ),
        spec!(
            GROUP,
            "modifies a volume that was created with mutable parameters",
            "spec ControllerModifyVolume: a volume created with a volume attributes class can be modified",
            [MODIFY, CREATE_DELETE],
            |ctx: Ctx| async move {
                let id = volume(&ctx, "modify-classed", true).await?;
                modify(&ctx, &id, ctx.config().mutable_parameters.clone()).await
                    .ok("ControllerModifyVolume: the configured (supported) mutable_parameters MUST be accepted")?;
                Ok(())
            }
        ),
        spec!(
            GROUP,
            "fails with INVALID_ARGUMENT for unsupported mutable parameters on a volume created with mutable parameters",
            "spec ControllerModifyVolume: \"Parameters not supported\" → 3 INVALID_ARGUMENT",
            [MODIFY, CREATE_DELETE],
            |ctx: Ctx| async move {
                let id = volume(&ctx, "modify-classed-bad", true).await?;
                modify(&ctx, &id, unsupported()).await
                    .code(Code::InvalidArgument, "ControllerModifyVolume: unsupported mutable_parameters → INVALID_ARGUMENT")?;
                Ok(())
            }
        ),
    ]
}
