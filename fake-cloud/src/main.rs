//! `fake-cloud`: serves an in-memory (optionally disk-backed) block-storage
//! cloud with the DigitalOcean v2 API shape.
//!
//! Prints `listening on http://ADDR` on stdout once bound (so `--listen
//! 127.0.0.1:0` works for tests); logs go to stderr, filtered by `RUST_LOG`
//! (default `info`). The token is never logged.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;
use csi_units::parse_duration;
use fake_cloud::{Cloud, CloudConfig, Faults, LatencyConfig};

/// The token accepted when none is given.
const DEFAULT_TOKEN: &str = "fake-token";

/// An in-memory block-storage cloud with slow asynchronous actions and
/// injected faults, served with the DigitalOcean v2 API shape.
#[derive(Debug, Parser)]
#[command(name = "fake-cloud", version)]
struct Args {
    /// Address to listen on, `HOST:PORT` (port 0 picks a free port) or a bare port.
    #[arg(long, default_value = "127.0.0.1:8080", value_parser = parse_listen)]
    listen: SocketAddr,

    /// Keep volume images (`volumes/<id>.img`), snapshot images and
    /// `state.json` here, and reload them on start. Without it, all is in memory.
    #[arg(long)]
    data_dir: Option<PathBuf>,

    /// The API token clients must send as `Authorization: Bearer <token>`
    /// [default: fake-token].
    #[arg(long, env = "FAKE_CLOUD_TOKEN", hide_env_values = true)]
    token: Option<String>,

    /// Read the token from this file (surrounding whitespace ignored); wins over --token.
    #[arg(long)]
    token_file: Option<PathBuf>,

    /// Time an attach takes: `500ms`, `2s`, `1m30s` or plain seconds.
    #[arg(long, default_value = "300ms", value_parser = parse_duration)]
    attach_latency: Duration,

    /// Time a detach takes.
    #[arg(long, default_value = "300ms", value_parser = parse_duration)]
    detach_latency: Duration,

    /// Time a resize takes.
    #[arg(long, default_value = "500ms", value_parser = parse_duration)]
    resize_latency: Duration,

    /// Largest random extra time added to each action.
    #[arg(long, default_value = "200ms", value_parser = parse_duration)]
    jitter: Duration,

    /// Share of requests answered 500 before being applied (0 to 1).
    #[arg(long, default_value_t = 0.0, value_parser = parse_rate)]
    error_rate_5xx: f64,

    /// Share of requests answered 429 with retry-after (0 to 1).
    #[arg(long = "rate-429", default_value_t = 0.0, value_parser = parse_rate)]
    rate_429: f64,

    /// Share of requests applied whose answer is lost, replaced by a 500 (0 to 1).
    #[arg(long, default_value_t = 0.0, value_parser = parse_rate)]
    lost_response_rate: f64,

    /// Share of actions that end `errored` (0 to 1).
    #[arg(long, default_value_t = 0.0, value_parser = parse_rate)]
    action_error_rate: f64,

    /// Requests allowed per minute before 429s; 0 means unlimited.
    #[arg(long, default_value_t = fake_cloud::DEFAULT_RATE_LIMIT_PER_MINUTE)]
    rate_limit_per_minute: u32,

    /// Requests allowed per hour before 429s; 0 means unlimited.
    #[arg(long, default_value_t = fake_cloud::DEFAULT_RATE_LIMIT_PER_HOUR)]
    rate_limit_per_hour: u32,

    /// Seed of every fault RNG: the same seed and request sequence give the same faults.
    #[arg(long, default_value_t = 0)]
    seed: u64,

    /// Register a droplet, `ID:REGION`; repeatable. Default: 1, 2 and 3 in
    /// nyc3 (or the first region when nyc3 is not offered).
    #[arg(long = "droplet", value_parser = parse_droplet)]
    droplets: Vec<(u64, String)>,

    /// Region slugs, comma-separated.
    #[arg(long, value_delimiter = ',', default_value = "nyc3,sfo3,ams3")]
    regions: Vec<String>,

    /// Most volumes attached to one droplet.
    #[arg(long, default_value_t = fake_cloud::DEFAULT_VOLUME_LIMIT)]
    volume_limit: u32,

    /// Account-wide total of volume sizes, GiB.
    #[arg(long, default_value_t = fake_cloud::DEFAULT_CAPACITY_QUOTA_GIB)]
    capacity_quota_gib: u64,
}

fn parse_listen(s: &str) -> Result<SocketAddr, String> {
    if let Ok(port) = s.parse::<u16>() {
        return Ok(SocketAddr::from(([127, 0, 0, 1], port)));
    }
    s.parse()
        .map_err(|_| format!("expected HOST:PORT or a port, got {s:?}"))
}

fn parse_rate(s: &str) -> Result<f64, String> {
    let rate: f64 = s
        .parse()
        .map_err(|_| format!("expected a number, got {s:?}"))?;
    if (0.0..=1.0).contains(&rate) {
        Ok(rate)
    } else {
        Err(format!("a rate must be between 0 and 1, got {s}"))
    }
}

fn parse_droplet(s: &str) -> Result<(u64, String), String> {
    let (id, region) = s
        .split_once(':')
        .ok_or_else(|| format!("expected ID:REGION, got {s:?}"))?;
    let id = id
        .parse()
        .map_err(|_| format!("droplet id must be a positive integer, got {id:?}"))?;
    Ok((id, region.to_string()))
}

