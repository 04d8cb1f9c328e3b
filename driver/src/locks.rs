//! Per-volume operation locks: a second operation on a volume that already has one in
//! flight gets ABORTED at once, as kubernetes-csi drivers do, and the first is not disturbed.
//!
//! Turns at a droplet: the cloud runs one attach or detach at a time per droplet and
//! refuses a second ("pending event"), so operations on different volumes of one droplet
//! queue here, first come first served, each within its request's deadline. ABORTED
//! comes only when the turn would come too late to finish in time.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::cloud::Deadline;

/// The set of keys (volume ids, volume names, snapshot names) with an operation in flight,
/// and the queues of the droplets.
#[derive(Debug, Default, Clone)]
pub struct OperationLocks {
    held: Arc<Mutex<HashSet<String>>>,
    droplets: Arc<Mutex<HashMap<u64, Arc<tokio::sync::Mutex<()>>>>>,
}

/// Why an operation may not go ahead now; the CO retries later.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LockError {
    /// Another operation holds the key.
    #[error("an operation on {key} is already in progress; retry later")]
    Busy { key: String },
    /// The droplet's turn would come too late to finish before the deadline.
    #[error(
        "node {droplet} is busy with other volumes' attaches and detaches, and this                  \
         one's turn would not come in time; retry later"
    )]
    TurnTooLate { droplet: u64 },
}

/// Held while an attach or detach on a droplet runs; the next in line goes when dropped.
#[derive(Debug)]
pub struct DropletTurn {
    _turn: tokio::sync::OwnedMutexGuard<()>,
}

/// Held while an operation runs; releases its key when dropped, even on panic or cancel.
#[derive(Debug)]
pub struct OperationGuard {
    held: Arc<Mutex<HashSet<String>>>,
    key: String,
}

impl OperationLocks {
    pub fn new() -> Self {
        Self::default()
    }

    /// Take `key`, or fail naming it when another operation holds it.
    pub fn take(&self, key: &str) -> Result<OperationGuard, LockError> {
        let mut held = self.held.lock().unwrap_or_else(|e| e.into_inner());
        if !held.insert(key.to_string()) {
            return Err(LockError::Busy {
                key: key.to_string(),
            });
        }
        Ok(OperationGuard {
            held: self.held.clone(),
            key: key.to_string(),
        })
    }

    /// Wait for the droplet's turn, in arrival order. `needs` is how long the operation
    /// is expected to take once it has its turn: a turn that would leave less than that
    /// before the deadline is given up for ABORTED, so the CO retries later.
    pub async fn droplet_turn(
        &self,
        droplet: u64,
        deadline: Deadline,
        needs: Duration,
    ) -> Result<DropletTurn, LockError> {
        let queue = self
            .droplets
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .entry(droplet)
            .or_default()
            .clone();
        if let Ok(turn) = queue.clone().try_lock_owned() {
            return Ok(DropletTurn { _turn: turn });
        }
        let latest = deadline
            .instant()
            .checked_sub(needs)
            .unwrap_or_else(tokio::time::Instant::now);
        match tokio::time::timeout_at(latest, queue.lock_owned()).await {
            Ok(turn) => Ok(DropletTurn { _turn: turn }),
            Err(_) => Err(LockError::TurnTooLate { droplet }),
        }
    }

    /// How many keys are held now.
    pub fn in_flight(&self) -> usize {
        self.held.lock().unwrap_or_else(|e| e.into_inner()).len()
    }
}

impl Drop for OperationGuard {
    fn drop(&mut self) {
        let mut held = self.held.lock().unwrap_or_else(|e| e.into_inner());
        held.remove(&self.key);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn droplet_turns_queue_in_order_and_give_up_only_when_too_late() {
        let locks = OperationLocks::new();
        let long = Deadline::after(Duration::from_secs(10));
        let first = locks.droplet_turn(1, long, Duration::ZERO).await.unwrap();
        // Another droplet is not held up.
        let _other = locks.droplet_turn(2, long, Duration::ZERO).await.unwrap();
        // The second on droplet 1 waits for the first...
        let waiter = {
            let locks = locks.clone();
            tokio::spawn(async move { locks.droplet_turn(1, long, Duration::ZERO).await })
        };
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert!(!waiter.is_finished());
        // ...and one that needs more time than its deadline leaves is ABORTED.
        let short = Deadline::after(Duration::from_millis(50));
        let err = tonic::Status::from(
            locks
                .droplet_turn(1, short, Duration::from_millis(40))
                .await
                .unwrap_err(),
        );
        assert_eq!(err.code(), tonic::Code::Aborted);
        assert_eq!(
            err.message(),
            "node 1 is busy with other volumes' attaches and detaches, and this                  \
             one's turn would not come in time; retry later"
        );
        drop(first);
        assert!(waiter.await.unwrap().is_ok());
    }

    #[test]
    fn second_lock_on_a_key_is_aborted_until_the_first_is_dropped() {
        let locks = OperationLocks::new();
        let first = locks.take("vol-1").unwrap();
        let err = tonic::Status::from(locks.take("vol-1").unwrap_err());
        assert_eq!(err.code(), tonic::Code::Aborted);
        assert_eq!(
            err.message(),
            "an operation on vol-1 is already in progress; retry later"
        );
        let _other = locks.take("vol-2").unwrap();
        drop(first);
        assert!(locks.take("vol-1").is_ok());
    }
}
