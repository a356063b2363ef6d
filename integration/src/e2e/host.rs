//! The client host: a machine on the cluster's layer-2 segment, outside the
//! cluster, from which the scenarios send requests and read ARP/NDP results.
//!
//! Everything the scenarios need from it is built from one primitive,
//! [`ClientHost::run`] (run a command there), and a few programs the host
//! must have: `curl` and `ip` (iproute2 or busybox). The lab's `client`
//! namespace has them; on kind the client container installs them
//! (`integration/kind/run.sh client`).

use std::fmt;
use std::io::Read;
use std::net::IpAddr;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

/// A host attached to the cluster's layer-2 segment.
pub trait ClientHost: Send + Sync + fmt::Debug {
    /// What the host is, for messages.
    fn describe(&self) -> String;

    /// Runs `argv` on the host and returns its output whatever its exit
    /// status; the command is stopped after `limit`.
    fn run(&self, argv: &[String], limit: Duration) -> Result<Output>;

    /// GETs `url` with `timeout`; the body, or an error if curl failed
    /// (no answer, connection refused, timeout).
    fn curl(&self, url: &str, timeout: Duration) -> Result<String> {
        let argv = curl_argv(url, timeout);
        let out = self.run(&argv, timeout + Duration::from_secs(10))?;
        if !out.status.success() {
            bail!(
                "curl {url} from {}: {} {}",
                self.describe(),
                out.status,
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// The MAC address the host has in its neighbour table (ARP/NDP) for
    /// `ip`, if it has a resolved entry.
    fn neighbour_mac(&self, ip: IpAddr) -> Result<Option<String>> {
        generic_neighbour_mac(self, ip)
    }

    /// Forgets the host's neighbour entry for `ip` (absent is fine), so
    /// that the next packet asks again.
    fn flush_neighbour(&self, ip: IpAddr) -> Result<()> {
        ip_neigh(self, "flush", ip).map(drop)
    }

    /// The MAC address `ip` answers ARP/NDP with, as the host sees it: a
    /// TCP connection attempt to port 9 (discard; refused or not, the
    /// kernel resolves the address first) and then the neighbour table.
    fn resolve_mac(&self, ip: IpAddr) -> Result<Option<String>> {
        let url = format!("http://{}:9/", url_host(ip));
        // Only the neighbour resolution matters, not what the port says.
        let _ = self.run(
            &curl_argv(&url, Duration::from_secs(2)),
            Duration::from_secs(12),
        )?;
        self.neighbour_mac(ip)
    }
}

/// The shared implementation of [`ClientHost::neighbour_mac`], for
/// providers that override the method and still want it.
pub fn generic_neighbour_mac<H: ClientHost + ?Sized>(
    host: &H,
    ip: IpAddr,
) -> Result<Option<String>> {
    Ok(parse_neighbour(&ip_neigh(host, "show", ip)?))
}

/// `ip neigh <verb> to <ip>` on `host`: its standard output, or an error
/// quoting its standard error.
fn ip_neigh<H: ClientHost + ?Sized>(host: &H, verb: &str, ip: IpAddr) -> Result<String> {
    let argv = strings(&["ip", "neigh", verb, "to", &ip.to_string()]);
    let out = host.run(&argv, Duration::from_secs(20))?;
    if !out.status.success() {
        bail!(
            "ip neigh {verb} to {ip} on {}: {} {}",
            host.describe(),
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

pub use crate::lab::{curl_argv, url_host};

/// The first `lladdr` of `ip neigh show` output (lower case); entries
/// without one (INCOMPLETE, FAILED) give `None`.
pub fn parse_neighbour(text: &str) -> Option<String> {
    text.lines().find_map(|line| {
        let mut words = line.split_whitespace();
        words.find(|w| *w == "lladdr")?;
        words.next().map(str::to_lowercase)
    })
}

fn strings(args: &[&str]) -> Vec<String> {
    args.iter().map(|s| (*s).to_owned()).collect()
}

/// A client host reached through a command prefix run on this machine:
/// `docker exec ferrolb-client` (kind), `ssh user@host`, `ip netns exec ns`,
/// or nothing at all when this machine is itself on the segment.
#[derive(Debug, Clone)]
pub struct CommandHost {
    prefix: Vec<String>,
}

impl CommandHost {
    /// A host reached through `prefix` (split on whitespace, no quoting:
    /// wrap anything more complex in a script).
    pub fn new(prefix: &str) -> Self {
        Self {
            prefix: prefix.split_whitespace().map(str::to_owned).collect(),
        }
    }

    /// The words of the prefix.
    pub fn prefix(&self) -> &[String] {
        &self.prefix
    }
}

impl ClientHost for CommandHost {
    fn describe(&self) -> String {
        if self.prefix.is_empty() {
            "this machine".to_owned()
        } else {
            format!("`{}`", self.prefix.join(" "))
        }
    }

    fn run(&self, argv: &[String], limit: Duration) -> Result<Output> {
        let full: Vec<&String> = self.prefix.iter().chain(argv).collect();
        let (program, args) = full.split_first().context("empty command")?;
        run_bounded(Command::new(program).args(args), limit)
            .with_context(|| format!("running {:?} on {}", argv, self.describe()))
    }
}

/// Runs `cmd` with piped output, killed after `limit`.
pub fn run_bounded(cmd: &mut Command, limit: Duration) -> Result<Output> {
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .with_context(|| format!("starting {cmd:?}"))?;
    let mut stdout = child.stdout.take().context("stdout")?;
    let mut stderr = child.stderr.take().context("stderr")?;
    let out_reader = std::thread::spawn(move || {
        let mut buf = Vec::new();
        let _ = stdout.read_to_end(&mut buf);
        buf
    });
    let err_reader = std::thread::spawn(move || {
        let mut buf = Vec::new();
        let _ = stderr.read_to_end(&mut buf);
        buf
    });
    let start = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait()? {
            break status;
        }
        if start.elapsed() >= limit {
            let _ = child.kill();
            let _ = child.wait();
            let _ = out_reader.join();
            let _ = err_reader.join();
            bail!("{cmd:?} still running after {limit:?}: killed");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let stdout = out_reader.join().unwrap_or_default();
    let stderr = err_reader.join().unwrap_or_default();
    Ok(Output {
        status,
        stdout,
        stderr,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn neighbour_lines_are_parsed() {
        assert_eq!(
            parse_neighbour("172.18.0.3 dev eth0 lladdr 02:42:AC:12:00:03 REACHABLE\n").as_deref(),
            Some("02:42:ac:12:00:03")
        );
        assert_eq!(parse_neighbour("198.51.100.7 dev eth0  FAILED\n"), None);
        assert_eq!(parse_neighbour(""), None);
        // Busybox prints the same words; a second line (another device) is
        // used when the first has no address.
        assert_eq!(
            parse_neighbour(
                "10.0.0.1 dev a INCOMPLETE\n10.0.0.1 dev b lladdr aa:bb:cc:dd:ee:ff STALE\n"
            )
            .as_deref(),
            Some("aa:bb:cc:dd:ee:ff")
        );
    }

    #[test]
    fn command_host_runs_through_its_prefix() {
        // `env` as a prefix: runs the command unchanged.
        let h = CommandHost::new("  env  ");
        assert_eq!(h.prefix(), ["env"]);
        let out = h
            .run(&strings(&["echo", "hello"]), Duration::from_secs(10))
            .unwrap();
        assert!(out.status.success());
        assert_eq!(String::from_utf8_lossy(&out.stdout), "hello\n");
        let none = CommandHost::new("");
        assert_eq!(none.describe(), "this machine");
        let out = none
            .run(
                &strings(&["sh", "-c", "echo oops >&2; exit 3"]),
                Duration::from_secs(10),
            )
            .unwrap();
        assert_eq!(out.status.code(), Some(3));
        assert_eq!(String::from_utf8_lossy(&out.stderr), "oops\n");
    }

    #[test]
    fn commands_are_bounded() {
        let h = CommandHost::new("");
        let err = h
            .run(&strings(&["sleep", "30"]), Duration::from_millis(200))
            .unwrap_err();
        assert!(format!("{err:#}").contains("killed"), "{err:#}");
    }

    #[test]
    fn curl_failure_is_an_error() {
        // A command that is not curl, run in curl's place: a prefix that
        // makes any command fail shows how a failed request is reported.
        let h = CommandHost::new("false");
        let err = h
            .curl("http://198.51.100.1/", Duration::from_secs(1))
            .unwrap_err();
        assert!(
            format!("{err:#}").contains("curl http://198.51.100.1/"),
            "{err:#}"
        );
    }
}
