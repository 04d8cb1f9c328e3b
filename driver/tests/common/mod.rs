//! Shared fixtures of the controller tests: a driver serving on a temporary unix socket,
//! talking to a fake cloud either in process (`--cloud memory`) or over real HTTP on
//! loopback (`--cloud http` against fake-cloud's axum server), and small request builders.
//! [`both_backends!`] turns one async test function into a test per backend.

#![allow(dead_code)]

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use clap::Parser;
use csi_proto::v1::controller_client::ControllerClient;
use csi_proto::v1::volume_capability::access_mode::Mode;
use csi_proto::v1::volume_capability::{AccessMode, AccessType, BlockVolume, MountVolume};
use csi_proto::v1::*;
use tonic::transport::{Channel, Endpoint};
use tonic::{Code, Request, Status};

pub const GIB: i64 = 1 << 30;
/// The token the HTTP fake cloud accepts.
pub const TOKEN: &str = "test-token-not-a-secret";
/// The droplets both backends register in nyc3: ids 1, 2 and 3.
pub const NODE: &str = "1";
pub const OTHER_NODE: &str = "2";

/// Which cloud backend the driver uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Memory,
    Http,
}

/// One test per backend from one `async fn name(backend: Backend)`.
#[macro_export]
macro_rules! both_backends {
    ($($name:ident),* $(,)?) => {
        mod memory {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    super::$name($crate::common::Backend::Memory).await
                }
            )*
        }
        mod http {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    super::$name($crate::common::Backend::Http).await
                }
            )*
        }
    };
}

/// How to start a test driver.
#[derive(Debug, Clone)]
pub struct Options {
    /// Volumes per droplet the cloud allows.
    pub volume_limit: u32,
    /// HTTP backend: the driver's `--cloud-timeout`.
    pub cloud_timeout: Duration,
    /// Extra driver flags.
    pub extra_args: Vec<String>,
    /// HTTP backend: the token the driver sends (the server accepts only [`TOKEN`]).
    pub token: String,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            volume_limit: 7,
            cloud_timeout: Duration::from_secs(5),
            extra_args: Vec::new(),
            token: TOKEN.to_string(),
        }
    }
}

/// One HTTP exchange the fake cloud's server answered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Exchange {
    pub method: String,
    pub path: String,
    pub status: u16,
}

/// A running driver and the fake cloud behind it.
pub struct TestEnv {
    pub backend: Backend,
    pub driver: csi_driver::RunningDriver,
    /// The cloud model: in the driver's process for memory, behind the server for HTTP.
    pub cloud: fake_cloud::Cloud,
    /// Every HTTP exchange, in order (HTTP backend only).
    pub exchanges: Arc<Mutex<Vec<Exchange>>>,
    channel: Channel,
    server: Option<tokio::task::JoinHandle<()>>,
    _dir: tempfile::TempDir,
}

impl Drop for TestEnv {
    fn drop(&mut self) {
        if let Some(server) = self.server.take() {
            server.abort();
        }
    }
}

impl TestEnv {
    pub async fn start(backend: Backend) -> TestEnv {
        TestEnv::start_with(backend, Options::default()).await
    }

