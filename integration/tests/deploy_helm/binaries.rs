//! ferrolb's real binaries under the chart's ServiceAccounts: the controller
//! and one speaker per node run as lab daemons (the lab's node agent does
//! not run images) with a token of their ServiceAccount, so any permission
//! the chart lacks shows up as a refused request. They must allocate and
//! announce a LoadBalancer address.

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use ferrolb_integration::lab::process::{self, DaemonSpec};
use ferrolb_integration::lab::{Lab, LabPaths, eventually, repo_root};
use ferrolb_integration::testkit as kit;
use k8s_openapi::api::authentication::v1::{TokenRequest, TokenRequestSpec};
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{Service, ServiceAccount};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::api::{Api, DeleteParams, PostParams};

use super::helm::NS;

/// The controller's daemon name.
const CONTROLLER: &str = "chart-controller";

/// A ferrolb binary as the lab finds it (`FERROLB_CONTROLLER`,
/// `FERROLB_SPEAKER`, else cargo's build of it, see `LabPaths::cargo_bin`),
/// built when missing.
fn ferrolb_bin(found: Option<PathBuf>, name: &str) -> PathBuf {
    if let Some(bin) = found {
        return bin;
    }
    let paths = LabPaths::from_env();
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let mut args = vec!["build", "--bin", name];
    if paths.profile(name) == "release" {
        args.push("--release");
    }
    let status = Command::new(cargo)
        .args(&args)
        .current_dir(repo_root())
        .status()
        .expect("run cargo build");
    assert!(status.success(), "cargo build --bin {name} failed");
    paths.cargo_bin(name)
}

/// A kubeconfig like `base` (same server and CA) authenticating as
/// ServiceAccount `sa` of the release namespace, written as JSON.
async fn sa_kubeconfig(client: &kube::Client, base: &Path, sa: &str, out: &Path) {
    let sas: Api<ServiceAccount> = Api::namespaced(client.clone(), NS);
    let tr = TokenRequest {
        spec: Some(TokenRequestSpec {
            expiration_seconds: Some(3600),
            ..Default::default()
        }),
        ..Default::default()
    };
    let token = sas
        .create_token_request(sa, &PostParams::default(), &tr)
        .await
        .unwrap_or_else(|e| panic!("token for {sa}: {e}"))
        .status
        .expect("token status")
        .token;
    let kc = kube::config::Kubeconfig::read_from(base).expect("read kubeconfig");
    let mut json = serde_json::to_value(&kc).expect("kubeconfig as JSON");
    let users = json["users"].as_array_mut().expect("users");
    assert!(!users.is_empty(), "kubeconfig without users");
    for u in users.iter_mut() {
        u["user"] = serde_json::json!({ "token": token });
    }
    std::fs::write(out, serde_json::to_vec_pretty(&json).expect("JSON")).expect("write kubeconfig");
}

/// Daemon `name` of the lab, running `program` with `args` in `netns` (the
/// root namespace for `None`) with the kubeconfig `kubeconfig`.
fn daemon(
    name: &str,
    netns: Option<String>,
    program: &Path,
    args: &[&str],
    kubeconfig: &Path,
) -> DaemonSpec {
    DaemonSpec {
        name: name.to_owned(),
        netns,
        net_only: false,
        program: program.to_path_buf(),
        args: args.iter().map(OsString::from).collect(),
        env: vec![
            ("KUBECONFIG".to_owned(), kubeconfig.into()),
            ("RUST_LOG".to_owned(), "info".into()),
        ],
    }
}

/// The log of daemon `name`.
fn log(lab: &Lab, name: &str) -> String {
    std::fs::read_to_string(lab.daemon_log(name)).unwrap_or_default()
}

/// Every daemon of `names` still runs, and none had a request refused by
/// the API server.
fn healthy(lab: &Lab, names: &[String]) -> Result<(), String> {
    for name in names {
        process::check_running(lab.paths(), &[name]).map_err(|e| e.to_string())?;
        let log = log(lab, name);
        if log.contains("Forbidden") || log.contains("forbidden") {
            return Err(format!("{name} was refused by RBAC:\n{log}"));
        }
    }
    Ok(())
}

