//! The lab's Kubernetes cluster, in one test with sequential steps (one
//! cluster start instead of five): the API server answers through the root
//! namespace's kubeconfig (kube-rs and kubectl with `lab env`), all nodes are
//! Ready, the tutorial's NodePort flow balances over the pods from the
//! client, a failed node goes NotReady and comes back, and `down` leaves
//! nothing behind.
//!
//! Needs root and the Go harness (`FERROLB_HARNESS`, built by
//! `integration/harness/build.sh`); fails with a clear message without them.

use std::collections::{BTreeMap, BTreeSet};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use ferrolb_integration::lab::{
    IpFamily, Lab, LabOptions, LabPaths, eventually, kubeapi, process, teardown,
};
use ferrolb_integration::testkit::{self as kit, APP, CONTROLLER_PORT, SPEAKER_PORT};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::Service;
use kube::api::{Api, Patch, PatchParams, PostParams};
use serde_json::json;

const GRACE: Duration = Duration::from_secs(20);

/// `KUBECONFIG` as `lab env` prints it.
fn kubeconfig_from_lab_env() -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_lab"))
        .arg("env")
        .output()
        .expect("run lab env");
    assert!(out.status.success(), "lab env failed: {out:?}");
    let text = String::from_utf8_lossy(&out.stdout);
    let line = text
        .lines()
        .find_map(|l| l.strip_prefix("export KUBECONFIG="))
        .unwrap_or_else(|| panic!("no KUBECONFIG in lab env:\n{text}"));
    line.trim_matches('\'').to_owned()
}

/// Waits until `want` echo pods are running and ready; their names.
async fn ready_pods(client: &kube::Client, want: usize) -> BTreeSet<String> {
    eventually(
        &format!("{want} echo pods running"),
        Duration::from_secs(120),
        || async {
            let (names, all) = kit::pods_where(client, "default", APP, kit::pod_ready).await?;
            if names.len() == want {
                Ok(names)
            } else {
                Err(format!("{} of {all} pods running and ready", names.len()))
            }
        },
    )
    .await
    .expect("pods")
}

/// Waits (at most 60 s) until `url` answers the client; the body.
async fn wait_answers(lab: &Lab, url: &str) -> String {
    eventually(
        &format!("{url} answers"),
        Duration::from_secs(60),
        || async {
            lab.curl("client", url, Duration::from_secs(2))
                .map_err(|e| e.to_string())
        },
    )
    .await
    .expect("NodePort answers")
}

