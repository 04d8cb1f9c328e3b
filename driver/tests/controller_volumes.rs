//! Controller volume RPCs over real gRPC, on both cloud backends: CreateVolume,
//! DeleteVolume, ValidateVolumeCapabilities, ListVolumes, GetCapacity, ControllerGetVolume,
//! ControllerModifyVolume, ControllerExpandVolume and ControllerGetCapabilities, with every
//! error row of the spec's table that applies to them.

mod common;

use std::collections::HashSet;
use std::time::Duration;

use common::*;
use csi_proto::v1::controller_service_capability::rpc::Type as Rpc;
use csi_proto::v1::volume_capability::access_mode::Mode;
use csi_proto::v1::*;
use tonic::Code;

both_backends!(
    create_volume_without_a_name_is_invalid,
    create_volume_without_capabilities_is_invalid,
    create_volume_refuses_multi_node_access_modes,
    create_volume_rounds_up_to_whole_gib_and_defaults_to_one,
    create_volume_refuses_capacity_it_cannot_meet,
    create_volume_is_idempotent_by_name,
    create_volume_maps_any_128_byte_name_to_a_cloud_name,
    create_volume_rejects_unknown_parameters_naming_the_key,
    create_volume_places_the_volume_by_topology,
    create_volume_from_a_missing_source_is_not_found,
    create_volume_applies_valid_mutable_parameters_only,
    delete_volume_of_an_unknown_id_succeeds_and_a_known_one_goes,
    delete_volume_of_a_published_volume_names_the_node,
    validate_volume_capabilities_confirms_only_what_is_supported,
    list_volumes_pages_with_opaque_tokens,
    list_volumes_pagination_tolerates_changes_between_pages,
    get_capacity_reports_quota_left_and_honours_topology,
    controller_get_volume_reports_publication_and_condition,
    modify_volume_changes_tags_and_refuses_anything_else,
    expand_volume_grows_through_the_resize_action,
    expand_volume_retried_after_a_timeout_resumes_the_resize,
    capabilities_advertise_exactly_what_works,
);

async fn create_volume_without_a_name_is_invalid(backend: Backend) {
    let env = TestEnv::start(backend).await;
    // spec: a missing required field is INVALID_ARGUMENT.
    let result = env
        .controller()
        .create_volume(create_request("", GIB))
        .await;
    assert_status(result, Code::InvalidArgument, "name is required");
}

async fn create_volume_without_capabilities_is_invalid(backend: Backend) {
    let env = TestEnv::start(backend).await;
    let mut req = create_request("no-caps", GIB);
    req.volume_capabilities.clear();
    let result = env.controller().create_volume(req).await;
    assert_status(
        result,
        Code::InvalidArgument,
        "volume_capabilities is required",
    );

    let mut req = create_request("no-mode", GIB);
    req.volume_capabilities[0].access_mode = None;
    let result = env.controller().create_volume(req).await;
    assert_status(result, Code::InvalidArgument, "access_mode is required");
    assert!(env.volumes_named("no-mode").is_empty());
}

async fn create_volume_refuses_multi_node_access_modes(backend: Backend) {
    let env = TestEnv::start(backend).await;
    for mode in [
        Mode::MultiNodeMultiWriter,
        Mode::MultiNodeReaderOnly,
        Mode::MultiNodeSingleWriter,
    ] {
        let mut req = create_request("multi", GIB);
        req.volume_capabilities = vec![capability(mode, false)];
        let result = env.controller().create_volume(req).await;
        assert_status(result, Code::InvalidArgument, mode.as_str_name());
    }
    for (i, mode) in [
        Mode::SingleNodeSingleWriter,
        Mode::SingleNodeMultiWriter,
        Mode::SingleNodeReaderOnly,
    ]
    .into_iter()
    .enumerate()
    {
        let mut req = create_request(&format!("single-{i}"), GIB);
        req.volume_capabilities = vec![capability(mode, true)];
        env.controller()
            .create_volume(req)
            .await
            .expect("single-node mode");
    }
}