    pub async fn start_with(backend: Backend, options: Options) -> TestEnv {
        let dir = tempfile::tempdir().expect("temp dir");
        let socket = dir.path().join("csi.sock");
        let mut args: Vec<String> = [
            "csi-driver",
            "--mode",
            "controller",
            "--log-level",
            "warn",
            "--endpoint",
        ]
        .map(String::from)
        .to_vec();
        args.push(format!("unix://{}", socket.display()));
        let exchanges = Arc::new(Mutex::new(Vec::new()));
        let mut server = None;
        let mut http_cloud = None;
        match backend {
            Backend::Memory => {
                args.push("--max-volumes-per-node".into());
                args.push(options.volume_limit.to_string());
            }
            Backend::Http => {
                let cloud = fake_cloud::Cloud::new(fake_cloud::CloudConfig {
                    droplets: [1, 2, 3].map(|id| (id, "nyc3".to_string())).to_vec(),
                    volume_limit: options.volume_limit,
                    faults: fake_cloud::Faults::none(),
                    ..fake_cloud::CloudConfig::default()
                });
                let (url, task) = serve_recorded(cloud.clone(), exchanges.clone()).await;
                let token_file = dir.path().join("token");
                std::fs::write(&token_file, format!("{}\n", options.token)).expect("token file");
                args.extend([
                    "--cloud".to_string(),
                    "http".to_string(),
                    "--cloud-url".to_string(),
                    url,
                    "--token-file".to_string(),
                    token_file.display().to_string(),
                    "--cloud-timeout".to_string(),
                    format!("{}ms", options.cloud_timeout.as_millis()),
                ]);
                server = Some(task);
                http_cloud = Some(cloud);
            }
        }
        args.extend(options.extra_args);
        let config = csi_driver::Config::try_parse_from(&args).expect("driver flags");
        let driver = csi_driver::start(config).await.expect("driver starts");
        let cloud = match http_cloud {
            Some(cloud) => cloud,
            None => driver
                .driver
                .fake_cloud()
                .expect("memory backend has a fake cloud"),
        };
        let channel = Endpoint::from_shared(driver.endpoint.clone())
            .expect("endpoint")
            .connect()
            .await
            .expect("connect to the driver");
        TestEnv {
            backend,
            driver,
            cloud,
            exchanges,
            channel,
            server,
            _dir: dir,
        }
    }

    pub fn controller(&self) -> ControllerClient<Channel> {
        ControllerClient::new(self.channel.clone())
    }

    /// Set every action latency (attach, detach, resize).
    pub fn set_latency(&self, attach: Duration, detach: Duration, resize: Duration) {
        self.cloud.set_latency(fake_cloud::LatencyConfig {
            attach,
            detach,
            resize,
            jitter: Duration::ZERO,
        });
    }

    /// Change the injected faults.
    pub fn set_faults(&self, faults: fake_cloud::Faults) {
        self.cloud.set_faults(faults);
    }

    /// Create a volume, expecting success, and return it.
    pub async fn create_volume(&self, req: CreateVolumeRequest) -> Volume {
        let name = req.name.clone();
        self.controller()
            .create_volume(req)
            .await
            .unwrap_or_else(|e| panic!("CreateVolume {name}: {e:?}"))
            .into_inner()
            .volume
            .expect("volume")
    }

    /// Create a 1 GiB mount volume and return its id.
    pub async fn create(&self, name: &str) -> String {
        self.create_volume(create_request(name, GIB))
            .await
            .volume_id
    }

    /// Publish a volume to a node, expecting success.
    pub async fn publish(&self, volume_id: &str, node: &str) -> HashMap<String, String> {
        self.controller()
            .controller_publish_volume(publish_request(volume_id, node))
            .await
            .unwrap_or_else(|e| panic!("ControllerPublishVolume {volume_id} to {node}: {e:?}"))
            .into_inner()
            .publish_context
    }

    /// The cloud's actions on a volume of one kind.
    pub fn actions(
        &self,
        volume_id: &str,
        kind: fake_cloud::ActionKind,
    ) -> Vec<fake_cloud::Action> {
        self.cloud
            .list_volume_actions(volume_id)
            .expect("volume exists")
            .into_iter()
            .filter(|a| a.kind == kind)
            .collect()
    }

    /// Volumes in the cloud with this cloud name.
    pub fn volumes_named(&self, name: &str) -> Vec<fake_cloud::Volume> {
        self.cloud
            .list_volumes(Some(name), None, 1, 200)
            .expect("list")
            .items
    }

    /// How many HTTP exchanges ended with a status `wanted` accepts.
    pub fn count_statuses(&self, wanted: impl Fn(u16) -> bool) -> usize {
        self.exchanges
            .lock()
            .expect("exchanges")
            .iter()
            .filter(|e| wanted(e.status))
            .count()
    }

