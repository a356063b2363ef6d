//! Daemons of the lab: started detached, found again from pid files and
//! `/proc`, killed without leaving anything behind.
//!
//! A daemon runs as `setsid [ip netns exec NS | nsenter --net=...] PROGRAM
//! ARGS`. The wrappers exec in place, so the pid we spawn is the daemon's
//! pid and also its session id; everything it forks keeps that session id, which is how
//! teardown finds the daemon's children even when they sit in no named
//! namespace. Output goes (appended) to `STATE/logs/NAME.log`, the pid to
//! `STATE/pids/NAME.pid` together with the program path and the process's
//! start time. A process is the daemon when its pid *and* start time match:
//! the start time does not change when the wrappers exec the daemon, and a
//! reused pid has another one. (The command line is no identity: it changes
//! at every exec of the wrapper chain, and a read that straddles an exec
//! returns a splice of two command lines.)

use std::collections::{BTreeMap, BTreeSet};
use std::ffi::OsString;
use std::fs::{self, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use nix::sys::signal::{Signal, kill};
use nix::sys::wait::{WaitPidFlag, WaitStatus, waitpid};
use nix::unistd::Pid;

use super::cmd::Cmd;
use super::error::{LabError, Result};
use super::paths::LabPaths;

/// How to start one daemon. Built in one place, `components`.
#[derive(Debug, Clone)]
pub struct DaemonSpec {
    /// Name of its log and pid file (`node-agent-w1-k8s`).
    pub name: String,
    /// Namespace to run in; `None` for the root namespace.
    pub netns: Option<String>,
    /// Enter only the network namespace (`nsenter --net`) instead of
    /// `ip netns exec`, which also gives the daemon a private mount
    /// namespace. Needed by daemons that create named namespaces themselves
    /// (`ip netns add`): made in a private mount namespace those would be
    /// invisible to the rest of the machine, and so to teardown.
    pub net_only: bool,
    /// Executable.
    pub program: PathBuf,
    /// Arguments.
    pub args: Vec<OsString>,
    /// Extra environment.
    pub env: Vec<(String, OsString)>,
}

impl DaemonSpec {
    /// The command line, for logs and the status display.
    pub fn display(&self) -> String {
        let mut s = String::new();
        for (k, v) in &self.env {
            s.push_str(&format!("{k}={} ", v.to_string_lossy()));
        }
        match &self.netns {
            Some(ns) if self.net_only => s.push_str(&format!("nsenter --net=/run/netns/{ns} -- ")),
            Some(ns) => s.push_str(&format!("ip netns exec {ns} ")),
            None => {}
        }
        s.push_str(&self.program.to_string_lossy());
        for a in &self.args {
            s.push(' ');
            s.push_str(&a.to_string_lossy());
        }
        s
    }
}

/// Starts `spec` detached and records its pid.
pub fn spawn(paths: &LabPaths, spec: &DaemonSpec) -> Result<u32> {
    for dir in [paths.logs(), paths.pids()] {
        fs::create_dir_all(&dir).map_err(|source| LabError::Io { path: dir, source })?;
    }
    let log_path = paths.log(&spec.name);
    let io_err = |source| LabError::Io {
        path: log_path.clone(),
        source,
    };
    let mut log = OpenOptions::new()
        .create(true)
        .append(true)
        .open(&log_path)
        .map_err(io_err)?;
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs();
    writeln!(log, "==== lab: start at unix {now}: {}", spec.display()).map_err(io_err)?;
    let stderr = log.try_clone().map_err(io_err)?;

    let mut c = Command::new("setsid");
    match &spec.netns {
        Some(ns) if spec.net_only => {
            c.arg("nsenter")
                .arg(format!("--net=/run/netns/{ns}"))
                .arg("--");
        }
        Some(ns) => {
            c.args(["ip", "netns", "exec", ns]);
        }
        None => {}
    }
    c.arg(&spec.program)
        .args(&spec.args)
        .stdin(Stdio::null())
        .stdout(Stdio::from(log))
        .stderr(Stdio::from(stderr));
    for (k, v) in &spec.env {
        c.env(k, v);
    }
    let child = c.spawn().map_err(|source| LabError::Spawn {
        command: spec.display(),
        source,
    })?;
    let pid = child.id();
    // The child is deliberately not waited for: it outlives this process.
    // Teardown reaps it if this process is still its parent.
    drop(child);
    // A reused pid must not report how an earlier process ended.
    ENDINGS
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .remove(&(pid as i32));
    // Our unreaped child: its /proc entry stays (a zombie at worst) until we
    // wait for it, so the start time can always be read here.
    let start_time = stat(pid as i32)
        .map(|s| s.start_time)
        .ok_or_else(|| LabError::Io {
            path: PathBuf::from(format!("/proc/{pid}/stat")),
            source: std::io::Error::other("the just-spawned daemon has no /proc entry"),
        })?;
    let pid_file = PidFile {
        name: spec.name.clone(),
        pid: pid as i32,
        program: spec.program.clone(),
        start_time,
    };
    write_pid_file(paths, &pid_file)?;
    tracing::info!(daemon = %spec.name, pid, "daemon started");
    Ok(pid)
}

fn write_pid_file(paths: &LabPaths, pf: &PidFile) -> Result<()> {
    let path = paths.pid_file(&pf.name);
    let tmp = path.with_extension("pid.tmp");
    let text = format!("{}\n{}\n{}\n", pf.pid, pf.program.display(), pf.start_time);
    fs::write(&tmp, text).map_err(|source| LabError::Io {
        path: tmp.clone(),
        source,
    })?;
    fs::rename(&tmp, &path).map_err(|source| LabError::Io { path, source })
}

/// A pid file's content.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PidFile {
    /// Daemon name.
    pub name: String,
    /// Recorded pid.
    pub pid: i32,
    /// Recorded program (what the wrappers end up running).
    pub program: PathBuf,
    /// Start time of the process, in clock ticks after boot (`/proc/PID/stat`).
    pub start_time: u64,
}