async fn create_volume_rounds_up_to_whole_gib_and_defaults_to_one(backend: Backend) {
    let env = TestEnv::start(backend).await;
    let mut req = create_request("default-size", 0);
    req.capacity_range = None;
    let v = env.create_volume(req).await;
    assert_eq!(v.capacity_bytes, GIB);

    let req = create_request("rounded", GIB + GIB / 2);
    let v = env.create_volume(req).await;
    assert_eq!(v.capacity_bytes, 2 * GIB);
    assert_eq!(env.cloud.get_volume(&v.volume_id).unwrap().size_gib, 2);
}

async fn create_volume_refuses_capacity_it_cannot_meet(backend: Backend) {
    let env = TestEnv::start(backend).await;
    let cases = [
        (2 * GIB, GIB, "exceeds limit_bytes"),
        (0, GIB / 2, "below the smallest volume"),
        (16385 * GIB, 0, "largest volume"),
        (GIB + 1, GIB + 1000, "whole GiB"),
    ];
    for (required, limit, fragment) in cases {
        let mut req = create_request("out-of-range", required);
        req.capacity_range = Some(CapacityRange {
            required_bytes: required,
            limit_bytes: limit,
        });
        let result = env.controller().create_volume(req).await;
        assert_status(result, Code::OutOfRange, fragment);
    }
    assert!(env.volumes_named("out-of-range").is_empty());
}

async fn create_volume_is_idempotent_by_name(backend: Backend) {
    let env = TestEnv::start(backend).await;
    let mut client = env.controller();
    let first = client
        .create_volume(create_request("same-name", GIB))
        .await
        .unwrap()
        .into_inner();
    let again = client
        .create_volume(create_request("same-name", GIB))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(first.volume, again.volume);
    assert_eq!(env.volumes_named("same-name").len(), 1);

    // spec: same name, incompatible capacity → ALREADY_EXISTS.
    let result = client
        .create_volume(create_request("same-name", 3 * GIB))
        .await;
    assert_status(result, Code::AlreadyExists, "same-name");
    assert_eq!(env.volumes_named("same-name").len(), 1);
}

async fn create_volume_maps_any_128_byte_name_to_a_cloud_name(backend: Backend) {
    let env = TestEnv::start(backend).await;
    let mut client = env.controller();
    let long = format!("PVC With Spaces_and.Dots/{}", "x".repeat(103));
    assert_eq!(long.len(), 128);
    let v = env.create_volume(create_request(&long, GIB)).await;
    let cloud_volume = env.cloud.get_volume(&v.volume_id).unwrap();
    assert!(cloud_volume.name.len() <= 64, "{}", cloud_volume.name);
    assert!(
        cloud_volume.name.starts_with("pvc-with-spaces-and-dots-x"),
        "{}",
        cloud_volume.name
    );
    let again = env.create_volume(create_request(&long, GIB)).await;
    assert_eq!(again.volume_id, v.volume_id);

    // Two names that map alike apart from the hash are two volumes.
    let other = format!("PVC With Spaces_and.Dots/{}", "y".repeat(103));
    let w = env.create_volume(create_request(&other, GIB)).await;
    assert_ne!(w.volume_id, v.volume_id);

    let too_long = "n".repeat(129);
    let result = client.create_volume(create_request(&too_long, GIB)).await;
    assert_status(result, Code::InvalidArgument, "at most 128");
}

async fn create_volume_rejects_unknown_parameters_naming_the_key(backend: Backend) {
    let env = TestEnv::start(backend).await;
    let mut client = env.controller();
    let mut req = create_request("params", GIB);
    req.parameters = map(&[("csi.storage.k8s.io/fstype", "xfs"), ("iops", "3000")]);
    let result = client.create_volume(req).await;
    assert_status(result, Code::InvalidArgument, "\"iops\"");

    let mut req = create_request("params", GIB);
    req.parameters = map(&[("filler", &"x".repeat(4100))]);
    let result = client.create_volume(req).await;
    assert_status(result, Code::InvalidArgument, "at most 4096");
    assert!(env.volumes_named("params").is_empty());

    let mut req = create_request("params", GIB);
    req.parameters = map(&[
        ("csi.storage.k8s.io/fstype", "xfs"),
        ("csi.storage.k8s.io/pvc/name", "data"),
        ("csi.storage.k8s.io/pvc/namespace", "prod"),
        ("csi.storage.k8s.io/pv/name", "pvc-123"),
        ("tags", "team:storage,env-test"),
    ]);
    let v = env.create_volume(req).await;
    let cloud_volume = env.cloud.get_volume(&v.volume_id).unwrap();
    assert_eq!(cloud_volume.tags, ["team:storage", "env-test"]);
    assert!(
        cloud_volume.description.contains("prod/data"),
        "{}",
        cloud_volume.description
    );
}

