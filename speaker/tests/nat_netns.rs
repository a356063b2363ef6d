//! The real NodePort DNAT table (`NftTable`, the `nft` binary) in network namespaces,
//! against a stand-in for kube-proxy's NodePort rules:
//!
//! ```text
//! client (192.0.2.200, 2001:db8:2::200) -- node (192.0.2.101, 2001:db8:2::101) -- pod
//!                                           NodePort 30080: DNAT to the pod + masquerade
//! ```
//!
//! The client reaches the LoadBalancer address (routed to the node) on port 80 only while
//! the node's table forwards it to the NodePort; the replies come from the address;
//! direct NodePort clients work throughout; clearing removes the table, also one an
//! earlier run left. The node's `nft` runs from a thread that entered the node's
//! namespace (a child process inherits the thread's namespace). Needs root; the
//! namespaces are removed at the end, also on failure.

use std::io::{Read, Write};
use std::net::{IpAddr, SocketAddr, TcpListener};
use std::os::fd::AsFd;
use std::process::{Command, Output, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use ferrolb_speaker::announce::veth_harness::require_root;
use ferrolb_speaker::nat::nft::{NftTable, TABLE};
use ferrolb_speaker::nat::{NatEntry, NatRules, NatTable, Proto, family_sources};
use ipnet::IpNet;

const LB4: &str = "198.51.100.10";
const LB6: &str = "2001:db8:100::10";
const NODE4: &str = "192.0.2.101";
const NODE6: &str = "2001:db8:2::101";
const POD4: &str = "198.18.0.2";
const POD6: &str = "2001:db8:18::2";
const NODE_PORT: u16 = 30080;
const POD_PORT: u16 = 8080;
const BODY: &str = "pod-answer";

/// Three namespaces, removed on drop.
struct Netns {
    client: String,
    node: String,
    pod: String,
}

impl Netns {
    fn create() -> Netns {
        // Unique per test too: the tests of this file run in parallel.
        static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let id = format!(
            "{}{}",
            std::process::id() % 100_000,
            NEXT.fetch_add(1, Ordering::Relaxed)
        );
        let n = Netns {
            client: format!("flb-t-natc{id}"),
            node: format!("flb-t-natn{id}"),
            pod: format!("flb-t-natp{id}"),
        };
        for ns in [&n.client, &n.node, &n.pod] {
            run("ip", &["netns", "add", ns]);
            n.ip(ns, &["link", "set", "lo", "up"]);
        }
        // The veth ends are created inside the namespaces, never in the root one.
        run(
            "ip",
            &[
                "link", "add", "c0", "netns", &n.client, "type", "veth", "peer", "name", "n0",
                "netns", &n.node,
            ],
        );
        run(
            "ip",
            &[
                "link", "add", "p0", "netns", &n.pod, "type", "veth", "peer", "name", "n1",
                "netns", &n.node,
            ],
        );
        let addrs: [(&str, &str, &str); 6] = [
            (&n.client, "c0", "192.0.2.200/24"),
            (&n.client, "c0", "2001:db8:2::200/64"),
            (&n.node, "n0", "192.0.2.101/24"),
            (&n.node, "n0", "2001:db8:2::101/64"),
            (&n.node, "n1", "198.18.0.1/24"),
            (&n.pod, "p0", "198.18.0.2/24"),
        ];
        for (ns, dev, a) in addrs {
            n.ip(ns, &["addr", "add", a, "dev", dev, "nodad"]);
        }
        n.ip(
            &n.node,
            &["addr", "add", "2001:db8:18::1/64", "dev", "n1", "nodad"],
        );
        n.ip(
            &n.pod,
            &["addr", "add", "2001:db8:18::2/64", "dev", "p0", "nodad"],
        );
        for (ns, dev) in [
            (&n.client, "c0"),
            (&n.node, "n0"),
            (&n.node, "n1"),
            (&n.pod, "p0"),
        ] {
            n.ip(ns, &["link", "set", dev, "up"]);
        }
        n.ip(
            &n.client,
            &["route", "add", "198.51.100.0/24", "via", NODE4],
        );
        n.ip(
            &n.client,
            &["-6", "route", "add", "2001:db8:100::/64", "via", NODE6],
        );
        // The node routes the addresses elsewhere (to the client) as a node with a
        // default route would: only the table brings its own connections back.
        n.ip(
            &n.node,
            &["route", "add", "198.51.100.0/24", "via", "192.0.2.200"],
        );
        n.ip(
            &n.node,
            &[
                "-6",
                "route",
                "add",
                "2001:db8:100::/64",
                "via",
                "2001:db8:2::200",
            ],
        );
        n.ip(&n.pod, &["route", "add", "default", "via", "198.18.0.1"]);
        n.ip(
            &n.pod,
            &["-6", "route", "add", "default", "via", "2001:db8:18::1"],
        );
        n.exec(&n.node, "sysctl", &["-qw", "net.ipv4.ip_forward=1"]);
        n.exec(
            &n.node,
            "sysctl",
            &["-qw", "net.ipv6.conf.all.forwarding=1"],
        );
        // kube-proxy's part, reduced to one NodePort: DNAT to the pod (for packets
        // arriving and for the node's own, as kube-proxy's OUTPUT rules), masquerade.
        let kp = format!(
            "table inet kube_proxy_standin {{
  chain pre {{ type nat hook prerouting priority dstnat; policy accept;
    meta nfproto ipv4 fib daddr type local tcp dport {NODE_PORT} meta mark set 0x4000 dnat ip to {POD4}:{POD_PORT}
    meta nfproto ipv6 fib daddr type local tcp dport {NODE_PORT} meta mark set 0x4000 dnat ip6 to [{POD6}]:{POD_PORT}
  }}
  chain out {{ type nat hook output priority -100; policy accept;
    meta nfproto ipv4 fib daddr type local tcp dport {NODE_PORT} meta mark set 0x4000 dnat ip to {POD4}:{POD_PORT}
    meta nfproto ipv6 fib daddr type local tcp dport {NODE_PORT} meta mark set 0x4000 dnat ip6 to [{POD6}]:{POD_PORT}
  }}
  chain post {{ type nat hook postrouting priority srcnat; policy accept;
    meta mark 0x4000 masquerade
  }}
}}
"
        );
        let o = n.exec_stdin(&n.node, "nft", &["-f", "-"], &kp);
        assert!(o.status.success(), "kube-proxy stand-in: {o:?}");
        n
    }

    fn ip(&self, ns: &str, args: &[&str]) {
        let mut a = vec!["-n", ns];
        a.extend_from_slice(args);
        run("ip", &a);
    }

    fn exec(&self, ns: &str, program: &str, args: &[&str]) -> Output {
        let mut a = vec!["netns", "exec", ns, program];
        a.extend_from_slice(args);
        Command::new("ip").args(&a).output().expect("ip netns exec")
    }

    fn exec_stdin(&self, ns: &str, program: &str, args: &[&str], input: &str) -> Output {
        let mut a = vec!["netns", "exec", ns, program];
        a.extend_from_slice(args);
        let mut c = Command::new("ip")
            .args(&a)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn");
        c.stdin
            .take()
            .unwrap()
            .write_all(input.as_bytes())
            .expect("stdin");
        c.wait_with_output().expect("wait")
    }

    /// `curl` from the client: Ok((body, the address:port that answered)).
    fn curl(&self, url: &str) -> Result<(String, String), String> {
        self.curl_from(&self.client, url)
    }

    /// `curl` from namespace `ns`.
    fn curl_from(&self, ns: &str, url: &str) -> Result<(String, String), String> {
        let o = self.exec(
            ns,
            "curl",
            &[
                "-sS",
                "-g",
                "--noproxy",
                "*",
                "--max-time",
                "2",
                "-w",
                "\n%{remote_ip}:%{remote_port}",
                url,
            ],
        );
        let text = String::from_utf8_lossy(&o.stdout).into_owned();
        if !o.status.success() {
            return Err(format!("{text}{}", String::from_utf8_lossy(&o.stderr)));
        }
        let (body, peer) = text.rsplit_once('\n').unwrap_or((&text, ""));
        Ok((body.trim().to_string(), peer.to_string()))
    }

    /// Runs `f` on a thread inside namespace `ns` (processes it spawns are inside too).
    fn within<T: Send + 'static>(&self, ns: &str, f: impl FnOnce() -> T + Send + 'static) -> T {
        let path = format!("/run/netns/{ns}");
        std::thread::spawn(move || {
            let file = std::fs::File::open(&path).expect("open netns");
            nix::sched::setns(file.as_fd(), nix::sched::CloneFlags::CLONE_NEWNET).expect("setns");
            f()
        })
        .join()
        .expect("thread in netns")
    }

    fn table(&self) -> Option<String> {
        let o = self.exec(&self.node, "nft", &["list", "table", "inet", TABLE]);
        o.status
            .success()
            .then(|| String::from_utf8_lossy(&o.stdout).into_owned())
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        for ns in [&self.client, &self.node, &self.pod] {
            let _ = Command::new("ip").args(["netns", "del", ns]).status();
        }
    }
}

