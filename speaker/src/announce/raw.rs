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
//!   by the pure [`responder::respond`] and answered on the same thread.
//! * The led set is a [`LedTable`] behind an `RwLock`. Receive threads hold
//!   the read lock while deciding *and sending* a reply; `set_leading` swaps
//!   the table under the write lock. So when `set_leading` returns, no thread
//!   is still answering from the old table: removed addresses are not answered
//!   after it returns. Readers only contend with `set_leading`, which is rare.
//! * Takeover: for each (address, interface) that is new, `set_leading` sends
//!   the first gratuitous ARP / unsolicited NA before returning and spawns
//!   [`burst::follow_up`] on the tokio runtime for the rest.
//! * Conflicts: another MAC claiming a led address (see [`responder`]) is
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

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::io;
use std::net::IpAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError, RwLock};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use super::burst::{self, BurstConfig};
use super::iface::{self, Family, IfaceFacts, InterfaceSource, SysfsInterfaces};
use super::responder::{self, Action, Ignored, LedEntry, LedTable};
use super::socket::{L2Socket, PacketSockets, RECV_BUF, SocketFactory};
use super::{AddressCounters, AnnounceSpec, Announcer, Conflict, FrameCounts};
use crate::packet::{MacAddr, gratuitous_arp, unsolicited_na};

/// Conflicts kept for `take_conflicts` before new ones are only counted.
const MAX_PENDING_CONFLICTS: usize = 1024;

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
struct Slot {
    last: Instant,
    deferred: bool,
}