async fn create_volume_places_the_volume_by_topology(backend: Backend) {
    let env = TestEnv::start(backend).await;
    let mut client = env.controller();
    let mut req = create_request("placed", GIB);
    req.accessibility_requirements = Some(TopologyRequirement {
        requisite: vec![topology("nyc3"), topology("sfo3")],
        preferred: vec![topology("sfo3")],
    });
    let v = env.create_volume(req.clone()).await;
    assert_eq!(v.accessible_topology, vec![topology("sfo3")]);
    assert_eq!(env.cloud.get_volume(&v.volume_id).unwrap().region, "sfo3");

    // spec: same name, incompatible topology → ALREADY_EXISTS.
    req.accessibility_requirements = Some(TopologyRequirement {
        requisite: vec![topology("nyc3")],
        preferred: vec![],
    });
    assert_status(
        client.create_volume(req).await,
        Code::AlreadyExists,
        "region sfo3",
    );

    // spec: a topology that can't be met → RESOURCE_EXHAUSTED.
    let mut req = create_request("unplaceable", GIB);
    req.accessibility_requirements = Some(TopologyRequirement {
        requisite: vec![topology("mars1")],
        preferred: vec![],
    });
    assert_status(
        client.create_volume(req).await,
        Code::ResourceExhausted,
        "available",
    );

    let mut req = create_request("by-parameter", GIB);
    req.parameters = map(&[("region", "ams3")]);
    let v = env.create_volume(req).await;
    assert_eq!(v.accessible_topology, vec![topology("ams3")]);

    let mut req = create_request("default-region", GIB);
    req.accessibility_requirements = None;
    let v = env.create_volume(req).await;
    assert_eq!(v.accessible_topology, vec![topology("nyc3")]);
}

async fn create_volume_from_a_missing_source_is_not_found(backend: Backend) {
    let env = TestEnv::start(backend).await;
    let mut client = env.controller();
    let mut req = create_request("from-nothing", GIB);
    req.volume_content_source = Some(VolumeContentSource {
        r#type: Some(volume_content_source::Type::Snapshot(
            volume_content_source::SnapshotSource {
                snapshot_id: "no-such-snapshot".into(),
            },
        )),
    });
    assert_status(
        client.create_volume(req).await,
        Code::NotFound,
        "no-such-snapshot",
    );

    let mut req = create_request("from-nothing", GIB);
    req.volume_content_source = Some(VolumeContentSource {
        r#type: Some(volume_content_source::Type::Volume(
            volume_content_source::VolumeSource {
                volume_id: "no-such-volume".into(),
            },
        )),
    });
    assert_status(
        client.create_volume(req).await,
        Code::NotFound,
        "no-such-volume",
    );
    assert!(env.volumes_named("from-nothing").is_empty());
}

async fn create_volume_applies_valid_mutable_parameters_only(backend: Backend) {
    let env = TestEnv::start(backend).await;
    let mut client = env.controller();
    let mut req = create_request("mutable", GIB);
    req.mutable_parameters = map(&[("iops", "100")]);
    assert_status(
        client.create_volume(req).await,
        Code::InvalidArgument,
        "\"iops\"",
    );
    assert!(env.volumes_named("mutable").is_empty());

    let mut req = create_request("mutable", GIB);
    req.mutable_parameters = map(&[("tags", "gold")]);
    let v = env.create_volume(req).await;
    assert_eq!(env.cloud.get_volume(&v.volume_id).unwrap().tags, ["gold"]);
}

