//! What a load run found, and how it is printed.

use std::collections::BTreeMap;
use std::time::Duration;

use csi_suites::units::{as_millis, millis};

/// The eight steps of a lifecycle, in order.
pub(super) const STEPS: [&str; 8] = [
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

pub(super) fn ms(d: Duration) -> String {
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

#[cfg(test)]
mod tests {
    use super::*;
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
}
