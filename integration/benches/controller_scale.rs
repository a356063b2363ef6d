//! Controller at scale on the lab's real API server: N LoadBalancer Services created
//! at once; prints the time until all have addresses, create-to-status latency (p50,
//! p99), the controller's peak RSS, and then, after a controller restart, the time until
//! it is ready again and how many addresses changed (must be 0).
//!
//! Figures are printed as median and spread (min..max) over `FERROLB_BENCH_RUNS`
//! repetitions (default 3). `FERROLB_BENCH_SERVICES` sets N (default 1000; 10000 is
//! supported: the lab is dual-stack and Services take IPv6 addresses from a /112, since
//! the lab's IPv4 pool ranges hold only 512 addresses; Services set
//! `allocateLoadBalancerNodePorts: false` so that N is not bounded by the NodePort range).
//!
//! Needs root, the Go harness and a release or debug `ferrolb-controller`.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use ferrolb_integration::lab::{IpFamily, Lab, LabOptions, components, eventually, topology};
use ferrolb_integration::testkit::stats::Samples;
use ferrolb_integration::testkit::{self as kit, CONTROLLER_PORT, env_usize, ingress, percentile};
use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::core::v1::Service;
use kube::api::{Api, ListParams, PostParams};
use kube::runtime::watcher;
use serde_json::json;

const BENCH_NS: &str = "bench";

fn summary(name: &str, unit: &str, v: Vec<f64>) {
    let v = Samples::new(v);
    println!(
        "{name}: median {:.1} {unit}, spread {:.1}..{:.1} {unit} over {} runs",
        v.median(),
        v.min(),
        v.max(),
        v.len()
    );
}

fn controller_pid(lab: &Lab) -> Option<i32> {
    lab.daemon_pid(components::CONTROLLER).ok()?
}

/// Peak resident set (VmHWM) of a process, in MiB.
fn peak_rss_mib(pid: i32) -> Option<f64> {
    let (_, hwm) = kit::rss_kib(pid)?;
    Some(hwm as f64 / 1024.0)
}

/// Waits (at most `limit`) until the controller answers `/readyz` with 200.
async fn wait_controller_ready(lab: &Lab, what: &str, limit: Duration) {
    eventually(what, limit, || async {
        match kit::readyz(lab, topology::CONTROL_PLANE, CONTROLLER_PORT) {
            200 => Ok(()),
            code => Err(format!("/readyz {code}")),
        }
    })
    .await
    .expect("controller ready");
}

fn service(i: usize) -> Service {
    serde_json::from_value(json!({
        "apiVersion": "v1", "kind": "Service",
        "metadata": {"name": format!("s{i:05}"), "namespace": BENCH_NS},
        "spec": {"type": "LoadBalancer", "ipFamilies": ["IPv6"], "ipFamilyPolicy": "SingleStack",
                 "allocateLoadBalancerNodePorts": false,
                 "selector": {"app": "none"}, "ports": [{"port": 80, "protocol": "TCP"}]}
    }))
    .expect("service json")
}

/// One run: create N Services, wait for all addresses; returns (total s, per-service ms).
async fn run_once(client: &kube::Client, n: usize) -> (f64, Vec<f64>) {
    let svcs: Api<Service> = Api::namespaced(client.clone(), BENCH_NS);
    // Watch first, so that no status update is missed.
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<(String, Instant)>();
    let watch_api = svcs.clone();
    let watch_task = tokio::spawn(async move {
        let mut seen = std::collections::BTreeSet::new();
        let mut stream = watcher::watcher(watch_api, watcher::Config::default()).boxed();
        while let Ok(Some(ev)) = stream.try_next().await {
            if let watcher::Event::Apply(s) | watcher::Event::InitApply(s) = ev
                && !ingress(&s).is_empty()
            {
                let name = s.metadata.name.clone().unwrap_or_default();
                if seen.insert(name.clone()) && tx.send((name, Instant::now())).is_err() {
                    return;
                }
            }
        }
    });
    tokio::time::sleep(Duration::from_millis(500)).await;
    let start = Instant::now();
    let created: BTreeMap<String, Instant> = futures::stream::iter(0..n)
        .map(|i| {
            let svcs = svcs.clone();
            async move {
                let s = service(i);
                let name = s.metadata.name.clone().unwrap_or_default();
                svcs.create(&PostParams::default(), &s)
                    .await
                    .unwrap_or_else(|e| panic!("create {name}: {e}"));
                (name, Instant::now())
            }
        })
        .buffer_unordered(16)
        .collect()
        .await;
    let mut latencies = Vec::with_capacity(n);
    let deadline = Instant::now() + Duration::from_secs(60 + n as u64 / 20);
    while latencies.len() < n {
        let left = deadline.saturating_duration_since(Instant::now());
        match tokio::time::timeout(left, rx.recv()).await {
            Ok(Some((name, at))) => {
                if let Some(c) = created.get(&name) {
                    latencies.push(at.saturating_duration_since(*c).as_secs_f64() * 1000.0);
                }
            }
            _ => panic!(
                "only {} of {n} Services got an address in time",
                latencies.len()
            ),
        }
    }
    let total = start.elapsed().as_secs_f64();
    watch_task.abort();
    (total, latencies)
}

