//! Speakers at scale on the lab: N LoadBalancer Services (default 1000: half IPv4 from
//! the lab's two /24 pools, half IPv6 from a /112) all announced in layer 2 by the
//! speakers of a 4-node dual-stack lab. Prints, per run, the time until every address
//! has an announcer (the sum of `ferrolb_speaker_leading` over the nodes reaches N,
//! counted from the first create) and each speaker's peak RSS (VmHWM), current RSS and
//! the CPU time it used until then, then median and spread (min..max) over runs and
//! nodes. Speakers are restarted before each run, so each peak belongs to one run.
//! Then every speaker is restarted with the N Services present (a DaemonSet rollout:
//! the initial list, and every address taken over at once) and its peak is measured
//! again once all are announced.
//! Target: < 20 MB (decimal, 19.07 MiB) peak RSS in both cases.
//!
//! `FERROLB_BENCH_SERVICES` (default 1000), `FERROLB_BENCH_RUNS` (default 3). Runs the
//! binaries the lab finds (`make bench` sets `FERROLB_PROFILE=release`). Needs root and
//! the Go harness.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use ferrolb_integration::lab::topology::CONTROL_PLANE;
use ferrolb_integration::lab::{IpFamily, Lab, LabOptions, eventually};
use ferrolb_integration::testkit::stats::Samples;
use ferrolb_integration::testkit::{
    CONTROLLER_PORT, MEMBERLIST_SECRET, SPEAKER_PORT, apply_echo, apply_l2, apply_namespace,
    apply_pool, bare, delete_services, env_usize, install_crds, members_live, metric, node_names,
    put_key, services_left, speaker_pid, try_metrics_on, up,
};
use futures::StreamExt;
use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::api::{Api, ListParams, PostParams};
use serde_json::json;

const BENCH_NS: &str = "bench";
const APP: &str = "echo";

fn summary(name: &str, unit: &str, v: Vec<f64>) {
    let s = Samples::new(v);
    println!(
        "{name}: median {:.1} {unit}, spread {:.1}..{:.1} {unit} over {} samples",
        s.median(),
        s.min(),
        s.max(),
        s.len()
    );
}

/// Memory of a process from /proc/<pid>/status, in MiB.
#[derive(Clone, Copy, Debug, Default)]
struct Mem {
    rss: f64,
    hwm: f64,
    /// Anonymous pages (heap, stacks): what the allocator holds.
    anon: f64,
    /// File-backed pages (mostly the binary's code and read-only data).
    file: f64,
}

/// CPU time (user + system) process `pid` has used, in seconds.
fn cpu_secs(pid: i32) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the command name, which may hold spaces: utime and stime are the
    // 14th and 15th fields of the line, the 12th and 13th after the state.
    let rest = &stat[stat.rfind(')')? + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks: f64 = f.get(11)?.parse::<f64>().ok()? + f.get(12)?.parse::<f64>().ok()?;
    let hz = nix::unistd::sysconf(nix::unistd::SysconfVar::CLK_TCK).ok()?? as f64;
    Some(ticks / hz)
}

fn rss_mib(pid: i32) -> Option<Mem> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let field = |name: &str| -> Option<f64> {
        let kb: f64 = status
            .lines()
            .find_map(|l| l.strip_prefix(name))?
            .split_whitespace()
            .next()?
            .parse()
            .ok()?;
        Some(kb / 1024.0)
    };
    Some(Mem {
        rss: field("VmRSS:")?,
        hwm: field("VmHWM:")?,
        anon: field("RssAnon:")?,
        file: field("RssFile:")?,
    })
}

/// Sample `name` (no labels) of the speaker's `/metrics` on `node`; `None`
/// when it does not answer.
fn speaker_metric(lab: &Lab, node: &str, name: &str) -> Option<f64> {
    metric(&try_metrics_on(lab, node, SPEAKER_PORT)?, name, "")
}

fn service(i: usize, v4: usize) -> Service {
    let family = if i < v4 { "IPv4" } else { "IPv6" };
    serde_json::from_value(json!({
        "apiVersion": "v1", "kind": "Service",
        "metadata": {"name": format!("s{i:05}"), "namespace": BENCH_NS},
        "spec": {"type": "LoadBalancer", "ipFamilies": [family], "ipFamilyPolicy": "SingleStack",
                 "allocateLoadBalancerNodePorts": false,
                 "selector": {"app": APP}, "ports": [{"port": 80, "targetPort": 80, "protocol": "TCP"}]}
    }))
    .expect("service json")
}

