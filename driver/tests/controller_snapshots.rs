//! Snapshots and volume sources over real gRPC, on both cloud backends: CreateSnapshot,
//! DeleteSnapshot, ListSnapshots, GetSnapshot, and CreateVolume from a snapshot or a volume
//! (a clone, which the HTTP backend makes through a temporary snapshot).

mod common;

use std::collections::HashSet;

use common::*;
use csi_proto::v1::volume_content_source::{SnapshotSource, Type as SourceType, VolumeSource};
use csi_proto::v1::*;
use tonic::Code;

both_backends!(
    create_snapshot_without_name_or_source_is_invalid,
    create_snapshot_is_idempotent_by_name_and_honest_about_readiness,
    create_snapshot_with_the_name_of_another_volumes_snapshot_already_exists,
    create_snapshot_of_a_missing_volume_is_not_found,
    create_snapshot_rejects_unknown_parameters,
    get_snapshot_finds_by_id_and_an_unknown_one_is_not_found,
    delete_snapshot_of_an_unknown_id_succeeds_and_a_known_one_goes,
    list_snapshots_filters_by_id_and_source_and_pages,
    create_volume_from_a_snapshot_records_its_source,
    create_volume_from_a_volume_clones_it,
);

fn snapshot_request(name: &str, source: &str) -> CreateSnapshotRequest {
    CreateSnapshotRequest {
        name: name.to_string(),
        source_volume_id: source.to_string(),
        ..Default::default()
    }
}

async fn snapshot(env: &TestEnv, name: &str, source: &str) -> Snapshot {
    env.controller()
        .create_snapshot(snapshot_request(name, source))
        .await
        .unwrap_or_else(|e| panic!("CreateSnapshot {name}: {e:?}"))
        .into_inner()
        .snapshot
        .expect("snapshot")
}

async fn create_snapshot_without_name_or_source_is_invalid(backend: Backend) {
    let env = TestEnv::start(backend).await;
    let mut client = env.controller();
    let id = env.create("snap-source").await;
    assert_status(
        client.create_snapshot(snapshot_request("", &id)).await,
        Code::InvalidArgument,
        "name is required",
    );
    assert_status(
        client.create_snapshot(snapshot_request("snap", "")).await,
        Code::InvalidArgument,
        "source_volume_id is required",
    );
    assert_status(
        client
            .create_snapshot(snapshot_request(&"s".repeat(129), &id))
            .await,
        Code::InvalidArgument,
        "at most 128",
    );
}

async fn create_snapshot_is_idempotent_by_name_and_honest_about_readiness(backend: Backend) {
    let env = TestEnv::start(backend).await;
    let id = env.create("snapped").await;
    let name = format!("Snapshot Name {}", "z".repeat(114));
    assert_eq!(name.len(), 128);
    let first = snapshot(&env, &name, &id).await;
    assert_eq!(first.source_volume_id, id);
    assert_eq!(first.size_bytes, GIB);
    assert!(first.creation_time.is_some());
    let in_cloud = env
        .cloud
        .get_snapshot(&first.snapshot_id)
        .expect("the cloud has it");
    // The cloud makes a snapshot before it answers, so it is ready.
    assert!(first.ready_to_use);
    assert_eq!(in_cloud.volume_id, id);
    let again = snapshot(&env, &name, &id).await;
    assert_eq!(again, first);
    assert_eq!(env.cloud.list_snapshots(None, 1, 200).unwrap().total, 1);
}

async fn create_snapshot_with_the_name_of_another_volumes_snapshot_already_exists(
    backend: Backend,
) {
    let env = TestEnv::start(backend).await;
    let a = env.create("snap-a").await;
    let b = env.create("snap-b").await;
    snapshot(&env, "shared-name", &a).await;
    // spec: same name, different source → ALREADY_EXISTS.
    let result = env
        .controller()
        .create_snapshot(snapshot_request("shared-name", &b))
        .await;
    assert_status(result, Code::AlreadyExists, &a);
}

async fn create_snapshot_of_a_missing_volume_is_not_found(backend: Backend) {
    let env = TestEnv::start(backend).await;
    let result = env
        .controller()
        .create_snapshot(snapshot_request("orphan", "no-such-volume"))
        .await;
    assert_status(result, Code::NotFound, "no-such-volume");
}

