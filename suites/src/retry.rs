//! The one CO retry policy: which answers a CO meets by sending the same call again, and
//! how it paces the attempts. The setup steps ([`Ctx::as_co`](crate::Ctx::as_co)), the
//! beyond specs' simulated COs and `csi-sanity load` all retry through it.

use std::time::Duration;

use tokio::time::Instant;
use tonic::Code;

/// Codes after which every CO tries again: the call timed out or was cancelled, the
/// driver was unreachable, or it said an operation on the volume is still pending.
pub const TRANSIENT: &[Code] = &[
    Code::Aborted,
    Code::DeadlineExceeded,
    Code::Cancelled,
    Code::Unavailable,
];

/// The codes Kubernetes' sidecars treat as "not final" (external-provisioner's
/// `isFinalError`): [`TRANSIENT`] and RESOURCE_EXHAUSTED, as the external-attacher retries
/// a failed attach until the node has room.
pub const NOT_FINAL: &[Code] = &[
    Code::Cancelled,
    Code::DeadlineExceeded,
    Code::Unavailable,
    Code::ResourceExhausted,
    Code::Aborted,
];

/// The codes a CO setting up a workload retries: those of [`NOT_FINAL`] the driver
/// answers (a call cut off on our side, CANCELLED, is not). RESOURCE_EXHAUSTED is among
/// them because the external-attacher retries a failed attach until the node has room,
/// which is what parallel specs and load's lifecycles sharing one node need.
pub const RETRIED_BY_A_CO: &[Code] = &[
    Code::Aborted,
    Code::Unavailable,
    Code::DeadlineExceeded,
    Code::ResourceExhausted,
];

/// Whether a CO setting up a workload sends a call that failed with `code` again.
pub fn retried_by_a_co(code: Code) -> bool {
    RETRIED_BY_A_CO.contains(&code)
}

/// How a CO paces its attempts at one call: a pause that starts at `first` and doubles
/// up to `max`, for at most `budget` from the first attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Backoff {
    pub first: Duration,
    pub max: Duration,
    pub budget: Duration,
}

impl Backoff {
    /// Start pacing the attempts at one call, now.
    pub fn start(self) -> Pacing {
        Pacing {
            started: Instant::now(),
            pause: self.first,
            backoff: self,
        }
    }
}

/// The attempts at one call so far, under a [`Backoff`].
#[derive(Debug)]
pub struct Pacing {
    started: Instant,
    pause: Duration,
    backoff: Backoff,
}

impl Pacing {
    /// Wait before the next attempt and say true; or, when the wait would end after the
    /// budget, say false at once: the call is given up on.
    pub async fn wait(&mut self) -> bool {
        if self.started.elapsed() + self.pause > self.backoff.budget {
            return false;
        }
        tokio::time::sleep(self.pause).await;
        self.pause = (self.pause * 2).min(self.backoff.max);
        true
    }

    /// Time since the first attempt.
    pub fn elapsed(&self) -> Duration {
        self.started.elapsed()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_set_a_co_retries_is_within_what_sidecars_call_not_final() {
        for code in TRANSIENT.iter().chain(RETRIED_BY_A_CO) {
            assert!(NOT_FINAL.contains(code), "{code:?}");
        }
        assert!(retried_by_a_co(Code::ResourceExhausted));
        assert!(!retried_by_a_co(Code::Cancelled));
        assert!(!retried_by_a_co(Code::NotFound));
    }

    #[tokio::test(start_paused = true)]
    async fn pauses_double_up_to_the_max_and_stop_at_the_budget() {
        let mut pacing = Backoff {
            first: Duration::from_millis(100),
            max: Duration::from_millis(400),
            budget: Duration::from_secs(1),
        }
        .start();
        let mut waits = 0;
        while pacing.wait().await {
            waits += 1;
        }
        // 100 + 200 + 400 = 700 ms; a fourth wait of 400 ms would end past 1 s.
        assert_eq!(waits, 3);
    }
}
