//! Support for the privileged announcer test and benchmark: two network
//! namespaces joined by a veth pair, and child processes run inside them.
//!
//! Everything here creates its own namespaces, named `flb-t-<tag>-a` and
//! `flb-t-<tag>-b`, gives addresses only from the documentation ranges
//! (198.51.100.0/24, 2001:db8:ffff::/64), touches nothing in the root
//! namespace, and removes the namespaces when [`VethPair`] is dropped, also
//! when a test fails. Child processes are killed (by their own pid) when their
//! handles are dropped. Every wait is bounded.
//!
//! The announcer child speaks a line protocol on stdin/stdout, answering with
//! lines that start with `flb: ` (other output, such as a test harness's, is
//! ignored):
//! * `lead IP...` sets the led addresses (default interface rules) and
//!   answers `flb: ok IP=IFACE,... ...`;
//! * `stats` answers `flb: stats frames=N thread_cpu_us=N` and one
//!   `flb: counters IP requests responses gratuitous` line per address,
//!   then `flb: end`;
//! * `conflicts` answers one `flb: conflict IP IFACE MAC` line per conflict,
//!   then `flb: end`;
//! * `quit` exits.

use std::collections::BTreeMap;
use std::io::{self, BufRead, BufReader, Write};
use std::net::IpAddr;
use std::process::{Child, ChildStdin, Command, Output, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use super::raw::{RawAnnouncer, RawConfig};
use super::socket::PacketSockets;
use super::{AnnounceSpec, Announcer};

pub const IFACE: &str = "lan0";
pub const ADDR_A4: &str = "198.51.100.2";
pub const ADDR_B4: &str = "198.51.100.3";
pub const ADDR_A6: &str = "2001:db8:ffff::2";
pub const ADDR_B6: &str = "2001:db8:ffff::3";
/// The load-balancer addresses the tests announce from namespace A.
pub const LB4: &str = "198.51.100.7";
pub const LB6: &str = "2001:db8:ffff::7";

/// Panics with a clear message unless running as root.
pub fn require_root(what: &str) {
    // Effective UID: the second field of the `Uid:` line.
    let euid = std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("Uid:"))
                .and_then(|l| l.split_whitespace().nth(1).map(str::to_string))
        });
    if euid.as_deref() != Some("0") {
        panic!(
            "{what} needs root (it creates network namespaces and raw sockets); run it with sudo or as root"
        );
    }
}

