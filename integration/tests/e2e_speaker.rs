//! The speaker on the lab: real ARP from the `client` host, real kube-proxy, real
//! membership between the nodes' speakers. Each step checks what a user sees (the
//! address answers, which node's MAC the client has cached, ServiceL2Status, events,
//! /readyz) and measures how long the address was unanswered when it moved.
//!
//! Needs root, the Go harness and built `ferrolb-controller` and `ferrolb-speaker`
//! (`make e2e` builds them). Run with `--nocapture` to see the measured figures.

use std::collections::BTreeSet;
use std::net::IpAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use ferrolb_integration::lab::{Lab, components, eventually, process};
use ferrolb_integration::testkit::{
    self as kit, ANNOUNCE_LABEL, APP, APP_NS, CONFIG_NS, EXCLUDE_LABEL, EchoService,
    MEMBERLIST_SECRET, SPEAKER_PORT, SpeakerSetup, WORKERS, label_node, metric, metrics,
};
use k8s_openapi::api::core::v1::{Pod, Secret, Service};
use kube::Client;
use kube::api::{Api, DeleteParams, ListParams};
use serde_json::json;

const LB_IP: &str = "198.51.100.10";
const WAIT: Duration = Duration::from_secs(60);

fn lb_ip() -> IpAddr {
    LB_IP.parse().unwrap()
}

/// The first address in a Service's status, once it has one.
async fn wait_ingress(svcs: &Api<Service>, name: &str) -> IpAddr {
    kit::wait_ingress(svcs, name, WAIT).await
}

/// The HTTP status of a speaker's /readyz (0: no answer).
fn readyz(lab: &Lab, node: &str) -> u16 {
    kit::readyz(lab, node, SPEAKER_PORT)
}

/// The nodes named in ServiceL2Status objects for the echo Service.
async fn l2_status_nodes(client: &Client) -> Result<Vec<String>, String> {
    kit::l2_status_nodes(client, APP_NS, APP).await
}

/// Waits until the client resolves the address to `want` (any worker if `None`,
/// another node than `not` if given), the request answers from a pod, and the
/// ServiceL2Status names the same node; returns that node.
async fn wait_announced(
    lab: &Lab,
    client: &Client,
    pods: &BTreeSet<String>,
    want: Option<&str>,
    not: Option<&str>,
) -> String {
    let what = format!("address announced by {want:?} (not {not:?})");
    eventually(&what, WAIT, || async {
        let who = kit::announcer(lab, lb_ip(), true).ok_or("nobody answers ARP")?;
        if want.is_some_and(|w| w != who) || not == Some(who.as_str()) {
            return Err(format!("announced by {who}"));
        }
        kit::ask_pod(lab, &format!("http://{LB_IP}/"), pods)?;
        let st = l2_status_nodes(client).await?;
        if st != [who.clone()] {
            return Err(format!("ServiceL2Status nodes {st:?}, ARP says {who}"));
        }
        Ok(who)
    })
    .await
    .unwrap_or_else(|e| panic!("{e}"))
}

