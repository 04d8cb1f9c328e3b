//! `csi-sanity load`: many concurrent volume lifecycles against a CSI endpoint, with
//! per-RPC latency percentiles, throughput, errors by code and the driver's peak memory.
//!
//! A lifecycle is CreateVolume, ControllerPublishVolume, NodeStageVolume,
//! NodePublishVolume, then the same undone in reverse: NodeUnpublishVolume,
//! NodeUnstageVolume, ControllerUnpublishVolume, DeleteVolume. Steps the driver does not
//! advertise are left out (publish without PUBLISH_UNPUBLISH_VOLUME, stage without
//! STAGE_UNSTAGE_VOLUME), and so are the node steps against the bundled driver when this
//! process is not root (it would have to mount). A step that fails with a code a CO
//! retries (ABORTED, UNAVAILABLE, DEADLINE_EXCEEDED, RESOURCE_EXHAUSTED) is retried with
//! backoff, as a CO would; every failed attempt still counts under errors by code.
//! Lifecycles spread over the nodes (`--csi.nodeendpoints`, or the bundled driver's
//! `--csi.bundlednodes`): each runs on the node with the fewest in flight. Lifecycles
//! holding a volume on a node never exceed its max_volumes_per_node, as a scheduler
//! would see to. Whatever a lifecycle made is undone,
//! in reverse order, even when a step fails and even on Ctrl-C: the first Ctrl-C stops
//! new calls and lets every lifecycle unwind; a second one exits at once.
//!
//! ```text
//! csi-sanity load --concurrency 8 --lifecycles 200
//! csi-sanity load --csi.endpoint unix:///run/csi.sock --duration 30s --rate 5 --driver-pid 1234
//! csi-sanity load --csi.endpoint unix:///n1/csi.sock --csi.nodeendpoints unix:///n2/csi.sock,unix:///n3/csi.sock
//! ```

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context;
use clap::Parser;
use csi_proto::v1::controller_client::ControllerClient;
use csi_proto::v1::controller_service_capability::rpc::Type as ControllerRpc;
use csi_proto::v1::node_client::NodeClient;
use csi_proto::v1::node_service_capability::rpc::Type as NodeRpc;
use csi_proto::v1::volume_capability::{access_mode, AccessMode, AccessType, MountVolume};
use csi_proto::v1::*;
use csi_suites::retry::{retried_by_a_co, Backoff};
use csi_suites::units::{as_millis, millis, parse_duration, parse_positive_size};
use tonic::transport::Channel;

/// The flags of `csi-sanity load`.
#[derive(Debug, Clone, Parser)]
#[command(
    name = "csi-sanity load",
    about = "Run concurrent volume lifecycles against a CSI endpoint and report latencies, \
             throughput, errors and the driver's peak memory"
)]
pub struct LoadArgs {
    /// The endpoint under test (unix:///path or tcp://host:port); default: the bundled
    /// driver, in this process.
    #[arg(long = "csi.endpoint")]
    pub endpoint: Option<String>,

    /// A separate controller endpoint.
    #[arg(long = "csi.controllerendpoint")]
    pub controller_endpoint: Option<String>,

    /// Node plugins of more nodes of the same driver, comma-separated. Each lifecycle
    /// runs on the node with the fewest lifecycles in flight (--csi.endpoint's node
    /// counts too), as a scheduler spreads pods. Every node must be a different node.
    #[arg(
        long = "csi.nodeendpoints",
        value_delimiter = ',',
        requires = "endpoint"
    )]
    pub node_endpoints: Vec<String>,

    /// How many nodes the bundled driver runs, each a droplet with its own node plugin
    /// (1 to 64; default: --concurrency, at most 64).
    #[arg(
        long = "csi.bundlednodes",
        conflicts_with = "endpoint",
        value_parser = clap::value_parser!(u16).range(1..=crate::bundled::MAX_NODES as i64)
    )]
    pub bundled_nodes: Option<u16>,

    /// Lifecycles in flight at once.
    #[arg(long, default_value_t = 4)]
    pub concurrency: usize,

    /// Lifecycles to run in all (default 100 when --duration is not given).
    #[arg(long, conflicts_with = "duration")]
    pub lifecycles: Option<u64>,

    /// Start lifecycles for this long (e.g. 30s, 2m), then let them finish.
    #[arg(long, value_parser = parse_duration)]
    pub duration: Option<Duration>,

    /// Start at most this many lifecycles per second.
    #[arg(long)]
    pub rate: Option<f64>,

    /// The driver's process id, to sample its peak memory (VmHWM).
    #[arg(long)]
    pub driver_pid: Option<u32>,

    /// Where target paths go (one directory per lifecycle under it).
    #[arg(long = "csi.mountdir")]
    pub mount_dir: Option<PathBuf>,

    /// Where staging paths go.
    #[arg(long = "csi.stagingdir")]
    pub staging_dir: Option<PathBuf>,

    /// Size of each volume: bytes, or with a unit (1Gi, 512Mi, 10G).
    #[arg(long, default_value = "1Gi", value_parser = parse_positive_size)]
    pub volume_size: i64,

    /// Deadline of one RPC.
    #[arg(long, default_value = "60s", value_parser = parse_duration)]
    pub rpc_timeout: Duration,

    /// Prefix of every volume name (a random part is added).
    #[arg(long, default_value = "load")]
    pub name_prefix: String,

    /// Print the report as JSON instead of a table.
    #[arg(long)]
    pub json: bool,

    /// The driver's Prometheus metrics (http://host:port/metrics, its --http-address), read
    /// before and after the run to report the cloud API requests per lifecycle and the
    /// 429s the driver saw.
    #[arg(long)]
    pub cloud_metrics: Option<String>,
}

/// The eight steps of a lifecycle, in order.
const STEPS: [&str; 8] = [
    "CreateVolume",
    "ControllerPublishVolume",
    "NodeStageVolume",
    "NodePublishVolume",
    "NodeUnpublishVolume",
    "NodeUnstageVolume",
    "ControllerUnpublishVolume",
    "DeleteVolume",
];

/// Latency percentiles of one RPC.
#[derive(Debug, Clone, serde::Serialize)]
///
/// In JSON each duration is milliseconds, a number, in a field named with `_ms`.
pub struct LatencyStats {
    pub calls: usize,
    #[serde(rename = "p50_ms", serialize_with = "as_millis")]
    pub p50: Duration,
    #[serde(rename = "p90_ms", serialize_with = "as_millis")]
    pub p90: Duration,
    #[serde(rename = "p99_ms", serialize_with = "as_millis")]
    pub p99: Duration,
    #[serde(rename = "max_ms", serialize_with = "as_millis")]
    pub max: Duration,
}

