//! Crash recovery: the driver process is killed (SIGKILL) at random points while it
//! publishes, stages, expands, snapshots and unpublishes, then restarted, and the CO
//! retries (a bounded loop, as kubelet and the sidecars would). Every operation must
//! complete, nothing may be duplicated (one cloud volume and snapshot per name, one
//! mount per path) or leaked (no volume, snapshot, attachment, mount or loop device left
//! after teardown), and a restarted node finds its mounts again from mountinfo.
//!
//! The driver runs with `--cloud http` against a fake-cloud server process with
//! persistence (`--data-dir`) and real action latencies, so kills land mid-operation.
//! fake-cloud is killed too, at a quiet moment (and must come back on the same port with
//! the same volumes, snapshots and attachments) and in the middle of an attach.
//!
//! As root the driver lives in a private mount namespace held by a `sleep` process, so
//! its mounts survive the driver's death (as they survive a real node plugin's restart)
//! and vanish with the test. Without root the node kill points print
//! "skipped: needs root"; the controller ones still run.
//!
//! `CRASH_SEED=N` replays a run; `CRASH_KILLS=N` asks for more in-flight kills (≥ 20).

use std::collections::BTreeMap;
use std::future::Future;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use csi_proto::v1::controller_client::ControllerClient;
use csi_proto::v1::identity_client::IdentityClient;
use csi_proto::v1::node_client::NodeClient;
use csi_proto::v1::volume_capability::{access_mode, AccessMode, AccessType, MountVolume};
use csi_proto::v1::*;
use rand::{Rng, SeedableRng};
use tonic::transport::Channel;

const DRIVER: &str = env!("CARGO_BIN_EXE_csi-driver");
const TOKEN: &str = "crash-token";
/// Set in the child process that serves fake-cloud: `PORT DATA_DIR`.
const CHILD_ENV: &str = "CRASH_RECOVERY_FAKE_CLOUD";
/// Attempts a CO makes at one operation before the test calls it stuck.
const MAX_ATTEMPTS: u32 = 40;
/// Deadline of one RPC, as a sidecar's timeout.
const RPC_TIMEOUT: Duration = Duration::from_secs(30);
const GIB: i64 = 1 << 30;

/// Not a test: the entry point of the fake-cloud server process the crash test starts
/// and kills. In a normal run it returns at once.
#[test]
fn fake_cloud_server_process() {
    let Ok(spec) = std::env::var(CHILD_ENV) else {
        return;
    };
    let (port, data_dir) = spec.split_once(' ').expect("PORT DATA_DIR");
    let port: u16 = port.parse().expect("a port");
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async move {
        let cloud = fake_cloud::Cloud::open(fake_cloud::CloudConfig {
            droplets: vec![(1, "nyc3".into()), (2, "nyc3".into())],
            latency: fake_cloud::LatencyConfig {
                attach: Duration::from_millis(400),
                detach: Duration::from_millis(300),
                resize: Duration::from_millis(500),
                jitter: Duration::from_millis(200),
            },
            faults: fake_cloud::Faults::none(),
            data_dir: Some(PathBuf::from(data_dir)),
            ..fake_cloud::CloudConfig::default()
        })
        .expect("fake-cloud reopens its data directory");
        let mut tries = 0;
        let listener = loop {
            match tokio::net::TcpListener::bind(("127.0.0.1", port)).await {
                Ok(l) => break l,
                Err(e) if tries < 100 => {
                    tries += 1;
                    eprintln!("fake-cloud: bind {port}: {e}; retrying");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                Err(e) => panic!("fake-cloud: cannot bind {port}: {e}"),
            }
        };
        fake_cloud::server::serve(listener, fake_cloud::server::router(cloud, TOKEN.into()))
            .await
            .expect("fake-cloud serves");
    });
}

fn is_root() -> bool {
    nix::unistd::geteuid().is_root()
}

fn sigkill(child: &mut Child) {
    let _ = child.kill();
    let _ = child.wait();
}