/// Addresses the controller has allocated from the bench pool.
fn allocated_total(lab: &Lab) -> Option<f64> {
    let text = try_metrics_on(lab, CONTROL_PLANE, CONTROLLER_PORT)?;
    metric(
        &text,
        "metallb_allocator_addresses_in_use_total",
        "pool=\"bench\"",
    )
}

/// Services of the bench namespace with at least one ready endpoint (one slice each).
async fn ready_slices(slices: &Api<EndpointSlice>) -> Option<usize> {
    let list = slices.list(&ListParams::default()).await.ok()?;
    let ready: BTreeSet<String> = list
        .items
        .iter()
        .filter(|s| {
            s.endpoints
                .iter()
                .flatten()
                .any(|e| e.conditions.as_ref().and_then(|c| c.ready) == Some(true))
        })
        .filter_map(|s| {
            s.metadata
                .labels
                .as_ref()?
                .get("kubernetes.io/service-name")
                .cloned()
        })
        .collect();
    Some(ready.len())
}

/// Sum of `ferrolb_speaker_leading` over the nodes (None if a speaker does not answer).
fn leading_total(lab: &Lab, nodes: &[String]) -> Option<f64> {
    nodes
        .iter()
        .map(|n| speaker_metric(lab, n, "ferrolb_speaker_leading"))
        .sum()
}

/// Each node's speaker CPU time so far (`None` where no speaker answers).
fn speaker_cpu(lab: &Lab, nodes: &[String]) -> Vec<Option<f64>> {
    nodes
        .iter()
        .map(|n| speaker_pid(lab, n).and_then(cpu_secs))
        .collect()
}

/// CPU each node's speaker used since `before` ([`speaker_cpu`]); NaN where unknown.
fn cpu_since(lab: &Lab, nodes: &[String], before: &[Option<f64>]) -> Vec<f64> {
    speaker_cpu(lab, nodes)
        .into_iter()
        .zip(before)
        .map(|(now, then)| match (then, now) {
            (Some(a), Some(b)) => b - a,
            _ => f64::NAN,
        })
        .collect()
}

