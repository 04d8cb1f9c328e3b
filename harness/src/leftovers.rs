//! After the specs: what the run created that the driver still lists, deleted so a
//! failed run leaves nothing behind either.

use csi_proto::v1::controller_service_capability::rpc::Type as ControllerRpc;
use csi_proto::v1::{
    DeleteSnapshotRequest, DeleteVolumeRequest, ListSnapshotsRequest, ListVolumesRequest,
};
use csi_suites::RunState;

/// Volumes and snapshots from the run's ledger that the driver still lists; each is
/// then deleted, so a failed run does not leave them behind either.
pub(crate) async fn leftovers(run: &RunState) -> Vec<String> {
    let ledger = &run.ledger();
    let caps = run.caps();
    let controller = &run.clients().controller;
    let mut found = Vec::new();
    if !ledger.snapshots.is_empty() && caps.controller_has(ControllerRpc::ListSnapshots) {
        found.extend(
            sweep_pages(move |token| async move {
                let req = ListSnapshotsRequest {
                    starting_token: token,
                    secrets: csi_suites::Secret::ListSnapshots.in_file(&run.config().secrets),
                    ..Default::default()
                };
                let resp = controller
                    .clone()
                    .list_snapshots(req)
                    .await
                    .ok()?
                    .into_inner();
                let mut found = Vec::new();
                for s in resp.entries.into_iter().filter_map(|e| e.snapshot) {
                    if let Some(spec) = ledger.snapshots.get(&s.snapshot_id) {
                        found.push(format!("snapshot {} (created by {spec})", s.snapshot_id));
                        let req = DeleteSnapshotRequest {
                            snapshot_id: s.snapshot_id.clone(),
                            secrets: csi_suites::Secret::DeleteSnapshot
                                .in_file(&run.config().secrets),
                        };
                        let _ = controller.clone().delete_snapshot(req).await;
                    }
                }
                Some((found, resp.next_token))
            })
            .await,
        );
    }
    if !ledger.volumes.is_empty() && caps.controller_has(ControllerRpc::ListVolumes) {
        found.extend(
            sweep_pages(move |token| async move {
                let req = ListVolumesRequest {
                    max_entries: 0,
                    starting_token: token,
                };
                let resp = controller
                    .clone()
                    .list_volumes(req)
                    .await
                    .ok()?
                    .into_inner();
                let mut found = Vec::new();
                for v in resp.entries.into_iter().filter_map(|e| e.volume) {
                    if let Some(spec) = ledger.volumes.get(&v.volume_id) {
                        found.push(format!("volume {} (created by {spec})", v.volume_id));
                        let req = DeleteVolumeRequest {
                            volume_id: v.volume_id.clone(),
                            secrets: csi_suites::Secret::DeleteVolume
                                .in_file(&run.config().secrets),
                        };
                        let _ = controller.clone().delete_volume(req).await;
                    }
                }
                Some((found, resp.next_token))
            })
            .await,
        );
    }
    found
}

/// Walk a listing from its first page to its last, or until a page fails or hands
/// back the token it was given: `page` takes each starting token, deals with that
/// page, and answers what it found there and the next token.
async fn sweep_pages<F, Fut>(mut page: F) -> Vec<String>
where
    F: FnMut(String) -> Fut,
    Fut: std::future::Future<Output = Option<(Vec<String>, String)>>,
{
    let mut found = Vec::new();
    let mut token = String::new();
    for _ in 0..10_000 {
        let Some((on_page, next)) = page(token.clone()).await else {
            break;
        };
        found.extend(on_page);
        if next.is_empty() || next == token {
            break;
        }
        token = next;
    }
    found
}
