//! [`RawAnnouncer`]: the real [`Announcer`], answering ARP and NDP itself on
//! packet sockets.
//!
//! Model:
//! * Interfaces are chosen by [`iface::select`] for each address (default
//!   MetalLB rules, or the address's explicit interface list). One packet
//!   socket with the announcer's BPF filter is opened per interface that at
//!   least one led address needs, and closed when none does.
//! * Each socket has a blocking receive thread. A thread per interface keeps
//!   the reply path free of any scheduler hop: a request is decoded, decided
//!   by the pure [`responder::respond`](crate::announce::responder::respond) and answered on the same thread.
//! * The led set is a [`LedTable`] behind an `RwLock`. Receive threads hold
//!   the read lock while deciding *and sending* a reply; `set_leading` swaps
//!   the table under the write lock. So when `set_leading` returns, no thread
//!   is still answering from the old table: removed addresses are not answered
//!   after it returns. Readers only contend with `set_leading`, which is rare.
//! * Takeover: for each (address, interface) that is new, `set_leading` sends
//!   the first gratuitous ARP / unsolicited NA before returning and spawns
//!   [`burst::follow_up`] on the tokio runtime for the rest.
//! * Conflicts: another MAC claiming a led address (see [`crate::announce::responder`]) is
//!   recorded for [`Announcer::take_conflicts`], counted, and answered with one
//!   gratuitous frame at most once per `reassert_gap` per address and
//!   interface, so the network's caches return to us while we lead. A claim
//!   inside the gap is not dropped: it schedules one re-assert for the end of
//!   the gap (one at most, however many claims come in it), so the last word
//!   after a burst of foreign claims is ours. Each claim is logged at debug
//!   level only; the runtime logs one line per claimant per tick.
//!   Resolution is deterministic because leadership is not decided here: the
//!   election is a pure function of the membership view, so once views agree
//!   exactly one node leads; the others drop the address via `set_leading`
//!   and stop both answering and re-asserting. The rate limit prevents two
//!   nodes with (briefly) different views from flooding the LAN with a GARP
//!   war, and the runtime can log or alert on the reported conflicts.
//! * Calling `set_leading` with an unchanged map re-reads the interfaces and
//!   sends nothing for addresses already announced, so the runtime can call it
//!   periodically to follow interfaces that appear or go down.
//!
//! Parts: `receive` holds what the receive threads share with the announcer and
//! their loop, [`reassert`] the re-assert rate limit; this file opens and closes the
//! sockets and swaps the led table.

pub mod reassert;
mod receive;

use std::collections::{BTreeMap, BTreeSet};
use std::io;
use std::net::IpAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, PoisonError};
use std::thread::JoinHandle;
use std::time::Duration;

use super::burst::{self, BurstConfig};
use super::iface::{self, Family, IfaceFacts, InterfaceSource, SysfsInterfaces};
use super::responder::{LedEntry, LedTable};
use super::socket::{PacketSockets, SocketFactory};
use super::{AddressCounters, AnnounceSpec, Announcer, Conflict, FrameCounts};
use crate::packet::MacAddr;
pub use reassert::{Reassert, ReassertLimiter};
use receive::{AnnounceState, IfaceSocket, ReassertCtx, lock, receive_loop};

#[derive(Debug, thiserror::Error)]
pub enum AnnounceError {
    #[error("the announcer must be created inside a tokio runtime (bursts run on it)")]
    NoRuntime,
    #[error("listing network interfaces: {0}")]
    ListInterfaces(#[source] io::Error),
}

#[derive(Clone, Debug)]
pub struct RawConfig {
    pub burst: BurstConfig,
    /// Minimum time between two conflict-triggered re-announcements of one
    /// address on one interface.
    pub reassert_gap: Duration,
}

impl Default for RawConfig {
    fn default() -> Self {
        RawConfig {
            burst: BurstConfig::default(),
            reassert_gap: Duration::from_secs(1),
        }
    }
}

#[derive(Debug)]
struct OpenIface {
    index: u32,
    mac: MacAddr,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl OpenIface {
    fn stop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
    }

    fn join(&mut self) {
        self.stop();
        if let Some(t) = self.thread.take() {
            // The thread returns within one receive timeout.
            let _ = t.join();
        }
    }
}

fn family(ip: IpAddr) -> Family {
    match ip {
        IpAddr::V4(_) => Family::V4,
        IpAddr::V6(_) => Family::V6,
    }
}

/// See the module docs.
#[derive(Debug)]
pub struct RawAnnouncer {
    state: Arc<AnnounceState>,
    config: RawConfig,
    interfaces: Box<dyn InterfaceSource>,
    sockets: Box<dyn SocketFactory>,
    runtime: tokio::runtime::Handle,
    open: BTreeMap<String, OpenIface>,
    /// Last successful interface listing, used when a listing fails.
    facts: Vec<IfaceFacts>,
    leading: BTreeMap<IpAddr, AnnounceSpec>,
    next_epoch: u64,
}

impl RawAnnouncer {
    /// The real announcer: sysfs interfaces, `AF_PACKET` sockets.
    pub fn new(config: RawConfig) -> Result<RawAnnouncer, AnnounceError> {
        RawAnnouncer::with_parts(
            config,
            Box::new(SysfsInterfaces::default()),
            Box::new(PacketSockets::default()),
        )
    }

