//! ControllerPublishVolume and ControllerUnpublishVolume over real gRPC, on both cloud
//! backends: the spec's error rows, slow attaches that outlive the caller's deadline and
//! are resumed by the retry, the per-volume operation lock, the cloud's one-event-per-droplet
//! rule, per-node limits and errored actions.

mod common;

use std::time::Duration;

use common::*;
use csi_proto::v1::*;
use fake_cloud::ActionKind;
use tonic::Code;

both_backends!(
    publish_without_volume_node_or_capability_is_invalid,
    publish_of_a_missing_volume_or_node_is_not_found,
    publish_returns_the_device_context_and_repeats_idempotently,
    publish_to_a_second_node_names_the_node_holding_the_volume,
    readonly_publish_is_refused_and_conflicts_with_a_writable_one,
    publish_beyond_the_node_limit_is_resource_exhausted,
    publish_timed_out_mid_attach_is_resumed_by_its_retry,
    unpublish_succeeds_for_whatever_is_not_attached,
    unpublish_detaches_and_repeats_idempotently,
    unpublish_waits_for_an_attach_in_flight_then_undoes_it,
    a_second_operation_on_a_volume_in_flight_is_aborted_and_the_first_completes,
    a_node_busy_with_another_attach_queues_the_next_publish_within_its_deadline,
    eight_concurrent_publishes_to_one_node_all_succeed_without_aborted,
    an_errored_attach_fails_with_its_reason_and_marks_the_volume_abnormal,
);

async fn publish_without_volume_node_or_capability_is_invalid(backend: Backend) {
    let env = TestEnv::start(backend).await;
    let mut client = env.controller();
    let id = env.create("fields").await;
    assert_status(
        client
            .controller_publish_volume(publish_request("", NODE))
            .await,
        Code::InvalidArgument,
        "volume_id is required",
    );
    assert_status(
        client
            .controller_publish_volume(publish_request(&id, ""))
            .await,
        Code::InvalidArgument,
        "node_id is required",
    );
    let mut no_cap = publish_request(&id, NODE);
    no_cap.volume_capability = None;
    assert_status(
        client.controller_publish_volume(no_cap).await,
        Code::InvalidArgument,
        "volume_capability is required",
    );
    let mut multi = publish_request(&id, NODE);
    multi.volume_capability = Some(capability(
        csi_proto::v1::volume_capability::access_mode::Mode::MultiNodeMultiWriter,
        false,
    ));
    assert_status(
        client.controller_publish_volume(multi).await,
        Code::InvalidArgument,
        "MULTI_NODE",
    );
    assert!(env.actions(&id, ActionKind::Attach).is_empty());
}

async fn publish_of_a_missing_volume_or_node_is_not_found(backend: Backend) {
    let env = TestEnv::start(backend).await;
    let mut client = env.controller();
    let id = env.create("lonely").await;
    assert_status(
        client
            .controller_publish_volume(publish_request("no-such-volume", NODE))
            .await,
        Code::NotFound,
        "no-such-volume",
    );
    for node in ["99", "not-a-droplet"] {
        assert_status(
            client
                .controller_publish_volume(publish_request(&id, node))
                .await,
            Code::NotFound,
            node,
        );
    }
}

async fn publish_returns_the_device_context_and_repeats_idempotently(backend: Backend) {
    let env = TestEnv::start(backend).await;
    env.set_latency(Duration::from_millis(100), Duration::ZERO, Duration::ZERO);
    let id = env.create("context").await;
    let context = env.publish(&id, NODE).await;
    let name = env.cloud.get_volume(&id).unwrap().name;
    assert_eq!(context.get("volume-name"), Some(&name));
    assert_eq!(
        context.get("device-link"),
        Some(&csi_driver::config::device_link_name(&name))
    );
    assert_eq!(env.cloud.get_volume(&id).unwrap().droplet_ids, [1]);
    for _ in 0..3 {
        assert_eq!(env.publish(&id, NODE).await, context);
    }
    assert_eq!(
        env.actions(&id, ActionKind::Attach).len(),
        1,
        "a repeat starts no attach"
    );
}

