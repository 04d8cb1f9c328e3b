//! The request's deadline: read from the gRPC `grpc-timeout` header
//! ([`requested_timeout`], the one reader of it, which the node uses too), less a margin
//! so the driver answers DEADLINE_EXCEEDED itself before the caller gives up. Each user
//! keeps back its own margin: [`Deadline::from_metadata`] the cloud layer's.

use std::time::Duration;

use tokio::time::Instant;

/// Used when the caller sent no `grpc-timeout`.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(60);

/// The margin kept back from the caller's timeout: a tenth of it, at least this much (but
/// never more than a quarter of the timeout), so a loaded process still answers first...
const MIN_MARGIN: Duration = Duration::from_millis(50);
/// ...and at most this much.
const MAX_MARGIN: Duration = Duration::from_millis(200);

/// When the current request must be answered by.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Deadline(Instant);

impl Deadline {
    /// A deadline `timeout` from now.
    pub fn after(timeout: Duration) -> Deadline {
        Deadline(Instant::now() + timeout)
    }

    /// The deadline of a gRPC request: its `grpc-timeout` less the cloud layer's margin (a
    /// tenth of it, from 50 ms to 200 ms), or [`DEFAULT_TIMEOUT`] when absent or
    /// unreadable.
    pub fn from_metadata(metadata: &tonic::metadata::MetadataMap) -> Deadline {
        let timeout = requested_timeout(metadata).unwrap_or(DEFAULT_TIMEOUT);
        let margin = (timeout / 10)
            .max(MIN_MARGIN.min(timeout / 4))
            .min(MAX_MARGIN);
        Deadline::after(timeout - margin)
    }

    /// The instant itself.
    pub fn instant(self) -> Instant {
        self.0
    }

    /// Time left; zero once passed.
    pub fn remaining(self) -> Duration {
        self.0.saturating_duration_since(Instant::now())
    }

    /// True once passed.
    pub fn passed(self) -> bool {
        Instant::now() >= self.0
    }
}

/// The timeout the caller gave this request (its `grpc-timeout` header), if it gave a
/// readable one. The one reader of that header: each caller keeps back its own margin.
pub fn requested_timeout(metadata: &tonic::metadata::MetadataMap) -> Option<Duration> {
    metadata
        .get("grpc-timeout")
        .and_then(|v| v.to_str().ok())
        .and_then(parse_grpc_timeout)
}

/// Parse a `grpc-timeout` value: at most 8 digits and a unit, one of H, M, S, m, u, n.
pub fn parse_grpc_timeout(value: &str) -> Option<Duration> {
    let value = value.trim();
    let unit = value.chars().last()?;
    let digits = &value[..value.len() - unit.len_utf8()];
    if digits.is_empty() || digits.len() > 8 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let n: u64 = digits.parse().ok()?;
    Some(match unit {
        'H' => Duration::from_secs(n.checked_mul(3600)?),
        'M' => Duration::from_secs(n.checked_mul(60)?),
        'S' => Duration::from_secs(n),
        'm' => Duration::from_millis(n),
        'u' => Duration::from_micros(n),
        'n' => Duration::from_nanos(n),
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grpc_timeouts_parse_every_unit_and_reject_junk() {
        assert_eq!(parse_grpc_timeout("2H"), Some(Duration::from_secs(7200)));
        assert_eq!(parse_grpc_timeout("3M"), Some(Duration::from_secs(180)));
        assert_eq!(parse_grpc_timeout("10S"), Some(Duration::from_secs(10)));
        assert_eq!(parse_grpc_timeout("250m"), Some(Duration::from_millis(250)));
        assert_eq!(parse_grpc_timeout("7u"), Some(Duration::from_micros(7)));
        assert_eq!(
            parse_grpc_timeout("99999999n"),
            Some(Duration::from_nanos(99_999_999))
        );
        assert_eq!(
            parse_grpc_timeout("59999862u"),
            Some(Duration::from_micros(59_999_862))
        );
        for bad in ["", "S", "10", "10s", "123456789S", "-1S", "1.5S", "é", "1é"] {
            assert_eq!(parse_grpc_timeout(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn the_requested_timeout_is_read_from_the_grpc_timeout_header_only() {
        let mut metadata = tonic::metadata::MetadataMap::new();
        assert_eq!(requested_timeout(&metadata), None);
        metadata.insert("grpc-timeout", "1500m".parse().unwrap());
        assert_eq!(
            requested_timeout(&metadata),
            Some(Duration::from_millis(1500))
        );
        metadata.insert("grpc-timeout", "soon".parse().unwrap());
        assert_eq!(requested_timeout(&metadata), None);
        let mut other = tonic::metadata::MetadataMap::new();
        other.insert("timeout", "10S".parse().unwrap());
        assert_eq!(requested_timeout(&other), None);
    }

    #[tokio::test]
    async fn the_deadline_keeps_a_margin_before_the_callers_timeout() {
        let mut metadata = tonic::metadata::MetadataMap::new();
        metadata.insert("grpc-timeout", "1000m".parse().unwrap());
        let remaining = Deadline::from_metadata(&metadata).remaining();
        assert!(remaining <= Duration::from_millis(900), "{remaining:?}");
        assert!(remaining > Duration::from_millis(800), "{remaining:?}");

        metadata.insert("grpc-timeout", "200m".parse().unwrap());
        let remaining = Deadline::from_metadata(&metadata).remaining();
        assert!(remaining <= Duration::from_millis(150), "{remaining:?}");
        assert!(remaining > Duration::from_millis(100), "{remaining:?}");

        metadata.insert("grpc-timeout", "100S".parse().unwrap());
        let remaining = Deadline::from_metadata(&metadata).remaining();
        assert!(remaining > Duration::from_millis(99_700), "{remaining:?}");

        let remaining = Deadline::from_metadata(&tonic::metadata::MetadataMap::new()).remaining();
        assert!(remaining > Duration::from_secs(59), "{remaining:?}");
    }
}
