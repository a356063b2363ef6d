//! Layer-2 details of the speaker on the lab (issue #5): IPv6 and dual-stack
//! addresses answered by NDP, interface selection (explicit `interfaces`, bridge
//! members and virtual names skipped), a speaker with the wrong membership key and an
//! unusable Secret, and a storm of malformed ARP/NDP frames.
//!
//! Every check is what a host on the segment sees (who answers ARP/NDP, with which
//! MAC, on which segment) or what the speaker reports (metrics, /readyz, logs). Raw
//! frames are sent from the lab's `client` namespace only, through packet sockets
//! opened by a thread that entered that namespace (`setns`); a second segment is a
//! `flb-t-l2seg` namespace this test creates and removes (guard, also on failure).
//!
//! Needs root, the Go harness and built `ferrolb-controller` and `ferrolb-speaker`.
//! Run with `--nocapture --test-threads=1` to see the figures.

use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use ferrolb_integration::e2e::host::url_host;
use ferrolb_integration::lab::{IpFamily, LabOptions, components, eventually, process};
use ferrolb_integration::testkit::setup::workers_only;
use ferrolb_integration::testkit::{
    ANNOUNCE_LABEL, APP, APP_NS, CLIENT, CLIENT_NS, CLIENT_V4, EchoService, MEMBERLIST_SECRET,
    PacketSock, SPEAKER_PORT, SpeakerSetup, WORKERS, apply_l2, arp_answerers, arp_ask, arp_request,
    ask, ask_pod, bare, http_get, ip, ipv4, l2_status, mac_of, members_live, metric, metrics,
    node_names, node_of_mac, percentile, put_key, put_secret, random_key, respawn_speaker, rss_kib,
    speaker_log, speaker_pid, up, wait_addresses,
};
use ferrolb_speaker::packet::{
    MacAddr, NdpFrame, NdpMessage, NdpOption, NeighborSolicit, icmpv6_checksum,
};
use k8s_openapi::api::core::v1::Service;
use kube::{Api, Client};
use serde_json::json;

const WAIT: Duration = Duration::from_secs(60);
/// How long each ARP request waits for its replies.
const ARP_WAIT: Duration = Duration::from_millis(200);

/// The address of Service `name` (in [`APP_NS`]) once it has one, which
/// must be IPv4.
async fn single_v4(client: &Client, name: &str) -> Ipv4Addr {
    let svcs: Api<Service> = Api::namespaced(client.clone(), APP_NS);
    ipv4(wait_addresses(&svcs, name, 1, WAIT).await[0])
}