/// Pure rate limit for conflict re-announcements: at most one per `gap` per
/// address and interface, and a claim inside the gap gets one re-assert at
/// its end instead of none.
#[derive(Debug, Default)]
pub struct ReassertLimiter {
    last: HashMap<(IpAddr, String), Slot>,
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
                    Slot {
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

/// A socket and the MAC of its interface.
#[derive(Clone, Debug)]
struct Port {
    socket: Arc<dyn L2Socket>,
    mac: MacAddr,
}

impl Port {
    /// Sends one gratuitous ARP or unsolicited NA for `ip`.
    fn announce(&self, ip: IpAddr) -> io::Result<()> {
        let frame = match ip {
            IpAddr::V4(v4) => gratuitous_arp(v4, self.mac).encode(),
            IpAddr::V6(v6) => unsolicited_na(v6, self.mac).encode(),
        };
        self.socket.send(&frame)
    }
}

/// State shared with the receive threads and burst tasks.
#[derive(Debug, Default)]
struct Shared {
    led: RwLock<LedTable>,
    ports: RwLock<BTreeMap<String, Port>>,
    counters: Mutex<BTreeMap<IpAddr, AddressCounters>>,
    conflicts: Mutex<Vec<Conflict>>,
    conflict_counts: Mutex<BTreeMap<IpAddr, u64>>,
    reassert: Mutex<ReassertLimiter>,
    /// Frames the sockets delivered to user space, for the benchmark that
    /// shows the BPF filter keeping other traffic in the kernel.
    frames: AtomicU64,
    /// By outcome: answered, conflict, malformed, not led, own, nothing to answer.
    outcomes: [AtomicU64; 6],
}

// A poisoned lock only means another thread panicked mid-update of counters
// or tables that stay structurally valid; keep serving rather than cascade.
fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Shared {
    fn count(&self, ip: IpAddr, f: impl FnOnce(&mut AddressCounters)) {
        f(lock(&self.counters).entry(ip).or_default());
    }

    fn port(&self, iface: &str) -> Option<Port> {
        self.ports
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .get(iface)
            .cloned()
    }

    /// [`Shared::gratuitous`] on `iface`, if it still has a socket.
    fn gratuitous_on(&self, ip: IpAddr, iface: &str) {
        if let Some(p) = self.port(iface) {
            self.gratuitous(ip, iface, &p);
        }
    }

    fn gratuitous(&self, ip: IpAddr, iface: &str, port: &Port) {
        self.count(ip, |c| c.gratuitous_sent += 1);
        if let Err(e) = port.announce(ip) {
            self.count(ip, |c| c.gratuitous_sent -= 1);
            tracing::warn!(%ip, iface, error = %e, "sending gratuitous announcement");
        }
    }

    /// Sends the re-assert deferred to `at` if `ip` is still led on `iface`.
    fn deferred_reassert(&self, ip: IpAddr, iface: &str, at: Instant) {
        let led_here = self
            .led
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .get(&ip)
            .is_some_and(|e| e.interfaces.contains(iface));
        // The table's lock is released before sending: set_leading must not wait on it.
        if led_here && lock(&self.reassert).fire(ip, iface, at) {
            self.gratuitous_on(ip, iface);
        }
    }

    /// Handles one received frame; the read lock is held until any reply is
    /// sent (see the module docs).
    fn handle(self: &Arc<Self>, iface: &str, port: &Port, frame: &[u8], ctx: &ReassertCtx) {
        let led = self.led.read().unwrap_or_else(PoisonError::into_inner);
        let action = responder::respond(frame, iface, port.mac, &led);
        let outcome = match &action {
            Action::Reply { .. } => 0,
            Action::Conflict { .. } => 1,
            Action::Ignore(Ignored::Malformed(_)) => 2,
            Action::Ignore(Ignored::NotLed) => 3,
            Action::Ignore(Ignored::OwnFrame) => 4,
            Action::Ignore(Ignored::NothingToAnswer) => 5,
        };
        self.outcomes[outcome].fetch_add(1, Ordering::Relaxed);
        match action {
            Action::Reply { ip, frame } => {
                // Counted before sending, so that whoever sees the reply also
                // sees it counted; taken back if the send fails.
                self.count(ip, |c| {
                    c.requests_received += 1;
                    c.responses_sent += 1;
                });
                if let Err(e) = port.socket.send(&frame) {
                    self.count(ip, |c| c.responses_sent -= 1);
                    tracing::warn!(%ip, iface, error = %e, "sending reply");
                }
            }
            Action::Conflict { ip, other_mac } => {
                // Debug only: a flood of claims must not flood the log; the
                // runtime logs one line per claimant per tick from take_conflicts.
                tracing::debug!(%ip, iface, %other_mac, "another host claims a led address");
                *lock(&self.conflict_counts).entry(ip).or_default() += 1;
                let mut pending = lock(&self.conflicts);
                if pending.len() < MAX_PENDING_CONFLICTS {
                    pending.push(Conflict {
                        ip,
                        interface: iface.to_string(),
                        other_mac: other_mac.to_string(),
                    });
                }
                drop(pending);
                let decision = lock(&self.reassert).claim(ip, iface, Instant::now(), ctx.gap);
                match decision {
                    Reassert::Now => self.gratuitous(ip, iface, port),
                    Reassert::Defer(at) => {
                        let shared = Arc::clone(self);
                        let iface = iface.to_string();
                        ctx.runtime.spawn(async move {
                            tokio::time::sleep_until(tokio::time::Instant::from_std(at)).await;
                            shared.deferred_reassert(ip, &iface, at);
                        });
                    }
                    Reassert::Pending => {}
                }
            }
            Action::Ignore(_) => {}
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

/// What a receive thread needs to re-assert after a conflict.
#[derive(Debug)]
struct ReassertCtx {
    gap: Duration,
    /// Deferred re-asserts sleep on this runtime.
    runtime: tokio::runtime::Handle,
}

fn receive_loop(
    shared: Arc<Shared>,
    iface: String,
    port: Port,
    stop: Arc<AtomicBool>,
    ctx: ReassertCtx,
) {
    let mut buf = vec![0u8; RECV_BUF];
    while !stop.load(Ordering::SeqCst) {
        match port.socket.recv(&mut buf) {
            Ok(None) => {}
            Ok(Some(n)) => {
                shared.frames.fetch_add(1, Ordering::Relaxed);
                shared.handle(&iface, &port, &buf[..n], &ctx);
            }
            Err(e) => {
                // E.g. ENETDOWN while the link is down: back off instead of
                // spinning; a later set_leading closes a vanished interface.
                tracing::warn!(iface, error = %e, "receiving");
                std::thread::sleep(Duration::from_millis(100));
            }
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
    shared: Arc<Shared>,
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
            shared: Arc::default(),
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
        lock(&self.shared.conflict_counts).clone()
    }

    /// Frames received from all sockets since start (after the BPF filter).
    pub fn frames_received(&self) -> u64 {
        self.shared.frames.load(Ordering::Relaxed)
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
        let port = Port {
            socket: self.sockets.open(f)?,
            mac: f.mac,
        };
        self.shared
            .ports
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(f.name.clone(), port.clone());
        let stop = Arc::new(AtomicBool::new(false));
        let (shared, name, s) = (self.shared.clone(), f.name.clone(), stop.clone());
        let ctx = ReassertCtx {
            gap: self.config.reassert_gap,
            runtime: self.runtime.clone(),
        };
        let thread = std::thread::Builder::new()
            .name(format!("announce-{}", f.name))
            .spawn(move || receive_loop(shared, name, port, s, ctx))?;
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

    fn port(&self, iface: &str) -> Option<Port> {
        self.shared.port(iface)
    }

    fn start_burst(&self, ip: IpAddr, epoch: u64, ifaces: BTreeSet<String>) {
        if self.config.burst.count == 0 || ifaces.is_empty() {
            return;
        }
        for name in &ifaces {
            self.shared.gratuitous_on(ip, name);
        }
        let shared = self.shared.clone();
        let (check, send) = (shared.clone(), shared);
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
            .shared
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
            .shared
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
                    if let Some(p) = self.port(name)
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
            .shared
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
                if let Some(p) = self.port(name) {
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
            self.shared
                .ports
                .write()
                .unwrap_or_else(PoisonError::into_inner)
                .remove(&name);
            tracing::info!(iface = %name, "no longer announcing on interface");
        }
        lock(&self.shared.reassert).retain_led(&table);
        for (ip, epoch, added) in bursts {
            self.start_burst(ip, epoch, added);
        }
        self.leading = leading;
    }

    fn interfaces_of(&self, ip: IpAddr) -> Vec<String> {
        self.shared
            .led
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .get(&ip)
            .map(|e| e.interfaces.iter().cloned().collect())
            .unwrap_or_default()
    }

    fn take_conflicts(&mut self) -> Vec<Conflict> {
        std::mem::take(&mut *lock(&self.shared.conflicts))
    }

    fn counters(&self) -> BTreeMap<IpAddr, AddressCounters> {
        lock(&self.shared.counters).clone()
    }

    fn frame_counts(&self) -> FrameCounts {
        let o = |i: usize| self.shared.outcomes[i].load(Ordering::Relaxed);
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
mod tests {
    use super::*;
    use crate::announce::testvectors::*;
    use crate::packet::{ArpFrame, Frame, NdpFrame};
    use std::net::{Ipv4Addr, Ipv6Addr};
    use std::sync::mpsc;

    const A: MacAddr = MacAddr([0x00, 0x00, 0x5e, 0x00, 0x53, 0x01]);
    const B: MacAddr = MacAddr([0x00, 0x00, 0x5e, 0x00, 0x53, 0x02]);
    const OTHER: MacAddr = MacAddr([0x00, 0x00, 0x5e, 0x00, 0x53, 0x09]);
    const LB4: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 10);
    const LB4B: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 11);
    const LB6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0x100, 0, 0, 0, 0, 0xa);
    /// Long enough for a receive thread on a loaded machine; only reached
    /// when a test fails.
    const WAIT: Duration = Duration::from_secs(10);

    #[derive(Debug)]
    struct FakeIfaces(Vec<IfaceFacts>);

    impl InterfaceSource for FakeIfaces {
        fn list(&self) -> io::Result<Vec<IfaceFacts>> {
            Ok(self.0.clone())
        }
    }

    /// Interfaces the test changes between calls.
    #[derive(Debug, Clone, Default)]
    struct LiveIfaces(Arc<Mutex<Vec<IfaceFacts>>>);

    impl InterfaceSource for LiveIfaces {
        fn list(&self) -> io::Result<Vec<IfaceFacts>> {
            Ok(lock(&self.0).clone())
        }
    }

    #[derive(Debug)]
    struct FakeSocket {
        inbound: Mutex<mpsc::Receiver<Vec<u8>>>,
        sent: Mutex<mpsc::Sender<Vec<u8>>>,
        groups: Mutex<Vec<(bool, Ipv6Addr)>>,
    }

    impl L2Socket for FakeSocket {
        fn send(&self, frame: &[u8]) -> io::Result<()> {
            let _ = lock(&self.sent).send(frame.to_vec());
            Ok(())
        }

        fn recv(&self, buf: &mut [u8]) -> io::Result<Option<usize>> {
            match lock(&self.inbound).recv_timeout(Duration::from_millis(10)) {
                Ok(f) => {
                    buf[..f.len()].copy_from_slice(&f);
                    Ok(Some(f.len()))
                }
                Err(_) => Ok(None),
            }
        }

        fn join_solicited_node(&self, ip: Ipv6Addr) -> io::Result<()> {
            lock(&self.groups).push((true, ip));
            Ok(())
        }

        fn leave_solicited_node(&self, ip: Ipv6Addr) -> io::Result<()> {
            lock(&self.groups).push((false, ip));
            Ok(())
        }
    }

    /// The test's side of one fake socket.
    struct Wire {
        inject: mpsc::Sender<Vec<u8>>,
        sent: mpsc::Receiver<Vec<u8>>,
        socket: Arc<FakeSocket>,
    }

    impl Wire {
        fn next_sent(&self) -> Vec<u8> {
            self.sent.recv_timeout(WAIT).expect("a frame was sent")
        }

        fn nothing_sent(&self) -> bool {
            self.sent.try_recv().is_err()
        }
    }

    type WireEnds = (mpsc::Sender<Vec<u8>>, Arc<FakeSocket>);

    #[derive(Debug, Default, Clone)]
    struct FakeSockets {
        wires: Arc<Mutex<HashMap<String, WireEnds>>>,
        taken: Arc<Mutex<HashMap<String, mpsc::Receiver<Vec<u8>>>>>,
        fail: Option<String>,
    }

    impl SocketFactory for FakeSockets {
        fn open(&self, iface: &IfaceFacts) -> io::Result<Arc<dyn L2Socket>> {
            if self.fail.as_deref() == Some(iface.name.as_str()) {
                return Err(io::Error::other("no such device"));
            }
            let (inject, inbound) = mpsc::channel();
            let (sent_tx, sent_rx) = mpsc::channel();
            let socket = Arc::new(FakeSocket {
                inbound: Mutex::new(inbound),
                sent: Mutex::new(sent_tx),
                groups: Mutex::default(),
            });
            lock(&self.wires).insert(iface.name.clone(), (inject, socket.clone()));
            lock(&self.taken).insert(iface.name.clone(), sent_rx);
            Ok(socket)
        }
    }

    impl FakeSockets {
        fn wire(&self, name: &str) -> Wire {
            let (inject, socket) = lock(&self.wires).get(name).cloned().expect("socket opened");
            let sent = lock(&self.taken).remove(name).expect("wire taken once");
            Wire {
                inject,
                sent,
                socket,
            }
        }
    }

    fn iface(name: &str, index: u32, mac: MacAddr) -> IfaceFacts {
        IfaceFacts::ethernet(name, index, mac)
    }

    fn announcer(sockets: &FakeSockets) -> RawAnnouncer {
        RawAnnouncer::with_parts(
            RawConfig::default(),
            Box::new(FakeIfaces(vec![iface("eth0", 2, B), iface("veth0", 3, A)])),
            Box::new(sockets.clone()),
        )
        .unwrap()
    }

    /// One interface, a one-frame takeover burst, and re-asserts `gap` apart: the
    /// conflict tests count single frames.
    fn eth0_announcer(sockets: &FakeSockets, gap: Duration) -> RawAnnouncer {
        RawAnnouncer::with_parts(
            RawConfig {
                burst: BurstConfig {
                    count: 1,
                    ..BurstConfig::default()
                },
                reassert_gap: gap,
            },
            Box::new(FakeIfaces(vec![iface("eth0", 2, B)])),
            Box::new(sockets.clone()),
        )
        .unwrap()
    }

    fn lead(ips: &[IpAddr]) -> BTreeMap<IpAddr, AnnounceSpec> {
        ips.iter()
            .map(|ip| (*ip, AnnounceSpec::default()))
            .collect()
    }

    fn arp_request_for(ip: Ipv4Addr) -> Vec<u8> {
        let mut f = ArpFrame::decode(&ARP_REQUEST).unwrap();
        f.target_ip = ip;
        f.encode()
    }

    fn arp_target(frame: &[u8]) -> (crate::packet::ArpOp, Ipv4Addr, Ipv4Addr) {
        let f = ArpFrame::decode(frame).unwrap();
        (f.op, f.sender_ip, f.target_ip)
    }

    #[test]
    fn needs_a_runtime() {
        let r = RawAnnouncer::with_parts(
            RawConfig::default(),
            Box::new(FakeIfaces(vec![])),
            Box::new(FakeSockets::default()),
        );
        assert!(matches!(r, Err(AnnounceError::NoRuntime)));
    }

    #[tokio::test(start_paused = true)]
    async fn takeover_announces_at_once_then_answers() {
        let sockets = FakeSockets::default();
        let mut a = announcer(&sockets);
        a.set_leading(lead(&[LB4.into()]));
        // The default rules skip veth0.
        assert_eq!(a.open_interfaces(), ["eth0"]);
        assert_eq!(a.interfaces_of(LB4.into()), ["eth0"]);
        let eth0 = sockets.wire("eth0");
        // The first gratuitous ARP was sent before set_leading returned.
        assert_eq!(
            eth0.sent.try_recv().unwrap(),
            gratuitous_arp(LB4, B).encode()
        );
        eth0.inject.send(ARP_REQUEST.to_vec()).unwrap();
        assert_eq!(eth0.next_sent(), ARP_REPLY);
        let c = a.counters()[&IpAddr::V4(LB4)].clone();
        assert_eq!(
            c,
            AddressCounters {
                requests_received: 1,
                responses_sent: 1,
                gratuitous_sent: 1
            }
        );
    }

    #[tokio::test(start_paused = true)]
    async fn frames_are_counted_by_outcome() {
        let sockets = FakeSockets::default();
        let mut a = announcer(&sockets);
        a.set_leading(lead(&[LB4.into()]));
        let eth0 = sockets.wire("eth0");
        let _ = eth0.sent.try_recv();
        let mut truncated = ARP_REQUEST.to_vec();
        truncated.truncate(30);
        let mut bad_op = ARP_REQUEST.to_vec();
        bad_op[21] = 9;
        for f in [
            ARP_REQUEST.to_vec(),
            truncated,
            bad_op,
            arp_request_for(LB4B),
            gratuitous_arp(LB4, OTHER).encode(),
            gratuitous_arp(LB4B, OTHER).encode(),
        ] {
            eth0.inject.send(f).unwrap();
        }
        // The reply to the first frame, and the conflict's re-announcement.
        let _ = eth0.next_sent();
        let _ = eth0.next_sent();
        let want = FrameCounts {
            answered: 1,
            conflicts: 1,
            malformed: 2,
            not_led: 1,
            own: 0,
            nothing_to_answer: 1,
        };
        let deadline = std::time::Instant::now() + WAIT;
        while a.frame_counts() != want && std::time::Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(5));
        }
        assert_eq!(a.frame_counts(), want);
        assert_eq!(a.frames_received(), 6);
    }

    #[tokio::test(start_paused = true)]
    async fn burst_follows_on_the_clock_and_only_for_new_addresses() {
        let sockets = FakeSockets::default();
        let mut a = announcer(&sockets);
        a.set_leading(lead(&[LB4.into()]));
        let eth0 = sockets.wire("eth0");
        let garp = gratuitous_arp(LB4, B).encode();
        assert_eq!(eth0.sent.try_recv().unwrap(), garp);
        tokio::time::sleep(Duration::from_millis(210)).await;
        assert_eq!(eth0.sent.try_recv().unwrap(), garp);
        tokio::time::sleep(Duration::from_millis(200)).await;
        assert_eq!(eth0.sent.try_recv().unwrap(), garp);
        // Re-applying the same set is not a takeover.
        a.set_leading(lead(&[LB4.into()]));
        tokio::time::sleep(Duration::from_secs(5)).await;
        assert!(eth0.nothing_sent());
        assert_eq!(a.counters()[&IpAddr::V4(LB4)].gratuitous_sent, 3);
    }

    #[tokio::test(start_paused = true)]
    async fn released_addresses_stop_being_answered_and_announced() {
        let sockets = FakeSockets::default();
        let mut a = announcer(&sockets);
        a.set_leading(lead(&[LB4.into(), LB4B.into()]));
        let eth0 = sockets.wire("eth0");
        a.set_leading(lead(&[LB4B.into()]));
        // Drain the two immediate announcements.
        let mut first = [arp_target(&eth0.next_sent()), arp_target(&eth0.next_sent())];
        first.sort_by_key(|t| t.1);
        assert_eq!(first[0].1, LB4);
        assert_eq!(first[1].1, LB4B);
        // A request for the released address, then one for the kept address:
        // the receive thread handles them in order, so the first frame sent
        // must be the second one's reply.
        eth0.inject.send(arp_request_for(LB4)).unwrap();
        eth0.inject.send(arp_request_for(LB4B)).unwrap();
        let (op, sender, _) = arp_target(&eth0.next_sent());
        assert_eq!((op, sender), (crate::packet::ArpOp::Reply, LB4B));
        // The burst continues for the kept address only.
        tokio::time::sleep(Duration::from_secs(1)).await;
        while let Ok(f) = eth0.sent.try_recv() {
            assert_eq!(arp_target(&f).1, LB4B);
        }
        assert_eq!(a.interfaces_of(LB4.into()), Vec::<String>::new());
        assert_eq!(a.counters()[&IpAddr::V4(LB4)].requests_received, 0);
    }

    #[tokio::test]
    async fn conflict_is_reported_counted_and_reasserted_once_per_gap() {
        let sockets = FakeSockets::default();
        let mut a = eth0_announcer(&sockets, Duration::from_secs(3600));
        a.set_leading(lead(&[LB4.into()]));
        let eth0 = sockets.wire("eth0");
        let garp = gratuitous_arp(LB4, B).encode();
        assert_eq!(eth0.sent.try_recv().unwrap(), garp);
        let theirs = gratuitous_arp(LB4, OTHER).encode();
        eth0.inject.send(theirs.clone()).unwrap();
        // Our answer to the conflict: one gratuitous ARP.
        assert_eq!(eth0.next_sent(), garp);
        eth0.inject.send(theirs).unwrap();
        eth0.inject.send(arp_request_for(LB4)).unwrap();
        // The second claim is inside the gap: the next frame is the reply.
        assert_eq!(arp_target(&eth0.next_sent()).0, crate::packet::ArpOp::Reply);
        assert_eq!(
            a.take_conflicts(),
            vec![
                Conflict {
                    ip: LB4.into(),
                    interface: "eth0".into(),
                    other_mac: OTHER.to_string()
                };
                2
            ]
        );
        assert!(a.take_conflicts().is_empty());
        assert_eq!(a.conflict_counts()[&IpAddr::V4(LB4)], 2);
        assert_eq!(a.counters()[&IpAddr::V4(LB4)].gratuitous_sent, 2);
    }

    #[tokio::test(start_paused = true)]
    async fn ipv6_joins_solicited_node_group_and_answers() {
        let sockets = FakeSockets::default();
        let mut a = announcer(&sockets);
        a.set_leading(lead(&[LB6.into()]));
        let eth0 = sockets.wire("eth0");
        assert_eq!(*lock(&eth0.socket.groups), [(true, LB6)]);
        let na = eth0.next_sent();
        assert_eq!(na, unsolicited_na(LB6, B).encode());
        eth0.inject.send(NS.to_vec()).unwrap();
        // Skip burst frames (none are due on the paused clock) to the reply.
        assert_eq!(eth0.next_sent(), SOLICITED_NA);
        a.set_leading(BTreeMap::new());
        assert_eq!(*lock(&eth0.socket.groups), [(true, LB6), (false, LB6)]);
        assert!(a.open_interfaces().is_empty());
        assert!(matches!(
            Frame::decode(&na),
            Ok(Frame::Ndp(NdpFrame { .. }))
        ));
    }

    #[tokio::test(start_paused = true)]
    async fn explicit_interfaces_and_open_failures() {
        let sockets = FakeSockets {
            fail: Some("eth0".into()),
            ..FakeSockets::default()
        };
        let mut a = announcer(&sockets);
        let mut leading = lead(&[LB4.into(), LB4B.into()]);
        leading.get_mut(&IpAddr::V4(LB4B)).unwrap().interfaces = Some(["veth0".to_string()].into());
        a.set_leading(leading);
        // eth0 cannot be opened: LB4 is led but announced nowhere, and the
        // explicitly listed veth0 is used for LB4B although the default
        // rules would skip it.
        assert!(a.interfaces_of(LB4.into()).is_empty());
        assert_eq!(a.interfaces_of(LB4B.into()), ["veth0"]);
        assert_eq!(a.open_interfaces(), ["veth0"]);
        let veth0 = sockets.wire("veth0");
        assert_eq!(veth0.next_sent(), gratuitous_arp(LB4B, A).encode());
    }

    #[tokio::test(start_paused = true)]
    async fn recreated_or_returning_interfaces_are_announced_afresh() {
        let sockets = FakeSockets::default();
        let live = LiveIfaces::default();
        *lock(&live.0) = vec![iface("eth0", 2, B)];
        let mut a = RawAnnouncer::with_parts(
            RawConfig::default(),
            Box::new(live.clone()),
            Box::new(sockets.clone()),
        )
        .unwrap();
        a.set_leading(lead(&[LB6.into()]));
        let first = sockets.wire("eth0");
        assert_eq!(first.next_sent(), unsolicited_na(LB6, B).encode());

        // eth0 deleted and created again: new index, new MAC.
        *lock(&live.0) = vec![iface("eth0", 7, A)];
        a.set_leading(lead(&[LB6.into()]));
        let second = sockets.wire("eth0");
        assert_eq!(*lock(&second.socket.groups), [(true, LB6)]);
        assert_eq!(second.next_sent(), unsolicited_na(LB6, A).encode());
        assert_eq!(a.interfaces_of(LB6.into()), ["eth0"]);

        // Down: the address is announced nowhere and the socket closes.
        lock(&live.0)[0].up = false;
        a.set_leading(lead(&[LB6.into()]));
        assert!(a.interfaces_of(LB6.into()).is_empty());
        assert!(a.open_interfaces().is_empty());
        // Up again: announced at once on a new socket.
        lock(&live.0)[0].up = true;
        a.set_leading(lead(&[LB6.into()]));
        let third = sockets.wire("eth0");
        assert_eq!(third.next_sent(), unsolicited_na(LB6, A).encode());
        assert_eq!(a.interfaces_of(LB6.into()), ["eth0"]);
    }

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

    #[tokio::test(start_paused = true)]
    async fn claims_inside_the_gap_get_one_deferred_reassert() {
        let sockets = FakeSockets::default();
        let mut a = eth0_announcer(&sockets, Duration::from_secs(1));
        a.set_leading(lead(&[LB4.into(), LB4B.into()]));
        let eth0 = sockets.wire("eth0");
        let garp = gratuitous_arp(LB4, B).encode();
        let garp_b = gratuitous_arp(LB4B, B).encode();
        let mut first = [eth0.next_sent(), eth0.next_sent()];
        first.sort();
        let mut want = [garp.clone(), garp_b.clone()];
        want.sort();
        assert_eq!(first, want);
        // A burst of three foreign claims, then a request (to know all were handled).
        let theirs = gratuitous_arp(LB4, OTHER).encode();
        for _ in 0..3 {
            eth0.inject.send(theirs.clone()).unwrap();
        }
        eth0.inject.send(arp_request_for(LB4)).unwrap();
        assert_eq!(eth0.next_sent(), garp, "the first claim: at once");
        assert_eq!(arp_target(&eth0.next_sent()).0, crate::packet::ArpOp::Reply);
        assert!(eth0.nothing_sent(), "nothing more inside the gap");
        // The gap ends (on the paused clock): exactly one more gratuitous ARP, so the
        // neighbours' caches end on our MAC.
        tokio::time::sleep(Duration::from_secs(2)).await;
        assert_eq!(eth0.sent.try_recv().unwrap(), garp);
        tokio::time::sleep(Duration::from_secs(10)).await;
        assert!(eth0.nothing_sent());
        assert_eq!(a.conflict_counts()[&IpAddr::V4(LB4)], 3);
        assert_eq!(a.counters()[&IpAddr::V4(LB4)].gratuitous_sent, 3);

        // A claim inside the gap for an address released before the gap ends: nothing.
        let theirs_b = gratuitous_arp(LB4B, OTHER).encode();
        eth0.inject.send(theirs_b.clone()).unwrap();
        assert_eq!(eth0.next_sent(), garp_b);
        eth0.inject.send(theirs_b).unwrap();
        eth0.inject.send(arp_request_for(LB4B)).unwrap();
        assert_eq!(arp_target(&eth0.next_sent()).0, crate::packet::ArpOp::Reply);
        a.set_leading(lead(&[LB4.into()]));
        tokio::time::sleep(Duration::from_secs(5)).await;
        assert!(eth0.nothing_sent());
        assert_eq!(a.counters()[&IpAddr::V4(LB4B)].gratuitous_sent, 2);
    }
}
