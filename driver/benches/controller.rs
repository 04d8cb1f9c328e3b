//! Controller benchmark against the in-process cloud (`--cloud memory`), over real gRPC on
//! a unix socket. Prints:
//! - CreateVolume+DeleteVolume pairs: p50 and p99 latency and pairs per second, with 1 and
//!   16 concurrent clients;
//! - ControllerPublishVolume latency divided by the cloud's attach latency, at 200 ms and
//!   1 s, for one volume and for 64 volumes on 64 droplets at once;
//! - the process's peak RSS (VmHWM);
//! - the action-wait policies side by side (`--poll-policy`): ours (learned), a fixed
//!   1 s poll as csi-digitalocean does, and the old short-start backoff, each against a
//!   fake-cloud server over loopback HTTP whose attach and detach take 1 s ± 20%,
//!   unthrottled, under 250 requests a minute at one lifecycle at a time, and under 250
//!   a minute at 8 at once over 8 droplets. Requests are counted by fake-cloud itself
//!   (`/admin/requests`). `cargo bench -p csi-driver --bench controller -- policies` runs
//!   only this part; `-- policies learned` (or `every-second`, `backoff`) only that policy.
//!
//! The in-process cloud persists every change to `<data dir>/state.json` with fsync, under
//! its one lock; on a disk that costs ~10 ms a change and would be all this measures. So
//! the driver runs with its data dir on tmpfs (/dev/shm) when there is one, and one last
//! line repeats the single-client create/delete with the data dir on disk, for comparison.
//!
//! Run: `cargo bench -p csi-driver --bench controller`. It asserts nothing about time.

use std::time::{Duration, Instant};

use clap::Parser;
use csi_proto::v1::controller_client::ControllerClient;
use csi_proto::v1::volume_capability::access_mode::Mode;
use csi_proto::v1::volume_capability::{AccessMode, AccessType, MountVolume};
use csi_proto::v1::*;
use tonic::transport::{Channel, Endpoint};

const GIB: i64 = 1 << 30;
const DROPLETS: u64 = 64;

type Client = ControllerClient<Channel>;

fn mount_cap() -> VolumeCapability {
    VolumeCapability {
        access_mode: Some(AccessMode {
            mode: Mode::SingleNodeWriter as i32,
        }),
        access_type: Some(AccessType::Mount(MountVolume::default())),
    }
}

async fn create(client: &mut Client, name: &str) -> anyhow::Result<String> {
    let v = client
        .create_volume(CreateVolumeRequest {
            name: name.to_string(),
            capacity_range: Some(CapacityRange {
                required_bytes: GIB,
                limit_bytes: 0,
            }),
            volume_capabilities: vec![mount_cap()],
            ..Default::default()
        })
        .await?
        .into_inner()
        .volume
        .ok_or_else(|| anyhow::anyhow!("CreateVolume returned no volume"))?;
    Ok(v.volume_id)
}

async fn delete(client: &mut Client, id: &str) -> anyhow::Result<()> {
    client
        .delete_volume(DeleteVolumeRequest {
            volume_id: id.to_string(),
            ..Default::default()
        })
        .await?;
    Ok(())
}

async fn publish(client: &mut Client, id: &str, node: u64) -> anyhow::Result<Duration> {
    let started = Instant::now();
    client
        .controller_publish_volume(ControllerPublishVolumeRequest {
            volume_id: id.to_string(),
            node_id: node.to_string(),
            volume_capability: Some(mount_cap()),
            ..Default::default()
        })
        .await?;
    Ok(started.elapsed())
}

async fn unpublish(client: &mut Client, id: &str, node: u64) -> anyhow::Result<()> {
    client
        .controller_unpublish_volume(ControllerUnpublishVolumeRequest {
            volume_id: id.to_string(),
            node_id: node.to_string(),
            ..Default::default()
        })
        .await?;
    Ok(())
}

