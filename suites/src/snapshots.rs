//! Snapshots: CreateSnapshot, DeleteSnapshot, ListSnapshots and GetSnapshot.

use std::collections::HashSet;

use csi_proto::v1::controller_service_capability::rpc::Type as ControllerRpc;
use csi_proto::v1::{
    CreateSnapshotRequest, DeleteSnapshotRequest, GetSnapshotRequest, ListSnapshotsRequest,
    ListSnapshotsResponse, Snapshot,
};
use tonic::Code;

use crate::check::{ensure, ensure_call, Call, Failure};
use crate::fixtures::check_snapshot_info;
use crate::secrets::Secret;
use crate::{call, spec, Ctx, Need, Spec};

const LIST: &str = "Controller::ListSnapshots";
const GET: &str = "Controller::GetSnapshot";
const DELETE: &str = "Controller::DeleteSnapshot";
const CREATE: &str = "Controller::CreateSnapshot";

const SNAPSHOTS: Need = Need::ControllerCap(ControllerRpc::CreateDeleteSnapshot);
const LIST_SNAPSHOTS: Need = Need::ControllerCap(ControllerRpc::ListSnapshots);
const GET_SNAPSHOT: Need = Need::ControllerCap(ControllerRpc::GetSnapshot);
const VOLUMES: Need = Need::ControllerCap(ControllerRpc::CreateDeleteVolume);

async fn list(ctx: &Ctx, req: ListSnapshotsRequest) -> Call<ListSnapshotsResponse> {
    let req = ListSnapshotsRequest {
        secrets: ctx.secrets(Secret::ListSnapshots),
        ..req
    };
    call!(ctx.controller(), list_snapshots, "ListSnapshots", req)
}

/// The snapshots of a ListSnapshots response. An entry without a snapshot, or a
/// snapshot without its REQUIRED fields, fails (as in the Go csi-sanity).
fn snapshots(resp: ListSnapshotsResponse, request: &str) -> Result<Vec<Snapshot>, Failure> {
    resp.entries
        .into_iter()
        .map(|e| {
            let s = e.snapshot.ok_or_else(|| {
                Failure::about(
                    "ListSnapshots",
                    request,
                    "every entry to carry a snapshot",
                    "an entry with no snapshot",
                    "spec ListSnapshots: each Entry's snapshot is the listed snapshot (REQUIRED)",
                )
            })?;
            check_snapshot_info("ListSnapshots", request, &s)?;
            Ok(s)
        })
        .collect()
}

/// What ListSnapshots with `req` lists, which it must answer OK, and the request as
/// sent, for failure messages.
async fn listed(
    ctx: &Ctx,
    req: ListSnapshotsRequest,
    rule: &str,
) -> Result<(String, Vec<Snapshot>), Failure> {
    let c = list(ctx, req).await;
    let request = c.request.clone();
    let got = snapshots(c.ok(rule)?, &request)?;
    Ok((request, got))
}

/// ListSnapshots with `req`, a filter that matches no snapshot, must answer OK with
/// an empty list.
async fn expect_none_listed(
    ctx: &Ctx,
    req: ListSnapshotsRequest,
    rule: &str,
) -> Result<(), Failure> {
    let (request, got) = listed(ctx, req, rule).await?;
    ensure_call(
        got.is_empty(),
        "ListSnapshots",
        &request,
        "no entries",
        &got,
        rule,
    )
}

/// A volume and a snapshot of it.
async fn volume_and_snapshot(ctx: &Ctx, tag: &str) -> Result<(String, Snapshot), Failure> {
    let v = ctx
        .create_volume(&ctx.unique_name(&format!("{tag}-source")))
        .await?;
    let s = ctx
        .create_snapshot(&ctx.unique_name(tag), &v.volume_id)
        .await?;
    Ok((v.volume_id, s))
}

