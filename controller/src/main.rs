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

    // Every replica watches and keeps its caches from the start; only the leader acts.
    let (_always, role_rx) = watch::channel(leader::Role::Leader);
    let elector = args.leader_elect.then(|| {
        leader::Elector::start(
            Api::namespaced(client.clone(), &args.namespace),
            leader::LeaseConfig {
                name: args.lease_name.clone(),
                identity: identity.clone(),
                duration: Duration::from_secs(15),
                renew_every: Duration::from_secs(2),
            },
        )
    });
    let role = elector.as_ref().map_or(role_rx, |e| e.subscribe());

    let opts = run::Options {
        namespace: args.namespace.clone(),
        configmap: args.config.clone(),
        lb_class: args.lb_class.clone(),
        reporter: "ferrolb-controller".into(),
        instance: identity,
        ip_mode: args.lb_ip_mode,
    };
    let result = run::run(client, opts, metrics, ready, shutdown_rx, role)
        .await
        .map_err(anyhow::Error::from);
    // The loop has finished its writes: hand the lease over now rather than have the
    // standby wait for it to expire.
    if let Some(e) = elector {
        e.release().await;
    }
    if let Err(e) = &result {
        error!(error = %e, "controller stopped");
    }
    http.abort();
    result
}
