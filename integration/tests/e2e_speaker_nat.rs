//! The speaker's NodePort DNAT (`--nodeport-dnat`) on the lab, with the controller
//! writing `ipMode: Proxy` (`--lb-ip-mode Proxy`), so that kube-proxy installs nothing
//! for the LoadBalancer address and only the leader's table carries the traffic to the
//! Service's NodePort. Checks what a client sees (requests through the address reach
//! the pods) and where the table is (on the leader, and nowhere else, through a Service
//! move, a node failure and recovery, and the Service's deletion); a Service without
//! NodePorts gets a Warning event; and a control lab without `--nodeport-dnat` shows the
//! address unreachable although it is announced.
//!
//! Needs root, the Go harness and built `ferrolb-controller` and `ferrolb-speaker`.

use std::collections::BTreeSet;
use std::io::Read;
use std::net::IpAddr;
use std::process::Command;
use std::time::Duration;

use ferrolb_integration::lab::{Lab, LabOptions, components, eventually};
use k8s_openapi::ByteString;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{Namespace, Node, Pod, Secret, Service};
use k8s_openapi::api::events::v1::Event;
use kube::Client;
use kube::api::{
    Api, ApiResource, DeleteParams, DynamicObject, GroupVersionKind, ListParams, Patch, PatchParams,
};
use serde_json::{Value, json};

const NS: &str = "metallb-system";
const APP_NS: &str = "default";
const APP: &str = "echo-hname";
const NO_NP: &str = "echo-no-nodeport";
const LB_IP: &str = "198.51.100.10";
const WORKERS: [&str; 3] = ["w1-k8s", "w2-k8s", "w3-k8s"];
const ANNOUNCE_LABEL: &str = "e2e.ferrolb.io/announce";
const EXCLUDE_LABEL: &str = "node.kubernetes.io/exclude-from-external-load-balancers";
const TABLE: &str = "ferrolb_nat";
const WAIT: Duration = Duration::from_secs(60);

fn ar(kind: &str) -> ApiResource {
    ApiResource::from_gvk(&GroupVersionKind::gvk("metallb.io", "v1beta1", kind))
}

async fn apply<K>(api: &Api<K>, name: &str, obj: Value)
where
    K: kube::Resource + Clone + serde::de::DeserializeOwned + std::fmt::Debug,
{
    api.patch(
        name,
        &PatchParams::apply("e2e").force(),
        &Patch::Apply(&obj),
    )
    .await
    .unwrap_or_else(|e| panic!("apply {name}: {e}"));
}

fn kubectl(lab: &Lab, args: &[&str]) {
    let out = Command::new("kubectl")
        .args(args)
        .env("KUBECONFIG", lab.kubeconfig_path())
        .output()
        .expect("kubectl");
    assert!(out.status.success(), "kubectl {args:?}: {out:?}");
}

fn lb_ip() -> IpAddr {
    LB_IP.parse().unwrap()
}

async fn label_node(client: &Client, node: &str, key: &str, value: Option<&str>) {
    let nodes: Api<Node> = Api::all(client.clone());
    nodes
        .patch(
            node,
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"labels": {key: value}}})),
        )
        .await
        .unwrap_or_else(|e| panic!("label {node}: {e}"));
}