fn ip(args: &[&str]) -> io::Result<()> {
    let out = Command::new("ip").args(args).output()?;
    if out.status.success() {
        Ok(())
    } else {
        Err(io::Error::other(format!(
            "ip {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        )))
    }
}

/// Two namespaces `a` and `b`, each with `lan0`, the two ends of one veth.
#[derive(Debug)]
pub struct VethPair {
    pub a: String,
    pub b: String,
}

impl VethPair {
    pub fn create(tag: &str) -> io::Result<VethPair> {
        let pair = VethPair {
            a: format!("flb-t-{tag}-a"),
            b: format!("flb-t-{tag}-b"),
        };
        // Leftovers of a crashed earlier run of this same test carry exactly
        // these names; nothing else may use them.
        for ns in [&pair.a, &pair.b] {
            let _ = ip(&["netns", "del", ns]);
        }
        ip(&["netns", "add", &pair.a])?;
        ip(&["netns", "add", &pair.b])?;
        ip(&[
            "-n", &pair.a, "link", "add", IFACE, "type", "veth", "peer", "name", IFACE, "netns",
            &pair.b,
        ])?;
        for (ns, v4, v6) in [(&pair.a, ADDR_A4, ADDR_A6), (&pair.b, ADDR_B4, ADDR_B6)] {
            ip(&["-n", ns, "link", "set", "lo", "up"])?;
            ip(&["-n", ns, "addr", "add", &format!("{v4}/24"), "dev", IFACE])?;
            ip(&[
                "-n",
                ns,
                "addr",
                "add",
                &format!("{v6}/64"),
                "dev",
                IFACE,
                "nodad",
            ])?;
            ip(&["-n", ns, "link", "set", IFACE, "up"])?;
        }
        Ok(pair)
    }

    /// `ip netns exec NS PROGRAM`.
    pub fn cmd(&self, ns: &str, program: &str) -> Command {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", ns, program]);
        c
    }

    pub fn run(&self, ns: &str, program: &str, args: &[&str]) -> io::Result<Output> {
        self.cmd(ns, program).args(args).output()
    }

    /// The MAC of `lan0` in `ns`.
    pub fn mac(&self, ns: &str) -> io::Result<String> {
        let out = self.run(ns, "cat", &[&format!("/sys/class/net/{IFACE}/address")])?;
        Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
    }
}

impl Drop for VethPair {
    fn drop(&mut self) {
        // Deleting a namespace deletes its end of the veth, and so the pair.
        for ns in [&self.a, &self.b] {
            let _ = ip(&["netns", "del", ns]);
        }
    }
}

/// A child process whose stdout lines are collected; killed on drop.
#[derive(Debug)]
pub struct Proc {
    child: Child,
    stdin: Option<ChildStdin>,
    lines: mpsc::Receiver<String>,
    errs: mpsc::Receiver<String>,
}

impl Proc {
    pub fn spawn(mut cmd: Command) -> io::Result<Proc> {
        let mut child = cmd
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()?;
        let (tx, lines) = mpsc::channel();
        let (etx, errs) = mpsc::channel();
        let out = child
            .stdout
            .take()
            .ok_or_else(|| io::Error::other("no stdout"))?;
        let err = child
            .stderr
            .take()
            .ok_or_else(|| io::Error::other("no stderr"))?;
        std::thread::spawn(move || {
            for l in BufReader::new(out).lines().map_while(Result::ok) {
                // A test harness prints "test NAME ... " without a newline
                // before the child's first line; keep the protocol part.
                let l = match l.find("flb: ") {
                    Some(i) => l[i..].to_string(),
                    None => l,
                };
                let _ = tx.send(l);
            }
        });
        std::thread::spawn(move || {
            for l in BufReader::new(err).lines().map_while(Result::ok) {
                let _ = etx.send(l);
            }
        });
        let stdin = child.stdin.take();
        Ok(Proc {
            child,
            stdin,
            lines,
            errs,
        })
    }

    /// The next stdout line satisfying `pred`, waiting at most `timeout`.
    pub fn wait_line(&self, timeout: Duration, pred: impl Fn(&str) -> bool) -> Option<String> {
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.checked_duration_since(Instant::now())?;
            match self.lines.recv_timeout(left) {
                Ok(l) if pred(&l) => return Some(l),
                Ok(_) => {}
                Err(_) => return None,
            }
        }
    }

    /// Every stdout line that arrives within `window`.
    pub fn lines_for(&self, window: Duration) -> Vec<String> {
        let deadline = Instant::now() + window;
        let mut out = Vec::new();
        while let Some(left) = deadline.checked_duration_since(Instant::now()) {
            match self.lines.recv_timeout(left) {
                Ok(l) => out.push(l),
                Err(_) => break,
            }
        }
        out
    }

    /// The next stderr line satisfying `pred`, waiting at most `timeout`.
    pub fn wait_err_line(&self, timeout: Duration, pred: impl Fn(&str) -> bool) -> Option<String> {
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.checked_duration_since(Instant::now())?;
            match self.errs.recv_timeout(left) {
                Ok(l) if pred(&l) => return Some(l),
                Ok(_) => {}
                Err(_) => return None,
            }
        }
    }

    pub fn send(&mut self, line: &str) -> io::Result<()> {
        let stdin = self
            .stdin
            .as_mut()
            .ok_or_else(|| io::Error::other("stdin closed"))?;
        writeln!(stdin, "{line}")?;
        stdin.flush()
    }

    /// Sends a command to an announcer child and returns its `flb: ` lines up
    /// to and including the terminating `ok`/`end` line.
    pub fn request(&mut self, line: &str) -> io::Result<Vec<String>> {
        self.send(line)?;
        let mut out = Vec::new();
        loop {
            let l = self
                .wait_line(Duration::from_secs(10), |l| l.starts_with("flb: "))
                .ok_or_else(|| io::Error::other(format!("no answer to {line:?}")))?;
            let done = l.starts_with("flb: ok") || l.starts_with("flb: end");
            out.push(l);
            if done {
                return Ok(out);
            }
        }
    }

    /// Waits up to `timeout` for the process to exit by itself.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<std::process::ExitStatus> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Ok(Some(s)) = self.child.try_wait() {
                return Some(s);
            }
            if Instant::now() >= deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        drop(self.stdin.take());
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// CPU time (user + system) of the calling process's thread named `name`,
/// from `/proc/self/task/*/stat`, in microseconds.
pub fn thread_cpu_us(name: &str) -> Option<u64> {
    // /proc reports USER_HZ ticks, which the Linux ABI fixes at 100.
    const TICK_US: u64 = 10_000;
    for task in std::fs::read_dir("/proc/self/task").ok()? {
        let dir = task.ok()?.path();
        let comm = std::fs::read_to_string(dir.join("comm")).ok()?;
        if comm.trim() != name {
            continue;
        }
        let stat = std::fs::read_to_string(dir.join("stat")).ok()?;
        // Fields after the parenthesised command name; utime and stime are
        // fields 14 and 15 overall, 12 and 13 after it.
        let rest = &stat[stat.rfind(')')? + 2..];
        let f: Vec<&str> = rest.split_whitespace().collect();
        let ticks = f.get(11)?.parse::<u64>().ok()? + f.get(12)?.parse::<u64>().ok()?;
        return Some(ticks * TICK_US);
    }
    None
}

/// The announcer child: runs a [`RawAnnouncer`] in the current namespace
/// and serves the line protocol on stdin/stdout until `quit` or EOF.
/// `unfiltered` opens sockets without the BPF filter, for the benchmark's
/// comparison only.
pub fn run_announcer_child(unfiltered: bool) -> anyhow::Result<()> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_time()
        .build()?;
    let _guard = rt.enter();
    let sockets = PacketSockets {
        unfiltered,
        ..PacketSockets::default()
    };
    let mut ann = RawAnnouncer::with_parts(
        RawConfig::default(),
        Box::new(super::iface::SysfsInterfaces::default()),
        Box::new(sockets),
    )?;
    let mut out = io::stdout().lock();
    writeln!(out, "flb: ready")?;
    out.flush()?;
    for line in io::stdin().lock().lines() {
        let line = line?;
        let mut words = line.split_whitespace();
        match words.next() {
            Some("lead") => {
                let mut leading = BTreeMap::new();
                for w in words {
                    leading.insert(w.parse::<IpAddr>()?, AnnounceSpec::default());
                }
                let ips: Vec<IpAddr> = leading.keys().copied().collect();
                ann.set_leading(leading);
                let desc: Vec<String> = ips
                    .iter()
                    .map(|ip| format!("{ip}={}", ann.interfaces_of(*ip).join(",")))
                    .collect();
                writeln!(out, "flb: ok {}", desc.join(" "))?;
            }
            Some("stats") => {
                let cpu = thread_cpu_us(&format!("announce-{IFACE}")).unwrap_or(0);
                writeln!(
                    out,
                    "flb: stats frames={} thread_cpu_us={cpu}",
                    ann.frames_received()
                )?;
                for (ip, c) in ann.counters() {
                    writeln!(
                        out,
                        "flb: counters {ip} {} {} {}",
                        c.requests_received, c.responses_sent, c.gratuitous_sent
                    )?;
                }
                writeln!(out, "flb: end")?;
            }
            Some("conflicts") => {
                for c in ann.take_conflicts() {
                    writeln!(
                        out,
                        "flb: conflict {} {} {}",
                        c.ip, c.interface, c.other_mac
                    )?;
                }
                writeln!(out, "flb: end")?;
            }
            Some("quit") => break,
            None => {}
            _ => writeln!(out, "flb: error unknown command {line:?}")?,
        }
        out.flush()?;
    }
    Ok(())
}