async fn create_snapshot_rejects_unknown_parameters(backend: Backend) {
    let env = TestEnv::start(backend).await;
    let id = env.create("snap-params").await;
    let mut req = snapshot_request("with-params", &id);
    req.parameters = map(&[("retention", "7d")]);
    assert_status(
        env.controller().create_snapshot(req).await,
        Code::InvalidArgument,
        "\"retention\"",
    );
    let mut req = snapshot_request("with-params", &id);
    req.parameters = map(&[
        ("tags", "nightly"),
        ("csi.storage.k8s.io/volumesnapshot/name", "s"),
    ]);
    let s = env
        .controller()
        .create_snapshot(req)
        .await
        .unwrap()
        .into_inner()
        .snapshot
        .unwrap();
    assert_eq!(
        env.cloud.get_snapshot(&s.snapshot_id).unwrap().tags,
        ["nightly"]
    );
}

async fn get_snapshot_finds_by_id_and_an_unknown_one_is_not_found(backend: Backend) {
    let env = TestEnv::start(backend).await;
    let mut client = env.controller();
    let id = env.create("get-snap").await;
    let s = snapshot(&env, "got", &id).await;
    assert_status(
        client.get_snapshot(GetSnapshotRequest::default()).await,
        Code::InvalidArgument,
        "snapshot_id is required",
    );
    assert_status(
        client
            .get_snapshot(GetSnapshotRequest {
                snapshot_id: "no-such-snapshot".into(),
                ..Default::default()
            })
            .await,
        Code::NotFound,
        "no-such-snapshot",
    );
    let got = client
        .get_snapshot(GetSnapshotRequest {
            snapshot_id: s.snapshot_id.clone(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .snapshot
        .unwrap();
    assert_eq!(got, s);
}

async fn delete_snapshot_of_an_unknown_id_succeeds_and_a_known_one_goes(backend: Backend) {
    let env = TestEnv::start(backend).await;
    let mut client = env.controller();
    assert_status(
        client
            .delete_snapshot(DeleteSnapshotRequest::default())
            .await,
        Code::InvalidArgument,
        "snapshot_id is required",
    );
    // spec: DeleteSnapshot of an unknown id MUST succeed.
    client
        .delete_snapshot(DeleteSnapshotRequest {
            snapshot_id: "no-such-snapshot".into(),
            ..Default::default()
        })
        .await
        .unwrap();
    let id = env.create("del-snap").await;
    let s = snapshot(&env, "doomed-snapshot", &id).await;
    for _ in 0..2 {
        client
            .delete_snapshot(DeleteSnapshotRequest {
                snapshot_id: s.snapshot_id.clone(),
                ..Default::default()
            })
            .await
            .unwrap();
    }
    assert!(env.cloud.get_snapshot(&s.snapshot_id).is_err());
}

fn list_request(snapshot_id: &str, source: &str, max: i32, token: &str) -> ListSnapshotsRequest {
    ListSnapshotsRequest {
        max_entries: max,
        starting_token: token.to_string(),
        source_volume_id: source.to_string(),
        snapshot_id: snapshot_id.to_string(),
        ..Default::default()
    }
}

fn snapshot_ids(response: &ListSnapshotsResponse) -> Vec<String> {
    response
        .entries
        .iter()
        .map(|e| e.snapshot.as_ref().unwrap().snapshot_id.clone())
        .collect()
}

async fn list_snapshots_filters_by_id_and_source_and_pages(backend: Backend) {
    let env = TestEnv::start(backend).await;
    let mut client = env.controller();
    let a = env.create("list-a").await;
    let b = env.create("list-b").await;
    let mut of_a = Vec::new();
    for i in 0..3 {
        of_a.push(snapshot(&env, &format!("a-{i}"), &a).await.snapshot_id);
    }
    let of_b = snapshot(&env, "b-0", &b).await.snapshot_id;

    let by_id = client
        .list_snapshots(list_request(&of_b, "", 0, ""))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(snapshot_ids(&by_id), std::slice::from_ref(&of_b));
    let unknown = client
        .list_snapshots(list_request("no-such-snapshot", "", 0, ""))
        .await
        .unwrap()
        .into_inner();
    assert!(unknown.entries.is_empty());
    let mismatch = client
        .list_snapshots(list_request(&of_b, &a, 0, ""))
        .await
        .unwrap()
        .into_inner();
    assert!(mismatch.entries.is_empty(), "id and source must both match");

    let by_source = client
        .list_snapshots(list_request("", &a, 0, ""))
        .await
        .unwrap()
        .into_inner();
    let got: HashSet<String> = snapshot_ids(&by_source).into_iter().collect();
    assert_eq!(got, of_a.iter().cloned().collect::<HashSet<_>>());
    let unknown_source = client
        .list_snapshots(list_request("", "no-such-volume", 0, ""))
        .await
        .unwrap()
        .into_inner();
    assert!(unknown_source.entries.is_empty());

    let mut paged = Vec::new();
    let mut token = String::new();
    loop {
        let page = client
            .list_snapshots(list_request("", "", 3, &token))
            .await
            .unwrap()
            .into_inner();
        assert!(page.entries.len() <= 3);
        paged.extend(snapshot_ids(&page));
        if page.next_token.is_empty() {
            break;
        }
        token = page.next_token;
    }
    paged.sort();
    let mut all: Vec<String> = of_a.iter().cloned().chain([of_b]).collect();
    all.sort();
    assert_eq!(paged, all);

    assert_status(
        client
            .list_snapshots(list_request("", "", 0, "not-a-token"))
            .await,
        Code::Aborted,
        "starting_token",
    );
}

fn from_snapshot(name: &str, snapshot_id: &str, bytes: i64) -> CreateVolumeRequest {
    CreateVolumeRequest {
        volume_content_source: Some(VolumeContentSource {
            r#type: Some(SourceType::Snapshot(SnapshotSource {
                snapshot_id: snapshot_id.to_string(),
            })),
        }),
        ..create_request(name, bytes)
    }
}