impl LatencyStats {
    /// Nearest-rank percentiles of `samples`; None when empty.
    pub fn of(samples: &[Duration]) -> Option<LatencyStats> {
        if samples.is_empty() {
            return None;
        }
        let mut sorted = samples.to_vec();
        sorted.sort();
        let rank = |p: f64| {
            let i = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
            sorted[i.clamp(1, sorted.len()) - 1]
        };
        Some(LatencyStats {
            calls: sorted.len(),
            p50: rank(50.0),
            p90: rank(90.0),
            p99: rank(99.0),
            max: sorted[sorted.len() - 1],
        })
    }
}

/// Where a peak RSS figure comes from.
#[derive(Debug, Clone, serde::Serialize)]
pub struct PeakRss {
    pub pid: u32,
    /// The largest of VmHWM and VmRSS seen while sampling, KiB.
    pub kib: u64,
    /// What the process is: the driver, or this process when the driver is in it.
    pub what: String,
}

/// What the run cost in cloud API requests, from the driver's metrics
/// (`cloud_requests_total`, before and after).
#[derive(Debug, Clone, serde::Serialize)]
pub struct CloudCost {
    /// Where the metrics were read.
    pub metrics_url: String,
    /// Cloud API requests the driver made during the run, retries included.
    pub requests: u64,
    /// `requests` per lifecycle that ran (completed or failed).
    pub requests_per_lifecycle: f64,
    /// Of those, answered 429.
    pub throttled: u64,
}

/// How many lifecycles ran on one node.
#[derive(Debug, Clone, serde::Serialize)]
pub struct NodeShare {
    pub node_id: String,
    pub lifecycles: u64,
}

/// What a load run found.
#[derive(Debug, Clone, serde::Serialize)]
pub struct LoadReport {
    pub endpoint: String,
    pub concurrency: usize,
    /// Wall time of the run; `elapsed_ms` in JSON.
    #[serde(rename = "elapsed_ms", serialize_with = "as_millis")]
    pub elapsed: Duration,
    pub lifecycles_ok: u64,
    pub lifecycles_failed: u64,
    /// Lifecycles a Ctrl-C cut short (and undid) before they completed.
    pub lifecycles_cut_short: u64,
    /// Whether the run was cut short by Ctrl-C.
    pub interrupted: bool,
    /// RPC name → latency stats, for every RPC that was called.
    pub latencies: BTreeMap<String, LatencyStats>,
    /// "RPC CODE" → count, for every failed call.
    pub errors: BTreeMap<String, u64>,
    /// "RPC CODE" → the first message seen with it.
    pub error_samples: BTreeMap<String, String>,
    /// Steps left out, with the reason.
    pub skipped_steps: Vec<String>,
    /// How the run was shaped by what the driver reported.
    pub notes: Vec<String>,
    pub peak_rss: Option<PeakRss>,
    /// The nodes lifecycles ran on, with how many each ran (empty when no step needed a
    /// node).
    pub nodes: Vec<NodeShare>,
    /// What could not be undone (volume ids, paths), empty when all was cleaned up.
    pub leftovers: Vec<String>,
    /// The cloud API requests the run cost (with `--cloud-metrics`).
    pub cloud: Option<CloudCost>,
}

impl LoadReport {
    /// Lifecycles completed per second of wall time.
    pub fn lifecycles_per_second(&self) -> f64 {
        let secs = self.elapsed.as_secs_f64();
        if secs > 0.0 {
            self.lifecycles_ok as f64 / secs
        } else {
            0.0
        }
    }

    /// No failed lifecycle and nothing left behind.
    pub fn success(&self) -> bool {
        self.lifecycles_failed == 0 && self.leftovers.is_empty()
    }
}

fn ms(d: Duration) -> String {
    format!("{:.2}ms", millis(d))
}

impl std::fmt::Display for LoadReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(
            f,
            "csi-sanity load against {}: {} lifecycles ok, {} failed, in {:.2}s with \
             concurrency {} → {:.2} lifecycles/s{}",
            self.endpoint,
            self.lifecycles_ok,
            self.lifecycles_failed,
            self.elapsed.as_secs_f64(),
            self.concurrency,
            self.lifecycles_per_second(),
            if self.interrupted {
                format!(
                    " (interrupted; {} cut short and undone)",
                    self.lifecycles_cut_short
                )
            } else {
                String::new()
            }
        )?;
        writeln!(
            f,
            "{:<28} {:>7} {:>10} {:>10} {:>10} {:>10}",
            "RPC", "calls", "p50", "p90", "p99", "max"
        )?;
        let order = |name: &str| STEPS.iter().position(|s| *s == name).unwrap_or(99);
        let mut rows: Vec<(&String, &LatencyStats)> = self.latencies.iter().collect();
        rows.sort_by_key(|(name, _)| (order(name), name.to_string()));
        for (rpc, s) in rows {
            writeln!(
                f,
                "{:<28} {:>7} {:>10} {:>10} {:>10} {:>10}",
                rpc,
                s.calls,
                ms(s.p50),
                ms(s.p90),
                ms(s.p99),
                ms(s.max)
            )?;
        }
        if self.errors.is_empty() {
            writeln!(f, "errors by code: none")?;
        } else {
            writeln!(f, "errors by code:")?;
            for (what, n) in &self.errors {
                let sample = self.error_samples.get(what).map_or("", String::as_str);
                writeln!(f, "  {what}: {n} (first: {sample})")?;
            }
        }
        if !self.nodes.is_empty() {
            let shares: Vec<String> = self
                .nodes
                .iter()
                .map(|n| format!("{} ({})", n.node_id, n.lifecycles))
                .collect();
            writeln!(
                f,
                "lifecycles per node ({} nodes): {}",
                self.nodes.len(),
                shares.join(", ")
            )?;
        }
        for skipped in &self.skipped_steps {
            writeln!(f, "skipped: {skipped}")?;
        }
        for note in &self.notes {
            writeln!(f, "note: {note}")?;
        }
        match &self.peak_rss {
            Some(rss) => writeln!(
                f,
                "peak RSS: {:.1} MiB (VmHWM of pid {}, {})",
                rss.kib as f64 / 1024.0,
                rss.pid,
                rss.what
            )?,
            None => writeln!(f, "peak RSS: not measured (pass --driver-pid PID)")?,
        }
        if let Some(cloud) = &self.cloud {
            writeln!(
                f,
                "cloud API: {} requests, {:.1} per lifecycle, {} answered 429 (from {})",
                cloud.requests, cloud.requests_per_lifecycle, cloud.throttled, cloud.metrics_url
            )?;
        }
        if self.leftovers.is_empty() {
            write!(f, "cleanup: everything the run created is gone")
        } else {
            write!(f, "cleanup: LEFT BEHIND: {}", self.leftovers.join(", "))
        }
    }
}

