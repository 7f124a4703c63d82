//! What `/readyz` reports: is this replica leading, and are its caches filled.

use std::sync::atomic::{AtomicBool, Ordering};

#[derive(Debug, Default)]
pub struct Health {
    leading: AtomicBool,
    synced: AtomicBool,
}

/// The answer `/readyz` gives, with the word shown to a person.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Readiness {
    /// Waiting for the lease; ready to take over, nothing to serve yet.
    Standby,
    /// Leading, caches still filling: not ready.
    Syncing,
    /// Leading with filled caches: controllers are running.
    Leading,
}

impl Health {
    pub fn set_leading(&self, leading: bool) {
        self.leading.store(leading, Ordering::Release);
        if !leading {
            self.synced.store(false, Ordering::Release);
        }
    }

    pub fn set_synced(&self) {
        self.synced.store(true, Ordering::Release);
    }

    pub fn readiness(&self) -> Readiness {
        match (self.leading.load(Ordering::Acquire), self.synced.load(Ordering::Acquire)) {
            (false, _) => Readiness::Standby,
            (true, false) => Readiness::Syncing,
            (true, true) => Readiness::Leading,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_leader_is_ready_only_once_synced_and_losing_the_lease_resets_it() {
        let h = Health::default();
        assert_eq!(h.readiness(), Readiness::Standby);
        h.set_leading(true);
        assert_eq!(h.readiness(), Readiness::Syncing);
        h.set_synced();
        assert_eq!(h.readiness(), Readiness::Leading);
        h.set_leading(false);
        h.set_leading(true);
        assert_eq!(h.readiness(), Readiness::Syncing);
    }
}
