//! The bytes the gateway holds for requests in flight, bounded as a whole: request
//! bodies are read whole before they are forwarded (the model, the stream flag and
//! the output cap are in them, and a limit reserves on their size), so without a
//! bound a few tenants sending 8 MiB bodies at once could take a replica past its
//! memory limit and kill every other tenant's streams with it.
//!
//! A request body of declared length takes its bytes from the budget before any of
//! it is read (a chunked one as it arrives) and gives them back when the body is no
//! longer held (sent on, or, for a stream, when the stream ends: its body is kept to
//! estimate its prompt if it is cut). When the budget cannot take a body, the
//! request is refused with 503 `gateway_busy` and `Retry-After`, before (more of) it
//! is read. Answers are never refused part way (the
//! provider bills them): what the meter holds of them (a few small values per
//! answer) is taken unconditionally, so it counts against new request bodies.
//!
//! The last [`SMALL_SHARE`] of the budget is kept for bodies of at most
//! [`SMALL_BODY`] bytes: a tenant filling the budget with large bodies leaves room
//! for everyone's ordinary requests.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::Gauge;

/// Bodies up to this size may use the share of the budget kept for small ones.
pub const SMALL_BODY: usize = 64 * 1024;
/// The share of the budget (1/n) only small bodies may use.
pub const SMALL_SHARE: usize = 8;

/// The budget's metrics (registered in [`super::metrics::BudgetMetrics`]).
#[derive(Clone, Debug, Default)]
pub struct Gauges {
    /// Bytes held now.
    pub held: Gauge,
    /// Requests refused because the budget was exhausted.
    pub refused: Counter,
}

#[derive(Debug)]
pub struct Budget {
    capacity: usize,
    held: AtomicUsize,
    pub gauges: Gauges,
}

impl Budget {
    pub fn new(capacity: usize) -> Arc<Budget> {
        Arc::new(Budget { capacity, held: AtomicUsize::new(0), gauges: Gauges::default() })
    }

    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// Bytes held now.
    pub fn held(&self) -> usize {
        self.held.load(Ordering::Relaxed)
    }

    /// An empty lease, to grow as a body arrives.
    pub fn lease(self: &Arc<Self>) -> Lease {
        Lease { budget: self.clone(), bytes: 0 }
    }

    fn add(&self, bytes: usize) {
        self.held.fetch_add(bytes, Ordering::Relaxed);
        self.gauges.held.inc_by(bytes as i64);
    }

    fn sub(&self, bytes: usize) {
        self.held.fetch_sub(bytes, Ordering::Relaxed);
        self.gauges.held.dec_by(bytes as i64);
    }

    /// Counts a refusal (the caller answers 503).
    pub fn refused(&self) {
        self.gauges.refused.inc();
    }
}

/// Whether `more` bytes can be added to a body holding `own` when `held` bytes are
/// held in all (`own` included). Pure.
pub fn admits(capacity: usize, held: usize, own: usize, more: usize) -> bool {
    let size = own.saturating_add(more);
    let bound = match size <= SMALL_BODY {
        true => capacity,
        false => capacity - capacity / SMALL_SHARE,
    };
    held.saturating_add(more) <= bound
}

/// Bytes taken from the budget, given back when dropped.
#[derive(Debug)]
pub struct Lease {
    budget: Arc<Budget>,
    bytes: usize,
}

impl Lease {
    pub fn bytes(&self) -> usize {
        self.bytes
    }

    /// Takes `more` bytes for a request body; false (nothing taken) when the budget
    /// cannot.
    pub fn try_grow(&mut self, more: usize) -> bool {
        let budget = &self.budget;
        let taken = budget.held.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |held| {
            admits(budget.capacity, held, self.bytes, more).then(|| held + more)
        });
        if taken.is_err() {
            return false;
        }
        budget.gauges.held.inc_by(more as i64);
        self.bytes += more;
        true
    }

    /// Holds exactly `bytes`, whatever the budget has left (what an answer's meter keeps).
    pub fn set(&mut self, bytes: usize) {
        match bytes.cmp(&self.bytes) {
            std::cmp::Ordering::Greater => self.budget.add(bytes - self.bytes),
            std::cmp::Ordering::Less => self.budget.sub(self.bytes - bytes),
            std::cmp::Ordering::Equal => {}
        }
        self.bytes = bytes;
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        self.budget.sub(self.bytes);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn large_bodies_leave_the_small_share_and_leases_give_back_on_drop() {
        let budget = Budget::new(8 << 20);
        let mut big = budget.lease();
        assert!(big.try_grow(3 << 20));
        assert!(big.try_grow(4 << 20), "up to 7/8 for large bodies");
        assert!(!big.try_grow(1), "the last eighth is for small bodies");
        assert!(admits(budget.capacity(), budget.held(), 0, SMALL_BODY));
        assert!(!admits(budget.capacity(), budget.held(), 0, SMALL_BODY + 1));
        let mut small = budget.lease();
        assert!(small.try_grow(SMALL_BODY));
        assert_eq!(budget.held(), (7 << 20) + SMALL_BODY);
        let mut second = budget.lease();
        assert!(second.try_grow(1000));
        assert!(!second.try_grow(SMALL_BODY), "a body past the small size is a large one");
        drop(big);
        assert_eq!(budget.held(), SMALL_BODY + 1000);
        assert_eq!(budget.gauges.held.get(), (SMALL_BODY + 1000) as i64);
        // An answer's meter is never refused; it only shrinks the room left.
        let mut answer = budget.lease();
        answer.set(8 << 20);
        assert!(!second.try_grow(1));
        answer.set(10);
        assert!(second.try_grow(1));
        drop((small, second, answer));
        assert_eq!((budget.held(), budget.gauges.held.get()), (0, 0));
    }

    #[test]
    fn admission_is_exact_at_the_bounds() {
        assert!(admits(8 << 20, 0, 0, 7 << 20) && !admits(8 << 20, 0, 0, (7 << 20) + 1));
        assert!(admits(800, 0, 0, 800) && !admits(800, 0, 0, 801), "small bodies may use all of it");
        assert!(admits(800, 799, 0, 1) && !admits(800, 800, 0, 1));
        assert!(!admits(800, usize::MAX, 0, 1), "no overflow");
    }
}