/// Namespace, CRDs, pool, L2Advertisement (workers only), the echo Deployment (3
/// replicas) and its LoadBalancer Service, the membership Secret; then the controller
/// and the speakers. Returns the pod names.
async fn set_up(lab: &Lab, client: &Client) -> BTreeSet<String> {
    let nss: Api<Namespace> = Api::all(client.clone());
    apply(
        &nss,
        NS,
        json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": NS}}),
    )
    .await;
    let crds = concat!(env!("CARGO_MANIFEST_DIR"), "/../deploy/crds");
    kubectl(lab, &["apply", "--server-side", "-f", crds]);
    kubectl(
        lab,
        &[
            "wait",
            "--for=condition=Established",
            "--timeout=60s",
            "crd",
            "--all",
        ],
    );
    for w in WORKERS {
        label_node(client, w, ANNOUNCE_LABEL, Some("yes")).await;
    }
    let pools: Api<DynamicObject> = Api::namespaced_with(client.clone(), NS, &ar("IPAddressPool"));
    apply(
        &pools,
        "first-pool",
        json!({
            "apiVersion": "metallb.io/v1beta1", "kind": "IPAddressPool",
            "metadata": {"name": "first-pool", "namespace": NS},
            "spec": {"addresses": ["198.51.100.10-198.51.100.12"]}
        }),
    )
    .await;
    let l2: Api<DynamicObject> = Api::namespaced_with(client.clone(), NS, &ar("L2Advertisement"));
    apply(
        &l2,
        "l2",
        json!({
            "apiVersion": "metallb.io/v1beta1", "kind": "L2Advertisement",
            "metadata": {"name": "l2", "namespace": NS},
            "spec": {"nodeSelectors": [{"matchLabels": {ANNOUNCE_LABEL: "yes"}}]}
        }),
    )
    .await;
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), APP_NS);
    apply(
        &deployments,
        APP,
        json!({
            "apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": APP, "namespace": APP_NS, "labels": {"app": APP}},
            "spec": {
                "replicas": 3,
                "selector": {"matchLabels": {"app": APP}},
                "template": {
                    "metadata": {"labels": {"app": APP}},
                    "spec": {"containers": [{"name": APP, "image": "sysnet4admin/echo-hname"}]}
                }
            }
        }),
    )
    .await;
    let svcs: Api<Service> = Api::namespaced(client.clone(), APP_NS);
    apply(
        &svcs,
        APP,
        json!({
            "apiVersion": "v1", "kind": "Service",
            "metadata": {"name": APP, "namespace": APP_NS},
            "spec": {"type": "LoadBalancer", "selector": {"app": APP},
                     "ports": [{"port": 80, "targetPort": 80, "protocol": "TCP"}]}
        }),
    )
    .await;
    let pods_api: Api<Pod> = Api::namespaced(client.clone(), APP_NS);
    let pods: BTreeSet<String> =
        eventually("3 echo pods running", Duration::from_secs(120), || async {
            let list = pods_api
                .list(&ListParams::default().labels(&format!("app={APP}")))
                .await
                .map_err(|e| e.to_string())?;
            let running: BTreeSet<String> = list
                .items
                .iter()
                .filter(|p| p.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Running"))
                .map(|p| p.metadata.name.clone().unwrap_or_default())
                .collect();
            if running.len() == 3 {
                Ok(running)
            } else {
                Err(format!("running: {running:?}"))
            }
        })
        .await
        .expect("pods");
    let mut key = vec![0u8; 32];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut key))
        .expect("random key");
    let secrets: Api<Secret> = Api::namespaced(client.clone(), NS);
    let mut secret: Secret = serde_json::from_value(json!({
        "metadata": {"name": "ferrolb-memberlist", "namespace": NS}
    }))
    .unwrap();
    secret.data = Some([("secretkey".to_string(), ByteString(key))].into());
    secrets
        .create(&Default::default(), &secret)
        .await
        .expect("create secret");
    lab.restart_controller().expect("start controller");
    for n in lab.topology().nodes() {
        lab.restart_speaker(&n.name).expect("start speaker");
    }
    pods
}

/// The Service's ingress once it has one: (address, ipMode).
async fn wait_ingress(svcs: &Api<Service>, name: &str) -> (IpAddr, Option<String>) {
    eventually(&format!("{name} gets an address"), WAIT, || async {
        let s = svcs.get(name).await.map_err(|e| e.to_string())?;
        s.status
            .and_then(|s| s.load_balancer)
            .and_then(|l| l.ingress)
            .into_iter()
            .flatten()
            .find_map(|i| {
                i.ip.as_deref()
                    .and_then(|ip| ip.parse().ok())
                    .map(|ip| (ip, i.ip_mode.clone()))
            })
            .ok_or_else(|| "no ingress yet".to_string())
    })
    .await
    .unwrap_or_else(|e| panic!("{e}"))
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

/// The node whose MAC the client has for the address, after asking afresh.
fn announcer(lab: &Lab) -> Option<String> {
    lab.flush_neighbour("client", lb_ip()).expect("flush");
    let _ = lab.curl(
        "client",
        &format!("http://{LB_IP}/"),
        Duration::from_millis(1500),
    );
    lab.announcer("client", lb_ip()).expect("announcer")
}

fn request(lab: &Lab, url: &str) -> Result<String, String> {
    let body = lab
        .curl("client", url, Duration::from_secs(2))
        .map_err(|e| e.to_string())?;
    Ok(body.trim().to_string())
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
        let who = announcer(lab).ok_or("nobody answers ARP")?;
        if not == Some(who.as_str()) {
            return Err(format!("still announced by {who}"));
        }
        let body = request(lab, &format!("http://{LB_IP}/"))?;
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
        for n in lab.topology().nodes() {
            let log = lab.paths().log(&components::speaker_name(&n.name));
            let text = std::fs::read_to_string(&log).unwrap_or_default();
            for line in text.lines().filter(|l| {
                l.contains("NodePort") || l.contains("announcing") || l.contains("WARN")
            }) {
                eprintln!("log {}: {line}", n.name);
            }
        }
        panic!("{e}")
    })
}

/// The HTTP status of a speaker's /readyz (0: no answer).
fn readyz(lab: &Lab, node: &str) -> u16 {
    let out = lab
        .exec(
            node,
            &[
                "curl",
                "-s",
                "-o",
                "/dev/null",
                "-w",
                "%{http_code}",
                "--max-time",
                "3",
                "http://127.0.0.1:7473/readyz",
            ],
        )
        .expect("exec curl");
    String::from_utf8_lossy(&out.stdout)
        .trim()
        .parse()
        .unwrap_or(0)
}

