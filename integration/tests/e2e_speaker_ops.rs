//! Operating the speaker on the lab (issue #5): a duplicate announcer on the segment,
//! and rotating the membership key on a running cluster.
//!
//! * Duplicate announcer: a foreign host (namespace `flb-t-rogue`, a port of the lab's
//!   switch, made and removed by this test) claims the address of two Services sharing
//!   it with gratuitous ARP replies from its own MAC. The leader must re-assert the
//!   address (a gratuitous ARP from its MAC right after each claim, seen by the client;
//!   the client's cache, set to the foreign MAC, comes back to the leader's without the
//!   client sending anything), count the claims in `ferrolb_speaker_conflicts`, post
//!   one `DuplicateAnnouncer` Warning on each Service (not one per claim), keep the
//!   address, and traffic must still reach the pods.
//! * Key rotation: the Secret `ferrolb-memberlist` gets a new key. Through the switch
//!   to the new key and the old key's retirement, every speaker keeps every member
//!   live, refuses no datagram (bad MAC), no address changes announcer or takeover
//!   count, and ARP keeps answering; a speaker restarted afterwards (new key only)
//!   rejoins.
//!
//! Raw frames are sent and captured only inside lab namespaces, through packet
//! sockets opened by a thread that entered the namespace (`setns`).
//!
//! Needs root, the Go harness and built `ferrolb-controller` and `ferrolb-speaker`.
//! Run with `--nocapture --test-threads=1`.

use std::collections::{BTreeMap, BTreeSet};
use std::net::Ipv4Addr;
use std::process::Command;
use std::time::{Duration, Instant};

use ferrolb_integration::lab::{Lab, eventually, topology};
use ferrolb_integration::testkit::frames::client_neighbour;
use ferrolb_integration::testkit::{
    self as kit, APP_NS, CLIENT_NS, EchoService, MEMBERLIST_SECRET as SECRET, PacketSock,
    SpeakerSetup, WORKERS, ip, metric, metrics, node_names, node_of_mac, print_speaker_warnings,
    put_key, random_key, speaker_log,
};
use ferrolb_speaker::packet::{ArpFrame, ArpOp, MacAddr};
use kube::Client;
use serde_json::{Value, json};

const WAIT: Duration = Duration::from_secs(60);
const POOL: &str = "198.51.100.10-198.51.100.15";
/// The foreign host's namespace, its switch port and its MAC (locally administered).
const ROGUE_NS: &str = "flb-t-rogue";
const ROGUE_PORT: &str = "v-t-rogue";
const ROGUE_MAC: MacAddr = MacAddr([0x02, 0xf1, 0xb0, 0x00, 0x00, 0x99]);
const REASON: &str = "DuplicateAnnouncer";
/// The speaker that sees the new membership key late, through its own Secret.
const LATE_NODE: &str = "w2-k8s";
const LATE_SECRET: &str = "ferrolb-memberlist-late";
/// How much later.
const LATE_BY: Duration = Duration::from_secs(5);

// ---------------------------------------------------------------------------
// Cluster set-up (testkit).

/// Namespace, CRDs, the membership Secret (with `key`), the pool, an L2Advertisement
/// for the workers, 2 echo pods and `services` (name, port, annotations); then
/// controller and speakers. Returns the running pods' names.
async fn setup(
    lab: &Lab,
    client: &Client,
    key: &[u8],
    services: &[(&str, u16, Value)],
) -> BTreeSet<String> {
    SpeakerSetup {
        pool: vec![POOL],
        replicas: 2,
        services: services
            .iter()
            .map(|(name, port, annotations)| EchoService {
                port: *port,
                annotations: annotations.clone(),
                ..EchoService::new(name)
            })
            .collect(),
        key: Some(key.to_vec()),
        ..SpeakerSetup::default()
    }
    .run(lab, client)
    .await
}

/// The IPv4 address in a Service's status, once it has one.
async fn wait_ingress(client: &Client, name: &str) -> Ipv4Addr {
    let svcs = kube::Api::namespaced(client.clone(), APP_NS);
    kit::ipv4(kit::wait_ingress(&svcs, name, WAIT).await)
}

/// Nodes named by the ServiceL2Status objects of Service `svc`.
async fn l2_status_nodes(client: &Client, svc: &str) -> Result<Vec<String>, String> {
    kit::l2_status_nodes(client, APP_NS, svc).await
}

