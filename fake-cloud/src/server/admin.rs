//! `/admin` routes, not part of DigitalOcean's API: change injected faults and
//! action latency at run time, and register droplets.
//!
//! - `GET /admin/faults` → the [`Faults`](crate::Faults) JSON;
//!   `PUT /admin/faults` with any subset of its fields → the merged faults.
//!   Every PUT reseeds the fault RNGs from `seed`.
//! - `GET /admin/latency` → `{"attach_ms","detach_ms","resize_ms","jitter_ms"}`;
//!   `PUT` with any subset → the merged latency.
//! - `GET /admin/droplets` → `{"droplets":[...]}`;
//!   `POST /admin/droplets {"id":N,"region":"nyc3"}` → 201 `{"droplet":{...}}`.
//! - `GET /admin/droplet-id?node=NAME[&region=nyc3]` → the droplet id, as plain text, that
//!   the node NAME is (claimed on first sight and stable after): a cluster's node plugin
//!   asks this where a real droplet would ask the metadata service.
//! - `GET /admin/requests` → `{"total","throttled","by_route":{"GET /v2/volumes/{id}":N}}`,
//!   the `/v2` requests served since start; `DELETE` starts the count again.
//! - `GET /admin/ratelimit` → `{"minute_used","hour_used","hour_resets_in"}`; `PUT` with
//!   any of them sets it, e.g. to run with the hour's budget nearly spent and its reset
//!   near.

use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::json;

use super::extract::JsonBody;
use super::gate::BudgetUse;
use super::wire::{AddDropletBody, DropletWire, FaultsPatch, LatencyWire};
use super::{ApiError, AppState};

type Answer = Result<Response, ApiError>;

pub async fn get_faults(State(s): State<AppState>) -> Answer {
    Ok(Json(s.cloud.faults()).into_response())
}

pub async fn put_faults(
    State(s): State<AppState>,
    JsonBody(patch): JsonBody<FaultsPatch>,
) -> Answer {
    let faults = patch.apply(s.cloud.faults());
    faults.validate()?;
    s.cloud.set_faults(faults);
    tracing::info!(?faults, "faults changed");
    Ok(Json(s.cloud.faults()).into_response())
}

pub async fn get_latency(State(s): State<AppState>) -> Answer {
    Ok(Json(LatencyWire::from(s.cloud.latency())).into_response())
}

pub async fn put_latency(
    State(s): State<AppState>,
    JsonBody(patch): JsonBody<LatencyWire>,
) -> Answer {
    let latency = patch.apply(s.cloud.latency());
    s.cloud.set_latency(latency);
    tracing::info!(?latency, "latency changed");
    Ok(Json(LatencyWire::from(latency)).into_response())
}

pub async fn list_droplets(State(s): State<AppState>) -> Answer {
    let droplets: Vec<DropletWire> = s
        .call(|c| Ok(c.list_droplets()))
        .await?
        .into_iter()
        .map(DropletWire::from)
        .collect();
    Ok(Json(json!({ "droplets": droplets })).into_response())
}

pub async fn add_droplet(
    State(s): State<AppState>,
    JsonBody(body): JsonBody<AddDropletBody>,
) -> Answer {
    let droplet = s
        .call(move |c| c.add_droplet(body.id, &body.region))
        .await?;
    Ok((
        StatusCode::CREATED,
        Json(json!({ "droplet": DropletWire::from(droplet) })),
    )
        .into_response())
}

/// Query of `GET /admin/droplet-id`.
#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DropletIdQuery {
    node: String,
    region: Option<String>,
}

pub async fn droplet_id(State(s): State<AppState>, Query(q): Query<DropletIdQuery>) -> Answer {
    let region = q.region.unwrap_or_else(|| "nyc3".to_string());
    let droplet = s.call(move |c| c.claim_droplet(&q.node, &region)).await?;
    Ok(droplet.id.to_string().into_response())
}

pub async fn get_requests(State(s): State<AppState>) -> Answer {
    Ok(Json(s.inner.gate.counts()).into_response())
}

pub async fn reset_requests(State(s): State<AppState>) -> Answer {
    s.inner.gate.reset_counts();
    Ok(super::no_content())
}

pub async fn get_ratelimit(State(s): State<AppState>) -> Answer {
    Ok(Json(s.inner.gate.budget_use(s.cloud.now())).into_response())
}

pub async fn put_ratelimit(
    State(s): State<AppState>,
    JsonBody(set): JsonBody<BudgetUse>,
) -> Answer {
    s.inner.gate.set_budget_use(s.cloud.now(), set);
    Ok(Json(s.inner.gate.budget_use(s.cloud.now())).into_response())
}