async fn publish_to_a_second_node_names_the_node_holding_the_volume(backend: Backend) {
    let env = TestEnv::start(backend).await;
    let id = env.create("taken").await;
    env.publish(&id, NODE).await;
    // spec: published to another node and not multi-node → FAILED_PRECONDITION naming it.
    let result = env
        .controller()
        .controller_publish_volume(publish_request(&id, OTHER_NODE))
        .await;
    assert_status(result, Code::FailedPrecondition, "node 1");
}

async fn readonly_publish_is_refused_and_conflicts_with_a_writable_one(backend: Backend) {
    let env = TestEnv::start(backend).await;
    let mut client = env.controller();
    let id = env.create("readonly").await;
    let mut readonly = publish_request(&id, NODE);
    readonly.readonly = true;
    assert_status(
        client.controller_publish_volume(readonly.clone()).await,
        Code::InvalidArgument,
        "PUBLISH_READONLY",
    );
    assert!(env.actions(&id, ActionKind::Attach).is_empty());
    env.publish(&id, NODE).await;
    // spec: already published to this node but incompatible (readonly) → ALREADY_EXISTS.
    assert_status(
        client.controller_publish_volume(readonly).await,
        Code::AlreadyExists,
        "read-only",
    );
}

async fn publish_beyond_the_node_limit_is_resource_exhausted(backend: Backend) {
    let env = TestEnv::start_with(
        backend,
        Options {
            volume_limit: 2,
            ..Options::default()
        },
    )
    .await;
    for i in 0..2 {
        let id = env.create(&format!("fits-{i}")).await;
        env.publish(&id, OTHER_NODE).await;
    }
    let id = env.create("one-too-many").await;
    let result = env
        .controller()
        .controller_publish_volume(publish_request(&id, OTHER_NODE))
        .await;
    assert_status(result, Code::ResourceExhausted, "node 2");
    // Another node still has room.
    env.publish(&id, NODE).await;
}

async fn publish_timed_out_mid_attach_is_resumed_by_its_retry(backend: Backend) {
    let env = TestEnv::start(backend).await;
    let id = env.create("slow-attach").await;
    env.set_latency(Duration::from_millis(1500), Duration::ZERO, Duration::ZERO);
    let mut client = env.controller();
    let first = client
        .controller_publish_volume(with_timeout(
            publish_request(&id, NODE),
            Duration::from_millis(300),
        ))
        .await;
    assert_status(first, Code::DeadlineExceeded, "");
    assert!(
        env.cloud.get_volume(&id).unwrap().droplet_ids.is_empty(),
        "still attaching"
    );

    // The CO retries; the retry finds the attach in flight and waits for it.
    let retry = client
        .controller_publish_volume(with_timeout(
            publish_request(&id, NODE),
            Duration::from_secs(10),
        ))
        .await
        .expect("the retry resumes the attach")
        .into_inner();
    assert!(retry.publish_context.contains_key("device-link"));
    assert_eq!(env.cloud.get_volume(&id).unwrap().droplet_ids, [1]);
    let attaches = env.actions(&id, ActionKind::Attach);
    assert_eq!(attaches.len(), 1, "exactly one attach action: {attaches:?}");
    assert_eq!(attaches[0].status, fake_cloud::ActionStatus::Completed);
}

async fn unpublish_succeeds_for_whatever_is_not_attached(backend: Backend) {
    let env = TestEnv::start(backend).await;
    let mut client = env.controller();
    assert_status(
        client
            .controller_unpublish_volume(unpublish_request("", NODE))
            .await,
        Code::InvalidArgument,
        "volume_id is required",
    );
    let id = env.create("never-published").await;
    // spec: not attached → OK; volume or node gone → OK.
    for (volume, node) in [
        (id.as_str(), NODE),
        ("no-such-volume", NODE),
        (id.as_str(), "99"),
        (id.as_str(), "not-a-droplet"),
        (id.as_str(), ""),
    ] {
        client
            .controller_unpublish_volume(unpublish_request(volume, node))
            .await
            .unwrap_or_else(|e| panic!("unpublish {volume} from {node:?}: {e:?}"));
    }
    assert!(env.actions(&id, ActionKind::Detach).is_empty());
}