impl Args {
    fn token(&self) -> Result<String, String> {
        if let Some(path) = &self.token_file {
            let text = std::fs::read_to_string(path)
                .map_err(|e| format!("cannot read --token-file {}: {e}", path.display()))?;
            let token = text.trim().to_string();
            if token.is_empty() {
                return Err(format!("--token-file {} is empty", path.display()));
            }
            return Ok(token);
        }
        Ok(self
            .token
            .clone()
            .unwrap_or_else(|| DEFAULT_TOKEN.to_string()))
    }

    fn config(&self) -> CloudConfig {
        let droplets = if self.droplets.is_empty() {
            let region = if self.regions.iter().any(|r| r == "nyc3") {
                "nyc3".to_string()
            } else {
                self.regions.first().cloned().unwrap_or_default()
            };
            (1..=3).map(|id| (id, region.clone())).collect()
        } else {
            self.droplets.clone()
        };
        CloudConfig {
            regions: self.regions.clone(),
            droplets,
            volume_limit: self.volume_limit,
            capacity_quota_gib: self.capacity_quota_gib,
            latency: LatencyConfig {
                attach: self.attach_latency,
                detach: self.detach_latency,
                resize: self.resize_latency,
                jitter: self.jitter,
            },
            faults: Faults {
                seed: self.seed,
                error_rate_5xx: self.error_rate_5xx,
                rate_429: self.rate_429,
                lost_response_rate: self.lost_response_rate,
                action_error_rate: self.action_error_rate,
                rate_limit_per_minute: self.rate_limit_per_minute,
                rate_limit_per_hour: self.rate_limit_per_hour,
            },
            data_dir: self.data_dir.clone(),
        }
    }
}

async fn shutdown_signal() {
    let ctrl_c = async {
        if tokio::signal::ctrl_c().await.is_err() {
            std::future::pending::<()>().await;
        }
    };
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    tokio::select! {
        () = ctrl_c => {},
        () = terminate => {},
    }
    tracing::info!("shutting down");
}

#[tokio::main]
async fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .init();
    let args = Args::parse();
    match run(args).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("fake-cloud: {message}");
            ExitCode::FAILURE
        }
    }
}

async fn run(args: Args) -> Result<(), String> {
    let token = args.token()?;
    let config = args.config();
    let cloud = Cloud::open(config.clone()).map_err(|e| format!("cannot start: {e}"))?;
    let listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .map_err(|e| format!("cannot listen on {}: {e}", args.listen))?;
    let addr = listener
        .local_addr()
        .map_err(|e| format!("cannot read the bound address: {e}"))?;
    tracing::info!(
        %addr,
        regions = ?config.regions,
        droplets = ?config.droplets,
        volume_limit = config.volume_limit,
        capacity_quota_gib = config.capacity_quota_gib,
        latency = ?config.latency,
        faults = ?config.faults,
        data_dir = ?config.data_dir,
        "fake-cloud starting"
    );
    {
        use std::io::Write;
        let mut out = std::io::stdout().lock();
        writeln!(out, "listening on http://{addr}").map_err(|e| e.to_string())?;
        out.flush().map_err(|e| e.to_string())?;
    }
    fake_cloud::server::serve_with_shutdown(
        listener,
        fake_cloud::server::router(cloud, token),
        shutdown_signal(),
    )
    .await
    .map_err(|e| format!("server failed: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_accept_units_and_plain_seconds() {
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("2s"), Ok(Duration::from_secs(2)));
        assert_eq!(parse_duration("1.5s"), Ok(Duration::from_millis(1500)));
        assert_eq!(parse_duration("3"), Ok(Duration::from_secs(3)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        assert_eq!(parse_duration("0"), Ok(Duration::ZERO));
        assert!(parse_duration("fast").is_err());
        assert!(parse_duration("5parsecs").is_err());
        assert!(parse_duration("-1s").is_err());
        assert_eq!(parse_duration("1m30s"), Ok(Duration::from_secs(90)));
        assert_eq!(parse_duration("250us"), Ok(Duration::from_micros(250)));
        assert!(parse_duration("2d").is_err());
    }

    #[test]
    fn listen_accepts_a_bare_port() {
        assert_eq!(parse_listen("0"), Ok(SocketAddr::from(([127, 0, 0, 1], 0))));
        assert_eq!(
            parse_listen("0.0.0.0:9000"),
            Ok(SocketAddr::from(([0, 0, 0, 0], 9000)))
        );
        assert!(parse_listen("nowhere").is_err());
    }

    #[test]
    fn droplets_default_to_three_in_nyc3() {
        let args = Args::parse_from(["fake-cloud"]);
        let config = args.config();
        assert_eq!(
            config.droplets,
            vec![(1, "nyc3".into()), (2, "nyc3".into()), (3, "nyc3".into())]
        );
        assert_eq!(config.faults.rate_limit_per_minute, 250);
        assert_eq!(config.faults.rate_limit_per_hour, 5_000);
        assert_eq!(args.token(), Ok("fake-token".to_string()));
        let args = Args::parse_from(["fake-cloud", "--droplet", "9:sfo3", "--rate-429", "0.5"]);
        assert_eq!(args.config().droplets, vec![(9, "sfo3".into())]);
        assert!(Args::try_parse_from(["fake-cloud", "--rate-429", "2"]).is_err());
    }
}