/// Creates NodePort Service `echo-hname` (port 80 to the pods' 80), with
/// `extra` added to its spec.
async fn create_nodeport(client: &kube::Client, extra: serde_json::Value) -> Service {
    let mut spec = json!({
        "type": "NodePort",
        "selector": {"app": APP},
        "ports": [{"port": 80, "targetPort": 80, "protocol": "TCP"}]
    });
    if let (Some(s), Some(e)) = (spec.as_object_mut(), extra.as_object()) {
        s.extend(e.clone());
    }
    let service: Service =
        serde_json::from_value(json!({"metadata": {"name": APP}, "spec": spec})).unwrap();
    let services: Api<Service> = Api::namespaced(client.clone(), "default");
    services
        .create(&PostParams::default(), &service)
        .await
        .expect("create service")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cluster_serves_the_tutorial_survives_a_node_failure_and_goes_away() {
    let (lab, client) = kit::up(LabOptions {
        node_monitor_grace_period: GRACE,
        ..kit::bare(3)
    })
    .await;

    // The API server answers from the root namespace, for kube-rs and for
    // kubectl with the kubeconfig `lab env` names (the lab's).
    let version = client.apiserver_version().await.expect("server version");
    assert!(
        version.git_version.starts_with("v1."),
        "unexpected server version {version:?}"
    );
    let kubeconfig = kubeconfig_from_lab_env();
    assert_eq!(kubeconfig, lab.kubeconfig_path().to_string_lossy());
    let kv: serde_json::Value =
        serde_json::from_str(&kit::kubectl(&lab, &["version", "-o", "json"])).unwrap();
    assert_eq!(
        kv["serverVersion"]["gitVersion"].as_str(),
        Some(version.git_version.as_str()),
        "kubectl sees another server: {kv}"
    );

    // Every node registered and Ready.
    let ready = kubeapi::node_readiness(&client).await.unwrap();
    let want: BTreeMap<String, bool> = lab
        .topology()
        .nodes()
        .map(|n| (n.name.clone(), true))
        .collect();
    assert_eq!(ready, want);

    // Tutorial: deployment, scale to 3, NodePort service.
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), "default");
    let deployment: Deployment =
        serde_json::from_value(kit::echo_deployment("default", APP, 1, &json!({}))).unwrap();
    deployments
        .create(&PostParams::default(), &deployment)
        .await
        .expect("create deployment");
    deployments
        .patch(
            APP,
            &PatchParams::default(),
            &Patch::Merge(serde_json::json!({"spec": {"replicas": 3}})),
        )
        .await
        .expect("scale deployment");
    let pod_names = ready_pods(&client, 3).await;
    let service = create_nodeport(&client, json!({})).await;
    let node_port = service.spec.unwrap().ports.unwrap()[0]
        .node_port
        .expect("a NodePort");

    // The client reaches the service on every node and is balanced over
    // the pods.
    let mut seen_anywhere = BTreeSet::new();
    for node in lab.topology().nodes() {
        let url = format!("http://{}:{node_port}/", node.ipv4);
        // kube-proxy programs the rules shortly after the Service appears.
        wait_answers(&lab, &url).await;
        let mut seen = BTreeSet::new();
        for _ in 0..15 {
            let body = lab
                .curl("client", &url, Duration::from_secs(2))
                .unwrap_or_else(|e| panic!("{url}: {e}"));
            let name = body.trim().to_owned();
            assert!(
                pod_names.contains(&name),
                "{url} answered {body:?}, not a pod name of {pod_names:?}"
            );
            seen.insert(name);
        }
        assert!(
            seen.len() >= 2,
            "{url} always answered from {seen:?}: no balancing"
        );
        seen_anywhere.extend(seen);
    }
    assert_eq!(
        seen_anywhere, pod_names,
        "some pods never answered through a NodePort"
    );

    // A failed node goes NotReady after the grace period and stops
    // answering; recovered, it is Ready again.
    let victim = "w3-k8s";
    let victim_url = format!(
        "http://{}:{node_port}/",
        lab.topology().node(victim).unwrap().ipv4
    );
    lab.node_fail(victim).expect("node-fail");
    assert!(
        lab.curl("client", &victim_url, Duration::from_secs(2))
            .is_err(),
        "a failed node still serves its NodePort"
    );
    lab.wait_node_ready(victim, false, GRACE + Duration::from_secs(60))
        .await
        .expect("failed node becomes NotReady");
    lab.node_recover(victim).expect("node-recover");
    lab.wait_node_ready(victim, true, Duration::from_secs(90))
        .await
        .expect("recovered node becomes Ready");
    // The recovered node serves its NodePort again.
    wait_answers(&lab, &victim_url).await;

    // Down removes namespaces, links, processes, mounts and state.
    drop(client);
    let paths = lab.paths().clone();
    lab.down().expect("down");
    let left = teardown::leftovers(&paths);
    assert!(left.is_empty(), "down left: {left:#?}");
}

/// A stand-in for a ferrolb binary: logs the environment the lab gives it
/// and answers every HTTP request on `port` (its `/readyz`) with 200, using
/// the harness's echo server.
fn fake_ferrolb(lab_paths: &LabPaths, dir: &Path, name: &str, port: u16) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(
        &path,
        format!(
            "#!/bin/sh\necho \"fake node=$NODE_NAME kubeconfig=$KUBECONFIG log=$RUST_LOG\"\nexec '{}' echo --name ready --listen 127.0.0.1:{port}\n",
            lab_paths.harness().display()
        ),
    )
    .unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
    path
}

fn daemon_pid(lab: &Lab, name: &str) -> i32 {
    lab.daemon_pid(name)
        .unwrap()
        .unwrap_or_else(|| panic!("{name} is not running"))
}

