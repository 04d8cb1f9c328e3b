//! Looking at what a driver did, through the RPCs it offers for that: where a volume
//! is published, whether it still exists, how many volumes and snapshots there are,
//! and how many mounts sit at a path.

use std::collections::HashSet;
use std::time::{Duration, Instant};

use csi_proto::v1::controller_service_capability::rpc::Type as ControllerRpc;
use csi_proto::v1::{
    ControllerGetVolumeRequest, ControllerPublishVolumeRequest, ControllerPublishVolumeResponse,
    ListSnapshotsRequest, Snapshot, Volume,
};
use tonic::Code;

use crate::beyond::co::{expect_same_again, send};
use crate::check::{Failure, Stop};
use crate::secrets::Secret;
use crate::Ctx;

const LOOKUP_RULE: &str = "spec ControllerGetVolume / ListVolumes: a volume that exists can be looked up, with its published_node_ids";

/// A volume as the controller reports it now.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Seen {
    pub volume: Volume,
    /// The nodes it is published to, when the driver reports them.
    pub published_node_ids: Option<Vec<String>>,
}

/// Whether the driver can tell where a volume is published.
pub(crate) fn reports_published_nodes(ctx: &Ctx) -> bool {
    let caps = ctx.caps();
    caps.controller_has(ControllerRpc::GetVolume)
        || caps.controller_has(ControllerRpc::ListVolumesPublishedNodes)
}

/// Whether the driver can tell whether a volume exists.
pub(crate) fn reports_volumes(ctx: &Ctx) -> bool {
    let caps = ctx.caps();
    caps.controller_has(ControllerRpc::GetVolume) || caps.controller_has(ControllerRpc::ListVolumes)
}

/// Look a volume up: ControllerGetVolume when advertised, else ListVolumes. `Ok(None)`
/// when the driver says it does not exist; `Err` skip when it can't be looked up.
pub(crate) async fn look_up(ctx: &Ctx, volume_id: &str) -> Result<Option<Seen>, Stop> {
    let caps = ctx.caps();
    if caps.controller_has(ControllerRpc::GetVolume) {
        let req = ControllerGetVolumeRequest {
            volume_id: volume_id.to_string(),
        };
        let c = send(ctx, &req, None).await;
        return Ok(c
            .ok_or_code_in(&[Code::NotFound], LOOKUP_RULE)?
            .and_then(|r| {
                Some(Seen {
                    volume: r.volume?,
                    published_node_ids: r.status.map(|s| s.published_node_ids),
                })
            }));
    }
    if caps.controller_has(ControllerRpc::ListVolumes) {
        let with_nodes = caps.controller_has(ControllerRpc::ListVolumesPublishedNodes);
        let entries = list_entries(ctx).await?;
        return Ok(entries
            .into_iter()
            .find(|(v, _)| v.volume_id == volume_id)
            .map(|(volume, nodes)| Seen {
                volume,
                published_node_ids: with_nodes.then_some(nodes),
            }));
    }
    Err(Stop::skip(
        "the driver advertises neither GET_VOLUME nor LIST_VOLUMES, so the outcome can't be observed",
    ))
}

/// Every ListVolumes entry, walking all pages: each volume with its published nodes.
async fn list_entries(ctx: &Ctx) -> Result<Vec<(Volume, Vec<String>)>, Stop> {
    let mut out = Vec::new();
    let mut token = String::new();
    for _ in 0..10_000 {
        let c = crate::call!(
            ctx.controller(),
            list_volumes,
            "ListVolumes",
            csi_proto::v1::ListVolumesRequest {
                max_entries: 0,
                starting_token: token.clone(),
            }
        );
        let resp = c.ok("ListVolumes: a valid request MUST succeed")?;
        out.extend(resp.entries.into_iter().filter_map(|e| {
            let nodes = e.status.map(|s| s.published_node_ids).unwrap_or_default();
            Some((e.volume?, nodes))
        }));
        if resp.next_token.is_empty() {
            return Ok(out);
        }
        token = resp.next_token;
    }
    Err(Failure::new(
        "the walk of ListVolumes pages to end",
        "more than 10000 pages",
        "ListVolumes: the last page has an empty next_token",
    )
    .into())
}

