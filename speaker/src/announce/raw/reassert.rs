//! The rate limit of conflict re-announcements ([`ReassertLimiter`]), pure and
//! clocked from outside.

use std::collections::HashMap;
use std::net::IpAddr;
use std::time::{Duration, Instant};

use crate::announce::responder::LedTable;

/// What to do about a conflict, from [`ReassertLimiter::claim`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Reassert {
    /// Re-assert now.
    Now,
    /// Inside the gap: re-assert once at this instant (the end of the gap), then
    /// call [`ReassertLimiter::fire`].
    Defer(Instant),
    /// Inside the gap, and a deferred re-assert is already scheduled.
    Pending,
}

#[derive(Debug)]
struct ReassertSlot {
    last: Instant,
    deferred: bool,
}

/// Pure rate limit for conflict re-announcements: at most one per `gap` per
/// address and interface, and a claim inside the gap gets one re-assert at
/// its end instead of none.
#[derive(Debug, Default)]
pub struct ReassertLimiter {
    last: HashMap<(IpAddr, String), ReassertSlot>,
}

impl ReassertLimiter {
    /// A conflict on `ip`/`iface` at `now`.
    pub fn claim(&mut self, ip: IpAddr, iface: &str, now: Instant, gap: Duration) -> Reassert {
        let key = (ip, iface.to_string());
        match self.last.get_mut(&key) {
            Some(s) if now.saturating_duration_since(s.last) < gap => {
                if s.deferred {
                    Reassert::Pending
                } else {
                    s.deferred = true;
                    Reassert::Defer(s.last + gap)
                }
            }
            _ => {
                self.last.insert(
                    key,
                    ReassertSlot {
                        last: now,
                        deferred: false,
                    },
                );
                Reassert::Now
            }
        }
    }

    /// The deferred re-assert scheduled for `at` is due: true (and `at` counts as
    /// the last re-assert) if it is still wanted, false if the address was
    /// released meanwhile ([`ReassertLimiter::retain_led`] forgot it).
    pub fn fire(&mut self, ip: IpAddr, iface: &str, at: Instant) -> bool {
        match self.last.get_mut(&(ip, iface.to_string())) {
            Some(s) if s.deferred => {
                s.deferred = false;
                s.last = s.last.max(at);
                true
            }
            _ => false,
        }
    }

    /// Forgets addresses no longer led, so the map stays bounded.
    pub fn retain_led(&mut self, led: &LedTable) {
        self.last.retain(|(ip, _), _| led.get(ip).is_some());
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::Ipv4Addr;

    const LB4: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 10);

    #[test]
    fn reassert_limiter() {
        let mut l = ReassertLimiter::default();
        let t0 = Instant::now();
        let gap = Duration::from_secs(1);
        let ip = IpAddr::V4(LB4);
        let ms = Duration::from_millis;
        assert_eq!(l.claim(ip, "eth0", t0, gap), Reassert::Now);
        // A claim inside the gap: one re-assert at its end, not none.
        assert_eq!(
            l.claim(ip, "eth0", t0 + ms(300), gap),
            Reassert::Defer(t0 + gap)
        );
        assert_eq!(l.claim(ip, "eth0", t0 + ms(999), gap), Reassert::Pending);
        assert_eq!(l.claim(ip, "eth1", t0, gap), Reassert::Now, "per interface");
        assert!(l.fire(ip, "eth0", t0 + gap));
        assert!(!l.fire(ip, "eth0", t0 + gap), "once");
        // The deferred one counts as the last: the next gap runs from it.
        assert_eq!(
            l.claim(ip, "eth0", t0 + ms(1500), gap),
            Reassert::Defer(t0 + ms(2000))
        );
        l.retain_led(&LedTable::default());
        assert!(!l.fire(ip, "eth0", t0 + ms(2000)), "released meanwhile");
        assert_eq!(
            l.claim(ip, "eth0", t0 + ms(2000), gap),
            Reassert::Now,
            "forgotten once not led"
        );
    }
}