/// Every snapshot id ListSnapshots returns, walking pages of `max_entries`.
async fn walk_snapshots(ctx: &Ctx, max_entries: i32) -> Result<(Vec<String>, usize), Failure> {
    const RULE: &str =
        "spec ListSnapshots: max_entries bounds a page; next_token continues the listing";
    let mut ids = Vec::new();
    let mut token = String::new();
    let mut tokens = HashSet::new();
    let mut pages = 0;
    loop {
        let c = list(
            ctx,
            ListSnapshotsRequest {
                max_entries,
                starting_token: token.clone(),
                ..Default::default()
            },
        )
        .await;
        let request = c.request.clone();
        let resp = c.ok(RULE)?;
        pages += 1;
        let next = resp.next_token.clone();
        let page = snapshots(resp, &request)?;
        ensure_call(
            page.len() <= max_entries as usize,
            "ListSnapshots",
            &request,
            format!("at most max_entries = {max_entries} entries"),
            page.len(),
            RULE,
        )?;
        ids.extend(page.into_iter().map(|s| s.snapshot_id));
        if next.is_empty() {
            return Ok((ids, pages));
        }
        ensure_call(
            tokens.insert(next.clone()) && pages < 100_000,
            "ListSnapshots",
            &request,
            "each next_token to lead on (the walk must end)",
            format!("next_token {next:?} came back again"),
            RULE,
        )?;
        token = next;
    }
}

pub fn specs() -> Vec<Spec> {
    let mut specs = list_specs();
    specs.extend(get_specs());
    specs.extend(delete_specs());
    specs.extend(create_specs());
    specs
}

