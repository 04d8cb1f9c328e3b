//! CreateVolume, DeleteVolume and ValidateVolumeCapabilities.

use std::collections::HashMap;

use csi_proto::v1::controller_service_capability::rpc::Type as ControllerRpc;
use csi_proto::v1::volume_content_source::{self, SnapshotSource, VolumeSource};
use csi_proto::v1::{
    CapacityRange, CreateVolumeRequest, CreateVolumeResponse, DeleteVolumeRequest,
    ValidateVolumeCapabilitiesRequest, Volume, VolumeContentSource,
};
use tonic::Code;

use crate::check::{ensure_call, Call, Failure, Stop};
use crate::secrets::Secret;
use crate::{call, spec, Ctx, Need, Spec};

const CREATE: &str = "Controller::CreateVolume";
const DELETE: &str = "Controller::DeleteVolume";
const VALIDATE: &str = "Controller::ValidateVolumeCapabilities";

const CREATE_DELETE: Need = Need::ControllerCap(ControllerRpc::CreateDeleteVolume);
const SNAPSHOTS: Need = Need::ControllerCap(ControllerRpc::CreateDeleteSnapshot);
const CLONE: Need = Need::ControllerCap(ControllerRpc::CloneVolume);
const MODIFY: Need = Need::ControllerCap(ControllerRpc::ModifyVolume);

/// The volume of a successful CreateVolume, or a failure naming the request.
fn volume_of(c: Call<CreateVolumeResponse>, rule: &str) -> Result<Volume, Failure> {
    let request = c.request.clone();
    let resp = c.ok(rule)?;
    match resp.volume {
        Some(v) if !v.volume_id.is_empty() => Ok(v),
        other => Err(Failure::about(
            "CreateVolume",
            &request,
            "a volume with a non-empty volume_id",
            other,
            rule,
        )),
    }
}

/// Create with a capacity of `bytes` and check the volume has at least that much (or
/// reports it as unknown, 0). A driver that can't make that size (OUT_OF_RANGE) makes
/// the spec not apply.
async fn create_with_capacity(ctx: &Ctx, name: &str, bytes: i64) -> Result<Volume, Stop> {
    const RULE: &str = "spec CreateVolume: the volume MUST be at least capacity_range.required_bytes (capacity_bytes 0 means unknown)";
    let mut req = ctx.volume_request(name);
    req.capacity_range = Some(CapacityRange {
        required_bytes: bytes,
        limit_bytes: 0,
    });
    let c = ctx.create_volume_with(req).await;
    if c.status_code() == Code::OutOfRange
        || (ctx.compat() && c.status_code() == Code::Unimplemented)
    {
        return Err(Stop::skip(format!(
            "the driver can't create a volume of {bytes} bytes (OUT_OF_RANGE)"
        )));
    }
    let request = c.request.clone();
    let v = volume_of(c, RULE)?;
    ensure_call(
        v.capacity_bytes == 0 || v.capacity_bytes >= bytes,
        "CreateVolume",
        &request,
        format!("capacity_bytes >= {bytes} (or 0, unknown)"),
        v.capacity_bytes,
        RULE,
    )?;
    Ok(v)
}

fn with_source(
    mut req: CreateVolumeRequest,
    source: volume_content_source::Type,
) -> CreateVolumeRequest {
    req.volume_content_source = Some(VolumeContentSource {
        r#type: Some(source),
    });
    req
}

/// The source a created volume reports must be the one asked for, when it reports one.
fn check_source(
    ctx: &Ctx,
    v: &Volume,
    request: &str,
    want: &volume_content_source::Type,
    rule: &str,
) -> Result<(), Failure> {
    match v.content_source.as_ref().and_then(|s| s.r#type.as_ref()) {
        None => {
            // The spec makes Volume.content_source OPTIONAL, but Kubernetes'
            // external-provisioner refuses a volume made from a data source that does
            // not report one, and the Go csi-sanity fails it for a snapshot source.
            let missing = Failure::about("CreateVolume", request, format!("content_source {want:?}"),
                "no content_source in the response",
                "spec Volume.content_source (OPTIONAL): a CO such as Kubernetes relies on it to confirm the volume was pre-populated");
            if ctx.compat() {
                return match want {
                    volume_content_source::Type::Snapshot(_) => Err(missing),
                    _ => Ok(()),
                };
            }
            ctx.warn(missing);
            Ok(())
        }
        Some(got) => ensure_call(
            got == want,
            "CreateVolume",
            request,
            format!("content_source {want:?}"),
            got,
            rule,
        ),
    }
}