/// Spawns the announcer child inside `ns`: `exe` re-run with `args` (a test
/// binary's filter arguments, or a benchmark's `--child`), with
/// `FLB_ANNOUNCER_CHILD=1` set. Returns once it reported ready.
pub fn spawn_announcer(pair: &VethPair, ns: &str, exe: &str, args: &[&str]) -> io::Result<Proc> {
    let mut cmd = pair.cmd(ns, exe);
    cmd.args(args).env("FLB_ANNOUNCER_CHILD", "1");
    let p = Proc::spawn(cmd)?;
    p.wait_line(Duration::from_secs(20), |l| l == "flb: ready")
        .ok_or_else(|| io::Error::other("announcer child did not report ready"))?;
    Ok(p)
}

/// Starts tcpdump on `lan0` in `ns` with line-buffered, link-level output,
/// and returns once it is capturing.
pub fn tcpdump(pair: &VethPair, ns: &str, filter: &str) -> io::Result<Proc> {
    let mut cmd = pair.cmd(ns, "tcpdump");
    cmd.args(["-l", "-n", "-e", "-i", IFACE]).arg(filter);
    let p = Proc::spawn(cmd)?;
    p.wait_err_line(Duration::from_secs(10), |l| l.contains("listening on"))
        .ok_or_else(|| io::Error::other("tcpdump did not start"))?;
    Ok(p)
}