// ---------------------------------------------------------------------------
// Raw frames from inside a namespace (testkit::frames, as in e2e_speaker_l2.rs).

/// Asks who has `target` (one ARP request from the client) and returns the MACs
/// that answered within 300 ms.
fn arp_answerers(sock: &PacketSock, target: Ipv4Addr) -> BTreeSet<MacAddr> {
    kit::arp_answerers(sock, target, 1, Duration::from_millis(300))
}

/// The foreign host: namespace `flb-t-rogue` whose `eth0` (MAC [`ROGUE_MAC`], no
/// address, IPv6 off) is a port of the lab's switch. Dropping it deletes the
/// namespace, and with it the veth pair.
struct Rogue;

impl Rogue {
    fn create() -> Rogue {
        // Left over from a killed run, if any.
        let _ = Command::new("ip")
            .args(["netns", "del", ROGUE_NS])
            .stderr(std::process::Stdio::null())
            .status();
        ip(&["netns", "add", ROGUE_NS]);
        let guard = Rogue;
        ip(&[
            "link",
            "add",
            "eth0",
            "netns",
            ROGUE_NS,
            "type",
            "veth",
            "peer",
            "name",
            ROGUE_PORT,
            "netns",
            topology::SWITCH_NS,
        ]);
        let out = Command::new("ip")
            .args([
                "netns",
                "exec",
                ROGUE_NS,
                "sysctl",
                "-qw",
                "net.ipv6.conf.eth0.disable_ipv6=1",
            ])
            .output()
            .expect("sysctl");
        assert!(out.status.success(), "disable IPv6 in {ROGUE_NS}: {out:?}");
        ip(&[
            "-n",
            ROGUE_NS,
            "link",
            "set",
            "eth0",
            "address",
            &ROGUE_MAC.to_string(),
        ]);
        ip(&[
            "-n",
            topology::SWITCH_NS,
            "link",
            "set",
            ROGUE_PORT,
            "master",
            topology::BRIDGE,
            "up",
        ]);
        ip(&["-n", ROGUE_NS, "link", "set", "eth0", "up"]);
        guard
    }
}

impl Drop for Rogue {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["netns", "del", ROGUE_NS]).status();
    }
}

/// A gratuitous ARP reply claiming `addr` for `mac` (RFC 5227 "ARP announcement" in
/// reply form: sender and target are both the claimed address and MAC).
fn claim(mac: MacAddr, addr: Ipv4Addr) -> Vec<u8> {
    ArpFrame {
        eth_dst: MacAddr::BROADCAST,
        eth_src: mac,
        op: ArpOp::Reply,
        sender_mac: mac,
        sender_ip: addr,
        target_mac: mac,
        target_ip: addr,
        padding: vec![0; 18],
    }
    .encode()
}

/// `DuplicateAnnouncer` events on Service `svc`: (note, reporting instance).
async fn duplicate_events(client: &Client, svc: &str) -> Vec<(String, String)> {
    kit::events_about(client, APP_NS, svc)
        .await
        .expect("list events")
        .into_iter()
        .filter(|e| e.reason.as_deref() == Some(REASON))
        .inspect(|e| assert_eq!(e.type_.as_deref(), Some("Warning"), "{e:?}"))
        .map(|e| {
            (
                e.note.unwrap_or_default(),
                e.reporting_instance.unwrap_or_default(),
            )
        })
        .collect()
}

fn curl_ok(lab: &Lab, url: &str, pods: &BTreeSet<String>) -> Result<(), String> {
    kit::ask_pod(lab, url, pods).map(drop)
}

