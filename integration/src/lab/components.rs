//! The command line of every daemon of the lab, in one place.
//!
//! Kubernetes comes from the Go harness (one binary, one sub-command per
//! component); ferrolb's controller and speaker run as plain processes in
//! the node namespaces, as they would run as host-network pods. Change the
//! flags here and nowhere else.

use std::ffi::OsString;
use std::path::Path;
use std::time::Duration;

use super::LabOptions;
use super::paths::LabPaths;
use super::process::DaemonSpec;
use super::topology::{Host, IpFamily, Topology};

/// Name of the control-plane daemon.
pub const CONTROL_PLANE: &str = "control-plane";
/// Name of the loopback forwarder in the root namespace.
pub const FORWARD: &str = "forward";
/// Name of the ferrolb controller daemon.
pub const CONTROLLER: &str = "controller";

/// Daemon name of node `node`'s agent.
pub fn node_agent_name(node: &str) -> String {
    format!("node-agent-{node}")
}
/// Daemon name of node `node`'s kube-proxy.
pub fn kube_proxy_name(node: &str) -> String {
    format!("kube-proxy-{node}")
}
/// Daemon name of node `node`'s ferrolb speaker.
pub fn speaker_name(node: &str) -> String {
    format!("speaker-{node}")
}

fn os(args: &[&str]) -> Vec<OsString> {
    args.iter().map(OsString::from).collect()
}

fn secs(d: Duration) -> String {
    format!("{}s", d.as_secs().max(1))
}

/// etcd, API server, controller-manager and scheduler in the control-plane
/// node's namespace.
pub fn control_plane(paths: &LabPaths, topo: &Topology, opts: &LabOptions) -> DaemonSpec {
    let m = topo.control_plane();
    // The API server's own Service must be of the primary Service family.
    let advertise = match topo.family {
        IpFamily::Ipv6 => m.ipv6.to_string(),
        _ => m.ipv4.to_string(),
    };
    let mut args: Vec<OsString> = vec!["control-plane".into(), "--data-dir".into()];
    args.push(paths.cp_dir().into());
    args.extend(os(&[
        "--advertise-address",
        &advertise,
        "--service-cidr",
        &topo.service_cidrs(),
        "--cluster-cidr",
        &topo.cluster_cidrs(),
        "--node-monitor-grace-period",
        &secs(opts.node_monitor_grace_period),
    ]));
    DaemonSpec {
        name: CONTROL_PLANE.to_owned(),
        netns: Some(m.netns()),
        net_only: false,
        program: paths.harness(),
        args,
        env: Vec::new(),
    }
}

/// Loopback TCP in the root namespace to the API server's unix socket; also
/// writes the root namespace's kubeconfig.
pub fn forward(paths: &LabPaths) -> DaemonSpec {
    let args: Vec<OsString> = vec![
        "forward".into(),
        "--unix".into(),
        paths.cp_socket().into(),
        "--listen".into(),
        "127.0.0.1:0".into(),
        "--port-file".into(),
        paths.forward_port().into(),
        "--kubeconfig-in".into(),
        paths.cp_kubeconfig().into(),
        "--kubeconfig-out".into(),
        paths.kubeconfig().into(),
    ];
    DaemonSpec {
        name: FORWARD.to_owned(),
        netns: None,
        net_only: false,
        program: paths.harness(),
        args,
        env: Vec::new(),
    }
}

/// The node agent (Node object, Lease heartbeats, pods as namespaces).
pub fn node_agent(paths: &LabPaths, topo: &Topology, node: &Host) -> DaemonSpec {
    let mut args: Vec<OsString> = vec!["node-agent".into(), "--kubeconfig".into()];
    args.push(paths.cp_kubeconfig().into());
    args.extend(os(&[
        "--node-name",
        &node.name,
        "--node-ip",
        &topo.node_ips(node),
        "--pod-cidr",
        &topo.pod_cidrs(node),
        "--netns",
        &node.netns(),
        "--state-dir",
    ]));
    args.push(paths.node_dir(&node.name).into());
    args.push("--harness".into());
    args.push(paths.harness().into());
    DaemonSpec {
        name: node_agent_name(&node.name),
        netns: Some(node.netns()),
        // It creates the pods' namespaces; they must be visible machine-wide.
        net_only: true,
        program: paths.harness(),
        args,
        env: Vec::new(),
    }
}

/// kube-proxy of one node.
pub fn kube_proxy(paths: &LabPaths, topo: &Topology, node: &Host, opts: &LabOptions) -> DaemonSpec {
    let mut args: Vec<OsString> = vec!["kube-proxy".into(), "--kubeconfig".into()];
    args.push(paths.cp_kubeconfig().into());
    args.extend(os(&[
        "--hostname-override",
        &node.name,
        "--node-ip",
        &topo.node_ips(node),
        "--cluster-cidr",
        &topo.cluster_cidrs(),
        "--mode",
        opts.proxy_mode.as_str(),
    ]));
    DaemonSpec {
        name: kube_proxy_name(&node.name),
        netns: Some(node.netns()),
        net_only: false,
        program: paths.harness(),
        args,
        env: Vec::new(),
    }
}

/// Environment every ferrolb process gets.
fn ferrolb_env(paths: &LabPaths, node: &Host) -> Vec<(String, OsString)> {
    vec![
        ("KUBECONFIG".to_owned(), paths.cp_kubeconfig().into()),
        ("NODE_NAME".to_owned(), node.name.clone().into()),
        ("RUST_LOG".to_owned(), "info".into()),
    ]
}

/// ferrolb's controller, in the control-plane node; `args` come from
/// [`LabOptions::controller_args`] (the defaults need none).
pub fn controller(
    paths: &LabPaths,
    topo: &Topology,
    program: &Path,
    args: &[String],
) -> DaemonSpec {
    let m = topo.control_plane();
    controller_on(paths, m, CONTROLLER, program, args)
}

/// A ferrolb controller named `name` in `node`'s namespace: a second replica
/// runs on another node, as a Deployment's would.
pub fn controller_on(
    paths: &LabPaths,
    node: &Host,
    name: &str,
    program: &Path,
    args: &[String],
) -> DaemonSpec {
    let mut env = ferrolb_env(paths, node);
    // Each replica is its own Lease holder, like pods with distinct names.
    env.push((
        "POD_NAME".to_owned(),
        format!("{name}-{}", node.name).into(),
    ));
    DaemonSpec {
        name: name.to_owned(),
        netns: Some(node.netns()),
        net_only: false,
        program: program.to_path_buf(),
        args: args.iter().map(OsString::from).collect(),
        env,
    }
}

/// ferrolb's speaker on one node; `args` come from
/// [`LabOptions::speaker_args`].
pub fn speaker(paths: &LabPaths, node: &Host, program: &Path, args: &[String]) -> DaemonSpec {
    DaemonSpec {
        name: speaker_name(&node.name),
        netns: Some(node.netns()),
        net_only: false,
        program: program.to_path_buf(),
        args: args.iter().map(OsString::from).collect(),
        env: ferrolb_env(paths, node),
    }
}
