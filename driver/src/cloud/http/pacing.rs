//! Staying inside the API's rate limit: every request takes a turn from one [`Pacer`]
//! shared by all calls. The pacer reads the `ratelimit-*` headers of every answer; once the
//! remaining budget runs low it spreads what is left evenly until `ratelimit-reset`, and
//! after a 429 it holds every request back for the `retry-after` the API asked for.
//!
//! Polls of an action in flight ([`Class::Poll`]) are the one kind of request that can
//! wait without harm: the action goes on in the cloud. So they never take the last few
//! requests of the budget ([`Budget::reserve`]) while another request is waiting for
//! its turn; creates, deletes and attaches go first.

use std::sync::Mutex;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use reqwest::header::HeaderMap;
use tokio::time::Instant;

use crate::cloud::{CloudError, Deadline};

/// Below this share of the limit left, requests are spread until the reset...
const LOW_BUDGET_SHARE: f64 = 0.2;
/// ...or below this many, whichever is fewer: a large hourly budget is not spread out
/// across the hour while plenty of it is left.
const LOW_BUDGET_REQUESTS: u64 = 50;
/// Polls leave this share of the limit (at least [`MIN_RESERVE`]) to other requests.
const RESERVE_SHARE: f64 = 0.02;
const MIN_RESERVE: u64 = 2;
/// How often a poll held back by the reserve looks again.
const RESERVE_RECHECK: Duration = Duration::from_millis(50);

/// What a request is, for the order of turns.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Class {
    /// A look at an action in flight: it can wait.
    Poll,
    /// Everything else.
    Call,
}

/// What the last answer said about the budget.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Budget {
    /// `ratelimit-limit`.
    pub limit: Option<u64>,
    /// `ratelimit-remaining`.
    pub remaining: Option<u64>,
    /// `ratelimit-reset`, Unix seconds.
    pub reset: Option<u64>,
}

impl Budget {
    /// Read the `ratelimit-*` headers; absent ones stay None.
    pub fn from_headers(headers: &HeaderMap) -> Budget {
        let number = |name: &str| {
            headers
                .get(name)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.trim().parse::<u64>().ok())
        };
        Budget {
            limit: number("ratelimit-limit"),
            remaining: number("ratelimit-remaining"),
            reset: number("ratelimit-reset"),
        }
    }

    /// The gap to keep between requests: zero while the budget is comfortable, else the
    /// time to the reset shared among the requests left.
    pub fn spacing(&self, now_unix: Duration) -> Duration {
        let (Some(limit), Some(remaining), Some(reset)) = (self.limit, self.remaining, self.reset)
        else {
            return Duration::ZERO;
        };
        let low = ((limit as f64) * LOW_BUDGET_SHARE).min(LOW_BUDGET_REQUESTS as f64);
        if (remaining as f64) >= low {
            return Duration::ZERO;
        }
        // The header counts whole seconds: the window may end up to a second later.
        let until_reset = Duration::from_secs(reset.saturating_add(1)).saturating_sub(now_unix);
        until_reset / u32::try_from(remaining.saturating_add(1)).unwrap_or(u32::MAX)
    }

    /// True when only the requests kept back from polls are left.
    pub fn in_reserve(&self) -> bool {
        let (Some(limit), Some(remaining)) = (self.limit, self.remaining) else {
            return false;
        };
        let reserve = ((limit as f64 * RESERVE_SHARE) as u64).max(MIN_RESERVE);
        remaining <= reserve
    }

    /// Time until the window resets, when known.
    pub fn until_reset(&self, now_unix: Duration) -> Option<Duration> {
        self.reset
            .map(|reset| Duration::from_secs(reset).saturating_sub(now_unix))
            .filter(|d| !d.is_zero())
    }
}

/// `retry-after` in seconds (the only form the API sends).
pub fn retry_after(headers: &HeaderMap) -> Option<Duration> {
    headers
        .get("retry-after")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok())
        .map(Duration::from_secs)
}

