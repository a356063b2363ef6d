//! Prometheus metrics under MetalLB's names, plus ferrolb's membership and failover
//! metrics.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::sync::Arc;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

use crate::announce::{AddressCounters, FrameCounts};
use crate::membership::Stats;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct IpLabel {
    pub ip: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct AnnouncedLabel {
    pub ip: String,
    pub node: String,
    pub protocol: String,
    pub service: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OutcomeLabel {
    pub outcome: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReasonLabel {
    pub reason: String,
}

#[derive(Debug, Default)]
pub struct Metrics {
    pub requests_received: Family<IpLabel, Counter>,
    pub responses_sent: Family<IpLabel, Counter>,
    pub gratuitous_sent: Family<IpLabel, Counter>,
    pub announced: Family<AnnouncedLabel, Gauge>,
    pub live_members: Gauge,
    pub isolated: Gauge,
    pub dropped: Family<ReasonLabel, Counter>,
    pub datagrams_sent: Counter,
    pub datagrams_received: Counter,
    pub takeovers: Counter,
    pub leading: Gauge,
    pub config_loaded: Gauge,
    pub config_stale: Gauge,
    pub updates: Counter,
    pub update_errors: Counter,
    pub conflicts: Family<IpLabel, Counter>,
    /// ARP/NDP frames the announcer's sockets delivered, by what became of them.
    pub frames: Family<OutcomeLabel, Counter>,
    /// Last absolute values read from the announcer and the membership, so that the
    /// counters above only ever grow by the difference.
    seen_addr: std::sync::Mutex<BTreeMap<IpAddr, AddressCounters>>,
    seen_stats: std::sync::Mutex<Stats>,
    seen_frames: std::sync::Mutex<FrameCounts>,
}

impl Metrics {
    pub fn register(self: &Arc<Self>, r: &mut Registry) {
        r.register(
            "metallb_layer2_requests_received",
            "Number of layer2 requests received for owned IPs",
            self.requests_received.clone(),
        );
        r.register(
            "metallb_layer2_responses_sent",
            "Number of layer2 responses sent for owned IPs in response to requests",
            self.responses_sent.clone(),
        );
        r.register(
            "metallb_layer2_gratuitous_sent",
            "Number of gratuitous layer2 packets sent for owned IPs as a result of failovers",
            self.gratuitous_sent.clone(),
        );
        r.register(
            "metallb_speaker_announced",
            "Services being announced from this node. This is desired state, it does not guarantee that the routing protocols have converged.",
            self.announced.clone(),
        );
        r.register(
            "metallb_k8s_client_config_loaded_bool",
            "1 if a valid configuration has been loaded",
            self.config_loaded.clone(),
        );
        r.register(
            "metallb_k8s_client_config_stale_bool",
            "1 if the configuration in the cluster is invalid and an older one is in force",
            self.config_stale.clone(),
        );
        r.register(
            "metallb_k8s_client_updates",
            "Number of Kubernetes object updates processed",
            self.updates.clone(),
        );
        r.register(
            "metallb_k8s_client_update_errors",
            "Number of failed writes to the Kubernetes API",
            self.update_errors.clone(),
        );
        r.register(
            "ferrolb_speaker_members_live",
            "Live speakers in this node's membership view, itself included",
            self.live_members.clone(),
        );
        r.register(
            "ferrolb_speaker_isolated",
            "1 while this node hears from no peer (it announces nothing then)",
            self.isolated.clone(),
        );
        r.register(
            "ferrolb_speaker_membership_dropped",
            "Membership datagrams dropped, by reason (bad_mac, replay, malformed, unknown_sender)",
            self.dropped.clone(),
        );
        r.register(
            "ferrolb_speaker_membership_datagrams_sent",
            "Membership datagrams sent",
            self.datagrams_sent.clone(),
        );
        r.register(
            "ferrolb_speaker_membership_datagrams_received",
            "Membership datagrams received",
            self.datagrams_received.clone(),
        );
        r.register(
            "ferrolb_speaker_takeovers",
            "Addresses this node took over from another node (failovers)",
            self.takeovers.clone(),
        );
        r.register(
            "ferrolb_speaker_leading",
            "Addresses this node announces",
            self.leading.clone(),
        );
        r.register(
            "ferrolb_speaker_conflicts",
            "Times another host was seen answering for an address this node announces",
            self.conflicts.clone(),
        );
        r.register(
            "ferrolb_speaker_frames",
            "ARP and NDP frames received on the announcing interfaces, by outcome (answered, \
             conflict, malformed, not_led, own, nothing_to_answer)",
            self.frames.clone(),
        );
    }

    /// Adds the announcer's frame counts since the last call.
    pub fn observe_frames(&self, now: &FrameCounts) {
        let mut seen = self.seen_frames.lock().unwrap_or_else(|e| e.into_inner());
        // A smaller value means the count started again: take it whole.
        let delta = |new: u64, old: u64| if new >= old { new - old } else { new };
        for (outcome, new, old) in [
            ("answered", now.answered, seen.answered),
            ("conflict", now.conflicts, seen.conflicts),
            ("malformed", now.malformed, seen.malformed),
            ("not_led", now.not_led, seen.not_led),
            ("own", now.own, seen.own),
            (
                "nothing_to_answer",
                now.nothing_to_answer,
                seen.nothing_to_answer,
            ),
        ] {
            self.frames
                .get_or_create(&OutcomeLabel {
                    outcome: outcome.into(),
                })
                .inc_by(delta(new, old));
        }
        *seen = now.clone();
    }

    /// Adds what the announcer counted since the last call.
    pub fn observe_addresses(&self, now: &BTreeMap<IpAddr, AddressCounters>) {
        let mut seen = self.seen_addr.lock().unwrap_or_else(|e| e.into_inner());
        for (ip, c) in now {
            let old = seen.get(ip).cloned().unwrap_or_default();
            let l = IpLabel { ip: ip.to_string() };
            // A smaller value means the announcer restarted its count: take it whole.
            let delta = |new: u64, old: u64| if new >= old { new - old } else { new };
            self.requests_received
                .get_or_create(&l)
                .inc_by(delta(c.requests_received, old.requests_received));
            self.responses_sent
                .get_or_create(&l)
                .inc_by(delta(c.responses_sent, old.responses_sent));
            self.gratuitous_sent
                .get_or_create(&l)
                .inc_by(delta(c.gratuitous_sent, old.gratuitous_sent));
            seen.insert(*ip, c.clone());
        }
    }

    /// Adds what the membership counted since the last call. `fresh` means a new
    /// membership instance (new key) whose counters start again at zero.
    pub fn observe_membership(&self, s: &Stats, fresh: bool) {
        let mut seen = self.seen_stats.lock().unwrap_or_else(|e| e.into_inner());
        if fresh {
            *seen = Stats::default();
        }
        let d = |new: u64, old: u64| new.saturating_sub(old);
        for (reason, new, old) in [
            ("bad_mac", s.bad_mac, seen.bad_mac),
            ("replay", s.replayed, seen.replayed),
            ("malformed", s.malformed, seen.malformed),
            ("unknown_sender", s.unknown_sender, seen.unknown_sender),
        ] {
            self.dropped
                .get_or_create(&ReasonLabel {
                    reason: reason.into(),
                })
                .inc_by(d(new, old));
        }
        self.datagrams_sent.inc_by(d(s.sent, seen.sent));
        self.datagrams_received.inc_by(d(s.received, seen.received));
        *seen = s.clone();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counters_follow_absolute_values_by_difference() {
        let m = Metrics::default();
        let a: IpAddr = "198.51.100.10".parse().unwrap();
        let mut c = AddressCounters {
            requests_received: 3,
            responses_sent: 2,
            gratuitous_sent: 5,
        };
        m.observe_addresses(&BTreeMap::from([(a, c.clone())]));
        c.requests_received = 7;
        m.observe_addresses(&BTreeMap::from([(a, c.clone())]));
        let l = IpLabel { ip: a.to_string() };
        assert_eq!(m.requests_received.get_or_create(&l).get(), 7);
        assert_eq!(m.gratuitous_sent.get_or_create(&l).get(), 5);

        let mut s = Stats {
            bad_mac: 2,
            replayed: 1,
            ..Default::default()
        };
        m.observe_membership(&s, true);
        s.bad_mac = 4;
        m.observe_membership(&s, false);
        let r = |x: &str| {
            m.dropped
                .get_or_create(&ReasonLabel { reason: x.into() })
                .get()
        };
        assert_eq!((r("bad_mac"), r("replay"), r("malformed")), (4, 1, 0));
        // A new membership (key change) starts from zero again.
        m.observe_membership(
            &Stats {
                bad_mac: 1,
                ..Default::default()
            },
            true,
        );
        assert_eq!(r("bad_mac"), 5);
    }

    #[test]
    fn frame_counts_become_counters_by_outcome() {
        let m = Metrics::default();
        let mut f = FrameCounts {
            answered: 4,
            malformed: 10,
            ..Default::default()
        };
        m.observe_frames(&f);
        f.malformed = 25;
        f.own = 1;
        m.observe_frames(&f);
        m.observe_frames(&f);
        let o = |x: &str| {
            m.frames
                .get_or_create(&OutcomeLabel { outcome: x.into() })
                .get()
        };
        assert_eq!(
            (o("answered"), o("malformed"), o("own"), o("conflict")),
            (4, 25, 1, 0)
        );
        let mut r = Registry::default();
        Arc::new(m).register(&mut r);
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &r).unwrap();
        assert!(
            text.contains("ferrolb_speaker_frames_total{outcome=\"malformed\"} 25"),
            "{text}"
        );
    }
}