/// The fake-cloud server process: startable, killable, restartable on its port.
struct FakeCloud {
    child: Option<Child>,
    port: u16,
    data_dir: PathBuf,
    http: reqwest::Client,
}

impl FakeCloud {
    fn new(data_dir: PathBuf) -> FakeCloud {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free port")
            .port();
        FakeCloud {
            child: None,
            port,
            data_dir,
            http: reqwest::Client::new(),
        }
    }

    fn base_url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    async fn start(&mut self) {
        let child = Command::new(std::env::current_exe().unwrap())
            .args(["--exact", "fake_cloud_server_process", "--nocapture"])
            .args(["--test-threads", "1"])
            .env(
                CHILD_ENV,
                format!("{} {}", self.port, self.data_dir.display()),
            )
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("the fake-cloud process starts");
        self.child = Some(child);
        let start = Instant::now();
        loop {
            if self.get("/v2/account").await.is_ok() {
                return;
            }
            assert!(
                start.elapsed() < Duration::from_secs(60),
                "fake-cloud never answered on port {}",
                self.port
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            sigkill(&mut child);
        }
    }

    async fn get(&self, path: &str) -> Result<serde_json::Value, String> {
        let r = self
            .http
            .get(format!("{}{path}", self.base_url()))
            .header("authorization", format!("Bearer {TOKEN}"))
            .timeout(Duration::from_secs(10))
            .send()
            .await
            .map_err(|e| e.to_string())?;
        if !r.status().is_success() {
            return Err(format!("GET {path}: {}", r.status()));
        }
        r.json().await.map_err(|e| e.to_string())
    }

    /// What fake-cloud holds: volumes (name, size, attachments), snapshots (name,
    /// source) and each droplet's volumes, in a comparable form.
    async fn state(&self) -> CloudState {
        let volumes = self.get("/v2/volumes?per_page=200").await.expect("volumes");
        let snapshots = self
            .get("/v2/snapshots?per_page=200")
            .await
            .expect("snapshots");
        let mut state = CloudState::default();
        for v in volumes["volumes"].as_array().into_iter().flatten() {
            state.volumes.push(format!(
                "{} id={} size={} droplets={}",
                v["name"], v["id"], v["size_gigabytes"], v["droplet_ids"]
            ));
        }
        for s in snapshots["snapshots"].as_array().into_iter().flatten() {
            state.snapshots.push(format!(
                "{} id={} volume={}",
                s["name"], s["id"], s["resource_id"]
            ));
        }
        for droplet in 1..=2 {
            let d = self
                .get(&format!("/v2/droplets/{droplet}"))
                .await
                .expect("droplet");
            state
                .attachments
                .push(format!("{droplet}: {}", d["droplet"]["volume_ids"]));
        }
        state.volumes.sort();
        state.snapshots.sort();
        state
    }
}

impl Drop for FakeCloud {
    fn drop(&mut self) {
        self.kill();
    }
}

#[derive(Debug, Default, Clone, PartialEq)]
struct CloudState {
    volumes: Vec<String>,
    snapshots: Vec<String>,
    attachments: Vec<String>,
}

/// The driver process, in the mount namespace of `holder` when root.
struct Driver {
    child: Option<Child>,
    socket: PathBuf,
    args: Vec<String>,
    holder: Option<Child>,
    log: PathBuf,
    incarnation: u32,
}

impl Driver {
    fn new(dir: &Path, cloud_url: &str, data_dir: &Path) -> Driver {
        let token_file = dir.join("token");
        std::fs::write(&token_file, TOKEN).unwrap();
        let by_id = dir.join("by-id");
        std::fs::create_dir_all(&by_id).unwrap();
        let socket = dir.join("csi.sock");
        let args = vec![
            format!("--endpoint=unix://{}", socket.display()),
            "--cloud=http".into(),
            format!("--cloud-url={cloud_url}"),
            format!("--token-file={}", token_file.display()),
            "--node-id=1".into(),
            format!("--data-dir={}", data_dir.display()),
            format!("--device-dir={}", by_id.display()),
            "--log-level=info".into(),
        ];
        // A process that only holds a private mount namespace for the driver's
        // incarnations, so mounts outlive each one, as they outlive a node plugin.
        let holder = is_root()
            .then(|| {
                Command::new("unshare")
                    .args(["--mount", "--propagation", "private", "sleep", "3600"])
                    .stdin(Stdio::null())
                    .spawn()
                    .ok()
            })
            .flatten();
        if holder.is_some() {
            // Wait until the namespace exists (unshare has exec'd sleep).
            std::thread::sleep(Duration::from_millis(200));
        }
        Driver {
            child: None,
            socket,
            args,
            holder,
            log: dir.join("driver.log"),
            incarnation: 0,
        }
    }

