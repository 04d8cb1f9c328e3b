//! Controller: capabilities, capacity, and volume listing (with pagination).

use std::collections::{HashMap, HashSet};

use csi_proto::v1::controller_service_capability::{self, rpc::Type as ControllerRpc};
use csi_proto::v1::plugin_capability::service::Type as PluginService;
use csi_proto::v1::{
    ControllerGetCapabilitiesRequest, GetCapacityRequest, ListVolumesRequest, Volume,
};
use tonic::Code;

use crate::check::{ensure, ensure_call, Failure};
use crate::{call, spec, Ctx, Need, Spec};

const GROUP: &str = "Controller";

const CONTROLLER: Need = Need::PluginService(PluginService::ControllerService);
const LIST_VOLUMES: Need = Need::ControllerCap(ControllerRpc::ListVolumes);
const CREATE_DELETE: Need = Need::ControllerCap(ControllerRpc::CreateDeleteVolume);

/// One walk over ListVolumes pages: what came back, in order.
struct Walk {
    /// Every volume id returned, in order, with repeats.
    ids: Vec<String>,
    /// The largest page.
    largest_page: usize,
    pages: usize,
}

impl Walk {
    fn count(&self, id: &str) -> usize {
        self.ids.iter().filter(|i| *i == id).count()
    }
}

const PAGINATION_RULE: &str = "spec ListVolumes: max_entries bounds the entries of a response; next_token, when set, is passed as starting_token to get the next page; tokens are opaque strings";

/// Walk ListVolumes with `max_entries`, calling `between(page_number, page)` after each
/// page but the last, before continuing with the token.
async fn walk<F, Fut>(ctx: &Ctx, max_entries: i32, mut between: F) -> Result<Walk, Failure>
where
    F: FnMut(usize, Vec<Volume>) -> Fut,
    Fut: std::future::Future<Output = Result<(), Failure>>,
{
    let mut walk = Walk {
        ids: Vec::new(),
        largest_page: 0,
        pages: 0,
    };
    let mut token = String::new();
    let mut tokens = HashSet::new();
    loop {
        let c = call!(
            ctx.controller(),
            list_volumes,
            "ListVolumes",
            ListVolumesRequest {
                max_entries,
                starting_token: token.clone(),
            }
        );
        let request = c.request.clone();
        let resp = c.ok(PAGINATION_RULE)?;
        walk.pages += 1;
        let page: Vec<Volume> = resp.entries.into_iter().filter_map(|e| e.volume).collect();
        walk.largest_page = walk.largest_page.max(page.len());
        walk.ids.extend(page.iter().map(|v| v.volume_id.clone()));
        ensure_call(
            max_entries <= 0 || page.len() <= max_entries as usize,
            "ListVolumes",
            &request,
            format!("at most max_entries = {max_entries} entries"),
            page.len(),
            PAGINATION_RULE,
        )?;
        if resp.next_token.is_empty() {
            return Ok(walk);
        }
        ensure_call(
            tokens.insert(resp.next_token.clone()) && walk.pages < 100_000,
            "ListVolumes",
            &request,
            "each next_token to lead on (the walk must end)",
            format!(
                "next_token {:?} came back again after {} pages",
                resp.next_token, walk.pages
            ),
            PAGINATION_RULE,
        )?;
        between(walk.pages, page).await?;
        token = resp.next_token;
    }
}

/// Check a walk made while nothing of ours changed: each of `ours` exactly once.
fn check_clean_walk(walk: &Walk, ours: &[String]) -> Result<(), Failure> {
    let missing: Vec<&String> = ours.iter().filter(|id| walk.count(id) == 0).collect();
    let repeated: Vec<&String> = ours.iter().filter(|id| walk.count(id) > 1).collect();
    ensure(
        missing.is_empty() && repeated.is_empty(),
        "ListVolumes",
        format!(
            "each of our volumes {ours:?} exactly once across {} pages",
            walk.pages
        ),
        format!("missing {missing:?}, returned more than once {repeated:?}"),
        PAGINATION_RULE,
    )
}

/// Retry a clean walk: another spec running in parallel may shift an offset-based
/// listing under us once, but not three times in a row.
async fn clean_walk(ctx: &Ctx, max_entries: i32, ours: &[String]) -> Result<(), Failure> {
    let mut last = Ok(());
    for _ in 0..3 {
        let w = walk(ctx, max_entries, |_, _| async { Ok(()) }).await?;
        last = check_clean_walk(&w, ours);
        if last.is_ok() {
            return Ok(());
        }
    }
    last
}