// ---------------------------------------------------------------------------
// 1. A duplicate announcer.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_foreign_claim_is_reported_and_reasserted_and_the_address_stays() {
    let (lab, client) = kit::up(kit::bare(3)).await;
    // Two Services sharing one address (ports 80 and 8080).
    let shared = "198.51.100.10";
    let annotations = json!({"metallb.io/allow-shared-ip": "ops",
                             "metallb.io/loadBalancerIPs": shared});
    let services = [
        ("ops-a", 80, annotations.clone()),
        ("ops-b", 8080, annotations),
    ];
    let pods = setup(&lab, &client, &random_key(32), &services).await;
    let addr = wait_ingress(&client, "ops-a").await;
    assert_eq!(wait_ingress(&client, "ops-b").await, addr);
    assert_eq!(addr.to_string(), shared);

    let probe = PacketSock::open(CLIENT_NS, topology::HOST_IF);
    let leader_mac = eventually("the shared address is announced", WAIT, || async {
        match arp_answerers(&probe, addr)
            .into_iter()
            .collect::<Vec<_>>()
            .as_slice()
        {
            [one] => Ok(*one),
            other => Err(format!("answered by {other:?}")),
        }
    })
    .await
    .expect("announced");
    let leader = node_of_mac(&lab, leader_mac).expect("the answering MAC is a node's");
    assert!(WORKERS.contains(&leader.as_str()), "{leader}");
    for svc in ["ops-a", "ops-b"] {
        eventually(&format!("{svc}'s ServiceL2Status"), WAIT, || async {
            match l2_status_nodes(&client, svc).await? {
                n if n == [leader.clone()] => Ok(()),
                n => Err(format!("ServiceL2Status nodes {n:?}")),
            }
        })
        .await
        .expect("ServiceL2Status");
    }
    for url in [format!("http://{addr}/"), format!("http://{addr}:8080/")] {
        eventually(&format!("{url} answers"), WAIT, || async {
            curl_ok(&lab, &url, &pods)
        })
        .await
        .expect("traffic before");
    }
    let conflicts = |node: &str| {
        metric(
            &metrics(&lab, node),
            "ferrolb_speaker_conflicts_total",
            &format!("ip=\"{addr}\""),
        )
        .unwrap_or(0.0)
    };
    let before = conflicts(&leader);
    let takeovers = |node: &str| {
        metric(&metrics(&lab, node), "ferrolb_speaker_takeovers_total", "").unwrap_or(0.0)
    };
    let takeovers_before: BTreeMap<String, f64> = node_names(&lab)
        .into_iter()
        .map(|n| (n.clone(), takeovers(&n)))
        .collect();
    assert!(duplicate_events(&client, "ops-a").await.is_empty());

    // The foreign host claims the address 3 times, 1.5 s apart (the leader re-asserts
    // at most once a second per address and interface). Before each claim the
    // client's entry is set to the foreign MAC, as a claim arriving within that
    // second would leave it; the client then sends nothing, so only the leader's
    // gratuitous ARP can bring the entry back.
    let rogue = Rogue::create();
    let rogue_sock = PacketSock::open(ROGUE_NS, "eth0");
    assert_eq!(rogue_sock.mac, ROGUE_MAC);
    const CLAIMS: u32 = 3;
    for round in 1..=CLAIMS {
        ip(&[
            "-n",
            CLIENT_NS,
            "neigh",
            "replace",
            &addr.to_string(),
            "lladdr",
            &ROGUE_MAC.to_string(),
            "dev",
            topology::HOST_IF,
            "nud",
            "stale",
        ]);
        assert_eq!(client_neighbour(addr).map(|n| n.0), Some(ROGUE_MAC));
        probe.drain();
        rogue_sock
            .send(&claim(ROGUE_MAC, addr))
            .expect("send frame");
        let seen = probe.arp_frames(Duration::from_millis(1500));
        let foreign = seen
            .iter()
            .position(|a| a.sender_mac == ROGUE_MAC && a.sender_ip == addr);
        let reassert = seen
            .iter()
            .position(|a| a.sender_mac == leader_mac && a.sender_ip == addr && a.target_ip == addr);
        let others: Vec<MacAddr> = seen
            .iter()
            .filter(|a| a.sender_ip == addr && ![ROGUE_MAC, leader_mac].contains(&a.sender_mac))
            .map(|a| a.sender_mac)
            .collect();
        eprintln!(
            "check: claim {round}: client saw the claim at frame {foreign:?}, {leader}'s gratuitous ARP at frame {reassert:?}"
        );
        assert!(foreign.is_some(), "the client did not see the claim");
        assert!(
            reassert.is_some_and(|r| Some(r) > foreign),
            "claim {round}: no gratuitous ARP from {leader} after the claim: {seen:?}"
        );
        assert!(others.is_empty(), "other nodes claimed {addr}: {others:?}");
        let back = eventually(
            "the client's entry is the leader's again",
            Duration::from_secs(5),
            || async {
                match client_neighbour(addr) {
                    Some((mac, _)) if mac == leader_mac => Ok(()),
                    n => Err(format!("client's entry {n:?}")),
                }
            },
        )
        .await;
        back.expect("re-assertion repairs the client's cache");
    }
    drop(rogue_sock);
    drop(rogue);

    // Reported: the metric counts every claim (on the leader only), and each Service
    // of the address got one Warning (a persistent conflict is one event a minute).
    eventually("the conflicts are counted", WAIT, || async {
        let now = conflicts(&leader);
        if now >= before + f64::from(CLAIMS) {
            Ok(())
        } else {
            Err(format!("ferrolb_speaker_conflicts_total {before} -> {now}"))
        }
    })
    .await
    .expect("conflict metric");
    for n in node_names(&lab).iter().filter(|n| **n != leader) {
        assert_eq!(conflicts(n), 0.0, "{n} does not lead {addr}");
    }
    for svc in ["ops-a", "ops-b"] {
        eventually(&format!("a {REASON} event on {svc}"), WAIT, || async {
            if duplicate_events(&client, svc).await.is_empty() {
                Err("no event yet".to_string())
            } else {
                Ok(())
            }
        })
        .await
        .expect("event");
    }
    // The metric already counted every claim: the events of that tick are posted.
    tokio::time::sleep(Duration::from_secs(3)).await;
    for svc in ["ops-a", "ops-b"] {
        let evs = duplicate_events(&client, svc).await;
        assert_eq!(
            evs.len(),
            1,
            "{svc}: one event for {CLAIMS} claims: {evs:?}"
        );
        let (note, instance) = &evs[0];
        eprintln!("check: {svc}: {REASON} from {instance}: {note}");
        assert_eq!(*instance, leader);
        for part in [
            addr.to_string(),
            ROGUE_MAC.to_string(),
            "eth0".to_string(),
            format!("{leader:?}"),
        ] {
            assert!(note.contains(&part), "{part} not in {note:?}");
        }
    }
    assert!(
        speaker_log(&lab, &leader).contains("another host answers for an address"),
        "no log line on {leader}"
    );

    // Resolved: the address stayed with the leader, nothing was taken over, and
    // traffic reaches the pods on both Services.
    assert_eq!(arp_answerers(&probe, addr), BTreeSet::from([leader_mac]));
    for n in node_names(&lab) {
        assert_eq!(
            takeovers(&n),
            takeovers_before[&n],
            "{n} took something over"
        );
    }
    for svc in ["ops-a", "ops-b"] {
        assert_eq!(
            l2_status_nodes(&client, svc).await.unwrap(),
            std::slice::from_ref(&leader)
        );
    }
    for url in [format!("http://{addr}/"), format!("http://{addr}:8080/")] {
        curl_ok(&lab, &url, &pods).expect("traffic after the conflict");
    }
    print_speaker_warnings(&lab);
    drop(probe);
    drop(client);
    lab.down().expect("down");
}

