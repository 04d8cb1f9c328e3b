//! The HTTP-only faults: DigitalOcean's request budgets (per minute and per hour),
//! random 429s, random 5xx answers and lost responses; and the count of requests
//! served, by route, that `/admin/requests` reports.
//!
//! Determinism: the gate's RNG is seeded from `Faults::seed` (and reseeded on
//! every `set_faults`). Every authenticated `/v2` request draws exactly three
//! numbers from it, in arrival order, whatever the rates and whatever the
//! outcome, so the same seed and the same sequence of requests give the same
//! faults. Concurrent requests arrive in an order the scheduler picks.

use std::collections::BTreeMap;
use std::sync::Mutex;

use chrono::{DateTime, TimeDelta, Utc};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde::{Deserialize, Serialize};

use crate::model::Cloud;

/// The values of the `ratelimit-*` headers: those of the budget window closer to
/// running out.
#[derive(Debug, Clone, Copy)]
pub struct RateHeaders {
    /// Requests allowed per window (`u32::MAX` when unlimited).
    pub limit: u32,
    /// Requests left in this window.
    pub remaining: u32,
    /// Unix time at which the window resets.
    pub reset: i64,
}

/// What the gate decided about one request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Serve it; if `lose_response`, apply it but answer 500.
    Proceed { lose_response: bool },
    /// Answer 429, with `retry-after: <seconds>` when given (DigitalOcean sends it for
    /// the per-minute burst limit, not for the hourly one).
    Throttle { retry_after: Option<u64> },
    /// Answer 500 without applying it.
    Fail,
}

/// One budget window: a fixed span that starts with the first request after the last
/// one ended.
#[derive(Debug, Clone, Copy)]
struct Window {
    length: TimeDelta,
    start: Option<DateTime<Utc>>,
    used: u32,
}

impl Window {
    fn new(length: TimeDelta) -> Window {
        Window {
            length,
            start: None,
            used: 0,
        }
    }

    /// Start a new window if the last one is over; the time this one ends.
    fn roll(&mut self, now: DateTime<Utc>) -> DateTime<Utc> {
        match self.start {
            Some(start) if now < start + self.length => start + self.length,
            _ => {
                self.start = Some(now);
                self.used = 0;
                now + self.length
            }
        }
    }
}

/// Requests the server has seen since start (or the last reset), for tests and
/// benchmarks that count calls without the client's help.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RequestCounts {
    /// Every `/v2` request.
    pub total: u64,
    /// Of those, answered 429 (budget or injected).
    pub throttled: u64,
    /// By `METHOD /route`, ids replaced by `{id}`: `GET /v2/volumes/{id}/actions/{id}`.
    pub by_route: BTreeMap<String, u64>,
}

/// How much of each budget window is used, and when the hour resets: `GET
/// /admin/ratelimit`, and `PUT` to spend part of a budget ahead of time (a test of a
/// nearly spent hour).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BudgetUse {
    #[serde(default)]
    pub minute_used: Option<u32>,
    #[serde(default)]
    pub hour_used: Option<u32>,
    /// Seconds until the hour's window ends (on PUT: move its end there).
    #[serde(default)]
    pub hour_resets_in: Option<u64>,
}

/// Per-server fault state.
pub struct Gate {
    state: Mutex<GateState>,
}

struct GateState {
    generation: Option<u64>,
    rng: StdRng,
    minute: Window,
    hour: Window,
    counts: RequestCounts,
}

