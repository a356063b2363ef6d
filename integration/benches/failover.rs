//! Layer-2 failover on the lab, as a client sees it: the client sends an HTTP request
//! to the LoadBalancer address every 10 ms; the leader node is failed abruptly
//! (`lab node-fail`: link down, every process killed), and the gap is the time from the
//! failure until a request succeeds again through the new leader. Then the graceful
//! case: the leader's speaker is restarted (SIGTERM) and the failed requests are
//! counted. Prints median, p99 and spread over `FERROLB_BENCH_TRIALS` trials (default 20).
//!
//! The pods run on the control-plane node and only workers announce, so failing the
//! leader never takes pods away: the gap is the announcement's alone.
//!
//! Needs root, the Go harness and built `ferrolb-controller` / `ferrolb-speaker`.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use ferrolb_integration::lab::{Lab, eventually};
use ferrolb_integration::testkit::frames::spawn_in_netns;
use ferrolb_integration::testkit::stats::Samples;
use ferrolb_integration::testkit::{self as kit, APP, APP_NS, CLIENT_NS, EchoService};
use serde_json::json;

const LB_IP: &str = "198.51.100.10";

fn print_summary(name: &str, v: Vec<f64>) {
    let v = Samples::new(v);
    println!(
        "{name}: median {:.0} ms, p99 {:.0} ms, min {:.0} ms, max {:.0} ms over {} trials",
        v.median(),
        v.percentile(0.99),
        v.min(),
        v.max(),
        v.len()
    );
}

/// One request from inside the client's network namespace; true when a pod answered.
fn request(addr: SocketAddr) -> bool {
    let Ok(mut s) = TcpStream::connect_timeout(&addr, Duration::from_millis(100)) else {
        return false;
    };
    let _ = s.set_read_timeout(Some(Duration::from_millis(200)));
    let _ = s.set_write_timeout(Some(Duration::from_millis(100)));
    if s.write_all(b"GET / HTTP/1.0\r\nHost: lb\r\n\r\n").is_err() {
        return false;
    }
    let mut buf = Vec::new();
    let _ = s.read_to_end(&mut buf);
    buf.starts_with(b"HTTP/1.") && buf.windows(4).any(|w| w == b" 200")
}

/// A thread in the client's namespace sending a request every 10 ms and reporting
/// (send time, success) until `stop` is dropped or 120 s have passed.
fn start_prober() -> (mpsc::Receiver<(Instant, bool)>, mpsc::Sender<()>) {
    let (tx, rx) = mpsc::channel();
    let (stop_tx, stop_rx) = mpsc::channel::<()>();
    // This thread alone enters the client's namespace: nothing it sends can leave the
    // lab, and the rest of the process stays in the root namespace.
    spawn_in_netns(CLIENT_NS, move || {
        let addr: SocketAddr = format!("{LB_IP}:80").parse().expect("addr");
        let end = Instant::now() + Duration::from_secs(120);
        let mut next = Instant::now();
        while Instant::now() < end {
            match stop_rx.try_recv() {
                Err(mpsc::TryRecvError::Empty) => {}
                _ => return,
            }
            let at = Instant::now();
            let ok = request(addr);
            if tx.send((at, ok)).is_err() {
                return;
            }
            next += Duration::from_millis(10);
            let now = Instant::now();
            if next > now {
                std::thread::sleep(next - now);
            } else {
                next = now;
            }
        }
    });
    (rx, stop_tx)
}

