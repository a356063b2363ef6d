//! `lab`: bring the ferrolb lab up, use it, break it and remove it.
//!
//! A thin command line over `ferrolb_integration::lab`. `up` returns once
//! every node is Ready and leaves the daemons running; every other command
//! finds the lab again through its state directory (`FERROLB_LAB_DIR`,
//! default `<repo>/.lab`). Logs go to stderr, so `eval "$(lab env)"` works.

use std::ffi::OsString;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use clap::{Parser, Subcommand, ValueEnum};
use ferrolb_integration::lab::{
    ControlPlaneStop, Direction, Effect, IpFamily, Lab, LabOptions, LabPaths, ProxyMode,
    TrafficFault, Transport, kubeapi, lock, teardown,
};

#[derive(Debug, Parser)]
#[command(
    name = "lab",
    about = "ferrolb lab: a Kubernetes cluster in network namespaces",
    after_help = "Use from a shell: integration/lab up && eval \"$(integration/lab env)\" && kubectl get nodes"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Build the lab (idempotent: only what is missing is made or started).
    Up(UpArgs),
    /// Print shell lines to eval: KUBECONFIG for the root namespace, namespaces, nodes.
    Env,
    /// Run a command in a host's namespace (m-k8s, wK-k8s, client).
    Exec {
        /// Host name.
        host: String,
        /// Command and arguments, after `--`.
        #[arg(last = true, required = true)]
        argv: Vec<OsString>,
    },
    /// Cut a worker off the segment and kill all its processes.
    NodeFail {
        /// Node name (wK-k8s).
        node: String,
    },
    /// Reconnect a failed node and restart its agent, kube-proxy and speaker.
    NodeRecover {
        /// Node name.
        node: String,
    },
    /// Restart a ferrolb component.
    Restart {
        #[command(subcommand)]
        what: Restart,
    },
    /// Break the lab on purpose: stop the control plane, drop, lose or delay packets, cut a node off the API server.
    Fault {
        #[command(subcommand)]
        what: Fault,
    },
    /// Show namespaces, daemons, faults in force and node readiness.
    Status,
    /// Remove the lab and everything named flb-*, even after a crash.
    Down,
    /// Print where a built artefact is (the rules of scripts/paths.sh).
    Paths {
        /// target, harness, kubectl, tools, helm, profile or bin.
        #[arg(value_enum)]
        what: PathKind,
        /// The binary, for `profile` and `bin`.
        binary: Option<String>,
    },
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum PathKind {
    Target,
    Harness,
    Kubectl,
    Tools,
    Helm,
    Profile,
    Bin,
}

#[derive(Debug, Subcommand)]
enum Restart {
    /// The ferrolb controller.
    Controller,
    /// The ferrolb speaker of one node.
    Speaker {
        /// Node name.
        node: String,
    },
}

#[derive(Debug, Subcommand)]
enum Fault {
    /// Stop the control plane (etcd, API server, controller-manager, scheduler), keeping its data.
    StopControlPlane {
        /// Kill it at once (a crash) instead of stopping it gracefully (up to 15 s).
        #[arg(long)]
        crash: bool,
        /// Start it again after this long (e.g. 20s) and wait until it is ready.
        #[arg(long = "for", value_parser = parse_secs)]
        duration: Option<Duration>,
    },
    /// Start the stopped control plane again and wait until it is ready.
    StartControlPlane,
    /// Drop, lose or delay the packets of one port between hosts (inside their namespaces).
    Traffic(TrafficArgs),
    /// Drop a node's traffic to and from the API server; the segment and the membership stay.
    CutApi {
        /// Node name (wK-k8s).
        node: String,
    },
    /// Remove a traffic fault by name (`api-cut-NODE` for cut-api), or all of them.
    Remove {
        /// The fault's name.
        #[arg(required_unless_present = "all")]
        name: Option<String>,
        /// Every traffic fault.
        #[arg(long, conflicts_with = "name")]
        all: bool,
    },
    /// List the faults in force.
    List,
}