fn now_unix() -> Duration {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or(Duration::ZERO)
}

#[derive(Debug)]
struct State {
    budget: Budget,
    /// The earliest start of the next request.
    next_turn: Option<Instant>,
    /// No request before this (after a 429).
    held_until: Option<Instant>,
    /// Requests other than polls waiting for their turn.
    calls_waiting: usize,
}

/// The turn-taker shared by all requests of one client.
#[derive(Debug)]
pub struct Pacer {
    state: Mutex<State>,
}

impl Default for Pacer {
    fn default() -> Self {
        Pacer {
            state: Mutex::new(State {
                budget: Budget::default(),
                next_turn: None,
                held_until: None,
                calls_waiting: 0,
            }),
        }
    }
}

impl Pacer {
    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Wait for this request's turn. Fails at once with RateLimited when the turn comes
    /// after the deadline, or with Timeout when the deadline has passed already.
    pub async fn take_turn(&self, deadline: Deadline, class: Class) -> Result<(), CloudError> {
        loop {
            let now = Instant::now();
            let turn = {
                let mut st = self.lock();
                if now >= deadline.instant() {
                    return Err(CloudError::Timeout {
                        what: "the request's deadline passed before its cloud API call".to_string(),
                    });
                }
                if class == Class::Poll && st.calls_waiting > 0 && st.budget.in_reserve() {
                    None
                } else {
                    let mut turn = now;
                    if let Some(t) = st.next_turn {
                        turn = turn.max(t);
                    }
                    if let Some(t) = st.held_until {
                        turn = turn.max(t);
                    }
                    if turn > deadline.instant() {
                        return Err(CloudError::RateLimited {
                            retry_after: Some(turn - now),
                        });
                    }
                    st.next_turn = Some(turn + st.budget.spacing(now_unix()));
                    Some(turn)
                }
            };
            let Some(turn) = turn else {
                // Another request needs the last of the budget more than this poll does.
                if now + RESERVE_RECHECK > deadline.instant() {
                    return Err(CloudError::RateLimited {
                        retry_after: self.until_reset(),
                    });
                }
                tokio::time::sleep(RESERVE_RECHECK).await;
                continue;
            };
            if turn > now {
                tracing::debug!(
                    wait_ms = (turn - now).as_millis() as u64,
                    "pacing cloud API requests"
                );
                let _waiting = (class == Class::Call).then(|| Waiting::new(self));
                tokio::time::sleep_until(turn).await;
            }
            return Ok(());
        }
    }

    /// Learn the budget from an answer's headers.
    pub fn observe(&self, headers: &HeaderMap) {
        let budget = Budget::from_headers(headers);
        if budget.remaining.is_some() {
            self.lock().budget = budget;
        }
    }

    /// Hold every request back for `wait` (after a 429).
    pub fn hold_for(&self, wait: Duration) {
        let until = Instant::now() + wait;
        let mut st = self.lock();
        st.held_until = Some(st.held_until.map_or(until, |t| t.max(until)));
    }

    /// Time until the budget resets, when known.
    pub fn until_reset(&self) -> Option<Duration> {
        self.lock().budget.until_reset(now_unix())
    }
}

/// Counts a request other than a poll as waiting for its turn while it lives.
struct Waiting<'a>(&'a Pacer);

impl<'a> Waiting<'a> {
    fn new(pacer: &'a Pacer) -> Waiting<'a> {
        pacer.lock().calls_waiting += 1;
        Waiting(pacer)
    }
}

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        let mut st = self.0.lock();
        st.calls_waiting = st.calls_waiting.saturating_sub(1);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_comfortable_budget_adds_no_delay() {
        let b = Budget {
            limit: Some(250),
            remaining: Some(200),
            reset: Some(1_060),
        };
        assert_eq!(b.spacing(Duration::from_secs(1_000)), Duration::ZERO);
        assert_eq!(
            Budget::default().spacing(Duration::from_secs(1_000)),
            Duration::ZERO
        );
    }