async fn unpublish_detaches_and_repeats_idempotently(backend: Backend) {
    let env = TestEnv::start(backend).await;
    env.set_latency(Duration::ZERO, Duration::from_millis(100), Duration::ZERO);
    let mut client = env.controller();
    let id = env.create("detached").await;
    env.publish(&id, OTHER_NODE).await;
    // Unpublishing from a node that does not hold it leaves it where it is.
    client
        .controller_unpublish_volume(unpublish_request(&id, NODE))
        .await
        .unwrap();
    assert_eq!(env.cloud.get_volume(&id).unwrap().droplet_ids, [2]);
    for _ in 0..3 {
        client
            .controller_unpublish_volume(unpublish_request(&id, OTHER_NODE))
            .await
            .unwrap();
    }
    assert!(env.cloud.get_volume(&id).unwrap().droplet_ids.is_empty());
    assert_eq!(env.actions(&id, ActionKind::Detach).len(), 1);
    // Published again and unpublished from every node (empty node id).
    env.publish(&id, NODE).await;
    client
        .controller_unpublish_volume(unpublish_request(&id, ""))
        .await
        .unwrap();
    assert!(env.cloud.get_volume(&id).unwrap().droplet_ids.is_empty());
}

async fn unpublish_waits_for_an_attach_in_flight_then_undoes_it(backend: Backend) {
    let env = TestEnv::start(backend).await;
    let id = env.create("cancelled").await;
    env.set_latency(
        Duration::from_millis(800),
        Duration::from_millis(100),
        Duration::ZERO,
    );
    let first = env
        .controller()
        .controller_publish_volume(with_timeout(
            publish_request(&id, NODE),
            Duration::from_millis(200),
        ))
        .await;
    assert_status(first, Code::DeadlineExceeded, "");
    // spec: ControllerUnpublish cancels a pending ControllerPublish.
    env.controller()
        .controller_unpublish_volume(with_timeout(
            unpublish_request(&id, NODE),
            Duration::from_secs(10),
        ))
        .await
        .expect("unpublish after the attach lands");
    assert!(env.cloud.get_volume(&id).unwrap().droplet_ids.is_empty());
    assert_eq!(env.actions(&id, ActionKind::Attach).len(), 1);
    assert_eq!(env.actions(&id, ActionKind::Detach).len(), 1);
}

async fn a_second_operation_on_a_volume_in_flight_is_aborted_and_the_first_completes(
    backend: Backend,
) {
    let env = TestEnv::start(backend).await;
    let id = env.create("busy").await;
    env.set_latency(Duration::from_millis(800), Duration::ZERO, Duration::ZERO);
    let mut first_client = env.controller();
    let first_id = id.clone();
    let first = tokio::spawn(async move {
        first_client
            .controller_publish_volume(publish_request(&first_id, NODE))
            .await
    });
    tokio::time::sleep(Duration::from_millis(200)).await;
    let mut client = env.controller();
    // spec: an operation already pending on the same volume → ABORTED.
    assert_status(
        client
            .controller_publish_volume(publish_request(&id, NODE))
            .await,
        Code::Aborted,
        &id,
    );
    assert_status(
        client
            .delete_volume(DeleteVolumeRequest {
                volume_id: id.clone(),
                ..Default::default()
            })
            .await,
        Code::Aborted,
        "in progress",
    );
    first
        .await
        .unwrap()
        .expect("the first publish is not disturbed");
    assert_eq!(env.cloud.get_volume(&id).unwrap().droplet_ids, [1]);
    assert_eq!(env.actions(&id, ActionKind::Attach).len(), 1);
}

