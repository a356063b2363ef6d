//! Who answers ARP for a set of addresses, watched from the lab's client
//! while a test breaks the lab: every round (100 ms by default) one request
//! for each address goes out from the client's `eth0` (a packet socket, see
//! [`frames`](super::frames)), and the replies that come back within the
//! round's window are recorded per address. What the record tells: how long
//! each address went unanswered, whether two MACs ever answered for one
//! address in the same round, and how often the answering MAC changed.

use std::collections::{BTreeMap, BTreeSet};
use std::net::Ipv4Addr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use ferrolb_speaker::packet::{ArpFrame, ArpOp, MacAddr};

use super::frames::{PacketSock, arp_request};
use super::{CLIENT_NS, CLIENT_V4};
use crate::lab::topology;

/// How long a round's replies are awaited.
const WINDOW: Duration = Duration::from_millis(60);

/// What the client saw of one address.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AddressRecord {
    /// Rounds in which the address was asked for.
    pub rounds: u32,
    /// Rounds in which nobody answered.
    pub unanswered_rounds: u32,
    /// Rounds in which more than one MAC answered.
    pub duplicate_rounds: u32,
    /// The longest time from one answered round to the next (the longest
    /// stretch without an answer, to within a round), from the first
    /// answer on.
    pub longest_gap: Duration,
    /// Each change of the set of answering MACs: time since the watch
    /// started, and the new set (empty: nobody answers).
    pub timeline: Vec<(Duration, BTreeSet<MacAddr>)>,
}

impl AddressRecord {
    /// The MACs that answered, in the order they first did (one MAC per
    /// entry; consecutive repeats and silent stretches between them are
    /// left out): one entry means the address never moved.
    pub fn announcers(&self) -> Vec<MacAddr> {
        let mut out: Vec<MacAddr> = Vec::new();
        for (_, set) in &self.timeline {
            for mac in set {
                if out.last() != Some(mac) {
                    out.push(*mac);
                }
            }
        }
        out
    }

    /// How many times the answering MAC changed.
    pub fn moves(&self) -> usize {
        self.announcers().len().saturating_sub(1)
    }
}

/// What an [`ArpWatch`] saw.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ArpRecord {
    /// How long the watch ran.
    pub elapsed: Duration,
    /// The round period.
    pub period: Duration,
    /// Per address.
    pub addresses: BTreeMap<Ipv4Addr, AddressRecord>,
}

/// A thread that keeps asking who has each address until
/// [`ArpWatch::finish`] (or its time limit).
#[derive(Debug)]
pub struct ArpWatch {
    stop: Arc<AtomicBool>,
    handle: Option<JoinHandle<ArpRecord>>,
}

impl ArpWatch {
    /// Starts watching `addrs` every `period` (at least the 60 ms reply
    /// window), for at most `limit`.
    pub fn start(addrs: &[Ipv4Addr], period: Duration, limit: Duration) -> ArpWatch {
        let stop = Arc::new(AtomicBool::new(false));
        let addrs: Vec<Ipv4Addr> = addrs.to_vec();
        let flag = stop.clone();
        let handle = std::thread::spawn(move || watch(&addrs, period.max(WINDOW), limit, &flag));
        ArpWatch {
            stop,
            handle: Some(handle),
        }
    }

    /// Stops the watch and returns what it saw.
    pub fn finish(mut self) -> ArpRecord {
        self.stop.store(true, Ordering::Relaxed);
        self.handle
            .take()
            .expect("an unfinished watch")
            .join()
            .expect("ARP watch thread")
    }
}

impl Drop for ArpWatch {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(h) = self.handle.take() {
            let _ = h.join();
        }
    }
}

fn watch(addrs: &[Ipv4Addr], period: Duration, limit: Duration, stop: &AtomicBool) -> ArpRecord {
    let sock = PacketSock::open(CLIENT_NS, topology::HOST_IF);
    let start = Instant::now();
    let mut record = ArpRecord {
        period,
        addresses: addrs
            .iter()
            .map(|a| (*a, AddressRecord::default()))
            .collect(),
        ..ArpRecord::default()
    };
    let mut last_answer: BTreeMap<Ipv4Addr, Instant> = BTreeMap::new();
    let mut buf = [0u8; 2048];
    while !stop.load(Ordering::Relaxed) && start.elapsed() < limit {
        let round = Instant::now();
        sock.drain();
        for a in addrs {
            sock.send(&arp_request(sock.mac, CLIENT_V4, *a))
                .expect("send ARP request");
        }
        let mut seen: BTreeMap<Ipv4Addr, BTreeSet<MacAddr>> = BTreeMap::new();
        while let Some(left) = WINDOW.checked_sub(round.elapsed()) {
            let Some(n) = sock.recv(&mut buf, left) else {
                break;
            };
            if let Ok(f) = ArpFrame::decode(&buf[..n])
                && f.op == ArpOp::Reply
                && f.target_ip == CLIENT_V4
                && record.addresses.contains_key(&f.sender_ip)
            {
                seen.entry(f.sender_ip).or_default().insert(f.sender_mac);
            }
        }
        let now = Instant::now();
        for (addr, rec) in &mut record.addresses {
            let macs = seen.remove(addr).unwrap_or_default();
            rec.rounds += 1;
            match macs.len() {
                0 => rec.unanswered_rounds += 1,
                1 => {}
                _ => rec.duplicate_rounds += 1,
            }
            if !macs.is_empty()
                && let Some(prev) = last_answer.insert(*addr, now)
            {
                rec.longest_gap = rec.longest_gap.max(now - prev);
            }
            if rec.timeline.last().map(|(_, s)| s) != Some(&macs) {
                rec.timeline.push((now - start, macs));
            }
        }
        if let Some(rest) = period.checked_sub(round.elapsed()) {
            std::thread::sleep(rest);
        }
    }
    record.elapsed = start.elapsed();
    record
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mac(last: u8) -> MacAddr {
        MacAddr([2, 0, 0, 0, 0, last])
    }

    #[test]
    fn announcers_skip_silence_and_repeats() {
        let set = |m: &[u8]| m.iter().map(|l| mac(*l)).collect::<BTreeSet<_>>();
        let rec = AddressRecord {
            timeline: vec![
                (Duration::ZERO, set(&[1])),
                (Duration::from_secs(1), set(&[])),
                (Duration::from_secs(2), set(&[1])),
                (Duration::from_secs(3), set(&[])),
                (Duration::from_secs(4), set(&[2])),
            ],
            ..AddressRecord::default()
        };
        assert_eq!(rec.announcers(), [mac(1), mac(2)]);
        assert_eq!(rec.moves(), 1);
        assert_eq!(AddressRecord::default().moves(), 0);
    }
}