/// Where `volume_id` is published, when the driver reports it; a skip otherwise.
pub(crate) async fn published_nodes(ctx: &Ctx, volume_id: &str) -> Result<Vec<String>, Stop> {
    if !reports_published_nodes(ctx) {
        return Err(Stop::skip(
            "the driver advertises neither GET_VOLUME nor LIST_VOLUMES_PUBLISHED_NODES, so where a volume is published can't be observed",
        ));
    }
    match look_up(ctx, volume_id).await? {
        Some(seen) => Ok(seen.published_node_ids.unwrap_or_default()),
        None => Err(Failure::new(
            format!("volume {volume_id} to exist"),
            "the driver says it does not",
            LOOKUP_RULE,
        )
        .into()),
    }
}

/// The spec that owns the published_node_ids observation.
pub(crate) const PUBLISHED_NODES_SPEC: &str = "Beyond::ErrorTable::ControllerGetVolume and ListVolumes report published_node_ids exactly: the node after ControllerPublishVolume, no node after ControllerUnpublishVolume";
/// The spec that owns the "a deleted volume is gone" observation.
pub(crate) const GONE_SPEC: &str = "Beyond::ErrorTable::ControllerGetVolume fails with NOT_FOUND for an unknown volume id and for a deleted volume";

/// A spec that relies on an observation the driver gets wrong can't judge its own rule:
/// it is skipped with the first cause, and the spec that owns the observation fails.
pub(crate) fn observation_wrong(what: &str, owner: &str) -> Stop {
    Stop::skip(format!(
        "cannot be judged: an observation it relies on is wrong ({what}); the spec that owns it fails: {owner}"
    ))
}

/// Whether a published_node_ids list is one no driver could mean: an empty node id.
pub(crate) fn malformed_node_ids(ids: &[String]) -> bool {
    ids.iter().any(|id| id.is_empty())
}

/// The volume must be gone. A driver that also "finds" a volume that never existed
/// can't show that, so the spec is not judged on it (see [`GONE_SPEC`]).
pub(crate) async fn expect_gone(ctx: &Ctx, volume_id: &str, rule: &str) -> Result<(), Stop> {
    let seen = look_up(ctx, volume_id).await?;
    if seen.is_none() {
        return Ok(());
    }
    if look_up(ctx, &ctx.unknown_volume_id()).await?.is_some() {
        return Err(observation_wrong(
            "the driver reports a volume that never existed as existing",
            GONE_SPEC,
        ));
    }
    Ok(crate::check::ensure(
        false,
        "ControllerGetVolume/ListVolumes",
        format!("volume {volume_id} gone"),
        &seen,
        rule,
    )?)
}

/// The volume must be published to exactly `nodes` (in any order).
pub(crate) async fn expect_published_to(
    ctx: &Ctx,
    volume_id: &str,
    nodes: &[&str],
    rule: &str,
) -> Result<(), Stop> {
    let mut got = published_nodes(ctx, volume_id).await?;
    if malformed_node_ids(&got) && !ctx.spec_name().starts_with(PUBLISHED_NODES_SPEC) {
        return Err(observation_wrong(
            &format!("published_node_ids of volume {volume_id} is {got:?}"),
            PUBLISHED_NODES_SPEC,
        ));
    }
    got.sort();
    let mut want: Vec<String> = nodes.iter().map(|s| s.to_string()).collect();
    want.sort();
    Ok(crate::check::ensure(
        got == want,
        "ControllerGetVolume/ListVolumes",
        format!("volume {volume_id} published to exactly {want:?}"),
        &got,
        rule,
    )?)
}

/// Where the driver reports it, the volume must be published to exactly `nodes`;
/// a driver that can't tell passes.
pub(crate) async fn expect_published_to_where_reported(
    ctx: &Ctx,
    volume_id: &str,
    nodes: &[&str],
    rule: &str,
) -> Result<(), Stop> {
    if reports_published_nodes(ctx) {
        expect_published_to(ctx, volume_id, nodes, rule).await?;
    }
    Ok(())
}

