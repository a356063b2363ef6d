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
//!
//! This module starts, stops and checks daemons by name; [`pid_file`]
//! records them and [`procfs`] reads `/proc` and sends the signals.

mod pid_file;
mod procfs;

use std::ffi::OsString;
use std::fs::{self, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use nix::sys::signal::Signal;

use super::cmd::Cmd;
use super::error::{LabError, Result};
use super::paths::LabPaths;
use pid_file::write_pid_file;
pub use pid_file::{PidFile, pid_files, read_pid_file, remove_pid_file, running_pid_file};
pub use procfs::{
    Ending, ProcInfo, alive, cmdline, ending, kill_all, netns_pids, scan, session_of,
};
use procfs::{forget_ending, start_time};

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
    forget_ending(pid as i32);
    // Our unreaped child: its /proc entry stays (a zombie at worst) until we
    // wait for it, so the start time can always be read here.
    let start_time = start_time(pid as i32).ok_or_else(|| LabError::Io {
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

/// Starts `spec` unless its pid file names a running process; `stale`
/// files (readiness markers of a previous run) are removed first. Whether it
/// was started.
pub fn start_if_needed(paths: &LabPaths, spec: &DaemonSpec, stale: &[PathBuf]) -> Result<bool> {
    if let Some(pf) = running_pid_file(paths, &spec.name)? {
        tracing::debug!(daemon = %spec.name, pid = pf.pid, "daemon already running");
        return Ok(false);
    }
    for f in stale {
        match fs::remove_file(f) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                return Err(LabError::Io {
                    path: f.clone(),
                    source: e,
                });
            }
            _ => {}
        }
    }
    spawn(paths, spec)?;
    Ok(true)
}

/// Stops one daemon: SIGTERM, then SIGKILL after `grace`, then removes its
/// pid file. Members of its session go with it.
pub fn stop(paths: &LabPaths, name: &str, grace: Duration) -> Result<()> {
    if let Some(pf) = running_pid_file(paths, name)? {
        let session = session_of(pf.pid);
        if kill_all(&session, Signal::SIGTERM, grace).is_err() {
            kill_all(&session, Signal::SIGKILL, Duration::from_secs(5))?;
        }
        tracing::info!(daemon = %name, pid = pf.pid, "daemon stopped");
    }
    remove_pid_file(paths, name)
}

/// Kills daemon `name` and its session at once (SIGKILL), then removes its
/// pid file.
pub fn kill(paths: &LabPaths, name: &str) -> Result<()> {
    if let Some(pf) = running_pid_file(paths, name)? {
        kill_all(
            &session_of(pf.pid),
            Signal::SIGKILL,
            Duration::from_secs(10),
        )?;
    }
    remove_pid_file(paths, name)
}

/// Fails with [`LabError::DaemonDied`] for the first of `names` that does
/// not run, saying how it ended.
pub fn check_running(paths: &LabPaths, names: &[&str]) -> Result<()> {
    for name in names {
        let pid_file = read_pid_file(paths, name)?;
        if !pid_file.as_ref().is_some_and(PidFile::is_running) {
            return Err(died(paths, name, pid_file.map(|pf| pf.pid)));
        }
    }
    Ok(())
}

/// The error for daemon `name` found dead, saying how it ended.
fn died(paths: &LabPaths, name: &str, pid: Option<i32>) -> LabError {
    let log = paths.log(name);
    let how = match pid {
        Some(pid) => {
            let ending = ending(pid);
            // A kill leaves nothing in the daemon's own log; the kernel's
            // says whether it was the OOM killer.
            match ending
                .is_sigkill()
                .then(|| kernel_kill_lines(pid))
                .flatten()
            {
                Some(kernel) => format!("{ending} (kernel log: {kernel})"),
                None => ending.to_string(),
            }
        }
        None => "has no pid file".to_owned(),
    };
    LabError::DaemonDied {
        name: name.to_owned(),
        how,
        tail: log_tail(&log, 20),
        log,
    }
}

/// The kernel's lines about killing process `pid` (the OOM killer), if any;
/// best effort, for error messages.
fn kernel_kill_lines(pid: i32) -> Option<String> {
    let out = Cmd::new("dmesg")
        .limit(Duration::from_secs(5))
        .stdout()
        .ok()?;
    let needle = format!("Killed process {pid} ");
    let lines: Vec<&str> = out.lines().filter(|l| l.contains(&needle)).collect();
    (!lines.is_empty()).then(|| lines.join(" | "))
}

/// The last `n` lines of a log, for error messages.
pub fn log_tail(path: &Path, n: usize) -> String {
    let text = fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

#[cfg(test)]
mod tests {
    use std::time::Instant;

    use super::*;

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
}
