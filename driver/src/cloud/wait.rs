//! Waiting for a cloud action: the one function every caller uses.
//!
//! It polls with an interval that grows with the time already waited (from a few
//! milliseconds up to about a second, see [`PollPolicy`]), stops at the request's deadline
//! and leaves the action running in the cloud, so a retried call can find it and resume.
//! An `errored` action is a failure with the cloud's reason, never polled again.

use std::time::Duration;

use tokio::time::Instant;

use super::{Action, ActionStatus, CloudApi, CloudError, Deadline, PollPolicy};

/// Counts one action as waited on while it lives, even when the wait is cancelled.
struct InFlight;

impl InFlight {
    fn start() -> InFlight {
        crate::metrics::actions_in_flight_add(1);
        InFlight
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        crate::metrics::actions_in_flight_add(-1);
    }
}

/// Wait until `action` is completed (`Ok` with its final state), errored
/// ([`CloudError::ActionErrored`]) or the deadline passes ([`CloudError::Timeout`]; the
/// action keeps running in the cloud).
pub async fn wait_for_action(
    cloud: &dyn CloudApi,
    action: Action,
    deadline: Deadline,
) -> Result<Action, CloudError> {
    let _in_flight = InFlight::start();
    let policy = cloud.poll_policy();
    let started = Instant::now();
    let mut action = action;
    loop {
        match action.status {
            ActionStatus::Completed => return Ok(action),
            ActionStatus::Errored => {
                return Err(CloudError::ActionErrored {
                    reason: action
                        .error
                        .clone()
                        .unwrap_or_else(|| "the cloud gave no reason".to_string()),
                    action_id: action.id,
                    kind: action.kind.as_do_type().to_string(),
                    volume_id: action.volume_id,
                })
            }
            ActionStatus::InProgress => {}
        }
        let interval = poll_interval(policy, started.elapsed());
        if Instant::now() + interval > deadline.instant() {
            // Sleep out what is left, then look one last time.
            tokio::time::sleep_until(deadline.instant()).await;
            match cloud
                .get_action(&action.volume_id, action.id, deadline)
                .await
            {
                Ok(a) if a.status != ActionStatus::InProgress => {
                    action = a;
                    continue;
                }
                _ => return Err(still_running(&action)),
            }
        }
        tokio::time::sleep(interval).await;
        action = match cloud
            .get_action(&action.volume_id, action.id, deadline)
            .await
        {
            Ok(a) => a,
            Err(CloudError::Timeout { .. }) => return Err(still_running(&action)),
            Err(e) => return Err(e),
        };
    }
}

/// The deadline passed while `action` was still in progress.
fn still_running(action: &Action) -> CloudError {
    CloudError::Timeout {
        what: format!(
            "{} action {} on volume {} is still in progress; it continues in the cloud and a \
             retry resumes it",
            action.kind.as_do_type(),
            action.id,
            action.volume_id
        ),
    }
}

/// The next poll interval after having waited `waited`.
pub fn poll_interval(policy: PollPolicy, waited: Duration) -> Duration {
    waited.mul_f64(policy.share).clamp(policy.min, policy.max)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn polling_starts_fast_grows_with_the_wait_and_caps_near_a_second() {
        let p = PollPolicy::default();
        assert_eq!(poll_interval(p, Duration::ZERO), p.min);
        assert!(poll_interval(p, Duration::from_millis(200)) <= Duration::from_millis(20));
        assert!(poll_interval(p, Duration::from_secs(1)) <= Duration::from_millis(100));
        assert_eq!(poll_interval(p, Duration::from_secs(600)), p.max);
        assert!(p.max <= Duration::from_secs(1));
    }
}