/// The driver's cloud request counters: (all requests, those answered 429), summed over
/// every `cloud_requests_total` series of a Prometheus text exposition.
pub fn cloud_request_totals(metrics: &str) -> (u64, u64) {
    let (mut all, mut throttled) = (0u64, 0u64);
    for line in metrics.lines() {
        let Some(rest) = line.strip_prefix("cloud_requests_total") else {
            continue;
        };
        let (labels, value) = match rest.rsplit_once(' ') {
            Some(parts) => parts,
            None => continue,
        };
        let Ok(value) = value.trim().parse::<f64>() else {
            continue;
        };
        let n = value as u64;
        all += n;
        if labels.contains("status=\"429\"") {
            throttled += n;
        }
    }
    (all, throttled)
}

/// GET an `http://` URL with a plain HTTP/1.1 exchange; the body of a 200 answer.
async fn http_get_text(url: &str) -> anyhow::Result<String> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let rest = url
        .strip_prefix("http://")
        .with_context(|| format!("--cloud-metrics {url:?}: only http:// URLs are read"))?;
    let (authority, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/metrics"),
    };
    let mut stream = tokio::time::timeout(
        Duration::from_secs(5),
        tokio::net::TcpStream::connect(authority),
    )
    .await
    .with_context(|| format!("connecting to {authority}: timed out"))?
    .with_context(|| format!("connecting to {authority}"))?;
    let request = format!("GET {path} HTTP/1.1\r\nHost: {authority}\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await?;
    let mut answer = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), stream.read_to_end(&mut answer))
        .await
        .with_context(|| format!("reading {url}: timed out"))??;
    let answer = String::from_utf8_lossy(&answer);
    let (head, body) = answer
        .split_once("\r\n\r\n")
        .with_context(|| format!("{url} gave no HTTP answer"))?;
    let status = head.lines().next().unwrap_or_default();
    if !status.contains(" 200") {
        anyhow::bail!("{url} answered {status:?}");
    }
    let chunked = head.lines().any(|l| {
        let l = l.to_ascii_lowercase();
        l.starts_with("transfer-encoding:") && l.contains("chunked")
    });
    if !chunked {
        return Ok(body.to_string());
    }
    let mut text = String::new();
    let mut rest = body;
    while let Some((size, after)) = rest.split_once("\r\n") {
        let size = usize::from_str_radix(size.split(';').next().unwrap_or("").trim(), 16)
            .with_context(|| format!("{url}: bad chunk size"))?;
        if size == 0 || after.len() < size {
            break;
        }
        text.push_str(&after[..size]);
        rest = after[size..].trim_start_matches("\r\n");
    }
    Ok(text)
}

/// Read VmHWM and VmRSS (KiB) of `pid` from /proc.
pub fn read_rss_kib(pid: u32) -> Option<(u64, u64)> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let field = |name: &str| {
        status
            .lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse::<u64>().ok())
    };
    Some((field("VmHWM:")?, field("VmRSS:")?))
}

/// Loop devices whose backing file lies under `dir`, as `loopN (file)`.
pub fn loop_devices_under(dir: &std::path::Path) -> Vec<String> {
    let mut found = Vec::new();
    let Ok(entries) = std::fs::read_dir("/sys/block") else {
        return found;
    };
    for entry in entries.flatten() {
        let backing = entry.path().join("loop/backing_file");
        if let Ok(file) = std::fs::read_to_string(backing) {
            let file = file.trim().trim_end_matches(" (deleted)");
            if std::path::Path::new(file).starts_with(dir) {
                found.push(format!("{} ({file})", entry.file_name().to_string_lossy()));
            }
        }
    }
    found
}

/// Everything a lifecycle records: latencies and error codes, shared by all workers.
#[derive(Default)]
struct Recorder {
    /// Deadline of one call; a call still running then counts as DEADLINE_EXCEEDED.
    rpc_timeout: Option<Duration>,
    latencies: Mutex<BTreeMap<&'static str, Vec<Duration>>>,
    errors: Mutex<BTreeMap<String, u64>>,
    /// The first message seen for each "RPC CODE", to say what went wrong.
    samples: Mutex<BTreeMap<String, String>>,
}

impl Recorder {
    async fn time<T, F>(&self, rpc: &'static str, call: F) -> Result<T, tonic::Status>
    where
        F: std::future::Future<Output = Result<tonic::Response<T>, tonic::Status>>,
    {
        let started = Instant::now();
        let result = match self.rpc_timeout {
            Some(limit) => match tokio::time::timeout(limit, call).await {
                Ok(result) => result,
                Err(_) => Err(tonic::Status::deadline_exceeded(format!(
                    "{rpc} took longer than {limit:?}"
                ))),
            },
            None => call.await,
        };
        let elapsed = started.elapsed();
        self.latencies
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .entry(rpc)
            .or_default()
            .push(elapsed);
        match result {
            Ok(r) => Ok(r.into_inner()),
            Err(status) => {
                let key = format!("{rpc} {:?}", status.code());
                let mut message = status.message().to_string();
                if message.len() > 300 {
                    let mut end = 300;
                    while !message.is_char_boundary(end) {
                        end -= 1;
                    }
                    message.truncate(end);
                }
                self.samples
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .entry(key.clone())
                    .or_insert(message);
                *self
                    .errors
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .entry(key)
                    .or_default() += 1;
                Err(status)
            }
        }
    }
}

/// What the run may do, decided once from the driver's capabilities.
#[derive(Debug, Clone)]
struct Plan {
    controller_publish: bool,
    stage: bool,
    node_steps: bool,
}

/// A node lifecycles run on: its node plugin, its id, and how busy it is.
struct LoadNode {
    client: NodeClient<Channel>,
    /// Empty when no step needs a node (and NodeGetInfo failed).
    id: String,
    /// One permit per volume the node may hold: a CO never schedules more volumes on
    /// a node than it reports in max_volumes_per_node.
    slots: Option<tokio::sync::Semaphore>,
    in_flight: AtomicUsize,
    ran: AtomicU64,
}

/// A lifecycle's hold on a node; the node counts one lifecycle fewer when it drops.
struct NodeLease<'a> {
    node: &'a LoadNode,
}

