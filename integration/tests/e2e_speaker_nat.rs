//! The speaker's NodePort DNAT (`--nodeport-dnat`) on the lab, with the controller
//! writing `ipMode: Proxy` (`--lb-ip-mode Proxy`), so that kube-proxy installs nothing
//! for the LoadBalancer address and only the leader's table carries the traffic to the
//! Service's NodePort. Checks what a client sees (requests through the address reach
//! the pods) and where the table is (on the leader, and nowhere else, through a Service
//! move, a node failure and recovery, and the Service's deletion); a Service without
//! NodePorts gets a Warning event; `loadBalancerSourceRanges` keep out a client outside
//! them; and a control lab without `--nodeport-dnat` shows the address unreachable
//! although it is announced.
//!
//! Needs root, the Go harness and built `ferrolb-controller` and `ferrolb-speaker`.

use std::collections::BTreeSet;
use std::net::IpAddr;
use std::time::Duration;

use ferrolb_integration::lab::{Lab, LabOptions, eventually};
use ferrolb_integration::testkit::{
    self as kit, APP, APP_NS, CLIENT_V4, EXCLUDE_LABEL, EchoService, SPEAKER_PORT, SpeakerSetup,
    WORKERS, label_node, print_speaker_warnings,
};
use k8s_openapi::api::core::v1::Service;
use kube::Client;
use kube::api::{Api, DeleteParams, Patch, PatchParams};
use serde_json::json;

const NO_NP: &str = "echo-no-nodeport";
const LB_IP: &str = "198.51.100.10";
const TABLE: &str = "ferrolb_nat";
const WAIT: Duration = Duration::from_secs(60);

fn lb_ip() -> IpAddr {
    LB_IP.parse().unwrap()
}

/// Namespace, CRDs, pool, L2Advertisement (workers only), the echo Deployment (3
/// replicas) and its LoadBalancer Service, the membership Secret; then the controller
/// and the speakers. Returns the pod names.
async fn set_up(lab: &Lab, client: &Client) -> BTreeSet<String> {
    SpeakerSetup {
        pool_name: "first-pool",
        ..SpeakerSetup::default()
    }
    .run(lab, client)
    .await
}

/// The Service's ingress once it has one: (address, ipMode).
async fn wait_ingress(svcs: &Api<Service>, name: &str) -> (IpAddr, Option<String>) {
    kit::wait_ingress_mode(svcs, name, WAIT).await
}

/// The Service's first nodePort.
async fn node_port(svcs: &Api<Service>, name: &str) -> u16 {
    let s = svcs.get(name).await.expect("get service");
    let np = s
        .spec
        .and_then(|s| s.ports)
        .and_then(|p| p.first().and_then(|p| p.node_port))
        .expect("a nodePort");
    u16::try_from(np).expect("port")
}

/// `nft list table inet ferrolb_nat` on `node`: the listing, or None without the table.
fn table(lab: &Lab, node: &str) -> Option<String> {
    let out = lab
        .exec(node, &["nft", "list", "table", "inet", TABLE])
        .expect("exec nft");
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).into_owned())
}

/// The nodes whose table forwards `LB_IP` port 80 to `np`, and the nodes with a table
/// at all.
fn tables(lab: &Lab, np: u16) -> (Vec<String>, Vec<String>) {
    let mut forwarding = Vec::new();
    let mut any = Vec::new();
    for n in lab.topology().nodes() {
        if let Some(t) = table(lab, &n.name) {
            any.push(n.name.clone());
            if t.contains(&format!("{LB_IP} . 80 : {np}")) {
                forwarding.push(n.name.clone());
            }
        }
    }
    (forwarding, any)
}

/// Waits until the address is announced by a node other than `not`, requests through
/// it reach a pod, and the announcing node, and only it, has the table forwarding
/// the address to `np`. Returns that node. When `not` is a failed node, its namespace
/// (unreachable, its speaker killed) is left out of the table check.
async fn wait_forwarded(lab: &Lab, pods: &BTreeSet<String>, np: u16, not: Option<&str>) -> String {
    wait_forwarded_skip(lab, pods, np, not, false).await
}

async fn wait_forwarded_skip(
    lab: &Lab,
    pods: &BTreeSet<String>,
    np: u16,
    not: Option<&str>,
    not_failed: bool,
) -> String {
    let what = format!("address forwarded by its leader (not {not:?})");
    eventually(&what, WAIT, || async {
        let who = kit::announcer(lab, lb_ip(), true).ok_or("nobody answers ARP")?;
        if not == Some(who.as_str()) {
            return Err(format!("still announced by {who}"));
        }
        let body = kit::ask(lab, &format!("http://{LB_IP}/"))?;
        if !pods.contains(&body) {
            return Err(format!("answer {body:?} is not a pod name"));
        }
        let (mut fwd, mut any) = tables(lab, np);
        if not_failed {
            fwd.retain(|n| Some(n.as_str()) != not);
            any.retain(|n| Some(n.as_str()) != not);
        }
        if fwd != [who.clone()] || any != [who.clone()] {
            return Err(format!(
                "announced by {who}; tables forwarding on {fwd:?}, tables on {any:?}"
            ));
        }
        Ok(who)
    })
    .await
    .unwrap_or_else(|e| {
        kit::print_speaker_log_lines(lab, usize::MAX, |l| {
            l.contains("NodePort") || l.contains("announcing") || l.contains("WARN")
        });
        panic!("{e}")
    })
}