fn list_specs() -> Vec<Spec> {
    vec![
        spec!(
            LIST,
            "answers with entries that each carry a snapshot id and a source volume id",
            "spec ListSnapshots: snapshot_id and source_volume_id are REQUIRED in each Snapshot",
            [LIST_SNAPSHOTS],
            |ctx: Ctx| async move {
                const RULE: &str = "ListSnapshots: every entry has a snapshot with snapshot_id and source_volume_id";
                let (request, got) = listed(&ctx, ListSnapshotsRequest::default(), RULE).await?;
                for s in got {
                    ensure_call(!s.snapshot_id.is_empty() && !s.source_volume_id.is_empty(), "ListSnapshots", &request,
                        "snapshot_id and source_volume_id set", &s, RULE)?;
                }
                Ok(())
            }
        ),
        spec!(
            LIST,
            "returns exactly the snapshot asked for by snapshot id",
            "spec ListSnapshots: with snapshot_id set, the response holds that snapshot only",
            [LIST_SNAPSHOTS, SNAPSHOTS, VOLUMES],
            |ctx: Ctx| async move {
                const RULE: &str = "ListSnapshots: filtering by snapshot_id returns that one snapshot";
                let (volume_id, snap) = volume_and_snapshot(&ctx, "list-by-id").await?;
                // A second snapshot, which must not come back.
                ctx.create_snapshot(&ctx.unique_name("list-by-id-other"), &volume_id).await?;
                let (request, got) = listed(&ctx, ListSnapshotsRequest { snapshot_id: snap.snapshot_id.clone(), ..Default::default() }, RULE).await?;
                Ok(ensure_call(got.len() == 1 && got[0].snapshot_id == snap.snapshot_id, "ListSnapshots", &request,
                    format!("exactly snapshot {}", snap.snapshot_id), &got, RULE)?)
            }
        ),
        spec!(
            LIST,
            "returns no entries for a snapshot id that does not exist",
            "spec ListSnapshots: \"If no snapshots match the specified snapshot_id, the Plugin MUST reply with an empty list\"",
            [LIST_SNAPSHOTS],
            |ctx: Ctx| async move {
                const RULE: &str = "ListSnapshots: an unknown snapshot_id gives OK with no entries";
                Ok(expect_none_listed(&ctx, ListSnapshotsRequest { snapshot_id: ctx.unknown_snapshot_id(), ..Default::default() }, RULE).await?)
            }
        ),
        spec!(
            LIST,
            "returns the snapshots of a source volume when filtered by it",
            "spec ListSnapshots: with source_volume_id set, only snapshots of that volume are returned",
            [LIST_SNAPSHOTS, SNAPSHOTS, VOLUMES],
            |ctx: Ctx| async move {
                const RULE: &str = "ListSnapshots: filtering by source_volume_id returns that volume's snapshots and no others";
                let (volume_id, snap) = volume_and_snapshot(&ctx, "list-by-source").await?;
                // A snapshot of another volume must not show up.
                let (_, other) = volume_and_snapshot(&ctx, "list-by-source-other").await?;
                let (request, got) = listed(&ctx, ListSnapshotsRequest { source_volume_id: volume_id.clone(), ..Default::default() }, RULE).await?;
                ensure_call(got.iter().any(|s| s.snapshot_id == snap.snapshot_id), "ListSnapshots", &request,
                    format!("snapshot {} of volume {volume_id}", snap.snapshot_id), &got, RULE)?;
                Ok(ensure_call(got.iter().all(|s| s.source_volume_id == volume_id && s.snapshot_id != other.snapshot_id), "ListSnapshots", &request,
                    format!("only snapshots of volume {volume_id}"), &got, RULE)?)
            }
        ),
        spec!(
            LIST,
            "returns no entries for a source volume that does not exist",
            "spec ListSnapshots: no snapshot matches an unknown source_volume_id → an empty list",
            [LIST_SNAPSHOTS],
            |ctx: Ctx| async move {
                const RULE: &str = "ListSnapshots: an unknown source_volume_id gives OK with no entries";
                Ok(expect_none_listed(&ctx, ListSnapshotsRequest { source_volume_id: ctx.unknown_volume_id(), ..Default::default() }, RULE).await?)
            }
        ),
        spec!(
            LIST,
            "shows a new snapshot and no longer shows it once it is deleted",
            "spec ListSnapshots: returns all the snapshots the plugin knows",
            [LIST_SNAPSHOTS, SNAPSHOTS, VOLUMES],
            |ctx: Ctx| async move {
                const RULE: &str = "ListSnapshots: returns every existing snapshot, and none that was deleted";
                let (_, snap) = volume_and_snapshot(&ctx, "list-new").await?;
                let id = snap.snapshot_id.clone();
                let (all, _) = walk_snapshots(&ctx, 100).await?;
                ensure(all.contains(&id), "ListSnapshots", format!("the new snapshot {id} listed"), format!("{} snapshots, not including it", all.len()), RULE)?;
                ctx.delete_snapshot(&id).await?;
                let (all, _) = walk_snapshots(&ctx, 100).await?;
                Ok(ensure(!all.contains(&id), "ListSnapshots", format!("the deleted snapshot {id} gone"), "it is still listed", RULE)?)
            }
        ),
        spec!(
            LIST,
            "pages with max_entries and next_token, returning every snapshot once",
            "spec ListSnapshots: max_entries bounds a page; next_token is set while more entries remain and continues the listing",
            [LIST_SNAPSHOTS, SNAPSHOTS, VOLUMES],
            |ctx: Ctx| async move {
                const RULE: &str = "ListSnapshots: walking pages of max_entries returns every snapshot once";
                let v = ctx.create_volume(&ctx.unique_name("page-source")).await?;
                let mut ours = Vec::new();
                for _ in 0..3 {
                    ours.push(ctx.create_snapshot(&ctx.unique_name("page"), &v.volume_id).await?.snapshot_id);
                }
                // Go's checks: a first page of max_entries = 2 holds exactly 2 entries,
                // and its token with no max_entries returns all the rest at once. The spec
                // only says "at most" and "no restriction", so the full profile warns where
                // Go fails (the walk below is the MUST).
                let total = list(&ctx, ListSnapshotsRequest::default()).await.ok(RULE)?.entries.len();
                let (request, first) = {
                    let c = list(&ctx, ListSnapshotsRequest { max_entries: 2, ..Default::default() }).await;
                    let request = c.request.clone();
                    (request, c.ok(RULE)?)
                };
                let token = first.next_token.clone();
                let first_len = first.entries.len();
                let exact = ensure_call(first_len == 2, "ListSnapshots", &request,
                    "exactly max_entries = 2 entries on the first page (at least 3 snapshots exist)", first_len,
                    "Go csi-sanity: a page of max_entries holds max_entries entries while more remain");
                let c = list(&ctx, ListSnapshotsRequest { starting_token: token.clone(), ..Default::default() }).await;
                let request = c.request.clone();
                let rest = c.ok(RULE)?;
                let rest_all = ensure_call(rest.next_token.is_empty(), "ListSnapshots", &request,
                    "all the remaining entries at once (no next_token) when max_entries is not set", &rest.next_token,
                    "spec ListSnapshots: max_entries unset means no restriction on the number of entries returned");
                if ctx.compat() {
                    exact?;
                    return Ok(ensure_call(rest.entries.len() + 2 == total, "ListSnapshots", &request,
                        format!("the {} remaining entries at once", total.saturating_sub(2)), rest.entries.len(),
                        "Go csi-sanity: a token with no max_entries returns all the remaining entries")?);
                }
                ctx.should(exact);
                ctx.should(rest_all);
                // Other specs may create and delete snapshots meanwhile; retry a walk
                // that was disturbed, but not three times in a row.
                let mut last = Ok(());
                for _ in 0..3 {
                    let (ids, pages) = walk_snapshots(&ctx, 2).await?;
                    let counts: Vec<usize> = ours.iter().map(|id| ids.iter().filter(|i| *i == id).count()).collect();
                    last = ensure(pages >= 2 && counts.iter().all(|c| *c == 1), "ListSnapshots",
                        format!("at least 2 pages of at most 2 entries, each of {ours:?} once"),
                        format!("{pages} pages; times each was returned: {counts:?}"), RULE);
                    if last.is_ok() {
                        break;
                    }
                }
                Ok(last?)
            }
        ),
    ]
}

