//! The HTTP-only faults: the per-minute request budget, random 429s, random
//! 5xx answers and lost responses.
//!
//! Determinism: the gate's RNG is seeded from `Faults::seed` (and reseeded on
//! every `set_faults`). Every authenticated `/v2` request draws exactly three
//! numbers from it, in arrival order, whatever the rates and whatever the
//! outcome, so the same seed and the same sequence of requests give the same
//! faults. Concurrent requests arrive in an order the scheduler picks.

use std::sync::Mutex;

use chrono::{DateTime, Utc};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use crate::model::Cloud;

/// Length of a rate-limit window.
const WINDOW: chrono::TimeDelta = chrono::TimeDelta::seconds(60);

/// The values of the `ratelimit-*` headers.
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
    /// Answer 429 with `retry-after: retry_after` seconds.
    Throttle { retry_after: u64 },
    /// Answer 500 without applying it.
    Fail,
}

/// Per-server fault state.
pub struct Gate {
    state: Mutex<GateState>,
}

struct GateState {
    generation: Option<u64>,
    rng: StdRng,
    window_start: Option<DateTime<Utc>>,
    used: u32,
}

impl Gate {
    pub fn new() -> Gate {
        Gate {
            state: Mutex::new(GateState {
                generation: None,
                rng: StdRng::seed_from_u64(0),
                window_start: None,
                used: 0,
            }),
        }
    }

    /// Decides the fate of one request, counting it against the budget.
    pub fn admit(&self, cloud: &Cloud) -> (Verdict, RateHeaders) {
        let (faults, generation) = cloud.faults_with_generation();
        let now = cloud.now();
        let mut st = self.state.lock().unwrap_or_else(|e| e.into_inner());
        if st.generation != Some(generation) {
            st.generation = Some(generation);
            st.rng = StdRng::seed_from_u64(faults.seed);
        }
        let draw_429: f64 = st.rng.random();
        let draw_5xx: f64 = st.rng.random();
        let draw_lost: f64 = st.rng.random();

        let start = match st.window_start {
            Some(start) if now < start + WINDOW => start,
            _ => {
                st.window_start = Some(now);
                st.used = 0;
                now
            }
        };
        let reset_at = start + WINDOW;
        let limit = faults.rate_limit_per_minute;
        if limit == 0 {
            let headers = RateHeaders {
                limit: u32::MAX,
                remaining: u32::MAX,
                reset: reset_at.timestamp(),
            };
            return (decide(&faults, draw_429, draw_5xx, draw_lost), headers);
        }
        if st.used >= limit {
            let wait = (reset_at - now).num_milliseconds().max(0) as u64;
            let headers = RateHeaders {
                limit,
                remaining: 0,
                reset: reset_at.timestamp(),
            };
            return (
                Verdict::Throttle {
                    retry_after: wait.div_ceil(1000).max(1),
                },
                headers,
            );
        }
        st.used += 1;
        let headers = RateHeaders {
            limit,
            remaining: limit - st.used,
            reset: reset_at.timestamp(),
        };
        (decide(&faults, draw_429, draw_5xx, draw_lost), headers)
    }
}

fn decide(faults: &crate::Faults, draw_429: f64, draw_5xx: f64, draw_lost: f64) -> Verdict {
    if draw_429 < faults.rate_429 {
        Verdict::Throttle { retry_after: 1 }
    } else if draw_5xx < faults.error_rate_5xx {
        Verdict::Fail
    } else {
        Verdict::Proceed {
            lose_response: draw_lost < faults.lost_response_rate,
        }
    }
}
