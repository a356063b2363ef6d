//! Errors of the lab library. Teardown gathers many of them into one
//! [`TeardownErrors`] so that a single failure never stops the cleanup.

use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

/// Anything the lab can fail at.
#[derive(Debug, thiserror::Error)]
pub enum LabError {
    /// Network namespaces, veth links and iptables need CAP_NET_ADMIN.
    #[error(
        "the lab needs root (it creates network namespaces, veth links and iptables rules); run it as root, e.g. `sudo make e2e`"
    )]
    NotRoot,

    /// A command ran and exited unsuccessfully.
    #[error("`{command}` failed ({status}): {stderr}")]
    Command {
        /// The command line, for the reader.
        command: String,
        /// Exit status as text (`exit status: 1`, `signal: 9`, `timed out`).
        status: String,
        /// Trimmed standard error of the command.
        stderr: String,
    },

    /// A command could not be started at all (missing binary, ...).
    #[error("could not run `{command}`: {source}")]
    Spawn {
        /// The command line.
        command: String,
        /// Underlying error.
        #[source]
        source: std::io::Error,
    },

    /// File-system operation on a lab file failed.
    #[error("{path}: {source}")]
    Io {
        /// File or directory concerned.
        path: PathBuf,
        /// Underlying error.
        #[source]
        source: std::io::Error,
    },

    /// The Go harness (the Kubernetes components) is not built.
    #[error(
        "k8s-harness not found at {0} (build it with integration/harness/build.sh, or point FERROLB_HARNESS at it)"
    )]
    HarnessMissing(PathBuf),

    /// A ferrolb binary is not built.
    #[error(
        "{0} is not built (cargo build -p ferrolb-controller -p ferrolb-speaker, or set FERROLB_CONTROLLER / FERROLB_SPEAKER)"
    )]
    FerrolbMissing(&'static str),

    /// Another process owns the machine's lab.
    #[error(
        "the lab is in use by another process ({holder}); wait for it to finish (namespace names are machine-wide, so there is one lab per machine)"
    )]
    Busy {
        /// Pid and command line of the holder.
        holder: String,
    },

    /// The operation would break the lab.
    #[error("refused: {0}")]
    Refused(String),

    /// A bounded wait ran out.
    #[error("timed out after {after:?} waiting for {what}")]
    Timeout {
        /// What was awaited.
        what: String,
        /// How long we waited.
        after: Duration,
    },

    /// A daemon died while the lab waited for it.
    #[error("{name} {how} during start-up; last lines of {log}:\n{tail}")]
    DaemonDied {
        /// Daemon name (also the log and pid file name).
        name: String,
        /// How it ended (exit status or signal), as far as known.
        how: String,
        /// Its log file.
        log: PathBuf,
        /// Last lines of that log.
        tail: String,
    },

    /// A host name that is not part of this lab.
    #[error("unknown host {name:?}; this lab has: {known}")]
    UnknownHost {
        /// The name asked for.
        name: String,
        /// The hosts that exist.
        known: String,
    },

    /// `up` was asked for a different lab than the one that runs.
    #[error("a lab with other options is up ({running}); run `lab down` first")]
    OptionsMismatch {
        /// Options of the running lab.
        running: String,
    },

    /// An operation that needs a running lab found none.
    #[error("the lab is not up (missing {0}); run `lab up` first")]
    NotUp(PathBuf),

    /// The lab's state file is unreadable.
    #[error("lab state {path}: {source}")]
    State {
        /// The state file.
        path: PathBuf,
        /// Parse error.
        #[source]
        source: serde_json::Error,
    },

    /// The kubeconfig written by the harness is unusable.
    #[error("kubeconfig {path}: {source}")]
    Kubeconfig {
        /// The kubeconfig file.
        path: PathBuf,
        /// Underlying error.
        #[source]
        source: kube::config::KubeconfigError,
    },

    /// A manifest the lab applies is not what it should be.
    #[error("{path}: {reason}")]
    Manifest {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },

    /// A call to the API server failed.
    #[error("kubernetes API: {0}")]
    Kube(#[from] kube::Error),

    /// Teardown finished but some steps failed.
    #[error("{0}")]
    Teardown(TeardownErrors),
}

/// Every error that happened during one teardown, in order.
#[derive(Debug, Default)]
pub struct TeardownErrors(pub Vec<LabError>);

impl TeardownErrors {
    /// Records the error of a step and lets the teardown go on.
    pub fn collect<T>(&mut self, result: Result<T, LabError>) -> Option<T> {
        match result {
            Ok(v) => Some(v),
            Err(e) => {
                tracing::warn!(error = %e, "teardown step failed");
                self.0.push(e);
                None
            }
        }
    }

    /// `Ok` when no step failed.
    pub fn into_result(self) -> Result<(), LabError> {
        if self.0.is_empty() {
            Ok(())
        } else {
            Err(LabError::Teardown(self))
        }
    }
}

impl fmt::Display for TeardownErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "teardown finished with {} error(s)", self.0.len())?;
        for e in &self.0 {
            write!(f, "\n  - {e}")?;
        }
        Ok(())
    }
}

/// Shorthand for lab results.
pub type Result<T, E = LabError> = std::result::Result<T, E>;