async fn connect(endpoint: &str) -> anyhow::Result<Client> {
    Ok(ControllerClient::new(
        Endpoint::from_shared(endpoint.to_string())?
            .connect()
            .await?,
    ))
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let rank = ((sorted.len() as f64) * p).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

fn ms(d: Duration) -> String {
    format!("{:.2} ms", d.as_secs_f64() * 1e3)
}

/// `pairs` CreateVolume+DeleteVolume pairs spread over `clients` concurrent clients.
async fn create_delete(endpoint: &str, clients: usize, pairs: usize) -> anyhow::Result<()> {
    let per_client = pairs / clients;
    let started = Instant::now();
    let mut tasks = Vec::new();
    for c in 0..clients {
        let mut client = connect(endpoint).await?;
        tasks.push(tokio::spawn(async move {
            let mut latencies = Vec::with_capacity(per_client);
            for i in 0..per_client {
                let t = Instant::now();
                let id = create(&mut client, &format!("bench-{clients}-{c}-{i}")).await?;
                delete(&mut client, &id).await?;
                latencies.push(t.elapsed());
            }
            Ok::<_, anyhow::Error>(latencies)
        }));
    }
    let mut all = Vec::new();
    for task in tasks {
        all.extend(task.await??);
    }
    let wall = started.elapsed();
    all.sort();
    println!(
        "| Create+Delete, {clients:>2} client(s) | {} pairs | p50 {} | p99 {} | {:.0} pairs/s |",
        all.len(),
        ms(percentile(&all, 0.50)),
        ms(percentile(&all, 0.99)),
        all.len() as f64 / wall.as_secs_f64()
    );
    Ok(())
}

/// Publish latency over attach latency, one volume (median of 3) and 64 at once.
async fn publish_ratio(
    endpoint: &str,
    cloud: &fake_cloud::Cloud,
    attach: Duration,
) -> anyhow::Result<()> {
    cloud.set_latency(fake_cloud::LatencyConfig {
        attach,
        ..fake_cloud::LatencyConfig::default()
    });
    let mut client = connect(endpoint).await?;
    let tag = attach.as_millis();

    let id = create(&mut client, &format!("pub-one-{tag}")).await?;
    let mut singles = Vec::new();
    for _ in 0..3 {
        singles.push(publish(&mut client, &id, 1).await?);
        unpublish(&mut client, &id, 1).await?;
    }
    delete(&mut client, &id).await?;
    singles.sort();
    let single = singles[1];

    let mut ids = Vec::new();
    for i in 0..DROPLETS {
        ids.push(create(&mut client, &format!("pub-many-{tag}-{i}")).await?);
    }
    let mut clients = Vec::new();
    for _ in 0..8 {
        clients.push(connect(endpoint).await?);
    }
    let started = Instant::now();
    let mut tasks = Vec::new();
    for (i, id) in ids.iter().enumerate() {
        let mut c = clients[i % clients.len()].clone();
        let id = id.clone();
        tasks.push(tokio::spawn(async move {
            publish(&mut c, &id, i as u64 + 1).await
        }));
    }
    let mut slowest = Duration::ZERO;
    for task in tasks {
        slowest = slowest.max(task.await??);
    }
    let wall = started.elapsed();
    for (i, id) in ids.iter().enumerate() {
        unpublish(&mut client, id, i as u64 + 1).await?;
        delete(&mut client, id).await?;
    }
    let attach_s = attach.as_secs_f64();
    println!(
        "| Publish, attach {:>4} ms, 1 volume | {} | ratio {:.3} |",
        tag,
        ms(single),
        single.as_secs_f64() / attach_s
    );
    println!(
        "| Publish, attach {:>4} ms, {DROPLETS} volumes on {DROPLETS} droplets | all done in {} (slowest {}) | ratio {:.3}, {:.2}x one |",
        tag,
        ms(wall),
        ms(slowest),
        wall.as_secs_f64() / attach_s,
        wall.as_secs_f64() / single.as_secs_f64()
    );
    Ok(())
}

fn peak_rss_kib() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
}

