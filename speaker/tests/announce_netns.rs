//! The real announcer on real sockets: two network namespaces joined by a
//! veth pair (see `ferrolb_speaker::announce::veth_harness`). Namespace A runs a
//! `RawAnnouncer` (this test binary re-executed with `ip netns exec`, running
//! the ignored `announcer_child` test); namespace B plays the LAN, with
//! arping, a datagram to trigger the kernel's own resolution, `ip neigh`
//! and tcpdump. Needs root; the namespaces are
//! removed at the end, also on failure.

use std::time::Duration;

use ferrolb_speaker::announce::veth_harness::{
    self, IFACE, LB4, LB6, Proc, VethPair, require_root, spawn_announcer, tcpdump,
};

fn exe() -> String {
    std::env::current_exe()
        .expect("test binary path")
        .to_string_lossy()
        .into_owned()
}

/// Entry point of the announcer child; run only by `announces_in_netns`.
#[test]
#[ignore = "child process of announces_in_netns, which runs it inside a namespace"]
fn announcer_child() {
    assert!(
        std::env::var_os("FLB_ANNOUNCER_CHILD").is_some(),
        "run by announces_in_netns, not directly"
    );
    veth_harness::run_announcer_child(false).expect("announcer child");
}

fn out(o: std::process::Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// MACs in arping's "N bytes from MAC (IP)" reply lines, lower-cased.
fn arping_reply_macs(text: &str) -> Vec<String> {
    text.lines()
        .filter(|l| l.contains(" bytes from "))
        .filter_map(|l| l.split_whitespace().nth(3).map(str::to_lowercase))
        .collect()
}

fn arping(pair: &VethPair, count: &str) -> (bool, String) {
    // Bounded: `count` requests, at most 5 s.
    let o = pair
        .run(
            &pair.b,
            "arping",
            &["-c", count, "-w", "5", "-i", IFACE, LB4],
        )
        .expect("run arping");
    (o.status.success(), out(o))
}

fn neigh(pair: &VethPair, ip: &str) -> String {
    out(pair
        .run(&pair.b, "ip", &["neigh", "show", ip, "dev", IFACE])
        .expect("ip neigh"))
}

/// Sends one UDP datagram from B to `target`, then polls B's neighbour
/// table (bounded: 40 x 50 ms) until the entry carries `mac`.
fn resolved_neigh(pair: &VethPair, target: &str, mac: &str) -> String {
    let o = pair
        .run(
            &pair.b,
            "bash",
            &["-c", &format!("echo probe > /dev/udp/{target}/9")],
        )
        .expect("send datagram");
    assert!(o.status.success(), "datagram to {target}: {}", out(o));
    let mut last = String::new();
    for _ in 0..40 {
        last = neigh(pair, target);
        if last.contains(mac) {
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    last
}

#[test]
fn announces_in_netns() {
    require_root("announces_in_netns");
    let pair = VethPair::create("ann").expect("create namespaces");
    let mac = pair.mac(&pair.a).expect("MAC of lan0 in A");

    // Capture in B before the takeover, to see the burst.
    let dump = tcpdump(&pair, &pair.b, "arp or icmp6").expect("tcpdump in B");
    let mut ann: Proc = spawn_announcer(
        &pair,
        &pair.a,
        &exe(),
        &[
            "--exact",
            "announcer_child",
            "--ignored",
            "--nocapture",
            "--test-threads=1",
        ],
    )
    .expect("announcer child");

    let ok = ann.request(&format!("lead {LB4} {LB6}")).expect("lead");
    // Default interface rules pick lan0 for both families.
    assert_eq!(
        ok.last().unwrap(),
        &format!("flb: ok {LB4}={IFACE} {LB6}={IFACE}"),
        "{ok:?}"
    );

    // Takeover burst: three gratuitous ARPs and three unsolicited NAs from
    // the announcer's MAC, within a second (the burst ends at 400 ms).
    let seen = dump.lines_for(Duration::from_millis(1500));
    let garps = seen
        .iter()
        .filter(|l| {
            l.starts_with_mac(&mac) && l.contains("ARP") && l.contains(&format!("tell {LB4}"))
        })
        .count();
    let nas = seen
        .iter()
        .filter(|l| {
            l.starts_with_mac(&mac)
                && l.contains("neighbor advertisement")
                && l.contains(&format!("tgt is {LB6}"))
        })
        .count();
    assert_eq!((garps, nas), (3, 3), "capture:\n{}", seen.join("\n"));

    // arping from B: every reply carries the announcer's MAC.
    let (success, text) = arping(&pair, "3");
    let macs = arping_reply_macs(&text);
    assert!(success, "arping failed:\n{text}");
    assert_eq!(macs.len(), 3, "{text}");
    assert!(
        macs.iter().all(|m| *m == mac),
        "replies {macs:?}, ours {mac}"
    );

    // The kernel's own resolution in B learns the MAC. A datagram stands in
    // for a ping (ping is not installed everywhere); either makes the kernel
    // resolve the address, and neither gets an answer, since nobody holds the
    // address as a local one.
    for target in [LB4, LB6] {
        let n = resolved_neigh(&pair, target, &mac);
        assert!(
            n.contains(&format!("lladdr {mac}")),
            "ip neigh {target}: {n}"
        );
    }

    // Counters: arping's three requests, the kernel's ARP and NDP.
    let stats = ann.request("stats").expect("stats");
    let counters = |ip: &str| -> Vec<u64> {
        stats
            .iter()
            .find(|l| l.starts_with(&format!("flb: counters {ip} ")))
            .map(|l| {
                l.split_whitespace()
                    .skip(3)
                    .map(|n| n.parse().unwrap())
                    .collect()
            })
            .unwrap_or_default()
    };
    let c4 = counters(LB4);
    assert!(c4[0] >= 4 && c4[1] == c4[0] && c4[2] == 3, "{stats:?}");
    let c6 = counters(LB6);
    assert!(c6[0] >= 1 && c6[1] == c6[0] && c6[2] == 3, "{stats:?}");

    // Duplicate address detection: B trying to configure the led IPv6
    // address sends an NS from ::, our all-nodes NA defends it, and B's
    // kernel marks the address as failed (polled, bounded: 60 x 50 ms).
    let o = pair
        .run(
            &pair.b,
            "ip",
            &["addr", "add", &format!("{LB6}/64"), "dev", IFACE],
        )
        .expect("ip addr add");
    assert!(o.status.success(), "{}", out(o));
    let mut addr = String::new();
    for _ in 0..60 {
        addr = out(pair
            .run(&pair.b, "ip", &["-6", "addr", "show", "dev", IFACE])
            .expect("ip addr show"));
        if addr.contains("dadfailed") {
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let line = addr.lines().find(|l| l.contains(LB6)).unwrap_or_default();
    assert!(line.contains("dadfailed"), "B's address after DAD: {addr}");
    let _ = pair.run(
        &pair.b,
        "ip",
        &["addr", "del", &format!("{LB6}/64"), "dev", IFACE],
    );

    // Another host claiming the address is reported as a conflict.
    let b_mac = pair.mac(&pair.b).expect("MAC of lan0 in B");
    let o = pair
        .run(
            &pair.b,
            "arping",
            &["-U", "-c", "1", "-w", "2", "-i", IFACE, "-S", LB4, LB4],
        )
        .expect("arping -U");
    let mut conflicts = Vec::new();
    for _ in 0..50 {
        conflicts.extend(
            ann.request("conflicts")
                .expect("conflicts")
                .into_iter()
                .filter(|l| l.starts_with("flb: conflict")),
        );
        if !conflicts.is_empty() {
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(
        conflicts.contains(&format!("flb: conflict {LB4} {IFACE} {b_mac}")),
        "conflicts {conflicts:?}; arping -U: {}",
        out(o)
    );

    // Released: no answers any more.
    let ok = ann.request("lead").expect("release");
    assert_eq!(ok.last().unwrap().trim(), "flb: ok");
    let (success, text) = arping(&pair, "2");
    assert!(!success, "arping still answered:\n{text}");
    assert!(arping_reply_macs(&text).is_empty(), "{text}");

    ann.send("quit").expect("quit");
    assert!(
        ann.wait_exit(Duration::from_secs(10)).is_some(),
        "announcer child did not exit"
    );
    drop(dump);
}

trait StartsWithMac {
    fn starts_with_mac(&self, mac: &str) -> bool;
}

impl StartsWithMac for String {
    /// tcpdump -e lines read "TIME SRC > DST, ...".
    fn starts_with_mac(&self, mac: &str) -> bool {
        self.split_whitespace().nth(1) == Some(mac)
    }
}
