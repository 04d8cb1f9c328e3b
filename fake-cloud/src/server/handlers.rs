//! The `/v2` handlers: one per DigitalOcean call, each a thin translation
//! between the wire shapes and a [`Cloud`](crate::Cloud) call.

use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Serialize;
use serde_json::json;

use super::extract::{numeric_id, page_links, JsonBody, Params};
use super::wire::{
    AccountWire, ActionWire, CreateSnapshotBody, CreateVolumeBody, DropletWire, RegionWire,
    SnapshotWire, UpdateVolumeBody, VolumeActionBody, VolumeWire,
};
use super::{no_content, ApiError, AppState};
use crate::error::CloudError;
use crate::model::{CreateVolumeRequest, Page};

type Answer = Result<Response, ApiError>;

/// `{ "<key>": object }` with `status`.
fn one<W: Serialize>(status: StatusCode, key: &str, object: W) -> Response {
    (status, Json(json!({ key: object }))).into_response()
}

/// `{ "<key>": [...], "links": {...}, "meta": {"total": N} }`.
fn list<T, W: Serialize + From<T>>(
    key: &str,
    page: Page<T>,
    uri: &Uri,
    headers: &HeaderMap,
) -> Response {
    let links = page_links(&page, uri, headers);
    let total = page.total;
    let items: Vec<W> = page.items.into_iter().map(W::from).collect();
    Json(json!({ key: items, "links": links, "meta": { "total": total } })).into_response()
}

pub async fn list_volumes(State(s): State<AppState>, uri: Uri, headers: HeaderMap) -> Answer {
    let params = Params::parse(uri.query());
    let (page, per_page) = params.paging()?;
    let name = params.get("name").map(String::from);
    let region = params.get("region").map(String::from);
    let result = s
        .call(move |c| c.list_volumes(name.as_deref(), region.as_deref(), page, per_page))
        .await?;
    Ok(list::<_, VolumeWire>("volumes", result, &uri, &headers))
}

pub async fn create_volume(
    State(s): State<AppState>,
    JsonBody(body): JsonBody<CreateVolumeBody>,
) -> Answer {
    let volume = s
        .call(move |c| {
            // As on DigitalOcean, the region may be left out when the source
            // (here also a source volume) says where the volume goes.
            let region = match (&body.region, &body.snapshot_id, &body.source_volume_id) {
                (Some(region), _, _) => region.clone(),
                (None, Some(snapshot), _) => c.get_snapshot(snapshot)?.region,
                (None, None, Some(source)) => c.get_volume(source)?.region,
                (None, None, None) => return Err(CloudError::unprocessable("region is required")),
            };
            let req = CreateVolumeRequest {
                name: body.name,
                region,
                size_gib: body.size_gigabytes,
                description: body.description.unwrap_or_default(),
                snapshot_id: body.snapshot_id,
                tags: body.tags.unwrap_or_default(),
                filesystem_type: body.filesystem_type,
            };
            match body.source_volume_id {
                Some(source) => c.clone_volume(&source, req),
                None => c.create_volume(req),
            }
        })
        .await?;
    Ok(one(StatusCode::CREATED, "volume", VolumeWire::from(volume)))
}

pub async fn delete_volume_by_name(State(s): State<AppState>, uri: Uri) -> Answer {
    let params = Params::parse(uri.query());
    let (Some(name), Some(region)) = (params.get("name"), params.get("region")) else {
        return Err(ApiError(CloudError::unprocessable(
            "deleting a volume by name needs both name and region",
        )));
    };
    let (name, region) = (name.to_string(), region.to_string());
    s.call(move |c| {
        let found = c.list_volumes(Some(&name), Some(&region), 1, 1)?;
        let volume = found
            .items
            .first()
            .ok_or_else(CloudError::resource_not_found)?;
        c.delete_volume(&volume.id)
    })
    .await?;
    Ok(no_content())
}

pub async fn get_volume(State(s): State<AppState>, Path(id): Path<String>) -> Answer {
    let volume = s.call(move |c| c.get_volume(&id)).await?;
    Ok(one(StatusCode::OK, "volume", VolumeWire::from(volume)))
}

pub async fn delete_volume(State(s): State<AppState>, Path(id): Path<String>) -> Answer {
    s.call(move |c| c.delete_volume(&id)).await?;
    Ok(no_content())
}

pub async fn update_volume(
    State(s): State<AppState>,
    Path(id): Path<String>,
    JsonBody(body): JsonBody<UpdateVolumeBody>,
) -> Answer {
    let volume = s.call(move |c| c.update_tags(&id, body.tags)).await?;
    Ok(one(StatusCode::OK, "volume", VolumeWire::from(volume)))
}

pub async fn volume_action(
    State(s): State<AppState>,
    Path(id): Path<String>,
    JsonBody(body): JsonBody<VolumeActionBody>,
) -> Answer {
    let action = s
        .call(move |c| {
            if let Some(region) = &body.region {
                let volume = c.get_volume(&id)?;
                if &volume.region != region {
                    return Err(CloudError::unprocessable(format!(
                        "the volume is in region {}, not {region}",
                        volume.region
                    )));
                }
            }
            let droplet = || {
                body.droplet_id
                    .ok_or_else(|| CloudError::unprocessable("droplet_id is required"))
            };
            match body.kind.as_str() {
                "attach" => c.attach(&id, droplet()?),
                "detach" => c.detach(&id, droplet()?),
                "resize" => {
                    let size = body
                        .size_gigabytes
                        .ok_or_else(|| CloudError::unprocessable("size_gigabytes is required"))?;
                    c.resize(&id, size)
                }
                other => Err(CloudError::unprocessable(format!(
                    "unknown action type {other:?}: use attach, detach or resize"
                ))),
            }
        })
        .await?;
    Ok(one(
        StatusCode::ACCEPTED,
        "action",
        ActionWire::from(action),
    ))
}