async fn delete_volume_of_an_unknown_id_succeeds_and_a_known_one_goes(backend: Backend) {
    let env = TestEnv::start(backend).await;
    let mut client = env.controller();
    let result = client.delete_volume(DeleteVolumeRequest::default()).await;
    assert_status(result, Code::InvalidArgument, "volume_id is required");

    // spec: DeleteVolume of an unknown id MUST succeed.
    client
        .delete_volume(DeleteVolumeRequest {
            volume_id: "no-such-volume".into(),
            ..Default::default()
        })
        .await
        .expect("unknown id is OK");

    let id = env.create("to-delete").await;
    for _ in 0..2 {
        client
            .delete_volume(DeleteVolumeRequest {
                volume_id: id.clone(),
                ..Default::default()
            })
            .await
            .expect("delete, then delete again");
    }
    assert!(env.cloud.get_volume(&id).is_err());
}

async fn delete_volume_of_a_published_volume_names_the_node(backend: Backend) {
    let env = TestEnv::start(backend).await;
    let id = env.create("in-use").await;
    env.publish(&id, OTHER_NODE).await;
    let result = env
        .controller()
        .delete_volume(DeleteVolumeRequest {
            volume_id: id.clone(),
            ..Default::default()
        })
        .await;
    assert_status(result, Code::FailedPrecondition, "node 2");
    assert!(env.cloud.get_volume(&id).is_ok());
}

async fn validate_volume_capabilities_confirms_only_what_is_supported(backend: Backend) {
    let env = TestEnv::start(backend).await;
    let mut client = env.controller();
    let id = env.create("validated").await;
    let request =
        |volume_id: &str, caps: Vec<VolumeCapability>| ValidateVolumeCapabilitiesRequest {
            volume_id: volume_id.to_string(),
            volume_capabilities: caps,
            volume_context: map(&[("k", "v")]),
            parameters: map(&[("csi.storage.k8s.io/fstype", "ext4")]),
            ..Default::default()
        };
    assert_status(
        client
            .validate_volume_capabilities(request("", vec![mount_cap()]))
            .await,
        Code::InvalidArgument,
        "volume_id is required",
    );
    assert_status(
        client
            .validate_volume_capabilities(request(&id, vec![]))
            .await,
        Code::InvalidArgument,
        "volume_capabilities is required",
    );
    assert_status(
        client
            .validate_volume_capabilities(request("no-such-volume", vec![mount_cap()]))
            .await,
        Code::NotFound,
        "no-such-volume",
    );

    let ok = client
        .validate_volume_capabilities(request(&id, vec![mount_cap(), block_cap()]))
        .await
        .unwrap()
        .into_inner();
    let confirmed = ok.confirmed.expect("confirmed");
    assert_eq!(
        confirmed.volume_capabilities,
        vec![mount_cap(), block_cap()]
    );
    assert_eq!(confirmed.volume_context, map(&[("k", "v")]));
    assert_eq!(
        confirmed.parameters,
        map(&[("csi.storage.k8s.io/fstype", "ext4")])
    );

    let multi = capability(Mode::MultiNodeMultiWriter, false);
    let not_ok = client
        .validate_volume_capabilities(request(&id, vec![mount_cap(), multi]))
        .await
        .unwrap()
        .into_inner();
    assert!(not_ok.confirmed.is_none());
    assert!(
        not_ok.message.contains("MULTI_NODE_MULTI_WRITER"),
        "{}",
        not_ok.message
    );
}

/// Every volume id, following next_token from the start.
async fn list_all(env: &TestEnv, max_entries: i32) -> Vec<list_volumes_response::Entry> {
    let mut client = env.controller();
    let mut all = Vec::new();
    let mut token = String::new();
    loop {
        let page = client
            .list_volumes(ListVolumesRequest {
                max_entries,
                starting_token: token.clone(),
            })
            .await
            .unwrap()
            .into_inner();
        assert!(max_entries == 0 || page.entries.len() <= max_entries as usize);
        all.extend(page.entries);
        if page.next_token.is_empty() {
            return all;
        }
        token = page.next_token;
    }
}

fn ids(entries: &[list_volumes_response::Entry]) -> Vec<String> {
    entries
        .iter()
        .map(|e| e.volume.as_ref().unwrap().volume_id.clone())
        .collect()
}

