//! ControllerPublishVolume and ControllerUnpublishVolume.

use csi_proto::v1::controller_service_capability::rpc::Type as ControllerRpc;
use csi_proto::v1::{
    ControllerPublishVolumeRequest, ControllerUnpublishVolumeRequest, DeleteVolumeRequest,
};
use tonic::Code;

use crate::check::{ensure_call, Failure, Stop};
use crate::secrets::Secret;
use crate::{call, spec, Ctx, Need, Spec};

const GROUP: &str = "Controller::ControllerPublishVolume";

const PUBLISH: Need = Need::ControllerCap(ControllerRpc::PublishUnpublishVolume);
const CREATE_DELETE: Need = Need::ControllerCap(ControllerRpc::CreateDeleteVolume);

/// A node id that exists, for specs that break another field: this node's when the
/// node service answers, else the configured second node, else an unknown one.
async fn existing_node_id(ctx: &Ctx) -> Result<String, Failure> {
    if ctx.caps().node_service {
        return ctx.node_id().await;
    }
    Ok(ctx
        .config()
        .second_node_id
        .clone()
        .unwrap_or_else(|| ctx.unknown_node_id()))
}

/// Create, publish, unpublish and delete one volume, each call made `repeats` times;
/// every repeat must succeed with the same answer.
async fn controller_lifecycle(ctx: &Ctx, repeats: u32) -> Result<(), Failure> {
    const RULE: &str = "spec: every Controller RPC is idempotent — a repeated call with the same arguments MUST succeed with the same result";
    let node_id = ctx.node_id().await?;
    let name = ctx.unique_name("lifecycle");
    let volume = ctx.create_volume(&name).await?;
    for i in 1..repeats {
        let c = ctx.create_volume_with(ctx.volume_request(&name)).await;
        let request = c.request.clone();
        let again = c
            .ok(RULE)
            .map_err(|f| f.during(format!("CreateVolume repeat {}", i + 1)))?;
        let id = again.volume.map(|v| v.volume_id).unwrap_or_default();
        ensure_call(
            id == volume.volume_id,
            "CreateVolume",
            &request,
            format!("the same volume {}", volume.volume_id),
            &id,
            RULE,
        )?;
    }

    let context = ctx.controller_publish(&volume, &node_id).await?;
    for i in 1..repeats {
        // ABORTED while the node is busy with another volume is retried, as a CO does.
        let req = ctx.controller_publish_request(&volume, &node_id);
        let c = ctx.as_co(|| ctx.controller_publish_with(req.clone())).await;
        let request = c.request.clone();
        let again = c
            .ok(RULE)
            .map_err(|f| f.during(format!("ControllerPublishVolume repeat {}", i + 1)))?;
        ensure_call(
            again.publish_context == context,
            "ControllerPublishVolume",
            &request,
            format!("the same publish_context {context:?}"),
            &again.publish_context,
            RULE,
        )?;
    }

    for i in 0..repeats.max(1) {
        let req = ControllerUnpublishVolumeRequest {
            volume_id: volume.volume_id.clone(),
            node_id: node_id.clone(),
            secrets: ctx.secrets(Secret::ControllerUnpublishVolume),
        };
        ctx.as_co(|| async {
            call!(ctx.controller(), controller_unpublish_volume, "ControllerUnpublishVolume", req.clone())
        })
        .await
        .ok("ControllerUnpublishVolume: unpublishing (again) MUST succeed; a volume that is not published → OK")
        .map_err(|f| f.during(format!("ControllerUnpublishVolume call {}", i + 1)))?;
    }
    ctx.tracker().forget(&crate::Resource::ControllerPublish {
        volume_id: volume.volume_id.clone(),
        node_id,
    });

    for i in 0..repeats.max(1) {
        call!(
            ctx.controller(),
            delete_volume,
            "DeleteVolume",
            DeleteVolumeRequest {
                volume_id: volume.volume_id.clone(),
                secrets: ctx.secrets(Secret::DeleteVolume),
            }
        )
        .ok("DeleteVolume: deleting (again) MUST succeed; an unknown volume → OK")
        .map_err(|f| f.during(format!("DeleteVolume call {}", i + 1)))?;
    }
    ctx.tracker().forget(&crate::Resource::Volume {
        id: volume.volume_id,
    });
    Ok(())
}

