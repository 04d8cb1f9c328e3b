//! Runs that always end: a per-run breaker in front of every RPC a spec makes.
//!
//! - When one RPC has run out the whole per-call deadline (`--csi.timeout`) in
//!   [`TIMEOUTS_BEFORE_CUT_OFF`] calls, the run stops waiting on it: later calls of that RPC
//!   fail at once with a message that says so, unless `--csi.keep-waiting`.
//! - When the endpoint is gone (the transport fails [`GONE_AFTER`] times in a row), every
//!   later call fails at once with "endpoint gone", instead of each waiting out a deadline.
//!
//! The runner puts each spec (and its cleanup) in the run's breaker with [`scope`]; the
//! [`crate::call!`] macro consults it. Outside a scope (a spec called directly from a
//! driver author's own test), calls go through untouched.

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tonic::{Code, Status};

/// How many calls of one RPC may run out the whole deadline before it is not called again.
pub const TIMEOUTS_BEFORE_CUT_OFF: u32 = 3;
/// How many transport failures in a row mean the endpoint is gone.
pub const GONE_AFTER: u32 = 3;

/// One run's view of which RPCs stopped answering.
#[derive(Debug)]
pub struct Breaker {
    rpc_timeout: Duration,
    keep_waiting: bool,
    state: Mutex<State>,
}

#[derive(Debug, Default)]
struct State {
    /// Per RPC: how many calls ran out the whole deadline.
    timeouts: BTreeMap<&'static str, u32>,
    /// Transport failures in a row, and the last one.
    unavailable_streak: u32,
    /// Calls in a row, of any RPC, that ran out the whole deadline: a driver that hangs
    /// everything is given up on after [`TIMEOUTS_BEFORE_CUT_OFF`] of them.
    silent_streak: u32,
    gone: Option<String>,
}

tokio::task_local! {
    static CURRENT: Arc<Breaker>;
}