/// An expansion answered `capacity_bytes`: it must be at least the `requested` size
/// and, where the driver reports volumes, the volume must show that capacity now.
pub(crate) async fn expect_expanded(
    ctx: &Ctx,
    volume_id: &str,
    requested: i64,
    capacity_bytes: i64,
    rule: &str,
) -> Result<(), Stop> {
    crate::check::ensure(
        capacity_bytes >= requested,
        "ControllerExpandVolume",
        format!("capacity_bytes >= {requested}"),
        capacity_bytes,
        rule,
    )?;
    if reports_volumes(ctx) {
        let seen = look_up(ctx, volume_id)
            .await?
            .map(|s| s.volume.capacity_bytes);
        crate::check::ensure(
            seen == Some(capacity_bytes),
            "ControllerGetVolume/ListVolumes",
            format!("the volume's capacity_bytes {capacity_bytes}"),
            seen,
            rule,
        )?;
    }
    Ok(())
}

/// How many volumes ListVolumes shows published to `node_id`, when the driver lists
/// volumes with their published nodes.
pub(crate) async fn volumes_published_to(ctx: &Ctx, node_id: &str) -> Result<Option<usize>, Stop> {
    if !ctx
        .caps()
        .controller_has(ControllerRpc::ListVolumesPublishedNodes)
    {
        return Ok(None);
    }
    Ok(Some(
        list_entries(ctx)
            .await?
            .iter()
            .filter(|(_, nodes)| nodes.iter().any(|n| n == node_id))
            .count(),
    ))
}

/// The ids of every volume, when the driver lists volumes.
pub(crate) async fn volume_ids(ctx: &Ctx) -> Result<Option<HashSet<String>>, Stop> {
    if !ctx.caps().controller_has(ControllerRpc::ListVolumes) {
        return Ok(None);
    }
    Ok(Some(
        list_entries(ctx)
            .await?
            .into_iter()
            .map(|(v, _)| v.volume_id)
            .collect(),
    ))
}

/// The volumes that existed before a spec's calls, so the spec can tell afterwards
/// whether its calls created more volumes than they answered with.
pub(crate) struct VolumeCensus {
    before: Option<HashSet<String>>,
}

impl VolumeCensus {
    /// Count now (nothing to compare with when the driver can't list volumes).
    pub async fn take(ctx: &Ctx) -> Result<VolumeCensus, Stop> {
        Ok(VolumeCensus {
            before: volume_ids(ctx).await?,
        })
    }

