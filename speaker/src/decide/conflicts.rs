//! Duplicate announcers: another MAC answering for, or announcing, an address this
//! node leads. The announcer reports each such frame ([`Announcer::take_conflicts`]);
//! this module decides what the speaker tells people about it: a log line and the
//! `ferrolb_speaker_conflicts` counter for every report, and a Warning event
//! ([`DUPLICATE_ANNOUNCER_REASON`]) on every Service using the address, at most once
//! per address per [`EVENT_INTERVAL`] so a persistent conflict does not flood the API.
//!
//! Resolution is deterministic, and it is re-assertion, not negotiation:
//! * the election is the source of truth. Who leads an address is a pure function of
//!   the membership view and the API state, so once the speakers' views agree exactly
//!   one node leads it, and that node is this one;
//! * a ferrolb speaker that does not lead an address never answers for it (its
//!   announcer drops the address in `set_leading` before returning), so the other MAC
//!   is a foreign host (a machine configured with the address, another load
//!   balancer), a stale cache replaying an old answer, or a peer whose view has not
//!   converged yet, which stops by itself within the membership's detection time;
//! * the leader therefore keeps re-asserting (one gratuitous ARP / unsolicited
//!   neighbour advertisement per address and interface, at most once a second, see
//!   `RawConfig::reassert_gap`): the segment's caches come back to it after every
//!   foreign claim, and two speakers with briefly different views cannot start a
//!   gratuitous-ARP storm. Nothing here changes the election: a foreign host cannot
//!   move an address by claiming it.
//!
//! [`Announcer::take_conflicts`]: crate::announce::Announcer::take_conflicts

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::IpAddr;
use std::time::{Duration, Instant};

use super::eligibility::Eligibility;
use super::inputs::ServiceKey;
use crate::announce::Conflict;

/// Reason of the Warning event on the Services of an address another MAC claims.
pub const DUPLICATE_ANNOUNCER_REASON: &str = "DuplicateAnnouncer";
/// Action of that event (what this node does about it).
pub const DUPLICATE_ANNOUNCER_ACTION: &str = "Reassert";
/// At most one event per address in this time.
pub const EVENT_INTERVAL: Duration = Duration::from_secs(60);

/// One address's conflicts seen in one batch, for the log and the event.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Claim {
    pub ip: IpAddr,
    pub interface: String,
    pub other_mac: String,
    /// Frames with this (address, interface, MAC) in the batch.
    pub frames: u64,
}

/// Groups a batch of conflict reports by (address, interface, other MAC), in a
/// stable order, so a flood of frames gives one log line per claimant.
pub fn group(conflicts: Vec<Conflict>) -> Vec<Claim> {
    let mut by: BTreeMap<(IpAddr, String, String), u64> = BTreeMap::new();
    for c in conflicts {
        *by.entry((c.ip, c.interface, c.other_mac)).or_default() += 1;
    }
    by.into_iter()
        .map(|((ip, interface, other_mac), frames)| Claim {
            ip,
            interface,
            other_mac,
            frames,
        })
        .collect()
}

/// The Services using `ip`: all of them when the address is shared
/// (`metallb.io/allow-shared-ip`), none when it is no longer in any Service's status.
pub fn services_of(ip: IpAddr, eligibility: &BTreeMap<IpAddr, Eligibility>) -> Vec<ServiceKey> {
    eligibility
        .get(&ip)
        .map(|e| e.services.clone())
        .unwrap_or_default()
}

/// The event's note.
pub fn note(c: &Claim, node: &str) -> String {
    let what = match c.ip {
        IpAddr::V4(_) => "gratuitous ARP",
        IpAddr::V6(_) => "unsolicited neighbour advertisement",
    };
    format!(
        "another host (MAC {}) answers for or announces {} on interface {}, which node {node:?} \
         announces: node {node:?} keeps the address (the election decides) and re-asserts it \
         with a {what}; look for a machine configured with this address or another load \
         balancer using it",
        c.other_mac, c.ip, c.interface
    )
}

