//! Pid files: `STATE/pids/NAME.pid` holds a daemon's pid, program and start
//! time, written atomically; a daemon runs when a live process has that pid
//! and that start time.

use std::fs;
use std::path::PathBuf;

use super::super::error::{LabError, Result};
use super::super::paths::LabPaths;
use super::procfs::{alive, start_time};

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
        alive(self.pid) && start_time(self.pid) == Some(self.start_time)
    }
}

pub(super) fn write_pid_file(paths: &LabPaths, pf: &PidFile) -> Result<()> {
    let path = paths.pid_file(&pf.name);
    let tmp = path.with_extension("pid.tmp");
    let text = format!("{}\n{}\n{}\n", pf.pid, pf.program.display(), pf.start_time);
    fs::write(&tmp, text).map_err(|source| LabError::Io {
        path: tmp.clone(),
        source,
    })?;
    fs::rename(&tmp, &path).map_err(|source| LabError::Io { path, source })
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

/// The pid file of daemon `name` when it names a running process.
pub fn running_pid_file(paths: &LabPaths, name: &str) -> Result<Option<PidFile>> {
    Ok(read_pid_file(paths, name)?.filter(PidFile::is_running))
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
    fn pid_file_checks_the_start_time() {
        let me = std::process::id() as i32;
        let mine = PidFile {
            name: "t".into(),
            pid: me,
            program: std::env::current_exe().unwrap(),
            start_time: start_time(me).unwrap(),
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