/// Whether `pid` is (or within 10 s gets) in `netns`. A daemon's pid is that
/// of `setsid ip netns exec ...`, which enters the namespace only after it
/// started: right after a (re)start it may still be on its way in.
fn in_netns(netns: &str, pid: i32) -> bool {
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let out = Command::new("ip")
            .args(["netns", "pids", netns])
            .output()
            .unwrap();
        let found = String::from_utf8_lossy(&out.stdout)
            .lines()
            .any(|l| l.trim() == pid.to_string());
        if found || std::time::Instant::now() >= deadline {
            return found;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dual_stack_nodeport_and_ferrolb_processes() {
    let fakes = tempfile::tempdir().unwrap();
    let paths = LabPaths::from_env();
    let (lab, client) = kit::up(LabOptions {
        workers: 1,
        ip_family: IpFamily::DualStack,
        controller_bin: Some(fake_ferrolb(
            &paths,
            fakes.path(),
            "fake-controller",
            CONTROLLER_PORT,
        )),
        speaker_bin: Some(fake_ferrolb(
            &paths,
            fakes.path(),
            "fake-speaker",
            SPEAKER_PORT,
        )),
        require_ferrolb: true,
        ..LabOptions::default()
    })
    .await;

    // ferrolb runs as the contract says: controller in m-k8s, a speaker in
    // every node, each with the in-lab kubeconfig and its node's name; and
    // restarts, node failure and recovery handle them.
    let controller = daemon_pid(&lab, "controller");
    assert!(in_netns("flb-m-k8s", controller));
    for node in ["m-k8s", "w1-k8s"] {
        let pid = daemon_pid(&lab, &format!("speaker-{node}"));
        assert!(
            in_netns(&format!("flb-{node}"), pid),
            "speaker-{node} runs elsewhere"
        );
        let want = format!(
            "fake node={node} kubeconfig={} log=info",
            lab.lab_kubeconfig_path().display()
        );
        eventually(
            &format!("speaker-{node} logs its environment"),
            Duration::from_secs(10),
            || {
                let log = std::fs::read_to_string(lab.paths().log(&format!("speaker-{node}")))
                    .unwrap_or_default();
                let ok = log.contains(&want);
                async move { if ok { Ok(()) } else { Err(log) } }
            },
        )
        .await
        .expect("speaker environment");
    }
    lab.restart_controller().expect("restart controller");
    let controller2 = daemon_pid(&lab, "controller");
    assert_ne!(controller, controller2);
    assert!(
        !process::alive(controller),
        "old controller survived its restart"
    );
    let speaker = daemon_pid(&lab, "speaker-w1-k8s");
    lab.restart_speaker("w1-k8s").expect("restart speaker");
    let speaker2 = daemon_pid(&lab, "speaker-w1-k8s");
    assert!(speaker != speaker2 && !process::alive(speaker));
    lab.node_fail("w1-k8s").expect("node-fail");
    assert!(
        !process::alive(speaker2),
        "node-fail left the speaker running"
    );
    lab.node_recover("w1-k8s").expect("node-recover");
    let speaker3 = daemon_pid(&lab, "speaker-w1-k8s");
    assert!(in_netns("flb-w1-k8s", speaker3));
    lab.wait_node_ready("w1-k8s", true, Duration::from_secs(60))
        .await
        .expect("w1-k8s Ready after recovery");

    // A node agent that dies while the lab waits for its nodes fails the
    // wait, saying how it ended (its own log cannot say); recovering the node
    // starts it again.
    let agent = daemon_pid(&lab, "node-agent-w1-k8s");
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(agent),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    eventually(
        "the killed node agent gone",
        Duration::from_secs(10),
        || async move {
            if process::alive(agent) {
                Err("still running".to_owned())
            } else {
                Ok(())
            }
        },
    )
    .await
    .unwrap();
    let err = lab
        .wait_nodes_ready(Duration::from_secs(60))
        .await
        .expect_err("a killed node agent went unnoticed");
    assert!(
        err.to_string()
            .starts_with("node-agent-w1-k8s killed by SIGKILL during start-up"),
        "{err}"
    );
    lab.node_recover("w1-k8s").expect("node-recover");
    lab.wait_nodes_ready(Duration::from_secs(60))
        .await
        .expect("nodes Ready, the agent started again");
    let agent2 = daemon_pid(&lab, "node-agent-w1-k8s");
    assert_ne!(agent, agent2);
    assert!(in_netns("flb-w1-k8s", agent2));
    let log = std::fs::read_to_string(lab.paths().log("node-agent-w1-k8s")).unwrap();
    assert_eq!(log.matches("==== lab: start").count(), 3, "{log}");

    let deployments: Api<Deployment> = Api::namespaced(client.clone(), "default");
    let deployment: Deployment =
        serde_json::from_value(kit::echo_deployment("default", APP, 2, &json!({}))).unwrap();
    deployments
        .create(&PostParams::default(), &deployment)
        .await
        .expect("create deployment");
    let pod_names = ready_pods(&client, 2).await;
    let spec = create_nodeport(&client, json!({"ipFamilyPolicy": "RequireDualStack"}))
        .await
        .spec
        .unwrap();
    let cluster_ips = spec.cluster_ips.unwrap_or_default();
    assert_eq!(cluster_ips.len(), 2, "{cluster_ips:?}");
    assert!(cluster_ips[0].starts_with("198.19."), "{cluster_ips:?}");
    assert!(
        cluster_ips[1].starts_with("2001:db8:19::"),
        "{cluster_ips:?}"
    );
    let node_port = spec.ports.unwrap()[0].node_port.expect("a NodePort");

    for node in lab.topology().nodes() {
        for url in [
            format!("http://{}:{node_port}/", node.ipv4),
            format!("http://[{}]:{node_port}/", node.ipv6),
        ] {
            let body = wait_answers(&lab, &url).await;
            assert!(
                pod_names.contains(body.trim()),
                "{url} answered {body:?}, not one of {pod_names:?}"
            );
        }
    }

    drop(client);
    let paths = lab.paths().clone();
    lab.down().expect("down");
    let left = teardown::leftovers(&paths);
    assert!(left.is_empty(), "down left: {left:#?}");
}
