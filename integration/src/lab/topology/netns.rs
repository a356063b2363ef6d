//! Building the topology with `ip`: the namespaces, the switch's bridge, one
//! veth per host, addresses, sysctls and routes. Every step is idempotent,
//! and nothing is made in the root namespace.

use super::super::cmd::Cmd;
use super::super::error::Result;
use super::{
    BRIDGE, HOST_IF, Host, LB_POOLS_V4, LB_POOLS_V6, PREFIX, SERVICE_CIDR_V4, SERVICE_CIDR_V6,
    SWITCH_NS, TEST_PREFIX, Topology,
};

impl Topology {
    /// Builds whatever part of the topology is missing.
    pub fn ensure(&self) -> Result<()> {
        let existing = list_netns()?;
        for ns in self.namespaces() {
            if !existing.contains(&ns) {
                Cmd::ip(&["netns", "add", &ns]).run()?;
                tracing::debug!(netns = %ns, "netns created");
            }
            Cmd::ip(&["-n", &ns, "link", "set", "lo", "up"]).run()?;
        }
        if !Cmd::ip(&["-n", SWITCH_NS, "link", "show", BRIDGE]).succeeds() {
            // Snooping off: without a multicast querier it can drop the
            // NDP solicitations that IPv6 neighbour discovery relies on.
            Cmd::ip(&[
                "-n",
                SWITCH_NS,
                "link",
                "add",
                BRIDGE,
                "type",
                "bridge",
                "mcast_snooping",
                "0",
            ])
            .run()?;
        }
        Cmd::ip(&["-n", SWITCH_NS, "link", "set", BRIDGE, "up"]).run()?;
        for h in &self.hosts {
            self.ensure_host(h)?;
        }
        Ok(())
    }

    fn ensure_host(&self, h: &Host) -> Result<()> {
        let ns = h.netns();
        let port = h.switch_port();
        if !Cmd::ip(&["-n", &ns, "link", "show", HOST_IF]).succeeds() {
            Cmd::ip(&[
                "link", "add", HOST_IF, "netns", &ns, "type", "veth", "peer", "name", &port,
                "netns", SWITCH_NS,
            ])
            .run()?;
            tracing::debug!(host = %h.name, "veth created");
        }
        Cmd::ip(&[
            "-n", SWITCH_NS, "link", "set", &port, "master", BRIDGE, "up",
        ])
        .run()?;

        let mut sysctls = vec![
            // The lab's interfaces are fresh: strict reverse-path
            // filtering inherited from the root namespace would drop
            // the asymmetric pod traffic of a routed cluster.
            "net.ipv4.conf.all.rp_filter=0".to_owned(),
            "net.ipv4.conf.default.rp_filter=0".to_owned(),
            format!("net.ipv4.conf.{HOST_IF}.rp_filter=0"),
        ];
        if h.is_node() {
            sysctls.push("net.ipv4.ip_forward=1".to_owned());
        }
        if self.family.has_v6() {
            sysctls.push("net.ipv6.conf.all.disable_ipv6=0".to_owned());
            sysctls.push(format!("net.ipv6.conf.{HOST_IF}.accept_dad=0"));
            if h.is_node() {
                sysctls.push("net.ipv6.conf.all.forwarding=1".to_owned());
            }
        }
        Cmd::in_netns(&ns, &["sysctl", "-q", "-w"])
            .args(&sysctls)
            .run()?;

        Cmd::ip(&["-n", &ns, "link", "set", HOST_IF, "up"]).run()?;
        Cmd::ip(&[
            "-n",
            &ns,
            "addr",
            "replace",
            &format!("{}/24", h.ipv4),
            "dev",
            HOST_IF,
        ])
        .run()?;
        if self.family.has_v6() {
            Cmd::ip(&[
                "-n",
                &ns,
                "addr",
                "replace",
                &format!("{}/64", h.ipv6),
                "dev",
                HOST_IF,
                "nodad",
            ])
            .run()?;
        }

        if h.is_node() {
            for other in self.nodes().filter(|o| o.name != h.name) {
                route(&ns, &other.pod_cidr_v4(), Some(&other.ipv4.to_string()))?;
                if self.family.has_v6() {
                    route(&ns, &other.pod_cidr_v6(), Some(&other.ipv6.to_string()))?;
                }
            }
            // Locally sent packets need a route before kube-proxy's DNAT can
            // rewrite a ClusterIP; with no default route in the lab, an
            // on-link route stands in for it.
            route(&ns, SERVICE_CIDR_V4, None)?;
            if self.family.has_v6() {
                route(&ns, SERVICE_CIDR_V6, None)?;
            }
        } else {
            for pool in LB_POOLS_V4 {
                route(&ns, pool, None)?;
            }
            if self.family.has_v6() {
                for pool in LB_POOLS_V6 {
                    route(&ns, pool, None)?;
                }
            }
        }
        Ok(())
    }
}

fn route(ns: &str, dst: &str, via: Option<&str>) -> Result<()> {
    let mut args = vec!["-n", ns, "route", "replace", dst];
    if let Some(gw) = via {
        args.extend(["via", gw]);
    }
    args.extend(["dev", HOST_IF]);
    Cmd::ip(&args).run().map(drop)
}

/// Names of all network namespaces (`ip netns list`).
pub fn list_netns() -> Result<Vec<String>> {
    let out = Cmd::ip(&["netns", "list"]).stdout()?;
    Ok(out
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .map(str::to_owned)
        .collect())
}

/// Names of all namespaces carrying the lab prefix.
pub fn lab_netns() -> Result<Vec<String>> {
    Ok(list_netns()?
        .into_iter()
        .filter(|n| n.starts_with(PREFIX) && !n.starts_with(TEST_PREFIX))
        .collect())
}
