//! The units of every flag of every binary in this workspace (csi-sanity, csi-driver,
//! fake-cloud) and of the harness's reports: one grammar for durations, one for sizes, and
//! one way to write a duration in JSON.
//!
//! Durations are Go's (`time.ParseDuration`, which csi-sanity's `--csi.*` flags take:
//! `30s`, `1m30s`, `500ms`, `1.5s`) parsed by `humantime`, restricted to Go's units, plus a
//! plain non-negative number of seconds (`10`, `0.5`), which the harness always took.
//! Sizes are a whole number of bytes, as Go's `--csi.testvolumesize` takes them (decimal,
//! or `0x` hex as Go's integer flags allow), optionally with a unit: `K`, `M`, `G`, `T`
//! (powers of 1000) or `Ki`, `Mi`, `Gi`, `Ti` (powers of 1024).

use std::time::Duration;

/// Go's duration units, the only ones a flag takes (humantime knows more: days, years…).
const DURATION_UNITS: [&str; 7] = ["ns", "us", "µs", "ms", "s", "m", "h"];

/// Parse a flag's duration: `500ms`, `10s`, `2m`, `1h`, `1m30s`, `1.5s`, or plain seconds.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let bad =
        || format!("invalid duration {s:?}: expected e.g. 10s, 500ms, 1m30s or plain seconds");
    if let Ok(secs) = s.parse::<f64>() {
        return Duration::try_from_secs_f64(secs).map_err(|_| bad());
    }
    let go_units = s
        .split(|c: char| c.is_ascii_digit() || c == '.')
        .filter(|unit| !unit.is_empty())
        .all(|unit| DURATION_UNITS.contains(&unit));
    if !go_units {
        return Err(bad());
    }
    humantime::parse_duration(s).map_err(|_| bad())
}

/// Parse a size in bytes: `4096`, `0x1000`, `1Gi`, `512Mi`, `10G`. Zero and negative
/// numbers parse (Go's integer flags take them); a flag that needs a positive size says so
/// with [`parse_positive_size`].
pub fn parse_size(s: &str) -> Result<i64, String> {
    let s = s.trim();
    let bad = || format!("expected a size like 1Gi or 1073741824, got {s:?}");
    if let Some(hex) = s.strip_prefix("0x").or_else(|| s.strip_prefix("0X")) {
        return i64::from_str_radix(hex, 16).map_err(|_| bad());
    }
    let split = s
        .char_indices()
        .find(|&(i, c)| !(c.is_ascii_digit() || (i == 0 && c == '-')))
        .map_or(s.len(), |(i, _)| i);
    let (number, unit) = s.split_at(split);
    let value: i64 = number.parse().map_err(|_| bad())?;
    let multiplier: i64 = match unit {
        "" => 1,
        "K" | "k" => 1_000,
        "M" => 1_000_000,
        "G" => 1_000_000_000,
        "T" => 1_000_000_000_000,
        "Ki" => 1 << 10,
        "Mi" => 1 << 20,
        "Gi" => 1 << 30,
        "Ti" => 1 << 40,
        other => return Err(format!("unknown size unit {other:?} in {s:?}")),
    };
    value
        .checked_mul(multiplier)
        .ok_or_else(|| format!("size {s:?} is out of range"))
}

/// [`parse_size`], for a flag whose size must be at least one byte.
pub fn parse_positive_size(s: &str) -> Result<i64, String> {
    match parse_size(s)? {
        bytes if bytes > 0 => Ok(bytes),
        _ => Err(format!("size {:?} is out of range", s.trim())),
    }
}

/// Write a duration into JSON as milliseconds, a number (`12.5`): every duration in a
/// report does, in a field whose name ends in `_ms`. Use with
/// `#[serde(serialize_with = "csi_units::as_millis")]`.
pub fn as_millis<S: serde::Serializer>(d: &Duration, serializer: S) -> Result<S::Ok, S::Error> {
    serializer.serialize_f64(millis(*d))
}

/// A duration in milliseconds, with the fraction kept.
pub fn millis(d: Duration) -> f64 {
    d.as_nanos() as f64 / 1e6
}

/// The duration grammar by example: every form a flag took before there was one
/// grammar, and what it means (None: refused). Each binary's flags are tested on it.
pub const DURATION_EXAMPLES: &[(&str, Option<Duration>)] = &[
    ("10s", Some(Duration::from_secs(10))),
    ("10", Some(Duration::from_secs(10))),
    ("0", Some(Duration::ZERO)),
    ("0s", Some(Duration::ZERO)),
    ("0.5", Some(Duration::from_millis(500))),
    ("1.5s", Some(Duration::from_millis(1500))),
    ("500ms", Some(Duration::from_millis(500))),
    ("250us", Some(Duration::from_micros(250))),
    ("250µs", Some(Duration::from_micros(250))),
    ("40ns", Some(Duration::from_nanos(40))),
    ("2m", Some(Duration::from_secs(120))),
    ("1m30s", Some(Duration::from_secs(90))),
    ("1h", Some(Duration::from_secs(3600))),
    ("1h30m", Some(Duration::from_secs(5400))),
    (" 30s ", Some(Duration::from_secs(30))),
    ("", None),
    ("ten", None),
    ("soon", None),
    ("-1", None),
    ("-1s", None),
    ("5y", None),
    ("2d", None),
    ("5parsecs", None),
    ("1 m", None),
];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_take_go_forms_and_plain_seconds() {
        for (text, want) in DURATION_EXAMPLES {
            assert_eq!(parse_duration(text).ok(), *want, "{text:?}");
        }
    }

    #[test]
    fn sizes_take_bytes_and_units() {
        let table: &[(&str, Option<i64>)] = &[
            ("4096", Some(4096)),
            ("10737418240", Some(10 << 30)),
            ("0x1000", Some(4096)),
            ("0", Some(0)),
            ("-1", Some(-1)),
            ("1Ki", Some(1024)),
            ("512Mi", Some(512 << 20)),
            ("1Gi", Some(1 << 30)),
            ("2Ti", Some(2 << 40)),
            ("1k", Some(1000)),
            ("1K", Some(1000)),
            ("10G", Some(10_000_000_000)),
            ("1T", Some(1_000_000_000_000)),
            ("big", None),
            ("1Xi", None),
            ("1.5Gi", None),
            ("99999999999Ti", None),
            ("", None),
        ];
        for (text, want) in table {
            assert_eq!(parse_size(text).ok(), *want, "{text:?}");
        }
        assert_eq!(parse_positive_size("1Gi"), Ok(1 << 30));
        assert!(parse_positive_size("0").is_err());
        assert!(parse_positive_size("-1Gi").is_err());
    }

    #[test]
    fn json_durations_are_milliseconds() {
        #[derive(serde::Serialize)]
        struct Report {
            #[serde(serialize_with = "as_millis")]
            p50_ms: Duration,
        }
        let json = serde_json::to_string(&Report {
            p50_ms: Duration::from_micros(5_423_937),
        })
        .unwrap();
        assert_eq!(json, r#"{"p50_ms":5423.937}"#);
    }
}
