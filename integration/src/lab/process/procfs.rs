//! What `/proc` says about processes (state, session, start time, command
//! line), how a reaped child ended, and signalling a set of processes until
//! they are gone.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill};
use nix::sys::wait::{WaitPidFlag, WaitStatus, waitpid};
use nix::unistd::Pid;

use super::super::cmd::Cmd;
use super::super::error::{LabError, Result};

/// How reaped children of this process ended, by pid: a daemon that dies
/// during start-up is reported with its exit status or signal, which its
/// log cannot show when it was killed.
static ENDINGS: Mutex<BTreeMap<i32, WaitStatus>> = Mutex::new(BTreeMap::new());

/// Forgets how an earlier process with `pid` ended: a reused pid must not
/// report it.
pub(super) fn forget_ending(pid: i32) {
    ENDINGS
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .remove(&pid);
}

/// Whether `pid` exists and is not a zombie. Zombies that are our own
/// children are reaped on the way, and how they ended is kept for
/// [`ending`].
pub fn alive(pid: i32) -> bool {
    match proc_state(pid) {
        None => false,
        Some('Z' | 'X') => {
            if let Ok(status) = waitpid(Pid::from_raw(pid), Some(WaitPidFlag::WNOHANG))
                && status != WaitStatus::StillAlive
            {
                ENDINGS
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .insert(pid, status);
            }
            false
        }
        Some(_) => true,
    }
}

/// How a daemon ended, as far as this process knows.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Ending {
    /// It has not ended.
    Running,
    /// It was our child and was reaped with this status.
    Known(WaitStatus),
    /// Not our child (or not reapable yet): its status is not ours to know.
    Unknown,
}

impl Ending {
    /// Killed by SIGKILL (by a person, teardown or the OOM killer).
    pub fn is_sigkill(&self) -> bool {
        matches!(
            self,
            Ending::Known(WaitStatus::Signaled(_, Signal::SIGKILL, _))
        )
    }
}

impl std::fmt::Display for Ending {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Ending::Running => f.write_str("is still running"),
            Ending::Known(WaitStatus::Exited(_, code)) => write!(f, "exited with status {code}"),
            Ending::Known(WaitStatus::Signaled(_, signal, _)) => write!(f, "killed by {signal}"),
            Ending::Known(other) => write!(f, "ended ({other:?})"),
            Ending::Unknown => {
                f.write_str("ended; exit status unknown (not a child of this process)")
            }
        }
    }
}

