//! Looking into the lab: kubectl from the root namespace, and from its
//! hosts: running a command in a host's namespace, HTTP requests with curl,
//! reachability, neighbour (ARP/NDP) entries, interface MACs and who
//! announces an address as a host sees it.

use std::ffi::OsStr;
use std::net::IpAddr;
use std::process::Output;
use std::time::Duration;

use super::Lab;
use super::cmd::Cmd;
use super::error::{LabError, Result};
use super::topology::{self, Host};

/// The curl command line for requests inside the lab (and the e2e scenarios):
/// silent but with errors, no proxy, IPv6 literals allowed, bounded.
pub fn curl_argv(url: &str, timeout: Duration) -> Vec<String> {
    let secs = format!("{:.3}", timeout.as_secs_f64());
    [
        "curl",
        "-sS",
        "-g",
        "--noproxy",
        "*",
        "--max-time",
        &secs,
        url,
    ]
    .iter()
    .map(|s| (*s).to_owned())
    .collect()
}

/// `ip` as it is written in a URL's host part.
pub fn url_host(ip: IpAddr) -> String {
    match ip {
        IpAddr::V4(a) => a.to_string(),
        IpAddr::V6(a) => format!("[{a}]"),
    }
}

impl Lab {
    /// Runs kubectl (the harness's, else the one on `PATH`) with the lab's
    /// root-namespace kubeconfig, bounded to 120 s; its standard output, or
    /// an error quoting its standard error when it fails.
    pub fn kubectl(&self, args: &[&str]) -> Result<String> {
        let program = Some(self.paths.kubectl())
            .filter(|p| p.is_file())
            .unwrap_or_else(|| "kubectl".into());
        Cmd::new(program)
            .args(args)
            .env("KUBECONFIG", self.kubeconfig_path())
            .limit(Duration::from_secs(120))
            .stdout()
    }

    /// Runs `argv` in host `host`'s namespace, with `KUBECONFIG` pointing at
    /// the in-lab kubeconfig; returns the output whatever the exit status.
    /// Bounded to 120 s.
    pub fn exec<S: AsRef<OsStr>>(&self, host: &str, argv: &[S]) -> Result<Output> {
        self.exec_with_limit(host, argv, Duration::from_secs(120))
    }

    /// [`Lab::exec`] with an explicit bound.
    pub fn exec_with_limit<S: AsRef<OsStr>>(
        &self,
        host: &str,
        argv: &[S],
        limit: Duration,
    ) -> Result<Output> {
        let h = self.topology.host(host)?;
        Cmd::in_netns(&h.netns(), argv)
            .env("KUBECONFIG", self.lab_kubeconfig_path())
            .limit(limit)
            .output()
    }

    /// Fetches `url` with curl from host `from`; the body on success.
    pub fn curl(&self, from: &str, url: &str, timeout: Duration) -> Result<String> {
        let h = self.topology.host(from)?;
        let c = Cmd::in_netns(&h.netns(), &curl_argv(url, timeout))
            .limit(timeout + Duration::from_secs(5));
        Ok(String::from_utf8_lossy(&c.run()?.stdout).into_owned())
    }

    /// Whether host `from` reaches `ip` on the segment: a TCP connection to a
    /// closed port must be refused (the peer's kernel answered) rather than
    /// time out. Works without `ping` and without any server.
    pub fn reachable(&self, from: &str, ip: IpAddr) -> Result<bool> {
        let h = self.topology.host(from)?;
        let url = format!("http://{}:9/", url_host(ip));
        let c = Cmd::in_netns(&h.netns(), &curl_argv(&url, Duration::from_secs(2)))
            .limit(Duration::from_secs(8));
        let out = c.output()?;
        // curl exit 7 is "could not connect": refused (the peer's kernel sent
        // a RST) or unreachable; only a resolved neighbour entry tells the
        // first apart.
        Ok(out.status.code() == Some(7) && self.neighbour_mac(from, ip)?.is_some())
    }