pub fn specs() -> Vec<Spec> {
    vec![
        spec!(
            GROUP,
            "fails with INVALID_ARGUMENT when no volume id is given",
            "spec ControllerPublishVolume: volume_id is REQUIRED",
            [PUBLISH],
            |ctx: Ctx| async move {
                call!(ctx.controller(), controller_publish_volume, "ControllerPublishVolume", ControllerPublishVolumeRequest {
                    volume_id: String::new(),
                    node_id: existing_node_id(&ctx).await?,
                    volume_capability: Some(ctx.default_capability()),
                    secrets: ctx.secrets(Secret::ControllerPublishVolume),
                    ..Default::default()
                })
                .code(Code::InvalidArgument, "ControllerPublishVolume: volume_id is REQUIRED → INVALID_ARGUMENT")?;
                Ok(())
            }
        ),
        spec!(
            GROUP,
            "fails with INVALID_ARGUMENT when no node id is given",
            "spec ControllerPublishVolume: node_id is REQUIRED",
            [PUBLISH, CREATE_DELETE],
            |ctx: Ctx| async move {
                let v = ctx.create_volume(&ctx.unique_name("publish-nonode")).await?;
                ctx.controller_publish_with(ctx.controller_publish_request(&v, "")).await
                    .code(Code::InvalidArgument, "ControllerPublishVolume: node_id is REQUIRED → INVALID_ARGUMENT")?;
                Ok(())
            }
        ),
        spec!(
            GROUP,
            "fails with INVALID_ARGUMENT when no volume capability is given",
            "spec ControllerPublishVolume: volume_capability is REQUIRED",
            [PUBLISH, CREATE_DELETE, Need::NodeService],
            |ctx: Ctx| async move {
                let v = ctx.create_volume(&ctx.unique_name("publish-nocap")).await?;
                let mut req = ctx.controller_publish_request(&v, &ctx.node_id().await?);
                req.volume_capability = None;
                ctx.controller_publish_with(req).await
                    .code(Code::InvalidArgument, "ControllerPublishVolume: volume_capability is REQUIRED → INVALID_ARGUMENT")?;
                Ok(())
            }
        ),
        spec!(
            GROUP,
            "fails with RESOURCE_EXHAUSTED when the node already has max_volumes_per_node volumes",
            "spec ControllerPublishVolume: \"Max volumes attached\" → 8 RESOURCE_EXHAUSTED; NodeGetInfo max_volumes_per_node",
            [PUBLISH, CREATE_DELETE, Need::NodeService, Need::AttachLimitTest],
            |ctx: Ctx| async move {
                let info = ctx.node_info().await?;
                let max = info.max_volumes_per_node;
                if max <= 0 {
                    return Err(Stop::skip("NodeGetInfo reports no max_volumes_per_node"));
                }
                if max > 64 {
                    return Err(Stop::skip(format!("max_volumes_per_node is {max}; the spec fills the node only up to 64 volumes")));
                }
                for i in 0..max {
                    let v = ctx.create_volume(&ctx.unique_name("limit")).await?;
                    ctx.controller_publish(&v, &info.node_id).await
                        .map_err(|f| f.during(format!("publishing volume {} of {max} (the node's limit)", i + 1)))?;
                }
                let extra = ctx.create_volume(&ctx.unique_name("limit-extra")).await?;
                ctx.controller_publish_with(ctx.controller_publish_request(&extra, &info.node_id)).await
                    .code(Code::ResourceExhausted, "ControllerPublishVolume: a node at its max_volumes_per_node → RESOURCE_EXHAUSTED")?;
                Ok(())
            }
        )
        // It fills the node: another spec's volume on it would be one too many, and one
        // waiting for a slot would wait for this spec, which waits for it.
        .alone(),
        spec!(
            GROUP,
            "fails with NOT_FOUND for a volume that does not exist",
            "spec ControllerPublishVolume: \"Volume does not exist\" → 5 NOT_FOUND",
            [PUBLISH, Need::NodeService],
            |ctx: Ctx| async move {
                call!(ctx.controller(), controller_publish_volume, "ControllerPublishVolume", ControllerPublishVolumeRequest {
                    volume_id: ctx.unknown_volume_id(),
                    node_id: ctx.node_id().await?,
                    volume_capability: Some(ctx.default_capability()),
                    secrets: ctx.secrets(Secret::ControllerPublishVolume),
                    ..Default::default()
                })
                .code(Code::NotFound, "ControllerPublishVolume: an unknown volume → NOT_FOUND")?;
                Ok(())
            }
        ),
        spec!(
            GROUP,
            "fails with NOT_FOUND for a node that does not exist",
            "spec ControllerPublishVolume: \"Node does not exist\" → 5 NOT_FOUND",
            [PUBLISH, CREATE_DELETE],
            |ctx: Ctx| async move {
                let v = ctx.create_volume(&ctx.unique_name("publish-nonode")).await?;
                ctx.controller_publish_with(ctx.controller_publish_request(&v, &ctx.unknown_node_id())).await
                    .code(Code::NotFound, "ControllerPublishVolume: an unknown node → NOT_FOUND")?;
                Ok(())
            }
        ),
        spec!(
            GROUP,
            "fails with ALREADY_EXISTS when the volume is already published to the node with another readonly setting",
            "spec ControllerPublishVolume: \"Volume published but is incompatible\" → 6 ALREADY_EXISTS",
            [PUBLISH, CREATE_DELETE, Need::NodeService, Need::ControllerCap(ControllerRpc::PublishReadonly)],
            |ctx: Ctx| async move {
                let v = ctx.create_volume(&ctx.unique_name("publish-incompatible")).await?;
                let node_id = ctx.node_id().await?;
                ctx.controller_publish(&v, &node_id).await?;
                let mut req = ctx.controller_publish_request(&v, &node_id);
                req.readonly = true;
                ctx.controller_publish_with(req).await
                    .code(Code::AlreadyExists, "ControllerPublishVolume: published to this node with a different readonly → ALREADY_EXISTS")?;
                Ok(())
            }
        ),
        spec!(
            GROUP,
            "ControllerUnpublishVolume fails with INVALID_ARGUMENT when no volume id is given",
            "spec ControllerUnpublishVolume: volume_id is REQUIRED",
            [PUBLISH],
            |ctx: Ctx| async move {
                call!(ctx.controller(), controller_unpublish_volume, "ControllerUnpublishVolume", ControllerUnpublishVolumeRequest {
                    volume_id: String::new(),
                    node_id: existing_node_id(&ctx).await?,
                    secrets: ctx.secrets(Secret::ControllerUnpublishVolume),
                })
                .code(Code::InvalidArgument, "ControllerUnpublishVolume: volume_id is REQUIRED → INVALID_ARGUMENT")?;
                Ok(())
            }
        ),
        spec!(
            GROUP,
            "a volume can be created, published to the node, unpublished and deleted",
            "spec: the controller half of the volume lifecycle: CreateVolume → ControllerPublishVolume → ControllerUnpublishVolume → DeleteVolume",
            [PUBLISH, CREATE_DELETE, Need::NodeService],
            |ctx: Ctx| async move {
                Ok(controller_lifecycle(&ctx, 1).await?)
            }
        ),
        spec!(
            GROUP,
            "every call of the controller lifecycle can be repeated with the same result",
            "spec: Controller RPCs are idempotent; a CO retries after timeouts",
            [PUBLISH, CREATE_DELETE, Need::NodeService, Need::IdempotentRepeats],
            |ctx: Ctx| async move {
                Ok(controller_lifecycle(&ctx, ctx.config().idempotent_count).await?)
            }
        ),
    ]
}
