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

mod lifecycle;
mod probe;
mod report;

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context;
use clap::Parser;
use csi_proto::v1::controller_client::ControllerClient;
use csi_proto::v1::node_client::NodeClient;
use csi_suites::units::{parse_duration, parse_positive_size};

use lifecycle::{load_nodes, plan, Budget, Outcome, Recorder, Shared};
use probe::http_get_text;
pub use probe::{cloud_request_totals, loop_devices_under, read_rss_kib};
pub use report::{CloudCost, LatencyStats, LoadReport, NodeShare, PeakRss};

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
}