    /// The MAC address host `host` has cached for `ip` (its ARP/NDP entry), if
    /// it has a usable one.
    pub fn neighbour_mac(&self, host: &str, ip: IpAddr) -> Result<Option<String>> {
        let out = neigh(self.topology.host(host)?, "show", ip).stdout()?;
        Ok(parse_lladdr(&out))
    }

    /// Forgets host `host`'s ARP/NDP entry for `ip`, so that the next packet
    /// asks again (absent is fine).
    pub fn flush_neighbour(&self, host: &str, ip: IpAddr) -> Result<()> {
        neigh(self.topology.host(host)?, "flush", ip)
            .run()
            .map(drop)
    }

    /// The node whose `eth0` MAC host `from` has cached for `ip`: who
    /// answered ARP/NDP for a LoadBalancer address, as the client sees it.
    pub fn announcer(&self, from: &str, ip: IpAddr) -> Result<Option<String>> {
        match self.neighbour_mac(from, ip)? {
            Some(mac) => self.node_with_mac(&mac),
            None => Ok(None),
        }
    }

    /// [`Lab::announcer`] after asking afresh: host `from` forgets its entry
    /// for `ip`, then sends a request to it (whatever its answer) so that
    /// it resolves the address again.
    pub fn resolve_announcer(&self, from: &str, ip: IpAddr) -> Result<Option<String>> {
        self.flush_neighbour(from, ip)?;
        let url = format!("http://{}/", url_host(ip));
        let _ = self.curl(from, &url, Duration::from_millis(1500));
        self.announcer(from, ip)
    }

    /// The node whose `eth0` has MAC address `mac` (any case), if any.
    pub fn node_with_mac(&self, mac: &str) -> Result<Option<String>> {
        for node in self.topology.nodes() {
            if self.interface_mac(&node.name)?.eq_ignore_ascii_case(mac) {
                return Ok(Some(node.name.clone()));
            }
        }
        Ok(None)
    }

    /// The MAC address of host `host`'s `eth0`.
    pub fn interface_mac(&self, host: &str) -> Result<String> {
        let h = self.topology.host(host)?;
        let c = Cmd::ip(&["-n", &h.netns(), "-o", "link", "show", topology::HOST_IF]);
        let out = c.stdout()?;
        let mut words = out.split_whitespace();
        words
            .find(|w| *w == "link/ether")
            .and_then(|_| words.next())
            .map(str::to_owned)
            .ok_or_else(|| LabError::Command {
                command: c.display(),
                status: "no link/ether in output".to_owned(),
                stderr: out.clone(),
            })
    }
}

/// `ip neigh <verb> to <ip> dev eth0` in `host`'s namespace.
fn neigh(host: &Host, verb: &str, ip: IpAddr) -> Cmd {
    Cmd::ip(&[
        "-n",
        &host.netns(),
        "neigh",
        verb,
        "to",
        &ip.to_string(),
        "dev",
        topology::HOST_IF,
    ])
}

fn parse_lladdr(neigh: &str) -> Option<String> {
    let mut words = neigh.split_whitespace();
    words.find(|w| *w == "lladdr")?;
    words.next().map(str::to_owned)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_bracket_ipv6() {
        assert_eq!(url_host("198.51.100.1".parse().unwrap()), "198.51.100.1");
        assert_eq!(url_host("2001:db8::1".parse().unwrap()), "[2001:db8::1]");
    }

    #[test]
    fn lladdr_is_parsed() {
        let line = "192.0.2.10 lladdr 2a:11:22:33:44:55 REACHABLE\n";
        assert_eq!(parse_lladdr(line).as_deref(), Some("2a:11:22:33:44:55"));
        assert_eq!(parse_lladdr("192.0.2.10 FAILED\n"), None);
        assert_eq!(parse_lladdr(""), None);
    }
}
