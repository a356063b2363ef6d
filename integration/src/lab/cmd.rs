//! Running short-lived commands (`ip`, `curl`, ...) with a hard time limit.
//!
//! The limit is enforced by coreutils' `timeout`, which also kills the
//! command's children; this keeps every lab operation bounded without
//! threads reading pipes.

use std::ffi::{OsStr, OsString};
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use super::error::{LabError, Result};

/// Default limit for configuration commands, which normally take milliseconds.
pub(crate) const SHORT: Duration = Duration::from_secs(20);

/// A command line plus environment, run under `timeout`.
#[derive(Debug, Clone)]
pub(crate) struct Cmd {
    argv: Vec<OsString>,
    env: Vec<(OsString, OsString)>,
    limit: Duration,
}

impl Cmd {
    pub(crate) fn new(program: impl AsRef<OsStr>) -> Self {
        Self {
            argv: vec![program.as_ref().to_owned()],
            env: Vec::new(),
            limit: SHORT,
        }
    }

    /// `ip` with the given arguments.
    pub(crate) fn ip<S: AsRef<OsStr>>(args: &[S]) -> Self {
        Self::new("ip").args(args)
    }

    /// Runs `argv` inside network namespace `netns`.
    pub(crate) fn in_netns<S: AsRef<OsStr>>(netns: &str, argv: &[S]) -> Self {
        Self::new("ip").args(["netns", "exec", netns]).args(argv)
    }

    pub(crate) fn args<S: AsRef<OsStr>>(mut self, args: impl IntoIterator<Item = S>) -> Self {
        self.argv
            .extend(args.into_iter().map(|a| a.as_ref().to_owned()));
        self
    }

    pub(crate) fn env(mut self, k: impl AsRef<OsStr>, v: impl AsRef<OsStr>) -> Self {
        self.env
            .push((k.as_ref().to_owned(), v.as_ref().to_owned()));
        self
    }

    pub(crate) fn limit(mut self, limit: Duration) -> Self {
        self.limit = limit;
        self
    }

    /// The command line as a human reads it.
    pub(crate) fn display(&self) -> String {
        self.argv
            .iter()
            .map(|a| a.to_string_lossy())
            .collect::<Vec<_>>()
            .join(" ")
    }

    /// Runs to completion (or the limit) and returns the output whatever
    /// the exit status.
    pub(crate) fn output(&self) -> Result<Output> {
        // Whole seconds keep `timeout` portable; round up so that tiny
        // limits still allow the command to run.
        let secs = self.limit.as_millis().div_ceil(1000).max(1);
        let mut c = Command::new("timeout");
        c.args(["--kill-after=2", &format!("{secs}")])
            .args(&self.argv)
            .stdin(Stdio::null());
        for (k, v) in &self.env {
            c.env(k, v);
        }
        c.output().map_err(|source| LabError::Spawn {
            command: self.display(),
            source,
        })
    }

    /// Runs and fails unless the exit status is zero.
    pub(crate) fn run(&self) -> Result<Output> {
        let out = self.output()?;
        if out.status.success() {
            Ok(out)
        } else {
            Err(self.failure(&out))
        }
    }

    /// Runs and returns standard output as text.
    pub(crate) fn stdout(&self) -> Result<String> {
        let out = self.run()?;
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// True when the command exits with status zero; for existence probes.
    pub(crate) fn succeeds(&self) -> bool {
        self.output().map(|o| o.status.success()).unwrap_or(false)
    }

    pub(crate) fn failure(&self, out: &Output) -> LabError {
        let status = match out.status.code() {
            Some(124) => format!("timed out after {:?}", self.limit),
            _ => out.status.to_string(),
        };
        LabError::Command {
            command: self.display(),
            status,
            stderr: String::from_utf8_lossy(&out.stderr).trim().to_owned(),
        }
    }
}