    #[test]
    fn a_low_budget_is_spread_until_the_reset() {
        let b = Budget {
            limit: Some(250),
            remaining: Some(9),
            reset: Some(1_059),
        };
        // 60 s left (the reset's second included), 9 requests left: one every 6 s.
        assert_eq!(
            b.spacing(Duration::from_secs(1_000)),
            Duration::from_secs(6)
        );
        let empty = Budget {
            remaining: Some(0),
            ..b
        };
        assert_eq!(
            empty.spacing(Duration::from_secs(1_000)),
            Duration::from_secs(60)
        );
        // A reset in the past: no reason to wait.
        assert_eq!(b.spacing(Duration::from_secs(2_000)), Duration::ZERO);
    }

    #[test]
    fn headers_are_read() {
        let mut h = HeaderMap::new();
        h.insert("ratelimit-limit", "250".parse().unwrap());
        h.insert("ratelimit-remaining", "3".parse().unwrap());
        h.insert("ratelimit-reset", "1700000000".parse().unwrap());
        h.insert("retry-after", "2".parse().unwrap());
        assert_eq!(
            Budget::from_headers(&h),
            Budget {
                limit: Some(250),
                remaining: Some(3),
                reset: Some(1_700_000_000)
            }
        );
        assert_eq!(retry_after(&h), Some(Duration::from_secs(2)));
    }

    #[tokio::test]
    async fn after_a_429_requests_wait_and_a_wait_past_the_deadline_fails_at_once() {
        let pacer = Pacer::default();
        pacer.hold_for(Duration::from_millis(60));
        let started = Instant::now();
        let err = pacer
            .take_turn(Deadline::after(Duration::from_millis(10)), Class::Call)
            .await
            .unwrap_err();
        assert!(matches!(err, CloudError::RateLimited { .. }));
        assert!(started.elapsed() < Duration::from_millis(30));
        pacer
            .take_turn(Deadline::after(Duration::from_secs(5)), Class::Call)
            .await
            .unwrap();
        assert!(started.elapsed() >= Duration::from_millis(60));
    }

    #[tokio::test]
    async fn a_deadline_already_passed_is_a_timeout_not_a_rate_limit() {
        let err = Pacer::default()
            .take_turn(Deadline::after(Duration::ZERO), Class::Call)
            .await
            .unwrap_err();
        assert!(matches!(err, CloudError::Timeout { .. }), "{err:?}");
    }

    #[test]
    fn a_large_hourly_budget_is_spread_only_near_its_end() {
        let hour = |remaining| Budget {
            limit: Some(5_000),
            remaining: Some(remaining),
            reset: Some(4_599),
        };
        assert_eq!(
            hour(900).spacing(Duration::from_secs(1_000)),
            Duration::ZERO
        );
        assert_eq!(
            hour(35).spacing(Duration::from_secs(1_000)),
            Duration::from_secs(100)
        );
    }

    #[tokio::test]
    async fn polls_leave_the_last_of_the_budget_to_waiting_calls() {
        let pacer = Pacer::default();
        let mut h = HeaderMap::new();
        h.insert("ratelimit-limit", "250".parse().unwrap());
        h.insert("ratelimit-remaining", "3".parse().unwrap());
        let reset = now_unix().as_secs() + 1;
        h.insert("ratelimit-reset", reset.to_string().parse().unwrap());
        pacer.observe(&h);
        // Alone, a poll may take the reserve.
        pacer
            .take_turn(Deadline::after(Duration::from_secs(5)), Class::Poll)
            .await
            .unwrap();
        // With a call waiting for its turn, it may not.
        let waiting = Waiting::new(&pacer);
        let err = pacer
            .take_turn(Deadline::after(Duration::from_millis(120)), Class::Poll)
            .await
            .unwrap_err();
        assert!(matches!(err, CloudError::RateLimited { .. }), "{err:?}");
        drop(waiting);
        pacer
            .take_turn(Deadline::after(Duration::from_secs(5)), Class::Poll)
            .await
            .unwrap();
    }
}