/// Deletes every Service at once (a burst of events for the speakers) and waits until
/// nothing is announced; how long that took and the CPU each speaker used meanwhile.
async fn delete_all(lab: &Lab, client: &kube::Client, nodes: &[String]) -> (Duration, Vec<f64>) {
    let cpu0 = speaker_cpu(lab, nodes);
    let start = Instant::now();
    delete_services(client, BENCH_NS).await;
    eventually("nothing announced", Duration::from_secs(180), || async {
        let left = services_left(client, BENCH_NS).await?;
        match leading_total(lab, nodes) {
            Some(0.0) if left == 0 => Ok(()),
            l => Err(format!("{left} Services left, leading {l:?}")),
        }
    })
    .await
    .expect("cleanup");
    let took = start.elapsed();
    let cpu = cpu_since(lab, nodes, &cpu0);
    (took, cpu)
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let n = env_usize("FERROLB_BENCH_SERVICES", 1000);
    let runs = env_usize("FERROLB_BENCH_RUNS", 3).max(1);
    let v4 = (n / 2).min(500);
    let (lab, client) = up(LabOptions {
        ip_family: IpFamily::DualStack,
        ..bare(3)
    })
    .await;
    let nodes = node_names(&lab);
    println!(
        "speaker scale on the lab: {n} LoadBalancer Services ({v4} IPv4, {} IPv6), {} nodes, {runs} runs; speaker {:?}",
        n - v4,
        nodes.len(),
        lab.speaker_bin()
    );

    install_crds(&lab, &client).await;
    apply_namespace(&client, BENCH_NS).await;
    let key: Vec<u8> = (0..32u8)
        .map(|i| i.wrapping_mul(37).wrapping_add(11))
        .collect();
    put_key(&client, MEMBERLIST_SECRET, &key).await;
    apply_pool(
        &client,
        "bench",
        &["198.51.100.0/24", "203.0.113.0/24", "2001:db8:100::/112"],
    )
    .await;
    apply_l2(&client, "bench", json!({})).await;
    // One ready pod is an endpoint of every Service (no endpoint, no announcement).
    apply_echo(&client, BENCH_NS, APP, 1, json!({})).await;
    lab.restart_controller().expect("start controller");

    let mut totals = Vec::new();
    let mut cpus = Vec::new();
    let mut delete_cpus = Vec::new();
    let mut peaks = Vec::new();
    let mut currents = Vec::new();
    let (mut anons, mut files, mut anon_peaks) = (Vec::new(), Vec::new(), Vec::new());
    let mut per_node: BTreeMap<String, Vec<f64>> = BTreeMap::new();
    let mut restart_peaks = Vec::new();
    for r in 0..runs {
        // Fresh speakers, so that VmHWM is this run's peak.
        for node in &nodes {
            lab.restart_speaker(node).expect("start speaker");
        }
        eventually("speakers joined", Duration::from_secs(60), || async {
            members_live(&lab, &nodes, nodes.len())
        })
        .await
        .expect("membership");
        let idle: Vec<f64> = nodes
            .iter()
            .filter_map(|n| speaker_pid(&lab, n).and_then(rss_mib).map(|m| m.rss))
            .collect();

        let cpu0 = speaker_cpu(&lab, &nodes);
        let svcs: Api<Service> = Api::namespaced(client.clone(), BENCH_NS);
        let start = Instant::now();
        futures::stream::iter(0..n)
            .map(|i| {
                let svcs = svcs.clone();
                async move {
                    svcs.create(&PostParams::default(), &service(i, v4))
                        .await
                        .unwrap_or_else(|e| panic!("create s{i:05}: {e}"));
                }
            })
            .buffer_unordered(16)
            .collect::<Vec<()>>()
            .await;
        let created = start.elapsed();
        let deadline = start + Duration::from_secs(120 + n as u64 / 5);
        // VmHWM has no anonymous/file split: sample RssAnon while waiting for its peak.
        let mut anon_peak = vec![0.0f64; nodes.len()];
        // Where the time goes: a speaker announces an address once the controller
        // has allocated it and the Service has a ready endpoint.
        let (mut allocated, mut endpoints) = (None, None);
        let mut last_ready = (None, Duration::ZERO);
        let slices: Api<EndpointSlice> = Api::namespaced(client.clone(), BENCH_NS);
        let mut polls = 0u32;
        let total = loop {
            if allocated.is_none() && allocated_total(&lab) == Some(n as f64) {
                allocated = Some(start.elapsed());
            }
            // A list of every slice is heavier: every 2 s.
            if endpoints.is_none() && polls.is_multiple_of(4) {
                let ready = ready_slices(&slices).await;
                if ready == Some(n) {
                    endpoints = Some(start.elapsed());
                }
                last_ready = (ready, start.elapsed());
            }
            polls += 1;
            for (i, node) in nodes.iter().enumerate() {
                if let Some(m) = speaker_pid(&lab, node).and_then(rss_mib) {
                    anon_peak[i] = anon_peak[i].max(m.anon);
                }
            }
            let led = leading_total(&lab, &nodes);
            if led == Some(n as f64) {
                break start.elapsed();
            }
            assert!(
                Instant::now() < deadline,
                "run {}: only {led:?} of {n} addresses announced after {:?}",
                r + 1,
                start.elapsed()
            );
            tokio::time::sleep(Duration::from_millis(500)).await;
        };
        let cpu = cpu_since(&lab, &nodes, &cpu0);
        // Let the ServiceL2Status writes settle before reading memory.
        tokio::time::sleep(Duration::from_secs(5)).await;
        let secs =
            |d: Option<Duration>| d.map_or("-".to_owned(), |d| format!("{:.1} s", d.as_secs_f64()));
        let ready = match endpoints {
            Some(d) => format!("all with a ready endpoint after {}", secs(Some(d))),
            None => format!(
                "{} with a ready endpoint at the last check ({:.1} s)",
                last_ready
                    .0
                    .map_or("?".to_owned(), |r: usize| r.to_string()),
                last_ready.1.as_secs_f64()
            ),
        };
        println!(
            "  run {}: {n} created in {:.1} s, all allocated after {}, {ready} (checked every 2 s), all announced after {:.1} s",
            r + 1,
            created.as_secs_f64(),
            secs(allocated),
            total.as_secs_f64()
        );
        totals.push(total.as_secs_f64());
        for (i, node) in nodes.iter().enumerate() {
            let pid = speaker_pid(&lab, node).expect("speaker running");
            let m = rss_mib(pid).expect("rss");
            let leading = speaker_metric(&lab, node, "ferrolb_speaker_leading").unwrap_or(f64::NAN);
            let anon_peak = anon_peak[i].max(m.anon);
            println!(
                "    {node}: leads {leading:.0}; CPU {:.2} s until all announced; RSS idle {:.1} MiB, now {:.1} MiB (anon {:.1}, file {:.1}), peak (VmHWM) {:.1} MiB, sampled anon peak {anon_peak:.1} MiB",
                cpu[i],
                idle.get(i).copied().unwrap_or(f64::NAN),
                m.rss,
                m.anon,
                m.file,
                m.hwm,
            );
            peaks.push(m.hwm);
            cpus.push(cpu[i]);
            currents.push(m.rss);
            anons.push(m.anon);
            files.push(m.file);
            anon_peaks.push(anon_peak);
            per_node.entry(node.clone()).or_default().push(m.hwm);
        }
        // A restart with everything present: each speaker lists N Services and takes
        // its share over at once.
        for node in &nodes {
            lab.restart_speaker(node).expect("restart speaker");
        }
        let start = Instant::now();
        eventually("all announced again", Duration::from_secs(120), || async {
            match (
                members_live(&lab, &nodes, nodes.len()),
                leading_total(&lab, &nodes),
            ) {
                (Ok(()), Some(l)) if l == n as f64 => Ok(()),
                (m, l) => Err(format!("membership {m:?}, leading {l:?}")),
            }
        })
        .await
        .expect("announced after restart");
        let again = start.elapsed();
        tokio::time::sleep(Duration::from_secs(5)).await;
        let mut line = Vec::new();
        for node in &nodes {
            let pid = speaker_pid(&lab, node).expect("speaker running");
            let m = rss_mib(pid).expect("rss");
            line.push(format!("{node} {:.1}", m.hwm));
            restart_peaks.push(m.hwm);
        }
        println!(
            "  run {}: speakers restarted with {n} Services, all announced again after {:.1} s; peak (VmHWM) MiB: {}",
            r + 1,
            again.as_secs_f64(),
            line.join(", ")
        );
        let (took, cpu) = delete_all(&lab, &client, &nodes).await;
        println!(
            "  run {}: all {n} deleted at once, nothing announced after {:.1} s; speaker CPU meanwhile: {}",
            r + 1,
            took.as_secs_f64(),
            cpu.iter()
                .map(|c| format!("{c:.2} s"))
                .collect::<Vec<_>>()
                .join(", ")
        );
        delete_cpus.extend(cpu);
    }
    summary("time until all addresses announced", "s", totals);
    summary(
        "speaker CPU from the first create until all announced, all nodes and runs",
        "s",
        cpus,
    );
    summary(
        "speaker CPU from deleting all Services at once until nothing is announced",
        "s",
        delete_cpus,
    );
    summary(
        "speaker peak RSS (VmHWM), all nodes and runs",
        "MiB",
        peaks.clone(),
    );
    summary(
        "speaker RSS with all announced, all nodes and runs",
        "MiB",
        currents,
    );
    summary("  of which anonymous (RssAnon)", "MiB", anons);
    summary("  of which file-backed (RssFile)", "MiB", files);
    summary(
        "speaker anonymous RSS peak (sampled every ~0.5 s)",
        "MiB",
        anon_peaks,
    );
    for (node, v) in per_node {
        summary(&format!("  {node} peak RSS"), "MiB", v);
    }
    summary(
        "speaker peak RSS (VmHWM) after a restart with all Services present",
        "MiB",
        restart_peaks.clone(),
    );
    // The target is in MB: 20,000,000 bytes.
    let target_mib = 20e6 / (1024.0 * 1024.0);
    let worst = peaks
        .iter()
        .chain(&restart_peaks)
        .copied()
        .fold(0.0, f64::max);
    println!(
        "target < 20 MB ({target_mib:.2} MiB) peak RSS: {} (worst {worst:.1} MiB = {:.1} MB)",
        if worst < target_mib { "met" } else { "NOT met" },
        worst * 1024.0 * 1024.0 / 1e6
    );
    drop(client);
    lab.down().expect("lab down");
}