impl Gate {
    pub fn new() -> Gate {
        Gate {
            state: Mutex::new(GateState {
                generation: None,
                rng: StdRng::seed_from_u64(0),
                minute: Window::new(TimeDelta::seconds(60)),
                hour: Window::new(TimeDelta::seconds(3600)),
                counts: RequestCounts::default(),
            }),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, GateState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Decides the fate of one request, counting it against both budgets.
    pub fn admit(&self, cloud: &Cloud) -> (Verdict, RateHeaders) {
        let (faults, generation) = cloud.faults_with_generation();
        let now = cloud.now();
        let mut st = self.lock();
        if st.generation != Some(generation) {
            st.generation = Some(generation);
            st.rng = StdRng::seed_from_u64(faults.seed);
        }
        let draw_429: f64 = st.rng.random();
        let draw_5xx: f64 = st.rng.random();
        let draw_lost: f64 = st.rng.random();

        let minute_reset = st.minute.roll(now);
        let hour_reset = st.hour.roll(now);
        let minute = (faults.rate_limit_per_minute, st.minute.used, minute_reset);
        let hour = (faults.rate_limit_per_hour, st.hour.used, hour_reset);
        // The minute first: its 429 says when to retry.
        for (i, (limit, used, reset)) in [minute, hour].into_iter().enumerate() {
            if limit > 0 && used >= limit {
                let wait = (reset - now).num_milliseconds().max(0) as u64;
                let headers = RateHeaders {
                    limit,
                    remaining: 0,
                    reset: reset.timestamp(),
                };
                let retry_after = (i == 0).then(|| wait.div_ceil(1000).max(1));
                return (Verdict::Throttle { retry_after }, headers);
            }
        }
        st.minute.used += 1;
        st.hour.used += 1;
        // The headers speak of the window with fewer requests left (the minute on a tie).
        let headers = [minute, hour]
            .into_iter()
            .filter(|(limit, _, _)| *limit > 0)
            .map(|(limit, used, reset)| RateHeaders {
                limit,
                remaining: limit - used - 1,
                reset: reset.timestamp(),
            })
            .min_by_key(|h| h.remaining)
            .unwrap_or(RateHeaders {
                limit: u32::MAX,
                remaining: u32::MAX,
                reset: minute_reset.timestamp(),
            });
        (decide(&faults, draw_429, draw_5xx, draw_lost), headers)
    }

    /// Count one `/v2` request on `route`, and whether it was answered 429.
    pub fn count(&self, route: String, throttled: bool) {
        let mut st = self.lock();
        st.counts.total += 1;
        st.counts.throttled += u64::from(throttled);
        *st.counts.by_route.entry(route).or_default() += 1;
    }

    /// The requests counted so far.
    pub fn counts(&self) -> RequestCounts {
        self.lock().counts.clone()
    }

    /// Start counting from zero.
    pub fn reset_counts(&self) {
        self.lock().counts = RequestCounts::default();
    }

    /// Requests used in the current minute and hour (zero for a window that is over).
    pub fn budget_use(&self, now: DateTime<Utc>) -> BudgetUse {
        let mut st = self.lock();
        st.minute.roll(now);
        let hour_ends = st.hour.roll(now);
        BudgetUse {
            minute_used: Some(st.minute.used),
            hour_used: Some(st.hour.used),
            hour_resets_in: Some((hour_ends - now).num_seconds().max(0) as u64),
        }
    }

    /// Set the requests used in the current windows (starting them now if over).
    pub fn set_budget_use(&self, now: DateTime<Utc>, set: BudgetUse) {
        let mut st = self.lock();
        st.minute.roll(now);
        st.hour.roll(now);
        if let Some(used) = set.minute_used {
            st.minute.used = used;
        }
        if let Some(used) = set.hour_used {
            st.hour.used = used;
        }
        if let Some(secs) = set.hour_resets_in {
            let left = TimeDelta::seconds(i64::try_from(secs).unwrap_or(i64::MAX).min(3600));
            st.hour.start = Some(now - (st.hour.length - left));
        }
    }
}

/// The route of a `/v2` path: the segment after a collection is an id.
pub fn route_of(method: &str, path: &str) -> String {
    let mut route = String::with_capacity(path.len());
    let mut after_collection = false;
    for segment in path.split('/').filter(|s| !s.is_empty()) {
        route.push('/');
        if after_collection {
            route.push_str("{id}");
            after_collection = false;
        } else {
            route.push_str(segment);
            after_collection = matches!(
                segment,
                "volumes" | "actions" | "snapshots" | "droplets" | "regions"
            );
        }
    }
    format!("{method} {route}")
}

fn decide(faults: &crate::Faults, draw_429: f64, draw_5xx: f64, draw_lost: f64) -> Verdict {
    if draw_429 < faults.rate_429 {
        Verdict::Throttle {
            retry_after: Some(1),
        }
    } else if draw_5xx < faults.error_rate_5xx {
        Verdict::Fail
    } else {
        Verdict::Proceed {
            lose_response: draw_lost < faults.lost_response_rate,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes_name_ids_by_their_place() {
        assert_eq!(
            route_of("GET", "/v2/volumes/abc-1/actions/42"),
            "GET /v2/volumes/{id}/actions/{id}"
        );
        assert_eq!(route_of("POST", "/v2/volumes"), "POST /v2/volumes");
        assert_eq!(route_of("GET", "/v2/droplets/7"), "GET /v2/droplets/{id}");
        assert_eq!(route_of("GET", "/v2/account"), "GET /v2/account");
    }
}
