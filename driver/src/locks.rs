//! Per-volume operation locks: a second operation on a volume that already has one in
//! flight gets ABORTED at once, as kubernetes-csi drivers do, and the first is not disturbed.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};

/// The set of keys (volume ids, volume names, snapshot names) with an operation in flight.
#[derive(Debug, Default, Clone)]
pub struct OperationLocks {
    held: Arc<Mutex<HashSet<String>>>,
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

    /// Take `key`, or fail with ABORTED naming it when another operation holds it.
    #[allow(clippy::result_large_err)]
    pub fn try_lock(&self, key: &str) -> Result<OperationGuard, tonic::Status> {
        let mut held = self.held.lock().unwrap_or_else(|e| e.into_inner());
        if !held.insert(key.to_string()) {
            return Err(tonic::Status::aborted(format!(
                "an operation on {key} is already in progress; retry later"
            )));
        }
        Ok(OperationGuard {
            held: self.held.clone(),
            key: key.to_string(),
        })
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

    #[test]
    fn second_lock_on_a_key_is_aborted_until_the_first_is_dropped() {
        let locks = OperationLocks::new();
        let first = locks.try_lock("vol-1").unwrap();
        let err = locks.try_lock("vol-1").unwrap_err();
        assert_eq!(err.code(), tonic::Code::Aborted);
        assert!(err.message().contains("vol-1"));
        let _other = locks.try_lock("vol-2").unwrap();
        drop(first);
        assert!(locks.try_lock("vol-1").is_ok());
    }
}
