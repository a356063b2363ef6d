//! ARP reply latency and receive-loop CPU of the real announcer, in two
//! network namespaces joined by a veth pair (`announce::veth_harness`). Needs root.
//!
//!     cargo bench -p ferrolb-speaker --bench arp_latency
//!
//! For each socket mode (the speaker's BPF-filtered socket, then an
//! unfiltered one for comparison) it
//! 1. starts the announcer in namespace A leading 198.51.100.7,
//! 2. from namespace B sends 1,000 ARP requests one at a time on a packet
//!    socket and times request-sent to reply-received (each wait is bounded
//!    to 100 ms; a missing reply is counted, not timed),
//! 3. reads the receive thread's CPU time and the frames it was handed over
//!    3 s idle, then over 3 s of UDP from B to A's own address at a bounded
//!    20,000 packets/s, which is traffic the announcer must never see.
//!
//! Steps 2 and 3 are repeated `FERROLB_BENCH_RUNS` times (default 3) per mode;
//! each run prints its figures, then the median and spread (min..max) over runs.
//!
//! The same binary is re-executed inside the namespaces (`--child`,
//! `--requester`, `--flood`) for the parts that must run there.

use std::net::{Ipv4Addr, UdpSocket};
use std::str::FromStr;
use std::time::{Duration, Instant};

use ferrolb_speaker::announce::iface::{InterfaceSource, SysfsInterfaces};
use ferrolb_speaker::announce::socket::{L2Socket, PacketSocket};
use ferrolb_speaker::announce::veth_harness::{
    self, ADDR_A4, ADDR_B4, IFACE, LB4, Proc, VethPair, require_root, spawn_announcer,
};
use ferrolb_speaker::packet::{ArpFrame, ArpOp, MacAddr};

const REQUESTS: usize = 1000;
const WARMUP: usize = 50;
const FLOOD_PPS: u64 = 20_000;
const WINDOW: Duration = Duration::from_secs(3);

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let arg = |name: &str| -> Option<String> {
        args.iter()
            .position(|a| a == name)
            .and_then(|i| args.get(i + 1).cloned())
    };
    if args.iter().any(|a| a == "--child") {
        veth_harness::run_announcer_child(args.iter().any(|a| a == "--unfiltered"))
            .expect("announcer");
        return;
    }
    if let Some(n) = arg("--requester") {
        requester(n.parse().expect("count"));
        return;
    }
    if let Some(secs) = arg("--flood") {
        flood(Duration::from_secs(secs.parse().expect("seconds")));
        return;
    }
    // `cargo test` runs benches once in test mode; a benchmark needing root
    // and namespaces has nothing to check there.
    if args.iter().any(|a| a == "--test") || !args.iter().any(|a| a == "--bench") {
        println!("arp_latency: run with `cargo bench` (as root) for figures");
        return;
    }
    orchestrate();
}

/// In namespace B: times `n` ARP requests for LB4, printing microseconds.
fn requester(n: usize) {
    let facts = SysfsInterfaces::default().list().expect("interfaces");
    let lan = facts.iter().find(|f| f.name == IFACE).expect("lan0 in B");
    let sock = PacketSocket::open(lan, Duration::from_millis(20)).expect("packet socket");
    let me = Ipv4Addr::from_str(ADDR_B4).unwrap();
    let target = Ipv4Addr::from_str(LB4).unwrap();
    let request = ArpFrame {
        eth_dst: MacAddr::BROADCAST,
        eth_src: lan.mac,
        op: ArpOp::Request,
        sender_mac: lan.mac,
        sender_ip: me,
        target_mac: MacAddr::ZERO,
        target_ip: target,
        padding: vec![0; 18],
    }
    .encode();
    let mut buf = vec![0u8; 2048];
    let mut times = Vec::with_capacity(n);
    let mut lost = 0;
    for _ in 0..n {
        let start = Instant::now();
        sock.send(&request).expect("send request");
        let deadline = start + Duration::from_millis(100);
        let mut got = None;
        while Instant::now() < deadline {
            if let Ok(Some(len)) = sock.recv(&mut buf)
                && let Ok(f) = ArpFrame::decode(&buf[..len])
                && f.op == ArpOp::Reply
                && f.sender_ip == target
                && f.target_ip == me
            {
                got = Some(start.elapsed());
                break;
            }
        }
        match got {
            Some(d) => times.push(d.as_micros().to_string()),
            None => lost += 1,
        }
    }
    println!("flb: lat {}", times.join(" "));
    println!("flb: lost {lost}");
    println!("flb: end");
}

/// In namespace B: UDP to A's own address at FLOOD_PPS for `dur`.
fn flood(dur: Duration) {
    let sock = UdpSocket::bind((ADDR_B4, 0)).expect("bind");
    sock.connect((ADDR_A4, 9)).expect("connect");
    let payload = [0u8; 64];
    let start = Instant::now();
    let mut sent: u64 = 0;
    while start.elapsed() < dur {
        // Pace in 1 ms steps: send what is due, then sleep.
        let due = (start.elapsed().as_micros() as u64) * FLOOD_PPS / 1_000_000;
        while sent < due {
            // ICMP port unreachable may come back as an error; keep going.
            let _ = sock.send(&payload);
            sent += 1;
        }
        std::thread::sleep(Duration::from_millis(1));
    }
    println!("flb: sent {sent}");
    println!("flb: end");
}

struct Stats {
    frames: u64,
    cpu_us: u64,
}

fn stats(ann: &mut Proc) -> Stats {
    let lines = ann.request("stats").expect("stats");
    let line = lines
        .iter()
        .find(|l| l.starts_with("flb: stats"))
        .expect("stats line");
    let field = |k: &str| -> u64 {
        line.split_whitespace()
            .find_map(|w| w.strip_prefix(k))
            .and_then(|v| v.parse().ok())
            .expect("stats field")
    };
    Stats {
        frames: field("frames="),
        cpu_us: field("thread_cpu_us="),
    }
}