// ---------------------------------------------------------------------------
// 2. Key rotation.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rotating_the_membership_key_moves_nothing() {
    let (lab, client) = kit::up(kit::bare(3)).await;
    // Six addresses, so that (by rendezvous hashing) more than one worker leads some.
    let names = ["rot-a", "rot-b", "rot-c", "rot-d", "rot-e", "rot-f"];
    let services: Vec<(&str, u16, Value)> = names.iter().map(|n| (*n, 80, json!({}))).collect();
    let key = random_key(32);
    let pods = setup(&lab, &client, &key, &services).await;
    let mut addrs = Vec::new();
    for n in names {
        addrs.push(wait_ingress(&client, n).await);
    }
    let nodes = node_names(&lab);
    let probe = PacketSock::open(CLIENT_NS, topology::HOST_IF);

    // One speaker sees the new key seconds after the others (a slow watch): it reads
    // its key from another Secret, with the same contents, updated later.
    let late = LATE_NODE;
    put_key(&client, LATE_SECRET, &key).await;
    kit::respawn_speaker(
        &lab,
        late,
        &["--memberlist-secret".to_string(), LATE_SECRET.to_string()],
    );

    let live = |node: &str| metric(&metrics(&lab, node), "ferrolb_speaker_members_live", "");
    eventually("every speaker sees every member", WAIT, || async {
        kit::members_live(&lab, &nodes, nodes.len())
    })
    .await
    .expect("membership");
    // Who answers each address, from the client's side and in ServiceL2Status.
    let answerers = |probe: &PacketSock| -> Vec<BTreeSet<MacAddr>> {
        addrs.iter().map(|a| arp_answerers(probe, *a)).collect()
    };
    let before = eventually("every address answered by one node", WAIT, || async {
        let a = answerers(&probe);
        if a.iter().all(|s| s.len() == 1) {
            Ok(a)
        } else {
            Err(format!("answerers {a:?}"))
        }
    })
    .await
    .expect("announced");
    let mut leaders = Vec::new();
    for (i, svc) in names.iter().enumerate() {
        let mac = *before[i].iter().next().unwrap();
        let node = node_of_mac(&lab, mac).expect("a node's MAC");
        eventually(&format!("{svc}'s ServiceL2Status"), WAIT, || async {
            match l2_status_nodes(&client, svc).await? {
                n if n == [node.clone()] => Ok(()),
                n => Err(format!("ServiceL2Status nodes {n:?}")),
            }
        })
        .await
        .expect("ServiceL2Status");
        leaders.push(node);
    }
    assert_eq!(answerers(&probe), before, "still settling");
    eprintln!("check: leaders before the rotation: {leaders:?}");
    // Per node: (bad MAC drops, takeovers); a member declared dead shows in `live`.
    let counters = |node: &str| {
        let m = metrics(&lab, node);
        (
            metric(
                &m,
                "ferrolb_speaker_membership_dropped_total",
                "reason=\"bad_mac\"",
            )
            .unwrap_or(0.0),
            metric(&m, "ferrolb_speaker_takeovers_total", "").unwrap_or(0.0),
        )
    };
    let start: BTreeMap<String, (f64, f64)> =
        nodes.iter().map(|n| (n.clone(), counters(n))).collect();

    // The new key, seen by the late speaker 5 s after the others. Speakers switch
    // signing 30 s after they see it and retire the old key 30 s later: watch both,
    // and a little more.
    let new_key = random_key(32);
    put_key(&client, SECRET, &new_key).await;
    let t0 = Instant::now();
    let mut late_done = false;
    let window = Duration::from_secs(75);
    let mut rounds = 0;
    while t0.elapsed() < window {
        if !late_done && t0.elapsed() >= LATE_BY {
            put_key(&client, LATE_SECRET, &new_key).await;
            eprintln!(
                "check: {late} got the new key {:?} after the others",
                t0.elapsed()
            );
            late_done = true;
        }
        for n in &nodes {
            assert_eq!(
                live(n),
                Some(nodes.len() as f64),
                "{n} lost a member {:?} into the rotation",
                t0.elapsed()
            );
            assert_eq!(
                counters(n),
                start[n],
                "{n}: (bad MAC drops, takeovers) grew"
            );
        }
        assert_eq!(answerers(&probe), before, "at {:?}", t0.elapsed());
        rounds += 1;
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    eprintln!(
        "check: {rounds} rounds over {window:?}: every member live, no bad MAC, no takeover, same ARP answers"
    );
    for n in &nodes {
        assert!(
            speaker_log(&lab, n).contains("rotating"),
            "{n} did not log a rotation"
        );
    }
    for ((svc, node), addr) in names.iter().zip(&leaders).zip(&addrs) {
        assert_eq!(
            l2_status_nodes(&client, svc).await.unwrap(),
            std::slice::from_ref(node)
        );
        curl_ok(&lab, &format!("http://{addr}/"), &pods).expect("traffic");
    }

    // The old key is retired everywhere and the new one in force: a speaker that
    // starts now knows only the new key, and rejoins. The control-plane node leads
    // nothing (the L2Advertisement selects workers), so nothing moves.
    let cp = topology::CONTROL_PLANE;
    lab.restart_speaker(cp).expect("restart speaker");
    let restarted = Instant::now();
    eventually(
        "the restarted speaker is a member everywhere",
        WAIT,
        || async { kit::members_live(&lab, &nodes, nodes.len()) },
    )
    .await
    .expect("rejoined");
    eprintln!(
        "check: {cp}'s speaker, restarted with the new key only, rejoined in {:?}",
        restarted.elapsed()
    );
    for n in nodes.iter().filter(|n| *n != cp) {
        assert_eq!(counters(n).0, start[n].0, "{n} refused datagrams (bad MAC)");
    }
    assert_eq!(answerers(&probe), before);
    print_speaker_warnings(&lab);
    drop(probe);
    drop(client);
    lab.down().expect("down");
}
