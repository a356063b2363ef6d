//! The membership's I/O: its key, read from the Secret (`secretkey`) and started,
//! rotated or stopped in the core as the Secret changes (one log line per change of
//! standing), and its UDP socket on this node's InternalIP.
//!
//! Without the Secret (or with no usable `secretkey` in it) the speaker logs an error,
//! reports not ready on `/readyz` and announces nothing: without a key anyone on the
//! network could take part in the election.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use tokio::net::UdpSocket;
use tracing::{debug, error, info, warn};

use super::{SECRET_KEY, Speaker};
use crate::announce::Announcer;
use crate::decide::KeyChange;
use crate::membership::Key;

/// Why the membership Secret gives no key.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum KeyProblem {
    /// No Secret, or no non-empty `secretkey` in it.
    Missing,
    /// The bytes are not a usable key (the error says why).
    Unusable(String),
}

/// What the speaker knows of the key.
#[derive(Debug, Default)]
pub struct KeyState {
    /// The key bytes in force, so that a resync of the same Secret keeps the membership.
    pub in_force: Option<Vec<u8>>,
    /// The Secret's key bytes last handled (usable or not), so that a resync of the
    /// same Secret does nothing.
    seen: Option<Option<Vec<u8>>>,
    /// Why no key is in force, as last logged.
    problem: Option<KeyProblem>,
}

/// Milliseconds since the Unix epoch: the membership's boot epoch, which must grow
/// across restarts.
fn epoch_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

impl<A: Announcer + 'static> Speaker<A> {
    /// Starts, rotates or stops the membership key to follow the Secret.
    pub(super) fn reload_key(&mut self, now: std::time::Instant) {
        let bytes = self
            .api
            .secrets
            .objects
            .iter()
            .find(|(k, _)| k.name == self.opts.memberlist_secret)
            .and_then(|(_, b)| b.clone())
            .filter(|b| !b.is_empty());
        if self.key.seen.as_ref() == Some(&bytes) {
            return;
        }
        self.key.seen = Some(bytes.clone());
        let (key, problem) = match bytes.as_deref().map(Key::new) {
            None => (None, Some(KeyProblem::Missing)),
            Some(Ok(k)) => (Some(k), None),
            Some(Err(e)) => (None, Some(KeyProblem::Unusable(e.to_string()))),
        };
        // One line per change of reason: a missing key after an unusable one (both
        // leave no key in force) is logged too, a resync of the same state is not.
        if problem != self.key.problem {
            match &problem {
                Some(KeyProblem::Missing) => {
                    error!(secret = %self.opts.memberlist_secret, namespace = %self.opts.namespace,
                           key = SECRET_KEY,
                           "membership secret missing: not announcing (an unauthenticated cluster is not allowed)");
                }
                Some(KeyProblem::Unusable(e)) => {
                    error!(secret = %self.opts.memberlist_secret, error = %e,
                           "membership key unusable: not announcing");
                }
                None => {}
            }
            self.key.problem = problem;
        }
        let usable = key.is_some();
        // A key already in force is rotated, not restarted: the membership keeps its
        // view, so nobody goes down and no address moves while the speakers see the
        // new Secret at different moments.
        match self.driver.apply_key(key, epoch_now(), now) {
            Ok((change, t)) => {
                self.key.in_force = if usable { bytes } else { None };
                match change {
                    KeyChange::Started => {
                        info!(secret = %self.opts.memberlist_secret, "membership key loaded");
                        // Its counters start again at zero.
                        self.membership_restarted = true;
                    }
                    KeyChange::Rotated => {
                        let delay = self.opts.membership.key_rotation_delay;
                        info!(secret = %self.opts.memberlist_secret,
                              signing_in_s = delay.as_secs(),
                              old_key_accepted_for_s = (delay * 2).as_secs(),
                              "membership key changed: rotating (the new key is accepted now)");
                    }
                    KeyChange::Stopped => {}
                }
                self.carry_out(t);
            }
            Err(e) => {
                error!(error = %e, "membership cannot start: not announcing");
                self.key.in_force = None;
                // Tried again at the next Secret event, even with the same bytes.
                self.key.seen = None;
                if let Ok(t) = self.driver.set_key(None, epoch_now(), now) {
                    self.carry_out(t);
                }
            }
        }
        self.update_ready();
    }

    /// Binds the membership socket on this node's InternalIP once it is known (and
    /// again if it changes).
    pub(super) async fn ensure_socket(&mut self) {
        let Some(ip) = self.driver.own_address() else {
            if self.socket.is_none() {
                warn!(node = %self.opts.node_name, "own node has no InternalIP yet");
            }
            return;
        };
        let addr = SocketAddr::new(ip, self.opts.memberlist_port);
        if self.bound_to == Some(addr) && self.socket.is_some() {
            return;
        }
        match UdpSocket::bind(addr).await {
            Ok(s) => {
                info!(%addr, "membership socket bound");
                self.socket = Some(Arc::new(s));
                self.bound_to = Some(addr);
            }
            Err(e) => {
                error!(%addr, error = %e, "cannot bind the membership socket, retrying");
                self.socket = None;
                self.bound_to = None;
            }
        }
        self.update_ready();
    }

    /// Sends the membership's datagrams.
    pub(super) fn flush_transmits(&mut self) {
        while let Some((to, payload)) = self.driver.poll_transmit() {
            let Some(s) = &self.socket else { continue };
            // Non-blocking: the loop never waits on the network; a full buffer is loss,
            // which the membership tolerates.
            if let Err(e) = s.try_send_to(&payload, to) {
                debug!(%to, error = %e, "membership datagram not sent");
            }
        }
    }
}