/// Start a driver with 64 droplets and its data dir in `data_parent`.
async fn start_driver(
    socket_dir: &std::path::Path,
    data_parent: &std::path::Path,
) -> anyhow::Result<(csi_driver::RunningDriver, tempfile::TempDir)> {
    let data = tempfile::Builder::new()
        .prefix("csi-bench-")
        .tempdir_in(data_parent)?;
    let mut args = vec![
        "csi-driver".to_string(),
        "--mode".into(),
        "controller".into(),
        "--log-level".into(),
        "error".into(),
        "--max-volumes-per-node".into(),
        "16".into(),
        "--data-dir".into(),
        data.path().display().to_string(),
        "--endpoint".into(),
        format!("unix://{}", socket_dir.join("csi.sock").display()),
    ];
    for id in 1..=DROPLETS {
        args.push("--droplet".into());
        args.push(format!("{id}:nyc3"));
    }
    let config = csi_driver::Config::try_parse_from(&args)?;
    Ok((csi_driver::start(config).await?, data))
}

async fn run() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let shm = std::path::Path::new("/dev/shm");
    let fast_parent = if shm.is_dir() {
        shm.to_path_buf()
    } else {
        std::env::temp_dir()
    };
    let (driver, _data) = start_driver(dir.path(), &fast_parent).await?;
    let cloud = driver
        .driver
        .fake_cloud()
        .ok_or_else(|| anyhow::anyhow!("the memory backend has a fake cloud"))?;
    let endpoint = driver.endpoint.clone();

    println!(
        "\ncontroller benchmark, --cloud memory (data dir in {}), over gRPC on a unix socket\n",
        fast_parent.display()
    );
    println!("| case | | | | |");
    println!("|---|---|---|---|---|");
    create_delete(&endpoint, 1, 500).await?;
    create_delete(&endpoint, 16, 1600).await?;
    for attach in [Duration::from_millis(200), Duration::from_secs(1)] {
        publish_ratio(&endpoint, &cloud, attach).await?;
    }
    match peak_rss_kib() {
        Some(kib) => println!("| peak RSS (VmHWM) | {:.1} MB | | | |", kib as f64 / 1024.0),
        None => println!("| peak RSS (VmHWM) | unavailable | | | |"),
    }
    driver.stop().await?;

    let disk_parent = std::env::temp_dir();
    let (driver, _disk_data) = start_driver(dir.path(), &disk_parent).await?;
    print!("| data dir in {} (disk): ", disk_parent.display());
    create_delete(&driver.endpoint, 1, 100).await?;
    driver.stop().await?;
    Ok(())
}

/// The nominal action latency of the policy comparison; actions take 0.8 s to 1.2 s.
const NOMINAL: Duration = Duration::from_secs(1);
const POLICY_TOKEN: &str = "bench-token";
/// Lifecycles per scenario, one at a time and eight at once.
const SERIAL_LIFECYCLES: usize = 8;
const PARALLEL_LIFECYCLES: usize = 16;
/// No lifecycle starts after this long into a scenario (the old policy under a budget
/// would otherwise run for many minutes); none is cut short.
const SCENARIO_CAP: Duration = Duration::from_secs(40);

/// One scenario's figures.
#[derive(Default)]
struct PolicyFigures {
    lifecycles: usize,
    errors: usize,
    waits: usize,
    polls: u64,
    requests: u64,
    warm_up_requests: u64,
    /// The learned first look of an attach and a detach at the end, when learned.
    learned: String,
    throttled: u64,
    publish: Vec<Duration>,
    unpublish: Vec<Duration>,
}

async fn admin_counts(http: &reqwest::Client, base: &str) -> anyhow::Result<serde_json::Value> {
    Ok(http
        .get(format!("{base}/admin/requests"))
        .bearer_auth(POLICY_TOKEN)
        .send()
        .await?
        .error_for_status()?
        .json()
        .await?)
}

/// One lifecycle: create, publish, unpublish, delete, the RPCs timed; false on an error.
async fn timed_lifecycle(
    client: &mut Client,
    name: &str,
    node: u64,
    figures: &tokio::sync::Mutex<PolicyFigures>,
) -> bool {
    let Ok(id) = create(client, name).await else {
        return false;
    };
    let ok = match publish(client, &id, node).await {
        Ok(took) => {
            figures.lock().await.publish.push(took);
            let started = Instant::now();
            match unpublish(client, &id, node).await {
                Ok(()) => {
                    figures.lock().await.unpublish.push(started.elapsed());
                    true
                }
                Err(_) => false,
            }
        }
        Err(_) => false,
    };
    delete(client, &id).await.is_ok() && ok
}