#[derive(Debug, clap::Args)]
struct TrafficArgs {
    /// Name of the fault (lowercase letters, digits, '-').
    name: String,
    /// Hosts whose namespaces get the rules, comma separated; `all`: every node.
    #[arg(long, value_delimiter = ',', required = true)]
    on: Vec<String>,
    /// The other ends, comma separated; `all`: every node (a host is never its own peer).
    #[arg(long, value_delimiter = ',', default_value = "all")]
    peers: Vec<String>,
    /// UDP port (the speakers' membership: 7946).
    #[arg(long, required_unless_present = "tcp", conflicts_with = "tcp")]
    udp: Option<u16>,
    /// TCP port.
    #[arg(long)]
    tcp: Option<u16>,
    /// Drop every matched packet.
    #[arg(long, required_unless_present_any = ["loss", "delay"], conflicts_with_all = ["loss", "delay"])]
    drop: bool,
    /// Drop each matched packet with this probability, in percent (e.g. 10).
    #[arg(long, conflicts_with = "delay")]
    loss: Option<f64>,
    /// Hold each packet a host sends this long (e.g. 50ms; needs --direction out).
    #[arg(long, value_parser = parse_millis)]
    delay: Option<Duration>,
    /// Which packets of each host: sent (out), received (in) or both.
    #[arg(long, value_enum, default_value = "both")]
    direction: Way,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum Way {
    Out,
    In,
    Both,
}

impl TrafficArgs {
    fn fault(&self) -> TrafficFault {
        let (transport, port) = match (self.udp, self.tcp) {
            (Some(p), _) => (Transport::Udp, p),
            (None, p) => (Transport::Tcp, p.unwrap_or_default()),
        };
        TrafficFault {
            name: self.name.clone(),
            hosts: self.on.clone(),
            peers: self.peers.clone(),
            transport,
            port,
            effect: match (self.loss, self.delay) {
                (Some(p), _) => Effect::Loss(p),
                (None, Some(d)) => Effect::Delay(d),
                (None, None) => Effect::Drop,
            },
            direction: match self.direction {
                Way::Out => Direction::Out,
                Way::In => Direction::In,
                Way::Both => Direction::Both,
            },
        }
    }
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum Mode {
    Iptables,
    Nftables,
}

#[derive(Debug, clap::Args)]
struct UpArgs {
    /// Number of worker nodes.
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u8).range(1..=20))]
    workers: u8,
    /// IPv6 as the Kubernetes family.
    #[arg(long, conflicts_with = "dual_stack")]
    ipv6: bool,
    /// IPv4 and IPv6.
    #[arg(long)]
    dual_stack: bool,
    /// Kubernetes only, without the ferrolb controller and speakers.
    #[arg(long)]
    bare: bool,
    /// Fail when ferrolb's binaries are not built (instead of running without them).
    #[arg(long, conflicts_with = "bare")]
    require_ferrolb: bool,
    /// Namespaces and links only, without Kubernetes.
    #[arg(long)]
    topology_only: bool,
    /// kube-proxy backend.
    #[arg(long, value_enum, default_value = "iptables")]
    proxy_mode: Mode,
    /// Node-lifecycle grace period before a silent node is NotReady (e.g. 20s).
    #[arg(long, default_value = "20s", value_parser = parse_secs)]
    node_monitor_grace_period: Duration,
    /// Bound on each wait (control plane ready, nodes Ready), e.g. 180s.
    #[arg(long, default_value = "180s", value_parser = parse_secs)]
    timeout: Duration,
    /// Extra argument of the ferrolb controller (repeat for several).
    #[arg(long = "controller-arg", allow_hyphen_values = true)]
    controller_args: Vec<String>,
    /// Extra argument of every ferrolb speaker (repeat for several).
    #[arg(long = "speaker-arg", allow_hyphen_values = true)]
    speaker_args: Vec<String>,
}

fn parse_secs(s: &str) -> Result<Duration, String> {
    let digits = s.strip_suffix('s').unwrap_or(s);
    digits
        .parse::<u64>()
        .map(Duration::from_secs)
        .map_err(|_| format!("{s:?}: expected whole seconds such as 20s"))
}

fn parse_millis(s: &str) -> Result<Duration, String> {
    let digits = s.strip_suffix("ms").unwrap_or(s);
    digits
        .parse::<u64>()
        .map(Duration::from_millis)
        .map_err(|_| format!("{s:?}: expected whole milliseconds such as 50ms"))
}

impl UpArgs {
    fn options(&self) -> LabOptions {
        LabOptions {
            workers: self.workers,
            ip_family: if self.ipv6 {
                IpFamily::Ipv6
            } else if self.dual_stack {
                IpFamily::DualStack
            } else {
                IpFamily::Ipv4
            },
            bare: self.bare,
            topology_only: self.topology_only,
            proxy_mode: match self.proxy_mode {
                Mode::Iptables => ProxyMode::Iptables,
                Mode::Nftables => ProxyMode::Nftables,
            },
            node_monitor_grace_period: self.node_monitor_grace_period,
            ready_timeout: self.timeout,
            require_ferrolb: self.require_ferrolb,
            controller_bin: None,
            speaker_bin: None,
            controller_args: self.controller_args.clone(),
            speaker_args: self.speaker_args.clone(),
        }
    }
}