impl Drop for NodeLease<'_> {
    fn drop(&mut self) {
        self.node.in_flight.fetch_sub(1, Ordering::SeqCst);
    }
}

struct Shared {
    controller: ControllerClient<Channel>,
    /// --csi.endpoint's node first, then the others.
    nodes: Vec<LoadNode>,
    /// Held while a lifecycle picks its node, so two that start at once see each other.
    picking: Mutex<()>,
    plan: Plan,
    recorder: Recorder,
    stopping: AtomicBool,
    started: AtomicU64,
    ok: AtomicU64,
    failed: AtomicU64,
    cut_short: AtomicU64,
    leftovers: Mutex<Vec<String>>,
    budget: Budget,
    prefix: String,
    mount_dir: PathBuf,
    staging_dir: PathBuf,
    volume_size: i64,
}

/// When to stop starting lifecycles, and how fast to start them.
struct Budget {
    lifecycles: Option<u64>,
    until: Option<Instant>,
    rate: Option<f64>,
    t0: Instant,
}

fn capability() -> VolumeCapability {
    VolumeCapability {
        access_mode: Some(AccessMode {
            mode: access_mode::Mode::SingleNodeWriter as i32,
        }),
        access_type: Some(AccessType::Mount(MountVolume {
            fs_type: "ext4".into(),
            mount_flags: vec![],
            volume_mount_group: String::new(),
        })),
    }
}

/// How load mode retries a step, as a CO would: 20 ms doubling to 2 s, for a minute.
const BACKOFF: Backoff = Backoff {
    first: Duration::from_millis(20),
    max: Duration::from_secs(2),
    budget: Duration::from_secs(60),
};

/// How a lifecycle, or its forward half, ended.
enum Outcome {
    /// Every step succeeded (and, for the whole lifecycle, was undone).
    Done,
    /// A stop request ended it (a step a CO would have retried counts too), and what
    /// it made was undone.
    Stopped,
    /// A step failed, or something could not be undone.
    Failed,
}

/// What one lifecycle has done so far, so it can be undone in reverse.
#[derive(Default)]
struct Done {
    volume_id: Option<String>,
    published: bool,
    staging: Option<String>,
    staged: bool,
    target: Option<String>,
    node_published: bool,
}

impl Shared {
    fn stopping(&self) -> bool {
        self.stopping.load(Ordering::SeqCst)
    }

    /// Take the next lifecycle number, waiting for the rate; None when the budget is spent.
    async fn next_lifecycle(&self) -> Option<u64> {
        if self.stopping() {
            return None;
        }
        let n = self.started.fetch_add(1, Ordering::SeqCst);
        if self.budget.lifecycles.is_some_and(|max| n >= max) {
            return None;
        }
        if let Some(rate) = self.budget.rate.filter(|r| *r > 0.0) {
            let at = self.budget.t0 + Duration::from_secs_f64(n as f64 / rate);
            tokio::time::sleep_until(at.into()).await;
        }
        if self.budget.until.is_some_and(|u| Instant::now() >= u) || self.stopping() {
            return None;
        }
        Some(n)
    }

    /// Run one lifecycle: forward until done or a step fails or a stop is asked, then
    /// undo in reverse.
    async fn lifecycle(&self, n: u64) -> Outcome {
        let lease = self.pick_node();
        let node = lease.node;
        let _slot = match &node.slots {
            Some(slots) => slots.acquire().await.ok(),
            None => None,
        };
        let mut done = Done::default();
        let forward = self.forward(n, node, &mut done).await;
        let undone = self.undo(node, &mut done).await;
        if undone {
            forward
        } else {
            Outcome::Failed
        }
    }

    /// How a forward step that answered `status` ends the lifecycle: a code a CO would
    /// have gone on retrying, had the run not been stopped, only cuts it short.
    fn ended_by(&self, status: &tonic::Status) -> Outcome {
        if self.stopping() && retried_by_a_co(status.code()) {
            Outcome::Stopped
        } else {
            Outcome::Failed
        }
    }

