//! The link-layer socket the announcer reads and writes frames through.
//!
//! [`L2Socket`] is the narrow interface the rest of the announcer uses (send a
//! frame, receive a frame with a timeout, join/leave a solicited-node group);
//! [`SocketFactory`] opens one per interface. The real implementation,
//! [`PacketSocket`], is an `AF_PACKET`/`SOCK_RAW` socket, built without any
//! `unsafe` in this crate (the workspace forbids it): `socket2` creates the
//! socket and attaches the BPF filter, `pnet_datalink` binds it to the
//! interface and does the reads and writes.
//!
//! Opening order matters: the socket is created with protocol 0, which
//! receives nothing, then the BPF filter is attached, and only then is it
//! bound to the interface with `ETH_P_ALL`. Binding first would let unfiltered
//! frames queue in the window before the filter is attached (packet(7)).
//!
//! IPv6: a solicitation for a led address is sent to its solicited-node group
//! ff02::1:ffXX:XXXX (33:33:ff:XX:XX:XX on Ethernet). A NIC drops multicast it
//! was not told about. Rather than all-multicast mode (which makes the NIC
//! pass every group and leaves all the filtering to software) or a packet
//! socket `PACKET_ADD_MEMBERSHIP` (which programs the NIC but tells the
//! network nothing), each led address's group is joined with
//! `IPV6_ADD_MEMBERSHIP` on a per-interface UDP socket: the kernel programs the
//! same MAC filter *and* sends MLD reports, so MLD-snooping switches forward
//! the solicitations to this port. Memberships belong to that socket and end
//! when it closes, so a crashed speaker leaves nothing behind. Groups are
//! reference-counted here because two led addresses can share one group.

use std::collections::HashMap;
use std::io;
use std::net::Ipv6Addr;
use std::os::fd::IntoRawFd;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use pnet_datalink::{Channel, DataLinkReceiver, DataLinkSender, NetworkInterface};
use socket2::{Domain, Socket, Type};

use super::filter::announcer_filter;
use super::iface::IfaceFacts;

/// A bound link-layer socket on one interface.
pub trait L2Socket: Send + Sync + std::fmt::Debug {
    /// Sends one complete Ethernet frame (header included).
    fn send(&self, frame: &[u8]) -> io::Result<()>;
    /// Receives one frame into `buf`; `Ok(None)` when the receive timeout
    /// passed without a frame, so that the caller can check for shutdown.
    fn recv(&self, buf: &mut [u8]) -> io::Result<Option<usize>>;
    /// Starts receiving the solicited-node group of `ip`; counted, so every
    /// join needs one leave.
    fn join_solicited_node(&self, ip: Ipv6Addr) -> io::Result<()>;
    fn leave_solicited_node(&self, ip: Ipv6Addr) -> io::Result<()>;
}

/// Opens sockets; the fake in tests hands out in-memory sockets.
pub trait SocketFactory: Send + Sync + std::fmt::Debug {
    fn open(&self, iface: &IfaceFacts) -> io::Result<Arc<dyn L2Socket>>;
}

/// Opens [`PacketSocket`]s with the announcer's BPF filter.
#[derive(Clone, Debug)]
pub struct PacketSockets {
    /// How long a receive waits before returning `None`; bounds how long
    /// closing the announcer takes.
    pub recv_timeout: Duration,
    /// Leaves the BPF filter off, so that every frame on the interface is
    /// copied to user space. Only for the benchmark's comparison; never in
    /// the speaker.
    pub unfiltered: bool,
}

impl Default for PacketSockets {
    fn default() -> Self {
        PacketSockets {
            recv_timeout: Duration::from_millis(100),
            unfiltered: false,
        }
    }
}

impl SocketFactory for PacketSockets {
    fn open(&self, iface: &IfaceFacts) -> io::Result<Arc<dyn L2Socket>> {
        Ok(Arc::new(PacketSocket::open_with(
            iface,
            self.recv_timeout,
            !self.unfiltered,
        )?))
    }
}

pub struct PacketSocket {
    ifindex: u32,
    tx: Mutex<Box<dyn DataLinkSender>>,
    rx: Mutex<Box<dyn DataLinkReceiver>>,
    /// Created on the first join; IPv6 may be disabled on the interface.
    groups: Mutex<Option<(Socket, HashMap<Ipv6Addr, usize>)>>,
}

impl std::fmt::Debug for PacketSocket {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PacketSocket")
            .field("ifindex", &self.ifindex)
            .finish_non_exhaustive()
    }
}

