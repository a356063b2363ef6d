//! What the receive threads and burst tasks share with the announcer
//! ([`AnnounceState`]: the led table, the sockets by interface, the counters and the
//! conflicts), and the receive loop that answers each frame on its own thread.

use std::collections::BTreeMap;
use std::io;
use std::net::IpAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError, RwLock};
use std::time::{Duration, Instant};

use super::reassert::{Reassert, ReassertLimiter};
use crate::announce::responder::{self, Action, Ignored, LedTable};
use crate::announce::socket::{L2Socket, RECV_BUF};
use crate::announce::{AddressCounters, Conflict};
use crate::packet::{MacAddr, gratuitous_arp, unsolicited_na};

/// Conflicts kept for `take_conflicts` before new ones are only counted.
const MAX_PENDING_CONFLICTS: usize = 1024;

/// A socket and the MAC of its interface.
#[derive(Clone, Debug)]
pub(super) struct IfaceSocket {
    pub(super) socket: Arc<dyn L2Socket>,
    pub(super) mac: MacAddr,
}

impl IfaceSocket {
    /// Sends one gratuitous ARP or unsolicited NA for `ip`.
    pub(super) fn announce(&self, ip: IpAddr) -> io::Result<()> {
        let frame = match ip {
            IpAddr::V4(v4) => gratuitous_arp(v4, self.mac).encode(),
            IpAddr::V6(v6) => unsolicited_na(v6, self.mac).encode(),
        };
        self.socket.send(&frame)
    }
}

/// State state with the receive threads and burst tasks.
#[derive(Debug, Default)]
pub(super) struct AnnounceState {
    pub(super) led: RwLock<LedTable>,
    pub(super) sockets: RwLock<BTreeMap<String, IfaceSocket>>,
    pub(super) counters: Mutex<BTreeMap<IpAddr, AddressCounters>>,
    pub(super) conflicts: Mutex<Vec<Conflict>>,
    pub(super) conflict_counts: Mutex<BTreeMap<IpAddr, u64>>,
    pub(super) reassert: Mutex<ReassertLimiter>,
    /// Frames the sockets delivered to user space, for the benchmark that
    /// shows the BPF filter keeping other traffic in the kernel.
    pub(super) frames: AtomicU64,
    /// By outcome: answered, conflict, malformed, not led, own, nothing to answer.
    pub(super) outcomes: [AtomicU64; 6],
}

// A poisoned lock only means another thread panicked mid-update of counters
// or tables that stay structurally valid; keep serving rather than cascade.
pub(super) fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

impl AnnounceState {
    pub(super) fn count(&self, ip: IpAddr, f: impl FnOnce(&mut AddressCounters)) {
        f(lock(&self.counters).entry(ip).or_default());
    }

    pub(super) fn socket_of(&self, iface: &str) -> Option<IfaceSocket> {
        self.sockets
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .get(iface)
            .cloned()
    }

    /// [`AnnounceState::gratuitous`] on `iface`, if it still has a socket.
    pub(super) fn gratuitous_on(&self, ip: IpAddr, iface: &str) {
        if let Some(p) = self.socket_of(iface) {
            self.gratuitous(ip, iface, &p);
        }
    }

    pub(super) fn gratuitous(&self, ip: IpAddr, iface: &str, sock: &IfaceSocket) {
        self.count(ip, |c| c.gratuitous_sent += 1);
        if let Err(e) = sock.announce(ip) {
            self.count(ip, |c| c.gratuitous_sent -= 1);
            tracing::warn!(%ip, iface, error = %e, "sending gratuitous announcement");
        }
    }

    /// Sends the re-assert deferred to `at` if `ip` is still led on `iface`.
    pub(super) fn deferred_reassert(&self, ip: IpAddr, iface: &str, at: Instant) {
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
    pub(super) fn handle(
        self: &Arc<Self>,
        iface: &str,
        sock: &IfaceSocket,
        frame: &[u8],
        ctx: &ReassertCtx,
    ) {
        let led = self.led.read().unwrap_or_else(PoisonError::into_inner);
        let action = responder::respond(frame, iface, sock.mac, &led);
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
                if let Err(e) = sock.socket.send(&frame) {
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
                    Reassert::Now => self.gratuitous(ip, iface, sock),
                    Reassert::Defer(at) => {
                        let state = Arc::clone(self);
                        let iface = iface.to_string();
                        ctx.runtime.spawn(async move {
                            tokio::time::sleep_until(tokio::time::Instant::from_std(at)).await;
                            state.deferred_reassert(ip, &iface, at);
                        });
                    }
                    Reassert::Pending => {}
                }
            }
            Action::Ignore(_) => {}
        }
    }
}

/// What a receive thread needs to re-assert after a conflict.
#[derive(Debug)]
pub(super) struct ReassertCtx {
    pub(super) gap: Duration,
    /// Deferred re-asserts sleep on this runtime.
    pub(super) runtime: tokio::runtime::Handle,
}

pub(super) fn receive_loop(
    state: Arc<AnnounceState>,
    iface: String,
    sock: IfaceSocket,
    stop: Arc<AtomicBool>,
    ctx: ReassertCtx,
) {
    let mut buf = vec![0u8; RECV_BUF];
    while !stop.load(Ordering::SeqCst) {
        match sock.socket.recv(&mut buf) {
            Ok(None) => {}
            Ok(Some(n)) => {
                state.frames.fetch_add(1, Ordering::Relaxed);
                state.handle(&iface, &sock, &buf[..n], &ctx);
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