pub fn specs() -> Vec<Spec> {
    let mut specs = create_specs();
    specs.extend(delete_specs());
    specs.extend(validate_specs());
    specs
}

fn create_specs() -> Vec<Spec> {
    vec![
        spec!(
            CREATE,
            "fails with INVALID_ARGUMENT when no name is given",
            "spec CreateVolume: name is REQUIRED",
            [CREATE_DELETE],
            |ctx: Ctx| async move {
                let mut req = ctx.volume_request("");
                req.name.clear();
                ctx.create_volume_with(req).await
                    .code(Code::InvalidArgument, "CreateVolume: name is REQUIRED; a missing required field → INVALID_ARGUMENT")?;
                Ok(())
            }
        ),
        spec!(
            CREATE,
            "fails with INVALID_ARGUMENT when no volume capabilities are given",
            "spec CreateVolume: volume_capabilities is REQUIRED (at least one)",
            [CREATE_DELETE],
            |ctx: Ctx| async move {
                let mut req = ctx.volume_request(&ctx.unique_name("nocaps"));
                req.volume_capabilities.clear();
                ctx.create_volume_with(req).await
                    .code(Code::InvalidArgument, "CreateVolume: volume_capabilities is REQUIRED; an empty list → INVALID_ARGUMENT")?;
                Ok(())
            }
        ),
        spec!(
            CREATE,
            "creates a volume when no capacity is given",
            "spec CreateVolume: capacity_range is OPTIONAL; without it the plugin MAY choose a size",
            [CREATE_DELETE],
            |ctx: Ctx| async move {
                let mut req = ctx.volume_request(&ctx.unique_name("nocapacity"));
                // Go's "NoCapacity" spec still sends the configured capacity (upstream keeps
                // it so as not to break existing drivers); the full profile leaves it out.
                if !ctx.compat() {
                    req.capacity_range = None;
                }
                volume_of(ctx.create_volume_with(req).await, "CreateVolume: capacity_range is OPTIONAL; a request without it MUST succeed")?;
                Ok(())
            }
        ),
        spec!(
            CREATE,
            "creates a volume of at least the requested capacity",
            "spec CreateVolume: the created volume MUST have at least required_bytes",
            [CREATE_DELETE],
            |ctx: Ctx| async move {
                let size = ctx.config().volume_size;
                create_with_capacity(&ctx, &ctx.unique_name("capacity"), size).await?;
                Ok(())
            }
        ),
        spec!(
            CREATE,
            "returns the same volume when asked again with the same name and capacity",
            "spec CreateVolume: idempotent — same name and compatible arguments → OK with the existing volume",
            [CREATE_DELETE],
            |ctx: Ctx| async move {
                const RULE: &str = "CreateVolume: a repeated request with the same name and arguments MUST return OK and the same volume";
                let name = ctx.unique_name("same");
                let size = ctx.config().volume_size;
                let first = create_with_capacity(&ctx, &name, size).await?;
                let mut req = ctx.volume_request(&name);
                req.capacity_range = Some(CapacityRange { required_bytes: size, limit_bytes: 0 });
                let c = ctx.create_volume_with(req).await;
                let request = c.request.clone();
                let second = volume_of(c, RULE)?;
                ensure_call(second.volume_id == first.volume_id, "CreateVolume", &request,
                    format!("the same volume_id {}", first.volume_id), &second.volume_id, RULE)?;
                Ok(ensure_call(second.capacity_bytes == first.capacity_bytes, "CreateVolume", &request,
                    format!("the same capacity_bytes {}", first.capacity_bytes), second.capacity_bytes, RULE)?)
            }
        ),
        spec!(
            CREATE,
            "fails with ALREADY_EXISTS when the name exists with a different capacity",
            "spec CreateVolume: same name but incompatible capacity → 6 ALREADY_EXISTS",
            [CREATE_DELETE],
            |ctx: Ctx| async move {
                let name = ctx.unique_name("conflict");
                let size = ctx.config().volume_size;
                // Required equal to limit, as Go asks: the volume is exactly that size.
                let mut req = ctx.volume_request(&name);
                req.capacity_range = Some(CapacityRange { required_bytes: size, limit_bytes: size });
                let c = ctx.create_volume_with(req).await;
                let request = c.request.clone();
                let first = volume_of(c, "spec CreateVolume: a volume of exactly required_bytes = limit_bytes MUST be created")?;
                if first.capacity_bytes == 0 {
                    return Err(Stop::skip("the driver reports capacity 0 (unknown), so a different capacity can't be judged"));
                }
                ensure_call(first.capacity_bytes == size, "CreateVolume", &request, format!("capacity_bytes == {size} (required_bytes = limit_bytes)"),
                    first.capacity_bytes, "spec CreateVolume: the volume's capacity MUST be within capacity_range: at least required_bytes and at most limit_bytes")?;
                let mut req = ctx.volume_request(&name);
                // Twice the size (and at least 1 GiB more than what was made), so a
                // driver that rounds up can't call the two compatible.
                let other = (size * 2).max(first.capacity_bytes + (1 << 30));
                req.capacity_range = Some(CapacityRange { required_bytes: other, limit_bytes: other });
                ctx.create_volume_with(req).await
                    .code(Code::AlreadyExists, "CreateVolume: a volume with this name exists but with an incompatible capacity → ALREADY_EXISTS")?;
                Ok(())
            }
        ),
        spec!(
            CREATE,
            "accepts a name of the maximum length, 128 bytes",
            "spec: string fields SHALL be at most 128 bytes; a plugin MUST accept names up to that length",
            [CREATE_DELETE],
            |ctx: Ctx| async move {
                let name = ctx.unique_name_of_len(128);
                let req = ctx.volume_request(&name);
                let size = req.capacity_range.as_ref().map(|r| r.required_bytes).unwrap_or_default();
                let c = ctx.create_volume_with(req).await;
                let request = c.request.clone();
                let v = volume_of(c, "CreateVolume: a name of 128 bytes is within the spec's size limit and MUST be accepted")?;
                Ok(ensure_call(v.capacity_bytes == 0 || v.capacity_bytes >= size, "CreateVolume", &request,
                    format!("capacity_bytes >= {size} (or 0, unknown)"), v.capacity_bytes,
                    "spec CreateVolume: the volume MUST be at least capacity_range.required_bytes")?)
            }
        ),
        spec!(
            CREATE,
            "creates a volume from an existing snapshot",
            "spec CreateVolume: volume_content_source.snapshot pre-populates the volume from the snapshot",
            [CREATE_DELETE, SNAPSHOTS],
            |ctx: Ctx| async move {
                const RULE: &str = "CreateVolume: with CREATE_DELETE_SNAPSHOT, a volume can be created from a ready snapshot";
                let source = ctx.create_volume(&ctx.unique_name("snap-source")).await?;
                let snap = ctx.create_ready_snapshot(&ctx.unique_name("snap"), &source.volume_id).await?;
                let src = volume_content_source::Type::Snapshot(SnapshotSource { snapshot_id: snap.snapshot_id.clone() });
                let req = with_source(ctx.volume_request(&ctx.unique_name("from-snap")), src.clone());
                let c = ctx.create_volume_with(req).await;
                let request = c.request.clone();
                let v = volume_of(c, RULE)?;
                Ok(check_source(&ctx, &v, &request, &src, "CreateVolume: a volume created from a snapshot reports that snapshot as its content_source")?)
            }
        ),
        spec!(
            CREATE,
            "fails with NOT_FOUND when the source snapshot does not exist",
            "spec CreateVolume: \"source incompatible or not found\" → 5 NOT_FOUND",
            [CREATE_DELETE, SNAPSHOTS],
            |ctx: Ctx| async move {
                let src = volume_content_source::Type::Snapshot(SnapshotSource { snapshot_id: ctx.unknown_snapshot_id() });
                let req = with_source(ctx.volume_request(&ctx.unique_name("missing-snap")), src);
                ctx.create_volume_with(req).await
                    .code(Code::NotFound, "CreateVolume: the source snapshot does not exist → NOT_FOUND")?;
                Ok(())
            }
        ),
        spec!(
            CREATE,
            "creates a volume cloned from an existing volume",
            "spec CreateVolume: volume_content_source.volume clones an existing volume (CLONE_VOLUME)",
            [CREATE_DELETE, CLONE],
            |ctx: Ctx| async move {
                const RULE: &str = "CreateVolume: with CLONE_VOLUME, a volume can be created from an existing volume";
                let source = ctx.create_volume(&ctx.unique_name("clone-source")).await?;
                let src = volume_content_source::Type::Volume(VolumeSource { volume_id: source.volume_id.clone() });
                let req = with_source(ctx.volume_request(&ctx.unique_name("clone")), src.clone());
                let c = ctx.create_volume_with(req).await;
                let request = c.request.clone();
                let v = volume_of(c, RULE)?;
                Ok(check_source(&ctx, &v, &request, &src, "CreateVolume: a cloned volume reports its source volume as content_source")?)
            }
        ),
        spec!(
            CREATE,
            "fails with NOT_FOUND when the source volume does not exist",
            "spec CreateVolume: \"source incompatible or not found\" → 5 NOT_FOUND",
            [CREATE_DELETE, CLONE],
            |ctx: Ctx| async move {
                let src = volume_content_source::Type::Volume(VolumeSource { volume_id: ctx.unknown_volume_id() });
                let req = with_source(ctx.volume_request(&ctx.unique_name("missing-clone")), src);
                ctx.create_volume_with(req).await
                    .code(Code::NotFound, "CreateVolume: the source volume does not exist → NOT_FOUND")?;
                Ok(())
            }
        ),
        spec!(
            CREATE,
            "creates a volume with the configured mutable parameters",
            "spec CreateVolume: mutable_parameters (a volume attributes class) are applied at creation (MODIFY_VOLUME)",
            [CREATE_DELETE, MODIFY],
            |ctx: Ctx| async move {
                let mut req = ctx.volume_request(&ctx.unique_name("mutable"));
                req.mutable_parameters = ctx.config().mutable_parameters.clone();
                volume_of(ctx.create_volume_with(req).await,
                    "CreateVolume: with MODIFY_VOLUME, supported mutable_parameters MUST be accepted at creation")?;
                Ok(())
            }
        ),
        spec!(
            CREATE,
            "fails with INVALID_ARGUMENT for unsupported mutable parameters",
            "spec CreateVolume: mutable_parameters the plugin does not support → 3 INVALID_ARGUMENT",
            [CREATE_DELETE, MODIFY],
            |ctx: Ctx| async move {
                let mut req = ctx.volume_request(&ctx.unique_name("bad-mutable"));
                req.mutable_parameters = crate::modify::unsupported();
                ctx.create_volume_with(req).await
                    .code(Code::InvalidArgument, "CreateVolume: unsupported mutable_parameters → INVALID_ARGUMENT")?;
                Ok(())
            }
        ),
    ]
}

