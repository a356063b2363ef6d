//! The relay behind a delay fault, one per host: the harness's `delay`
//! daemon (`delay-<host>`) owns a TUN device in the host's namespace, holds
//! each packet routed into it for the fault's delay and sends it on with
//! [`RELAYED_MARK`]; a policy rule routes packets carrying [`DELAY_MARK`]
//! (set by the fault's nftables table) to a table whose default route is
//! that device. Everything lives in the host's namespace, and the device
//! goes with the daemon.

use std::ffi::OsString;
use std::fs;
use std::time::{Duration, Instant};

use super::rules::{DELAY_MARK, RELAYED_MARK};
use crate::lab::Lab;
use crate::lab::cmd::Cmd;
use crate::lab::error::{LabError, Result};
use crate::lab::process::{self, DaemonSpec};
use crate::lab::topology::Host;

/// The relay's TUN device.
const DEVICE: &str = "flb-delay";
/// The routing table (and rule preference) that sends marked packets to it.
const ROUTE_TABLE: &str = "241";
/// How long the relay may take to create its device.
const READY: Duration = Duration::from_secs(10);

/// Daemon name of `host`'s relay.
pub fn relay_name(host: &str) -> String {
    format!("delay-{host}")
}

impl Lab {
    /// Starts `host`'s relay holding packets for `delay` and routes the
    /// marked packets into it. A host has one relay: a second delay fault on
    /// it is refused.
    pub(super) fn start_relay(&self, host: &Host, delay: Duration) -> Result<()> {
        let name = relay_name(&host.name);
        if process::running_pid_file(&self.paths, &name)?.is_some() {
            return Err(LabError::Refused(format!(
                "{} has a delay fault already (one per host)",
                host.name
            )));
        }
        let ready = self.paths.faults().join(format!("{name}.ready"));
        let dir = self.paths.faults();
        fs::create_dir_all(&dir).map_err(|source| LabError::Io { path: dir, source })?;
        let spec = DaemonSpec {
            name: name.clone(),
            netns: Some(host.netns()),
            net_only: false,
            program: self.paths.harness(),
            args: vec![
                "delay".into(),
                "--tun".into(),
                DEVICE.into(),
                "--delay".into(),
                format!("{}ms", delay.as_millis()).into(),
                "--mark".into(),
                RELAYED_MARK.to_string().into(),
                "--ready-file".into(),
                OsString::from(&ready),
            ],
            env: Vec::new(),
        };
        process::start_if_needed(&self.paths, &spec, std::slice::from_ref(&ready))?;
        let start = Instant::now();
        while !ready.exists() {
            process::check_running(&self.paths, &[&name])?;
            if start.elapsed() > READY {
                let _ = self.stop_relay(host);
                return Err(LabError::Timeout {
                    what: format!("{name}'s device {DEVICE}"),
                    after: READY,
                });
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let result = self.route_into_relay(host);
        if result.is_err() {
            let _ = self.stop_relay(host);
        }
        result
    }

    fn route_into_relay(&self, host: &Host) -> Result<()> {
        let ns = host.netns();
        Cmd::ip(&["-n", &ns, "link", "set", DEVICE, "up"]).run()?;
        let mark = format!("{DELAY_MARK:#x}/{DELAY_MARK:#x}");
        for family in self.relay_families() {
            Cmd::ip(&[
                "-n",
                &ns,
                family,
                "route",
                "replace",
                "default",
                "dev",
                DEVICE,
                "table",
                ROUTE_TABLE,
            ])
            .run()?;
            Cmd::ip(&[
                "-n",
                &ns,
                family,
                "rule",
                "add",
                "fwmark",
                &mark,
                "lookup",
                ROUTE_TABLE,
                "pref",
                ROUTE_TABLE,
            ])
            .run()?;
        }
        Ok(())
    }

    /// Stops `host`'s relay and removes its routing; absent parts are fine.
    pub(super) fn stop_relay(&self, host: &Host) -> Result<()> {
        let ns = host.netns();
        for family in self.relay_families() {
            // Absent when the set-up failed half way.
            let _ = Cmd::ip(&["-n", &ns, family, "rule", "del", "pref", ROUTE_TABLE]).run();
        }
        // The device, and the routes through it, go with the daemon.
        process::stop(&self.paths, &relay_name(&host.name), Duration::from_secs(5))?;
        let ready = self
            .paths
            .faults()
            .join(format!("{}.ready", relay_name(&host.name)));
        match fs::remove_file(&ready) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(LabError::Io {
                path: ready,
                source: e,
            }),
            _ => Ok(()),
        }
    }

    /// `ip`'s family flags of the relay's routing.
    fn relay_families(&self) -> Vec<&'static str> {
        let mut f = vec!["-4"];
        if self.topology.family.has_v6() {
            f.push("-6");
        }
        f
    }
}
