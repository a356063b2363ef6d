//! Raw frames inside lab namespaces: packet sockets opened by a thread that
//! entered the namespace (`setns` changes only the calling thread, so the
//! rest of the process stays in the root namespace and nothing sent here
//! can leave the lab), ARP requests from the lab's client, and the `ip`
//! command for what the tests build around the lab (extra segments,
//! foreign hosts) and read from it (MACs, neighbour entries).

use std::collections::BTreeSet;
use std::net::Ipv4Addr;
use std::process::Command;
use std::time::{Duration, Instant};

use ferrolb_speaker::announce::iface::{IfaceFacts, parse_mac};
use ferrolb_speaker::announce::socket::{L2Socket, PacketSocket};
use ferrolb_speaker::packet::{ArpFrame, ArpOp, MacAddr};
use nix::sched::{CloneFlags, setns};

use super::{CLIENT_NS, CLIENT_V4};
use crate::lab::{Lab, topology};

/// Runs `f` on a new thread that first entered network namespace `netns`
/// (`/run/netns/<netns>`); panics if it cannot enter it.
pub fn spawn_in_netns<T, F>(netns: &str, f: F) -> std::thread::JoinHandle<T>
where
    T: Send + 'static,
    F: FnOnce() -> T + Send + 'static,
{
    let path = format!("/run/netns/{netns}");
    std::thread::spawn(move || {
        let ns = std::fs::File::open(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
        setns(ns, CloneFlags::CLONE_NEWNET).unwrap_or_else(|e| panic!("setns {path}: {e}"));
        f()
    })
}

/// `ip <args>`, which must succeed.
pub fn ip(args: &[&str]) {
    let out = Command::new("ip").args(args).output().expect("ip");
    assert!(
        out.status.success(),
        "ip {}: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// `ip -n <netns> -o link show <iface>`.
fn link_show(netns: &str, iface: &str) -> String {
    let out = Command::new("ip")
        .args(["-n", netns, "-o", "link", "show", iface])
        .output()
        .expect("ip link");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// MAC of `iface` in namespace `netns`.
pub fn mac_of(netns: &str, iface: &str) -> MacAddr {
    let text = link_show(netns, iface);
    let mut words = text.split_whitespace();
    words
        .find(|w| *w == "link/ether")
        .and_then(|_| words.next())
        .and_then(parse_mac)
        .unwrap_or_else(|| panic!("no MAC for {iface} in {netns}: {text}"))
}

/// Node whose `eth0` has `mac` ([`Lab::node_with_mac`]).
pub fn node_of_mac(lab: &Lab, mac: MacAddr) -> Option<String> {
    lab.node_with_mac(&mac.to_string())
        .unwrap_or_else(|e| panic!("which node has {mac}: {e}"))
}

/// The client's neighbour entry for `addr` on its `eth0`, whatever its
/// state: (MAC, state).
pub fn client_neighbour(addr: Ipv4Addr) -> Option<(MacAddr, String)> {
    let out = Command::new("ip")
        .args([
            "-n",
            CLIENT_NS,
            "neigh",
            "show",
            "to",
            &addr.to_string(),
            "dev",
            topology::HOST_IF,
        ])
        .output()
        .expect("ip neigh");
    let text = String::from_utf8_lossy(&out.stdout);
    let mut words = text.split_whitespace();
    words.find(|w| *w == "lladdr")?;
    let mac = words.next().and_then(parse_mac)?;
    Some((mac, words.last().unwrap_or_default().to_string()))
}

/// A packet socket opened inside a network namespace: the speaker's own
/// (`AF_PACKET`, the announcer's BPF filter: ARP and neighbour discovery
/// not sent by this interface, so a socket never sees its own frames). The
/// socket stays in that namespace whichever thread uses it.
pub struct PacketSock {
    sock: PacketSocket,
    /// The interface's MAC.
    pub mac: MacAddr,
}

impl std::fmt::Debug for PacketSock {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PacketSock")
            .field("mac", &self.mac)
            .finish_non_exhaustive()
    }
}

impl PacketSock {
    /// A socket on `iface` of namespace `netns`.
    pub fn open(netns: &str, iface: &str) -> Self {
        let text = link_show(netns, iface);
        let index: u32 = text
            .split(':')
            .next()
            .and_then(|i| i.trim().parse().ok())
            .unwrap_or_else(|| panic!("no index for {iface} in {netns}: {text}"));
        let mac = mac_of(netns, iface);
        let facts = IfaceFacts {
            ipv6_link_local: false,
            ..IfaceFacts::ethernet(iface, index, mac)
        };
        let sock = spawn_in_netns(netns, move || {
            PacketSocket::open(&facts, Duration::from_millis(5))
        })
        .join()
        .expect("netns thread")
        .unwrap_or_else(|e| panic!("packet socket on {iface} in {netns}: {e}"));
        PacketSock { sock, mac }
    }

    /// Sends one frame.
    pub fn send(&self, frame: &[u8]) -> std::io::Result<()> {
        self.sock.send(frame)
    }

    /// One frame, waiting at most `wait` (rounded up to the 5 ms receive
    /// timeout).
    pub fn recv(&self, buf: &mut [u8], wait: Duration) -> Option<usize> {
        let t0 = Instant::now();
        loop {
            match self.sock.recv(buf) {
                Ok(Some(n)) => return Some(n),
                Ok(None) if t0.elapsed() < wait => {}
                _ => return None,
            }
        }
    }

    /// Drops whatever was received so far.
    pub fn drain(&self) {
        let mut buf = [0u8; 2048];
        while self.recv(&mut buf, Duration::ZERO).is_some() {}
    }

    /// The ARP frames received within `wait`.
    pub fn arp_frames(&self, wait: Duration) -> Vec<ArpFrame> {
        let t0 = Instant::now();
        let mut out = Vec::new();
        let mut buf = [0u8; 2048];
        while let Some(left) = wait.checked_sub(t0.elapsed()) {
            let Some(n) = self.recv(&mut buf, left) else {
                break;
            };
            if let Ok(a) = ArpFrame::decode(&buf[..n]) {
                out.push(a);
            }
        }
        out
    }
}

/// A broadcast ARP request from `from` (`from_ip`) for `target`.
pub fn arp_request(from: MacAddr, from_ip: Ipv4Addr, target: Ipv4Addr) -> Vec<u8> {
    ArpFrame {
        eth_dst: MacAddr::BROADCAST,
        eth_src: from,
        op: ArpOp::Request,
        sender_mac: from,
        sender_ip: from_ip,
        target_mac: MacAddr::ZERO,
        target_ip: target,
        padding: vec![0; 18],
    }
    .encode()
}

/// Sends one ARP request for `target` from the client's address and collects
/// the replies for it within `wait`: (replying MACs, time of the first
/// reply).
pub fn arp_ask(
    sock: &PacketSock,
    target: Ipv4Addr,
    wait: Duration,
) -> (Vec<MacAddr>, Option<Duration>) {
    sock.drain();
    let t0 = Instant::now();
    sock.send(&arp_request(sock.mac, CLIENT_V4, target))
        .expect("send ARP request");
    let mut macs = Vec::new();
    let mut first = None;
    let mut buf = [0u8; 2048];
    while let Some(left) = wait.checked_sub(t0.elapsed()) {
        let Some(n) = sock.recv(&mut buf, left) else {
            break;
        };
        if let Ok(a) = ArpFrame::decode(&buf[..n])
            && a.op == ArpOp::Reply
            && a.sender_ip == target
        {
            first.get_or_insert(t0.elapsed());
            macs.push(a.sender_mac);
        }
    }
    (macs, first)
}

/// The distinct MACs that answered `tries` ARP requests for `target`, each
/// given `wait` for its replies.
pub fn arp_answerers(
    sock: &PacketSock,
    target: Ipv4Addr,
    tries: u32,
    wait: Duration,
) -> BTreeSet<MacAddr> {
    (0..tries)
        .flat_map(|_| arp_ask(sock, target, wait).0)
        .collect()
}
