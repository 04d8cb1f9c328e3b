//! Performance figures, printed as a table; nothing here asserts a time.
//!
//! Run with `./bench.sh` at the workspace root (it builds the release binaries this needs,
//! then runs `cargo bench -p csi-sanity --bench performance`). It measures:
//!
//! 1. the round-trip time of an empty Probe (the floor every RPC is compared with) and
//!    CreateVolume against the in-memory cloud, both in process;
//! 2. the driver's idle RSS (the `csi-driver` binary, started and probed once);
//! 3. `csi-sanity load` against the `csi-driver` binary, with its peak RSS, and at
//!    500 ms attach latency on one node and spread over 8;
//! 4. the full conformance suite's wall time (the `csi-sanity` binary against the
//!    `csi-driver` binary) with the cloud's attach latency at 0 and 500 ms: with
//!    `--csi.parallel 1` on one node, and with `--csi.parallel 8` on one node and spread
//!    over 8 nodes (node-only `csi-driver` processes given by `--csi.nodeendpoints`).
//!    A droplet runs one attach or detach at a time, as on DigitalOcean, so on one node
//!    parallel specs only queue for it; over 8 nodes their attachments overlap.
//!
//! `BENCH_SKIP_SUITE=1` leaves out part 4, the slow one. Targets are printed beside the
//! figures: idle RSS < 10 MB; CreateVolume p50 < 3x Probe p50; the suite at 500 ms
//! attach with parallel 8 < 0.3x parallel 1.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use clap::Parser;
use csi_proto::v1::controller_client::ControllerClient;
use csi_proto::v1::identity_client::IdentityClient;
use csi_proto::v1::volume_capability::{access_mode, AccessMode, AccessType, MountVolume};
use csi_proto::v1::*;
use csi_sanity::load::{read_rss_kib, LatencyStats, LoadArgs};

const SANITY: &str = env!("CARGO_BIN_EXE_csi-sanity");

/// The `csi-driver` binary of the same build, beside `csi-sanity`.
fn driver_binary() -> PathBuf {
    let path = Path::new(SANITY).with_file_name("csi-driver");
    if !path.exists() {
        eprintln!(
            "bench: {} is missing; run ./bench.sh, or `cargo build --release -p csi-driver` first",
            path.display()
        );
        std::process::exit(2);
    }
    path
}

/// One row of the final table.
struct Row {
    what: String,
    value: String,
    target: String,
}

fn row(what: impl Into<String>, value: impl Into<String>, target: impl Into<String>) -> Row {
    Row {
        what: what.into(),
        value: value.into(),
        target: target.into(),
    }
}

fn ms(d: Duration) -> String {
    if d < Duration::from_millis(1) {
        format!("{:.1}µs", d.as_secs_f64() * 1e6)
    } else {
        format!("{:.2}ms", d.as_secs_f64() * 1e3)
    }
}

fn mib(kib: u64) -> String {
    format!("{:.1} MiB", kib as f64 / 1024.0)
}

fn capability() -> VolumeCapability {
    VolumeCapability {
        access_mode: Some(AccessMode {
            mode: access_mode::Mode::SingleNodeWriter as i32,
        }),
        access_type: Some(AccessType::Mount(MountVolume::default())),
    }
}

/// A `csi-driver` process on a socket in `dir`, stopped when dropped.
struct DriverProcess {
    child: Child,
    endpoint: String,
}

impl DriverProcess {
    /// Controller and droplet 1's node plugin, with the in-memory cloud (droplets 1 to 3
    /// and any `--droplet` in `extra`) keeping its images in `dir/cloud`.
    fn start(dir: &Path, extra: &[&str]) -> DriverProcess {
        // The data dir is a temporary one: no state.json, no fsyncs.
        let mut args = vec![
            "--cloud-ephemeral",
            "--droplet",
            "2:nyc3",
            "--droplet",
            "3:nyc3",
        ];
        args.extend_from_slice(extra);
        DriverProcess::spawn(dir, "csi.sock", &args)
    }