fn delete_specs() -> Vec<Spec> {
    vec![
        spec!(
            DELETE,
            "fails with INVALID_ARGUMENT when no volume id is given",
            "spec DeleteVolume: volume_id is REQUIRED",
            [CREATE_DELETE],
            |ctx: Ctx| async move {
                call!(ctx.controller(), delete_volume, "DeleteVolume", DeleteVolumeRequest {
                    volume_id: String::new(),
                    secrets: ctx.secrets(Secret::DeleteVolume),
                })
                .code(Code::InvalidArgument, "DeleteVolume: volume_id is REQUIRED → INVALID_ARGUMENT")?;
                Ok(())
            }
        ),
        spec!(
            DELETE,
            "succeeds for a volume id that does not exist",
            "spec DeleteVolume: \"If a volume corresponding to the specified volume_id does not exist or the artifacts associated with the volume do not exist anymore, the Plugin MUST reply 0 OK\"",
            [CREATE_DELETE],
            |ctx: Ctx| async move {
                for volume_id in ctx.unknown_volume_ids() {
                    call!(ctx.controller(), delete_volume, "DeleteVolume", DeleteVolumeRequest {
                        volume_id,
                        secrets: ctx.secrets(Secret::DeleteVolume),
                    })
                    .ok("DeleteVolume: an unknown volume id MUST reply OK (it is idempotent)")?;
                }
                Ok(())
            }
        ),
        spec!(
            DELETE,
            "deletes an existing volume, and a second delete succeeds too",
            "spec DeleteVolume: deletes the volume; a repeated call is idempotent and replies OK",
            [CREATE_DELETE],
            |ctx: Ctx| async move {
                let v = ctx.create_volume(&ctx.unique_name("delete")).await?;
                ctx.delete_volume(&v.volume_id).await?;
                call!(ctx.controller(), delete_volume, "DeleteVolume", DeleteVolumeRequest {
                    volume_id: v.volume_id.clone(),
                    secrets: ctx.secrets(Secret::DeleteVolume),
                })
                .ok("DeleteVolume: deleting an already deleted volume MUST reply OK")?;
                Ok(())
            }
        ),
    ]
}