/// How process `pid` ended: it must have been our child, reaped by [`alive`]
/// (here or earlier).
pub fn ending(pid: i32) -> Ending {
    let known = || {
        ENDINGS
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(&pid)
            .copied()
    };
    // A killed multi-threaded process (the Go daemons) shows as a zombie while its
    // other threads are still exiting, and cannot be reaped until they are: give it
    // a moment.
    let deadline = Instant::now() + Duration::from_secs(2);
    loop {
        if alive(pid) {
            return Ending::Running;
        }
        if let Some(status) = known() {
            return Ending::Known(status);
        }
        if proc_state(pid).is_none() || Instant::now() >= deadline {
            return Ending::Unknown;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// What the lab reads of `/proc/PID/stat`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Stat {
    /// State letter (`R`, `S`, `Z`, ...).
    state: char,
    /// Session id.
    session: i32,
    /// Start time in clock ticks after boot.
    start_time: u64,
}

/// `/proc/PID/stat`, read with one `read` so that the fields come from one
/// snapshot of the process.
fn stat(pid: i32) -> Option<Stat> {
    use std::io::Read as _;
    let mut buf = [0u8; 4096];
    let n = fs::File::open(format!("/proc/{pid}/stat"))
        .and_then(|mut f| f.read(&mut buf))
        .ok()?;
    parse_stat(std::str::from_utf8(&buf[..n]).ok()?)
}

fn parse_stat(text: &str) -> Option<Stat> {
    // The command name may contain spaces and parentheses: fields start
    // after the last ')', with field 3 (state) first.
    let rest = &text[text.rfind(')')? + 1..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    Some(Stat {
        state: f.first()?.chars().next()?,
        session: f.get(3)?.parse().ok()?,
        start_time: f.get(19)?.parse().ok()?,
    })
}

fn proc_state(pid: i32) -> Option<char> {
    stat(pid).map(|s| s.state)
}

/// Start time of process `pid`, in clock ticks after boot.
pub(super) fn start_time(pid: i32) -> Option<u64> {
    stat(pid).map(|s| s.start_time)
}

/// Arguments of process `pid`.
pub fn cmdline(pid: i32) -> Option<Vec<String>> {
    let raw = fs::read(format!("/proc/{pid}/cmdline")).ok()?;
    Some(
        raw.split(|b| *b == 0)
            .filter(|a| !a.is_empty())
            .map(|a| String::from_utf8_lossy(a).into_owned())
            .collect(),
    )
}

/// A live process seen in `/proc`.
#[derive(Debug, Clone)]
pub struct ProcInfo {
    /// Pid.
    pub pid: i32,
    /// Session id.
    pub session: i32,
    /// Arguments.
    pub argv: Vec<String>,
}

/// Every live (non-zombie) process.
pub fn scan() -> Vec<ProcInfo> {
    let Ok(entries) = fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
        .filter_map(|pid| {
            let st = stat(pid)?;
            if matches!(st.state, 'Z' | 'X') {
                return None;
            }
            Some(ProcInfo {
                pid,
                session: st.session,
                argv: cmdline(pid).unwrap_or_default(),
            })
        })
        .collect()
}

/// `leader` and every live process of its session: a daemon and all it
/// forked.
pub fn session_of(leader: i32) -> BTreeSet<i32> {
    std::iter::once(leader)
        .chain(
            scan()
                .into_iter()
                .filter(|p| p.session == leader)
                .map(|p| p.pid),
        )
        .collect()
}

/// Pids of the processes in network namespace `netns`.
pub fn netns_pids(netns: &str) -> Result<Vec<i32>> {
    let out = Cmd::ip(&["netns", "pids", netns]).stdout()?;
    Ok(out
        .lines()
        .filter_map(|l| l.trim().parse().ok())
        .filter(|p| alive(*p))
        .collect())
}

/// Sends `signal` to every pid, then waits until all are gone. Returns the
/// survivors after `limit` as an error.
pub fn kill_all(pids: &BTreeSet<i32>, signal: Signal, limit: Duration) -> Result<()> {
    let me = std::process::id() as i32;
    let targets: BTreeSet<i32> = pids.iter().copied().filter(|p| *p != me).collect();
    for pid in &targets {
        // ESRCH only means it is already gone.
        let _ = kill(Pid::from_raw(*pid), signal);
    }
    let start = Instant::now();
    loop {
        let left: Vec<i32> = targets.iter().copied().filter(|p| alive(*p)).collect();
        if left.is_empty() {
            return Ok(());
        }
        if start.elapsed() >= limit {
            return Err(LabError::Timeout {
                what: format!("processes {left:?} to exit after {signal}"),
                after: limit,
            });
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[cfg(test)]
mod tests {
    use std::process::Command;

    use super::*;

    #[test]
    fn stat_fields_are_found_after_the_command_name() {
        let line =
            "4242 (a) b (c)) S 1 4242 4242 0 -1 4194560 100 0 0 0 1 2 0 0 20 0 1 0 987654 1000 100";
        let st = parse_stat(line).unwrap();
        assert_eq!(st.state, 'S');
        assert_eq!(st.session, 4242);
        assert_eq!(st.start_time, 987654);
    }

    #[test]
    fn endings_name_the_status_or_signal() {
        let pid = Pid::from_raw(7);
        assert_eq!(
            Ending::Known(WaitStatus::Exited(pid, 0)).to_string(),
            "exited with status 0"
        );
        let killed = Ending::Known(WaitStatus::Signaled(pid, Signal::SIGKILL, false));
        assert_eq!(killed.to_string(), "killed by SIGKILL");
        assert!(killed.is_sigkill());
        assert!(!Ending::Known(WaitStatus::Signaled(pid, Signal::SIGTERM, false)).is_sigkill());
        assert!(Ending::Unknown.to_string().contains("unknown"));
    }

    #[test]
    fn a_reaped_child_is_reported_with_its_signal() {
        let child = Command::new("sleep").arg("30").spawn().expect("sleep");
        let pid = child.id() as i32;
        drop(child);
        kill(Pid::from_raw(pid), Signal::SIGTERM).expect("kill");
        let start = Instant::now();
        while alive(pid) {
            assert!(
                start.elapsed() < Duration::from_secs(10),
                "sleep survived SIGTERM"
            );
            std::thread::sleep(Duration::from_millis(10));
        }
        assert_eq!(ending(pid).to_string(), "killed by SIGTERM");
    }

    #[test]
    fn own_process_is_alive_and_scanned() {
        let me = std::process::id() as i32;
        assert!(alive(me));
        assert!(scan().iter().any(|p| p.pid == me));
        assert!(!alive(i32::MAX));
    }
}