    /// The node plugin of droplet `droplet` alone, finding the images of the driver
    /// started in the same `dir`: another machine of the cluster.
    fn node(dir: &Path, droplet: u32) -> DriverProcess {
        let id = droplet.to_string();
        DriverProcess::spawn(
            dir,
            &format!("node-{droplet}.sock"),
            &["--mode", "node", "--node-id", &id],
        )
    }

    fn spawn(dir: &Path, socket: &str, args: &[&str]) -> DriverProcess {
        let socket = dir.join(socket);
        let data = dir.join("cloud");
        let by_id = dir.join("by-id");
        std::fs::create_dir_all(&data).unwrap();
        std::fs::create_dir_all(&by_id).unwrap();
        let child = Command::new(driver_binary())
            .arg(format!("--endpoint=unix://{}", socket.display()))
            .arg(format!("--data-dir={}", data.display()))
            .arg(format!("--device-dir={}", by_id.display()))
            .arg("--log-level=error")
            .args(args)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("csi-driver starts");
        let start = Instant::now();
        while !socket.exists() {
            assert!(
                start.elapsed() < Duration::from_secs(30),
                "csi-driver never made its socket"
            );
            std::thread::sleep(Duration::from_millis(10));
        }
        DriverProcess {
            child,
            endpoint: format!("unix://{}", socket.display()),
        }
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }
}