/// Run `lifecycles` lifecycles, `concurrency` at a time (worker `w` on droplet `w + 1`),
/// against a fresh fake-cloud and driver following `policy`.
async fn policy_scenario(
    policy: &str,
    per_minute: u32,
    concurrency: usize,
    lifecycles: usize,
) -> anyhow::Result<PolicyFigures> {
    let cloud = fake_cloud::Cloud::new(fake_cloud::CloudConfig {
        droplets: (1..=8).map(|id| (id, "nyc3".to_string())).collect(),
        latency: fake_cloud::LatencyConfig {
            attach: NOMINAL.mul_f64(0.8),
            detach: NOMINAL.mul_f64(0.8),
            resize: NOMINAL,
            jitter: NOMINAL.mul_f64(0.4),
        },
        faults: fake_cloud::Faults {
            rate_limit_per_minute: per_minute,
            rate_limit_per_hour: if per_minute > 0 { 5_000 } else { 0 },
            ..fake_cloud::Faults::none()
        },
        ..fake_cloud::CloudConfig::default()
    });
    let server = fake_cloud::server::spawn(cloud, POLICY_TOKEN.to_string()).await?;
    let base = server.base_url();
    let dir = tempfile::tempdir()?;
    let token_file = dir.path().join("token");
    std::fs::write(&token_file, POLICY_TOKEN)?;
    let args = [
        "csi-driver".to_string(),
        "--mode=controller".into(),
        "--log-level=error".into(),
        "--cloud=http".into(),
        format!("--cloud-url={base}"),
        format!("--token-file={}", token_file.display()),
        format!("--poll-policy={policy}"),
        format!(
            "--endpoint=unix://{}",
            dir.path().join("csi.sock").display()
        ),
    ];
    let driver = csi_driver::start(csi_driver::Config::try_parse_from(&args)?).await?;
    let endpoint = driver.endpoint.clone();
    let http = reqwest::Client::new();

    // One lifecycle first, unmeasured, as a driver that has been up a while has run: what
    // it costs (learning included) is shown apart; its requests stay in the budget.
    let warm_up = tokio::sync::Mutex::new(PolicyFigures::default());
    let tag = format!("{policy}-{per_minute}-{concurrency}");
    timed_lifecycle(
        &mut connect(&endpoint).await?,
        &format!("warm-{tag}"),
        1,
        &warm_up,
    )
    .await;
    let before = admin_counts(&http, &base).await?;
    let count = |v: &serde_json::Value, key: &str| v[key].as_u64().unwrap_or(0);
    let polls_of = |v: &serde_json::Value| {
        v["by_route"]["GET /v2/volumes/{id}/actions/{id}"]
            .as_u64()
            .unwrap_or(0)
    };

    let figures = std::sync::Arc::new(tokio::sync::Mutex::new(PolicyFigures::default()));
    let next = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let started = Instant::now();
    let mut workers = Vec::new();
    for w in 0..concurrency {
        let mut client = connect(&endpoint).await?;
        let (figures, next, tag) = (figures.clone(), next.clone(), tag.clone());
        workers.push(tokio::spawn(async move {
            loop {
                let n = next.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                if n >= lifecycles || started.elapsed() > SCENARIO_CAP {
                    break;
                }
                let ok =
                    timed_lifecycle(&mut client, &format!("w-{tag}-{n}"), w as u64 + 1, &figures)
                        .await;
                let mut f = figures.lock().await;
                f.lifecycles += 1;
                f.errors += usize::from(!ok);
            }
        }));
    }
    for worker in workers {
        worker.await?;
    }
    let after = admin_counts(&http, &base).await?;
    let learned = driver.driver.cloud.as_ref().map(|c| {
        let look = |k| {
            c.waits()
                .expected(&k)
                .map_or("-".to_string(), |d| format!("{:.2}", d.as_secs_f64()))
        };
        format!(
            "{} / {}",
            look(csi_driver::cloud::ActionKind::Attach),
            look(csi_driver::cloud::ActionKind::Detach)
        )
    });
    driver.stop().await?;
    let mut f = std::mem::take(&mut *figures.lock().await);
    f.warm_up_requests = count(&before, "total");
    f.learned = learned.unwrap_or_default();
    f.requests = count(&after, "total") - count(&before, "total");
    f.throttled = count(&after, "throttled");
    f.polls = polls_of(&after) - polls_of(&before);
    f.waits = f.publish.len() + f.unpublish.len();
    Ok(f)
}

