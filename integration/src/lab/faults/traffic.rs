//! Traffic faults on the lab: installing a [`TrafficFault`] in its hosts'
//! namespaces (with a relay per host for a delay, see
//! [`delay`](super::delay)), cutting a node off the API server, removing
//! faults, and listing the active ones. Every rule lives in a lab host's namespace (`nft`
//! runs through `ip netns exec`), never in the root namespace, so deleting
//! the namespaces (`lab down`) removes whatever faults are left.

use std::collections::BTreeMap;
use std::net::{Ipv4Addr, Ipv6Addr};

use super::rules::{self, Direction, Effect, TrafficFault, Transport};
use crate::lab::cmd::Cmd;
use crate::lab::error::{LabError, Result};
use crate::lab::topology::{self, Host};
use crate::lab::{ActiveFault, Lab};

/// The API server's port on the control-plane node.
pub const API_PORT: u16 = 6443;

/// The name of the fault [`Lab::cut_from_api`] makes for `node`.
pub fn api_cut_name(node: &str) -> String {
    format!("api-cut-{node}")
}

impl Lab {
    /// Installs `fault` in the namespace of each of its hosts; a fault of
    /// that name must not be active. All or nothing: when a host refuses
    /// it, the hosts that took it lose it again.
    pub fn add_traffic_fault(&self, fault: &TrafficFault) -> Result<()> {
        fault.check().map_err(LabError::Refused)?;
        let hosts = self.hosts_of(&fault.hosts)?;
        let peers = self.hosts_of(&fault.peers)?;
        let names = |hs: &[&Host]| hs.iter().map(|h| h.name.clone()).collect();
        // Names as the comments show them: `all` spelled out.
        let fault = &TrafficFault {
            hosts: names(&hosts),
            peers: names(&peers),
            ..fault.clone()
        };
        if let Some(f) = self
            .active_faults()?
            .into_iter()
            .find(|f| f.name() == fault.name)
        {
            return Err(LabError::Refused(format!(
                "a fault named {} is active: {f}",
                fault.name
            )));
        }
        let mut done: Vec<&Host> = Vec::new();
        for h in &hosts {
            let others: Vec<&Host> = peers.iter().copied().filter(|p| p.name != h.name).collect();
            if others.is_empty() {
                continue;
            }
            let v4: Vec<Ipv4Addr> = others.iter().map(|p| p.ipv4).collect();
            let v6: Vec<Ipv6Addr> = if self.topology.family.has_v6() {
                others.iter().map(|p| p.ipv6).collect()
            } else {
                Vec::new()
            };
            let script = rules::ruleset(fault, &h.name, &v4, &v6);
            let installed = match fault.effect {
                Effect::Delay(d) => self.start_relay(h, d).and_then(|()| {
                    nft(h, &[script.as_str()]).inspect_err(|_| {
                        let _ = self.stop_relay(h);
                    })
                }),
                _ => nft(h, &[script.as_str()]),
            };
            if let Err(e) = installed {
                for d in done {
                    let _ = self.remove_from(d, &fault.name);
                }
                return Err(e);
            }
            done.push(h);
        }
        if done.is_empty() {
            return Err(LabError::Refused(format!(
                "fault {}: its hosts have no peers but themselves",
                fault.name
            )));
        }
        tracing::info!(fault = %fault.name, hosts = done.len(), "traffic fault added");
        Ok(())
    }

    /// Cuts node `node` off the API server: its traffic to and from the
    /// API server's address and port is dropped inside its namespace (the
    /// node agent, kube-proxy and speaker there lose the API), while the
    /// segment and the membership stay as they are. Returns the fault's
    /// name, for [`Lab::remove_fault`].
    pub fn cut_from_api(&self, node: &str) -> Result<String> {
        let h = self.topology.node(node)?;
        let cp = self.topology.control_plane();
        if h.name == cp.name {
            return Err(LabError::Refused(format!(
                "{} runs the API server; cut a worker",
                h.name
            )));
        }
        let name = api_cut_name(&h.name);
        self.add_traffic_fault(&TrafficFault {
            name: name.clone(),
            hosts: vec![h.name.clone()],
            peers: vec![cp.name.clone()],
            transport: Transport::Tcp,
            port: API_PORT,
            effect: Effect::Drop,
            direction: Direction::Both,
        })?;
        Ok(name)
    }