/// Polls the client's neighbour entry every 10 ms until it names another node than
/// `from`; the time from `since`.
fn wait_mac_change(lab: &Lab, from: &str, since: Instant, limit: Duration) -> (String, Duration) {
    loop {
        if let Some(who) = kit::announcer(lab, lb_ip(), false)
            && who != from
        {
            return (who, since.elapsed());
        }
        assert!(
            since.elapsed() < limit,
            "the address stayed with {from} for {limit:?}"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// ARP requests for the address from the client, `count` of them 50 ms apart (Habets
/// arping; `-e` prints a BEL for every request whose 50 ms window saw no reply).
/// Returns the replies, the unanswered requests and the MACs that answered.
fn arp_probe(lab: &Lab, count: u32) -> (usize, usize, BTreeSet<String>) {
    let out = lab
        .exec_with_limit(
            "client",
            &[
                "arping",
                "-e",
                "-i",
                "eth0",
                "-W",
                "0.05",
                "-c",
                &count.to_string(),
                LB_IP,
            ],
            Duration::from_secs(60),
        )
        .expect("arping");
    let text = String::from_utf8_lossy(&out.stdout);
    let unanswered = text.chars().filter(|c| *c == '\u{7}').count();
    let mut replies = 0;
    let mut macs = BTreeSet::new();
    for line in text.lines().filter(|l| l.contains(" bytes from ")) {
        replies += 1;
        if let Some(mac) = line.split_whitespace().skip_while(|w| *w != "from").nth(1) {
            macs.insert(mac.to_lowercase());
        }
    }
    (replies, unanswered, macs)
}

/// Sends a request every 50 ms from the client until stopped, each after flushing the
/// client's neighbour entry: every request needs a fresh ARP answer, so any moment
/// when nobody answers for the address shows up as a failed request (a cached entry
/// would hide it, since the old node's kube-proxy keeps forwarding).
struct Prober {
    stop: Arc<AtomicBool>,
    ok: Arc<AtomicU64>,
    failed: Arc<AtomicU64>,
    /// Nodes whose MAC answered ARP.
    answered_by: Arc<Mutex<BTreeSet<String>>>,
    handle: Option<std::thread::JoinHandle<()>>,
}

impl Prober {
    fn start(lab: Arc<Lab>) -> Prober {
        let stop = Arc::new(AtomicBool::new(false));
        let ok = Arc::new(AtomicU64::new(0));
        let failed = Arc::new(AtomicU64::new(0));
        let answered_by = Arc::new(Mutex::new(BTreeSet::new()));
        let (s, o, f, a) = (
            stop.clone(),
            ok.clone(),
            failed.clone(),
            answered_by.clone(),
        );
        let handle = std::thread::spawn(move || {
            // Bounded: a test that forgets to stop it still ends after 10 minutes.
            let end = Instant::now() + Duration::from_secs(600);
            while !s.load(Ordering::Relaxed) && Instant::now() < end {
                let _ = lab.flush_neighbour("client", lb_ip());
                match lab.curl(
                    "client",
                    &format!("http://{LB_IP}/"),
                    Duration::from_secs(1),
                ) {
                    Ok(b) if !b.trim().is_empty() => {
                        o.fetch_add(1, Ordering::Relaxed);
                        if let Ok(Some(who)) = lab.announcer("client", lb_ip()) {
                            a.lock().unwrap().insert(who);
                        }
                    }
                    _ => {
                        f.fetch_add(1, Ordering::Relaxed);
                    }
                };
                std::thread::sleep(Duration::from_millis(50));
            }
        });
        Prober {
            stop,
            ok,
            failed,
            answered_by,
            handle: Some(handle),
        }
    }

    /// (ok, failed, nodes that answered ARP)
    fn finish(mut self) -> (u64, u64, BTreeSet<String>) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(h) = self.handle.take() {
            let _ = h.join();
        }
        (
            self.ok.load(Ordering::Relaxed),
            self.failed.load(Ordering::Relaxed),
            self.answered_by.lock().unwrap().clone(),
        )
    }
}

impl Drop for Prober {
    /// Joins the thread, so that on a failed assertion its handle on the lab is gone
    /// before the lab guard drops (and tears the lab down).
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(h) = self.handle.take() {
            let _ = h.join();
        }
    }
}

async fn wait_event(client: &Client, node: &str) {
    let text = format!("announcing from node \"{node}\" with protocol \"layer2\"");
    kit::wait_event_where(client, (APP_NS, APP), "nodeAssigned", WAIT, |e| {
        e.note.as_deref() == Some(text.as_str())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn speaker_announces_fails_over_and_hands_over() {
    let (lab, client) = kit::up(kit::bare(3)).await;
    let lab = Arc::new(lab);

    // Namespace, CRDs, pool and L2Advertisement (workers only), as the chart and the
    // tutorial set them up; the echo Deployment (3 replicas) and its LoadBalancer
    // Service; then controller and speakers, before the membership Secret exists.
    let pods = SpeakerSetup {
        pool_name: "first-pool",
        key: None,
        ..SpeakerSetup::default()
    }
    .run(&lab, &client)
    .await;
    let svcs: Api<Service> = Api::namespaced(client.clone(), APP_NS);
    let pods_api: Api<Pod> = Api::namespaced(client.clone(), APP_NS);
    let nodes = kit::node_names(&lab);
    eventually("the Service gets its address", WAIT, || async {
        let s = svcs.get(APP).await.map_err(|e| e.to_string())?;
        let ips: Vec<String> = s
            .status
            .and_then(|s| s.load_balancer)
            .and_then(|l| l.ingress)
            .into_iter()
            .flatten()
            .filter_map(|i| i.ip)
            .collect();
        if ips == [LB_IP] {
            Ok(())
        } else {
            Err(format!("ingress {ips:?}"))
        }
    })
    .await
    .expect("address");

    // No membership key: every speaker is up but not ready, and nobody answers.
    for n in &nodes {
        let n = n.clone();
        let lab2 = lab.clone();
        eventually(&format!("{n} serves /readyz"), WAIT, move || {
            let lab2 = lab2.clone();
            let n = n.clone();
            async move {
                match readyz(&lab2, &n) {
                    503 => Ok(()),
                    c => Err(format!("/readyz {c}")),
                }
            }
        })
        .await
        .expect("not ready without a key");
    }
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(
        kit::announcer(&lab, lb_ip(), true),
        None,
        "announced without a membership key"
    );
    assert!(l2_status_nodes(&client).await.unwrap().is_empty());

    // The Secret with a random key: announcing starts without a restart.
    kit::put_key(&client, MEMBERLIST_SECRET, &kit::random_key(32)).await;
    let secrets: Api<Secret> = Api::namespaced(client.clone(), CONFIG_NS);
    let leader = wait_announced(&lab, &client, &pods, None, None).await;
    assert!(
        WORKERS.contains(&leader.as_str()),
        "{leader} is not a worker"
    );
    assert_eq!(
        lab.neighbour_mac("client", lb_ip())
            .unwrap()
            .map(|m| m.to_lowercase()),
        Some(lab.interface_mac(&leader).unwrap().to_lowercase())
    );
    wait_event(&client, &leader).await;
    // The ServiceL2Status names the interface the address is announced on.
    let mine = kit::l2_statuses(&client, APP_NS, APP)
        .await
        .expect("list ServiceL2Status");
    assert_eq!(mine.len(), 1, "{mine:?}");
    assert_eq!(mine[0]["serviceNamespace"], APP_NS);
    // eth0 carries the LAN; the announcer may add other suitable interfaces.
    assert!(
        mine[0]["interfaces"]
            .as_array()
            .is_some_and(|a| a.contains(&json!({"name": "eth0"}))),
        "{mine:?}"
    );
    for n in &nodes {
        assert_eq!(readyz(&lab, n), 200, "{n} not ready with the key");
    }
    // Metrics are refreshed every second.
    let want_announced = format!(
        "metallb_speaker_announced{{ip=\"{LB_IP}\",node=\"{leader}\",protocol=\"layer2\",service=\"{APP_NS}/{APP}\"}} 1"
    );
    eventually("announced and membership metrics", WAIT, || async {
        let m = metrics(&lab, &leader);
        if m.contains(&want_announced) && m.contains("ferrolb_speaker_members_live 4\n") {
            Ok(())
        } else {
            Err(m)
        }
    })
    .await
    .expect("metrics");
    // Requests spread over the pods through the announced address.
    let mut seen = BTreeSet::new();
    for _ in 0..15 {
        seen.insert(kit::ask(&lab, &format!("http://{LB_IP}/")).expect("request"));
    }
    assert!(seen.is_subset(&pods) && seen.len() >= 2, "answers {seen:?}");
    // MetalLB's layer-2 counters: the client's ARP requests (each `announcer(.., true)`
    // above flushed and asked again) and the takeover burst.
    eventually("layer2 counters", WAIT, || async {
        let m = metrics(&lab, &leader);
        let value = |name: &str| metric(&m, name, &format!("ip=\"{LB_IP}\"")).unwrap_or(0.0);
        let got = [
            value("metallb_layer2_requests_received_total"),
            value("metallb_layer2_responses_sent_total"),
            value("metallb_layer2_gratuitous_sent_total"),
        ];
        if got.iter().all(|v| *v > 0.0) {
            Ok(())
        } else {
            Err(format!("requests/responses/gratuitous {got:?}"))
        }
    })
    .await
    .expect("layer2 counters");

    // externalTrafficPolicy Local: only a node with a ready local endpoint announces.
    // The Service first runs with policy Cluster to learn which worker wins its
    // address, then its only pod is placed on another worker and the policy switched
    // to Local: the address must follow the pod.
    let one = "echo-one";
    kit::apply_echo(&client, APP_NS, one, 1, json!({})).await;
    let local_svc = |policy: &str| EchoService {
        spec: json!({"externalTrafficPolicy": policy}),
        ..EchoService::new(one)
    };
    local_svc("Cluster").apply(&client, APP_NS, one).await;
    let one_ip = wait_ingress(&svcs, one).await;
    let winner = eventually("echo-one announced", WAIT, || async {
        kit::announcer(&lab, one_ip, true).ok_or_else(|| "nobody answers ARP".to_string())
    })
    .await
    .expect("echo-one announced");
    let target = *WORKERS.iter().find(|w| **w != winner).unwrap();
    kit::apply_echo(&client, APP_NS, one, 1, json!({"nodeName": target})).await;
    local_svc("Local").apply(&client, APP_NS, one).await;
    eventually(
        &format!("echo-one announced from {target}, where its pod runs"),
        Duration::from_secs(120),
        || async {
            let running_on: Vec<String> = pods_api
                .list(&ListParams::default().labels(&format!("app={one}")))
                .await
                .map_err(|e| e.to_string())?
                .items
                .iter()
                .filter(|p| p.metadata.deletion_timestamp.is_none())
                .filter_map(|p| p.spec.as_ref().and_then(|s| s.node_name.clone()))
                .collect();
            if running_on != [target] {
                return Err(format!("pods on {running_on:?}"));
            }
            match kit::announcer(&lab, one_ip, true) {
                Some(who) if who == target => Ok(()),
                other => Err(format!("announced by {other:?}")),
            }
        },
    )
    .await
    .expect("Local policy follows the pod");
    eprintln!(
        "check: echo-one ({one_ip}) moved from {winner} to {target} with its pod under policy Local"
    );

    // A Service without any ready endpoint is announced by nobody.
    let none = "echo-none";
    EchoService::new(none)
        .apply(&client, APP_NS, "no-such-pod")
        .await;
    let none_ip = wait_ingress(&svcs, none).await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(
        kit::announcer(&lab, none_ip, true),
        None,
        "{none_ip} announced without any endpoint"
    );
    let _ = svcs.delete(none, &DeleteParams::default()).await;
    let _ = svcs.delete(one, &DeleteParams::default()).await;

    // The exclude label moves the address away; removing it brings it back.
    label_node(&client, &leader, EXCLUDE_LABEL, Some("")).await;
    let other = wait_announced(&lab, &client, &pods, None, Some(&leader)).await;
    label_node(&client, &leader, EXCLUDE_LABEL, None).await;
    wait_announced(&lab, &client, &pods, Some(&leader), None).await;

    // nodeSelectors: a leader that stops matching loses the address.
    label_node(&client, &leader, ANNOUNCE_LABEL, None).await;
    let moved = wait_announced(&lab, &client, &pods, None, Some(&leader)).await;
    assert_eq!(
        moved, other,
        "the runner-up is the same whatever the reason"
    );
    label_node(&client, &leader, ANNOUNCE_LABEL, Some("yes")).await;
    wait_announced(&lab, &client, &pods, Some(&leader), None).await;

    // Graceful stop of the leader's speaker (SIGTERM): it keeps answering until the
    // runner-up has taken over, so no ARP request goes unanswered and no request fails.
    let arp = {
        let lab = lab.clone();
        std::thread::spawn(move || arp_probe(&lab, 120))
    };
    let prober = Prober::start(lab.clone());
    tokio::time::sleep(Duration::from_secs(1)).await;
    let t0 = Instant::now();
    // Joined before anything can panic: the probes hold the lab guard.
    let stopped = process::stop(
        lab.paths(),
        &components::speaker_name(&leader),
        Duration::from_secs(5),
    );
    let stop_took = t0.elapsed();
    let (answered, unanswered, arp_macs) = arp.join().expect("arping thread");
    let (ok, failed, answered_by) = prober.finish();
    stopped.expect("stop speaker");
    eprintln!(
        "figure: graceful stop of {leader}'s speaker: SIGTERM to exit {stop_took:?}; ARP requests every 50 ms replies {answered}, unanswered {unanswered}; requests ok {ok}, failed {failed}; answered by {answered_by:?}"
    );
    assert!(
        answered >= 100,
        "arping got only {answered} replies to 120 requests"
    );
    assert_eq!(
        unanswered, 0,
        "ARP requests unanswered during a graceful stop"
    );
    assert!(ok > 10, "too few requests ({ok}) to judge the handover");
    // A connection in flight when the runner-up's gratuitous ARP moves the
    // client's neighbour entry continues to a node whose conntrack never saw it
    // (kube-proxy may pick another pod there, which resets it): layer 2 cannot
    // keep such a connection, so one failed request is allowed. A gap in the
    // handover fails many (a request goes out about every 20 ms).
    assert!(
        failed <= 1,
        "{failed} requests failed during a graceful stop"
    );
    assert!(
        answered_by.len() >= 2 && arp_macs.len() >= 2,
        "the address never moved: requests {answered_by:?}, ARP from {arp_macs:?}"
    );
    assert!(
        stop_took >= Duration::from_millis(500),
        "stopped in {stop_took:?}: no handover wait"
    );
    // Started again, it rejoins and, as the rendezvous winner, takes the address back.
    lab.restart_speaker(&leader).expect("start speaker");
    wait_announced(&lab, &client, &pods, Some(&leader), None).await;

    // Node failure: the address moves to the runner-up; the client is told by a
    // gratuitous ARP, without asking.
    let t0 = Instant::now();
    lab.node_fail(&leader).expect("node fail");
    let lab2 = lab.clone();
    let leader2 = leader.clone();
    let (next, gap) = tokio::task::spawn_blocking(move || {
        wait_mac_change(&lab2, &leader2, t0, Duration::from_secs(20))
    })
    .await
    .unwrap();
    eprintln!(
        "figure: node failure of {leader}: client's neighbour entry moved to {next} after {gap:?}"
    );
    assert!(WORKERS.contains(&next.as_str()) && next != leader);
    assert!(gap < Duration::from_secs(5), "failover took {gap:?}");
    // A pod on the failed node stays an endpoint until the node is NotReady, so only
    // eventual success is required here.
    eventually("requests answered after the failover", WAIT, || async {
        kit::ask(&lab, &format!("http://{LB_IP}/"))
    })
    .await
    .expect("answers after failover");
    let m = metrics(&lab, &next);
    let takeovers = metric(&m, "ferrolb_speaker_takeovers_total", "").unwrap_or(0.0);
    assert!(takeovers >= 1.0, "{next} counted no takeover:\n{m}");

    // The ServiceL2Status follows: the new leader rewrote it, nothing stale is left
    // from the failed node.
    eventually("ServiceL2Status names the new leader", WAIT, || async {
        let st = l2_status_nodes(&client).await?;
        if st == [next.clone()] {
            Ok(())
        } else {
            Err(format!("ServiceL2Status nodes {st:?}"))
        }
    })
    .await
    .expect("ServiceL2Status after failover");

    // The membership Secret removed: every speaker stops announcing and turns not
    // ready (an unauthenticated cluster is not allowed).
    secrets
        .delete(MEMBERLIST_SECRET, &DeleteParams::default())
        .await
        .expect("delete secret");
    eventually("nobody announces without the key", WAIT, || async {
        match kit::announcer(&lab, lb_ip(), true) {
            None => Ok(()),
            Some(who) => Err(format!("still announced by {who}")),
        }
    })
    .await
    .expect("silent without the key");
    assert_eq!(readyz(&lab, &next), 503);
    assert!(
        l2_status_nodes(&client).await.unwrap().is_empty() || {
            // The deletes are asynchronous; give them a moment.
            tokio::time::sleep(Duration::from_secs(3)).await;
            l2_status_nodes(&client).await.unwrap().is_empty()
        }
    );

    // Clean-up of what this test made inside the lab is the lab's teardown (the guard
    // drops it also when an assertion above fails).
    let _ = svcs.delete(APP, &DeleteParams::default()).await;
    drop(client);
    // The speakers' warnings and errors, for whoever reads the test output.
    kit::print_speaker_warnings(&lab);
    match Arc::try_unwrap(lab) {
        Ok(lab) => lab.down().expect("down"),
        Err(_) => panic!("lab still shared"),
    }
}