fn run(program: &str, args: &[&str]) {
    let o = Command::new(program).args(args).output().expect(program);
    assert!(o.status.success(), "{program} {args:?}: {o:?}");
}

/// A tiny HTTP server in the pod's namespace on both families; stops on drop.
struct Pod {
    stop: Arc<AtomicBool>,
    handle: Option<std::thread::JoinHandle<()>>,
}

impl Pod {
    fn start(ns: &Netns) -> Pod {
        let stop = Arc::new(AtomicBool::new(false));
        let s = stop.clone();
        let path = format!("/run/netns/{}", ns.pod);
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        let handle = std::thread::spawn(move || {
            let file = std::fs::File::open(&path).expect("open netns");
            nix::sched::setns(file.as_fd(), nix::sched::CloneFlags::CLONE_NEWNET).expect("setns");
            let listeners: Vec<TcpListener> = [POD4, POD6]
                .iter()
                .map(|a| {
                    let ip: IpAddr = a.parse().unwrap();
                    let l = TcpListener::bind(SocketAddr::new(ip, POD_PORT)).expect("bind");
                    l.set_nonblocking(true).expect("nonblocking");
                    l
                })
                .collect();
            ready_tx.send(()).unwrap();
            // Bounded: at most 5 minutes even if never stopped.
            let end = Instant::now() + Duration::from_secs(300);
            while !s.load(Ordering::Relaxed) && Instant::now() < end {
                let mut idle = true;
                for l in &listeners {
                    if let Ok((mut c, _)) = l.accept() {
                        idle = false;
                        let _ = c.set_nonblocking(false);
                        let _ = c.set_read_timeout(Some(Duration::from_secs(2)));
                        let mut buf = [0u8; 1024];
                        let _ = c.read(&mut buf);
                        let _ = c.write_all(
                            format!(
                                "HTTP/1.0 200 OK\r\nContent-Length: {}\r\n\r\n{BODY}\n",
                                BODY.len() + 1
                            )
                            .as_bytes(),
                        );
                    }
                }
                if idle {
                    std::thread::sleep(Duration::from_millis(5));
                }
            }
        });
        ready_rx
            .recv_timeout(Duration::from_secs(10))
            .expect("pod listening");
        Pod {
            stop,
            handle: Some(handle),
        }
    }
}