// A poisoned lock here only guards a socket handle, which stays usable.
fn lock<T: ?Sized>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl PacketSocket {
    /// Opens a filtered packet socket bound to `iface`. Needs `CAP_NET_RAW`.
    pub fn open(iface: &IfaceFacts, recv_timeout: Duration) -> io::Result<PacketSocket> {
        PacketSocket::open_with(iface, recv_timeout, true)
    }

    fn open_with(
        iface: &IfaceFacts,
        recv_timeout: Duration,
        filtered: bool,
    ) -> io::Result<PacketSocket> {
        // Protocol 0: nothing is queued until the bind below.
        let socket = Socket::new_raw(Domain::PACKET, Type::RAW, None)?;
        if filtered {
            let program: Vec<socket2::SockFilter> = announcer_filter()
                .into_iter()
                .map(|i| socket2::SockFilter::new(i.code, i.jt, i.jf, i.k))
                .collect();
            socket.attach_filter(&program)?;
        }
        let interface = NetworkInterface {
            name: iface.name.clone(),
            description: String::new(),
            index: iface.index,
            mac: Some(pnet_datalink::MacAddr::from(iface.mac.0)),
            ips: Vec::new(),
            flags: 0,
        };
        let config = pnet_datalink::linux::Config {
            read_buffer_size: RECV_BUF,
            read_timeout: Some(recv_timeout),
            // Promiscuous mode would make the NIC accept unicast for other
            // hosts; ARP requests are broadcast and NS multicast, so it is
            // never needed.
            promiscuous: false,
            // pnet takes ownership: it binds the descriptor to the interface
            // with ETH_P_ALL and closes it when both halves are dropped (or
            // when binding fails).
            socket_fd: Some(socket.into_raw_fd()),
            ..Default::default()
        };
        match pnet_datalink::linux::channel(&interface, config)? {
            Channel::Ethernet(tx, rx) => Ok(PacketSocket {
                ifindex: iface.index,
                tx: Mutex::new(tx),
                rx: Mutex::new(rx),
                groups: Mutex::new(None),
            }),
            _ => Err(io::Error::other("pnet returned a non-Ethernet channel")),
        }
    }
}

/// ff02::1:ff00:0/104 plus the low 24 bits of `ip` (RFC 4291 2.7.1).
pub fn solicited_node_group(ip: Ipv6Addr) -> Ipv6Addr {
    let o = ip.octets();
    Ipv6Addr::new(
        0xff02,
        0,
        0,
        0,
        0,
        1,
        0xff00 | u16::from(o[13]),
        u16::from_be_bytes([o[14], o[15]]),
    )
}

/// Largest frame read; only ARP/NDP pass the filter, so jumbo-sized is ample.
pub const RECV_BUF: usize = 9216;

impl L2Socket for PacketSocket {
    fn send(&self, frame: &[u8]) -> io::Result<()> {
        lock(&self.tx)
            .send_to(frame, None)
            .unwrap_or_else(|| Err(io::Error::other("frame larger than the send buffer")))
    }

    fn recv(&self, buf: &mut [u8]) -> io::Result<Option<usize>> {
        let mut rx = lock(&self.rx);
        match rx.next() {
            Ok(frame) => {
                let n = frame.len().min(buf.len());
                buf[..n].copy_from_slice(&frame[..n]);
                Ok(Some(n))
            }
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::TimedOut
                        | io::ErrorKind::WouldBlock
                        | io::ErrorKind::Interrupted
                ) =>
            {
                Ok(None)
            }
            Err(e) => Err(e),
        }
    }

    fn join_solicited_node(&self, ip: Ipv6Addr) -> io::Result<()> {
        let group = solicited_node_group(ip);
        let mut g = lock(&self.groups);
        if g.is_none() {
            *g = Some((
                Socket::new(Domain::IPV6, Type::DGRAM, None)?,
                HashMap::new(),
            ));
        }
        let Some((sock, counts)) = g.as_mut() else {
            return Err(io::Error::other("unreachable: group socket missing"));
        };
        let n = counts.entry(group).or_insert(0);
        if *n == 0 {
            sock.join_multicast_v6(&group, self.ifindex)?;
        }
        *n += 1;
        Ok(())
    }

    fn leave_solicited_node(&self, ip: Ipv6Addr) -> io::Result<()> {
        let group = solicited_node_group(ip);
        let mut g = lock(&self.groups);
        let Some((sock, counts)) = g.as_mut() else {
            return Ok(());
        };
        match counts.get_mut(&group) {
            Some(n) if *n > 1 => *n -= 1,
            Some(_) => {
                counts.remove(&group);
                sock.leave_multicast_v6(&group, self.ifindex)?;
            }
            None => {}
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::packet::MacAddr;

    #[test]
    fn solicited_node_groups() {
        let g = solicited_node_group("2001:db8:ffff::7".parse().unwrap());
        assert_eq!(g, "ff02::1:ff00:7".parse::<Ipv6Addr>().unwrap());
        let g = solicited_node_group("2001:db8::12:3456:789a".parse().unwrap());
        assert_eq!(g, "ff02::1:ff56:789a".parse::<Ipv6Addr>().unwrap());
        // Its Ethernet group is the one a solicitation is sent to.
        assert_eq!(
            MacAddr::for_ipv6_multicast(&g).to_string(),
            "33:33:ff:56:78:9a"
        );
    }
}