    /// With explicit interface source and socket factory (fakes in tests).
    pub fn with_parts(
        config: RawConfig,
        interfaces: Box<dyn InterfaceSource>,
        sockets: Box<dyn SocketFactory>,
    ) -> Result<RawAnnouncer, AnnounceError> {
        let runtime =
            tokio::runtime::Handle::try_current().map_err(|_| AnnounceError::NoRuntime)?;
        let facts = interfaces.list().map_err(AnnounceError::ListInterfaces)?;
        Ok(RawAnnouncer {
            state: Arc::default(),
            config,
            interfaces,
            sockets,
            runtime,
            open: BTreeMap::new(),
            facts,
            leading: BTreeMap::new(),
            next_epoch: 0,
        })
    }

    /// Conflicts seen per address since start.
    pub fn conflict_counts(&self) -> BTreeMap<IpAddr, u64> {
        lock(&self.state.conflict_counts).clone()
    }

    /// Frames received from all sockets since start (after the BPF filter).
    pub fn frames_received(&self) -> u64 {
        self.state.frames.load(Ordering::Relaxed)
    }

    /// Interfaces with an open socket.
    pub fn open_interfaces(&self) -> Vec<String> {
        self.open.keys().cloned().collect()
    }

    /// Makes sure `f` has a socket; true when one was (re)opened just now.
    fn open_port(&mut self, f: &IfaceFacts) -> io::Result<bool> {
        match self.open.get_mut(&f.name) {
            Some(o) if o.index == f.index && o.mac == f.mac => return Ok(false),
            // Recreated under the same name: the old socket is bound to a
            // vanished index (or announces a stale MAC).
            Some(o) => o.stop(),
            None => {}
        }
        let sock = IfaceSocket {
            socket: self.sockets.open(f)?,
            mac: f.mac,
        };
        self.state
            .sockets
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(f.name.clone(), sock.clone());
        let stop = Arc::new(AtomicBool::new(false));
        let (state, name, s) = (self.state.clone(), f.name.clone(), stop.clone());
        let ctx = ReassertCtx {
            gap: self.config.reassert_gap,
            runtime: self.runtime.clone(),
        };
        let thread = std::thread::Builder::new()
            .name(format!("announce-{}", f.name))
            .spawn(move || receive_loop(state, name, sock, s, ctx))?;
        tracing::info!(iface = %f.name, mac = %f.mac, "announcing on interface");
        self.open.insert(
            f.name.clone(),
            OpenIface {
                index: f.index,
                mac: f.mac,
                stop,
                thread: Some(thread),
            },
        );
        Ok(true)
    }

    fn socket_of(&self, iface: &str) -> Option<IfaceSocket> {
        self.state.socket_of(iface)
    }

    fn start_burst(&self, ip: IpAddr, epoch: u64, ifaces: BTreeSet<String>) {
        if self.config.burst.count == 0 || ifaces.is_empty() {
            return;
        }
        for name in &ifaces {
            self.state.gratuitous_on(ip, name);
        }
        let state = self.state.clone();
        let (check, send) = (state.clone(), state);
        let send_ifaces = ifaces.clone();
        self.runtime.spawn(burst::follow_up(
            self.config.burst.clone(),
            move || {
                let led = check.led.read().unwrap_or_else(PoisonError::into_inner);
                led.get(&ip).is_some_and(|e| e.epoch == epoch)
            },
            move || {
                // Only interfaces the address is still announced on.
                let current = send
                    .led
                    .read()
                    .unwrap_or_else(PoisonError::into_inner)
                    .get(&ip)
                    .map(|e| e.interfaces.clone())
                    .unwrap_or_default();
                for name in send_ifaces.intersection(&current) {
                    send.gratuitous_on(ip, name);
                }
            },
        ));
    }

    /// Re-reads interfaces and re-applies the current leading set.
    pub fn rescan(&mut self) {
        self.set_leading(self.leading.clone());
    }