fn print_speaker_warnings(lab: &Lab) {
    for n in lab.topology().nodes() {
        let log = lab.paths().log(&components::speaker_name(&n.name));
        let text = std::fs::read_to_string(&log).unwrap_or_default();
        for line in text
            .lines()
            .filter(|l| l.contains("WARN") || l.contains("ERROR"))
            .take(20)
        {
            eprintln!("log {}: {line}", n.name);
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nodeport_dnat_carries_proxy_mode_addresses() {
    let lab = Lab::up(LabOptions {
        bare: true,
        workers: 3,
        controller_args: vec!["--lb-ip-mode".into(), "Proxy".into()],
        speaker_args: vec!["--nodeport-dnat".into()],
        ..LabOptions::default()
    })
    .await
    .expect("lab up");
    let client = lab.kube_client().await.expect("client");
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
        seen.insert(request(&lab, &format!("http://{LB_IP}/")).expect("request"));
    }
    assert!(seen.is_subset(&pods) && seen.len() >= 2, "answers {seen:?}");
    // Direct NodePort clients are untouched, on the leader and elsewhere.
    for n in lab.topology().nodes() {
        let body = request(&lab, &format!("http://{}:{np}/", n.ipv4)).expect("nodeport");
        assert!(pods.contains(&body), "NodePort on {}: {body:?}", n.name);
    }

    // Control: without the leader's table the address is announced but unreachable.
    let out = lab
        .exec(&leader, &["nft", "delete", "table", "inet", TABLE])
        .expect("nft delete");
    assert!(out.status.success(), "{out:?}");
    for _ in 0..3 {
        let r = request(&lab, &format!("http://{LB_IP}/"));
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
    apply(
        &svcs,
        NO_NP,
        json!({
            "apiVersion": "v1", "kind": "Service",
            "metadata": {"name": NO_NP, "namespace": APP_NS},
            "spec": {"type": "LoadBalancer", "selector": {"app": APP},
                     "allocateLoadBalancerNodePorts": false,
                     "ports": [{"port": 8080, "targetPort": 80, "protocol": "TCP"}]}
        }),
    )
    .await;
    let (no_np_ip, _) = wait_ingress(&svcs, NO_NP).await;
    let events: Api<Event> = Api::namespaced(client.clone(), APP_NS);
    let note = eventually("NoNodePortForDNAT event", WAIT, || async {
        let list = events
            .list(&ListParams::default())
            .await
            .map_err(|e| e.to_string())?;
        list.items
            .iter()
            .filter(|e| e.regarding.as_ref().and_then(|r| r.name.as_deref()) == Some(NO_NP))
            .filter(|e| e.reason.as_deref() == Some("NoNodePortForDNAT"))
            .filter(|e| e.type_.as_deref() == Some("Warning"))
            .find_map(|e| e.note.clone())
            .ok_or_else(|| "no such event yet".to_string())
    })
    .await
    .expect("event");
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
    let lab = Lab::up(LabOptions {
        bare: true,
        workers: 3,
        controller_args: vec!["--lb-ip-mode".into(), "Proxy".into()],
        ..LabOptions::default()
    })
    .await
    .expect("lab up");
    let client = lab.kube_client().await.expect("client");
    let pods = set_up(&lab, &client).await;
    let svcs: Api<Service> = Api::namespaced(client.clone(), APP_NS);
    let (ip, mode) = wait_ingress(&svcs, APP).await;
    assert_eq!((ip, mode.as_deref()), (lb_ip(), Some("Proxy")));
    let np = node_port(&svcs, APP).await;
    let leader = eventually("the address is announced", WAIT, || async {
        announcer(&lab).ok_or_else(|| "nobody answers ARP".to_string())
    })
    .await
    .expect("announced");
    // The NodePort itself works: the pods are there and kube-proxy runs.
    let url = format!(
        "http://{}:{np}/",
        lab.topology().node(&leader).unwrap().ipv4
    );
    let body = eventually("the NodePort answers", WAIT, || async {
        request(&lab, &url)
    })
    .await
    .expect("nodeport");
    assert!(pods.contains(&body), "{body:?}");
    for _ in 0..3 {
        let r = request(&lab, &format!("http://{LB_IP}/"));
        assert!(
            !r.as_ref().is_ok_and(|b| pods.contains(b)),
            "answered through {LB_IP} without --nodeport-dnat: {r:?}"
        );
        assert_eq!(announcer(&lab).as_deref(), Some(leader.as_str()));
    }
    for n in lab.topology().nodes() {
        assert_eq!(table(&lab, &n.name), None, "table on {}", n.name);
    }
    drop(client);
    lab.down().expect("down");
}