    /// The node with the fewest lifecycles in flight (the first such one on a tie).
    fn pick_node(&self) -> NodeLease<'_> {
        let _picking = self.picking.lock().unwrap_or_else(|e| e.into_inner());
        let node = self
            .nodes
            .iter()
            .min_by_key(|n| n.in_flight.load(Ordering::SeqCst))
            .expect("at least one node");
        node.in_flight.fetch_add(1, Ordering::SeqCst);
        node.ran.fetch_add(1, Ordering::SeqCst);
        NodeLease { node }
    }

    /// The forward half: each step is retried while it fails with a code a CO retries
    /// (every failed attempt still counts in the errors), and a stop request ends it.
    async fn forward(&self, n: u64, node: &LoadNode, done: &mut Done) -> Outcome {
        let name = format!("{}-{n}", self.prefix);
        let create = CreateVolumeRequest {
            name: name.clone(),
            capacity_range: Some(CapacityRange {
                required_bytes: self.volume_size,
                limit_bytes: 0,
            }),
            volume_capabilities: vec![capability()],
            ..Default::default()
        };
        let created = self
            .call_retrying("CreateVolume", || {
                let (mut c, r) = (self.controller.clone(), create.clone());
                async move { c.create_volume(r).await }
            })
            .await;
        let volume = match created.map(|r| r.volume) {
            Ok(Some(v)) => v,
            Ok(None) => return Outcome::Failed,
            Err(status) => return self.ended_by(&status),
        };
        done.volume_id = Some(volume.volume_id.clone());
        let volume_id = volume.volume_id;
        if self.stopping() {
            return Outcome::Stopped;
        }
        let mut publish_context = Default::default();
        if self.plan.controller_publish {
            let publish = ControllerPublishVolumeRequest {
                volume_id: volume_id.clone(),
                node_id: node.id.clone(),
                volume_capability: Some(capability()),
                volume_context: volume.volume_context.clone(),
                ..Default::default()
            };
            // Undone even if it fails: a failed attach may have started.
            done.published = true;
            match self
                .call_retrying("ControllerPublishVolume", || {
                    let (mut c, r) = (self.controller.clone(), publish.clone());
                    async move { c.controller_publish_volume(r).await }
                })
                .await
            {
                Ok(r) => publish_context = r.publish_context,
                Err(status) => return self.ended_by(&status),
            }
        }
        if self.stopping() {
            return Outcome::Stopped;
        }
        if !self.plan.node_steps {
            return Outcome::Done;
        }
        let staging = self.staging_dir.join(&name).display().to_string();
        if self.plan.stage {
            if std::fs::create_dir_all(&staging).is_err() {
                return Outcome::Failed;
            }
            done.staging = Some(staging.clone());
            let stage = NodeStageVolumeRequest {
                volume_id: volume_id.clone(),
                publish_context: publish_context.clone(),
                staging_target_path: staging.clone(),
                volume_capability: Some(capability()),
                volume_context: volume.volume_context.clone(),
                ..Default::default()
            };
            done.staged = true;
            let staged = self
                .call_retrying("NodeStageVolume", || {
                    let (mut c, r) = (node.client.clone(), stage.clone());
                    async move { c.node_stage_volume(r).await }
                })
                .await;
            if let Err(status) = staged {
                return self.ended_by(&status);
            }
            if self.stopping() {
                return Outcome::Stopped;
            }
        }
        let target = self.mount_dir.join(&name).display().to_string();
        if std::fs::create_dir_all(&self.mount_dir).is_err() {
            return Outcome::Failed;
        }
        done.target = Some(target.clone());
        let publish = NodePublishVolumeRequest {
            volume_id,
            publish_context,
            staging_target_path: if self.plan.stage {
                staging
            } else {
                String::new()
            },
            target_path: target,
            volume_capability: Some(capability()),
            volume_context: volume.volume_context,
            ..Default::default()
        };
        done.node_published = true;
        let published = self
            .call_retrying("NodePublishVolume", || {
                let (mut c, r) = (node.client.clone(), publish.clone());
                async move { c.node_publish_volume(r).await }
            })
            .await;
        match published {
            Err(status) => self.ended_by(&status),
            Ok(_) if self.stopping() => Outcome::Stopped,
            Ok(_) => Outcome::Done,
        }
    }

    /// Undo what `done` says was done, in reverse order. Each step is retried, as a CO
    /// would, while it fails with a retriable code, for at most a minute.
    async fn undo(&self, node: &LoadNode, done: &mut Done) -> bool {
        let Some(volume_id) = done.volume_id.clone() else {
            return true;
        };
        let mut clean = true;
        if done.node_published {
            let target = done.target.clone().unwrap_or_default();
            let request = NodeUnpublishVolumeRequest {
                volume_id: volume_id.clone(),
                target_path: target.clone(),
            };
            let ok = self
                .retrying("NodeUnpublishVolume", || {
                    let (mut c, request) = (node.client.clone(), request.clone());
                    async move { c.node_unpublish_volume(request).await }
                })
                .await;
            if !ok {
                self.left(format!("target {target} of {volume_id}"));
                clean = false;
            }
            let _ = std::fs::remove_dir(&target);
        }
        if done.staged {
            let staging = done.staging.clone().unwrap_or_default();
            let request = NodeUnstageVolumeRequest {
                volume_id: volume_id.clone(),
                staging_target_path: staging.clone(),
            };
            let ok = self
                .retrying("NodeUnstageVolume", || {
                    let (mut c, request) = (node.client.clone(), request.clone());
                    async move { c.node_unstage_volume(request).await }
                })
                .await;
            if !ok {
                self.left(format!("staging {staging} of {volume_id}"));
                clean = false;
            }
        }
        if let Some(staging) = &done.staging {
            let _ = std::fs::remove_dir(staging);
        }
        if done.published {
            let request = ControllerUnpublishVolumeRequest {
                volume_id: volume_id.clone(),
                node_id: node.id.clone(),
                ..Default::default()
            };
            let ok = self
                .retrying("ControllerUnpublishVolume", || {
                    let (mut c, request) = (self.controller.clone(), request.clone());
                    async move { c.controller_unpublish_volume(request).await }
                })
                .await;
            if !ok {
                self.left(format!("attachment of {volume_id} to node {}", node.id));
                clean = false;
            }
        }
        let request = DeleteVolumeRequest {
            volume_id: volume_id.clone(),
            ..Default::default()
        };
        let deleted = self
            .retrying("DeleteVolume", || {
                let (mut c, request) = (self.controller.clone(), request.clone());
                async move { c.delete_volume(request).await }
            })
            .await;
        if !deleted {
            self.left(format!("volume {volume_id}"));
            clean = false;
        }
        clean
    }

    /// Call until OK, retrying codes a CO retries, for at most a minute; a stop request
    /// ends the retries of forward steps (undo steps pass `undoing`).
    async fn call_retrying<T, F, Fut>(&self, rpc: &'static str, call: F) -> Result<T, tonic::Status>
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = Result<tonic::Response<T>, tonic::Status>>,
    {
        self.call_retrying_while(rpc, false, call).await
    }

    async fn call_retrying_while<T, F, Fut>(
        &self,
        rpc: &'static str,
        undoing: bool,
        mut call: F,
    ) -> Result<T, tonic::Status>
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = Result<tonic::Response<T>, tonic::Status>>,
    {
        let mut pacing = BACKOFF.start();
        loop {
            let status = match self.recorder.time(rpc, call()).await {
                Ok(r) => return Ok(r),
                Err(status) => status,
            };
            let again = retried_by_a_co(status.code()) && (undoing || !self.stopping());
            if !(again && pacing.wait().await) {
                return Err(status);
            }
        }
    }

    /// An undo step: retried like the forward ones, even after a stop request.
    async fn retrying<T, F, Fut>(&self, rpc: &'static str, call: F) -> bool
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = Result<tonic::Response<T>, tonic::Status>>,
    {
        self.call_retrying_while(rpc, true, call).await.is_ok()
    }

    fn left(&self, what: String) {
        self.leftovers
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(what);
    }
}

/// Decide which steps apply, from what the driver advertises.
async fn plan(
    controller: &mut ControllerClient<Channel>,
    node: &mut NodeClient<Channel>,
    bundled: bool,
) -> anyhow::Result<(Plan, Vec<String>, NodeGetInfoResponse)> {
    let caps: Vec<i32> = controller
        .controller_get_capabilities(ControllerGetCapabilitiesRequest {})
        .await
        .context("ControllerGetCapabilities")?
        .into_inner()
        .capabilities
        .into_iter()
        .filter_map(|c| {
            c.r#type
                .map(|controller_service_capability::Type::Rpc(r)| r.r#type)
        })
        .collect();
    if !caps.contains(&(ControllerRpc::CreateDeleteVolume as i32)) {
        anyhow::bail!(
            "the driver does not advertise CREATE_DELETE_VOLUME; there is nothing to load"
        );
    }
    let mut skipped = Vec::new();
    let controller_publish = caps.contains(&(ControllerRpc::PublishUnpublishVolume as i32));
    if !controller_publish {
        skipped.push(
            "ControllerPublishVolume/ControllerUnpublishVolume (no PUBLISH_UNPUBLISH_VOLUME)"
                .to_string(),
        );
    }
    let node_caps: Vec<i32> = match node
        .node_get_capabilities(NodeGetCapabilitiesRequest {})
        .await
    {
        Ok(r) => r
            .into_inner()
            .capabilities
            .into_iter()
            .filter_map(|c| {
                c.r#type
                    .map(|node_service_capability::Type::Rpc(r)| r.r#type)
            })
            .collect(),
        Err(_) => Vec::new(),
    };
    let first_node = match node.node_get_info(NodeGetInfoRequest {}).await {
        Ok(r) => Some(r.into_inner()),
        Err(e) if controller_publish => {
            anyhow::bail!("NodeGetInfo failed, so there is no node to publish to: {e}")
        }
        Err(_) => None,
    };
    let root = nix::unistd::geteuid().is_root();
    let has_node = first_node.as_ref().is_some_and(|n| !n.node_id.is_empty());
    let node_steps = (!bundled || root) && has_node;
    let stage = node_caps.contains(&(NodeRpc::StageUnstageVolume as i32));
    if !has_node {
        skipped.push(
            "NodeStageVolume/NodePublishVolume and their undo (NodeGetInfo gave no node id)"
                .to_string(),
        );
    } else if !node_steps {
        skipped.push(
            "NodeStageVolume/NodePublishVolume and their undo (skipped: needs root, the \
             bundled driver mounts in this process)"
                .to_string(),
        );
    } else if !stage {
        skipped.push("NodeStageVolume/NodeUnstageVolume (no STAGE_UNSTAGE_VOLUME)".to_string());
    }
    Ok((
        Plan {
            controller_publish,
            stage,
            node_steps,
        },
        skipped,
        first_node.unwrap_or_default(),
    ))
}

/// The nodes lifecycles run on: --csi.endpoint's (`first`), then each of `extra`, which
/// must answer NodeGetInfo with a node id no other node has. A node gets slots when its
/// max_volumes_per_node is below its share of the concurrency.
async fn load_nodes(
    first: (NodeClient<Channel>, NodeGetInfoResponse),
    extra: Vec<(String, NodeClient<Channel>)>,
    volume_limited: bool,
    concurrency: usize,
) -> anyhow::Result<(Vec<LoadNode>, Vec<String>)> {
    let mut infos = vec![("--csi.endpoint".to_string(), first.0, first.1)];
    for (endpoint, mut client) in extra {
        let info = client
            .node_get_info(NodeGetInfoRequest {})
            .await
            .with_context(|| format!("--csi.nodeendpoints: NodeGetInfo of {endpoint}"))?
            .into_inner();
        if info.node_id.is_empty() {
            anyhow::bail!("--csi.nodeendpoints: {endpoint} answered NodeGetInfo with no node id");
        }
        if let Some((other, _, _)) = infos.iter().find(|(_, _, i)| i.node_id == info.node_id) {
            anyhow::bail!(
                "--csi.nodeendpoints: {endpoint} is node {:?}, as {other} is: every node endpoint must be a different node",
                info.node_id
            );
        }
        infos.push((endpoint, client, info));
    }
    // Lifecycles go to the least busy node, so none holds more than its share at once.
    let share = concurrency.div_ceil(infos.len());
    let mut notes = Vec::new();
    let nodes = infos
        .into_iter()
        .map(|(_, client, info)| {
            let max = info.max_volumes_per_node;
            let limited = volume_limited && max > 0 && (max as usize) < share;
            if limited {
                notes.push(format!(
                    "node {}: lifecycles wait for a slot beyond its max_volumes_per_node ({max})",
                    info.node_id
                ));
            }
            LoadNode {
                client,
                id: info.node_id,
                slots: limited.then(|| tokio::sync::Semaphore::new(max as usize)),
                in_flight: AtomicUsize::new(0),
                ran: AtomicU64::new(0),
            }
        })
        .collect();
    Ok((nodes, notes))
}

/// Run a load test. Must be called inside a tokio runtime.
pub async fn run(args: LoadArgs) -> anyhow::Result<LoadReport> {
    if args.concurrency == 0 {
        anyhow::bail!("--concurrency must be at least 1");
    }
    let bundled = match &args.endpoint {
        Some(_) => None,
        None => {
            let nodes = args
                .bundled_nodes
                .map_or(args.concurrency.min(crate::bundled::MAX_NODES), usize::from);
            Some(crate::bundled::start(nodes).await?)
        }
    };
    let endpoint = match (&args.endpoint, &bundled) {
        (Some(e), _) => e.clone(),
        (None, Some(b)) => b.endpoint.clone(),
        (None, None) => unreachable!("a bundled driver was started"),
    };
    let scratch = tempfile::Builder::new().prefix("csi-load-").tempdir()?;
    let mount_dir = args
        .mount_dir
        .clone()
        .or_else(|| bundled.as_ref().map(|b| b.mount_dir()))
        .unwrap_or_else(|| scratch.path().join("mount"));
    let staging_dir = args
        .staging_dir
        .clone()
        .or_else(|| bundled.as_ref().map(|b| b.staging_dir()))
        .unwrap_or_else(|| scratch.path().join("staging"));
    let connect = |e: String| async move {
        let channel = crate::connect::connect(&e, Duration::from_secs(10)).await?;
        anyhow::Ok(channel)
    };
    let node_channel = connect(endpoint.clone()).await?;
    let controller_channel = match &args.controller_endpoint {
        Some(c) => connect(c.clone()).await?,
        None => node_channel.clone(),
    };
    let mut controller = ControllerClient::new(controller_channel);
    let mut node = NodeClient::new(node_channel);
    let (plan, skipped_steps, first_node) =
        plan(&mut controller, &mut node, bundled.is_some()).await?;
    let extra_endpoints = match &bundled {
        Some(b) => b.extra_node_endpoints.clone(),
        None => args.node_endpoints.clone(),
    };
    let mut extra = Vec::new();
    if plan.controller_publish || plan.node_steps {
        for e in extra_endpoints {
            let channel = connect(e.clone())
                .await
                .with_context(|| format!("--csi.nodeendpoints: {e}"))?;
            extra.push((e, NodeClient::new(channel)));
        }
    }
    let (nodes, notes) = load_nodes(
        (node, first_node),
        extra,
        plan.controller_publish,
        args.concurrency,
    )
    .await?;

    // Sample the peak memory of the driver (or of this process, which holds the bundled
    // driver) every 50 ms; VmHWM is already a peak, the sampling keeps the figure even
    // if the process goes away before the end.
    let rss_pid = args
        .driver_pid
        .or_else(|| bundled.as_ref().map(|_| std::process::id()));
    let rss_peak = Arc::new(AtomicU64::new(0));
    let sampling = Arc::new(AtomicBool::new(true));
    let sampler = rss_pid.map(|pid| {
        let peak = rss_peak.clone();
        let sampling = sampling.clone();
        tokio::spawn(async move {
            while sampling.load(Ordering::SeqCst) {
                if let Some((hwm, rss)) = read_rss_kib(pid) {
                    peak.fetch_max(hwm.max(rss), Ordering::SeqCst);
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        })
    });

    let lifecycles = match (args.lifecycles, args.duration) {
        (Some(n), _) => Some(n),
        (None, Some(_)) => None,
        (None, None) => Some(100),
    };
    let cloud_before = match &args.cloud_metrics {
        Some(url) => Some(cloud_request_totals(
            &http_get_text(url).await.with_context(|| {
                format!("reading the driver's metrics at {url} (--cloud-metrics)")
            })?,
        )),
        None => None,
    };
    let t0 = Instant::now();
    let random = uuid::Uuid::new_v4().simple().to_string();
    let shared = Arc::new(Shared {
        controller: controller.clone(),
        nodes,
        picking: Mutex::new(()),
        plan,
        recorder: Recorder {
            rpc_timeout: Some(args.rpc_timeout),
            ..Recorder::default()
        },
        stopping: AtomicBool::new(false),
        started: AtomicU64::new(0),
        ok: AtomicU64::new(0),
        failed: AtomicU64::new(0),
        cut_short: AtomicU64::new(0),
        leftovers: Mutex::new(Vec::new()),
        budget: Budget {
            lifecycles,
            until: args.duration.map(|d| t0 + d),
            rate: args.rate,
            t0,
        },
        prefix: format!("{}-{}", args.name_prefix, &random[..8]),
        mount_dir,
        staging_dir,
        volume_size: args.volume_size,
    });
    let workers: Vec<_> = (0..args.concurrency)
        .map(|_| {
            let shared = shared.clone();
            tokio::spawn(async move {
                while let Some(n) = shared.next_lifecycle().await {
                    let counter = match shared.lifecycle(n).await {
                        Outcome::Done => &shared.ok,
                        Outcome::Stopped => &shared.cut_short,
                        Outcome::Failed => &shared.failed,
                    };
                    counter.fetch_add(1, Ordering::SeqCst);
                }
            })
        })
        .collect();
    let all_done = futures::future::join_all(workers);
    tokio::pin!(all_done);
    let mut interrupted = false;
    tokio::select! {
        _ = &mut all_done => {}
        _ = tokio::signal::ctrl_c() => {
            interrupted = true;
            shared.stopping.store(true, Ordering::SeqCst);
            eprintln!("csi-sanity load: Ctrl-C: no new calls; undoing what was made (Ctrl-C again to quit at once)");
            tokio::select! {
                _ = &mut all_done => {}
                _ = tokio::signal::ctrl_c() => {
                    let left = shared.leftovers.lock().unwrap_or_else(|e| e.into_inner()).clone();
                    anyhow::bail!("interrupted twice; cleanup was cut short (known leftovers: {left:?})");
                }
            }
        }
    }
    let elapsed = t0.elapsed();
    let cloud = match (&args.cloud_metrics, cloud_before) {
        (Some(url), Some((all_before, throttled_before))) => {
            let (all, throttled) =
                cloud_request_totals(&http_get_text(url).await.with_context(|| {
                    format!("reading the driver's metrics at {url} (--cloud-metrics)")
                })?);
            let requests = all.saturating_sub(all_before);
            let ran = shared.ok.load(Ordering::SeqCst) + shared.failed.load(Ordering::SeqCst);
            Some(CloudCost {
                metrics_url: url.clone(),
                requests,
                requests_per_lifecycle: requests as f64 / ran.max(1) as f64,
                throttled: throttled.saturating_sub(throttled_before),
            })
        }
        _ => None,
    };
    sampling.store(false, Ordering::SeqCst);
    if let Some(s) = sampler {
        let _ = s.await;
    }
    if let Some(pid) = rss_pid {
        if let Some((hwm, rss)) = read_rss_kib(pid) {
            rss_peak.fetch_max(hwm.max(rss), Ordering::SeqCst);
        }
    }
    if let Some(b) = bundled {
        // The bundled driver's volumes are image files under its directory; a loop
        // device still backed by one is a leftover too.
        for device in loop_devices_under(b.dir()) {
            shared
                .leftovers
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .push(format!("loop device {device}"));
        }
        b.stop().await;
    }

    let latencies = shared
        .recorder
        .latencies
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .iter()
        .filter_map(|(rpc, samples)| LatencyStats::of(samples).map(|s| (rpc.to_string(), s)))
        .collect();
    let errors = shared
        .recorder
        .errors
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .clone();
    let error_samples = shared
        .recorder
        .samples
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .clone();
    let peak = rss_peak.load(Ordering::SeqCst);
    let leftovers = shared
        .leftovers
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .clone();
    Ok(LoadReport {
        endpoint: if args.endpoint.is_some() {
            endpoint
        } else {
            "the bundled driver (in process)".to_string()
        },
        concurrency: args.concurrency,
        elapsed,
        lifecycles_ok: shared.ok.load(Ordering::SeqCst),
        lifecycles_failed: shared.failed.load(Ordering::SeqCst),
        lifecycles_cut_short: shared.cut_short.load(Ordering::SeqCst),
        interrupted,
        latencies,
        errors,
        error_samples,
        skipped_steps,
        notes,
        nodes: shared
            .nodes
            .iter()
            .filter(|n| {
                !n.id.is_empty() && (shared.plan.controller_publish || shared.plan.node_steps)
            })
            .map(|n| NodeShare {
                node_id: n.id.clone(),
                lifecycles: n.ran.load(Ordering::SeqCst),
            })
            .collect(),
        peak_rss: rss_pid.filter(|_| peak > 0).map(|pid| PeakRss {
            pid,
            kib: peak,
            what: if args.driver_pid.is_some() {
                "the driver".to_string()
            } else {
                "this process, which holds the bundled driver and the load client".to_string()
            },
        }),
        leftovers,
        cloud,
    })
}

/// `csi-sanity load ARGS...`: `args` are the arguments after `load`.
pub fn main(args: Vec<String>) -> ExitCode {
    let args = match LoadArgs::try_parse_from(
        std::iter::once("csi-sanity load".to_string()).chain(args),
    ) {
        Ok(a) => a,
        Err(e) => {
            let _ = e.print();
            return if e.use_stderr() {
                ExitCode::from(2)
            } else {
                ExitCode::SUCCESS
            };
        }
    };
    let json = args.json;
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("csi-sanity load: cannot start the async runtime: {e}");
            return ExitCode::from(2);
        }
    };
    match rt.block_on(run(args)) {
        Ok(report) => {
            if json {
                match serde_json::to_string_pretty(&report) {
                    Ok(text) => println!("{text}"),
                    Err(e) => eprintln!("csi-sanity load: {e}"),
                }
            } else {
                println!("{report}");
            }
            if report.success() {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(1)
            }
        }
        Err(e) => {
            eprintln!("csi-sanity load: {e:#}");
            ExitCode::from(2)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cloud_request_totals_sum_every_series_and_the_429s() {
        let text = "# HELP cloud_requests Cloud API calls\n\
            cloud_requests_total{call=\"get_action\",status=\"200\"} 12\n\
            cloud_requests_total{call=\"create_volume\",status=\"429\"} 3\n\
            cloud_request_duration_seconds_count{call=\"get_action\"} 12\n\
            csi_operations_total{method=\"CreateVolume\",code=\"Ok\"} 4\n";
        assert_eq!(cloud_request_totals(text), (15, 3));
    }

    #[test]
    fn percentiles_use_the_nearest_rank() {
        let samples: Vec<Duration> = (1..=100).map(Duration::from_millis).collect();
        let s = LatencyStats::of(&samples).unwrap();
        assert_eq!(s.p50, Duration::from_millis(50));
        assert_eq!(s.p90, Duration::from_millis(90));
        assert_eq!(s.p99, Duration::from_millis(99));
        assert_eq!(s.max, Duration::from_millis(100));
        let one = LatencyStats::of(&[Duration::from_millis(7)]).unwrap();
        assert_eq!(
            (one.p50, one.p99),
            (Duration::from_millis(7), Duration::from_millis(7))
        );
        assert!(LatencyStats::of(&[]).is_none());
    }

    #[test]
    fn sizes_and_durations_parse() {
        assert_eq!(parse_positive_size("1Gi"), Ok(1 << 30));
        assert_eq!(parse_positive_size("512Mi"), Ok(512 << 20));
        assert_eq!(parse_positive_size("10G"), Ok(10_000_000_000));
        assert_eq!(parse_positive_size("4096"), Ok(4096));
        assert!(parse_positive_size("0").is_err());
        assert!(parse_positive_size("1Xi").is_err());
        assert!(parse_positive_size("99999999999Ti").is_err());
        assert_eq!(parse_duration("30s"), Ok(Duration::from_secs(30)));
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        assert!(parse_duration("soon").is_err());
    }

    /// The one binary reads a duration one way: `--csi.timeout` of the suite and
    /// `--duration` of load mode give the same answer for every example of the grammar.
    #[test]
    fn both_commands_read_durations_alike() {
        for (text, want) in csi_suites::units::DURATION_EXAMPLES {
            let suite = match crate::cli::parse([format!("--csi.timeout={text}")]) {
                Ok(crate::cli::Command::Run(c)) => Some(c.suite.rpc_timeout),
                _ => None,
            };
            let load = LoadArgs::try_parse_from(["load".to_string(), format!("--duration={text}")])
                .ok()
                .and_then(|a| a.duration);
            assert_eq!((suite, load), (*want, *want), "{text:?}");
        }
    }

    #[test]
    fn flags_parse_like_the_harness() {
        let a = LoadArgs::try_parse_from([
            "load",
            "--csi.endpoint",
            "unix:///tmp/x.sock",
            "--concurrency",
            "8",
            "--duration",
            "30s",
            "--rate",
            "2.5",
            "--driver-pid",
            "42",
            "--csi.mountdir=/tmp/m",
            "--volume-size",
            "2Gi",
            "--csi.nodeendpoints",
            "unix:///tmp/n2.sock,unix:///tmp/n3.sock",
        ])
        .unwrap();
        assert_eq!(a.endpoint.as_deref(), Some("unix:///tmp/x.sock"));
        assert_eq!(a.concurrency, 8);
        assert_eq!(a.duration, Some(Duration::from_secs(30)));
        assert_eq!(a.rate, Some(2.5));
        assert_eq!(a.driver_pid, Some(42));
        assert_eq!(a.volume_size, 2 << 30);
        assert_eq!(
            a.node_endpoints,
            ["unix:///tmp/n2.sock", "unix:///tmp/n3.sock"]
        );
        let bundled = LoadArgs::try_parse_from(["load", "--csi.bundlednodes", "5"]).unwrap();
        assert_eq!(bundled.bundled_nodes, Some(5));
        assert!(
            LoadArgs::try_parse_from(["load", "--lifecycles", "3", "--duration", "1s"]).is_err()
        );
    }

    #[test]
    fn this_process_has_a_peak_rss() {
        let (hwm, rss) = read_rss_kib(std::process::id()).unwrap();
        assert!(hwm >= rss && rss > 0);
    }
}