pub async fn list_volume_actions(
    State(s): State<AppState>,
    Path(id): Path<String>,
    uri: Uri,
    headers: HeaderMap,
) -> Answer {
    let (page, per_page) = Params::parse(uri.query()).paging()?;
    let result = s
        .call(move |c| Page::of(c.list_volume_actions(&id)?, page, per_page))
        .await?;
    Ok(list::<_, ActionWire>("actions", result, &uri, &headers))
}

pub async fn get_volume_action(
    State(s): State<AppState>,
    Path((id, action_id)): Path<(String, String)>,
) -> Answer {
    let action_id = numeric_id(&action_id)?;
    let action = s
        .call(move |c| {
            c.get_volume(&id)?;
            let action = c.get_action(action_id)?;
            if action.volume_id == id {
                Ok(action)
            } else {
                Err(CloudError::resource_not_found())
            }
        })
        .await?;
    Ok(one(StatusCode::OK, "action", ActionWire::from(action)))
}

pub async fn get_action(State(s): State<AppState>, Path(id): Path<String>) -> Answer {
    let id = numeric_id(&id)?;
    let action = s.call(move |c| c.get_action(id)).await?;
    Ok(one(StatusCode::OK, "action", ActionWire::from(action)))
}

pub async fn create_snapshot(
    State(s): State<AppState>,
    Path(id): Path<String>,
    JsonBody(body): JsonBody<CreateSnapshotBody>,
) -> Answer {
    let snapshot = s
        .call(move |c| c.create_snapshot(&id, &body.name, body.tags.unwrap_or_default()))
        .await?;
    Ok(one(
        StatusCode::CREATED,
        "snapshot",
        SnapshotWire::from(snapshot),
    ))
}

pub async fn list_volume_snapshots(
    State(s): State<AppState>,
    Path(id): Path<String>,
    uri: Uri,
    headers: HeaderMap,
) -> Answer {
    let (page, per_page) = Params::parse(uri.query()).paging()?;
    let result = s
        .call(move |c| c.list_snapshots(Some(&id), page, per_page))
        .await?;
    Ok(list::<_, SnapshotWire>("snapshots", result, &uri, &headers))
}

pub async fn list_snapshots(State(s): State<AppState>, uri: Uri, headers: HeaderMap) -> Answer {
    let params = Params::parse(uri.query());
    let (page, per_page) = params.paging()?;
    let result = match params.get("resource_type") {
        None | Some("volume") => {
            s.call(move |c| c.list_snapshots(None, page, per_page))
                .await?
        }
        // fake-cloud has no droplet snapshots.
        Some("droplet") => Page::of(Vec::new(), page, per_page)?,
        Some(other) => {
            return Err(ApiError(CloudError::bad_request(format!(
                "resource_type must be volume or droplet, got {other:?}"
            ))))
        }
    };
    Ok(list::<_, SnapshotWire>("snapshots", result, &uri, &headers))
}

pub async fn get_snapshot(State(s): State<AppState>, Path(id): Path<String>) -> Answer {
    let snapshot = s.call(move |c| c.get_snapshot(&id)).await?;
    Ok(one(
        StatusCode::OK,
        "snapshot",
        SnapshotWire::from(snapshot),
    ))
}

pub async fn delete_snapshot(State(s): State<AppState>, Path(id): Path<String>) -> Answer {
    s.call(move |c| c.delete_snapshot(&id)).await?;
    Ok(no_content())
}

pub async fn list_droplets(State(s): State<AppState>, uri: Uri, headers: HeaderMap) -> Answer {
    let (page, per_page) = Params::parse(uri.query()).paging()?;
    let result = s
        .call(move |c| Page::of(c.list_droplets(), page, per_page))
        .await?;
    Ok(list::<_, DropletWire>("droplets", result, &uri, &headers))
}

pub async fn get_droplet(State(s): State<AppState>, Path(id): Path<String>) -> Answer {
    let id = numeric_id(&id)?;
    let droplet = s.call(move |c| c.get_droplet(id)).await?;
    Ok(one(StatusCode::OK, "droplet", DropletWire::from(droplet)))
}

pub async fn account(State(s): State<AppState>) -> Answer {
    let account = s.call(|c| Ok(c.account())).await?;
    Ok(one(StatusCode::OK, "account", AccountWire::from(account)))
}

pub async fn regions(State(s): State<AppState>, uri: Uri, headers: HeaderMap) -> Answer {
    let (page, per_page) = Params::parse(uri.query()).paging()?;
    let slugs = s.cloud.regions();
    let result = Page::of(slugs, page, per_page)?;
    let links = page_links(&result, &uri, &headers);
    let items: Vec<RegionWire> = result.items.iter().map(|r| RegionWire::new(r)).collect();
    Ok(
        Json(json!({ "regions": items, "links": links, "meta": { "total": result.total } }))
            .into_response(),
    )
}