fn validate_specs() -> Vec<Spec> {
    vec![
        spec!(
            VALIDATE,
            "fails with INVALID_ARGUMENT when no volume id is given",
            "spec ValidateVolumeCapabilities: volume_id is REQUIRED",
            [Need::PluginService(csi_proto::v1::plugin_capability::service::Type::ControllerService)],
            |ctx: Ctx| async move {
                call!(ctx.controller(), validate_volume_capabilities, "ValidateVolumeCapabilities", ValidateVolumeCapabilitiesRequest {
                    volume_id: String::new(),
                    volume_capabilities: vec![ctx.default_capability()],
                    secrets: ctx.secrets(Secret::ControllerValidateVolumeCapabilities),
                    ..Default::default()
                })
                .code(Code::InvalidArgument, "ValidateVolumeCapabilities: volume_id is REQUIRED → INVALID_ARGUMENT")?;
                Ok(())
            }
        ),
        spec!(
            VALIDATE,
            "fails with INVALID_ARGUMENT when no capabilities are given",
            "spec ValidateVolumeCapabilities: volume_capabilities is REQUIRED (at least one)",
            [CREATE_DELETE],
            |ctx: Ctx| async move {
                let v = ctx.create_volume(&ctx.unique_name("validate-nocaps")).await?;
                call!(ctx.controller(), validate_volume_capabilities, "ValidateVolumeCapabilities", ValidateVolumeCapabilitiesRequest {
                    volume_id: v.volume_id.clone(),
                    volume_context: v.volume_context.clone(),
                    volume_capabilities: vec![],
                    parameters: ctx.config().volume_parameters.clone(),
                    secrets: ctx.secrets(Secret::ControllerValidateVolumeCapabilities),
                    mutable_parameters: HashMap::new(),
                })
                .code(Code::InvalidArgument, "ValidateVolumeCapabilities: volume_capabilities is REQUIRED → INVALID_ARGUMENT")?;
                Ok(())
            }
        ),
        spec!(
            VALIDATE,
            "confirms the capabilities a volume was created with",
            "spec ValidateVolumeCapabilities: confirmed is set when every requested capability is supported",
            [CREATE_DELETE],
            |ctx: Ctx| async move {
                const RULE: &str = "ValidateVolumeCapabilities: the capabilities a volume was created with are supported, so `confirmed` MUST be set and list them";
                let v = ctx.create_volume(&ctx.unique_name("validate")).await?;
                let cap = ctx.default_capability();
                let c = call!(ctx.controller(), validate_volume_capabilities, "ValidateVolumeCapabilities", ValidateVolumeCapabilitiesRequest {
                    volume_id: v.volume_id.clone(),
                    volume_context: v.volume_context.clone(),
                    volume_capabilities: vec![cap.clone()],
                    parameters: ctx.config().volume_parameters.clone(),
                    secrets: ctx.secrets(Secret::ControllerValidateVolumeCapabilities),
                    mutable_parameters: HashMap::new(),
                });
                let request = c.request.clone();
                let resp = c.ok(RULE)?;
                let confirmed = resp.confirmed.as_ref();
                Ok(ensure_call(
                    confirmed.is_some_and(|c| c.volume_capabilities.contains(&cap)),
                    "ValidateVolumeCapabilities",
                    &request,
                    format!("confirmed, listing {cap:?}"),
                    &resp,
                    RULE,
                )?)
            }
        ),
        spec!(
            VALIDATE,
            "fails with NOT_FOUND for a volume that does not exist",
            "spec ValidateVolumeCapabilities: \"Volume does not exist\" → 5 NOT_FOUND",
            [Need::PluginService(csi_proto::v1::plugin_capability::service::Type::ControllerService)],
            |ctx: Ctx| async move {
                call!(ctx.controller(), validate_volume_capabilities, "ValidateVolumeCapabilities", ValidateVolumeCapabilitiesRequest {
                    volume_id: ctx.unknown_volume_id(),
                    volume_capabilities: vec![ctx.default_capability()],
                    secrets: ctx.secrets(Secret::ControllerValidateVolumeCapabilities),
                    ..Default::default()
                })
                .code(Code::NotFound, "ValidateVolumeCapabilities: an unknown volume → NOT_FOUND")?;
                Ok(())
            }
        ),
    ]
}
