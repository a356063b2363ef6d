//! One lab per machine: namespace names are global, so two processes that
//! build labs at once (two test runs, a test and a `lab` command) would tear
//! down each other's namespaces. An exclusive `flock` serialises them; the
//! kernel drops it when the holder exits, also on a crash, so it never goes
//! stale. The holder's pid and command line are written into the file for
//! the error message of whoever waits. A script that holds the lock itself
//! for a whole session (`flock` on the same file, as `demo.sh` does) sets
//! `FERROLB_LAB_LOCK_HELD=1` so that the `lab` commands it runs do not wait
//! for it.

use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, Write};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use nix::errno::Errno;
use nix::fcntl::{Flock, FlockArg};

use super::error::{LabError, Result};

/// The lock file (not under `/run/netns`, and not `flb-` named, so that
/// teardown never touches it).
pub fn lock_path() -> PathBuf {
    PathBuf::from("/run/lock/ferrolb-lab.lock")
}

/// Set by a caller that already holds the lab lock for its children.
pub const ENV_LOCK_HELD: &str = "FERROLB_LAB_LOCK_HELD";

/// Holding this means owning the machine's lab.
#[derive(Debug)]
pub struct LabLock {
    /// `None` when a parent process holds the lock for us.
    _lock: Option<Flock<File>>,
}

/// Takes the machine's lab lock, waiting at most `wait` for another holder.
pub fn acquire(wait: Duration) -> Result<LabLock> {
    if std::env::var_os(ENV_LOCK_HELD).is_some_and(|v| !v.is_empty() && v != "0") {
        return Ok(LabLock { _lock: None });
    }
    acquire_at(lock_path(), wait)
}

/// [`acquire`] on an explicit lock file.
pub fn acquire_at(path: PathBuf, wait: Duration) -> Result<LabLock> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(|source| LabError::Io {
            path: dir.to_path_buf(),
            source,
        })?;
    }
    let io = |source| LabError::Io {
        path: path.clone(),
        source,
    };
    let start = Instant::now();
    let mut logged = false;
    loop {
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .map_err(io)?;
        match Flock::lock(file, FlockArg::LockExclusiveNonblock) {
            Ok(mut lock) => {
                let me = format!(
                    "{} {}\n",
                    std::process::id(),
                    std::env::args().collect::<Vec<_>>().join(" ")
                );
                lock.set_len(0).map_err(io)?;
                lock.rewind().map_err(io)?;
                lock.write_all(me.as_bytes()).map_err(io)?;
                return Ok(LabLock { _lock: Some(lock) });
            }
            Err((mut file, Errno::EWOULDBLOCK)) => {
                let mut holder = String::new();
                let _ = file.read_to_string(&mut holder);
                let holder = holder.trim().to_owned();
                if start.elapsed() >= wait {
                    return Err(LabError::Busy { holder });
                }
                if !logged {
                    tracing::info!(holder = %holder, "waiting for the lab lock");
                    logged = true;
                }
                std::thread::sleep(Duration::from_millis(500));
            }
            Err((_, errno)) => return Err(io(std::io::Error::from(errno))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn second_holder_is_refused_until_the_first_lets_go() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("lab.lock");
        let first = acquire_at(path.clone(), Duration::ZERO).expect("lab lock");
        let err = acquire_at(path.clone(), Duration::from_millis(600)).unwrap_err();
        let text = err.to_string();
        assert!(text.contains(&std::process::id().to_string()), "{text}");
        drop(first);
        acquire_at(path, Duration::ZERO).expect("lock free again");
    }
}