impl Drop for Pod {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(h) = self.handle.take() {
            let _ = h.join();
        }
    }
}

fn rules() -> NatRules {
    NatRules {
        node_v4: Some(NODE4.parse().unwrap()),
        node_v6: Some(NODE6.parse().unwrap()),
        entries: [
            NatEntry {
                ip: LB4.parse().unwrap(),
                proto: Proto::Tcp,
                port: 80,
                node_port: NODE_PORT,
                sources: None,
            },
            NatEntry {
                ip: LB6.parse().unwrap(),
                proto: Proto::Tcp,
                port: 80,
                node_port: NODE_PORT,
                sources: None,
            },
        ]
        .into(),
    }
}

const LB4_URL: &str = "http://198.51.100.10:80/";
const LB6_URL: &str = "http://[2001:db8:100::10]:80/";

fn assert_node_port_works(ns: &Netns) {
    for url in [
        format!("http://{NODE4}:{NODE_PORT}/"),
        format!("http://[{NODE6}]:{NODE_PORT}/"),
    ] {
        let (body, _) = ns.curl(&url).unwrap_or_else(|e| panic!("{url}: {e}"));
        assert_eq!(body, BODY, "{url}");
    }
}

#[test]
fn forwards_led_addresses_to_the_node_port_and_clears() {
    require_root("forwards_led_addresses_to_the_node_port_and_clears");
    let ns = Netns::create();
    let _pod = Pod::start(&ns);
    assert_node_port_works(&ns);
    // Nothing forwards the address yet, for the client or the node itself.
    for url in [LB4_URL, LB6_URL] {
        assert!(ns.curl(url).is_err(), "{url} answered without the table");
        assert!(
            ns.curl_from(&ns.node, url).is_err(),
            "{url} answered the node without the table"
        );
    }

    let mut table = NftTable::default();
    let r = rules();
    ns.within(&ns.node, move || table.apply(&r))
        .expect("apply the table");
    let listing = ns.table().expect("table present");
    assert!(listing.contains("198.51.100.10 . 80 : 30080"), "{listing}");
    for (url, peer) in [
        (LB4_URL, "198.51.100.10:80"),
        (LB6_URL, "2001:db8:100::10:80"),
    ] {
        let (body, from) = ns.curl(url).unwrap_or_else(|e| panic!("{url}: {e}"));
        assert_eq!(body, BODY, "{url}");
        // The client talked to the address all along: replies come from it.
        assert_eq!(from, peer, "{url}");
    }
    assert_node_port_works(&ns);
    // The leader node's own connections to the address (host-network processes) are
    // rewritten too, on the output path.
    for (url, peer) in [
        (LB4_URL, "198.51.100.10:80"),
        (LB6_URL, "2001:db8:100::10:80"),
    ] {
        let (body, from) = ns
            .curl_from(&ns.node, url)
            .unwrap_or_else(|e| panic!("{url} from the node: {e}"));
        assert_eq!(
            (body.as_str(), from.as_str()),
            (BODY, peer),
            "{url} from the node"
        );
    }

    // Another port of the address is not forwarded.
    assert!(ns.curl("http://198.51.100.10:81/").is_err());

    // A new state replaces the old one whole: the IPv6 entry gone.
    let mut only4 = rules();
    only4.entries.retain(|e| e.ip.is_ipv4());
    let mut table = NftTable::default();
    ns.within(&ns.node, move || table.apply(&only4))
        .expect("apply");
    assert!(ns.curl(LB4_URL).is_ok());
    assert!(ns.curl(LB6_URL).is_err(), "IPv6 still forwarded");

    // A table left behind (a crashed speaker) is removed by the next run's clear.
    let mut fresh = NftTable::default();
    ns.within(&ns.node, move || fresh.clear()).expect("clear");
    assert_eq!(ns.table(), None);
    assert!(ns.curl(LB4_URL).is_err(), "forwarded after clear");
    assert_node_port_works(&ns);
    // Clearing without a table is fine; an empty state is no table.
    let mut again = NftTable::default();
    ns.within(&ns.node, move || {
        again.clear()?;
        again.apply(&NatRules::default())
    })
    .expect("clear twice");
    assert_eq!(ns.table(), None);
}

