//! The lab side of the tests: a bare lab and its client, kubectl, the CRDs,
//! ferrolb's daemons (started, scraped, their logs and memory), and who
//! announces an address as the lab's client sees it.

use std::collections::BTreeSet;
use std::net::IpAddr;
use std::time::Duration;

use kube::Client;

use super::{CLIENT, CONTROLLER_PORT, SPEAKER_PORT};
use crate::lab::{Lab, LabOptions, components, ferrolb, topology};

/// A lab without ferrolb running (the tests start it once the CRDs are
/// in place) and `workers` worker nodes; the other options are the
/// defaults.
pub fn bare(workers: u8) -> LabOptions {
    LabOptions {
        bare: true,
        workers,
        ..LabOptions::default()
    }
}

/// Brings the lab `options` describe up (waiting for the machine's lab
/// lock) and connects to its API server.
pub async fn up(options: LabOptions) -> (Lab, Client) {
    let lab = Lab::up(options)
        .await
        .unwrap_or_else(|e| panic!("lab up: {e}"));
    let client = lab.kube_client().await.expect("client");
    (lab, client)
}

/// Runs kubectl against the lab ([`Lab::kubectl`]); its output. Panics
/// when it fails.
pub fn kubectl(lab: &Lab, args: &[&str]) -> String {
    lab.kubectl(args).unwrap_or_else(|e| panic!("{e}"))
}

/// ferrolb's namespace and the `metallb.io` CRDs (Established), as the
/// chart installs them; for bare labs (a lab with ferrolb has them).
pub async fn install_crds(lab: &Lab, client: &Client) {
    ferrolb::install_crds(client, &lab.paths().crds(), Duration::from_secs(60))
        .await
        .unwrap_or_else(|e| panic!("installing the CRDs: {e}"));
}

/// Starts (or restarts) the controller, then every node's speaker.
pub fn start_ferrolb(lab: &Lab) {
    lab.restart_ferrolb()
        .unwrap_or_else(|e| panic!("starting ferrolb: {e}"));
}

/// The names of the lab's nodes (control plane first).
pub fn node_names(lab: &Lab) -> Vec<String> {
    lab.topology().nodes().map(|n| n.name.clone()).collect()
}