async fn list_volumes_pages_with_opaque_tokens(backend: Backend) {
    let env = TestEnv::start(backend).await;
    let mut created = Vec::new();
    for i in 0..5 {
        created.push(env.create(&format!("listed-{i}")).await);
    }
    env.publish(&created[0], NODE).await;
    let paged = list_all(&env, 2).await;
    let all = list_all(&env, 0).await;
    assert_eq!(
        ids(&paged),
        ids(&all),
        "pages list the same volumes in the same order"
    );
    let mut listed = ids(&all);
    listed.sort();
    let mut expected = created.clone();
    expected.sort();
    assert_eq!(listed, expected, "each volume once");
    for entry in &all {
        let volume_id = &entry.volume.as_ref().unwrap().volume_id;
        let status = entry.status.clone().expect("status");
        let published: Vec<String> = if *volume_id == created[0] {
            vec![NODE.to_string()]
        } else {
            vec![]
        };
        assert_eq!(status.published_node_ids, published);
        assert!(!status.volume_condition.expect("condition").abnormal);
    }

    let mut client = env.controller();
    for bad in ["invalid-token", "abcdefg", "10"] {
        let result = client
            .list_volumes(ListVolumesRequest {
                max_entries: 0,
                starting_token: bad.into(),
            })
            .await;
        assert_status(result, Code::Aborted, "starting_token");
    }
    let result = client
        .list_volumes(ListVolumesRequest {
            max_entries: -1,
            starting_token: String::new(),
        })
        .await;
    assert_status(result, Code::InvalidArgument, "max_entries");
}

async fn list_volumes_pagination_tolerates_changes_between_pages(backend: Backend) {
    let env = TestEnv::start(backend).await;
    let mut client = env.controller();
    for i in 0..4 {
        env.create(&format!("paged-{i}")).await;
    }
    let first = client
        .list_volumes(ListVolumesRequest {
            max_entries: 2,
            starting_token: String::new(),
        })
        .await
        .unwrap()
        .into_inner();
    let first_ids = ids(&first.entries);
    // The page's last volume goes, and a new one comes, before the next page.
    client
        .delete_volume(DeleteVolumeRequest {
            volume_id: first_ids[1].clone(),
            ..Default::default()
        })
        .await
        .unwrap();
    let added = env.create("paged-added").await;
    let mut rest = Vec::new();
    let mut token = first.next_token;
    while !token.is_empty() {
        let page = client
            .list_volumes(ListVolumesRequest {
                max_entries: 2,
                starting_token: token,
            })
            .await
            .expect("a token whose last volume was deleted stays valid")
            .into_inner();
        rest.extend(ids(&page.entries));
        token = page.next_token;
    }
    assert!(rest.contains(&added), "the added volume is listed");
    let mut seen: Vec<String> = first_ids.iter().take(1).cloned().chain(rest).collect();
    let now: HashSet<String> = ids(&list_all(&env, 0).await).into_iter().collect();
    seen.sort();
    let mut expected: Vec<String> = now.into_iter().collect();
    expected.sort();
    assert_eq!(seen, expected, "every live volume exactly once");
}