// ---------------------------------------------------------------------------
// a. IPv6 and dual-stack.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dual_stack_service_is_answered_by_arp_and_ndp_and_v6_fails_over() {
    let (lab, client) = up(LabOptions {
        ip_family: IpFamily::DualStack,
        ..bare(3)
    })
    .await;
    let pods = SpeakerSetup {
        pool: vec![
            "198.51.100.10-198.51.100.12",
            "2001:db8:100::10-2001:db8:100::12",
        ],
        l2: workers_only(),
        services: vec![EchoService {
            spec: json!({"ipFamilyPolicy": "RequireDualStack", "ipFamilies": ["IPv4", "IPv6"]}),
            ..EchoService::new(APP)
        }],
        announce_nodes: WORKERS.to_vec(),
        replicas: 3,
        ..SpeakerSetup::default()
    }
    .run(&lab, &client)
    .await;
    let svcs: Api<Service> = Api::namespaced(client.clone(), APP_NS);
    let ips = wait_addresses(&svcs, APP, 2, WAIT).await;
    let v4 = *ips.iter().find(|i| i.is_ipv4()).expect("an IPv4 address");
    let v6 = *ips.iter().find(|i| i.is_ipv6()).expect("an IPv6 address");
    let url = |ip: IpAddr| format!("http://{}/", url_host(ip));

    // Both addresses answer from a pod, and the client resolved each (ARP, NDP) to the
    // MAC of a worker.
    let (who4, who6, st0) = eventually("both families announced", WAIT, || async {
        let mut who = Vec::new();
        for ip in [v4, v6] {
            lab.flush_neighbour(CLIENT, ip).map_err(|e| e.to_string())?;
            ask_pod(&lab, &url(ip), &pods).map_err(|e| format!("{ip}: {e}"))?;
            let node = lab
                .announcer(CLIENT, ip)
                .map_err(|e| e.to_string())?
                .ok_or(format!("no neighbour entry for {ip}"))?;
            who.push(node);
        }
        let st = l2_status(&client, APP_NS, APP).await?;
        if st.is_empty() {
            return Err("no ServiceL2Status".into());
        }
        Ok((who[0].clone(), who[1].clone(), st))
    })
    .await
    .expect("dual-stack announced");
    eprintln!("check: {v4} announced by {who4}, {v6} by {who6}; ServiceL2Status {st0:?}");
    assert!(
        st0.keys().all(|n| *n == who4 || *n == who6),
        "ServiceL2Status names a node that answers for neither address: {st0:?}"
    );
    assert!(WORKERS.contains(&who6.as_str()), "{who6} is not a worker");
    let mac6 = lab.neighbour_mac(CLIENT, v6).unwrap().unwrap();
    assert!(mac6.eq_ignore_ascii_case(&lab.interface_mac(&who6).unwrap()));
    // Requests spread over the pods through the IPv6 address too.
    let mut seen = BTreeSet::new();
    for _ in 0..12 {
        seen.insert(ask(&lab, &url(v6)).expect("v6 request"));
    }
    assert!(seen.is_subset(&pods) && seen.len() >= 2, "answers {seen:?}");
    // The speaker publishes its counters on its one-second tick.
    eventually(
        &format!("NDP responses counted on {who6}"),
        Duration::from_secs(5),
        || async {
            let m = metrics(&lab, &who6);
            let sent = metric(
                &m,
                "metallb_layer2_responses_sent_total",
                &format!("ip=\"{v6}\""),
            );
            match sent {
                Some(v) if v > 0.0 => Ok(()),
                other => Err(format!("responses sent: {other:?}")),
            }
        },
    )
    .await
    .expect("NDP responses counted");

    // Node failure: the v6 address moves; the unsolicited neighbour advertisement
    // rewrites the client's cached entry without the client asking.
    let t0 = Instant::now();
    lab.node_fail(&who6).expect("node fail");
    let (next, gap) = loop {
        if let Some(n) = lab.announcer(CLIENT, v6).expect("announcer")
            && n != who6
        {
            break (n, t0.elapsed());
        }
        assert!(
            t0.elapsed() < Duration::from_secs(20),
            "{v6} stayed with {who6} in the client's neighbour table"
        );
        std::thread::sleep(Duration::from_millis(10));
    };
    eprintln!(
        "figure: node failure of {who6}: client's NDP entry for {v6} moved to {next} after {gap:?}"
    );
    assert!(WORKERS.contains(&next.as_str()));
    eventually("v6 answers after the failover", WAIT, || async {
        ask_pod(&lab, &url(v6), &pods).map(|_| ())
    })
    .await
    .expect("v6 after failover");
    // Last, because it fails today: MetalLB announces all addresses of a Service from
    // one node (it elects on the Service's first address), and ServiceL2Status, one
    // object per Service, can only name one node.
    let st = l2_status(&client, APP_NS, APP).await.unwrap_or_default();
    eprintln!("check: after the failover ServiceL2Status {st:?}");
    assert_eq!(
        who4, who6,
        "the two addresses of a dual-stack Service are announced by two nodes; ServiceL2Status named only {st0:?}"
    );
    drop(client);
    lab.down().expect("down");
}

// ---------------------------------------------------------------------------
// b. Interface selection.

const SEG_NS: &str = "flb-t-l2seg";
const SEG_BR: &str = "br1";

/// A second layer-2 segment: a bridge in `flb-t-l2seg` and veth pairs from it into
/// lab namespaces. Dropping it deletes the namespace (and with it every pair's far
/// end, so the near ends in the lab's namespaces go too) and the bridges it made in
/// node namespaces.
struct Segment {
    extra: Vec<(String, String)>,
}

impl Segment {
    fn create() -> Segment {
        let _ = Command::new("ip").args(["netns", "del", SEG_NS]).status();
        ip(&["netns", "add", SEG_NS]);
        let seg = Segment { extra: Vec::new() };
        ip(&["-n", SEG_NS, "link", "set", "lo", "up"]);
        ip(&[
            "-n",
            SEG_NS,
            "link",
            "add",
            SEG_BR,
            "type",
            "bridge",
            "mcast_snooping",
            "0",
        ]);
        ip(&["-n", SEG_NS, "link", "set", SEG_BR, "up"]);
        seg
    }

