//! Faults for the lab tests: thin panicking wrappers over the lab's fault
//! primitives (a stopped control plane, traffic faults, a node cut off the
//! API server), the membership faults the e2e tests use, and UDP datagrams
//! sent between two hosts to see whether a port lets them through.

use std::net::{SocketAddr, UdpSocket};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use super::frames::spawn_in_netns;
use crate::lab::{ActiveFault, ControlPlaneStop, Direction, Effect, Lab, TrafficFault, Transport};

/// The speakers' membership port (UDP).
pub const MEMBERSHIP_PORT: u16 = 7946;
/// How long the control plane may take to be ready again.
const CONTROL_PLANE_READY: Duration = Duration::from_secs(180);

/// Installs `fault` ([`Lab::add_traffic_fault`]).
pub fn add_fault(lab: &Lab, fault: &TrafficFault) {
    lab.add_traffic_fault(fault)
        .unwrap_or_else(|e| panic!("adding fault {}: {e}", fault.name));
}

/// Removes traffic fault `name`, which must be in force.
pub fn remove_fault(lab: &Lab, name: &str) {
    let found = lab
        .remove_fault(name)
        .unwrap_or_else(|e| panic!("removing fault {name}: {e}"));
    assert!(found, "fault {name} was not in force");
}

/// Cuts `node` off the API server ([`Lab::cut_from_api`]); the fault's name.
pub fn cut_from_api(lab: &Lab, node: &str) -> String {
    lab.cut_from_api(node)
        .unwrap_or_else(|e| panic!("cutting {node} off the API server: {e}"))
}

/// Stops the control plane `how`, keeping its data
/// ([`Lab::stop_control_plane`]).
pub fn stop_control_plane(lab: &Lab, how: ControlPlaneStop) {
    lab.stop_control_plane(how)
        .unwrap_or_else(|e| panic!("stopping the control plane: {e}"));
}

/// Starts the control plane again and waits until it is ready.
pub async fn start_control_plane(lab: &Lab) {
    lab.start_control_plane(CONTROL_PLANE_READY)
        .await
        .unwrap_or_else(|e| panic!("starting the control plane: {e}"));
}

/// The faults in force ([`Lab::active_faults`]).
pub fn active_faults(lab: &Lab) -> Vec<ActiveFault> {
    lab.active_faults()
        .unwrap_or_else(|e| panic!("reading the faults in force: {e}"))
}

/// The packets traffic fault `name` dropped so far, on all its hosts; `None`
/// when it is not in force.
pub fn dropped_by(lab: &Lab, name: &str) -> Option<u64> {
    active_faults(lab).into_iter().find_map(|f| match f {
        ActiveFault::Traffic {
            name: n, dropped, ..
        } if n == name => Some(dropped),
        _ => None,
    })
}

/// A fault `name` on the speakers' membership port between every pair of
/// nodes: each node's packets in `direction` to or from the others.
pub fn membership_fault(name: &str, effect: Effect, direction: Direction) -> TrafficFault {
    TrafficFault {
        name: name.to_owned(),
        hosts: vec!["all".to_owned()],
        peers: vec!["all".to_owned()],
        transport: Transport::Udp,
        port: MEMBERSHIP_PORT,
        effect,
        direction,
    }
}

/// Sends `count` UDP datagrams from host `from` to host `to`'s `port` (IPv4,
/// 1 ms apart) and returns how many arrived. Nothing else may listen on
/// that port in `to`. Bounded: the receiver waits at most 1 s after the
/// last datagram.
pub fn udp_datagrams_through(lab: &Lab, from: &str, to: &str, port: u16, count: u32) -> u32 {
    udp_transit_times(lab, from, to, port, count).len() as u32
}

/// [`udp_datagrams_through`], returning how long each datagram that
/// arrived took (both ends read the same clock: the lab is one machine),
/// in the order they were sent.
pub fn udp_transit_times(lab: &Lab, from: &str, to: &str, port: u16, count: u32) -> Vec<Duration> {
    let topo = lab.topology();
    let src_ns = topo.host(from).expect("sending host").netns();
    let dst = topo.host(to).expect("receiving host");
    let target = SocketAddr::from((dst.ipv4, port));
    let nonce = format!(
        "flb-fault-probe-{}-{:?}:",
        std::process::id(),
        Instant::now()
    );
    let (bound_tx, bound_rx) = mpsc::channel();
    let (sent_tx, sent_rx) = mpsc::channel::<Instant>();
    let prefix = nonce.clone();
    let receiver = spawn_in_netns(&dst.netns(), move || {
        let sock = UdpSocket::bind(("0.0.0.0", port))
            .unwrap_or_else(|e| panic!("bind UDP port {port} in the receiving host: {e}"));
        sock.set_read_timeout(Some(Duration::from_millis(50)))
            .expect("read timeout");
        bound_tx.send(()).expect("signal bound");
        let mut arrived: Vec<(u32, Instant)> = Vec::new();
        let mut sent_at: Option<Instant> = None;
        let start = Instant::now();
        let mut buf = [0u8; 256];
        loop {
            if let Ok((n, _)) = sock.recv_from(&mut buf) {
                let at = Instant::now();
                if let Some(i) = std::str::from_utf8(&buf[..n])
                    .ok()
                    .and_then(|t| t.strip_prefix(prefix.as_str()))
                    .and_then(|i| i.parse().ok())
                {
                    arrived.push((i, at));
                    if arrived.len() == count as usize {
                        break;
                    }
                }
            }
            if sent_at.is_none() {
                sent_at = sent_rx.try_recv().ok();
            }
            let done = sent_at.is_some_and(|t| t.elapsed() > Duration::from_secs(1));
            if done || start.elapsed() > Duration::from_secs(60) {
                break;
            }
        }
        arrived
    });
    bound_rx
        .recv_timeout(Duration::from_secs(10))
        .expect("the receiver did not bind");
    let sent: Vec<Instant> = spawn_in_netns(&src_ns, move || {
        let sock = UdpSocket::bind(("0.0.0.0", 0)).expect("bind sender");
        (0..count)
            .map(|i| {
                let at = Instant::now();
                // A dropped datagram fails nothing on the sender's side, but
                // a rejected one may report an error: both mean "did not
                // pass".
                let _ = sock.send_to(format!("{nonce}{i}").as_bytes(), target);
                std::thread::sleep(Duration::from_millis(1));
                at
            })
            .collect()
    })
    .join()
    .expect("sender thread");
    let _ = sent_tx.send(Instant::now());
    let mut arrived = receiver.join().expect("receiver thread");
    arrived.sort_by_key(|(i, _)| *i);
    arrived
        .into_iter()
        .filter_map(|(i, at)| Some(at - *sent.get(i as usize)?))
        .collect()
}
