//! Fault injection for crash-safety tests.
//!
//! With `PAYI_CRASH_AT=<point>` in its environment the process aborts (as abruptly
//! as `kill -9`: no destructors, no Lease release) the first time a key change
//! reaches `<point>`. Only builds with the `fault-injection` feature (which the
//! test suite turns on) read the variable; release builds compile it away.

/// Before the Secret holding a new key is written.
pub const BEFORE_SECRET_WRITE: &str = "before-secret-write";
/// After the Secret is written, before status records it.
pub const AFTER_SECRET_WRITE: &str = "after-secret-write";
/// After status is written, before Events are published.
pub const AFTER_STATUS_WRITE: &str = "after-status-write";

#[cfg(not(feature = "fault-injection"))]
#[inline(always)]
pub fn crash_point(_point: &str) {}

#[cfg(feature = "fault-injection")]
pub fn crash_point(point: &str) {
    use std::sync::OnceLock;
    static CRASH_AT: OnceLock<Option<String>> = OnceLock::new();
    let armed = CRASH_AT.get_or_init(|| std::env::var("PAYI_CRASH_AT").ok());
    if armed.as_deref() == Some(point) {
        eprintln!("payi-operator: PAYI_CRASH_AT={point}: aborting");
        std::process::abort();
    }
}