    /// Veth `name` in `netns`, its peer `port` a port of the segment's bridge.
    fn attach(&self, netns: &str, name: &str, port: &str) {
        ip(&[
            "link", "add", name, "netns", netns, "type", "veth", "peer", "name", port, "netns",
            SEG_NS,
        ]);
        ip(&["-n", SEG_NS, "link", "set", port, "master", SEG_BR, "up"]);
        ip(&["-n", netns, "link", "set", name, "up"]);
    }

    /// A bridge `name` in `netns` (removed by the guard).
    fn bridge(&mut self, netns: &str, name: &str) {
        ip(&["-n", netns, "link", "add", name, "type", "bridge"]);
        ip(&["-n", netns, "link", "set", name, "up"]);
        self.extra.push((netns.to_string(), name.to_string()));
    }
}

impl Drop for Segment {
    fn drop(&mut self) {
        for (ns, name) in &self.extra {
            let _ = Command::new("ip")
                .args(["-n", ns, "link", "del", name])
                .status();
        }
        let _ = Command::new("ip").args(["netns", "del", SEG_NS]).status();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn interfaces_follow_the_l2advertisement_and_skip_bridge_members_and_virtual_names() {
    let (lab, client) = up(bare(2)).await;
    let node = "w1-k8s";
    let node_ns = "flb-w1-k8s";
    // Second segment: the client's eth1 and, on w1: eth1 (plain), eth2 (a member of a
    // bridge named cni0) and docker0 (a plain veth with a container runtime's name).
    let mut seg = Segment::create();
    seg.attach(CLIENT_NS, "eth1", "s-client");
    seg.attach(node_ns, "eth1", "s-w1");
    seg.attach(node_ns, "eth2", "s-w1b");
    seg.attach(node_ns, "docker0", "s-w1d");
    seg.bridge(node_ns, "cni0");
    ip(&["-n", node_ns, "link", "set", "eth2", "master", "cni0"]);
    let w1_eth0 = mac_of(node_ns, "eth0");
    let w1_eth1 = mac_of(node_ns, "eth1");

    // Only w1 announces, so the answers on each segment can be attributed.
    let pods = SpeakerSetup {
        announce_nodes: vec![node],
        replicas: 1,
        ..SpeakerSetup::default()
    }
    .run(&lab, &client)
    .await;
    let lb = single_v4(&client, APP).await;
    let main_seg = PacketSock::open(CLIENT_NS, "eth0");
    let second = PacketSock::open(CLIENT_NS, "eth1");

    // Default rules: answered on the main segment by w1's eth0 and on the second one
    // by w1's eth1 only (not by the bridge member eth2, cni0 or docker0).
    let (on_main, on_second, st) = eventually("default interfaces", WAIT, || async {
        let m = arp_answerers(&main_seg, lb, 3, ARP_WAIT);
        let s = arp_answerers(&second, lb, 3, ARP_WAIT);
        let st = l2_status(&client, APP_NS, APP).await?;
        if m.is_empty() || s.is_empty() {
            return Err(format!("main {m:?} second {s:?}"));
        }
        Ok((m, s, st))
    })
    .await
    .expect("announced by default");
    eprintln!(
        "check: default interfaces: ServiceL2Status {st:?}; main segment answered by {on_main:?}, second by {on_second:?}"
    );
    assert_eq!(on_main, BTreeSet::from([w1_eth0]));
    assert_eq!(on_second, BTreeSet::from([w1_eth1]));
    let ifaces = st.get(node).cloned().unwrap_or_default();
    for want in ["eth0", "eth1"] {
        assert!(ifaces.iter().any(|i| i == want), "{want} missing: {st:?}");
    }
    for never in ["eth2", "cni0", "docker0", "lo"] {
        assert!(!ifaces.iter().any(|i| i == never), "{never} used: {st:?}");
    }
    let log = speaker_log(&lab, node);
    assert!(
        !log.contains("iface=eth2") && !log.contains("iface=docker0"),
        "{log}"
    );

    // interfaces: [eth1]: answered on the second segment only.
    apply_l2(
        &client,
        "l2",
        json!({"nodeSelectors": [{"matchLabels": {ANNOUNCE_LABEL: "yes"}}],
               "interfaces": ["eth1"]}),
    )
    .await;
    let st = eventually("ServiceL2Status lists eth1 only", WAIT, || async {
        let st = l2_status(&client, APP_NS, APP).await?;
        if st.get(node).is_some_and(|i| i == &["eth1"]) {
            Ok(st)
        } else {
            Err(format!("{st:?}"))
        }
    })
    .await
    .expect("eth1 only");
    let on_main = arp_answerers(&main_seg, lb, 5, ARP_WAIT);
    let on_second = arp_answerers(&second, lb, 5, ARP_WAIT);
    eprintln!(
        "check: interfaces [eth1]: ServiceL2Status {st:?}; main segment answered by {on_main:?}, second by {on_second:?}"
    );
    assert!(on_main.is_empty(), "answered on eth0: {on_main:?}");
    assert_eq!(on_second, BTreeSet::from([w1_eth1]));
    // Traffic still reaches the pods: the client's kernel resolves the address on
    // eth0 no more, so this is only about ARP, not about routing.
    assert_eq!(pods.len(), 1);

    // Back to the default: eth0 answers again.
    apply_l2(&client, "l2", workers_only()).await;
    eventually("eth0 answers again", WAIT, || async {
        let m = arp_answerers(&main_seg, lb, 2, ARP_WAIT);
        if m == BTreeSet::from([w1_eth0]) {
            Ok(())
        } else {
            Err(format!("{m:?}"))
        }
    })
    .await
    .expect("default again");
    drop((main_seg, second));
    drop(client);
    // The speaker must not die when the segment and the bridge vanish under it.
    drop(seg);
    std::thread::sleep(Duration::from_secs(2));
    assert!(lab.daemon_running(&components::speaker_name(node)).unwrap());
    lab.down().expect("down");
}

// ---------------------------------------------------------------------------
// c. Wrong membership key, unusable Secret.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_key_speaker_is_not_a_member_and_unusable_secret_silences_all() {
    let (lab, client) = up(bare(3)).await;
    let services = ["svc-a", "svc-b", "svc-c"];
    SpeakerSetup {
        l2: json!({}),
        services: services.map(EchoService::new).to_vec(),
        announce_nodes: vec![],
        replicas: 2,
        ..SpeakerSetup::default()
    }
    .run(&lab, &client)
    .await;
    let mut addrs = Vec::new();
    for s in services {
        addrs.push(single_v4(&client, s).await);
    }
    let nodes = node_names(&lab);
    let probe = PacketSock::open(CLIENT_NS, "eth0");
    eventually("all members live", WAIT, || async {
        members_live(&lab, &nodes, 4)
    })
    .await
    .expect("membership");

    // w3's speaker restarted with another key (another Secret, through the speaker's
    // --memberlist-secret flag); the others keep theirs.
    let odd = "w3-k8s";
    let other_secret = "ferrolb-memberlist-other";
    put_key(&client, other_secret, &random_key(32)).await;
    respawn_speaker(
        &lab,
        odd,
        &["--memberlist-secret".to_string(), other_secret.to_string()],
    );
    let others: Vec<String> = nodes.iter().filter(|n| *n != odd).cloned().collect();
    let bad_mac = |m: &str| {
        metric(
            m,
            "ferrolb_speaker_membership_dropped_total",
            "reason=\"bad_mac\"",
        )
        .unwrap_or(0.0)
    };
    let before: BTreeMap<String, f64> = others
        .iter()
        .map(|n| (n.clone(), bad_mac(&metrics(&lab, n))))
        .collect();
    eventually("w3 is outside the membership", WAIT, || async {
        members_live(&lab, &others, 3)?;
        let m = metrics(&lab, odd);
        if metric(&m, "ferrolb_speaker_isolated", "") != Some(1.0) {
            return Err("w3 not isolated".into());
        }
        Ok(())
    })
    .await
    .expect("w3 outside");
    tokio::time::sleep(Duration::from_secs(3)).await;
    let mut dropped = Vec::new();
    for n in &others {
        let m = metrics(&lab, n);
        dropped.push((n.clone(), bad_mac(&m) - before[n.as_str()]));
        assert_eq!(
            metric(&m, "ferrolb_speaker_members_live", ""),
            Some(3.0),
            "{n}"
        );
    }
    let odd_m = metrics(&lab, odd);
    eprintln!(
        "check: w3 with another key: datagrams dropped as bad_mac since its restart {dropped:?}; w3 itself dropped {:?}, leads {:?}",
        metric(
            &odd_m,
            "ferrolb_speaker_membership_dropped_total",
            "reason=\"bad_mac\""
        ),
        metric(&odd_m, "ferrolb_speaker_leading", "")
    );
    assert!(
        dropped.iter().map(|(_, d)| d).sum::<f64>() > 0.0,
        "no peer counted w3's datagrams as bad_mac: {dropped:?}"
    );
    assert!(
        bad_mac(&odd_m) > 0.0,
        "w3 did not count its peers' datagrams"
    );
    assert_eq!(metric(&odd_m, "ferrolb_speaker_leading", ""), Some(0.0));
    // Exactly one announcer per address, never w3; ServiceL2Status agrees.
    let w3_mac = mac_of("flb-w3-k8s", "eth0");
    for (svc, a) in services.iter().zip(&addrs) {
        let macs = arp_answerers(&probe, *a, 5, ARP_WAIT);
        assert_eq!(macs.len(), 1, "{a} answered by {macs:?}");
        assert!(!macs.contains(&w3_mac), "{a} answered by w3");
        let who = node_of_mac(&lab, *macs.iter().next().unwrap()).expect("a node's MAC");
        let st = eventually(&format!("{svc} status"), WAIT, || async {
            let st = l2_status(&client, APP_NS, svc).await?;
            if st.keys().collect::<Vec<_>>() == [&who] {
                Ok(st)
            } else {
                Err(format!("{st:?}, ARP says {who}"))
            }
        })
        .await
        .expect("one status");
        assert_eq!(st.len(), 1);
    }
    // With the right key again, w3 rejoins.
    lab.restart_speaker(odd).expect("restart w3");
    eventually("w3 rejoined", WAIT, || async {
        members_live(&lab, &nodes, 4)
    })
    .await
    .expect("rejoin");

    // An unusable Secret: no `secretkey` at all, then a key too short, then no key
    // again. Every speaker stops answering, reports not ready and says why in its log,
    // at each change of reason (the last one also while no key was in force before).
    for (data, why) in [
        (
            BTreeMap::from([("secret-key".to_string(), random_key(32))]),
            "membership secret missing",
        ),
        (
            BTreeMap::from([("secretkey".to_string(), random_key(8))]),
            "membership key unusable",
        ),
        (
            BTreeMap::from([("secret-key".to_string(), random_key(32))]),
            "membership secret missing",
        ),
    ] {
        let seen: BTreeMap<&String, usize> = nodes
            .iter()
            .map(|n| (n, speaker_log(&lab, n).len()))
            .collect();
        put_secret(&client, MEMBERLIST_SECRET, data).await;
        eventually(&format!("silent after: {why}"), WAIT, || async {
            for n in &nodes {
                let (code, body) = http_get(&lab, n, SPEAKER_PORT, "/readyz");
                if code != 503 {
                    return Err(format!("{n} /readyz {code} {body}"));
                }
                let log = speaker_log(&lab, n);
                if !log.get(seen[n]..).unwrap_or("").contains(why) {
                    return Err(format!("{n} log does not say {why:?}"));
                }
            }
            for a in &addrs {
                let macs = arp_answerers(&probe, *a, 2, ARP_WAIT);
                if !macs.is_empty() {
                    return Err(format!("{a} still answered by {macs:?}"));
                }
            }
            Ok(())
        })
        .await
        .unwrap_or_else(|e| panic!("{e}"));
        eprintln!(
            "check: Secret made unusable ({why}): every speaker 503 on /readyz, nobody answers"
        );
    }
    put_key(&client, MEMBERLIST_SECRET, &random_key(32)).await;
    eventually("answered again with a good key", WAIT, || async {
        for a in &addrs {
            if arp_answerers(&probe, *a, 2, ARP_WAIT).len() != 1 {
                return Err(format!("{a} not answered by exactly one"));
            }
        }
        Ok(())
    })
    .await
    .expect("back");
    drop(probe);
    drop(client);
    lab.down().expect("down");
}

// ---------------------------------------------------------------------------
// d. Malformed frame storm.

fn xorshift(s: &mut u64) -> u64 {
    *s ^= *s << 13;
    *s ^= *s >> 7;
    *s ^= *s << 17;
    *s
}

fn solicit(from: MacAddr, src: Ipv6Addr, target: Ipv6Addr) -> Vec<u8> {
    let o = target.octets();
    let group = Ipv6Addr::from([
        0xff, 0x02, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0xff, o[13], o[14], o[15],
    ]);
    NdpFrame {
        eth_dst: MacAddr::for_ipv6_multicast(&group),
        eth_src: from,
        traffic_class_flow: 0,
        src,
        dst: group,
        message: NdpMessage::Solicit(NeighborSolicit {
            reserved: 0,
            target,
            options: vec![NdpOption::SourceLinkLayer(from)],
        }),
        padding: vec![],
    }
    .encode()
}

/// Rewrites the ICMPv6 checksum of an NDP frame after a change, so that only the
/// intended defect remains.
fn fix_checksum(f: &mut [u8]) {
    let src = Ipv6Addr::from(<[u8; 16]>::try_from(&f[22..38]).unwrap());
    let dst = Ipv6Addr::from(<[u8; 16]>::try_from(&f[38..54]).unwrap());
    let sum = icmpv6_checksum(&src, &dst, &f[54..]);
    f[56..58].copy_from_slice(&sum.to_be_bytes());
}

/// Malformed frame number `i`: ARP with a wrong length, hlen, plen, opcode or
/// hardware/protocol type, and NDP truncated, with a bad checksum, a zero-length
/// option, a non-zero code or a payload length beyond the frame; half of them about
/// `ours`, the rest about random pool addresses.
fn malformed(i: u64, s: &mut u64, mac: MacAddr, ours: Ipv4Addr) -> Vec<u8> {
    let r = xorshift(s);
    let v4 = if i.is_multiple_of(2) {
        ours
    } else {
        Ipv4Addr::new(198, 51, 100, (r >> 8) as u8)
    };
    let v6 = Ipv6Addr::new(0x2001, 0xdb8, 0x100, 0, 0, 0, 0, (r >> 16) as u16);
    let src6 = Ipv6Addr::new(0x2001, 0xdb8, 2, 0, 0, 0, 0, 0x200);
    match i % 10 {
        0 => {
            let mut f = arp_request(mac, CLIENT_V4, v4);
            f.truncate(14 + (r % 28) as usize);
            f
        }
        1 => {
            let mut f = arp_request(mac, CLIENT_V4, v4);
            f[18] = if r as u8 == 6 { 7 } else { r as u8 };
            f
        }
        2 => {
            let mut f = arp_request(mac, CLIENT_V4, v4);
            f[19] = if r as u8 == 4 { 16 } else { r as u8 };
            f
        }
        3 => {
            let mut f = arp_request(mac, CLIENT_V4, v4);
            let op = [0u16, 3, 8, 0xffff][(r % 4) as usize];
            f[20..22].copy_from_slice(&op.to_be_bytes());
            f
        }
        4 => {
            let mut f = arp_request(mac, CLIENT_V4, v4);
            if r.is_multiple_of(2) {
                f[14..16].copy_from_slice(&6u16.to_be_bytes());
            } else {
                f[16..18].copy_from_slice(&0x86ddu16.to_be_bytes());
            }
            f
        }
        5 => {
            let mut f = solicit(mac, src6, v6);
            f.truncate(55 + (r % 30) as usize);
            f
        }
        6 => {
            let mut f = solicit(mac, src6, v6);
            f[56] ^= 1 + (r as u8 & 0x7f);
            f
        }
        7 => {
            let mut f = solicit(mac, src6, v6);
            f[79] = 0; // option length 0 (RFC 4861 4.6: discard)
            fix_checksum(&mut f);
            f
        }
        8 => {
            let mut f = solicit(mac, src6, v6);
            f[55] = 1 + (r as u8 % 250);
            fix_checksum(&mut f);
            f
        }
        _ => {
            let mut f = solicit(mac, src6, v6);
            f[18..20].copy_from_slice(&(200u16 + (r % 100) as u16).to_be_bytes());
            f
        }
    }
}

#[derive(Debug, Default)]
struct ProbeStats {
    answered: u64,
    unanswered: u64,
    latencies_ms: Vec<f64>,
}

fn probe_loop(
    sock: &PacketSock,
    target: Ipv4Addr,
    stop: &AtomicBool,
    limit: Duration,
) -> ProbeStats {
    let mut st = ProbeStats::default();
    let end = Instant::now() + limit;
    while !stop.load(Ordering::Relaxed) && Instant::now() < end {
        match arp_ask(sock, target, ARP_WAIT).1 {
            Some(t) => {
                st.answered += 1;
                st.latencies_ms.push(t.as_secs_f64() * 1000.0);
            }
            None => st.unanswered += 1,
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    st.latencies_ms.sort_by(|a, b| a.total_cmp(b));
    st
}

fn latency_line(what: &str, st: &ProbeStats) -> String {
    format!(
        "{what}: ARP probes answered {}, unanswered {}; reply latency p50 {:.3} ms, p99 {:.3} ms, max {:.3} ms",
        st.answered,
        st.unanswered,
        percentile(&st.latencies_ms, 0.5),
        percentile(&st.latencies_ms, 0.99),
        st.latencies_ms.last().copied().unwrap_or(f64::NAN)
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_frame_storm_is_ignored_and_valid_requests_still_answered() {
    let (lab, client) = up(bare(2)).await;
    SpeakerSetup {
        l2: json!({}),
        announce_nodes: vec![],
        replicas: 1,
        ..SpeakerSetup::default()
    }
    .run(&lab, &client)
    .await;
    let lb = single_v4(&client, APP).await;
    let probe = PacketSock::open(CLIENT_NS, "eth0");
    let leader = eventually("announced", WAIT, || async {
        let macs = arp_answerers(&probe, lb, 2, ARP_WAIT);
        match macs.len() {
            1 => node_of_mac(&lab, *macs.iter().next().unwrap()).ok_or("unknown MAC".into()),
            _ => Err(format!("answered by {macs:?}")),
        }
    })
    .await
    .expect("leader");
    let nodes = node_names(&lab);
    let pids: BTreeMap<String, i32> = nodes
        .iter()
        .map(|n| {
            let pid = speaker_pid(&lab, n);
            (
                n.clone(),
                pid.unwrap_or_else(|| panic!("speaker on {n} not running")),
            )
        })
        .collect();
    let rss_before: BTreeMap<String, (u64, u64)> = pids
        .iter()
        .map(|(n, p)| (n.clone(), rss_kib(*p).expect("rss")))
        .collect();
    let counter = |m: &str, name: &str| metric(m, name, &format!("ip=\"{lb}\"")).unwrap_or(0.0);
    // Metrics are refreshed every second: settle, then read.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let m0 = metrics(&lab, &leader);
    let req0 = counter(&m0, "metallb_layer2_requests_received_total");
    let resp0 = counter(&m0, "metallb_layer2_responses_sent_total");
    let calm = probe_loop(&probe, lb, &AtomicBool::new(false), Duration::from_secs(2));
    eprintln!("figure: {}", latency_line("before the storm", &calm));
    assert_eq!(calm.unanswered, 0, "unanswered before any storm");

    // The storm: at most 200,000 frames or 10 s, from the client's eth0.
    let stop = Arc::new(AtomicBool::new(false));
    let storm_sock = PacketSock::open(CLIENT_NS, "eth0");
    let storm = {
        let stop = stop.clone();
        std::thread::spawn(move || {
            let mut s = 0x9e37_79b9_7f4a_7c15u64;
            let (mut sent, mut failed) = (0u64, 0u64);
            let t0 = Instant::now();
            // Paced at about 25,000 frames/s (batches of 250 every 10 ms), so the
            // storm lasts long enough for dozens of probes; at most 10 s.
            for i in 0..200_000u64 {
                if t0.elapsed() > Duration::from_secs(10) {
                    break;
                }
                if i.is_multiple_of(250) {
                    let due = Duration::from_micros(i * 40);
                    if let Some(wait) = due.checked_sub(t0.elapsed()) {
                        std::thread::sleep(wait);
                    }
                }
                let f = malformed(i, &mut s, storm_sock.mac, lb);
                match storm_sock.send(&f) {
                    Ok(()) => sent += 1,
                    Err(_) => {
                        failed += 1;
                        std::thread::sleep(Duration::from_micros(50));
                    }
                }
            }
            stop.store(true, Ordering::Relaxed);
            (sent, failed, t0.elapsed())
        })
    };
    let probe = Arc::new(probe);
    let during = {
        let (probe, stop) = (probe.clone(), stop.clone());
        std::thread::spawn(move || probe_loop(&probe, lb, &stop, Duration::from_secs(30)))
    };
    // Sample the speakers' RSS while the storm runs.
    let mut rss_peak_during: BTreeMap<String, u64> = BTreeMap::new();
    while !storm.is_finished() {
        for (n, p) in &pids {
            if let Some((rss, _)) = rss_kib(*p) {
                let e = rss_peak_during.entry(n.clone()).or_default();
                *e = (*e).max(rss);
            }
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let (sent, failed, took) = storm.join().expect("storm thread");
    let during = during.join().expect("probe thread");
    eprintln!(
        "figure: storm of {sent} malformed ARP/NDP frames in {took:?} ({:.0} frames/s; {failed} sends refused by the client's queue)",
        sent as f64 / took.as_secs_f64()
    );
    eprintln!("figure: {}", latency_line("during the storm", &during));
    std::thread::sleep(Duration::from_secs(1));
    let after = probe_loop(&probe, lb, &AtomicBool::new(false), Duration::from_secs(2));
    eprintln!("figure: {}", latency_line("after the storm", &after));

    // Every speaker still runs, its RSS barely moved, and valid requests are answered.
    for (n, p) in &pids {
        assert!(process::alive(*p), "speaker on {n} died during the storm");
        assert_eq!(speaker_pid(&lab, n), Some(*p), "speaker on {n} restarted");
        let (rss, hwm) = rss_kib(*p).expect("rss");
        let (rss0, hwm0) = rss_before[n];
        eprintln!(
            "figure: speaker {n}: RSS {rss0} -> {rss} KiB (peak sampled during the storm {} KiB), VmHWM {hwm0} -> {hwm} KiB",
            rss_peak_during.get(n).copied().unwrap_or(0)
        );
        assert!(
            rss <= rss0 + 4096,
            "speaker on {n} grew from {rss0} to {rss} KiB"
        );
    }
    assert!(sent >= 10_000, "the storm sent only {sent} frames");
    assert!(
        during.answered + during.unanswered > 0,
        "no probe ran during the storm"
    );
    assert!(
        during.answered > 0,
        "no valid request answered during the storm"
    );
    assert!(
        after.answered > 0 && after.unanswered == 0,
        "after the storm: {after:?}"
    );

    // The malformed frames were not taken for requests: the leader's request counter
    // grew by at most the valid probes (about half the storm targeted this address).
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let m1 = metrics(&lab, &leader);
    let probes = (calm.answered
        + calm.unanswered
        + during.answered
        + during.unanswered
        + after.answered
        + after.unanswered) as f64;
    let answered = (calm.answered + during.answered + after.answered) as f64;
    let dreq = counter(&m1, "metallb_layer2_requests_received_total") - req0;
    let dresp = counter(&m1, "metallb_layer2_responses_sent_total") - resp0;
    eprintln!(
        "check: leader {leader} counted {dreq} requests and {dresp} responses for {lb}; {probes} valid probes sent, {answered} answered"
    );
    assert!(
        dreq <= probes,
        "malformed frames counted as requests: {dreq} > {probes}"
    );
    assert!(
        dresp >= answered,
        "answered probes not counted: {dresp} < {answered}"
    );
    // The announcer counted the storm's frames as malformed (refused by the decoder,
    // not taken for requests): about half the storm is ARP, which every speaker
    // receives, and all of it is malformed; allow for frames the kernel dropped.
    let malformed = |m: &str| metric(m, "ferrolb_speaker_frames_total", "outcome=\"malformed\"");
    let dmal = malformed(&m1)
        .expect("ferrolb_speaker_frames_total{outcome=\"malformed\"} exported")
        - malformed(&m0).unwrap_or(0.0);
    let frames: Vec<&str> = m1
        .lines()
        .filter(|l| l.starts_with("ferrolb_speaker_frames_total"))
        .collect();
    eprintln!("check: leader {leader} counted {dmal} malformed frames of {sent} sent: {frames:?}");
    assert!(
        dmal >= 1000.0,
        "malformed frames not counted: {dmal} of {sent} sent ({frames:?})"
    );
    drop(client);
    lab.down().expect("down");
}