fn get_specs() -> Vec<Spec> {
    vec![
        spec!(
            GET,
            "fails with INVALID_ARGUMENT when no snapshot id is given",
            "spec GetSnapshot: snapshot_id is REQUIRED",
            [GET_SNAPSHOT],
            |ctx: Ctx| async move {
                let c = call!(
                    ctx.controller(),
                    get_snapshot,
                    "GetSnapshot",
                    GetSnapshotRequest {
                        snapshot_id: String::new(),
                        secrets: ctx.secrets(Secret::GetSnapshot),
                    }
                );
                if ctx.compat() {
                    // Go asks only for an error here.
                    c.error("GetSnapshot: snapshot_id is REQUIRED → an error")?;
                } else {
                    c.code(
                        Code::InvalidArgument,
                        "GetSnapshot: snapshot_id is REQUIRED → INVALID_ARGUMENT",
                    )?;
                }
                Ok(())
            }
        ),
        spec!(
            GET,
            "returns the snapshot with the given id",
            "spec GetSnapshot: returns the snapshot with snapshot_id",
            [GET_SNAPSHOT, SNAPSHOTS, VOLUMES],
            |ctx: Ctx| async move {
                const RULE: &str =
                    "GetSnapshot: an existing snapshot is returned, with its id and source volume";
                let (volume_id, snap) = volume_and_snapshot(&ctx, "get").await?;
                let c = call!(
                    ctx.controller(),
                    get_snapshot,
                    "GetSnapshot",
                    GetSnapshotRequest {
                        snapshot_id: snap.snapshot_id.clone(),
                        secrets: ctx.secrets(Secret::GetSnapshot),
                    }
                );
                let request = c.request.clone();
                let got = c.ok(RULE)?.snapshot;
                ensure_call(
                    got.as_ref().is_some_and(|s| {
                        s.snapshot_id == snap.snapshot_id && s.source_volume_id == volume_id
                    }),
                    "GetSnapshot",
                    &request,
                    format!("snapshot {} of volume {volume_id}", snap.snapshot_id),
                    &got,
                    RULE,
                )?;
                Ok(check_snapshot_info(
                    "GetSnapshot",
                    &request,
                    &got.unwrap_or_default(),
                )?)
            }
        ),
        spec!(
            GET,
            "fails with NOT_FOUND for a snapshot that does not exist",
            "spec GetSnapshot: \"Snapshot does not exist\" → 5 NOT_FOUND",
            [GET_SNAPSHOT],
            |ctx: Ctx| async move {
                call!(
                    ctx.controller(),
                    get_snapshot,
                    "GetSnapshot",
                    GetSnapshotRequest {
                        snapshot_id: ctx.unknown_snapshot_id(),
                        secrets: ctx.secrets(Secret::GetSnapshot),
                    }
                )
                .code(
                    Code::NotFound,
                    "GetSnapshot: an unknown snapshot → NOT_FOUND",
                )?;
                Ok(())
            }
        ),
    ]
}