fn multiple(sorted: &[Duration], p: f64) -> String {
    if sorted.is_empty() {
        return "-".to_string();
    }
    format!(
        "{:.2}x",
        percentile(sorted, p).as_secs_f64() / NOMINAL.as_secs_f64()
    )
}

/// The three policies side by side in the three scenarios (those named in `only`, if any).
async fn policies(only: &[String]) -> anyhow::Result<()> {
    println!(
        "\naction-wait policies: fake-cloud over loopback HTTP, attach and detach 1 s ± 20%; \
         requests counted by fake-cloud; latency as a multiple of 1 s. Each fresh driver \
         first runs one lifecycle apart (its requests, learning included, are in their own \
         column and count against the budget); the last column is what the driver learned \
         (only `learned` uses it).\n"
    );
    println!(
        "| policy | scenario | lifecycles | errors | requests per action wait | requests per \
         lifecycle | publish p50 | publish p99 | unpublish p50 | unpublish p99 | first \
         lifecycle's requests | 429s | first look, attach / detach (s) |"
    );
    println!("|---|---|---|---|---|---|---|---|---|---|---|---|---|");
    let scenarios = [
        ("unthrottled, 1 at a time", 0, 1, SERIAL_LIFECYCLES),
        ("250/min, 1 at a time", 250, 1, SERIAL_LIFECYCLES),
        (
            "250/min, 8 at once on 8 droplets",
            250,
            8,
            PARALLEL_LIFECYCLES,
        ),
    ];
    for (policy, label) in [
        ("learned", "ours (learned)"),
        ("every-second", "fixed 1 s (csi-digitalocean)"),
        ("backoff", "old short-start backoff"),
    ] {
        if !only.is_empty() && !only.iter().any(|o| o == policy) {
            continue;
        }
        for (scenario, per_minute, concurrency, lifecycles) in scenarios {
            let mut f = policy_scenario(policy, per_minute, concurrency, lifecycles).await?;
            f.publish.sort();
            f.unpublish.sort();
            println!(
                "| {label} | {scenario} | {} | {} | {:.2} | {:.1} | {} | {} | {} | {} | {} | {} | {} |",
                f.lifecycles,
                f.errors,
                f.polls as f64 / f.waits.max(1) as f64,
                f.requests as f64 / f.lifecycles.max(1) as f64,
                multiple(&f.publish, 0.50),
                multiple(&f.publish, 0.99),
                multiple(&f.unpublish, 0.50),
                multiple(&f.unpublish, 0.99),
                f.warm_up_requests,
                f.throttled,
                f.learned,
            );
        }
    }
    Ok(())
}

fn main() {
    // `cargo bench` passes `--bench`; `policies` runs only the policy comparison.
    let args: Vec<String> = std::env::args().skip(1).collect();
    let only_policies = args.iter().any(|a| a == "policies");
    let named: Vec<String> = args
        .iter()
        .filter(|a| ["learned", "every-second", "backoff"].contains(&a.as_str()))
        .cloned()
        .collect();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(4)
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("cannot start the tokio runtime: {e}");
            std::process::exit(1);
        }
    };
    // BENCH_DRIVER_LOG=debug: the driver's log, as JSON lines on stderr.
    if let Ok(filter) = std::env::var("BENCH_DRIVER_LOG") {
        csi_driver::logging::init(csi_driver::config::LogFormat::Json, &filter);
    }
    let result = runtime.block_on(async {
        if !only_policies {
            run().await?;
        }
        policies(&named).await
    });
    if let Err(e) = result {
        eprintln!("benchmark failed: {e:#}");
        std::process::exit(1);
    }
}