#[test]
fn a_failing_nft_is_an_error() {
    let mut t = NftTable::new("/nonexistent/nft");
    assert!(t.clear().is_err());
    let mut t = NftTable::new("false");
    assert!(t.apply(&rules()).is_err());
}

#[test]
fn source_ranges_let_only_their_clients_through() {
    require_root("source_ranges_let_only_their_clients_through");
    let ns = Netns::create();
    let _pod = Pod::start(&ns);
    // The entries' sources as the speaker computes them from a Service's ranges.
    let with_sources = |ranges: &[&str]| {
        let ranges: Vec<IpNet> = ranges.iter().map(|n| n.parse().unwrap()).collect();
        let mut r = rules();
        r.entries = r
            .entries
            .into_iter()
            .map(|mut e| {
                e.sources = family_sources(&ranges, e.ip);
                e
            })
            .collect();
        r
    };
    let apply = |r: NatRules| {
        let mut table = NftTable::default();
        ns.within(&ns.node, move || table.apply(&r)).expect("apply");
    };
    // Ranges holding the client (overlapping ones among them, which the kernel's
    // interval sets would refuse unmerged): it gets through on both families.
    apply(with_sources(&[
        "203.0.113.0/24",
        "192.0.2.0/24",
        "192.0.2.200/32",
        "2001:db8:2::/64",
        "2001:db8:2::200/128",
    ]));
    for url in [LB4_URL, LB6_URL] {
        let (body, _) = ns.curl(url).unwrap_or_else(|e| panic!("{url}: {e}"));
        assert_eq!(body, BODY, "{url}");
    }
    // Ranges without the client: dropped on both families, while its direct NodePort
    // traffic is untouched.
    apply(with_sources(&["203.0.113.0/24", "2001:db8:ff::/48"]));
    for url in [LB4_URL, LB6_URL] {
        assert!(
            ns.curl(url).is_err(),
            "{url} answered a client outside the ranges"
        );
    }
    assert_node_port_works(&ns);
    // IPv4 ranges only: IPv6 is open, as kube-proxy has it.
    apply(with_sources(&["203.0.113.0/24"]));
    assert!(
        ns.curl(LB4_URL).is_err(),
        "IPv4 client outside the ranges answered"
    );
    let (body, _) = ns.curl(LB6_URL).expect("IPv6 without ranges of its family");
    assert_eq!(body, BODY);
    let mut table = NftTable::default();
    ns.within(&ns.node, move || table.clear()).expect("clear");
}
