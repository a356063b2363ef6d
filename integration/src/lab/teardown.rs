//! Removing a lab completely, also after a crash left it half made.
//!
//! Teardown does not trust the state file: it kills every process of every
//! `flb-*` namespace, every process recorded in a pid file (with its
//! session), and every harness process that names this lab's state
//! directory; then it deletes every `flb-*` namespace and the state
//! directory. Each step runs whatever the previous ones did, and all errors
//! are returned together (as netavark does).

use std::collections::BTreeSet;
use std::fs;
use std::path::Path;
use std::time::Duration;

use nix::sys::signal::Signal;

use super::cmd::Cmd;
use super::error::{LabError, Result, TeardownErrors};
use super::paths::{LabPaths, STATE_ENTRIES, file_name};
use super::process;
use super::topology::{self, PREFIX, TEST_PREFIX};

/// Everything that belongs to the lab at `paths` and is still there.
pub fn leftovers(paths: &LabPaths) -> Vec<String> {
    let mut found = Vec::new();
    match topology::lab_netns() {
        Ok(ns) => found.extend(ns.into_iter().map(|n| format!("netns {n}"))),
        Err(e) => found.push(format!("cannot list netns: {e}")),
    }
    for pid in lab_processes(paths) {
        let argv = process::cmdline(pid).unwrap_or_default().join(" ");
        found.push(format!("process {pid}: {argv}"));
    }
    if let Ok(links) = Cmd::ip(&["-o", "link", "show"]).stdout() {
        for l in links.lines() {
            let name = l.split(':').nth(1).unwrap_or_default().trim();
            let name = name.split('@').next().unwrap_or_default();
            if name.starts_with(PREFIX) || name.starts_with("v-") {
                found.push(format!("link {name} in the root namespace"));
            }
        }
    }
    let state = paths.state.to_string_lossy().into_owned();
    if let Ok(mounts) = fs::read_to_string("/proc/self/mountinfo") {
        for m in mounts.lines() {
            let mount_point = m.split(' ').nth(4).unwrap_or_default();
            let base = file_name(Path::new(mount_point));
            if base.starts_with(PREFIX) || mount_point.starts_with(&state) {
                found.push(format!("mount {mount_point}"));
            }
        }
    }
    if paths.state.exists() {
        found.push(format!("state directory {}", paths.state.display()));
    }
    found
}

/// Pids of every live process that belongs to the lab.
fn lab_processes(paths: &LabPaths) -> BTreeSet<i32> {
    let mut pids = BTreeSet::new();
    let mut sessions = BTreeSet::new();
    for pf in process::pid_files(paths).unwrap_or_default() {
        if pf.is_running() {
            pids.insert(pf.pid);
            sessions.insert(pf.pid);
        }
    }
    for ns in topology::lab_netns().unwrap_or_default() {
        pids.extend(process::netns_pids(&ns).unwrap_or_default());
    }
    let harness = paths.harness();
    let harness_name = file_name(&harness).to_owned();
    let state = paths.state.to_string_lossy().into_owned();
    for p in process::scan() {
        let is_lab_harness = p
            .argv
            .first()
            .is_some_and(|a0| file_name(Path::new(a0)) == harness_name)
            && p.argv.iter().any(|a| a.contains(&state));
        if is_lab_harness || sessions.contains(&p.session) {
            pids.insert(p.pid);
        }
    }
    pids.remove(&(std::process::id() as i32));
    pids
}

/// Removes the lab at `paths` and everything with the `flb-` prefix.
pub fn down(paths: &LabPaths) -> Result<()> {
    let mut errs = TeardownErrors::default();
    if !nix::unistd::geteuid().is_root() {
        return Err(LabError::NotRoot);
    }

    // Two rounds: a daemon killed in the first may have forked just before.
    for _ in 0..2 {
        let pids = lab_processes(paths);
        if pids.is_empty() {
            break;
        }
        tracing::info!(count = pids.len(), "killing lab processes");
        errs.collect(process::kill_all(
            &pids,
            Signal::SIGKILL,
            Duration::from_secs(10),
        ));
    }

    if let Some(namespaces) = errs.collect(topology::lab_netns()) {
        for ns in namespaces {
            let result = Cmd::ip(&["netns", "delete", &ns]).run();
            // Gone meanwhile (a node agent deleting its pod's netns) is fine.
            let gone = || !topology::list_netns().unwrap_or_default().contains(&ns);
            if result.is_ok() || gone() {
                tracing::debug!(netns = %ns, "netns deleted");
            } else {
                errs.collect(result);
            }
        }
    }
    // A crash between `ip netns add`'s mount and its bookkeeping can leave
    // a bare file that `ip netns list` still shows; nothing else is there.
    errs.collect(remove_stale_netns_files());

    errs.collect(remove_state_dir(&paths.state));
    let result = errs.into_result();
    match &result {
        Ok(()) => tracing::info!("lab down"),
        Err(e) => tracing::warn!(error = %e, "lab down with errors"),
    }
    result
}

fn remove_stale_netns_files() -> Result<()> {
    let dir = Path::new("/run/netns");
    let Ok(entries) = fs::read_dir(dir) else {
        return Ok(());
    };
    for e in entries.flatten() {
        let name = e.file_name();
        let name = name.to_string_lossy();
        if name.starts_with(PREFIX) && !name.starts_with(TEST_PREFIX) {
            let path = e.path();
            fs::remove_file(&path).map_err(|source| LabError::Io { path, source })?;
        }
    }
    Ok(())
}

fn remove_state_dir(state: &Path) -> Result<()> {
    let entries = match fs::read_dir(state) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(source) => {
            return Err(LabError::Io {
                path: state.to_path_buf(),
                source,
            });
        }
    };
    let foreign: Vec<String> = entries
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| !STATE_ENTRIES.contains(&n.as_str()) && !n.ends_with(".tmp"))
        .collect();
    if !foreign.is_empty() {
        return Err(LabError::Io {
            path: state.to_path_buf(),
            source: std::io::Error::other(format!(
                "refusing to delete: it holds files the lab did not make: {}",
                foreign.join(", ")
            )),
        });
    }
    fs::remove_dir_all(state).map_err(|source| LabError::Io {
        path: state.to_path_buf(),
        source,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn state_dir_with_foreign_files_is_kept() {
        let dir = tempfile::tempdir().unwrap();
        let state = dir.path().join("state");
        fs::create_dir_all(state.join("logs")).unwrap();
        fs::write(state.join("lab.json"), "{}").unwrap();
        fs::write(state.join("thesis.tex"), "precious").unwrap();
        let err = remove_state_dir(&state).unwrap_err();
        assert!(err.to_string().contains("thesis.tex"), "{err}");
        assert!(state.join("thesis.tex").exists());

        fs::remove_file(state.join("thesis.tex")).unwrap();
        remove_state_dir(&state).unwrap();
        assert!(!state.exists());
        // Absent is fine: teardown runs on labs that are already gone.
        remove_state_dir(&state).unwrap();
    }

    #[test]
    fn teardown_errors_are_all_kept() {
        let mut errs = TeardownErrors::default();
        assert_eq!(errs.collect(Ok::<_, LabError>(1)), Some(1));
        errs.collect::<()>(Err(LabError::NotUp("a".into())));
        errs.collect::<()>(Err(LabError::NotUp("b".into())));
        let text = errs.into_result().unwrap_err().to_string();
        assert!(
            text.contains("2 error(s)") && text.contains("a") && text.contains("b"),
            "{text}"
        );
    }
}