impl PidFile {
    /// Whether the recorded process still runs: its pid exists, is not a
    /// zombie, and started when the recorded one did.
    pub fn is_running(&self) -> bool {
        alive(self.pid) && stat(self.pid).is_some_and(|s| s.start_time == self.start_time)
    }
}

/// Reads the pid file of daemon `name`, if any.
pub fn read_pid_file(paths: &LabPaths, name: &str) -> Result<Option<PidFile>> {
    let path = paths.pid_file(name);
    match fs::read_to_string(&path) {
        Ok(text) => Ok(parse_pid_file(name, &text)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(source) => Err(LabError::Io { path, source }),
    }
}

fn parse_pid_file(name: &str, text: &str) -> Option<PidFile> {
    let mut lines = text.lines();
    let pid = lines.next()?.trim().parse().ok()?;
    let program = PathBuf::from(lines.next()?.trim());
    // A pid file of an older lab has no start time: nothing can show that
    // its pid is still the daemon, so it reads as not running.
    let start_time = lines.next()?.trim().parse().ok()?;
    Some(PidFile {
        name: name.to_owned(),
        pid,
        program,
        start_time,
    })
}

/// All pid files of the lab.
pub fn pid_files(paths: &LabPaths) -> Result<Vec<PidFile>> {
    let dir = paths.pids();
    let entries = match fs::read_dir(&dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(source) => return Err(LabError::Io { path: dir, source }),
    };
    let mut out = Vec::new();
    for entry in entries.flatten() {
        let file = entry.file_name();
        let Some(name) = file.to_str().and_then(|n| n.strip_suffix(".pid")) else {
            continue;
        };
        if let Some(pf) = read_pid_file(paths, name)? {
            out.push(pf);
        }
    }
    out.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(out)
}

/// Removes the pid file of daemon `name` (absent is fine).
pub fn remove_pid_file(paths: &LabPaths, name: &str) -> Result<()> {
    let path = paths.pid_file(name);
    match fs::remove_file(&path) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(LabError::Io { path, source: e }),
        _ => Ok(()),
    }
}

