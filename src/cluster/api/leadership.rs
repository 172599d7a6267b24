//! Whether this master may act as the controllers' leader right now: the fence every
//! in-process controller write passes (`crate::cluster::controllers::client::LocalApi`).
//!
//! Without an election (one master on SQLite) it always holds. With one, it holds only until
//! the instant the elector last set: the start of its last successful renewal plus the renew
//! deadline, which is shorter than the lease another master waits out before taking over. The
//! clock is monotonic and keeps running while the process is stopped, so a leader resumed
//! after a long pause (SIGSTOP, a VM freeze) finds its fence closed before any controller
//! can write, even before its elector runs.

use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

/// The `coordination.k8s.io/v1` Lease in [`LEASE_NAMESPACE`] the masters elect with.
pub const LEASE_NAME: &str = "berth-controllers";
pub const LEASE_NAMESPACE: &str = "kube-system";

#[derive(Debug, Default)]
pub struct Leadership {
    elected: AtomicBool,
    until: Mutex<Option<Instant>>,
}

impl Leadership {
    /// Controllers run only while an elector says this master leads.
    pub fn use_election(&self) {
        self.elected.store(true, Ordering::SeqCst);
    }

    /// Whether an election decides who runs the controllers.
    pub fn is_elected(&self) -> bool {
        self.elected.load(Ordering::SeqCst)
    }

    /// This master leads until `until` unless renewed.
    pub fn hold_until(&self, until: Instant) {
        *self.until.lock().expect("leadership lock") = Some(until);
    }

    /// This master does not lead.
    pub fn release(&self) {
        *self.until.lock().expect("leadership lock") = None;
    }

    /// Whether controllers may write now.
    pub fn holds(&self) -> bool {
        if !self.is_elected() {
            return true;
        }
        self.until
            .lock()
            .expect("leadership lock")
            .is_some_and(|until| Instant::now() < until)
    }

    /// The `leader_election_master_status` gauge: 1 leading, 0 not; `None` without election.
    pub fn gauge(&self) -> Option<u8> {
        self.is_elected().then(|| u8::from(self.holds()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn the_fence_closes_at_the_deadline_and_always_holds_without_election() {
        let l = Leadership::default();
        assert!(l.holds() && l.gauge().is_none());
        l.use_election();
        assert!(!l.holds(), "an elected master starts as a follower");
        l.hold_until(Instant::now() + Duration::from_secs(60));
        assert!(l.holds());
        assert_eq!(l.gauge(), Some(1));
        l.hold_until(Instant::now() - Duration::from_millis(1));
        assert!(!l.holds(), "past the deadline the fence is closed");
        l.hold_until(Instant::now() + Duration::from_secs(60));
        l.release();
        assert_eq!(l.gauge(), Some(0));
    }
}