/// `curl -s --max-time 3 <args>` in host `node`'s namespace; its output,
/// or `None` when it could not run.
pub fn try_curl_in(lab: &Lab, node: &str, args: &[&str]) -> Option<String> {
    let mut argv = vec!["curl", "-s", "--max-time", "3"];
    argv.extend_from_slice(args);
    let out = lab.exec(node, &argv).ok()?;
    Some(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// [`try_curl_in`], panicking when curl could not run.
pub fn curl_in(lab: &Lab, node: &str, args: &[&str]) -> String {
    try_curl_in(lab, node, args).expect("exec curl")
}

/// GET `http://127.0.0.1:<port><path>` in host `node`: (HTTP status, body);
/// status 0 when nothing answered.
pub fn http_get(lab: &Lab, node: &str, port: u16, path: &str) -> (u16, String) {
    let text = curl_in(
        lab,
        node,
        &[
            "-w",
            "\n%{http_code}",
            &format!("http://127.0.0.1:{port}{path}"),
        ],
    );
    let (body, code) = text.rsplit_once('\n').unwrap_or(("", &text));
    (code.trim().parse().unwrap_or(0), body.to_string())
}

/// The HTTP status of `/readyz` on `port` in host `node` (0: no answer),
/// as [`ferrolb::readyz`] reads it.
pub fn readyz(lab: &Lab, node: &str, port: u16) -> u16 {
    let host = lab
        .topology()
        .host(node)
        .unwrap_or_else(|e| panic!("/readyz in {node}: {e}"));
    ferrolb::readyz(&host.netns(), port)
}

/// `/metrics` on `port` in host `node` (empty on an HTTP error), or `None`
/// when curl could not run.
pub fn try_metrics_on(lab: &Lab, node: &str, port: u16) -> Option<String> {
    try_curl_in(
        lab,
        node,
        &["-f", &format!("http://127.0.0.1:{port}/metrics")],
    )
}

/// The speaker's `/metrics` in node `node`.
pub fn metrics(lab: &Lab, node: &str) -> String {
    try_metrics_on(lab, node, SPEAKER_PORT).expect("exec curl")
}

/// The controller's `/metrics` (in the control-plane node).
pub fn controller_metrics(lab: &Lab) -> String {
    try_metrics_on(lab, topology::CONTROL_PLANE, CONTROLLER_PORT).expect("exec curl")
}

/// The value of sample `name{labels}` in a `/metrics` text (`labels` is the
/// exact label text, `""` for none).
pub fn metric(text: &str, name: &str, labels: &str) -> Option<f64> {
    let prefix = if labels.is_empty() {
        format!("{name} ")
    } else {
        format!("{name}{{{labels}}} ")
    };
    text.lines()
        .find_map(|l| l.strip_prefix(prefix.as_str()))
        .and_then(|v| v.trim().parse().ok())
}

/// The log of daemon `daemon` (empty when it has none).
pub fn daemon_log(lab: &Lab, daemon: &str) -> String {
    std::fs::read_to_string(lab.daemon_log(daemon)).unwrap_or_default()
}

/// The log of the speaker on `node`.
pub fn speaker_log(lab: &Lab, node: &str) -> String {
    daemon_log(lab, &components::speaker_name(node))
}

/// Prints the log lines of the speakers that `keep` accepts (at most `max`
/// per node), for whoever reads a test's output.
pub fn print_speaker_log_lines(lab: &Lab, max: usize, keep: impl Fn(&str) -> bool) {
    for n in node_names(lab) {
        for line in speaker_log(lab, &n).lines().filter(|l| keep(l)).take(max) {
            eprintln!("log {n}: {line}");
        }
    }
}

/// Prints the speakers' warnings and errors (at most 20 lines per node).
pub fn print_speaker_warnings(lab: &Lab) {
    print_speaker_log_lines(lab, 20, |l| l.contains("WARN") || l.contains("ERROR"));
}

/// The pid of the running speaker on `node`, if it runs.
pub fn speaker_pid(lab: &Lab, node: &str) -> Option<i32> {
    lab.daemon_pid(&components::speaker_name(node))
        .unwrap_or_else(|e| panic!("speaker pid on {node}: {e}"))
}

/// (VmRSS, VmHWM) of process `pid`, in KiB.
pub fn rss_kib(pid: i32) -> Option<(u64, u64)> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let field = |name: &str| -> Option<u64> {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))?
            .split_whitespace()
            .next()?
            .parse()
            .ok()
    };
    Some((field("VmRSS:")?, field("VmHWM:")?))
}

/// GET `url` from the lab's client (2 s at most): the body, trimmed.
pub fn ask(lab: &Lab, url: &str) -> Result<String, String> {
    let body = lab
        .curl(CLIENT, url, Duration::from_secs(2))
        .map_err(|e| e.to_string())?;
    Ok(body.trim().to_string())
}

/// [`ask`], which must be answered by one of `pods` (the echo pods answer
/// with their name): that pod.
pub fn ask_pod(lab: &Lab, url: &str, pods: &BTreeSet<String>) -> Result<String, String> {
    let body = ask(lab, url)?;
    if pods.contains(&body) {
        Ok(body)
    } else {
        Err(format!("{url} answered {body:?}, not a pod name"))
    }
}

/// Whether every speaker of `nodes` counts `want` live members
/// (`ferrolb_speaker_members_live`); the first that does not, otherwise.
pub fn members_live(lab: &Lab, nodes: &[String], want: usize) -> Result<(), String> {
    for n in nodes {
        let live = metric(&metrics(lab, n), "ferrolb_speaker_members_live", "");
        if live != Some(want as f64) {
            return Err(format!("{n}: {live:?} live"));
        }
    }
    Ok(())
}

/// Restarts the speaker on `node` with `args` instead of the lab's speaker
/// arguments ([`Lab::restart_speaker_with`]).
pub fn respawn_speaker(lab: &Lab, node: &str, args: &[String]) {
    lab.restart_speaker_with(node, args)
        .unwrap_or_else(|e| panic!("start the speaker on {node} with {args:?}: {e}"));
}

/// The node whose MAC the lab's client has cached for `ip`; when `fresh`,
/// after asking afresh ([`Lab::resolve_announcer`]).
pub fn announcer(lab: &Lab, ip: IpAddr, fresh: bool) -> Option<String> {
    let who = if fresh {
        lab.resolve_announcer(CLIENT, ip)
    } else {
        lab.announcer(CLIENT, ip)
    };
    who.unwrap_or_else(|e| panic!("who announces {ip}: {e}"))
}