impl Drop for DriverProcess {
    fn drop(&mut self) {
        let pid = nix::unistd::Pid::from_raw(self.child.id() as i32);
        let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
        let start = Instant::now();
        while self.child.try_wait().ok().flatten().is_none() {
            if start.elapsed() > Duration::from_secs(15) {
                let _ = self.child.kill();
                let _ = self.child.wait();
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

async fn channel(endpoint: &str) -> tonic::transport::Channel {
    csi_sanity::connect::connect(endpoint, Duration::from_secs(30))
        .await
        .expect("connects to the driver")
}

/// Sequential latencies of one in-process driver: Probe, CreateVolume, DeleteVolume.
struct Floor {
    probes: Vec<Duration>,
    creates: Vec<Duration>,
    deletes: Vec<Duration>,
}

/// Starts a driver in this process on a unix socket and times 3000 Probes, then 300
/// CreateVolume and 300 DeleteVolume calls. With `durable`, the memory cloud writes
/// `state.json` and fsyncs images on every change, as it does for a data dir a user keeps.
async fn floor_run(durable: bool) -> Floor {
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("csi.sock");
    let data = dir.path().join("cloud");
    std::fs::create_dir_all(&data).unwrap();
    let mut args = vec![
        "csi-driver".to_string(),
        format!("--endpoint=unix://{}", socket.display()),
        format!("--data-dir={}", data.display()),
        format!("--device-dir={}", dir.path().join("by-id").display()),
        "--log-level=error".to_string(),
    ];
    if !durable {
        args.push("--cloud-ephemeral".to_string());
    }
    let config = csi_driver::Config::try_parse_from(args).unwrap();
    let driver = csi_driver::start(config).await.expect("the driver starts");
    let ch = channel(&driver.endpoint).await;
    let mut identity = IdentityClient::new(ch.clone());
    let mut controller = ControllerClient::new(ch);
    for _ in 0..200 {
        identity.probe(ProbeRequest {}).await.unwrap();
    }
    let mut floor = Floor {
        probes: Vec::new(),
        creates: Vec::new(),
        deletes: Vec::new(),
    };
    for _ in 0..3000 {
        let t = Instant::now();
        identity.probe(ProbeRequest {}).await.unwrap();
        floor.probes.push(t.elapsed());
    }
    let mut ids = Vec::new();
    for i in 0..300 {
        let t = Instant::now();
        let v = controller
            .create_volume(CreateVolumeRequest {
                name: format!("bench-floor-{i}"),
                capacity_range: Some(CapacityRange {
                    required_bytes: 1 << 30,
                    limit_bytes: 0,
                }),
                volume_capabilities: vec![capability()],
                ..Default::default()
            })
            .await
            .expect("CreateVolume");
        floor.creates.push(t.elapsed());
        ids.push(v.into_inner().volume.unwrap().volume_id);
    }
    for id in ids {
        let t = Instant::now();
        controller
            .delete_volume(DeleteVolumeRequest {
                volume_id: id,
                ..Default::default()
            })
            .await
            .expect("DeleteVolume");
        floor.deletes.push(t.elapsed());
    }
    driver.stop().await.ok();
    floor
}

fn spread(s: &LatencyStats) -> String {
    format!(
        "p50 {} p90 {} p99 {} max {}",
        ms(s.p50),
        ms(s.p90),
        ms(s.p99),
        ms(s.max)
    )
}

/// Part 1: Probe and CreateVolume latency, in process, sequential calls; the memory
/// cloud first as the harness's bundled driver runs it (state in memory only), then
/// durable (state.json and images fsynced on every change).
async fn rpc_floor(rows: &mut Vec<Row>) {
    let fast = floor_run(false).await;
    let durable = floor_run(true).await;
    let p = LatencyStats::of(&fast.probes).unwrap();
    let c = LatencyStats::of(&fast.creates).unwrap();
    let d = LatencyStats::of(&fast.deletes).unwrap();
    rows.push(row(
        "Probe round trip (in process, unix socket), 3000 calls",
        spread(&p),
        "the floor",
    ));
    rows.push(row("CreateVolume, memory cloud, 300 calls", spread(&c), ""));
    rows.push(row("DeleteVolume, memory cloud, 300 calls", spread(&d), ""));
    let ratio = c.p50.as_secs_f64() / p.p50.as_secs_f64();
    rows.push(row(
        "CreateVolume p50 / Probe p50",
        format!("{ratio:.2}x"),
        format!("< 3x: {}", if ratio < 3.0 { "met" } else { "NOT met" }),
    ));
    let dc = LatencyStats::of(&durable.creates).unwrap();
    let dd = LatencyStats::of(&durable.deletes).unwrap();
    rows.push(row(
        "CreateVolume, durable memory cloud (fsync per change)",
        spread(&dc),
        format!(
            "{:.2}x Probe; the disk's fsync, not the driver",
            dc.p50.as_secs_f64() / p.p50.as_secs_f64()
        ),
    ));
    rows.push(row("DeleteVolume, durable memory cloud", spread(&dd), ""));
}

/// Part 2: the driver binary's RSS after start and one Probe.
async fn idle_rss(rows: &mut Vec<Row>) {
    let dir = tempfile::tempdir().unwrap();
    let driver = DriverProcess::start(dir.path(), &[]);
    let ch = channel(&driver.endpoint).await;
    IdentityClient::new(ch)
        .probe(ProbeRequest {})
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_secs(1)).await;
    let (hwm, rss) = read_rss_kib(driver.pid()).expect("reads /proc/PID/status");
    let mb = rss as f64 * 1024.0 / 1e6;
    rows.push(row(
        "csi-driver idle RSS (memory cloud, after one Probe)",
        format!("{} (VmHWM {})", mib(rss), mib(hwm)),
        format!("< 10 MB: {}", if mb < 10.0 { "met" } else { "NOT met" }),
    ));
}

/// `csi-driver` processes in `dir` with the cloud's attach latency: the controller with
/// droplet 1's node plugin (droplets 1 to `droplets` registered, at least 3), and
/// node-only plugins for droplets 2 to `nodes`.
fn cluster(
    dir: &Path,
    attach_latency: &str,
    droplets: u32,
    nodes: u32,
) -> (DriverProcess, Vec<DriverProcess>) {
    let mut extra = vec!["--attach-latency".to_string(), attach_latency.to_string()];
    for droplet in 4..=droplets {
        extra.extend(["--droplet".to_string(), format!("{droplet}:nyc3")]);
    }
    let extra: Vec<&str> = extra.iter().map(String::as_str).collect();
    let driver = DriverProcess::start(dir, &extra);
    let node_plugins = (2..=nodes)
        .map(|droplet| DriverProcess::node(dir, droplet))
        .collect();
    (driver, node_plugins)
}

/// One `csi-sanity load` run against `csi-driver` processes: the controller with droplet
/// 1's node plugin, and node-only plugins for droplets 2 to `nodes`.
async fn load_run(
    attach_latency: &str,
    lifecycles: u32,
    nodes: u32,
) -> csi_sanity::load::LoadReport {
    let dir = tempfile::tempdir().unwrap();
    let (driver, node_plugins) = cluster(dir.path(), attach_latency, nodes, nodes);
    let mut args = vec![
        "load".to_string(),
        format!("--csi.endpoint={}", driver.endpoint),
        "--concurrency=8".to_string(),
        format!("--lifecycles={lifecycles}"),
        format!("--driver-pid={}", driver.pid()),
        format!("--csi.mountdir={}", dir.path().join("mount").display()),
        format!("--csi.stagingdir={}", dir.path().join("staging").display()),
    ];
    if !node_plugins.is_empty() {
        let endpoints: Vec<&str> = node_plugins.iter().map(|n| n.endpoint.as_str()).collect();
        args.push(format!("--csi.nodeendpoints={}", endpoints.join(",")));
    }
    let report = csi_sanity::load::run(LoadArgs::try_parse_from(args).unwrap())
        .await
        .expect("the load run");
    println!("{report}\n");
    drop(node_plugins);
    drop(driver);
    report
}

fn load_outcome(report: &csi_sanity::load::LoadReport) -> String {
    format!(
        "{:.1} lifecycles/s, {} failed, errors {}",
        report.lifecycles_per_second(),
        report.lifecycles_failed,
        if report.errors.is_empty() {
            "none".to_string()
        } else {
            format!("{:?}", report.errors)
        }
    )
}

fn leftovers(report: &csi_sanity::load::LoadReport) -> String {
    if report.leftovers.is_empty() {
        "nothing left behind".to_string()
    } else {
        format!("LEFT: {}", report.leftovers.join(", "))
    }
}

/// Part 3: the load mode against the driver binary, with its peak RSS; then at 500 ms
/// attach latency on one node and spread over 8.
async fn load(rows: &mut Vec<Row>) {
    let report = load_run("0s", 200, 1).await;
    rows.push(row(
        "load: 200 lifecycles, concurrency 8, csi-driver binary",
        load_outcome(&report),
        leftovers(&report),
    ));
    let steps: Vec<String> = report
        .latencies
        .iter()
        .map(|(rpc, s)| format!("{rpc} {}", ms(s.p50)))
        .collect();
    rows.push(row("load: p50 per RPC", steps.join(", "), ""));
    if let Some(rss) = &report.peak_rss {
        rows.push(row("csi-driver peak RSS under load", mib(rss.kib), ""));
    }
    if !report.skipped_steps.is_empty() {
        rows.push(row("load: skipped", report.skipped_steps.join("; "), ""));
    }
    for nodes in [1, 8] {
        let report = load_run("500ms", 24, nodes).await;
        let node_s = if nodes == 1 { "" } else { "s" };
        rows.push(row(
            format!("load: 24 lifecycles, concurrency 8, attach 500ms, {nodes} node{node_s}"),
            format!(
                "{} in {:.2}s",
                load_outcome(&report),
                report.elapsed.as_secs_f64()
            ),
            leftovers(&report),
        ));
    }
}

/// One run of the `csi-sanity` binary against `csi-driver` processes: `nodes` node
/// plugins (droplets 1 to `nodes`, the first in the controller's process), the droplet
/// after them as the second node of the two-node specs.
fn suite_run(attach_latency: &str, parallel: u32, nodes: u32) -> (Duration, String) {
    let dir = tempfile::tempdir().unwrap();
    let second = nodes.max(2) + 1;
    let (driver, node_plugins) = cluster(dir.path(), attach_latency, second, nodes);
    let node_endpoints: Vec<&str> = node_plugins.iter().map(|n| n.endpoint.as_str()).collect();
    // The one parameter the driver can change on a volume, so the ModifyVolume specs run.
    let mutable = dir.path().join("mutable.yaml");
    std::fs::write(&mutable, "tags: csi-sanity\n").unwrap();
    let started = Instant::now();
    let output = Command::new(SANITY)
        .arg(format!("--csi.endpoint={}", driver.endpoint))
        .arg(format!("--csi.nodeendpoints={}", node_endpoints.join(",")))
        .arg(format!("--csi.parallel={parallel}"))
        .arg(format!(
            "--csi.mountdir={}",
            dir.path().join("mount").display()
        ))
        .arg(format!(
            "--csi.stagingdir={}",
            dir.path().join("staging").display()
        ))
        .arg("--csi.testvolumesize=1073741824")
        .arg(format!(
            "--csi.testvolumemutableparameters={}",
            mutable.display()
        ))
        .arg(format!("--csi.secondnodeid={second}"))
        .stdin(Stdio::null())
        .output()
        .expect("csi-sanity runs");
    let elapsed = started.elapsed();
    let stdout = String::from_utf8_lossy(&output.stdout);
    let summary = stdout
        .lines()
        .rev()
        .find(|l| l.contains(" passed, ") && l.contains(" failed, "))
        .unwrap_or("no summary line")
        .to_string();
    // The extra node plugins go first; the driver that owns the images detaches what is left.
    drop(node_plugins);
    drop(driver);
    (elapsed, summary)
}

/// Part 4: the suite at 0 and 500 ms attach latency: parallel 1 on one node, parallel 8
/// on one node (every attach queues behind the droplet's one event at a time, as on
/// DigitalOcean), and parallel 8 spread over 8 nodes, as a cluster runs it.
fn suite(rows: &mut Vec<Row>) {
    for latency in ["0s", "500ms"] {
        let mut serial = Duration::ZERO;
        for (parallel, nodes) in [(1, 1), (8, 1), (8, 8)] {
            let (elapsed, summary) = suite_run(latency, parallel, nodes);
            let node_s = if nodes == 1 { "" } else { "s" };
            println!(
                "suite, attach latency {latency}, parallel {parallel}, {nodes} node{node_s}: {elapsed:.2?} ({summary})"
            );
            let mut note = summary;
            if parallel == 1 {
                serial = elapsed;
            } else {
                let ratio = elapsed.as_secs_f64() / serial.as_secs_f64();
                note = format!("{ratio:.2}x parallel 1; {note}");
                if latency == "500ms" && nodes > 1 {
                    note = format!(
                        "{note}; target < 0.3x: {}",
                        if ratio < 0.3 { "met" } else { "NOT met" }
                    );
                }
            }
            rows.push(row(
                format!(
                    "full suite, attach {latency}, --csi.parallel {parallel}, {nodes} node{node_s}"
                ),
                format!("{:.2}s", elapsed.as_secs_f64()),
                note,
            ));
        }
    }
}

/// One timed run of a csi-sanity binary (ours or Go's) against `endpoint`.
fn timed_sanity(program: &str, endpoint: &str, dir: &Path, extra: &[&str]) -> (Duration, String) {
    // A fresh mount root each run: Go's csi-sanity refuses one that exists.
    let run = dir.join(uuid::Uuid::new_v4().simple().to_string());
    std::fs::create_dir_all(&run).unwrap();
    let started = Instant::now();
    let output = Command::new(program)
        .arg(format!("--csi.endpoint={endpoint}"))
        .arg(format!("--csi.mountdir={}", run.join("mount").display()))
        .arg(format!(
            "--csi.stagingdir={}",
            run.join("staging").display()
        ))
        .arg("--csi.testnodevolumeattachlimit")
        .args(extra)
        .stdin(Stdio::null())
        .output()
        .expect("csi-sanity runs");
    let elapsed = started.elapsed();
    let raw = String::from_utf8_lossy(&output.stdout).to_string()
        + &String::from_utf8_lossy(&output.stderr);
    // Go's summary is coloured: drop the terminal escapes.
    let mut text = String::with_capacity(raw.len());
    let mut escape = false;
    for c in raw.chars() {
        match (escape, c) {
            (false, '\u{1b}') => escape = true,
            (true, 'm') => escape = false,
            (true, _) => {}
            (false, c) => text.push(c),
        }
    }
    let summary = text
        .lines()
        .rev()
        .find(|l| (l.contains(" passed, ") && l.contains(" failed, ")) || l.contains(" Passed | "))
        .unwrap_or("no summary line")
        .to_string();
    (elapsed, summary)
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

/// Part 5: our csi-sanity (compat and full profiles) and the Go csi-sanity, in turn,
/// against one csi-driver process. The Go binary is not part of this repository: build
/// it from kubernetes-csi/csi-test and point GO_CSI_SANITY at it.
fn versus_go(rows: &mut Vec<Row>) {
    let Some(go) = std::env::var_os("GO_CSI_SANITY") else {
        rows.push(row(
            "suite vs the Go csi-sanity",
            "skipped",
            "set GO_CSI_SANITY=/path/to/csi-sanity (built from kubernetes-csi/csi-test) to compare",
        ));
        return;
    };
    let go = go.to_string_lossy().to_string();
    let dir = tempfile::tempdir().unwrap();
    let (driver, _nodes) = cluster(dir.path(), "0s", 2, 1);
    let kinds: [(&str, &str, &[&str]); 3] = [
        ("Go csi-sanity", go.as_str(), &[]),
        (
            "ours, --csi.profile compat",
            SANITY,
            &["--csi.profile=compat"],
        ),
        ("ours, --csi.profile full", SANITY, &[]),
    ];
    let mut times: Vec<Vec<Duration>> = vec![Vec::new(); kinds.len()];
    let mut summaries = vec![String::new(); kinds.len()];
    // In turn, so a drift of the machine's speed touches all three alike.
    for _ in 0..5 {
        for (i, (_, program, extra)) in kinds.iter().enumerate() {
            let (t, summary) = timed_sanity(program, &driver.endpoint, dir.path(), extra);
            times[i].push(t);
            summaries[i] = summary;
        }
    }
    let go_median = median(times[0].clone());
    for (i, (what, _, _)) in kinds.iter().enumerate() {
        let m = median(times[i].clone());
        let ratio = m.as_secs_f64() / go_median.as_secs_f64();
        let target = match i {
            0 => String::new(),
            1 => format!(
                "{ratio:.2}x Go; target <= 1x: {}",
                if ratio <= 1.0 { "met" } else { "NOT met" }
            ),
            _ => format!(
                "{ratio:.2}x Go; target <= 1.5x: {}",
                if ratio <= 1.5 { "met" } else { "NOT met" }
            ),
        };
        rows.push(row(
            format!("suite vs Go, same driver: {what}, median of 5"),
            format!("{:.2}s", m.as_secs_f64()),
            format!("{target}; {}", summaries[i]),
        ));
    }
    drop(driver);
}

fn main() {
    // `cargo bench` passes --bench; filters are not used here.
    let started = Instant::now();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    let mut rows = Vec::new();
    rt.block_on(rpc_floor(&mut rows));
    rt.block_on(idle_rss(&mut rows));
    rt.block_on(load(&mut rows));
    if std::env::var_os("BENCH_SKIP_SUITE").is_none() {
        suite(&mut rows);
    }
    versus_go(&mut rows);
    let root = if nix::unistd::geteuid().is_root() {
        "root: node steps mount for real"
    } else {
        "not root: node steps skipped"
    };
    println!(
        "\nbenchmarks ({} cores, {root}, {:.0}s in all)",
        std::thread::available_parallelism().map_or(1, |n| n.get()),
        started.elapsed().as_secs_f64()
    );
    let w0 = rows.iter().map(|r| r.what.len()).max().unwrap_or(0);
    let w1 = rows
        .iter()
        .map(|r| r.value.chars().count())
        .max()
        .unwrap_or(0);
    println!("| {:<w0$} | {:<w1$} | target / note", "measure", "value");
    println!("|{}|{}|---", "-".repeat(w0 + 2), "-".repeat(w1 + 2));
    for r in &rows {
        println!("| {:<w0$} | {:<w1$} | {}", r.what, r.value, r.target);
    }
}