    /// Every volume that appeared since the census must be one of `ours` or one that
    /// another spec of this run created (and recorded). Other specs run in parallel,
    /// so an unexplained volume gets a few seconds to show up in the run's ledger
    /// before it counts as leaked.
    pub async fn expect_only(&self, ctx: &Ctx, ours: &[String], rule: &str) -> Result<(), Stop> {
        let Some(before) = &self.before else {
            return Ok(());
        };
        let grace = Instant::now() + Duration::from_secs(3);
        loop {
            let now = volume_ids(ctx).await?.unwrap_or_default();
            let ledger = ctx.run_ledger();
            let unexplained: Vec<String> = now
                .iter()
                .filter(|id| !before.contains(*id))
                .filter(|id| !ours.contains(id))
                .filter(|id| !ledger.volumes.contains_key(*id))
                .cloned()
                .collect();
            if unexplained.is_empty() {
                return Ok(());
            }
            if Instant::now() >= grace {
                return Err(Failure::new(
                    format!("no volume besides {ours:?} created by this spec's calls"),
                    format!(
                        "volumes appeared that no call answered with and no spec of this run recorded: {unexplained:?}"
                    ),
                    rule,
                )
                .into());
            }
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
    }
}

/// The snapshots of `source_volume_id`, by ListSnapshots; a skip without LIST_SNAPSHOTS.
pub(crate) async fn snapshots_of(ctx: &Ctx, source_volume_id: &str) -> Result<Vec<Snapshot>, Stop> {
    if !ctx.caps().controller_has(ControllerRpc::ListSnapshots) {
        return Err(Stop::skip(
            "the driver does not advertise LIST_SNAPSHOTS, so snapshots can't be counted",
        ));
    }
    let req = ListSnapshotsRequest {
        source_volume_id: source_volume_id.to_string(),
        secrets: ctx.secrets(Secret::ListSnapshots),
        ..Default::default()
    };
    let resp = send(ctx, &req, None)
        .await
        .ok("ListSnapshots: a valid request MUST succeed")?;
    Ok(resp
        .entries
        .into_iter()
        .filter_map(|e| e.snapshot)
        .collect())
}

/// How many mounts sit at `path` in this process's mount table, or `None` when the
/// table can't be read. A driver in another mount namespace shows 0 here, so callers
/// only use this to catch mounts stacked twice.
/// The mount options (per-mount and the filesystem's own) of the topmost mount at
/// `path`, when it is in this process's mount table.
pub fn mount_options_at(path: &str) -> Option<Vec<String>> {
    let table = std::fs::read_to_string("/proc/self/mountinfo").ok()?;
    let want = std::fs::canonicalize(path)
        .map(|p| p.to_string_lossy().to_string())
        .unwrap_or_else(|_| path.to_string());
    table
        .lines()
        .rev()
        .find(|line| {
            line.split(' ')
                .nth(4)
                .map(unescape_mount_path)
                .is_some_and(|m| m == want || m == path)
        })
        .map(|line| {
            let fields: Vec<&str> = line.split(' ').collect();
            let per_mount = fields.get(5).copied().unwrap_or_default();
            // After the optional fields, "-", the type, the source, the super options.
            let super_options = fields
                .iter()
                .position(|f| *f == "-")
                .and_then(|i| fields.get(i + 3))
                .copied()
                .unwrap_or_default();
            per_mount
                .split(',')
                .chain(super_options.split(','))
                .filter(|o| !o.is_empty())
                .map(str::to_string)
                .collect()
        })
}

pub(crate) fn mounts_at(path: &str) -> Option<usize> {
    let table = std::fs::read_to_string("/proc/self/mountinfo").ok()?;
    let want = std::fs::canonicalize(path)
        .map(|p| p.to_string_lossy().to_string())
        .unwrap_or_else(|_| path.to_string());
    Some(
        table
            .lines()
            .filter_map(|line| line.split(' ').nth(4))
            .map(unescape_mount_path)
            .filter(|mount_point| *mount_point == want || *mount_point == path)
            .count(),
    )
}

/// mountinfo writes space, tab, newline and backslash as octal escapes (`\040`).
fn unescape_mount_path(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\' && i + 3 < b.len() {
            let digits = std::str::from_utf8(&b[i + 1..i + 4]).unwrap_or("");
            if let Ok(v) = u8::from_str_radix(digits, 8) {
                out.push(v);
                i += 4;
                continue;
            }
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// At most one mount at `path`: a retried or repeated stage or publish must not stack
/// a second mount on the first.
pub(crate) fn expect_at_most_one_mount(path: &str, rpc: &str, rule: &str) -> Result<(), Stop> {
    match mounts_at(path) {
        Some(n) if n > 1 => Err(Failure::new(
            format!("at most one mount at {path}"),
            format!("{n} mounts stacked there (/proc/self/mountinfo)"),
            rule,
        )
        .during(format!("checking the mounts {rpc} left"))
        .into()),
        _ => Ok(()),
    }
}

/// A ControllerPublishVolume that settled with `first`: sent once more it must answer
/// the same publish_context, and where the driver reports it the volume must be
/// published to the request's node only.
pub(crate) async fn expect_attached_once(
    ctx: &Ctx,
    req: &ControllerPublishVolumeRequest,
    first: &ControllerPublishVolumeResponse,
    rule: &str,
) -> Result<(), Stop> {
    expect_same_again(ctx, req, first, |r| r.publish_context.clone(), rule).await?;
    expect_published_to_where_reported(ctx, &req.volume_id, &[&req.node_id], rule).await
}

#[cfg(test)]
mod tests {
    use super::unescape_mount_path;

    #[test]
    fn mountinfo_escapes_are_undone() {
        assert_eq!(unescape_mount_path(r"/tmp/a\040b"), "/tmp/a b");
        assert_eq!(unescape_mount_path("/plain"), "/plain");
        assert_eq!(unescape_mount_path(r"/end\04"), r"/end\04");
    }
}