/// The HTTP status of a speaker's /readyz (0: no answer).
fn readyz(lab: &Lab, node: &str) -> u16 {
    kit::readyz(lab, node, SPEAKER_PORT)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nodeport_dnat_carries_proxy_mode_addresses() {
    let (lab, client) = kit::up(LabOptions {
        controller_args: vec!["--lb-ip-mode".into(), "Proxy".into()],
        speaker_args: vec!["--nodeport-dnat".into()],
        ..kit::bare(3)
    })
    .await;
    let pods = set_up(&lab, &client).await;
    let svcs: Api<Service> = Api::namespaced(client.clone(), APP_NS);
    let (ip, mode) = wait_ingress(&svcs, APP).await;
    assert_eq!(ip, lb_ip());
    assert_eq!(
        mode.as_deref(),
        Some("Proxy"),
        "the controller wrote ipMode"
    );
    let np = node_port(&svcs, APP).await;

    let leader = wait_forwarded(&lab, &pods, np, None).await;
    assert!(WORKERS.contains(&leader.as_str()), "{leader} leads");
    eprintln!("leader {leader}, nodePort {np}");
    // kube-proxy has nothing for the address (ipMode Proxy): the table carries it.
    let ipt = lab
        .exec(&leader, &["iptables-save", "-t", "nat"])
        .expect("iptables-save");
    let ipt = String::from_utf8_lossy(&ipt.stdout);
    assert!(ipt.contains("KUBE-NODEPORTS"), "kube-proxy's rules: {ipt}");
    assert!(
        !ipt.contains(LB_IP),
        "kube-proxy handles {LB_IP} although ipMode is Proxy"
    );
    // Requests spread over the pods; replies come from the address itself.
    let mut seen = BTreeSet::new();
    for _ in 0..15 {
        seen.insert(kit::ask(&lab, &format!("http://{LB_IP}/")).expect("request"));
    }
    assert!(seen.is_subset(&pods) && seen.len() >= 2, "answers {seen:?}");
    // Direct NodePort clients are untouched, on the leader and elsewhere.
    for n in lab.topology().nodes() {
        let body = kit::ask(&lab, &format!("http://{}:{np}/", n.ipv4)).expect("nodeport");
        assert!(pods.contains(&body), "NodePort on {}: {body:?}", n.name);
    }

    // Control: without the leader's table the address is announced but unreachable.
    let out = lab
        .exec(&leader, &["nft", "delete", "table", "inet", TABLE])
        .expect("nft delete");
    assert!(out.status.success(), "{out:?}");
    for _ in 0..3 {
        let r = kit::ask(&lab, &format!("http://{LB_IP}/"));
        assert!(
            !r.as_ref().is_ok_and(|b| pods.contains(b)),
            "answered without the table: {r:?}"
        );
    }
    // A restarted speaker (graceful stop, then start) installs it again.
    lab.restart_speaker(&leader).expect("restart speaker");
    let leader = wait_forwarded(&lab, &pods, np, None).await;

    // The Service moves (its leader excluded): the table follows it, the old leader's
    // is removed while its speaker keeps running.
    label_node(&client, &leader, EXCLUDE_LABEL, Some("")).await;
    let moved = wait_forwarded(&lab, &pods, np, Some(&leader)).await;
    eprintln!("moved from {leader} to {moved}");
    label_node(&client, &leader, EXCLUDE_LABEL, None).await;
    let leader = wait_forwarded(&lab, &pods, np, None).await;

    // Node failure: the runner-up forwards. The failed node's namespace keeps the
    // table of its killed speaker; once recovered, its new speaker starts from a clean
    // table (kept only if it leads again).
    lab.node_fail(&leader).expect("node fail");
    let next = wait_forwarded_skip(&lab, &pods, np, Some(&leader), true).await;
    eprintln!("after the failure of {leader}: {next}");
    lab.node_recover(&leader).expect("node recover");
    // A bare lab restarts no speaker on recovery: start it as the operator's DaemonSet
    // would.
    lab.restart_speaker(&leader)
        .expect("start the recovered node's speaker");
    lab.wait_node_ready(&leader, true, Duration::from_secs(120))
        .await
        .expect("recovered node Ready");
    let recovered = leader.clone();
    eventually("the recovered node's speaker is ready", WAIT, || async {
        match readyz(&lab, &recovered) {
            200 => Ok(()),
            c => Err(format!("/readyz {c}")),
        }
    })
    .await
    .expect("speaker ready after recovery");
    let after = wait_forwarded(&lab, &pods, np, None).await;
    eprintln!("after recovery of {leader}: {after}");

    // A Service without NodePorts: a Warning event from the node leading its address.
    EchoService {
        port: 8080,
        spec: json!({"allocateLoadBalancerNodePorts": false}),
        ..EchoService::new(NO_NP)
    }
    .apply(&client, APP_NS, APP)
    .await;
    let (no_np_ip, _) = wait_ingress(&svcs, NO_NP).await;
    let note = kit::wait_event_where(&client, (APP_NS, NO_NP), "NoNodePortForDNAT", WAIT, |e| {
        e.type_.as_deref() == Some("Warning") && e.note.is_some()
    })
    .await;
    assert!(
        note.contains(&format!("{APP_NS}/{NO_NP}"))
            && note.contains("spec.allocateLoadBalancerNodePorts")
            && note.contains("8080/TCP"),
        "{note}"
    );
    // Nothing is forwarded for it, anywhere.
    for n in lab.topology().nodes() {
        if let Some(t) = table(&lab, &n.name) {
            assert!(!t.contains(&no_np_ip.to_string()), "{}: {t}", n.name);
        }
    }

    // loadBalancerSourceRanges: kube-proxy sees these packets as NodePort packets and
    // cannot enforce them, so the leader's table does.
    let set_ranges = |r: serde_json::Value| {
        let svcs = svcs.clone();
        async move {
            let patch = json!({"spec": {"loadBalancerSourceRanges": r}});
            svcs.patch(APP, &PatchParams::default(), &Patch::Merge(&patch))
                .await
                .expect("patch source ranges");
        }
    };
    set_ranges(json!(["203.0.113.0/24"])).await;
    eventually("the leader's table guards the address", WAIT, || async {
        match table(&lab, &after) {
            Some(t) if t.contains("203.0.113.0/24") => Ok(()),
            t => Err(format!("{t:?}")),
        }
    })
    .await
    .expect("ranges in the table");
    for _ in 0..3 {
        let r = kit::ask(&lab, &format!("http://{LB_IP}/"));
        assert!(
            !r.as_ref().is_ok_and(|b| pods.contains(b)),
            "a client outside the ranges was answered: {r:?}"
        );
    }
    let body = kit::ask(&lab, &format!("http://192.0.2.10:{np}/")).expect("nodeport");
    assert!(
        pods.contains(&body),
        "direct NodePort clients are untouched"
    );
    set_ranges(json!(["203.0.113.0/24", format!("{CLIENT_V4}/32")])).await;
    wait_forwarded(&lab, &pods, np, None).await;

    // Deleting the Service removes the rules.
    svcs.delete(APP, &DeleteParams::default())
        .await
        .expect("delete service");
    eventually("no table forwards the deleted Service", WAIT, || async {
        let (fwd, any) = tables(&lab, np);
        let with_ip: Vec<&String> = any
            .iter()
            .filter(|n| table(&lab, n).is_some_and(|t| t.contains(LB_IP)))
            .collect();
        if fwd.is_empty() && with_ip.is_empty() {
            Ok(())
        } else {
            Err(format!(
                "forwarding on {fwd:?}, address in tables on {with_ip:?}"
            ))
        }
    })
    .await
    .expect("rules removed");
    let _ = svcs.delete(NO_NP, &DeleteParams::default()).await;
    drop(client);
    print_speaker_warnings(&lab);
    lab.down().expect("down");
}

/// Control: ipMode Proxy without `--nodeport-dnat`. The address is announced but
/// nothing carries it: kube-proxy leaves it alone and the speaker installs no table.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_nodeport_dnat_proxy_mode_addresses_are_unreachable() {
    let (lab, client) = kit::up(LabOptions {
        controller_args: vec!["--lb-ip-mode".into(), "Proxy".into()],
        ..kit::bare(3)
    })
    .await;
    let pods = set_up(&lab, &client).await;
    let svcs: Api<Service> = Api::namespaced(client.clone(), APP_NS);
    let (ip, mode) = wait_ingress(&svcs, APP).await;
    assert_eq!((ip, mode.as_deref()), (lb_ip(), Some("Proxy")));
    let np = node_port(&svcs, APP).await;
    let leader = eventually("the address is announced", WAIT, || async {
        kit::announcer(&lab, lb_ip(), true).ok_or_else(|| "nobody answers ARP".to_string())
    })
    .await
    .expect("announced");
    // The NodePort itself works: the pods are there and kube-proxy runs.
    let url = format!(
        "http://{}:{np}/",
        lab.topology().node(&leader).unwrap().ipv4
    );
    let body = eventually("the NodePort answers", WAIT, || async {
        kit::ask(&lab, &url)
    })
    .await
    .expect("nodeport");
    assert!(pods.contains(&body), "{body:?}");
    for _ in 0..3 {
        let r = kit::ask(&lab, &format!("http://{LB_IP}/"));
        assert!(
            !r.as_ref().is_ok_and(|b| pods.contains(b)),
            "answered through {LB_IP} without --nodeport-dnat: {r:?}"
        );
        assert_eq!(
            kit::announcer(&lab, lb_ip(), true).as_deref(),
            Some(leader.as_str())
        );
    }
    for n in lab.topology().nodes() {
        assert_eq!(table(&lab, &n.name), None, "table on {}", n.name);
    }
    drop(client);
    lab.down().expect("down");
}
