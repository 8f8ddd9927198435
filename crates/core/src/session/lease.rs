//! The lease under which a node in a cluster serves its local-state
//! sessions. Its heartbeat renews it: a beat sent at `t` that Redis took
//! keeps the node's membership entry live until Redis's `now + MEMBER_TTL`,
//! which is later than `t + MEMBER_TTL`; the lease runs to `t + LEASE`, a
//! margin earlier. So a node stops serving (and committing) its local
//! sessions before the others can see it gone and take a session over —
//! whether it died, froze or lost Redis.
//!
//! Each lapse starts a new generation: a session confirmed under an older
//! one asks the directory again before it is served.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// How long a beat keeps the lease: the membership TTL less a margin for
/// the beat's trip and for clocks running at slightly different rates.
pub const LEASE: Duration = Duration::from_secs(2);

/// This node's lease on its local sessions.
#[derive(Debug)]
pub struct Lease {
    origin: Instant,
    /// Held until this many ms after `origin` (0: never held).
    until_ms: AtomicU64,
    generation: AtomicU64,
}

impl Default for Lease {
    fn default() -> Self {
        Self {
            origin: Instant::now(),
            until_ms: AtomicU64::new(0),
            generation: AtomicU64::new(1),
        }
    }
}

impl Lease {
    fn ms(&self, at: Instant) -> u64 {
        at.saturating_duration_since(self.origin).as_millis() as u64
    }

    /// A beat sent at `sent` was taken by Redis.
    pub fn renew(&self, sent: Instant) {
        let now = self.ms(Instant::now());
        if self.until_ms.load(Ordering::Acquire) <= now {
            // Lapsed (or never held): what was confirmed before is void.
            self.generation.fetch_add(1, Ordering::AcqRel);
        }
        let until = self.ms(sent + LEASE);
        self.until_ms.fetch_max(until, Ordering::AcqRel);
    }

    /// The generation, while the lease holds.
    pub fn current(&self) -> Option<u64> {
        let until = self.until_ms.load(Ordering::Acquire);
        (self.ms(Instant::now()) < until).then(|| self.generation.load(Ordering::Acquire))
    }

    /// How long ago it lapsed (zero while it holds).
    pub fn lapsed_for(&self) -> Duration {
        let until = self.until_ms.load(Ordering::Acquire);
        Duration::from_millis(self.ms(Instant::now()).saturating_sub(until))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_lease_holds_after_a_beat_and_a_lapse_starts_a_new_generation() {
        let lease = Lease::default();
        assert_eq!(lease.current(), None, "never beaten: not held");
        lease.renew(Instant::now());
        let first = lease.current().expect("held after a beat");
        lease.renew(Instant::now());
        assert_eq!(
            lease.current(),
            Some(first),
            "renewed in time: same generation"
        );
        // A beat sent long ago (a slow Redis) does not hold it.
        let old = Instant::now();
        std::thread::sleep(LEASE + Duration::from_millis(50));
        assert_eq!(lease.current(), None, "lapsed");
        assert!(lease.lapsed_for() >= Duration::from_millis(40));
        lease.renew(old);
        assert_eq!(lease.current(), None, "a stale beat does not renew it");
        lease.renew(Instant::now());
        let second = lease.current().expect("held again");
        assert!(second > first, "a lapse voids earlier confirmations");
    }
}
