//! What `lab status` and `lab env` print: a [`Status`] snapshot of what is
//! up (namespaces, switch ports, daemons, faults in force, node readiness)
//! and the shell lines that point a shell in the root namespace at the lab.

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};

use super::cmd::Cmd;
use super::{ActiveFault, Lab, LabOptions, process, topology};

/// Snapshot of a lab for `lab status`.
#[derive(Debug, Clone)]
pub struct Status {
    /// State directory.
    pub state: PathBuf,
    /// Options of the lab.
    pub options: LabOptions,
    /// Namespaces (expected ones and any other `flb-*`), and whether present.
    pub netns: Vec<(String, bool)>,
    /// Hosts and whether their switch port is up (down after `node-fail`).
    pub links: Vec<(String, bool)>,
    /// Daemons from pid files: name, pid, running.
    pub daemons: Vec<(String, i32, bool)>,
    /// Root-namespace kubeconfig.
    pub kubeconfig: PathBuf,
    /// The faults in force, or why they could not be read.
    pub faults: std::result::Result<Vec<ActiveFault>, String>,
    /// Node readiness, when the caller asked the API server.
    pub nodes: BTreeMap<String, bool>,
}

impl Lab {
    /// What is up and running.
    pub fn status(&self) -> Status {
        let existing = topology::lab_netns().unwrap_or_default();
        let mut netns: Vec<(String, bool)> = self
            .topology
            .namespaces()
            .into_iter()
            .map(|n| {
                let up = existing.contains(&n);
                (n, up)
            })
            .collect();
        for n in &existing {
            if !netns.iter().any(|(k, _)| k == n) {
                netns.push((n.clone(), true));
            }
        }
        let daemons = process::pid_files(&self.paths)
            .unwrap_or_default()
            .into_iter()
            .map(|pf| {
                let running = pf.is_running();
                (pf.name, pf.pid, running)
            })
            .collect();
        let ports = Cmd::ip(&["-n", topology::SWITCH_NS, "-o", "link", "show"])
            .stdout()
            .unwrap_or_default();
        let links = self
            .topology
            .hosts
            .iter()
            .map(|h| {
                let port = format!("{}@", h.switch_port());
                let up = ports
                    .lines()
                    .find(|l| {
                        l.split_whitespace()
                            .nth(1)
                            .is_some_and(|n| n.starts_with(&port))
                    })
                    .is_some_and(|l| l.contains(",UP") || l.contains("<UP"));
                (h.name.clone(), up)
            })
            .collect();
        Status {
            state: self.paths.state.clone(),
            options: self.options.clone(),
            netns,
            links,
            daemons,
            kubeconfig: self.kubeconfig_path(),
            faults: self.active_faults().map_err(|e| e.to_string()),
            nodes: BTreeMap::new(),
        }
    }

    /// Shell lines to `eval` for using the lab from the root namespace.
    pub fn env_lines(&self) -> String {
        let q = |p: &Path| shell_quote(&p.to_string_lossy());
        let mut s = String::new();
        s.push_str(&format!(
            "export KUBECONFIG={}\n",
            q(&self.kubeconfig_path())
        ));
        s.push_str(&format!("export FLB_LAB_DIR={}\n", q(&self.paths.state)));
        // kubectl of the lab's Kubernetes version, built with the harness.
        if let Some(dir) = self.paths.kubectl().parent() {
            s.push_str(&format!("export PATH={}:\"$PATH\"\n", q(dir)));
        }
        s.push_str(&format!(
            "export FLB_KUBECONFIG_IN_LAB={}\n",
            q(&self.lab_kubeconfig_path())
        ));
        s.push_str(&format!("export FLB_NS_SW={}\n", topology::SWITCH_NS));
        for h in &self.topology.hosts {
            let var = h.name.to_uppercase().replace('-', "_");
            s.push_str(&format!("export FLB_NS_{var}={}\n", h.netns()));
        }
        let nodes: Vec<&str> = self.topology.nodes().map(|n| n.name.as_str()).collect();
        let ips: Vec<String> = self.topology.nodes().map(|n| n.ipv4.to_string()).collect();
        s.push_str(&format!("export FLB_NODES='{}'\n", nodes.join(" ")));
        s.push_str(&format!("export FLB_NODE_IPS='{}'\n", ips.join(" ")));
        if self.topology.family.has_v6() {
            let ips6: Vec<String> = self.topology.nodes().map(|n| n.ipv6.to_string()).collect();
            s.push_str(&format!("export FLB_NODE_IPS6='{}'\n", ips6.join(" ")));
        }
        s.push_str(&format!(
            "export FLB_CLIENT_IP={}\n",
            self.topology.client().ipv4
        ));
        s
    }
}

impl fmt::Display for Status {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "state:      {}", self.state.display())?;
        writeln!(f, "options:    {}", self.options.summary())?;
        writeln!(f, "kubeconfig: {}", self.kubeconfig.display())?;
        writeln!(f, "netns:")?;
        for (n, up) in &self.netns {
            writeln!(f, "  {n:<20} {}", if *up { "present" } else { "MISSING" })?;
        }
        writeln!(f, "switch ports:")?;
        for (h, up) in &self.links {
            let state = if *up { "up" } else { "DOWN (node-fail?)" };
            writeln!(f, "  v-{h:<18} {state}")?;
        }
        writeln!(f, "daemons:")?;
        for (name, pid, running) in &self.daemons {
            let state = if *running { "running" } else { "DEAD" };
            writeln!(f, "  {name:<24} pid {pid:<8} {state}")?;
        }
        writeln!(f, "faults:")?;
        match &self.faults {
            Ok(faults) if faults.is_empty() => writeln!(f, "  none")?,
            Ok(faults) => {
                for fault in faults {
                    writeln!(f, "  {fault}")?;
                }
            }
            Err(e) => writeln!(f, "  cannot read them: {e}")?,
        }
        if !self.nodes.is_empty() {
            writeln!(f, "nodes:")?;
            for (n, ready) in &self.nodes {
                writeln!(f, "  {n:<20} {}", if *ready { "Ready" } else { "NotReady" })?;
            }
        }
        Ok(())
    }
}

fn shell_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', r"'\''"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::lab::{IpFamily, LabPaths, Topology};

    #[test]
    fn quoting_survives_single_quotes() {
        assert_eq!(shell_quote("/a b/c"), "'/a b/c'");
        assert_eq!(shell_quote("it's"), r"'it'\''s'");
    }

    #[test]
    fn env_lines_name_every_namespace() {
        let lab = Lab {
            paths: LabPaths::new("/r".into(), "/r/.lab".into()),
            options: LabOptions::default(),
            topology: Topology::new(2, IpFamily::Ipv4),
            owned: false,
            _lock: None,
        };
        let env = lab.env_lines();
        assert!(env.contains("export KUBECONFIG='/r/.lab/kubeconfig'\n"));
        assert!(env.contains("export FLB_NS_CLIENT=flb-client\n"));
        assert!(env.contains("export FLB_NS_M_K8S=flb-m-k8s\n"));
        assert!(env.contains("export FLB_NS_W2_K8S=flb-w2-k8s\n"));
        assert!(env.contains("export FLB_NODES='m-k8s w1-k8s w2-k8s'\n"));
    }
}