fn delete_specs() -> Vec<Spec> {
    vec![
        spec!(
            DELETE,
            "fails with INVALID_ARGUMENT when no snapshot id is given",
            "spec DeleteSnapshot: snapshot_id is REQUIRED",
            [SNAPSHOTS],
            |ctx: Ctx| async move {
                call!(ctx.controller(), delete_snapshot, "DeleteSnapshot", DeleteSnapshotRequest {
                    snapshot_id: String::new(),
                    secrets: ctx.secrets(Secret::DeleteSnapshot),
                })
                .code(Code::InvalidArgument, "DeleteSnapshot: snapshot_id is REQUIRED → INVALID_ARGUMENT")?;
                Ok(())
            }
        ),
        spec!(
            DELETE,
            "succeeds for a snapshot id that does not exist",
            "spec DeleteSnapshot: \"If a snapshot corresponding to the specified snapshot_id does not exist ... the Plugin MUST reply 0 OK\"",
            [SNAPSHOTS],
            |ctx: Ctx| async move {
                for snapshot_id in ctx.unknown_snapshot_ids() {
                    call!(ctx.controller(), delete_snapshot, "DeleteSnapshot", DeleteSnapshotRequest {
                        snapshot_id,
                        secrets: ctx.secrets(Secret::DeleteSnapshot),
                    })
                    .ok("DeleteSnapshot: an unknown snapshot id MUST reply OK")?;
                }
                Ok(())
            }
        ),
        spec!(
            DELETE,
            "deletes an existing snapshot",
            "spec DeleteSnapshot: deletes the snapshot",
            [SNAPSHOTS, VOLUMES],
            |ctx: Ctx| async move {
                let (_, snap) = volume_and_snapshot(&ctx, "delete").await?;
                ctx.delete_snapshot(&snap.snapshot_id).await?;
                if ctx.caps().controller_has(ControllerRpc::ListSnapshots) || ctx.caps().controller_has(ControllerRpc::GetSnapshot) {
                    let found = ctx.find_snapshot(&snap.snapshot_id).await?;
                    ensure(found.is_none(), "DeleteSnapshot", format!("snapshot {} gone after DeleteSnapshot", snap.snapshot_id),
                        found, "DeleteSnapshot: a deleted snapshot is no longer listed")?;
                }
                Ok(())
            }
        ),
    ]
}