pub fn specs() -> Vec<Spec> {
    vec![
        spec!(
            GROUP,
            "ControllerGetCapabilities returns only known capability values",
            "spec ControllerGetCapabilities: each capability is a ControllerServiceCapability.RPC type defined by the spec",
            [CONTROLLER],
            |ctx: Ctx| async move {
                const RULE: &str = "ControllerGetCapabilities: every capability is a known RPC type (not UNKNOWN)";
                let resp = call!(ctx.controller(), controller_get_capabilities, "ControllerGetCapabilities", ControllerGetCapabilitiesRequest {}).ok(RULE)?;
                for cap in &resp.capabilities {
                    let known = match &cap.r#type {
                        Some(controller_service_capability::Type::Rpc(rpc)) => matches!(
                            ControllerRpc::try_from(rpc.r#type),
                            Ok(t) if t != ControllerRpc::Unknown
                        ),
                        None => false,
                    };
                    ensure(known, "ControllerGetCapabilities", "a known RPC capability", cap, RULE)?;
                }
                Ok(())
            }
        ),
        spec!(
            GROUP,
            "GetCapacity answers with a non-negative available capacity",
            "spec GetCapacity: available_capacity is the capacity available for new volumes (>= 0)",
            [Need::ControllerCap(ControllerRpc::GetCapacity)],
            |ctx: Ctx| async move {
                const RULE: &str = "GetCapacity: with GET_CAPACITY advertised, a request without arguments MUST succeed; available_capacity >= 0";
                let c = call!(ctx.controller(), get_capacity, "GetCapacity", GetCapacityRequest::default());
                let request = c.request.clone();
                let resp = c.ok(RULE)?;
                ensure_call(resp.available_capacity >= 0, "GetCapacity", &request, "available_capacity >= 0", resp.available_capacity, RULE)?;
                let c = call!(ctx.controller(), get_capacity, "GetCapacity", GetCapacityRequest {
                    volume_capabilities: vec![ctx.default_capability()],
                    parameters: ctx.config().volume_parameters.clone(),
                    accessible_topology: None,
                });
                let request = c.request.clone();
                let resp = c.ok(RULE)?;
                Ok(ensure_call(resp.available_capacity >= 0, "GetCapacity", &request, "available_capacity >= 0", resp.available_capacity, RULE)?)
            }
        ),
        spec!(
            GROUP,
            "ListVolumes answers with entries that each carry a volume id",
            "spec ListVolumes: each entry has a volume with a non-empty volume_id",
            [LIST_VOLUMES],
            |ctx: Ctx| async move {
                const RULE: &str = "ListVolumes: entries carry volumes; volume_id is REQUIRED";
                let c = call!(ctx.controller(), list_volumes, "ListVolumes", ListVolumesRequest::default());
                let request = c.request.clone();
                let resp = c.ok(RULE)?;
                for e in &resp.entries {
                    ensure_call(
                        e.volume.as_ref().is_some_and(|v| !v.volume_id.is_empty()),
                        "ListVolumes", &request, "an entry with a volume and a volume_id", e, RULE,
                    )?;
                }
                Ok(())
            }
        ),
        spec!(
            GROUP,
            "ListVolumes fails with ABORTED when the starting_token is invalid",
            "spec ListVolumes: \"starting_token is not valid\" → 10 ABORTED",
            [LIST_VOLUMES],
            |ctx: Ctx| async move {
                call!(ctx.controller(), list_volumes, "ListVolumes", ListVolumesRequest {
                    max_entries: 0,
                    starting_token: format!("csi-sanity-invalid-token/{}", ctx.unknown_volume_id()),
                })
                .code(Code::Aborted, "ListVolumes: an invalid starting_token → ABORTED")?;
                Ok(())
            }
        ),
        spec!(
            GROUP,
            "ListVolumes shows a new volume and no longer shows it once it is deleted",
            "spec ListVolumes: returns all the volumes the plugin knows",
            [LIST_VOLUMES, CREATE_DELETE],
            |ctx: Ctx| async move {
                const RULE: &str = "ListVolumes: returns every existing volume, and none that was deleted";
                let volume = ctx.create_volume(&ctx.unique_name("listed")).await?;
                let id = volume.volume_id.clone();
                let listed = ctx.list_all_volumes(0).await?;
                ensure(listed.iter().any(|v| v.volume_id == id), "ListVolumes",
                    format!("the new volume {id} in the list"),
                    format!("{} volumes, not including it", listed.len()), RULE)?;
                ctx.delete_volume(&id).await?;
                let listed = ctx.list_all_volumes(0).await?;
                Ok(ensure(!listed.iter().any(|v| v.volume_id == id), "ListVolumes",
                    format!("the deleted volume {id} gone from the list"),
                    "it is still listed", RULE)?)
            }
        ),
        spec!(
            GROUP,
            "ListVolumes pagination returns every volume once, takes opaque tokens, sees volumes added between pages and accepts a token whose last volume was deleted",
            "spec ListVolumes: max_entries bounds a page, next_token continues the listing, tokens are opaque; a CO may create and delete volumes while listing",
            [LIST_VOLUMES, CREATE_DELETE],
            |ctx: Ctx| async move {
                const MAX: i32 = 2;
                // Four volumes of ours, so a walk with two per page has several pages.
                let mut ours = Vec::new();
                for _ in 0..4 {
                    ours.push(ctx.create_volume(&ctx.unique_name("page")).await?.volume_id);
                }

                // 1. A clean walk sees each of ours exactly once. Other volumes may come
                //    and go; only ours are counted.
                clean_walk(&ctx, MAX, &ours).await.map_err(|f| f.during("walk 1 of 3: listing while nothing of ours changes"))?;

                // 2. A walk that, after the first page that ends with one of ours,
                //    creates a volume and deletes that last volume, then goes on with the
                //    token. The driver must accept the token and finish the walk.
                let ours_set: HashSet<String> = ours.iter().cloned().collect();
                let added = std::sync::Mutex::new(None::<String>);
                let deleted = std::sync::Mutex::new(None::<String>);
                let w = walk(&ctx, MAX, |_, page| {
                    let ctx = ctx.clone();
                    let ours_set = &ours_set;
                    let added = &added;
                    let deleted = &deleted;
                    async move {
                        if deleted.lock().unwrap_or_else(|e| e.into_inner()).is_some() {
                            return Ok(());
                        }
                        let Some(last) = page.last().filter(|v| ours_set.contains(&v.volume_id)) else {
                            return Ok(());
                        };
                        let new = ctx.create_volume(&ctx.unique_name("page-added")).await?;
                        *added.lock().unwrap_or_else(|e| e.into_inner()) = Some(new.volume_id);
                        ctx.delete_volume(&last.volume_id).await?;
                        *deleted.lock().unwrap_or_else(|e| e.into_inner()) = Some(last.volume_id.clone());
                        Ok(())
                    }
                })
                .await
                .map_err(|f| f.during("walk 2 of 3: creating a volume and deleting the last one of a page between pages"))?;
                let deleted = deleted.into_inner().unwrap_or_else(|e| e.into_inner());
                let added = added.into_inner().unwrap_or_else(|e| e.into_inner());
                let Some(deleted) = deleted else {
                    return Err(Failure::new(
                        "a page ending with one of our volumes, to delete it between pages",
                        format!("{} pages, none ending with one of ours {ours:?}: {:?}", w.pages, w.ids),
                        PAGINATION_RULE,
                    ).during("walk 2 of 3").into());
                };
                // Allowed: an offset-based listing may show one volume twice (shifted
                // by the insertion) and miss one (shifted by the deletion). Not allowed:
                // more than that, which means the token was not followed.
                let stable: Vec<&String> = ours.iter().filter(|id| **id != deleted).collect();
                let missing: Vec<&&String> = stable.iter().filter(|id| w.count(id) == 0).collect();
                let repeated: usize = ours.iter().map(|id| w.count(id).saturating_sub(1)).sum();
                ensure(
                    missing.len() <= 1 && repeated <= 1,
                    "ListVolumes",
                    "each of our volumes that existed during the whole walk at least once (one may shift out of view when an earlier one is deleted), and at most one repeat (one may shift when a volume is added)",
                    format!("missing {missing:?}, {repeated} repeats, in {:?}", w.ids),
                    PAGINATION_RULE,
                ).map_err(|f| f.during("walk 2 of 3"))?;

                // 3. A clean walk afterwards: the added volume is there, the deleted one
                //    is gone, the others are there once.
                let mut now: Vec<String> = stable.into_iter().cloned().collect();
                now.extend(added);
                clean_walk(&ctx, MAX, &now).await.map_err(|f| f.during("walk 3 of 3: listing after the changes"))?;
                let listed: HashMap<String, ()> = ctx.list_all_volumes(0).await?.into_iter().map(|v| (v.volume_id, ())).collect();
                Ok(ensure(!listed.contains_key(&deleted), "ListVolumes",
                    format!("the deleted volume {deleted} gone"), "still listed", PAGINATION_RULE)?)
            }
        ),
    ]
}