impl Breaker {
    pub fn new(rpc_timeout: Duration, keep_waiting: bool) -> Arc<Breaker> {
        Arc::new(Breaker {
            rpc_timeout,
            keep_waiting,
            state: Mutex::new(State::default()),
        })
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Why `rpc` is not to be called, if it is not.
    fn refuse(&self, rpc: &str) -> Option<Status> {
        self.refusal(rpc).map(|mut s| {
            s.metadata_mut()
                .insert(REFUSED, tonic::metadata::MetadataValue::from_static("1"));
            s
        })
    }

    fn refusal(&self, rpc: &str) -> Option<Status> {
        let state = self.state();
        if let Some(why) = &state.gone {
            return Some(Status::unavailable(format!(
                "endpoint gone ({why}); {rpc} not called"
            )));
        }
        let n = state.timeouts.get(rpc).copied().unwrap_or(0);
        if !self.keep_waiting && n >= TIMEOUTS_BEFORE_CUT_OFF {
            return Some(Status::deadline_exceeded(self.cut_off_message(rpc, n)));
        }
        None
    }

    fn cut_off_message(&self, rpc: &str, n: u32) -> String {
        format!(
            "{rpc} has not answered within {:?} in {n} specs; not called again (--csi.keep-waiting keeps calling it)",
            self.rpc_timeout
        )
    }

    fn record<T>(&self, rpc: &'static str, started: Instant, result: &Result<T, Status>) {
        let mut state = self.state();
        match result {
            Err(s)
                if matches!(s.code(), Code::DeadlineExceeded | Code::Cancelled)
                    && started.elapsed() >= self.rpc_timeout.mul_f64(0.9) =>
            {
                *state.timeouts.entry(rpc).or_default() += 1;
                state.unavailable_streak = 0;
                state.silent_streak += 1;
                if state.silent_streak >= TIMEOUTS_BEFORE_CUT_OFF
                    && !self.keep_waiting
                    && state.gone.is_none()
                {
                    state.gone = Some(format!(
                        "no answer to {} calls in a row, each given {:?}",
                        state.silent_streak, self.rpc_timeout
                    ));
                }
            }
            Err(s) if s.code() == Code::Unavailable && is_transport_failure(s) => {
                state.silent_streak = 0;
                state.unavailable_streak += 1;
                if state.unavailable_streak >= GONE_AFTER && state.gone.is_none() {
                    state.gone = Some(format!("{rpc}: {}", s.message()));
                }
            }
            _ => {
                state.unavailable_streak = 0;
                state.silent_streak = 0;
            }
        }
    }

    /// The RPCs this run stopped calling, each with why, and the endpoint if it went.
    pub fn cut_off(&self) -> Vec<String> {
        let state = self.state();
        let mut out: Vec<String> = if self.keep_waiting {
            Vec::new()
        } else {
            state
                .timeouts
                .iter()
                .filter(|(_, n)| **n >= TIMEOUTS_BEFORE_CUT_OFF)
                .map(|(rpc, n)| self.cut_off_message(rpc, *n))
                .collect()
        };
        if let Some(why) = &state.gone {
            out.push(format!(
                "the endpoint is gone ({why}): later calls failed at once"
            ));
        }
        out
    }
}

/// Marks a status the breaker made up instead of calling the driver.
const REFUSED: &str = "x-csi-sanity-not-called";

/// Whether `status` is the breaker's, not the driver's: a retry loop stops at once.
pub fn was_refused(status: &Status) -> bool {
    status.metadata().contains_key(REFUSED)
}

/// Whether an UNAVAILABLE came from the connection rather than from the driver.
fn is_transport_failure(s: &Status) -> bool {
    let m = s.message().to_ascii_lowercase();
    m.contains("transport")
        || m.contains("connection refused")
        || m.contains("no such file")
        || m.contains("broken pipe")
        || m.contains("connection reset")
}

/// Run `f` (a spec and its cleanup) with `breaker` in front of its calls.
pub async fn scope<F: Future>(breaker: Arc<Breaker>, f: F) -> F::Output {
    CURRENT.scope(breaker, f).await
}

/// Before a call of `rpc`: the status to answer instead of calling, if any.
pub fn before(rpc: &'static str) -> Option<Status> {
    CURRENT.try_with(|b| b.refuse(rpc)).ok().flatten()
}

/// After a call of `rpc` that started at `started`.
pub fn after<T>(rpc: &'static str, started: Instant, result: &Result<T, Status>) {
    let _ = CURRENT.try_with(|b| b.record(rpc, started, result));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn an_rpc_that_runs_out_its_deadline_three_times_is_not_called_again() {
        let b = Breaker::new(Duration::from_millis(10), false);
        scope(b.clone(), async {
            let long_ago = Instant::now() - Duration::from_millis(20);
            for _ in 0..TIMEOUTS_BEFORE_CUT_OFF {
                assert!(before("CreateVolume").is_none());
                after::<()>(
                    "CreateVolume",
                    long_ago,
                    &Err(Status::deadline_exceeded("late")),
                );
                // Other RPCs still answer, so the endpoint is not given up on.
                after::<()>("Probe", Instant::now(), &Ok(()));
            }
            let refused = before("CreateVolume").expect("cut off");
            assert!(was_refused(&refused));
            assert!(refused
                .message()
                .contains("CreateVolume has not answered within 10ms in 3 specs"));
            // A short, deliberate deadline (a retry spec's) does not count.
            after::<()>(
                "DeleteVolume",
                Instant::now(),
                &Err(Status::deadline_exceeded("short")),
            );
            assert!(before("DeleteVolume").is_none());
        })
        .await;
        assert_eq!(b.cut_off().len(), 1);
        // Outside a scope nothing is refused.
        assert!(before("CreateVolume").is_none());
    }

    #[tokio::test]
    async fn an_endpoint_that_answers_nothing_is_given_up_on() {
        let b = Breaker::new(Duration::from_millis(10), false);
        scope(b.clone(), async {
            let long_ago = Instant::now() - Duration::from_millis(20);
            for rpc in ["CreateVolume", "ListVolumes", "NodeGetInfo"] {
                after::<()>(rpc, long_ago, &Err(Status::deadline_exceeded("late")));
            }
            let refused = before("DeleteVolume").expect("given up");
            assert!(
                refused.message().contains("no answer to 3 calls in a row"),
                "{refused:?}"
            );
        })
        .await;
        assert!(b.cut_off().iter().any(|c| c.contains("endpoint is gone")));
    }

    #[tokio::test]
    async fn keep_waiting_never_cuts_off_but_a_gone_endpoint_still_stops_calls() {
        let b = Breaker::new(Duration::from_millis(10), true);
        scope(b.clone(), async {
            let long_ago = Instant::now() - Duration::from_millis(20);
            for _ in 0..5 {
                after::<()>(
                    "CreateVolume",
                    long_ago,
                    &Err(Status::deadline_exceeded("late")),
                );
            }
            assert!(before("CreateVolume").is_none());
            for _ in 0..GONE_AFTER {
                after::<()>(
                    "Probe",
                    Instant::now(),
                    &Err(Status::unavailable("transport error: connection refused")),
                );
            }
            let refused = before("NodeGetInfo").expect("gone");
            assert!(
                refused.message().starts_with("endpoint gone"),
                "{refused:?}"
            );
        })
        .await;
    }
}
