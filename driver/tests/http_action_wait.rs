//! What an action wait costs against fake-cloud's real server on loopback, counted by
//! fake-cloud itself (`/admin/requests`), not by the driver: once the driver has seen an
//! action kind, a wait on one that completes at its usual time takes at most 3 requests,
//! and a whole lifecycle (create, publish, unpublish, delete) at most 10.

use std::time::Duration;

use clap::Parser;
use csi_proto::v1::controller_client::ControllerClient;
use csi_proto::v1::volume_capability::access_mode::Mode;
use csi_proto::v1::volume_capability::{AccessMode, AccessType, MountVolume};
use csi_proto::v1::*;
use tonic::transport::Channel;

const TOKEN: &str = "wait-token";
const POLL_ROUTE: &str = "GET /v2/volumes/{id}/actions/{id}";

struct World {
    _server: fake_cloud::server::SpawnedServer,
    driver: Option<csi_driver::RunningDriver>,
    client: ControllerClient<Channel>,
    http: reqwest::Client,
    base_url: String,
    /// Every request served so far, by route.
    routes: std::collections::BTreeMap<String, u64>,
    _dir: tempfile::TempDir,
}

impl World {
    /// fake-cloud with attach and detach taking exactly `latency`, and a driver with the
    /// default poll policy.
    async fn start(latency: Duration) -> World {
        let cloud = fake_cloud::Cloud::new(fake_cloud::CloudConfig {
            droplets: vec![(1, "nyc3".into())],
            latency: fake_cloud::LatencyConfig {
                attach: latency,
                detach: latency,
                resize: latency,
                jitter: Duration::ZERO,
            },
            faults: fake_cloud::Faults::none(),
            ..fake_cloud::CloudConfig::default()
        });
        let server = fake_cloud::server::spawn(cloud, TOKEN.into())
            .await
            .expect("fake-cloud serves");
        let base_url = server.base_url();
        let dir = tempfile::tempdir().unwrap();
        let token_file = dir.path().join("token");
        std::fs::write(&token_file, TOKEN).unwrap();
        let config = csi_driver::Config::try_parse_from([
            "csi-driver".to_string(),
            "--mode=controller".into(),
            "--log-level=warn".into(),
            "--cloud=http".into(),
            format!("--cloud-url={base_url}"),
            format!("--token-file={}", token_file.display()),
            format!(
                "--endpoint=unix://{}",
                dir.path().join("csi.sock").display()
            ),
        ])
        .unwrap();
        let driver = csi_driver::start(config).await.expect("the driver starts");
        let channel = tonic::transport::Endpoint::from_shared(driver.endpoint.clone())
            .unwrap()
            .connect()
            .await
            .unwrap();
        World {
            _server: server,
            driver: Some(driver),
            client: ControllerClient::new(channel),
            http: reqwest::Client::new(),
            base_url,
            routes: Default::default(),
            _dir: dir,
        }
    }

    /// The requests fake-cloud served since the last call, and of those the action polls.
    async fn served(&mut self) -> (u64, u64) {
        let url = format!("{}/admin/requests", self.base_url);
        let counts: fake_cloud::server::RequestCounts = self
            .http
            .get(&url)
            .bearer_auth(TOKEN)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        self.http
            .delete(&url)
            .bearer_auth(TOKEN)
            .send()
            .await
            .unwrap();
        let polls = counts.by_route.get(POLL_ROUTE).copied().unwrap_or(0);
        for (route, n) in counts.by_route {
            *self.routes.entry(route).or_default() += n;
        }
        (counts.total, polls)
    }

    /// Create, publish, unpublish, delete; the requests and polls each step cost.
    async fn lifecycle(&mut self, name: &str) -> Vec<(&'static str, u64, u64)> {
        let mut costs = Vec::new();
        self.served().await;
        let id = self
            .client
            .create_volume(CreateVolumeRequest {
                name: name.into(),
                capacity_range: Some(CapacityRange {
                    required_bytes: 1 << 30,
                    limit_bytes: 0,
                }),
                volume_capabilities: vec![mount_cap()],
                ..Default::default()
            })
            .await
            .expect("create")
            .into_inner()
            .volume
            .unwrap()
            .volume_id;
        let (total, polls) = self.served().await;
        costs.push(("create", total, polls));
        self.client
            .controller_publish_volume(ControllerPublishVolumeRequest {
                volume_id: id.clone(),
                node_id: "1".into(),
                volume_capability: Some(mount_cap()),
                ..Default::default()
            })
            .await
            .expect("publish");
        let (total, polls) = self.served().await;
        costs.push(("publish", total, polls));
        self.client
            .controller_unpublish_volume(ControllerUnpublishVolumeRequest {
                volume_id: id.clone(),
                node_id: "1".into(),
                ..Default::default()
            })
            .await
            .expect("unpublish");
        let (total, polls) = self.served().await;
        costs.push(("unpublish", total, polls));
        self.client
            .delete_volume(DeleteVolumeRequest {
                volume_id: id,
                ..Default::default()
            })
            .await
            .expect("delete");
        let (total, polls) = self.served().await;
        costs.push(("delete", total, polls));
        costs
    }

    async fn stop(mut self) {
        if let Some(driver) = self.driver.take() {
            driver.stop().await.unwrap();
        }
    }
}

fn mount_cap() -> VolumeCapability {
    VolumeCapability {
        access_mode: Some(AccessMode {
            mode: Mode::SingleNodeWriter as i32,
        }),
        access_type: Some(AccessType::Mount(MountVolume::default())),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wait_on_an_action_that_takes_its_usual_time_costs_at_most_three_requests() {
    // Longer than the first look of a wait that knows nothing (500 ms), as any real
    // cloud's attach is: the teacher then sees the action in progress and learns its
    // duration within a sixth, not just "under 500 ms".
    let mut world = World::start(Duration::from_millis(600)).await;
    // The first lifecycle teaches the driver how long an attach and a detach take.
    world.lifecycle("teacher").await;
    for round in 0..3 {
        let costs = world.lifecycle(&format!("learned-{round}")).await;
        let total: u64 = costs.iter().map(|(_, t, _)| t).sum();
        for (step, _, polls) in &costs {
            assert!(
                *polls <= 3,
                "round {round}: {step} polled {polls} times: {costs:?}"
            );
        }
        assert!(total <= 10, "round {round}: {total} requests: {costs:?}");
    }
    world.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn regions_and_droplets_are_not_fetched_again_for_every_volume() {
    let mut world = World::start(Duration::ZERO).await;
    for round in 0..4 {
        world.lifecycle(&format!("again-{round}")).await;
    }
    let served = |route: &str| world.routes.get(route).copied().unwrap_or(0);
    assert_eq!(served("GET /v2/regions"), 1, "{:?}", world.routes);
    assert!(served("GET /v2/droplets/{id}") <= 1, "{:?}", world.routes);
    assert_eq!(served("POST /v2/volumes"), 4, "{:?}", world.routes);
    world.stop().await;
}