/// How reaped children of this process ended, by pid: a daemon that dies
/// during start-up is reported with its exit status or signal, which its
/// log cannot show when it was killed.
static ENDINGS: Mutex<BTreeMap<i32, WaitStatus>> = Mutex::new(BTreeMap::new());

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

/// Stops one daemon: SIGTERM, then SIGKILL after `grace`, then removes its
/// pid file. Members of its session go with it.
pub fn stop(paths: &LabPaths, name: &str, grace: Duration) -> Result<()> {
    if let Some(pf) = read_pid_file(paths, name)?
        && pf.is_running()
    {
        let session: BTreeSet<i32> = std::iter::once(pf.pid)
            .chain(
                scan()
                    .into_iter()
                    .filter(|p| p.session == pf.pid)
                    .map(|p| p.pid),
            )
            .collect();
        if kill_all(&session, Signal::SIGTERM, grace).is_err() {
            kill_all(&session, Signal::SIGKILL, Duration::from_secs(5))?;
        }
        tracing::info!(daemon = %name, pid = pf.pid, "daemon stopped");
    }
    remove_pid_file(paths, name)
}

/// The last `n` lines of a log, for error messages.
pub fn log_tail(path: &Path, n: usize) -> String {
    let text = fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pid_file_round_trip() {
        let pf = parse_pid_file("forward", "123\n/x/k8s-harness\n4567\n").unwrap();
        assert_eq!(pf.pid, 123);
        assert_eq!(pf.program, PathBuf::from("/x/k8s-harness"));
        assert_eq!(pf.start_time, 4567);
        assert!(parse_pid_file("x", "garbage").is_none());
        assert!(parse_pid_file("x", "12\n").is_none());
        // An older lab's pid file (no start time) proves nothing.
        assert!(parse_pid_file("x", "12\n/x/k8s-harness\n").is_none());
    }

    #[test]
    fn stat_fields_are_found_after_the_command_name() {
        let line =
            "4242 (a) b (c)) S 1 4242 4242 0 -1 4194560 100 0 0 0 1 2 0 0 20 0 1 0 987654 1000 100";
        let st = parse_stat(line).unwrap();
        assert_eq!(st.state, 'S');
        assert_eq!(st.session, 4242);
        assert_eq!(st.start_time, 987654);
    }

    /// A daemon is still the daemon after it execs something with another
    /// command line, as every daemon of the lab does on its way through
    /// `setsid` and `ip netns exec`. Judged by its command line (before the
    /// start time was the identity), this one read as dead.
    #[test]
    fn identity_survives_an_exec() {
        let state = tempfile::tempdir().unwrap();
        let paths = LabPaths::new(state.path().to_path_buf(), state.path().to_path_buf());
        let spec = DaemonSpec {
            name: "execs".into(),
            netns: None,
            net_only: false,
            program: PathBuf::from("/bin/sh"),
            args: vec!["-c".into(), "exec sleep 30".into()],
            env: Vec::new(),
        };
        let pid = spawn(&paths, &spec).unwrap() as i32;
        let start = Instant::now();
        while cmdline(pid).unwrap_or_default().first().map(String::as_str) != Some("sleep") {
            assert!(
                start.elapsed() < Duration::from_secs(10),
                "sh did not exec sleep"
            );
            std::thread::sleep(Duration::from_millis(5));
        }
        let pf = read_pid_file(&paths, "execs").unwrap().unwrap();
        assert!(pf.is_running(), "a daemon that exec'd read as dead");
        stop(&paths, "execs", Duration::from_secs(5)).unwrap();
        assert!(!pf.is_running(), "a stopped daemon read as running");
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

    #[test]
    fn pid_file_checks_the_start_time() {
        let me = std::process::id() as i32;
        let mine = PidFile {
            name: "t".into(),
            pid: me,
            program: std::env::current_exe().unwrap(),
            start_time: stat(me).unwrap().start_time,
        };
        assert!(mine.is_running());
        // The same pid with another start time: a reused pid.
        let reused = PidFile {
            start_time: mine.start_time + 1,
            ..mine
        };
        assert!(!reused.is_running());
    }
}