/// Rate limit of the events: one per address per `interval`. Time is passed in.
#[derive(Debug)]
pub struct EventLimiter {
    interval: Duration,
    last: HashMap<IpAddr, Instant>,
}

impl Default for EventLimiter {
    fn default() -> Self {
        Self::new(EVENT_INTERVAL)
    }
}

impl EventLimiter {
    pub fn new(interval: Duration) -> Self {
        Self {
            interval,
            last: HashMap::new(),
        }
    }

    /// True (and remembers `now`) when an event about `ip` may be posted at `now`.
    pub fn admit(&mut self, ip: IpAddr, now: Instant) -> bool {
        match self.last.get(&ip) {
            Some(t) if now.saturating_duration_since(*t) < self.interval => false,
            _ => {
                self.last.insert(ip, now);
                true
            }
        }
    }

    /// Forgets addresses whose last event is older than the interval, so the map
    /// holds at most the addresses reported within one interval.
    pub fn expire(&mut self, now: Instant) {
        let interval = self.interval;
        self.last
            .retain(|_, t| now.saturating_duration_since(*t) < interval);
    }

    pub fn len(&self) -> usize {
        self.last.len()
    }

    pub fn is_empty(&self) -> bool {
        self.last.is_empty()
    }
}

/// What to do with one batch of conflict reports at `now`: the claims (for the log
/// and the metric, every one) and the events to post, `(Service, note)`, at most one
/// claim per address within the limiter's interval, on every Service of the address.
pub fn plan_events(
    claims: &[Claim],
    eligibility: &BTreeMap<IpAddr, Eligibility>,
    node: &str,
    limiter: &mut EventLimiter,
    now: Instant,
) -> Vec<(ServiceKey, String)> {
    limiter.expire(now);
    let mut out = Vec::new();
    let mut done: BTreeSet<IpAddr> = BTreeSet::new();
    for c in claims {
        if done.contains(&c.ip) {
            continue;
        }
        let services = services_of(c.ip, eligibility);
        // An address no Service uses any more has nobody to tell; it is not counted
        // against the limit either.
        if services.is_empty() || !limiter.admit(c.ip, now) {
            continue;
        }
        done.insert(c.ip);
        let n = note(c, node);
        out.extend(services.into_iter().map(|s| (s, n.clone())));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: &str = "198.51.100.10";
    const B: &str = "2001:db8::10";

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn conflict(a: &str, mac: &str) -> Conflict {
        Conflict {
            ip: ip(a),
            interface: "eth0".into(),
            other_mac: mac.into(),
        }
    }

    fn elig(entries: &[(&str, &[(&str, &str)])]) -> BTreeMap<IpAddr, Eligibility> {
        entries
            .iter()
            .map(|(a, svcs)| {
                (
                    ip(a),
                    Eligibility {
                        services: svcs.iter().map(|(n, s)| ServiceKey::new(*n, *s)).collect(),
                        ..Default::default()
                    },
                )
            })
            .collect()
    }

    #[test]
    fn a_flood_of_frames_is_one_claim_per_claimant() {
        let mut batch = vec![conflict(A, "02:00:00:00:00:01"); 500];
        batch.push(conflict(A, "02:00:00:00:00:02"));
        batch.push(conflict(B, "02:00:00:00:00:01"));
        let g = group(batch);
        assert_eq!(g.len(), 3);
        assert_eq!(
            (g[0].ip, g[0].other_mac.as_str(), g[0].frames),
            (ip(A), "02:00:00:00:00:01", 500)
        );
        assert_eq!(
            (g[1].other_mac.as_str(), g[1].frames),
            ("02:00:00:00:00:02", 1)
        );
        assert_eq!((g[2].ip, g[2].frames), (ip(B), 1));
        assert!(group(Vec::new()).is_empty());
    }

    #[test]
    fn a_shared_address_warns_every_service_sharing_it() {
        let e = elig(&[
            (
                A,
                &[
                    ("default", "web"),
                    ("other", "dns-tcp"),
                    ("other", "dns-udp"),
                ],
            ),
            (B, &[("default", "v6")]),
        ]);
        let mut s = services_of(ip(A), &e);
        s.sort();
        assert_eq!(
            s,
            [
                ServiceKey::new("default", "web"),
                ServiceKey::new("other", "dns-tcp"),
                ServiceKey::new("other", "dns-udp"),
            ]
        );
        assert_eq!(services_of(ip(B), &e), [ServiceKey::new("default", "v6")]);
        assert!(services_of(ip("198.51.100.99"), &e).is_empty());

        let mut lim = EventLimiter::default();
        let claims = group(vec![conflict(A, "02:00:00:00:00:01")]);
        let ev = plan_events(&claims, &e, "w1", &mut lim, Instant::now());
        let targets: BTreeSet<&ServiceKey> = ev.iter().map(|(k, _)| k).collect();
        assert_eq!(targets.len(), 3);
        assert_eq!(ev.len(), 3, "one event per Service, not per frame");
        // The note names the address, the interface, the other MAC and this node.
        for (_, n) in &ev {
            for part in [A, "eth0", "02:00:00:00:00:01", "\"w1\""] {
                assert!(n.contains(part), "{part} not in {n}");
            }
        }
    }

    #[test]
    fn at_most_one_event_per_address_per_interval() {
        let e = elig(&[(A, &[("default", "web")]), (B, &[("default", "v6")])]);
        let mut lim = EventLimiter::new(Duration::from_secs(60));
        let t0 = Instant::now();
        let s = Duration::from_secs(1);
        let batch = |a: &str, mac: &str| group(vec![conflict(a, mac)]);

        // Two claimants of A in one batch: one event.
        let two = group(vec![
            conflict(A, "02:00:00:00:00:01"),
            conflict(A, "02:00:00:00:00:02"),
        ]);
        assert_eq!(plan_events(&two, &e, "w1", &mut lim, t0).len(), 1);
        // A persistent conflict, reported every second for a minute: nothing more...
        for i in 1..60 {
            let now = t0 + s * i;
            assert!(
                plan_events(&batch(A, "02:00:00:00:00:01"), &e, "w1", &mut lim, now).is_empty(),
                "second {i}"
            );
        }
        // ...another address is limited on its own...
        assert_eq!(
            plan_events(
                &batch(B, "02:00:00:00:00:01"),
                &e,
                "w1",
                &mut lim,
                t0 + s * 30
            )
            .len(),
            1
        );
        // ...and A warns again once the minute has passed.
        assert_eq!(
            plan_events(
                &batch(A, "02:00:00:00:00:01"),
                &e,
                "w1",
                &mut lim,
                t0 + s * 60
            )
            .len(),
            1
        );
        assert!(
            plan_events(
                &batch(A, "02:00:00:00:00:01"),
                &e,
                "w1",
                &mut lim,
                t0 + s * 61
            )
            .is_empty()
        );
        // Old entries are forgotten: the limiter stays bounded.
        plan_events(&[], &e, "w1", &mut lim, t0 + s * 200);
        assert!(lim.is_empty());
    }

    #[test]
    fn an_address_without_services_is_not_counted_against_the_limit() {
        let mut lim = EventLimiter::default();
        let t0 = Instant::now();
        let claims = group(vec![conflict(A, "02:00:00:00:00:01")]);
        assert!(plan_events(&claims, &BTreeMap::new(), "w1", &mut lim, t0).is_empty());
        assert!(lim.is_empty());
        let e = elig(&[(A, &[("default", "web")])]);
        assert_eq!(plan_events(&claims, &e, "w1", &mut lim, t0).len(), 1);
    }
}