#[tokio::main]
async fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                // kube-client logs every failed connection itself; the lab
                // reports API errors in its own words.
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info,kube_client=off")),
        )
        .with_writer(std::io::stderr)
        .with_target(false)
        .init();
    let cli = Cli::parse();
    match run(cli.command).await {
        Ok(code) => code,
        Err(e) => {
            eprintln!("lab: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run(command: Command) -> anyhow::Result<ExitCode> {
    let paths = LabPaths::from_env();
    // Commands that change the lab own it while they run; a test that owns
    // it makes them fail at once instead of wrecking the test.
    let _lock = match command {
        Command::Env
        | Command::Exec { .. }
        | Command::Status
        | Command::Paths { .. }
        | Command::Fault { what: Fault::List } => None,
        _ => Some(lock::acquire(Duration::from_secs(2))?),
    };
    match command {
        Command::Up(args) => {
            let start = Instant::now();
            let lab = Lab::ensure(paths, args.options()).await?;
            eprintln!(
                "lab: up in {:.1}s ({} nodes); use it with: eval \"$(integration/lab env)\"",
                start.elapsed().as_secs_f64(),
                lab.topology().nodes().count()
            );
        }
        Command::Env => {
            let lab = Lab::attach_at(paths)?;
            print!("{}", lab.env_lines());
        }
        Command::Exec { host, argv } => {
            let lab = Lab::attach_at(paths)?;
            let ns = lab.topology().host(&host)?.netns();
            // Interactive: inherits the terminal and has no time bound.
            let status = std::process::Command::new("ip")
                .args(["netns", "exec", &ns])
                .args(&argv)
                .env("KUBECONFIG", lab.lab_kubeconfig_path())
                .status()
                .context("running ip netns exec")?;
            return Ok(match status.code() {
                Some(c) => ExitCode::from(u8::try_from(c).unwrap_or(1)),
                None => ExitCode::FAILURE,
            });
        }
        Command::NodeFail { node } => Lab::attach_at(paths)?.node_fail(&node)?,
        Command::NodeRecover { node } => Lab::attach_at(paths)?.node_recover(&node)?,
        Command::Restart { what } => {
            let lab = Lab::attach_at(paths)?;
            match what {
                Restart::Controller => lab.restart_controller()?,
                Restart::Speaker { node } => lab.restart_speaker(&node)?,
            }
        }
        Command::Fault { what } => fault(Lab::attach_at(paths)?, what).await?,
        Command::Status => return status(paths).await,
        Command::Down => teardown::down(&paths)?,
        Command::Paths { what, binary } => {
            let binary = || binary.clone().context("name the binary");
            let path = match what {
                PathKind::Target => paths.target_dir(),
                PathKind::Harness => paths.harness(),
                PathKind::Kubectl => paths.kubectl(),
                PathKind::Tools => paths.tools(),
                PathKind::Helm => paths.helm(),
                PathKind::Profile => paths.profile(&binary()?).into(),
                PathKind::Bin => paths.cargo_bin(&binary()?),
            };
            println!("{}", path.display());
        }
    }
    Ok(ExitCode::SUCCESS)
}

async fn fault(lab: Lab, what: Fault) -> anyhow::Result<()> {
    let ready = lab.options().ready_timeout;
    match what {
        Fault::StopControlPlane { crash, duration } => {
            lab.stop_control_plane(if crash {
                ControlPlaneStop::Crash
            } else {
                ControlPlaneStop::Graceful
            })?;
            if let Some(d) = duration {
                eprintln!(
                    "lab: control plane stopped; starting it again in {}s",
                    d.as_secs()
                );
                tokio::time::sleep(d).await;
                lab.start_control_plane(ready).await?;
            }
        }
        Fault::StartControlPlane => lab.start_control_plane(ready).await?,
        Fault::Traffic(args) => lab.add_traffic_fault(&args.fault())?,
        Fault::CutApi { node } => {
            let name = lab.cut_from_api(&node)?;
            eprintln!("lab: {node} cut off the API server; undo with `lab fault remove {name}`");
        }
        Fault::Remove {
            name: Some(name), ..
        } => {
            if !lab.remove_fault(&name)? {
                bail!("no traffic fault named {name} is in force");
            }
        }
        Fault::Remove { name: None, .. } => {
            let n = lab.remove_traffic_faults()?;
            eprintln!("lab: {n} traffic fault(s) removed");
        }
        Fault::List => {
            let faults = lab.active_faults()?;
            if faults.is_empty() {
                println!("no faults in force");
            }
            for f in faults {
                println!("{f}");
            }
        }
    }
    Ok(())
}

async fn status(paths: LabPaths) -> anyhow::Result<ExitCode> {
    let Ok(lab) = Lab::attach_at(paths.clone()) else {
        let left = teardown::leftovers(&paths);
        if left.is_empty() {
            println!("lab is down; nothing left over");
            return Ok(ExitCode::SUCCESS);
        }
        println!("lab is not up, but these are left over (remove with `lab down`):");
        for l in left {
            println!("  {l}");
        }
        return Ok(ExitCode::FAILURE);
    };
    let mut st = lab.status();
    let cp_stopped = lab.control_plane_stopped_since().ok().flatten().is_some();
    if cp_stopped {
        println!("API server: stopped on purpose (see faults)");
    } else if !lab.options().topology_only && lab.kubeconfig_path().exists() {
        let ask = async {
            let client = lab.kube_client().await?;
            kubeapi::node_readiness(&client).await
        };
        match tokio::time::timeout(Duration::from_secs(5), ask).await {
            Ok(Ok(nodes)) => st.nodes = nodes,
            Ok(Err(e)) => println!("API server: {e}"),
            Err(_) => println!("API server: no answer within 5s"),
        }
    }
    print!("{st}");
    let healthy = st.netns.iter().all(|(_, up)| *up)
        && st.links.iter().all(|(_, up)| *up)
        && st.daemons.iter().all(|d| d.2);
    if !healthy {
        bail!("some namespaces, links or daemons are down (see above)");
    }
    Ok(ExitCode::SUCCESS)
}