    /// Removes traffic fault `name` from every host that has it; whether
    /// any had it.
    pub fn remove_fault(&self, name: &str) -> Result<bool> {
        rules::check_name(name).map_err(LabError::Refused)?;
        let mut found = false;
        for h in self.present_hosts()? {
            if active_on(h)?.iter().any(|n| n == name) {
                self.remove_from(h, name)?;
                found = true;
            }
        }
        if found {
            tracing::info!(fault = %name, "traffic fault removed");
        }
        Ok(found)
    }

    /// Removes every traffic fault; how many there were.
    pub fn remove_traffic_faults(&self) -> Result<usize> {
        let mut names: Vec<String> = Vec::new();
        for h in self.present_hosts()? {
            for name in active_on(h)? {
                self.remove_from(h, &name)?;
                if !names.contains(&name) {
                    names.push(name);
                }
            }
        }
        Ok(names.len())
    }

    /// The faults in force: a stopped control plane, and every traffic
    /// fault with the hosts that have it and its packet counts.
    pub fn active_faults(&self) -> Result<Vec<ActiveFault>> {
        let mut out = Vec::new();
        if let Some(since_unix) = self.control_plane_stopped_since()? {
            out.push(ActiveFault::ControlPlaneStopped { since_unix });
        }
        let mut traffic: BTreeMap<String, ActiveFault> = BTreeMap::new();
        for h in self.present_hosts()? {
            for name in active_on(h)? {
                let text = nft(h, &["list", "table", "inet", &rules::table_name(&name)])?;
                let reading = rules::read_table(&text);
                let entry = traffic
                    .entry(name.clone())
                    .or_insert_with(|| ActiveFault::Traffic {
                        name,
                        on: Vec::new(),
                        matched: 0,
                        dropped: 0,
                    });
                if let ActiveFault::Traffic {
                    on,
                    matched,
                    dropped,
                    ..
                } = entry
                {
                    on.push((h.name.clone(), reading.comment));
                    *matched += reading.matched;
                    *dropped += reading.dropped;
                }
            }
        }
        out.extend(traffic.into_values());
        Ok(out)
    }

    /// Removes fault `name` from `host`: its table, and the relay of a
    /// delay.
    fn remove_from(&self, host: &Host, name: &str) -> Result<()> {
        let table = rules::table_name(name);
        let delay = rules::is_delay(&nft(host, &["list", "table", "inet", &table])?);
        nft(host, &["delete", "table", "inet", &table])?;
        if delay {
            self.stop_relay(host)?;
        }
        Ok(())
    }

    /// The hosts named `names` (`all`: every node).
    fn hosts_of(&self, names: &[String]) -> Result<Vec<&Host>> {
        let mut hosts: Vec<&Host> = Vec::new();
        for n in names {
            if n == "all" {
                hosts.extend(self.topology.nodes());
            } else {
                hosts.push(self.topology.host(n)?);
            }
        }
        hosts.sort_by_key(|h| (h.role != topology::Role::ControlPlane, h.index, &h.name));
        hosts.dedup_by_key(|h| h.name.clone());
        Ok(hosts)
    }

    /// The lab's hosts whose namespace exists.
    fn present_hosts(&self) -> Result<Vec<&Host>> {
        let existing = topology::list_netns()?;
        Ok(self
            .topology
            .hosts
            .iter()
            .filter(|h| existing.contains(&h.netns()))
            .collect())
    }
}

/// `nft ARGS` inside `host`'s namespace; its standard output.
fn nft(host: &Host, args: &[&str]) -> Result<String> {
    Cmd::in_netns(&host.netns(), &["nft"]).args(args).stdout()
}

/// The traffic faults installed in `host`'s namespace.
fn active_on(host: &Host) -> Result<Vec<String>> {
    Ok(rules::fault_names(&nft(host, &["list", "tables"])?))
}