    /// HTTP exchanges matching a method and a path prefix.
    pub fn exchanges_of(&self, method: &str, path_prefix: &str) -> Vec<Exchange> {
        self.exchanges
            .lock()
            .expect("exchanges")
            .iter()
            .filter(|e| e.method == method && e.path.starts_with(path_prefix))
            .cloned()
            .collect()
    }
}

/// Serve the fake cloud on loopback, recording each exchange as the client saw it.
async fn serve_recorded(
    cloud: fake_cloud::Cloud,
    exchanges: Arc<Mutex<Vec<Exchange>>>,
) -> (String, tokio::task::JoinHandle<()>) {
    let router =
        fake_cloud::server::router(cloud, TOKEN.to_string()).layer(axum::middleware::from_fn(
            move |request: axum::extract::Request, next: axum::middleware::Next| {
                let exchanges = exchanges.clone();
                async move {
                    let method = request.method().to_string();
                    let path = request.uri().path().to_string();
                    let response = next.run(request).await;
                    exchanges.lock().expect("exchanges").push(Exchange {
                        method,
                        path,
                        status: response.status().as_u16(),
                    });
                    response
                }
            },
        ));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind loopback");
    let addr = listener.local_addr().expect("local addr");
    let task = tokio::spawn(async move {
        let _ = axum::serve(listener, router).await;
    });
    (format!("http://{addr}"), task)
}

/// A request with a gRPC deadline.
pub fn with_timeout<T>(message: T, timeout: Duration) -> Request<T> {
    let mut request = Request::new(message);
    request.set_timeout(timeout);
    request
}

pub fn capability(mode: Mode, block: bool) -> VolumeCapability {
    VolumeCapability {
        access_mode: Some(AccessMode { mode: mode as i32 }),
        access_type: Some(if block {
            AccessType::Block(BlockVolume {})
        } else {
            AccessType::Mount(MountVolume::default())
        }),
    }
}

/// SINGLE_NODE_WRITER, mount.
pub fn mount_cap() -> VolumeCapability {
    capability(Mode::SingleNodeWriter, false)
}

pub fn block_cap() -> VolumeCapability {
    capability(Mode::SingleNodeWriter, true)
}

pub fn create_request(name: &str, required_bytes: i64) -> CreateVolumeRequest {
    CreateVolumeRequest {
        name: name.to_string(),
        capacity_range: Some(CapacityRange {
            required_bytes,
            limit_bytes: 0,
        }),
        volume_capabilities: vec![mount_cap()],
        ..Default::default()
    }
}

pub fn publish_request(volume_id: &str, node: &str) -> ControllerPublishVolumeRequest {
    ControllerPublishVolumeRequest {
        volume_id: volume_id.to_string(),
        node_id: node.to_string(),
        volume_capability: Some(mount_cap()),
        ..Default::default()
    }
}

pub fn unpublish_request(volume_id: &str, node: &str) -> ControllerUnpublishVolumeRequest {
    ControllerUnpublishVolumeRequest {
        volume_id: volume_id.to_string(),
        node_id: node.to_string(),
        ..Default::default()
    }
}

pub fn topology(region: &str) -> Topology {
    Topology {
        segments: [("region".to_string(), region.to_string())]
            .into_iter()
            .collect(),
    }
}

pub fn map(pairs: &[(&str, &str)]) -> HashMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

/// Assert a call failed with `code` and a message holding `fragment`.
#[track_caller]
pub fn assert_status<T: std::fmt::Debug>(result: Result<T, Status>, code: Code, fragment: &str) {
    match result {
        Ok(value) => panic!("expected {code:?} ({fragment:?}), got OK: {value:?}"),
        Err(status) => {
            assert_eq!(
                status.code(),
                code,
                "expected {code:?} ({fragment:?}), got {:?}: {}",
                status.code(),
                status.message()
            );
            assert!(
                status.message().contains(fragment),
                "expected a message holding {fragment:?}, got {:?}",
                status.message()
            );
        }
    }
}