async fn get_capacity_reports_quota_left_and_honours_topology(backend: Backend) {
    let env = TestEnv::start(backend).await;
    let mut client = env.controller();
    let capacity = |t: Option<Topology>| {
        let mut client = env.controller();
        async move {
            client
                .get_capacity(GetCapacityRequest {
                    volume_capabilities: vec![mount_cap()],
                    parameters: Default::default(),
                    accessible_topology: t,
                })
                .await
                .unwrap()
                .into_inner()
        }
    };
    let before = capacity(None).await;
    let quota = env.cloud.account().capacity_quota_gib as i64 * GIB;
    assert_eq!(before.available_capacity, quota);
    assert_eq!(before.maximum_volume_size, Some(16384 * GIB));
    assert_eq!(before.minimum_volume_size, Some(GIB));
    env.create("uses-capacity").await;
    let after = capacity(Some(topology("nyc3"))).await;
    assert_eq!(after.available_capacity, quota - GIB);
    let elsewhere = capacity(Some(topology("mars1"))).await;
    assert_eq!(elsewhere.available_capacity, 0);

    let multi = client
        .get_capacity(GetCapacityRequest {
            volume_capabilities: vec![capability(Mode::MultiNodeMultiWriter, false)],
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        multi.available_capacity, 0,
        "no capacity for unsupported capabilities"
    );
}

async fn controller_get_volume_reports_publication_and_condition(backend: Backend) {
    let env = TestEnv::start(backend).await;
    let mut client = env.controller();
    assert_status(
        client
            .controller_get_volume(ControllerGetVolumeRequest::default())
            .await,
        Code::InvalidArgument,
        "volume_id is required",
    );
    assert_status(
        client
            .controller_get_volume(ControllerGetVolumeRequest {
                volume_id: "no-such-volume".into(),
            })
            .await,
        Code::NotFound,
        "no-such-volume",
    );
    let id = env.create("got").await;
    env.publish(&id, OTHER_NODE).await;
    let got = client
        .controller_get_volume(ControllerGetVolumeRequest {
            volume_id: id.clone(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(got.volume.unwrap().volume_id, id);
    let status = got.status.unwrap();
    assert_eq!(status.published_node_ids, vec![OTHER_NODE.to_string()]);
    assert!(!status.volume_condition.unwrap().abnormal);
}

async fn modify_volume_changes_tags_and_refuses_anything_else(backend: Backend) {
    let env = TestEnv::start(backend).await;
    let mut client = env.controller();
    let id = env.create("modified").await;
    let modify = |volume_id: &str, params: &[(&str, &str)]| ControllerModifyVolumeRequest {
        volume_id: volume_id.to_string(),
        mutable_parameters: map(params),
        ..Default::default()
    };
    assert_status(
        client
            .controller_modify_volume(modify("", &[("tags", "a")]))
            .await,
        Code::InvalidArgument,
        "volume_id is required",
    );
    // spec: empty mutable_parameters ask for no change, so the answer is OK and nothing
    // moves (the Go csi-sanity's "should modify a volume created without/with a volume
    // attribute class" send exactly this when no parameters are configured).
    env.cloud.update_tags(&id, vec!["kept".into()]).unwrap();
    client
        .controller_modify_volume(modify(&id, &[]))
        .await
        .expect("empty mutable_parameters are a no-op");
    assert_eq!(env.cloud.get_volume(&id).unwrap().tags, ["kept"]);
    client
        .controller_modify_volume(modify(&id, &[("tags", "")]))
        .await
        .unwrap();
    assert_status(
        client
            .controller_modify_volume(modify("no-such-volume", &[("tags", "a")]))
            .await,
        Code::NotFound,
        "no-such-volume",
    );
    // spec: existence is judged before the parameters: an unknown volume is NOT_FOUND
    // with empty parameters (Go's "should fail if volume does not exist") and with
    // unsupported ones.
    for params in [&[][..], &[("iops", "9")][..]] {
        assert_status(
            client
                .controller_modify_volume(modify("no-such-volume", params))
                .await,
            Code::NotFound,
            "no-such-volume",
        );
    }
    // spec: unsupported mutable parameters → INVALID_ARGUMENT, with nothing applied.
    assert_status(
        client
            .controller_modify_volume(modify(&id, &[("tags", "applied"), ("iops", "9")]))
            .await,
        Code::InvalidArgument,
        "\"iops\"",
    );
    assert!(env.cloud.get_volume(&id).unwrap().tags.is_empty());

    client
        .controller_modify_volume(modify(&id, &[("tags", "gold,k8s:fast")]))
        .await
        .unwrap();
    assert_eq!(
        env.cloud.get_volume(&id).unwrap().tags,
        ["gold", "k8s:fast"]
    );
    client
        .controller_modify_volume(modify(&id, &[("tags", "")]))
        .await
        .unwrap();
    assert!(env.cloud.get_volume(&id).unwrap().tags.is_empty());
}

fn expand_request(
    volume_id: &str,
    required: i64,
    cap: Option<VolumeCapability>,
) -> ControllerExpandVolumeRequest {
    ControllerExpandVolumeRequest {
        volume_id: volume_id.to_string(),
        capacity_range: Some(CapacityRange {
            required_bytes: required,
            limit_bytes: 0,
        }),
        volume_capability: cap,
        ..Default::default()
    }
}

async fn expand_volume_grows_through_the_resize_action(backend: Backend) {
    let env = TestEnv::start(backend).await;
    env.set_latency(Duration::ZERO, Duration::ZERO, Duration::from_millis(200));
    let mut client = env.controller();
    let id = env.create("expanded").await;
    assert_status(
        client
            .controller_expand_volume(expand_request("", GIB, None))
            .await,
        Code::InvalidArgument,
        "volume_id is required",
    );
    let mut no_range = expand_request(&id, GIB, None);
    no_range.capacity_range = None;
    assert_status(
        client.controller_expand_volume(no_range).await,
        Code::InvalidArgument,
        "capacity_range is required",
    );
    assert_status(
        client
            .controller_expand_volume(expand_request("no-such-volume", 2 * GIB, None))
            .await,
        Code::NotFound,
        "no-such-volume",
    );
    assert_status(
        client
            .controller_expand_volume(expand_request(&id, 16385 * GIB, None))
            .await,
        Code::OutOfRange,
        "largest volume",
    );

    env.publish(&id, NODE).await;
    let grown = client
        .controller_expand_volume(expand_request(&id, 3 * GIB, Some(mount_cap())))
        .await
        .expect("online expansion of a published volume")
        .into_inner();
    assert_eq!(grown.capacity_bytes, 3 * GIB);
    assert!(grown.node_expansion_required);
    assert_eq!(env.cloud.get_volume(&id).unwrap().size_gib, 3);

    // Volumes never shrink: a smaller request answers the current size.
    let same = client
        .controller_expand_volume(expand_request(&id, GIB, Some(block_cap())))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(same.capacity_bytes, 3 * GIB);
    assert!(
        same.node_expansion_required,
        "a raw block device still needs the node to see its new size"
    );
    assert_eq!(env.actions(&id, fake_cloud::ActionKind::Resize).len(), 1);
}

async fn expand_volume_retried_after_a_timeout_resumes_the_resize(backend: Backend) {
    let env = TestEnv::start(backend).await;
    let id = env.create("slow-resize").await;
    env.set_latency(Duration::ZERO, Duration::ZERO, Duration::from_millis(1500));
    let mut client = env.controller();
    let first = client
        .controller_expand_volume(with_timeout(
            expand_request(&id, 2 * GIB, None),
            Duration::from_millis(300),
        ))
        .await;
    assert_status(first, Code::DeadlineExceeded, "");
    let retry = client
        .controller_expand_volume(with_timeout(
            expand_request(&id, 2 * GIB, None),
            Duration::from_secs(10),
        ))
        .await
        .expect("the retry resumes the resize")
        .into_inner();
    assert_eq!(retry.capacity_bytes, 2 * GIB);
    assert_eq!(
        env.actions(&id, fake_cloud::ActionKind::Resize).len(),
        1,
        "one resize, resumed"
    );
}

async fn capabilities_advertise_exactly_what_works(backend: Backend) {
    let env = TestEnv::start(backend).await;
    let caps = env
        .controller()
        .controller_get_capabilities(ControllerGetCapabilitiesRequest {})
        .await
        .unwrap()
        .into_inner()
        .capabilities;
    let advertised: HashSet<i32> = caps
        .iter()
        .filter_map(|c| {
            c.r#type
                .as_ref()
                .map(|controller_service_capability::Type::Rpc(rpc)| rpc.r#type)
        })
        .collect();
    let expected: HashSet<i32> = [
        Rpc::CreateDeleteVolume,
        Rpc::PublishUnpublishVolume,
        Rpc::ListVolumes,
        Rpc::GetCapacity,
        Rpc::CreateDeleteSnapshot,
        Rpc::ListSnapshots,
        Rpc::CloneVolume,
        Rpc::ExpandVolume,
        Rpc::ListVolumesPublishedNodes,
        Rpc::VolumeCondition,
        Rpc::GetVolume,
        Rpc::ModifyVolume,
        Rpc::GetSnapshot,
        Rpc::SingleNodeMultiWriter,
    ]
    .map(|r| r as i32)
    .into_iter()
    .collect();
    assert_eq!(advertised, expected);
    assert!(
        !advertised.contains(&(Rpc::PublishReadonly as i32)),
        "volumes attach read-write only"
    );
}