fn from_volume(name: &str, volume_id: &str, bytes: i64) -> CreateVolumeRequest {
    CreateVolumeRequest {
        volume_content_source: Some(VolumeContentSource {
            r#type: Some(SourceType::Volume(VolumeSource {
                volume_id: volume_id.to_string(),
            })),
        }),
        ..create_request(name, bytes)
    }
}

async fn create_volume_from_a_snapshot_records_its_source(backend: Backend) {
    let env = TestEnv::start(backend).await;
    let mut client = env.controller();
    let source = env
        .create_volume(create_request("restore-src", 2 * GIB))
        .await;
    let s = snapshot(&env, "restore-point", &source.volume_id).await;
    // Asked for less than the snapshot holds, the volume gets the snapshot's size.
    let v = env
        .create_volume(from_snapshot("restored", &s.snapshot_id, GIB))
        .await;
    assert_eq!(v.capacity_bytes, 2 * GIB);
    assert_eq!(
        v.content_source,
        from_snapshot("", &s.snapshot_id, 0).volume_content_source
    );
    let again = env
        .create_volume(from_snapshot("restored", &s.snapshot_id, GIB))
        .await;
    assert_eq!(again, v);
    // spec: same name, other source → ALREADY_EXISTS.
    assert_status(
        client.create_volume(create_request("restored", GIB)).await,
        Code::AlreadyExists,
        "source",
    );
    assert_eq!(
        env.cloud.get_volume(&v.volume_id).unwrap().snapshot_id,
        Some(s.snapshot_id.clone())
    );
}

async fn create_volume_from_a_volume_clones_it(backend: Backend) {
    let env = TestEnv::start(backend).await;
    let source = env.create("clone-src").await;
    let v = env.create_volume(from_volume("cloned", &source, GIB)).await;
    assert_ne!(v.volume_id, source);
    assert_eq!(
        v.content_source,
        from_volume("", &source, 0).volume_content_source
    );
    let again = env.create_volume(from_volume("cloned", &source, GIB)).await;
    assert_eq!(again.volume_id, v.volume_id);
    // No temporary snapshot is left behind.
    assert_eq!(env.cloud.list_snapshots(None, 1, 200).unwrap().total, 0);
    if backend == Backend::Memory {
        // The in-process cloud copies the image: the clone's bytes live in its own file.
        let dir = env
            .driver
            .driver
            .cloud_data_dir()
            .expect("data dir")
            .to_path_buf();
        assert!(dir
            .join("volumes")
            .join(format!("{}.img", v.volume_id))
            .exists());
    }
}
