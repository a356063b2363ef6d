use std::collections::HashMap;
use std::net::{Ipv4Addr, Ipv6Addr};
use std::sync::{Mutex, mpsc};

use super::*;
use crate::announce::socket::L2Socket;
use crate::announce::testvectors::*;
use crate::packet::{ArpFrame, Frame, NdpFrame, gratuitous_arp, unsolicited_na};

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