pub async fn run_binaries_with_chart_rbac(lab: &Lab, client: &kube::Client) {
    let dir = tempfile::tempdir().expect("temp dir");
    let limit = Duration::from_secs(60);

    // Controller, from the root namespace (API via the lab's forwarder).
    let ctl_kc = dir.path().join("controller.kubeconfig");
    sa_kubeconfig(
        client,
        &lab.kubeconfig_path(),
        "ferrolb-controller",
        &ctl_kc,
    )
    .await;
    let mut controller = daemon(
        CONTROLLER,
        None,
        &ferrolb_bin(lab.controller_bin(), "ferrolb-controller"),
        &[
            "--namespace",
            NS,
            "--metrics-addr",
            "127.0.0.1:0",
            "--leader-elect",
            "true",
            "--lease-name",
            "ferrolb-controller",
        ],
        &ctl_kc,
    );
    controller
        .env
        .push(("POD_NAME".to_owned(), "chart-rbac-controller".into()));
    process::spawn(lab.paths(), &controller).expect("start the controller");

    // A speaker in every node's namespace (API via the in-lab address):
    // a lone speaker is isolated from its peers and announces nothing.
    let spk_kc = dir.path().join("speaker.kubeconfig");
    sa_kubeconfig(
        client,
        &lab.lab_kubeconfig_path(),
        "ferrolb-speaker",
        &spk_kc,
    )
    .await;
    let speaker_bin = ferrolb_bin(lab.speaker_bin(), "ferrolb-speaker");
    let nodes: Vec<String> = lab.topology().nodes().map(|n| n.name.clone()).collect();
    let mut speakers = Vec::new();
    for node in lab.topology().nodes() {
        let name = format!("chart-speaker-{}", node.name);
        let args = [
            "--node-name",
            &node.name,
            "--namespace",
            NS,
            "--metrics-addr",
            "127.0.0.1:0",
            "--announcer",
            "none",
        ];
        let spec = daemon(&name, Some(node.netns()), &speaker_bin, &args, &spk_kc);
        process::spawn(lab.paths(), &spec).unwrap_or_else(|e| panic!("start {name}: {e}"));
        speakers.push(name);
    }
    let speaker_logs = || {
        speakers
            .iter()
            .map(|n| format!("--- {n}\n{}", log(lab, n)))
            .collect::<String>()
    };
    let mut all = speakers.clone();
    all.push(CONTROLLER.to_owned());
    let all = &all;

    // A LoadBalancer Service gets an address from the configured pools.
    let services: Api<Service> = Api::namespaced(client.clone(), "default");
    let svc: Service = serde_json::from_value(serde_json::json!({
        "metadata": {"name": "chart-rbac"},
        "spec": {"type": "LoadBalancer", "ports": [{"port": 80}]}
    }))
    .expect("Service");
    services
        .create(&PostParams::default(), &svc)
        .await
        .expect("create Service");
    // Speakers announce only Services with a ready endpoint: one, by hand
    // (the Service has no selector; no traffic is sent to it).
    let slices: Api<EndpointSlice> = Api::namespaced(client.clone(), "default");
    let slice: EndpointSlice = serde_json::from_value(serde_json::json!({
        "metadata": {"name": "chart-rbac", "labels": {
            "kubernetes.io/service-name": "chart-rbac",
            "endpointslice.kubernetes.io/managed-by": "deploy-helm-test",
        }},
        "addressType": "IPv4",
        "endpoints": [{
            "addresses": [lab.topology().nodes().next().expect("a node").ipv4.to_string()],
            "conditions": {"ready": true},
            "nodeName": nodes[0],
        }],
        "ports": [{"port": 80, "protocol": "TCP"}]
    }))
    .expect("EndpointSlice");
    slices
        .create(&PostParams::default(), &slice)
        .await
        .expect("create EndpointSlice");
    let svcs = &services;
    let ip = eventually(
        "address allocated by the controller",
        limit,
        || async move {
            healthy(lab, all)?;
            let s = svcs.get("chart-rbac").await.map_err(|e| e.to_string())?;
            kit::ingress(&s)
                .into_iter()
                .next()
                .ok_or_else(|| "no ingress yet".to_owned())
        },
    )
    .await
    .unwrap_or_else(|e| panic!("{e}\ncontroller log:\n{}", log(lab, CONTROLLER)));
    assert!(ip.starts_with("198.51.100."), "unexpected address {ip}");

    // The controller holds the Lease under its identity.
    let leases: Api<Lease> = Api::namespaced(client.clone(), NS);
    let holder = leases
        .get("ferrolb-controller")
        .await
        .expect("Lease ferrolb-controller")
        .spec
        .and_then(|s| s.holder_identity);
    assert_eq!(holder.as_deref(), Some("chart-rbac-controller"));

    // One of the speakers announces the address and records it in a
    // ServiceL2Status next to the Service: exactly one, naming one of the
    // nodes.
    let nodes = &nodes;
    let announcer = eventually(
        "ServiceL2Status written by a speaker",
        limit,
        || async move {
            healthy(lab, all)?;
            match kit::l2_status_nodes(client, "default", "chart-rbac")
                .await?
                .as_slice()
            {
                [n] if nodes.contains(n) => Ok(n.clone()),
                announcers => Err(format!("announced by {announcers:?}")),
            }
        },
    )
    .await
    .unwrap_or_else(|e| panic!("{e}\nspeaker logs:\n{}", speaker_logs()));
    healthy(lab, all).unwrap_or_else(|e| panic!("{e}"));
    eprintln!("chart RBAC: {ip} allocated by the controller, announced by {announcer}");

    services
        .delete("chart-rbac", &DeleteParams::default())
        .await
        .expect("delete Service");
    slices
        .delete("chart-rbac", &DeleteParams::default())
        .await
        .expect("delete EndpointSlice");
    for name in all {
        lab.stop_daemon(name, Duration::from_secs(5))
            .unwrap_or_else(|e| panic!("stop {name}: {e}"));
    }
}
