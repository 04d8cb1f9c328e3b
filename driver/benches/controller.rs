//! Controller benchmark against the in-process cloud (`--cloud memory`), over real gRPC on
//! a unix socket. Prints:
//! - CreateVolume+DeleteVolume pairs: p50 and p99 latency and pairs per second, with 1 and
//!   16 concurrent clients;
//! - ControllerPublishVolume latency divided by the cloud's attach latency, at 200 ms and
//!   1 s, for one volume and for 64 volumes on 64 droplets at once;
//! - the process's peak RSS (VmHWM).
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

fn main() {
    // `cargo bench` passes `--bench`; there are no options to read.
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
    if let Err(e) = runtime.block_on(run()) {
        eprintln!("benchmark failed: {e:#}");
        std::process::exit(1);
    }
}
