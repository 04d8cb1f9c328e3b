//! The HTTP backend against fake-cloud's real server on loopback, under the faults a real
//! API shows: lost responses, 429 and 5xx storms, an exhausted rate-limit budget, a refused
//! token, and lists longer than one page.

mod common;

use std::time::{Duration, Instant};

use common::*;
use csi_proto::v1::*;
use tonic::Code;

/// Create, publish, unpublish and delete one volume, each RPC expected to succeed.
async fn lifecycle(env: &TestEnv, name: &str) {
    let mut client = env.controller();
    let id = env.create(name).await;
    env.publish(&id, NODE).await;
    client
        .controller_unpublish_volume(unpublish_request(&id, NODE))
        .await
        .unwrap_or_else(|e| panic!("unpublish {name}: {e:?}"));
    client
        .delete_volume(DeleteVolumeRequest {
            volume_id: id.clone(),
            ..Default::default()
        })
        .await
        .unwrap_or_else(|e| panic!("delete {name}: {e:?}"));
    assert!(env.cloud.get_volume(&id).is_err());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn create_volume_whose_response_is_lost_is_found_by_its_retry() {
    let env = TestEnv::start(Backend::Http).await;
    // Half of all answers are lost after the request was applied.
    env.set_faults(fake_cloud::Faults {
        seed: 7,
        lost_response_rate: 0.5,
        ..fake_cloud::Faults::none()
    });
    let names: Vec<String> = (0..8).map(|i| format!("lost-{i}")).collect();
    let mut ids = Vec::new();
    for name in &names {
        // As a CO does: retry the same request until it succeeds.
        let mut created = None;
        for _ in 0..10 {
            if let Ok(r) = env
                .controller()
                .create_volume(with_timeout(
                    create_request(name, GIB),
                    Duration::from_secs(20),
                ))
                .await
            {
                created = Some(r.into_inner().volume.unwrap().volume_id);
                break;
            }
        }
        ids.push(created.unwrap_or_else(|| panic!("{name} was never created")));
    }
    env.set_faults(fake_cloud::Faults::none());

    let creates: Vec<u16> = env
        .exchanges_of("POST", "/v2/volumes")
        .into_iter()
        .filter(|e| e.path == "/v2/volumes")
        .map(|e| e.status)
        .collect();
    assert!(
        creates.contains(&500),
        "some create's answer was lost (applied, answered 500)"
    );
    assert!(
        creates.contains(&409),
        "a retried create found its name taken and took the volume as its own: {creates:?}"
    );
    for (name, id) in names.iter().zip(&ids) {
        let existing = env.volumes_named(name);
        assert_eq!(existing.len(), 1, "exactly one volume named {name}");
        assert_eq!(
            &existing[0].id, id,
            "the retry returned the volume the lost create made"
        );
        assert_eq!(&env.create(name).await, id);
    }
    assert_eq!(env.cloud.account().volume_count, names.len() as u64);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_429_storm_still_succeeds() {
    let env = TestEnv::start(Backend::Http).await;
    env.set_faults(fake_cloud::Faults {
        seed: 3,
        rate_429: 0.25,
        ..fake_cloud::Faults::none()
    });
    lifecycle(&env, "throttled").await;
    let throttled = env.count_statuses(|s| s == 429);
    assert!(throttled > 0, "the storm happened");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_5xx_storm_still_succeeds() {
    let env = TestEnv::start(Backend::Http).await;
    env.set_faults(fake_cloud::Faults {
        seed: 11,
        error_rate_5xx: 0.2,
        ..fake_cloud::Faults::none()
    });
    for i in 0..3 {
        lifecycle(&env, &format!("stormy-{i}")).await;
    }
    let failed = env.count_statuses(|s| s >= 500);
    assert!(failed > 0, "the storm happened");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_exhausted_rate_limit_budget_fails_fast_instead_of_hammering() {
    let env = TestEnv::start(Backend::Http).await;
    env.set_faults(fake_cloud::Faults {
        rate_limit_per_minute: 4,
        ..fake_cloud::Faults::none()
    });
    let mut outcomes = Vec::new();
    for i in 0..6 {
        let started = Instant::now();
        let result = env
            .controller()
            .create_volume(with_timeout(
                create_request(&format!("budget-{i}"), GIB),
                Duration::from_secs(2),
            ))
            .await;
        outcomes.push((result.map(|_| ()), started.elapsed()));
    }
    let (last, elapsed) = outcomes.pop().unwrap();
    assert_status(last, Code::Unavailable, "rate limit");
    assert!(
        elapsed < Duration::from_millis(1500),
        "failed fast: {elapsed:?}"
    );
    let throttled = env.count_statuses(|s| s == 429);
    assert!(
        throttled <= 1,
        "after a 429 the driver waits instead of retrying: {throttled} 429s"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_token_is_reported_without_being_revealed() {
    let secret = "wrong-token-do-not-print";
    let env = TestEnv::start_with(
        Backend::Http,
        Options {
            token: secret.to_string(),
            ..Options::default()
        },
    )
    .await;
    let result = env
        .controller()
        .create_volume(create_request("unauthorized", GIB))
        .await;
    let status = result.expect_err("the cloud refuses the token");
    assert_eq!(status.code(), Code::Internal, "{status:?}");
    assert!(
        status.message().contains("refused the API token"),
        "{}",
        status.message()
    );
    assert!(!status.message().contains(secret));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lists_longer_than_a_page_are_read_page_by_page() {
    let env = TestEnv::start(Backend::Http).await;
    for i in 0..205 {
        env.cloud
            .create_volume(fake_cloud::CreateVolumeRequest {
                name: format!("bulk-{i}"),
                region: "nyc3".into(),
                size_gib: 1,
                ..Default::default()
            })
            .unwrap();
    }
    let listed = env
        .controller()
        .list_volumes(ListVolumesRequest::default())
        .await
        .unwrap()
        .into_inner();
    assert_eq!(listed.entries.len(), 205);
    assert!(listed.next_token.is_empty());
    let pages = env
        .exchanges_of("GET", "/v2/volumes")
        .into_iter()
        .filter(|e| e.path == "/v2/volumes")
        .count();
    assert_eq!(pages, 2, "two pages of 200");
}