/// The node whose MAC the client resolves the address to, asking afresh; retried for a
/// while, since right after a node rejoins the address may be changing hands.
fn leader(lab: &Lab) -> String {
    let ip = LB_IP.parse().expect("ip");
    let end = Instant::now() + Duration::from_secs(20);
    loop {
        if let Some(who) = kit::announcer(lab, ip, true) {
            return who;
        }
        assert!(Instant::now() < end, "nobody announces {LB_IP} for 20 s");
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// The longest time between two successful requests around the event at `t0`: the
/// interruption the client saw. Returns once requests have succeeded for 1 s after a
/// failure (2 s if none failed).
fn outage(rx: &mpsc::Receiver<(Instant, bool)>, t0: Instant) -> Duration {
    let mut last_ok: Option<Instant> = None;
    let mut worst = Duration::ZERO;
    let mut failed = false;
    let mut ok_since: Option<Instant> = None;
    loop {
        let (at, ok) = rx
            .recv_timeout(Duration::from_secs(30))
            .expect("prober alive");
        assert!(
            t0.elapsed() < Duration::from_secs(40),
            "no recovery 40 s after the event"
        );
        if !ok {
            ok_since = None;
            failed |= at > t0;
            continue;
        }
        if let Some(prev) = last_ok
            && at > t0
        {
            worst = worst.max(at.duration_since(prev));
        }
        last_ok = Some(at);
        let from = *ok_since.get_or_insert(at);
        let quiet = Duration::from_secs(if failed { 1 } else { 2 });
        if at > t0 && at.duration_since(from) >= quiet {
            return worst;
        }
    }
}

async fn settle(lab: &Lab) {
    eventually("address answers", Duration::from_secs(60), || async {
        lab.curl(
            "client",
            &format!("http://{LB_IP}/"),
            Duration::from_secs(1),
        )
        .map(|_| ())
        .map_err(|e| e.to_string())
    })
    .await
    .expect("address answers");
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let trials = kit::env_usize("FERROLB_BENCH_TRIALS", 20);
    let (lab, client) = kit::up(kit::bare(3)).await;
    kit::install_crds(&lab, &client).await;
    // The key as `kubectl create secret generic --from-literal` makes it: hex text.
    let key: String = kit::random_key(32)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    kit::put_key(&client, kit::MEMBERLIST_SECRET, key.as_bytes()).await;
    kit::apply_pool(&client, "bench", &["198.51.100.10-198.51.100.12"]).await;
    kit::apply_l2(
        &client,
        "workers",
        json!({"nodeSelectors": [{"matchExpressions": [{"key": "node-role.kubernetes.io/control-plane", "operator": "DoesNotExist"}]}]}),
    )
    .await;
    // Pods on the control-plane node only: failing a worker never removes an endpoint.
    let on_control_plane = json!({"nodeSelector": {"node-role.kubernetes.io/control-plane": ""}});
    kit::apply_echo(&client, APP_NS, APP, 2, on_control_plane).await;
    EchoService::new(APP).apply(&client, APP_NS, APP).await;
    kit::wait_running_pods(&client, APP_NS, APP, 2).await;
    kit::start_ferrolb(&lab);
    settle(&lab).await;

    println!("failover on the lab: a request every 10 ms from the client, {trials} trials");
    let mut abrupt = Vec::new();
    for t in 0..trials {
        let old = leader(&lab);
        let (rx, stop) = start_prober();
        std::thread::sleep(Duration::from_millis(200));
        let t0 = Instant::now();
        lab.node_fail(&old).expect("node-fail");
        let gap = outage(&rx, t0);
        drop(stop);
        let new = leader(&lab);
        assert_ne!(new, old, "the address did not move");
        println!(
            "  abrupt {:2}: {old} failed, {new} took over; longest gap between answers {:.0} ms",
            t + 1,
            gap.as_secs_f64() * 1000.0
        );
        abrupt.push(gap.as_secs_f64() * 1000.0);
        lab.node_recover(&old).expect("node-recover");
        // A bare lab restarts only Kubernetes' own daemons on recovery.
        lab.restart_speaker(&old).expect("speaker after recovery");
        // Let the recovered node rejoin (it may take its addresses back) before the next trial.
        std::thread::sleep(Duration::from_secs(5));
        settle(&lab).await;
        leader(&lab);
    }
    print_summary("abrupt node failure, longest gap between answers", abrupt);

    let mut graceful = Vec::new();
    for t in 0..trials {
        let old = leader(&lab);
        let (rx, stop) = start_prober();
        std::thread::sleep(Duration::from_millis(200));
        let t0 = Instant::now();
        lab.restart_speaker(&old).expect("restart speaker");
        // Count failures for 3 s after the restart began.
        let mut failed = 0u32;
        while let Ok((at, ok)) = rx.recv_timeout(Duration::from_secs(5)) {
            if at > t0 && !ok {
                failed += 1;
            }
            if at.duration_since(t0) > Duration::from_secs(3) {
                break;
            }
        }
        drop(stop);
        println!(
            "  graceful {:2}: speaker on {old} restarted, {failed} failed requests",
            t + 1
        );
        graceful.push(f64::from(failed) * 10.0);
        std::thread::sleep(Duration::from_secs(2));
        settle(&lab).await;
    }
    print_summary(
        "graceful speaker restart, failed requests x 10 ms",
        graceful,
    );
    lab.down().expect("lab down");
}
