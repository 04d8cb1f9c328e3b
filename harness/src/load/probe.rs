//! Readings from outside the CSI calls: the driver's metrics, peak memory, loop devices.

use std::time::Duration;

use anyhow::Context;

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
pub(super) async fn http_get_text(url: &str) -> anyhow::Result<String> {
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
    fn this_process_has_a_peak_rss() {
        let (hwm, rss) = read_rss_kib(std::process::id()).unwrap();
        assert!(hwm >= rss && rss > 0);
    }
}
