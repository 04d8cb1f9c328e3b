//! The driver's command line: every flag is read here, and only here.

use std::path::PathBuf;
use std::time::Duration;

use clap::{Parser, ValueEnum};

/// Default plugin name, reported by GetPluginInfo and used as the CSIDriver name.
pub const DEFAULT_DRIVER_NAME: &str = "dobs.csi.rustcsi.dev";

/// Environment variable that may hold the cloud API token.
pub const TOKEN_ENV: &str = "DIGITALOCEAN_ACCESS_TOKEN";

/// Which CSI services this process serves.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Mode {
    /// Identity, Controller and Node in one process.
    All,
    /// Identity and Controller (the StatefulSet in a cluster).
    Controller,
    /// Identity and Node (the DaemonSet in a cluster).
    Node,
}

/// Which cloud backend the driver talks to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum CloudKind {
    /// The fake-cloud model, in process (only in a build with the `fake-cloud` feature).
    Memory,
    /// A DigitalOcean-v2-compatible HTTP API.
    Http,
}

impl CloudKind {
    /// `--cloud`'s default: the in-process fake cloud where the build has it, else the
    /// HTTP API.
    pub const DEFAULT: CloudKind = if cfg!(feature = "fake-cloud") {
        CloudKind::Memory
    } else {
        CloudKind::Http
    };
}

/// Why `--cloud memory` cannot start in a production build.
pub const MEMORY_CLOUD_NEEDS_FEATURE: &str = "--cloud memory runs the fake cloud in process, \
    and this csi-driver was built without the `fake-cloud` feature; use --cloud http";

/// How the controller polls a cloud action it waits on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum PollMode {
    /// Learn each kind's duration, look first at about its expected completion, then
    /// back off briefly (the default for `--cloud http`).
    Learned,
    /// Every second, as csi-digitalocean does.
    EverySecond,
    /// Often at first, less as the wait grows (the default for `--cloud memory`, whose
    /// polls cost nothing).
    Backoff,
}

/// How the node finds the block device of an attached volume.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum DeviceSource {
    /// Simulated hot-plug: attach the fake cloud's image of the volume (in its data dir)
    /// as a loop device and link it under `--device-dir` (only in a build with the
    /// `fake-cloud` feature).
    Loop,
    /// Wait for the hypervisor's link `<device-dir>/scsi-0DO_Volume_<name>`.
    Digitalocean,
}

impl DeviceSource {
    /// `--device-source`'s default: the fake cloud's loop devices where the build has
    /// them, else the hypervisor's links.
    pub const DEFAULT: DeviceSource = if cfg!(feature = "fake-cloud") {
        DeviceSource::Loop
    } else {
        DeviceSource::Digitalocean
    };
}

/// Log output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

/// Durations read as every binary of the workspace reads them (Go's `500ms`, `1m30s`,
/// `1.5s`, or plain seconds).
pub use csi_units::parse_duration;

/// The `csi-driver` binary's flags.
#[derive(Debug, Clone, Parser)]
#[command(
    name = "csi-driver",
    version,
    about = "A DigitalOcean-style block-storage CSI driver"
)]
pub struct Config {
    /// Where to serve CSI: unix:///path/to/csi.sock or tcp://host:port.
    #[arg(long, default_value = "unix:///tmp/csi.sock", env = "CSI_ENDPOINT")]
    pub endpoint: String,

    /// Plugin name reported by GetPluginInfo (reverse domain notation, at most 63 characters).
    #[arg(long, default_value = DEFAULT_DRIVER_NAME)]
    pub driver_name: String,

    /// Plugin version reported by GetPluginInfo.
    #[arg(long, default_value = env!("CARGO_PKG_VERSION"))]
    pub driver_version: String,

    /// Which services to serve.
    #[arg(long, value_enum, default_value_t = Mode::All)]
    pub mode: Mode,

    /// This node's id: the droplet id (node and all modes).
    #[arg(long, env = "CSI_NODE_ID")]
    pub node_id: Option<String>,

    /// File holding this node's id (read at start; wins over --node-id). In a cluster an init
    /// container writes the droplet id here.
    #[arg(long)]
    pub node_id_file: Option<PathBuf>,

    /// The region this node is in, reported as its topology.
    #[arg(long, default_value = "nyc3", env = "CSI_REGION")]
    pub region: String,

    /// Cloud backend.
    #[arg(long, value_enum, default_value_t = CloudKind::DEFAULT)]
    pub cloud: CloudKind,