fn run_in_b(pair: &VethPair, exe: &str, args: &[&str], timeout: Duration) -> Vec<String> {
    let mut cmd = pair.cmd(&pair.b, exe);
    cmd.args(args);
    let mut p = Proc::spawn(cmd).expect("spawn in B");
    let mut out = Vec::new();
    let deadline = Instant::now() + timeout;
    while let Some(left) = deadline.checked_duration_since(Instant::now()) {
        match p.wait_line(left, |l| l.starts_with("flb: ")) {
            Some(l) if l == "flb: end" => break,
            Some(l) => out.push(l),
            None => break,
        }
    }
    let _ = p.wait_exit(Duration::from_secs(5));
    out
}

/// Median and spread (min..max) of `v` over runs.
fn summary(what: &str, mut v: Vec<f64>) {
    v.sort_by(f64::total_cmp);
    println!(
        "{what}: median {:.2}, spread {:.2}..{:.2} over {} runs",
        v[v.len() / 2],
        v[0],
        v[v.len() - 1],
        v.len()
    );
}

fn pct(sorted: &[u64], p: usize) -> u64 {
    sorted[(sorted.len() - 1) * p / 100]
}

fn latency(pair: &VethPair, exe: &str, n: usize) -> (Vec<u64>, u64) {
    let out = run_in_b(
        pair,
        exe,
        &["--requester", &n.to_string()],
        Duration::from_secs(n as u64 / 5 + 30),
    );
    let mut lat: Vec<u64> = out
        .iter()
        .find_map(|l| l.strip_prefix("flb: lat"))
        .map(|s| s.split_whitespace().map(|v| v.parse().unwrap()).collect())
        .unwrap_or_default();
    let lost = out
        .iter()
        .find_map(|l| l.strip_prefix("flb: lost "))
        .and_then(|v| v.parse().ok())
        .unwrap_or(n as u64);
    lat.sort_unstable();
    (lat, lost)
}

fn cpu_window(ann: &mut Proc, during: impl FnOnce()) -> (f64, f64) {
    let s0 = stats(ann);
    let t0 = Instant::now();
    during();
    let s1 = stats(ann);
    let secs = t0.elapsed().as_secs_f64();
    (
        (s1.cpu_us - s0.cpu_us) as f64 / 1000.0 / secs,
        (s1.frames - s0.frames) as f64 / secs,
    )
}

fn orchestrate() {
    require_root("the arp_latency benchmark");
    let exe = std::env::current_exe()
        .expect("bench binary")
        .to_string_lossy()
        .into_owned();
    let runs = std::env::var("FERROLB_BENCH_RUNS")
        .ok()
        .and_then(|v| v.parse::<usize>().ok())
        .unwrap_or(3)
        .max(1);
    let pair = VethPair::create("bench").expect("namespaces");
    println!(
        "ARP reply latency seen by the requester ({REQUESTS} sequential requests over a veth pair), \
         and the announcer's receive thread while idle and under {FLOOD_PPS} UDP packets/s"
    );
    for (label, extra) in [
        ("BPF filter (speaker)", None),
        ("no filter (comparison)", Some("--unfiltered")),
    ] {
        let mut args = vec!["--child"];
        args.extend(extra);
        let mut ann = spawn_announcer(&pair, &pair.a, &exe, &args).expect("announcer");
        ann.request(&format!("lead {LB4}")).expect("lead");
        let _ = latency(&pair, &exe, WARMUP);
        println!("\n{label}");
        let (mut medians, mut p99s, mut flood_cpus, mut flood_frames_all) =
            (Vec::new(), Vec::new(), Vec::new(), Vec::new());
        for r in 1..=runs {
            let (lat, lost) = latency(&pair, &exe, REQUESTS);
            assert!(!lat.is_empty(), "no ARP replies at all");
            let (idle_cpu, idle_frames) = cpu_window(&mut ann, || std::thread::sleep(WINDOW));
            let (flood_cpu, flood_frames) = cpu_window(&mut ann, || {
                let out = run_in_b(
                    &pair,
                    &exe,
                    &["--flood", &WINDOW.as_secs().to_string()],
                    WINDOW + Duration::from_secs(30),
                );
                assert!(
                    out.iter().any(|l| l.starts_with("flb: sent")),
                    "flood: {out:?}"
                );
            });
            println!(
                "  run {r}: latency us: median {} p99 {} | p10 {} p90 {} | min {} max {} | n {} lost {lost}",
                pct(&lat, 50),
                pct(&lat, 99),
                pct(&lat, 10),
                pct(&lat, 90),
                lat[0],
                lat[lat.len() - 1],
                lat.len(),
            );
            println!(
                "  run {r}: receive thread: idle {idle_cpu:.2} ms CPU/s, {idle_frames:.0} frames/s; \
                 UDP flood {flood_cpu:.2} ms CPU/s, {flood_frames:.0} frames/s to user space"
            );
            medians.push(pct(&lat, 50) as f64);
            p99s.push(pct(&lat, 99) as f64);
            flood_cpus.push(flood_cpu);
            flood_frames_all.push(flood_frames);
        }
        summary("  latency median (us)", medians);
        summary("  latency p99 (us)", p99s);
        summary("  receive thread CPU under the flood (ms/s)", flood_cpus);
        summary(
            "  frames/s handed to user space under the flood",
            flood_frames_all,
        );
        ann.send("quit").expect("quit");
        let _ = ann.wait_exit(Duration::from_secs(10));
    }
}
