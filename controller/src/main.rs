//! `ferrolb-controller`: allocates LoadBalancer addresses (see the crate docs).

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::Duration;

use anyhow::Context;
use clap::Parser;
use ferrolb_controller::run::{self, leader, metrics::Metrics};
use kube::{Api, Client};
use prometheus_client::registry::Registry;
use tokio::sync::watch;
use tracing::error;

#[derive(Parser, Debug)]
#[command(
    name = "ferrolb-controller",
    version,
    about = "Allocates addresses to LoadBalancer Services from MetalLB-compatible pools"
)]
struct Args {
    /// Namespace holding the configuration (legacy ConfigMap and metallb.io objects).
    #[arg(long, env = "METALLB_NAMESPACE", default_value = "metallb-system")]
    namespace: String,
    /// Name of the legacy ConfigMap.
    #[arg(long, default_value = "config")]
    config: String,
    /// Only handle Services with this spec.loadBalancerClass (default: Services without one).
    #[arg(long)]
    lb_class: Option<String>,
    /// Address for /metrics, /healthz and /readyz.
    #[arg(long, default_value = "0.0.0.0:7472")]
    metrics_addr: SocketAddr,
    /// Elect a leader among replicas over a Lease (off: this replica always acts).
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set)]
    leader_elect: bool,
    #[arg(long, default_value = "ferrolb-controller")]
    lease_name: String,
    /// This replica's identity in the lease (default: the pod name or host name).
    #[arg(long, env = "POD_NAME")]
    identity: Option<String>,
    /// `ipMode` written into each `status.loadBalancer.ingress[]` entry: `VIP` (written
    /// as no ipMode, which Kubernetes reads as VIP) or `Proxy`.
    #[arg(long, default_value = "VIP", value_parser = clap::builder::ValueParser::new(|s: &str| s.parse::<run::IpMode>()))]
    lb_ip_mode: run::IpMode,
    /// Log as JSON lines.
    #[arg(long)]
    log_json: bool,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    ferrolb_k8s::process::init_tracing(args.log_json);
    let identity = args.identity.clone().unwrap_or_else(|| {
        std::fs::read_to_string("/proc/sys/kernel/hostname")
            .map(|h| h.trim().to_string())
            .unwrap_or_else(|_| "ferrolb-controller".into())
    });
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

    let mut lost = if args.leader_elect {
        let cfg = leader::LeaseConfig {
            name: args.lease_name.clone(),
            identity: identity.clone(),
            duration: Duration::from_secs(15),
            renew_every: Duration::from_secs(2),
        };
        let api = Api::namespaced(client.clone(), &args.namespace);
        let mut sd = shutdown_rx.clone();
        tokio::select! {
            rx = leader::acquire(api, cfg) => rx,
            _ = sd.wait_for(|s| *s) => return Ok(()),
        }
    } else {
        watch::channel(false).1
    };
    metrics.is_leader.set(1);

    let opts = run::Options {
        namespace: args.namespace.clone(),
        configmap: args.config.clone(),
        lb_class: args.lb_class.clone(),
        reporter: "ferrolb-controller".into(),
        instance: identity,
        ip_mode: args.lb_ip_mode,
    };
    let result = tokio::select! {
        r = run::run(client, opts, metrics.clone(), ready, shutdown_rx.clone()) => r.map_err(anyhow::Error::from),
        _ = lost.wait_for(|l| *l) => Err(anyhow::anyhow!("lost the leader lease")),
    };
    if let Err(e) = &result {
        error!(error = %e, "controller stopped");
    }
    http.abort();
    result
}
