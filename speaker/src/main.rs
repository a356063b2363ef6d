//! `ferrolb-speaker`: announces LoadBalancer addresses from this node (see the crate
//! docs).

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;

use anyhow::Context;
use clap::{Parser, ValueEnum};
use ferrolb_speaker::announce::{Announcer, RawAnnouncer, RawConfig};
use ferrolb_speaker::membership;
use ferrolb_speaker::nat::{NatTable, nft::NftTable};
use ferrolb_speaker::run::{self, logonly::LogAnnouncer, metrics::Metrics};
use kube::Client;
use prometheus_client::registry::Registry;
use tracing::error;

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum AnnouncerKind {
    /// Raw sockets: answer ARP/NDP and send gratuitous announcements (needs
    /// CAP_NET_RAW and the host network).
    Raw,
    /// Log what would be announced; touch nothing (for tests without root).
    None,
}

#[derive(Parser, Debug)]
#[command(
    name = "ferrolb-speaker",
    version,
    about = "Announces LoadBalancer addresses on the local network (layer 2)"
)]
struct Args {
    /// This node's name, as in the Node object.
    #[arg(long, env = "NODE_NAME")]
    node_name: String,
    /// Namespace holding the configuration and the membership Secret.
    #[arg(long, env = "METALLB_NAMESPACE", default_value = "metallb-system")]
    namespace: String,
    /// Name of the legacy ConfigMap.
    #[arg(long, default_value = "config")]
    config: String,
    /// Secret holding the membership key under `secretkey`. Without it the speaker
    /// announces nothing and reports not ready.
    #[arg(long, default_value = "ferrolb-memberlist")]
    memberlist_secret: String,
    /// UDP port of the membership, bound on the node's InternalIP.
    #[arg(long, default_value_t = 7946)]
    memberlist_port: u16,
    /// Address for /metrics, /healthz and /readyz.
    #[arg(long, default_value = "0.0.0.0:7473")]
    metrics_addr: SocketAddr,
    /// Only handle Services with this spec.loadBalancerClass (default: Services without one).
    #[arg(long)]
    lb_class: Option<String>,
    /// Log as JSON lines.
    #[arg(long)]
    log_json: bool,
    /// How addresses are announced.
    #[arg(long, value_enum, default_value = "raw")]
    announcer: AnnouncerKind,
    /// Forward the ports of the addresses this node leads to its NodePorts with
    /// nftables (table `inet ferrolb_nat`), for clusters where kube-proxy does not
    /// handle the LoadBalancer address (`ipMode: Proxy`). Needs the `nft` binary and
    /// NET_ADMIN.
    #[arg(long, env = "FERROLB_NODEPORT_DNAT")]
    nodeport_dnat: bool,
    /// The `nft` binary used by --nodeport-dnat.
    #[arg(long, default_value = "nft")]
    nft: std::path::PathBuf,
}

// One thread: the work is I/O-bound and ARP/NDP replies run on the announcer's own
// receive threads; worker threads would only add their malloc arenas and stacks.
#[tokio::main(flavor = "current_thread")]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    ferrolb_k8s::process::init_tracing(args.log_json);
    match args.announcer {
        AnnouncerKind::None => serve(args, LogAnnouncer::default()).await,
        AnnouncerKind::Raw => serve(args, raw_announcer()?).await,
    }
}

/// The real announcer. Switching implementations is this one function.
fn raw_announcer() -> anyhow::Result<impl Announcer + 'static> {
    RawAnnouncer::new(RawConfig::default()).context("starting the raw-socket announcer")
}

async fn serve<A: Announcer + 'static>(args: Args, announcer: A) -> anyhow::Result<()> {
    let client = Client::try_default()
        .await
        .context("connecting to the Kubernetes API")?;
    let metrics = Arc::new(Metrics::default());
    let mut registry = Registry::default();
    metrics.register(&mut registry);
    let ready = Arc::new(AtomicBool::new(false));
    let shutdown_rx = ferrolb_k8s::process::shutdown_signal().context("signal handlers")?;
    let http = tokio::spawn(ferrolb_k8s::http::serve(
        args.metrics_addr,
        Arc::new(registry),
        ready.clone(),
        shutdown_rx.clone(),
    ));

    let nat: Option<Box<dyn NatTable>> = if args.nodeport_dnat {
        let mut table = NftTable::new(&args.nft);
        // Fails early (and clears what a crashed run left) when nft cannot run.
        table
            .clear()
            .context("--nodeport-dnat: removing the table left by an earlier run")?;
        Some(Box::new(table))
    } else {
        None
    };
    let opts = run::Options {
        node_name: args.node_name.clone(),
        namespace: args.namespace.clone(),
        configmap: args.config.clone(),
        memberlist_secret: args.memberlist_secret.clone(),
        memberlist_port: args.memberlist_port,
        lb_class: args.lb_class.clone(),
        membership: membership::Config::default(),
    };
    let result = run::run(client, opts, announcer, nat, metrics, ready, shutdown_rx)
        .await
        .map_err(anyhow::Error::from);
    if let Err(e) = &result {
        error!(error = %e, "speaker stopped");
    }
    http.abort();
    result
}
