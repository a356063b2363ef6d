//! The lab provider: the scenarios on this repository's lab (Kubernetes in
//! network namespaces, see [`crate::lab`]), with the lab's `client`
//! namespace as the host on the segment.
//!
//! On a real cluster the Helm chart provides ferrolb's namespace, the
//! `metallb.io` CRDs and the membership Secret; here the lab does, then runs
//! ferrolb's controller and speakers (processes in the node namespaces).

use std::net::IpAddr;
use std::process::Output;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result, bail, ensure};

use super::host::{ClientHost, generic_neighbour_mac};
use super::{AddressRange, Cluster, CommandHost, Settings, env};
use crate::lab::{Lab, LabOptions, topology};

/// ferrolb's namespace on the lab (the controller's and speakers' default).
pub const CONFIG_NAMESPACE: &str = crate::lab::ferrolb::NAMESPACE;
/// The scenarios' addresses on the lab: in the lab's pool range
/// (198.51.100.0/24), on the nodes' segment.
pub const POOL: &str = "198.51.100.100-198.51.100.139";

/// The lab's `client` namespace as the scenarios' client host. Commands run
/// there through [`Lab::exec_with_limit`], so the generic command lines
/// (curl, `ip neigh`) are the ones other providers run.
#[derive(Debug)]
pub struct LabHost {
    lab: Arc<Lab>,
}

impl ClientHost for LabHost {
    fn describe(&self) -> String {
        format!("the lab's {} namespace", self.lab_host().netns())
    }

    fn run(&self, argv: &[String], limit: Duration) -> Result<Output> {
        Ok(self.lab.exec_with_limit(topology::CLIENT, argv, limit)?)
    }

    /// The generic reading, checked against the lab's own
    /// ([`Lab::neighbour_mac`], which reads the table from outside the
    /// namespace): both must agree.
    fn neighbour_mac(&self, ip: IpAddr) -> Result<Option<String>> {
        let generic = generic_neighbour_mac(self, ip)?;
        let lab = self
            .lab
            .neighbour_mac(topology::CLIENT, ip)?
            .map(|m| m.to_lowercase());
        if let (Some(g), Some(l)) = (&generic, &lab) {
            ensure!(
                g == l,
                "neighbour entry of {ip}: `ip neigh show` in the client says {g}, the lab reads {l}"
            );
        }
        Ok(generic)
    }
}

impl LabHost {
    fn lab_host(&self) -> &topology::Host {
        self.lab.topology().client()
    }
}

/// A lab with ferrolb running, and the [`Cluster`] on it. The lab is torn
/// down when the provider drops (also on panic).
#[derive(Debug)]
pub struct LabProvider {
    cluster: Cluster,
    lab: Arc<Lab>,
}

impl LabProvider {
    /// Brings a lab up with ferrolb ready (waiting for the machine's lab
    /// lock). Needs root, the Go harness and built ferrolb binaries.
    pub async fn up() -> Result<Self> {
        let lab = Lab::up(LabOptions {
            workers: 2,
            require_ferrolb: true,
            ..LabOptions::default()
        })
        .await
        .context("lab up")?;
        let lab = Arc::new(lab);
        let kube = lab.kube_client().await.context("lab client")?;
        let get = |k: &str| std::env::var(k).ok();
        let wait = env::wait_from(&get, Duration::from_secs(90))?;
        let settings = Settings {
            prefix: "ferrolb-e2e".to_owned(),
            config_namespace: CONFIG_NAMESPACE.to_owned(),
            pool: AddressRange::parse(POOL)?,
            echo: env::echo_from(&get)?,
            legacy_configmap: Some("config".to_owned()),
            wait,
            scenario_limit: wait * 8,
        };
        let cluster = Cluster {
            name: format!("the lab ({})", lab.paths().state.display()),
            kube,
            host: Arc::new(LabHost { lab: lab.clone() }),
            settings: Arc::new(settings),
        };
        Ok(Self { cluster, lab })
    }

    /// The cluster the scenarios run on.
    pub fn cluster(&self) -> &Cluster {
        &self.cluster
    }

    /// The same cluster seen through the generic [`CommandHost`] (the
    /// client host kind uses, with `docker exec ...` as its prefix), here
    /// with the prefix `ip netns exec <client namespace>`: so that the lab
    /// also runs the command lines and parsing of the generic provider
    /// without the lab's cross-check.
    pub fn generic_host_cluster(&self) -> Cluster {
        let netns = self.lab.topology().client().netns();
        Cluster {
            name: format!("{} through `ip netns exec {netns}`", self.cluster.name),
            host: Arc::new(CommandHost::new(&format!("ip netns exec {netns}"))),
            ..self.cluster.clone()
        }
    }

    /// The lab.
    pub fn lab(&self) -> &Lab {
        &self.lab
    }

    /// Prints the warnings and errors of ferrolb's logs (at most `max`
    /// lines per daemon), for whoever reads a failed run.
    pub fn print_ferrolb_warnings(&self, max: usize) {
        let mut daemons = vec![crate::lab::components::CONTROLLER.to_owned()];
        daemons.extend(
            self.lab
                .topology()
                .nodes()
                .map(|n| crate::lab::components::speaker_name(&n.name)),
        );
        for d in daemons {
            let text = std::fs::read_to_string(self.lab.daemon_log(&d)).unwrap_or_default();
            for line in text
                .lines()
                .filter(|l| l.contains("WARN") || l.contains("ERROR"))
                .take(max)
            {
                eprintln!("log {d}: {line}");
            }
        }
    }

    /// Tears the lab down now and reports errors.
    pub fn down(self) -> Result<()> {
        let Self { cluster, lab } = self;
        drop(cluster);
        match Arc::try_unwrap(lab) {
            Ok(lab) => Ok(lab.down()?),
            // Someone still holds it: it goes when they drop it.
            Err(_) => bail!("the lab is still in use; it is torn down when released"),
        }
    }
}
