//! Gives the memory a burst of reconciles freed back to the operating system.
//!
//! glibc's malloc keeps freed memory in its heaps for reuse and returns it only
//! when the free space is at the top of a heap, which after a cold start over
//! thousands of objects it rarely is: the watch buffers, request bodies and
//! reconcile temporaries of the burst stay resident although nothing uses them.
//! `malloc_trim` releases those free pages. It is called once each time the
//! operator goes quiet after work, never while reconciles run, so it costs
//! nothing on the hot path. The gateway does the same after a burst of
//! requests (a thousand closed streams leave tens of MiB free in the heaps). Other allocators (musl's, in the image) release
//! memory as they free it; there this task does nothing.

use std::sync::Arc;
use std::time::Duration;

use crate::controller::{APPLICATION, GROUP, ORGANIZATION};
use crate::metrics::Metrics;

/// How long the operator must go without a reconcile to count as quiet.
pub const QUIET: Duration = Duration::from_secs(2);

/// Whether to trim now: some reconciles ran since the last trim, none in the last period.
pub fn quiet_after_work(reconciles_before: u64, reconciles_now: u64, worked_since_trim: bool) -> bool {
    worked_since_trim && reconciles_before == reconciles_now
}

/// Runs until the process ends: trims once after every burst of reconciles.
pub async fn trim_when_quiet(metrics: Arc<Metrics>) {
    trim_after_bursts(move || [APPLICATION, GROUP, ORGANIZATION].iter().map(|c| metrics.reconciles_of(c)).sum()).await
}

/// Runs until the process ends: trims once each time `activity` (a count that
/// only grows while the process works) stops growing for [`QUIET`].
pub async fn trim_after_bursts(activity: impl Fn() -> u64) {
    let mut before = activity();
    let mut worked = false;
    let mut ticks = tokio::time::interval(QUIET);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticks.tick().await;
        let now = activity();
        if quiet_after_work(before, now, worked) {
            // A walk over the heaps' free lists: milliseconds, off the async workers.
            let _ = tokio::task::spawn_blocking(trim).await;
            worked = false;
        } else if now != before {
            worked = true;
        }
        before = now;
    }
}

#[cfg(all(target_os = "linux", target_env = "gnu"))]
fn trim() {
    // SAFETY: malloc_trim only walks glibc's own heaps; it takes no pointers.
    let released = unsafe { libc::malloc_trim(0) };
    tracing::debug!(released = released != 0, "returned free heap memory to the operating system");
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn trim() {}

#[cfg(test)]
mod tests {
    use super::quiet_after_work;

    #[test]
    fn trims_once_when_work_stops() {
        assert!(!quiet_after_work(5, 9, false), "work is running");
        assert!(!quiet_after_work(9, 12, true), "still running");
        assert!(quiet_after_work(12, 12, true), "went quiet after work");
        assert!(!quiet_after_work(12, 12, false), "already trimmed, nothing ran since");
    }
}