    /// The pid whose mountinfo shows the driver's mounts.
    fn namespace_pid(&self) -> String {
        match &self.holder {
            Some(h) => h.id().to_string(),
            None => "self".into(),
        }
    }

    fn start(&mut self) {
        self.incarnation += 1;
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .unwrap();
        let mut cmd = match &self.holder {
            Some(h) => {
                let mut c = Command::new("nsenter");
                c.args(["-t", &h.id().to_string(), "-m", "--", DRIVER]);
                c
            }
            None => Command::new(DRIVER),
        };
        let child = cmd
            .args(&self.args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("the driver starts");
        self.child = Some(child);
    }

    fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            sigkill(&mut child);
        }
    }

    /// A channel to a driver that answers GetPluginInfo, restarting it if it died.
    async fn channel(&mut self) -> Channel {
        if self
            .child
            .as_mut()
            .is_none_or(|c| c.try_wait().ok().flatten().is_some())
        {
            self.child = None;
            self.start();
        }
        let start = Instant::now();
        loop {
            if let Ok(ep) =
                tonic::transport::Endpoint::from_shared(format!("unix://{}", self.socket.display()))
            {
                if let Ok(ch) = ep.timeout(RPC_TIMEOUT).connect().await {
                    if IdentityClient::new(ch.clone())
                        .get_plugin_info(GetPluginInfoRequest {})
                        .await
                        .is_ok()
                    {
                        return ch;
                    }
                }
            }
            if let Some(status) = self
                .child
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten())
            {
                panic!(
                    "the driver (incarnation {}) exited at start: {status}\n{}",
                    self.incarnation,
                    tail(&self.log)
                );
            }
            assert!(
                start.elapsed() < Duration::from_secs(60),
                "the driver never served after a restart\n{}",
                tail(&self.log)
            );
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }

    /// Mount points under `root` in the driver's namespace, with repeats.
    fn mounts_under(&self, root: &Path) -> Vec<String> {
        let text = std::fs::read_to_string(format!("/proc/{}/mountinfo", self.namespace_pid()))
            .unwrap_or_default();
        text.lines()
            .filter_map(|l| l.split(' ').nth(4))
            .map(|p| p.replace("\\040", " "))
            .filter(|p| Path::new(p).starts_with(root))
            .collect()
    }
}

impl Drop for Driver {
    fn drop(&mut self) {
        self.kill();
        if let Some(mut h) = self.holder.take() {
            sigkill(&mut h);
        }
    }
}

fn tail(log: &Path) -> String {
    let text = std::fs::read_to_string(log).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(30)..]
        .iter()
        .map(|l| {
            let mut l = l.to_string();
            l.truncate(300);
            l
        })
        .collect::<Vec<_>>()
        .join("\n")
}

fn loop_devices_under(dir: &Path) -> Vec<String> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir("/sys/block")
        .into_iter()
        .flatten()
        .flatten()
    {
        if let Ok(file) = std::fs::read_to_string(entry.path().join("loop/backing_file")) {
            if Path::new(file.trim().trim_end_matches(" (deleted)")).starts_with(dir) {
                found.push(format!(
                    "{} ({})",
                    entry.file_name().to_string_lossy(),
                    file.trim()
                ));
            }
        }
    }
    found
}

