//! How often the speaker acts on API changes.
//!
//! Acting on a change recomputes every address's eligibility and election from
//! scratch (linear in the addresses; see `benches/decision_scale.rs`), too much to do
//! once per API event while Services are created in bulk. So changes are coalesced:
//!
//! - A change after a quiet period is acted on at once: an isolated event costs no
//!   latency.
//! - After each recomputation the next one waits at least [`MIN_GAP`], and at least
//!   [`COST_FACTOR`] times what the last one cost, so recomputation never takes more
//!   than about a tenth of one core whatever the number of addresses; changes arriving
//!   meanwhile are acted on together when the wait ends.
//!
//! Only API-driven work is paced. The failover path (membership events, elections
//! over the live set) does not go through here.

use std::time::Duration;

use tokio::time::Instant;

/// The shortest time between two recomputations.
pub const MIN_GAP: Duration = Duration::from_millis(100);

/// After a recomputation that took `d`, the next waits at least `COST_FACTOR * d`.
pub const COST_FACTOR: u32 = 9;

/// When pending API changes may be acted on.
#[derive(Clone, Copy, Debug)]
pub struct Pace {
    /// Earliest time of the next recomputation.
    next: Instant,
    /// When pending changes will be acted on (`None`: nothing pending).
    due: Option<Instant>,
}

impl Pace {
    /// A pace that lets the first change through at once.
    pub fn new(now: Instant) -> Self {
        Self {
            next: now,
            due: None,
        }
    }

    /// A change arrived at `now`: when it will be acted on.
    pub fn changed(&mut self, now: Instant) -> Instant {
        *self.due.get_or_insert(self.next.max(now))
    }

    /// When pending changes are to be acted on, if any are.
    pub fn due(&self) -> Option<Instant> {
        self.due
    }

    /// The pending changes were acted on, ending at `now` and costing `cost`.
    pub fn done(&mut self, now: Instant, cost: Duration) {
        self.due = None;
        self.next = now + MIN_GAP.max(cost.saturating_mul(COST_FACTOR));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn a_change_after_a_quiet_period_goes_through_at_once() {
        let t0 = Instant::now();
        let mut p = Pace::new(t0);
        assert_eq!(p.due(), None);
        assert_eq!(p.changed(t0), t0);
        p.done(t0 + ms(2), ms(2));
        // Long after the last recomputation: no wait.
        let later = t0 + ms(500);
        assert_eq!(p.changed(later), later);
    }

    #[test]
    fn changes_during_the_gap_wait_for_its_end_together() {
        let t0 = Instant::now();
        let mut p = Pace::new(t0);
        p.changed(t0);
        p.done(t0 + ms(1), ms(1));
        let end = t0 + ms(1) + MIN_GAP;
        assert_eq!(p.changed(t0 + ms(10)), end);
        // A second change joins the first: same time, not pushed back.
        assert_eq!(p.changed(t0 + ms(50)), end);
        assert_eq!(p.due(), Some(end));
        p.done(end, ms(1));
        assert_eq!(p.due(), None);
    }

    #[test]
    fn an_expensive_recomputation_widens_the_gap() {
        let t0 = Instant::now();
        let mut p = Pace::new(t0);
        p.changed(t0);
        // 50 ms of work: the next one waits 9 x 50 ms, so at most a tenth of the time
        // goes to recomputation.
        p.done(t0 + ms(50), ms(50));
        assert_eq!(p.changed(t0 + ms(60)), t0 + ms(50) + ms(450));
    }
}