    fn stop_all(&mut self) {
        for o in self.open.values_mut() {
            o.stop();
        }
        for o in self.open.values_mut() {
            o.join();
        }
        self.open.clear();
    }
}

impl Drop for RawAnnouncer {
    fn drop(&mut self) {
        *self
            .state
            .led
            .write()
            .unwrap_or_else(PoisonError::into_inner) = LedTable::default();
        self.stop_all();
    }
}

impl Announcer for RawAnnouncer {
    fn set_leading(&mut self, leading: BTreeMap<IpAddr, AnnounceSpec>) {
        match self.interfaces.list() {
            Ok(f) => self.facts = f,
            Err(e) => tracing::warn!(error = %e, "listing interfaces; using the previous list"),
        }
        let facts = self.facts.clone();
        let mut want: BTreeMap<IpAddr, BTreeSet<String>> = BTreeMap::new();
        // Interfaces whose socket is new: every address on them is announced
        // afresh (and IPv6 groups joined again), even if it was led before on
        // an interface of the same name that has since been recreated.
        let mut fresh = BTreeSet::new();
        for (ip, spec) in &leading {
            let mut names = BTreeSet::new();
            for f in iface::select(&facts, family(*ip), spec.interfaces.as_ref()) {
                match self.open_port(f) {
                    Ok(new) => {
                        if new {
                            fresh.insert(f.name.clone());
                        }
                        names.insert(f.name.clone());
                    }
                    Err(e) => tracing::warn!(iface = %f.name, error = %e, "opening packet socket"),
                }
            }
            if names.is_empty() {
                tracing::warn!(%ip, services = ?spec.services, "no interface to announce on");
            }
            want.insert(*ip, names);
        }

        let old = self
            .state
            .led
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone();
        let mut table = LedTable::default();
        let mut bursts = Vec::new();
        for (ip, names) in want {
            let (epoch, before) = match old.get(&ip) {
                Some(e) => (e.epoch, e.interfaces.clone()),
                None => {
                    self.next_epoch += 1;
                    (self.next_epoch, BTreeSet::new())
                }
            };
            let added: BTreeSet<String> = names
                .iter()
                .filter(|n| !before.contains(*n) || fresh.contains(*n))
                .cloned()
                .collect();
            if let IpAddr::V6(v6) = ip {
                // Join before the swap, so that solicitations reach us by the
                // time we answer them.
                for name in &added {
                    if let Some(p) = self.socket_of(name)
                        && let Err(e) = p.socket.join_solicited_node(v6)
                    {
                        tracing::warn!(%ip, iface = %name, error = %e, "joining solicited-node group");
                    }
                }
            }
            if !added.is_empty() {
                bursts.push((ip, epoch, added));
            }
            table.insert(
                ip,
                LedEntry {
                    interfaces: names,
                    epoch,
                },
            );
        }

        // The swap: once the write lock is held no receive thread is still
        // answering from the old table.
        *self
            .state
            .led
            .write()
            .unwrap_or_else(PoisonError::into_inner) = table.clone();

        for (ip, e) in old.iter() {
            let IpAddr::V6(v6) = ip else { continue };
            let now = table
                .get(ip)
                .map(|e| e.interfaces.clone())
                .unwrap_or_default();
            for name in e.interfaces.difference(&now) {
                if let Some(p) = self.socket_of(name) {
                    let _ = p.socket.leave_solicited_node(*v6);
                }
            }
        }
        let used: BTreeSet<&String> = table
            .iter()
            .flat_map(|(_, e)| e.interfaces.iter())
            .collect();
        let unused: Vec<String> = self
            .open
            .keys()
            .filter(|k| !used.contains(k))
            .cloned()
            .collect();
        for name in unused {
            if let Some(mut o) = self.open.remove(&name) {
                // Not joined here: the thread exits within one receive timeout
                // and set_leading should not wait for it.
                o.stop();
            }
            self.state
                .sockets
                .write()
                .unwrap_or_else(PoisonError::into_inner)
                .remove(&name);
            tracing::info!(iface = %name, "no longer announcing on interface");
        }
        lock(&self.state.reassert).retain_led(&table);
        for (ip, epoch, added) in bursts {
            self.start_burst(ip, epoch, added);
        }
        self.leading = leading;
    }

    fn interfaces_of(&self, ip: IpAddr) -> Vec<String> {
        self.state
            .led
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .get(&ip)
            .map(|e| e.interfaces.iter().cloned().collect())
            .unwrap_or_default()
    }

    fn take_conflicts(&mut self) -> Vec<Conflict> {
        std::mem::take(&mut *lock(&self.state.conflicts))
    }

    fn counters(&self) -> BTreeMap<IpAddr, AddressCounters> {
        lock(&self.state.counters).clone()
    }

    fn frame_counts(&self) -> FrameCounts {
        let o = |i: usize| self.state.outcomes[i].load(Ordering::Relaxed);
        FrameCounts {
            answered: o(0),
            conflicts: o(1),
            malformed: o(2),
            not_led: o(3),
            own: o(4),
            nothing_to_answer: o(5),
        }
    }
}

#[cfg(test)]
mod tests;