fn capability() -> VolumeCapability {
    VolumeCapability {
        access_mode: Some(AccessMode {
            mode: access_mode::Mode::SingleNodeWriter as i32,
        }),
        access_type: Some(AccessType::Mount(MountVolume {
            fs_type: "ext4".into(),
            ..Default::default()
        })),
    }
}

/// What happened to the kills, for the report and the ≥ 20 rule.
#[derive(Default)]
struct KillLog {
    in_flight: u32,
    after_completion: u32,
    by_operation: BTreeMap<&'static str, u32>,
    retries: BTreeMap<String, u32>,
}

/// The CO: makes each call until it succeeds, killing the driver at a random moment
/// of the first attempts, and restarting it when it is dead.
struct Co {
    driver: Driver,
    channel: Channel,
    rng: rand::rngs::StdRng,
    kills: KillLog,
}

impl Co {
    fn controller(&self) -> ControllerClient<Channel> {
        ControllerClient::new(self.channel.clone())
    }

    fn node(&self) -> NodeClient<Channel> {
        NodeClient::new(self.channel.clone())
    }

    /// Call `op` until it succeeds. With `kill`, the first two attempts race a SIGKILL
    /// after a random delay of up to `window`.
    async fn call<T, F, Fut>(&mut self, name: &'static str, kill: Option<Duration>, op: F) -> T
    where
        F: FnMut(Channel) -> Fut,
        Fut: Future<Output = Result<tonic::Response<T>, tonic::Status>>,
    {
        match self.call_unless(name, kill, None, op).await {
            Ok(r) => r,
            Err(status) => unreachable!("no code ends the retries: {status:?}"),
        }
    }

    /// Like [`Co::call`], but an answer with the code `give_up` ends the retries.
    async fn call_unless<T, F, Fut>(
        &mut self,
        name: &'static str,
        kill: Option<Duration>,
        give_up: Option<tonic::Code>,
        mut op: F,
    ) -> Result<T, tonic::Status>
    where
        F: FnMut(Channel) -> Fut,
        Fut: Future<Output = Result<tonic::Response<T>, tonic::Status>>,
    {
        let mut last = String::new();
        let mut pause = Duration::from_millis(50);
        for attempt in 0..MAX_ATTEMPTS {
            self.channel = self.driver.channel().await;
            let call = op(self.channel.clone());
            let result = match kill.filter(|_| attempt < 2) {
                Some(window) => {
                    let delay =
                        Duration::from_millis(self.rng.random_range(0..=window.as_millis() as u64));
                    tokio::pin!(call);
                    tokio::select! {
                        result = &mut call => {
                            // It finished first: kill right after, which a CO can't tell
                            // from a crash before the answer was sent.
                            self.driver.kill();
                            self.kills.after_completion += 1;
                            result
                        }
                        _ = tokio::time::sleep(delay) => {
                            self.driver.kill();
                            self.kills.in_flight += 1;
                            *self.kills.by_operation.entry(name).or_default() += 1;
                            Err(tonic::Status::unavailable("killed mid-call"))
                        }
                    }
                }
                None => tokio::time::timeout(RPC_TIMEOUT, call)
                    .await
                    .unwrap_or_else(|_| Err(tonic::Status::deadline_exceeded("CO deadline"))),
            };
            match result {
                Ok(r) if kill.is_none() || attempt >= 1 => return Ok(r.into_inner()),
                Err(status) if Some(status.code()) == give_up => return Err(status),
                // An answer that came before the kill still stands; the CO never saw
                // it, so it retries (the idempotency every RPC promises).
                Ok(_) => last = "answered, then the driver died".into(),
                Err(status) => {
                    if status.message() != "killed mid-call" {
                        *self
                            .kills
                            .retries
                            .entry(format!("{name} {:?}", status.code()))
                            .or_default() += 1;
                    }
                    last = format!("{:?}: {}", status.code(), status.message());
                    tokio::time::sleep(pause).await;
                    pause = (pause * 2).min(Duration::from_secs(1));
                }
            }
        }
        panic!(
            "{name} never completed in {MAX_ATTEMPTS} attempts; last: {last}\n{}",
            tail(&self.driver.log)
        );
    }
}

/// One volume's lifecycle, every step under kills.
async fn lifecycle(co: &mut Co, cloud: &mut FakeCloud, dir: &Path, n: u32, node_steps: bool) {
    let name = format!("crash-{n}");
    // Kill windows about as long as each kind of call takes, so kills land inside it:
    // attach, detach and resize wait on cloud actions; the rest are quicker.
    let slow = Some(Duration::from_millis(700));
    let window = Some(Duration::from_millis(150));
    let volume = co
        .call("CreateVolume", window, |ch| {
            let name = name.clone();
            async move {
                ControllerClient::new(ch)
                    .create_volume(CreateVolumeRequest {
                        name,
                        capacity_range: Some(CapacityRange {
                            required_bytes: GIB,
                            limit_bytes: 0,
                        }),
                        volume_capabilities: vec![capability()],
                        ..Default::default()
                    })
                    .await
            }
        })
        .await
        .volume
        .expect("a volume");
    let volume_id = volume.volume_id.clone();

    // fake-cloud dies in the middle of an attach, once, and comes back.
    if n == 1 {
        let mut controller = co.controller();
        let request = ControllerPublishVolumeRequest {
            volume_id: volume_id.clone(),
            node_id: "1".into(),
            volume_capability: Some(capability()),
            ..Default::default()
        };
        let publish = tokio::spawn(async move {
            let _ = controller.controller_publish_volume(request).await;
        });
        tokio::time::sleep(Duration::from_millis(150)).await;
        cloud.kill();
        tokio::time::sleep(Duration::from_millis(300)).await;
        cloud.start().await;
        let _ = tokio::time::timeout(RPC_TIMEOUT, publish).await;
        println!(
            "fake-cloud killed during an attach, restarted on port {}",
            cloud.port
        );
    }

    let publish_context = co
        .call("ControllerPublishVolume", slow, |ch| {
            let volume_id = volume_id.clone();
            async move {
                ControllerClient::new(ch)
                    .controller_publish_volume(ControllerPublishVolumeRequest {
                        volume_id,
                        node_id: "1".into(),
                        volume_capability: Some(capability()),
                        ..Default::default()
                    })
                    .await
            }
        })
        .await
        .publish_context;

    let staging = dir.join(format!("staging/{name}"));
    let target = dir.join(format!("mount/{name}"));
    if node_steps {
        std::fs::create_dir_all(&staging).unwrap();
        std::fs::create_dir_all(target.parent().unwrap()).unwrap();
        let stage = NodeStageVolumeRequest {
            volume_id: volume_id.clone(),
            publish_context: publish_context.clone(),
            staging_target_path: staging.display().to_string(),
            volume_capability: Some(capability()),
            ..Default::default()
        };
        co.call("NodeStageVolume", window, |ch| {
            let r = stage.clone();
            async move { NodeClient::new(ch).node_stage_volume(r).await }
        })
        .await;
        let publish = NodePublishVolumeRequest {
            volume_id: volume_id.clone(),
            publish_context: publish_context.clone(),
            staging_target_path: staging.display().to_string(),
            target_path: target.display().to_string(),
            volume_capability: Some(capability()),
            ..Default::default()
        };
        co.call("NodePublishVolume", window, |ch| {
            let r = publish.clone();
            async move { NodeClient::new(ch).node_publish_volume(r).await }
        })
        .await;
        // A restarted node finds the mounts from mountinfo: stats work on a fresh
        // incarnation, and each path is mounted exactly once.
        co.driver.kill();
        co.channel = co.driver.channel().await;
        co.node()
            .node_get_volume_stats(NodeGetVolumeStatsRequest {
                volume_id: volume_id.clone(),
                volume_path: target.display().to_string(),
                staging_target_path: staging.display().to_string(),
            })
            .await
            .unwrap_or_else(|e| panic!("a restarted node lost the mount of {name}: {e:?}"));
        for path in [&staging, &target] {
            let mounts: Vec<String> = co
                .driver
                .mounts_under(path)
                .into_iter()
                .filter(|m| Path::new(m) == path.as_path())
                .collect();
            assert_eq!(
                mounts.len(),
                1,
                "{} is mounted {} times",
                path.display(),
                mounts.len()
            );
        }
    }

    let expand = ControllerExpandVolumeRequest {
        volume_id: volume_id.clone(),
        capacity_range: Some(CapacityRange {
            required_bytes: 2 * GIB,
            limit_bytes: 0,
        }),
        volume_capability: Some(capability()),
        ..Default::default()
    };
    let expanded = co
        .call("ControllerExpandVolume", slow, |ch| {
            let r = expand.clone();
            async move { ControllerClient::new(ch).controller_expand_volume(r).await }
        })
        .await;
    assert!(expanded.capacity_bytes >= 2 * GIB, "{expanded:?}");
    if node_steps && expanded.node_expansion_required {
        let node_expand = NodeExpandVolumeRequest {
            volume_id: volume_id.clone(),
            volume_path: target.display().to_string(),
            staging_target_path: staging.display().to_string(),
            capacity_range: expand.capacity_range,
            volume_capability: Some(capability()),
            ..Default::default()
        };
        // Some kernels refuse online ext4 growth (EPERM from the resize ioctl); the
        // driver says so with FAILED_PRECONDITION, which no retry can change.
        let grown = co
            .call_unless(
                "NodeExpandVolume",
                window,
                Some(tonic::Code::FailedPrecondition),
                |ch| {
                    let r = node_expand.clone();
                    async move { NodeClient::new(ch).node_expand_volume(r).await }
                },
            )
            .await;
        if let Err(status) = grown {
            if n == 0 {
                println!(
                    "note: NodeExpandVolume cannot grow online on this machine: {}",
                    status.message()
                );
            }
        }
    }

    let snapshot_name = format!("crash-snap-{n}");
    let snapshot = co
        .call("CreateSnapshot", window, |ch| {
            let (source_volume_id, name) = (volume_id.clone(), snapshot_name.clone());
            async move {
                ControllerClient::new(ch)
                    .create_snapshot(CreateSnapshotRequest {
                        source_volume_id,
                        name,
                        ..Default::default()
                    })
                    .await
            }
        })
        .await
        .snapshot
        .expect("a snapshot");

    // A quiet moment: kill fake-cloud and check it lost nothing.
    if n < 2 {
        let before = cloud.state().await;
        cloud.kill();
        cloud.start().await;
        let after = cloud.state().await;
        assert_eq!(before, after, "fake-cloud lost state across a SIGKILL");
        println!(
            "fake-cloud killed and restarted at a quiet moment: {} volumes, {} snapshots kept",
            after.volumes.len(),
            after.snapshots.len()
        );
    }

    // Nothing duplicated: each earlier lifecycle deleted its volume, so the cloud holds
    // exactly this one volume and its one snapshot, however often the calls were retried.
    let state = cloud.state().await;
    assert_eq!(
        (state.volumes.len(), state.snapshots.len()),
        (1, 1),
        "after retried creates, the cloud holds: {state:#?}"
    );
    assert!(state.volumes[0].contains(&volume_id), "{state:#?}");
    assert!(
        state.volumes[0].contains("droplets=[1]"),
        "the volume is attached once, to droplet 1: {state:#?}"
    );

    // Teardown, still under kills.
    co.call("DeleteSnapshot", window, |ch| {
        let snapshot_id = snapshot.snapshot_id.clone();
        async move {
            ControllerClient::new(ch)
                .delete_snapshot(DeleteSnapshotRequest {
                    snapshot_id,
                    ..Default::default()
                })
                .await
        }
    })
    .await;
    if node_steps {
        let unpublish = NodeUnpublishVolumeRequest {
            volume_id: volume_id.clone(),
            target_path: target.display().to_string(),
        };
        co.call("NodeUnpublishVolume", window, |ch| {
            let r = unpublish.clone();
            async move { NodeClient::new(ch).node_unpublish_volume(r).await }
        })
        .await;
        let unstage = NodeUnstageVolumeRequest {
            volume_id: volume_id.clone(),
            staging_target_path: staging.display().to_string(),
        };
        co.call("NodeUnstageVolume", window, |ch| {
            let r = unstage.clone();
            async move { NodeClient::new(ch).node_unstage_volume(r).await }
        })
        .await;
        let _ = std::fs::remove_dir(&staging);
    }
    co.call("ControllerUnpublishVolume", slow, |ch| {
        let volume_id = volume_id.clone();
        async move {
            ControllerClient::new(ch)
                .controller_unpublish_volume(ControllerUnpublishVolumeRequest {
                    volume_id,
                    node_id: "1".into(),
                    ..Default::default()
                })
                .await
        }
    })
    .await;
    co.call("DeleteVolume", window, |ch| {
        let volume_id = volume_id.clone();
        async move {
            ControllerClient::new(ch)
                .delete_volume(DeleteVolumeRequest {
                    volume_id,
                    ..Default::default()
                })
                .await
        }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn operations_complete_across_driver_and_cloud_crashes_without_duplicates_or_leaks() {
    let seed: u64 = std::env::var("CRASH_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(rand::random);
    let wanted: u32 = std::env::var("CRASH_KILLS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(20)
        .max(20);
    println!("crash recovery: seed {seed} (CRASH_SEED={seed} replays it)");
    let node_steps = is_root();
    if !node_steps {
        println!("skipped: needs root (node kill points: stage, publish, node expand)");
    }
    let dir = tempfile::Builder::new()
        .prefix("csi-crash-")
        .tempdir()
        .unwrap();
    let data_dir = dir.path().join("cloud");
    std::fs::create_dir_all(&data_dir).unwrap();
    let mut cloud = FakeCloud::new(data_dir.clone());
    cloud.start().await;
    let mut driver = Driver::new(dir.path(), &cloud.base_url(), &data_dir);
    let channel = driver.channel().await;
    let mut co = Co {
        driver,
        channel,
        rng: rand::rngs::StdRng::seed_from_u64(seed),
        kills: KillLog::default(),
    };
    let started = Instant::now();
    let mut n = 0;
    while n < 2 || (co.kills.in_flight < wanted && n < 12) {
        lifecycle(&mut co, &mut cloud, dir.path(), n, node_steps).await;
        n += 1;
    }
    let kills = &co.kills;
    println!(
        "crash recovery: {n} lifecycles, {} kills mid-call and {} right after a call, in {:.1}s",
        kills.in_flight,
        kills.after_completion,
        started.elapsed().as_secs_f64()
    );
    println!("  kills mid-call by operation: {:?}", kills.by_operation);
    println!("  errors the CO retried past: {:?}", kills.retries);
    assert!(
        kills.in_flight >= 20,
        "only {} kills landed mid-call in {n} lifecycles",
        kills.in_flight
    );

    // Nothing leaked: the cloud is empty, no mount or loop device is left.
    let state = cloud.state().await;
    assert!(
        state.volumes.is_empty() && state.snapshots.is_empty(),
        "left in the cloud: {state:#?}"
    );
    assert!(
        state.attachments.iter().all(|a| a.ends_with("[]")),
        "attachments left: {:?}",
        state.attachments
    );
    let mounts = co.driver.mounts_under(dir.path());
    assert!(mounts.is_empty(), "mounts left: {mounts:?}");
    co.driver.kill();
    drop(co);
    let loops = loop_devices_under(dir.path());
    assert!(loops.is_empty(), "loop devices left: {loops:?}");
}
