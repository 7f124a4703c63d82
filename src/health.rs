//! What `/readyz` reports: is this replica leading, have its caches listed
//! everything once, and are its watches working right now.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

/// A watch that failed this recently still counts as failing. Retries come at
/// most [`crate::controller::WATCH_BACKOFF_MAX`] apart, so a watch that is still
/// broken fails again well within this window, and one that recovered (which a
/// resumed watch does silently) is trusted again after it.
pub const FAILING_FOR: Duration = Duration::from_secs(15);

#[derive(Debug, Default)]
pub struct Health {
    leading: AtomicBool,
    watches: Mutex<BTreeMap<&'static str, WatchState>>,
}

#[derive(Debug, Default, Clone)]
struct WatchState {
    listed: bool,
    last_error: Option<(Instant, String)>,
}

/// The answer `/readyz` gives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Readiness {
    /// Waiting for the lease; ready to take over, nothing to serve yet.
    Standby,
    /// Leading, caches still filling: not ready.
    Syncing,
    /// Leading, but a watch fails: the operator cannot see changes. Not ready.
    Blind(String),
    /// Leading with filled caches and working watches: controllers are running.
    Leading,
}

impl Health {
    fn watches(&self) -> std::sync::MutexGuard<'_, BTreeMap<&'static str, WatchState>> {
        self.watches.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn set_leading(&self, leading: bool) {
        self.leading.store(leading, Ordering::Release);
        if !leading {
            self.watches().clear();
        }
    }

    /// Registers a watch that must list once before the replica is ready.
    pub fn expect(&self, watch: &'static str) {
        self.watches().entry(watch).or_default();
    }

    /// The watch delivered its complete list.
    pub fn listed(&self, watch: &'static str) {
        let mut watches = self.watches();
        let state = watches.entry(watch).or_default();
        state.listed = true;
        state.last_error = None;
    }

    /// The watch delivered an event: it works.
    pub fn working(&self, watch: &'static str) {
        if let Some(state) = self.watches().get_mut(watch) {
            state.last_error = None;
        }
    }

    /// The watch failed. Returns whether it was working before, so the caller
    /// logs once per outage rather than once per retry.
    pub fn failed(&self, watch: &'static str, error: String) -> bool {
        let mut watches = self.watches();
        let state = watches.entry(watch).or_default();
        let was_working = state.last_error.as_ref().is_none_or(|(at, _)| at.elapsed() >= FAILING_FOR);
        state.last_error = Some((Instant::now(), error));
        was_working
    }

    /// Watches that failed within [`FAILING_FOR`], with their last error.
    pub fn failing(&self) -> Vec<(&'static str, String)> {
        let watches = self.watches();
        let failing = watches.iter().filter_map(|(name, s)| {
            let (at, error) = s.last_error.as_ref()?;
            (at.elapsed() < FAILING_FOR).then(|| (*name, error.clone()))
        });
        failing.collect()
    }

    /// Whether every registered watch has listed once.
    pub fn all_listed(&self) -> bool {
        let watches = self.watches();
        !watches.is_empty() && watches.values().all(|s| s.listed)
    }

    pub fn readiness(&self) -> Readiness {
        if !self.leading.load(Ordering::Acquire) {
            return Readiness::Standby;
        }
        let failing = self.failing();
        if let Some((name, error)) = failing.first() {
            return Readiness::Blind(format!("cannot watch {name}: {error}"));
        }
        if self.all_listed() { Readiness::Leading } else { Readiness::Syncing }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_leader_is_ready_only_once_every_watch_listed_and_losing_the_lease_resets_it() {
        let h = Health::default();
        assert_eq!(h.readiness(), Readiness::Standby);
        h.set_leading(true);
        h.expect("applications");
        h.expect("groups");
        assert_eq!(h.readiness(), Readiness::Syncing);
        h.listed("applications");
        assert_eq!(h.readiness(), Readiness::Syncing);
        h.listed("groups");
        assert_eq!(h.readiness(), Readiness::Leading);
        h.set_leading(false);
        h.set_leading(true);
        h.expect("applications");
        assert_eq!(h.readiness(), Readiness::Syncing);
    }

    #[test]
    fn a_failing_watch_makes_the_replica_blind_until_it_works_again() {
        let h = Health::default();
        h.set_leading(true);
        h.expect("applications");
        h.listed("applications");
        assert!(h.failed("applications", "connection refused".into()), "first failure of an outage");
        assert!(!h.failed("applications", "connection refused".into()), "repeats are not news");
        assert_eq!(h.readiness(), Readiness::Blind("cannot watch applications: connection refused".into()));
        h.working("applications");
        assert_eq!(h.readiness(), Readiness::Leading);
    }
}
