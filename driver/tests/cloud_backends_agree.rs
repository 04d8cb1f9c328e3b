//! Both cloud backends give the same typed error for the same situation: the in-process
//! model ([`MemoryCloud`]) and the DigitalOcean v2 client ([`HttpCloud`]) over fake-cloud's
//! HTTP server. The controller decides on these variants, so a backend that classified a
//! refusal differently would change what a CO is told.

use std::time::Duration;

use clap::Parser;
use csi_driver::cloud::http::{HttpCloud, Token};
use csi_driver::cloud::memory::MemoryCloud;
use csi_driver::cloud::{CloudApi, CloudError, Deadline, NewVolume};

const TOKEN: &str = "test-token-not-a-secret";

fn model() -> fake_cloud::Cloud {
    fake_cloud::Cloud::new(fake_cloud::CloudConfig {
        droplets: vec![(1, "nyc3".to_string())],
        // Small limits, so that a second attach and a large volume are refused.
        volume_limit: 1,
        capacity_quota_gib: 10,
        faults: fake_cloud::Faults::none(),
        ..fake_cloud::CloudConfig::default()
    })
}

async fn http_backend(dir: &tempfile::TempDir) -> (HttpCloud, tokio::task::JoinHandle<()>) {
    let router = fake_cloud::server::router(model(), TOKEN.to_string());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind loopback");
    let url = format!("http://{}", listener.local_addr().expect("address"));
    let server = tokio::spawn(async move {
        let _ = axum::serve(listener, router).await;
    });
    let token_file = dir.path().join("token");
    std::fs::write(&token_file, TOKEN).expect("token file");
    let config = csi_driver::Config::try_parse_from([
        "csi-driver",
        "--token-file",
        &token_file.display().to_string(),
    ])
    .expect("flags");
    let token = Token::from_config(&config).expect("token");
    let cloud = HttpCloud::new(&url, token, Duration::from_secs(5)).expect("client");
    (cloud, server)
}

fn volume(name: &str, region: &str) -> NewVolume {
    NewVolume {
        name: name.to_string(),
        region: region.to_string(),
        size_gib: 1,
        ..NewVolume::default()
    }
}

/// The errors one backend gives for each situation, in order.
async fn refusals(cloud: &dyn CloudApi) -> Vec<(&'static str, CloudError)> {
    let deadline = || Deadline::after(Duration::from_secs(5));
    let created = cloud
        .create_volume(volume("agree", "nyc3"), deadline())
        .await
        .expect("create");
    let mut found = Vec::new();
    let mut record = |what, result: Result<_, CloudError>| match result {
        Ok(_) => panic!("{what}: expected an error"),
        Err(e) => found.push((what, e)),
    };
    record(
        "unknown volume",
        cloud
            .get_volume("no-such-volume", deadline())
            .await
            .map(drop),
    );
    record(
        "name in use",
        cloud
            .create_volume(volume("agree", "nyc3"), deadline())
            .await
            .map(drop),
    );
    record(
        "unknown region",
        cloud
            .create_volume(volume("elsewhere", "zzz9"), deadline())
            .await
            .map(drop),
    );
    record(
        "unknown snapshot",
        cloud
            .get_snapshot("no-such-snapshot", deadline())
            .await
            .map(drop),
    );
    record(
        "detach of a volume attached nowhere",
        cloud.detach(&created, 1, deadline()).await.map(drop),
    );
    // Actions take no time here: the attach is done at the model's next read.
    cloud.attach(&created, 1, deadline()).await.expect("attach");
    record(
        "attach of an attached volume",
        cloud.attach(&created, 1, deadline()).await.map(drop),
    );
    record(
        "delete of an attached volume",
        cloud.delete_volume(&created.id, deadline()).await,
    );
    let other = cloud
        .create_volume(volume("other", "nyc3"), deadline())
        .await
        .expect("create");
    record(
        "attach to a full droplet",
        cloud.attach(&other, 1, deadline()).await.map(drop),
    );
    let big = NewVolume {
        size_gib: 20,
        ..volume("big", "nyc3")
    };
    record(
        "volume over the quota",
        cloud.create_volume(big, deadline()).await.map(drop),
    );
    cloud
        .create_snapshot(&created.id, "snap", Vec::new(), deadline())
        .await
        .expect("snapshot");
    record(
        "snapshot name in use",
        cloud
            .create_snapshot(&created.id, "snap", Vec::new(), deadline())
            .await
            .map(drop),
    );
    found
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn both_backends_classify_each_refusal_alike() {
    let dir = tempfile::tempdir().expect("temp dir");
    let memory = MemoryCloud::new(model());
    let (http, server) = http_backend(&dir).await;
    let in_process = refusals(&memory).await;
    let over_http = refusals(&http).await;
    server.abort();
    assert_eq!(in_process.len(), over_http.len());
    for ((what, a), (_, b)) in in_process.iter().zip(&over_http) {
        assert_eq!(a, b, "{what}: the backends disagree");
    }
    let kinds: Vec<_> = in_process
        .iter()
        .map(|(what, e)| (*what, std::mem::discriminant(e)))
        .collect();
    let expected = [
        CloudError::NotFound {
            message: String::new(),
        },
        CloudError::NameInUse {
            message: String::new(),
        },
        CloudError::Invalid {
            message: String::new(),
        },
        CloudError::NotFound {
            message: String::new(),
        },
        CloudError::AttachmentNotFound {
            message: String::new(),
        },
        CloudError::AlreadyAttached {
            message: String::new(),
        },
        CloudError::VolumeInUse {
            message: String::new(),
        },
        CloudError::DropletLimit {
            message: String::new(),
        },
        CloudError::QuotaExceeded {
            message: String::new(),
        },
        CloudError::NameInUse {
            message: String::new(),
        },
    ];
    assert_eq!(kinds.len(), expected.len(), "{in_process:?}");
    for ((what, kind), want) in kinds.iter().zip(&expected) {
        assert_eq!(
            *kind,
            std::mem::discriminant(want),
            "{what}: expected {want:?}, got {in_process:?}"
        );
    }
}