fn create_specs() -> Vec<Spec> {
    vec![
        spec!(
            CREATE,
            "fails with INVALID_ARGUMENT when no name is given",
            "spec CreateSnapshot: name is REQUIRED",
            [SNAPSHOTS, VOLUMES],
            |ctx: Ctx| async move {
                let v = ctx.create_volume(&ctx.unique_name("snap-noname")).await?;
                ctx.create_snapshot_with(ctx.snapshot_request("", &v.volume_id)).await
                    .code(Code::InvalidArgument, "CreateSnapshot: name is REQUIRED → INVALID_ARGUMENT")?;
                Ok(())
            }
        ),
        spec!(
            CREATE,
            "fails with INVALID_ARGUMENT when no source volume id is given",
            "spec CreateSnapshot: source_volume_id is REQUIRED",
            [SNAPSHOTS],
            |ctx: Ctx| async move {
                ctx.create_snapshot_with(ctx.snapshot_request(&ctx.unique_name("snap-nosource"), "")).await
                    .code(Code::InvalidArgument, "CreateSnapshot: source_volume_id is REQUIRED → INVALID_ARGUMENT")?;
                Ok(())
            }
        ),
        spec!(
            CREATE,
            "returns the same snapshot when asked again with the same name and source",
            "spec CreateSnapshot: idempotent — same name and source → OK with the existing snapshot",
            [SNAPSHOTS, VOLUMES],
            |ctx: Ctx| async move {
                const RULE: &str = "CreateSnapshot: a repeated request with the same name and source MUST return OK and the same snapshot";
                let v = ctx.create_volume(&ctx.unique_name("snap-same-source")).await?;
                let name = ctx.unique_name("snap-same");
                let first = ctx.create_snapshot(&name, &v.volume_id).await?;
                let c = ctx.create_snapshot_with(ctx.snapshot_request(&name, &v.volume_id)).await;
                let request = c.request.clone();
                let second = c.ok(RULE)?.snapshot;
                Ok(ensure_call(second.as_ref().is_some_and(|s| s.snapshot_id == first.snapshot_id), "CreateSnapshot", &request,
                    format!("the same snapshot {}", first.snapshot_id), &second, RULE)?)
            }
        ),
        spec!(
            CREATE,
            "fails with ALREADY_EXISTS when the name exists with a different source volume",
            "spec CreateSnapshot: \"Snapshot already exists but is incompatible\" → 6 ALREADY_EXISTS",
            [SNAPSHOTS, VOLUMES],
            |ctx: Ctx| async move {
                let a = ctx.create_volume(&ctx.unique_name("snap-conflict-a")).await?;
                let b = ctx.create_volume(&ctx.unique_name("snap-conflict-b")).await?;
                let name = ctx.unique_name("snap-conflict");
                ctx.create_snapshot(&name, &a.volume_id).await?;
                ctx.create_snapshot_with(ctx.snapshot_request(&name, &b.volume_id)).await
                    .code(Code::AlreadyExists, "CreateSnapshot: same name, different source_volume_id → ALREADY_EXISTS")?;
                Ok(())
            }
        ),
        spec!(
            CREATE,
            "accepts a name of the maximum length, 128 bytes",
            "spec: string fields SHALL be at most 128 bytes; a plugin MUST accept names up to that length",
            [SNAPSHOTS, VOLUMES],
            |ctx: Ctx| async move {
                let v = ctx.create_volume(&ctx.unique_name("snap-long-source")).await?;
                let req = CreateSnapshotRequest { name: ctx.unique_name_of_len(128), ..ctx.snapshot_request("", &v.volume_id) };
                // Twice, as Go does: the second is a retry and MUST answer the same way.
                for attempt in ["", " (asked again)"] {
                    let c = ctx.create_snapshot_with(req.clone()).await;
                    let request = c.request.clone();
                    let resp = c.ok(&format!("CreateSnapshot: a name of 128 bytes is within the spec's size limit and MUST be accepted{attempt}"))?;
                    check_snapshot_info("CreateSnapshot", &request, &resp.snapshot.unwrap_or_default())?;
                }
                Ok(())
            }
        ),
    ]
}
