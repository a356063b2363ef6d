//! Announcing addresses on the local network: answering ARP requests and IPv6
//! neighbour solicitations for the addresses this node leads, and sending a burst of
//! gratuitous ARP / unsolicited neighbour advertisements when it takes one over.
//!
//! The election decides *which* addresses this node leads; the [`Announcer`] only
//! makes the network believe it. Keeping the kernel behind this narrow trait lets the
//! speaker's logic be tested with `FakeAnnouncer` (feature `testing`), and the real
//! sockets in network namespaces.
//!
//! The real implementation is [`RawAnnouncer`] ([`raw`]): [`iface`] chooses the
//! interfaces (MetalLB's rules), [`socket`] opens one packet socket per
//! interface with the BPF program of [`filter`] so that only ARP and NDP reach
//! user space, [`responder`] decides what to answer for each frame (pure, tested
//! on captured frames), and [`burst`] spaces the takeover announcements.
//! `veth_harness` (feature `testing`) is support for the privileged netns test and
//! benchmark.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;

pub mod burst;
pub mod filter;
pub mod iface;
pub mod raw;
pub mod responder;
pub mod socket;
#[cfg(test)]
mod testvectors;
#[cfg(feature = "testing")]
pub mod veth_harness;

pub use raw::{AnnounceError, RawAnnouncer, RawConfig};

/// How one led address is announced.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct AnnounceSpec {
    /// Interfaces to announce on (from L2Advertisement.interfaces); `None` means every
    /// suitable interface of the node (MetalLB's selection rules).
    pub interfaces: Option<BTreeSet<String>>,
    /// `namespace/name` of the Service(s) using the address, for logs.
    pub services: BTreeSet<String>,
}

/// Another host answering for an address this node leads.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Conflict {
    pub ip: IpAddr,
    pub interface: String,
    /// The other host's MAC address, `aa:bb:cc:dd:ee:ff`.
    pub other_mac: String,
}

/// Counters per address, for MetalLB's metrics (`metallb_layer2_requests_received`,
/// `metallb_layer2_responses_sent`, `metallb_layer2_gratuitous_sent`).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct AddressCounters {
    pub requests_received: u64,
    pub responses_sent: u64,
    pub gratuitous_sent: u64,
}

/// Frames the announcer's sockets delivered, by what was done with them; for a
/// metric (`ferrolb_speaker_frames_total{outcome}`). Only ARP and
/// neighbour discovery reach the announcer (BPF), so these are small numbers
/// on a healthy segment and `malformed` counts garbage or attacks.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct FrameCounts {
    /// Requests for a led address, answered.
    pub answered: u64,
    /// Another host claiming a led address.
    pub conflicts: u64,
    /// Not a valid ARP or NDP frame (truncated, wrong lengths or opcode, bad
    /// checksum, zero-length option...): dropped.
    pub malformed: u64,
    /// About an address this node does not lead on that interface.
    pub not_led: u64,
    /// Sent by this node's own interface.
    pub own: u64,
    /// Valid, but nothing to answer (replies, gratuitous ARP, our own claims).
    pub nothing_to_answer: u64,
}

pub trait Announcer: Send {
    /// Replaces the set of addresses this node leads. Addresses that are new get a
    /// gratuitous burst at once; addresses no longer present stop being answered
    /// before this returns.
    fn set_leading(&mut self, leading: BTreeMap<IpAddr, AnnounceSpec>);

    /// Interfaces an address is currently announced on (for ServiceL2Status).
    fn interfaces_of(&self, ip: IpAddr) -> Vec<String>;

    /// Conflicts seen since the last call.
    fn take_conflicts(&mut self) -> Vec<Conflict>;

    /// Counters per address (also for addresses no longer led, until restart).
    fn counters(&self) -> BTreeMap<IpAddr, AddressCounters>;

    /// Frames received since start, by outcome (absolute values).
    fn frame_counts(&self) -> FrameCounts {
        FrameCounts::default()
    }
}

/// Records what it is told; for tests of the speaker's logic.
#[cfg(any(test, feature = "testing"))]
#[derive(Debug, Default)]
pub struct FakeAnnouncer {
    pub leading: BTreeMap<IpAddr, AnnounceSpec>,
    /// Every address that got a takeover burst, in order.
    pub bursts: Vec<IpAddr>,
    pub conflicts: Vec<Conflict>,
}

#[cfg(any(test, feature = "testing"))]
impl Announcer for FakeAnnouncer {
    fn set_leading(&mut self, leading: BTreeMap<IpAddr, AnnounceSpec>) {
        for ip in leading.keys() {
            if !self.leading.contains_key(ip) {
                self.bursts.push(*ip);
            }
        }
        self.leading = leading;
    }

    fn interfaces_of(&self, ip: IpAddr) -> Vec<String> {
        match self.leading.get(&ip) {
            Some(spec) => spec
                .interfaces
                .clone()
                .map(|s| s.into_iter().collect())
                .unwrap_or_else(|| vec!["eth0".to_string()]),
            None => vec![],
        }
    }

    fn take_conflicts(&mut self) -> Vec<Conflict> {
        std::mem::take(&mut self.conflicts)
    }

    fn counters(&self) -> BTreeMap<IpAddr, AddressCounters> {
        BTreeMap::new()
    }
}