async fn delete_all(client: &kube::Client) {
    kit::delete_services(client, BENCH_NS).await;
    eventually("bench services gone", Duration::from_secs(120), || async {
        match kit::services_left(client, BENCH_NS).await? {
            0 => Ok(()),
            left => Err(format!("{left} left")),
        }
    })
    .await
    .expect("cleanup");
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let n = env_usize("FERROLB_BENCH_SERVICES", 1000);
    let runs = env_usize("FERROLB_BENCH_RUNS", 3).max(1);
    let (lab, client) = kit::up(LabOptions {
        ip_family: IpFamily::DualStack,
        ..kit::bare(1)
    })
    .await;
    kit::install_crds(&lab, &client).await;
    kit::apply_namespace(&client, BENCH_NS).await;
    kit::apply_pool(&client, "bench", &["2001:db8:100::/112"]).await;
    lab.restart_controller().expect("start controller");
    wait_controller_ready(&lab, "controller ready", Duration::from_secs(60)).await;

    println!("controller scale on the lab: {n} LoadBalancer Services, {runs} runs");
    let mut totals = Vec::new();
    let mut p50s = Vec::new();
    let mut p99s = Vec::new();
    for r in 0..runs {
        let (total, mut lat) = run_once(&client, n).await;
        lat.sort_by(|a, b| a.total_cmp(b));
        println!(
            "  run {}: all {n} addressed in {:.2} s; create-to-status p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms",
            r + 1,
            total,
            percentile(&lat, 0.5),
            percentile(&lat, 0.99),
            lat.last().copied().unwrap_or(f64::NAN)
        );
        totals.push(total);
        p50s.push(percentile(&lat, 0.5));
        p99s.push(percentile(&lat, 0.99));
        if r + 1 < runs {
            delete_all(&client).await;
        }
    }
    summary("time until all have addresses", "s", totals);
    summary("create-to-status p50", "ms", p50s);
    summary("create-to-status p99", "ms", p99s);
    if let Some(rss) = controller_pid(&lab).and_then(peak_rss_mib) {
        println!("controller peak RSS (VmHWM) with {n} Services: {rss:.1} MiB");
    }

    // Restart with N allocated Services.
    let svcs: Api<Service> = Api::namespaced(client.clone(), BENCH_NS);
    let snapshot = |list: Vec<Service>| -> BTreeMap<String, Vec<String>> {
        list.iter()
            .map(|s| (s.metadata.name.clone().unwrap_or_default(), ingress(s)))
            .collect()
    };
    let before = snapshot(svcs.list(&ListParams::default()).await.expect("list").items);
    let mut ready_times = Vec::new();
    for _ in 0..runs {
        let t = Instant::now();
        lab.restart_controller().expect("restart");
        wait_controller_ready(
            &lab,
            "controller ready after restart",
            Duration::from_secs(120),
        )
        .await;
        ready_times.push(t.elapsed().as_secs_f64() * 1000.0);
    }
    // Give a restarted controller time to write anything it would change.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let after = snapshot(svcs.list(&ListParams::default()).await.expect("list").items);
    let changed = before
        .iter()
        .filter(|(k, v)| after.get(*k) != Some(v))
        .count();
    summary("controller restart to ready", "ms", ready_times);
    println!("addresses changed by {runs} restarts with {n} Services: {changed}");
    assert_eq!(changed, 0, "a restart moved addresses");
    lab.down().expect("lab down");
}