    /// Base URL of the cloud API, for `--cloud http`.
    #[arg(long, default_value = "https://api.digitalocean.com")]
    pub cloud_url: String,

    /// File holding the API token (the token can also come from $DIGITALOCEAN_ACCESS_TOKEN; never pass it as a flag).
    #[arg(long)]
    pub token_file: Option<PathBuf>,

    /// Timeout for one HTTP request to the cloud.
    #[arg(long, default_value = "30s", value_parser = parse_duration)]
    pub cloud_timeout: Duration,

    /// How to poll a cloud action being waited on [default: learned for http, backoff for
    /// memory].
    #[arg(long, value_enum)]
    pub poll_policy: Option<PollMode>,

    /// Data directory of the fake cloud: for `--cloud memory` it holds the volume images;
    /// for the node with `--device-source loop` it is where images are found.
    #[arg(long)]
    pub data_dir: Option<PathBuf>,

    /// With `--cloud memory` and `--data-dir`: keep the cloud's state in memory only, with
    /// no `state.json` and no fsync of images, so it dies with the process. For a data
    /// dir that is itself temporary (the harness's bundled driver, benchmarks). At start,
    /// images an earlier process left in the dir are removed, since no state names them.
    /// Without `--data-dir` the cloud is always ephemeral.
    #[arg(long)]
    pub cloud_ephemeral: bool,

    /// How the node finds an attached volume's device.
    #[arg(long, value_enum, default_value_t = DeviceSource::DEFAULT)]
    pub device_source: DeviceSource,

    /// Directory of stable device links (the DigitalOcean hypervisor uses /dev/disk/by-id).
    #[arg(long, default_value = "/dev/disk/by-id")]
    pub device_dir: PathBuf,

    /// Maximum volumes per node, reported by NodeGetInfo.
    #[arg(long, default_value_t = 7)]
    pub max_volumes_per_node: i64,

    /// In-memory cloud: attach latency.
    #[arg(long, default_value = "0s", value_parser = parse_duration)]
    pub attach_latency: Duration,

    /// In-memory cloud: detach latency.
    #[arg(long, default_value = "0s", value_parser = parse_duration)]
    pub detach_latency: Duration,

    /// In-memory cloud: resize latency.
    #[arg(long, default_value = "0s", value_parser = parse_duration)]
    pub resize_latency: Duration,

    /// In-memory cloud: droplets to register, as ID:REGION (repeatable). The node id is always registered.
    #[arg(long = "droplet")]
    pub droplets: Vec<String>,

    /// Address for /healthz and /metrics over HTTP (e.g. 0.0.0.0:9808). Off when unset.
    #[arg(long)]
    pub http_address: Option<String>,

    /// Log format.
    #[arg(long, value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,

    /// Log filter, in tracing's EnvFilter syntax.
    #[arg(long, default_value = "info", env = "CSI_LOG")]
    pub log_level: String,
}

/// Topology segment key for the region a volume or node is in.
pub const TOPOLOGY_REGION_KEY: &str = "region";

/// publish_context key: the cloud's name of the volume (the device link is derived from it).
pub const PUBLISH_CONTEXT_VOLUME_NAME: &str = "volume-name";

/// publish_context key: the stable device link the node waits for, relative to `--device-dir`.
pub const PUBLISH_CONTEXT_DEVICE_LINK: &str = "device-link";

/// The stable link name a DigitalOcean droplet shows for an attached volume.
pub fn device_link_name(volume_name: &str) -> String {
    format!("scsi-0DO_Volume_{volume_name}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_accept_units_and_plain_seconds() {
        assert_eq!(parse_duration("10s").unwrap(), Duration::from_secs(10));
        assert_eq!(parse_duration("10").unwrap(), Duration::from_secs(10));
        assert_eq!(parse_duration("500ms").unwrap(), Duration::from_millis(500));
        assert_eq!(parse_duration("2m").unwrap(), Duration::from_secs(120));
        assert!(parse_duration("ten").is_err());
        assert!(parse_duration("-1").is_err());
        assert!(parse_duration("5y").is_err());
    }

    #[test]
    fn duration_flags_read_the_workspace_grammar() {
        for (text, want) in csi_units::DURATION_EXAMPLES {
            let parsed = Config::try_parse_from(["csi-driver", "--cloud-timeout", text])
                .ok()
                .map(|c| c.cloud_timeout);
            assert_eq!(parsed, *want, "--cloud-timeout {text:?}");
        }
    }
}