async fn a_node_busy_with_another_attach_queues_the_next_publish_within_its_deadline(
    backend: Backend,
) {
    let env = TestEnv::start(backend).await;
    let slow = env.create("first-on-node").await;
    let other = env.create("second-on-node").await;
    let late = env.create("third-on-node").await;
    env.set_latency(Duration::from_millis(800), Duration::ZERO, Duration::ZERO);
    let mut first_client = env.controller();
    let slow_id = slow.clone();
    let first = tokio::spawn(async move {
        first_client
            .controller_publish_volume(publish_request(&slow_id, NODE))
            .await
    });
    tokio::time::sleep(Duration::from_millis(200)).await;
    // The cloud runs one event per droplet at a time; the driver queues the second
    // publish behind the first instead of answering ABORTED.
    env.publish(&other, NODE).await;
    first.await.unwrap().expect("first publish");
    assert_eq!(env.cloud.get_volume(&other).unwrap().droplet_ids, [1]);
    // A deadline too short for the wait: ABORTED, so the CO retries later.
    let mut first_client = env.controller();
    let slow_id = slow.clone();
    let busy = tokio::spawn(async move {
        first_client
            .controller_unpublish_volume(unpublish_request(&slow_id, NODE))
            .await
    });
    env.set_latency(Duration::ZERO, Duration::from_millis(800), Duration::ZERO);
    tokio::time::sleep(Duration::from_millis(200)).await;
    let result = env
        .controller()
        .controller_publish_volume(with_timeout(
            publish_request(&late, NODE),
            Duration::from_millis(300),
        ))
        .await;
    assert_status(result, Code::Aborted, "busy");
    busy.await.unwrap().expect("the unpublish is not disturbed");
}

async fn an_errored_attach_fails_with_its_reason_and_marks_the_volume_abnormal(backend: Backend) {
    let env = TestEnv::start(backend).await;
    let id = env.create("doomed").await;
    env.set_faults(fake_cloud::Faults {
        action_error_rate: 1.0,
        ..fake_cloud::Faults::none()
    });
    let result = env
        .controller()
        .controller_publish_volume(publish_request(&id, NODE))
        .await;
    assert_status(result, Code::Internal, "injected fault");
    let status = env
        .controller()
        .controller_get_volume(ControllerGetVolumeRequest {
            volume_id: id.clone(),
        })
        .await
        .unwrap()
        .into_inner()
        .status
        .unwrap();
    let condition = status.volume_condition.unwrap();
    assert!(condition.abnormal, "{condition:?}");
    assert!(
        condition.message.contains("attach_volume"),
        "{}",
        condition.message
    );

    env.set_faults(fake_cloud::Faults::none());
    env.publish(&id, NODE).await;
    let condition = env
        .controller()
        .controller_get_volume(ControllerGetVolumeRequest { volume_id: id })
        .await
        .unwrap()
        .into_inner()
        .status
        .unwrap()
        .volume_condition
        .unwrap();
    assert!(
        !condition.abnormal,
        "healthy again after a good attach: {condition:?}"
    );
}

async fn eight_concurrent_publishes_to_one_node_all_succeed_without_aborted(backend: Backend) {
    let env = TestEnv::start_with(
        backend,
        Options {
            volume_limit: 15,
            ..Options::default()
        },
    )
    .await;
    let mut ids = Vec::new();
    for i in 0..8 {
        ids.push(env.create(&format!("crowd-{i}")).await);
    }
    env.set_latency(
        Duration::from_millis(150),
        Duration::from_millis(150),
        Duration::ZERO,
    );
    let publishes = ids.iter().map(|id| {
        let mut client = env.controller();
        let request = publish_request(id, NODE);
        async move { client.controller_publish_volume(request).await }
    });
    for (id, result) in ids.iter().zip(futures::future::join_all(publishes).await) {
        result.unwrap_or_else(|s| panic!("publish of {id}: {s:?}"));
    }
    for id in &ids {
        assert_eq!(env.cloud.get_volume(id).unwrap().droplet_ids, [1]);
    }
    let unpublishes = ids.iter().map(|id| {
        let mut client = env.controller();
        let request = unpublish_request(id, NODE);
        async move { client.controller_unpublish_volume(request).await }
    });
    for (id, result) in ids.iter().zip(futures::future::join_all(unpublishes).await) {
        result.unwrap_or_else(|s| panic!("unpublish of {id}: {s:?}"));
    }
    for id in &ids {
        assert!(env.cloud.get_volume(id).unwrap().droplet_ids.is_empty());
    }
}
