//! Leader election over a `coordination.k8s.io/v1` Lease, so that two controller
//! replicas never allocate at the same time. Writes use the Lease's resourceVersion, so
//! two candidates racing for an expired lease cannot both win.

use std::time::Duration;

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
use k8s_openapi::jiff::Timestamp;
use kube::Api;
use kube::api::{ObjectMeta, PostParams};
use tokio::sync::watch;
use tracing::{info, warn};

#[derive(Clone, Debug)]
pub struct LeaseConfig {
    pub name: String,
    pub identity: String,
    pub duration: Duration,
    pub renew_every: Duration,
}

fn now() -> MicroTime {
    MicroTime(Timestamp::now())
}

/// One attempt to take or renew the lease; true if we hold it afterwards.
async fn try_acquire(api: &Api<Lease>, cfg: &LeaseConfig) -> kube::Result<bool> {
    let secs = i32::try_from(cfg.duration.as_secs()).unwrap_or(i32::MAX);
    match api.get_opt(&cfg.name).await? {
        None => {
            let lease = Lease {
                metadata: ObjectMeta {
                    name: Some(cfg.name.clone()),
                    ..Default::default()
                },
                spec: Some(LeaseSpec {
                    holder_identity: Some(cfg.identity.clone()),
                    lease_duration_seconds: Some(secs),
                    acquire_time: Some(now()),
                    renew_time: Some(now()),
                    lease_transitions: Some(0),
                    ..Default::default()
                }),
            };
            match api.create(&PostParams::default(), &lease).await {
                Ok(_) => Ok(true),
                Err(kube::Error::Api(e)) if e.code == 409 => Ok(false),
                Err(e) => Err(e),
            }
        }
        Some(mut lease) => {
            let spec = lease.spec.get_or_insert_default();
            let ours = spec.holder_identity.as_deref() == Some(cfg.identity.as_str());
            let expired = match (&spec.renew_time, spec.lease_duration_seconds) {
                (Some(t), Some(d)) => {
                    let age = Timestamp::now().duration_since(t.0);
                    age.as_secs() > i64::from(d)
                }
                _ => true,
            };
            if !ours && !expired && spec.holder_identity.is_some() {
                return Ok(false);
            }
            if !ours {
                spec.acquire_time = Some(now());
                spec.lease_transitions = Some(spec.lease_transitions.unwrap_or(0) + 1);
            }
            spec.holder_identity = Some(cfg.identity.clone());
            spec.lease_duration_seconds = Some(secs);
            spec.renew_time = Some(now());
            // replace() carries the resourceVersion we read: a concurrent writer makes it fail.
            match api.replace(&cfg.name, &PostParams::default(), &lease).await {
                Ok(_) => Ok(true),
                Err(kube::Error::Api(e)) if e.code == 409 => Ok(false),
                Err(e) => Err(e),
            }
        }
    }
}

/// Waits until this replica holds the lease, then keeps renewing it in the background.
/// The returned receiver turns `true` if the lease is lost (the caller must stop).
pub async fn acquire(api: Api<Lease>, cfg: LeaseConfig) -> watch::Receiver<bool> {
    loop {
        match try_acquire(&api, &cfg).await {
            Ok(true) => break,
            Ok(false) => {}
            Err(e) => warn!(error = %e, "lease acquisition failed"),
        }
        tokio::time::sleep(cfg.renew_every).await;
    }
    info!(identity = %cfg.identity, lease = %cfg.name, "became leader");
    let (tx, rx) = watch::channel(false);
    tokio::spawn(async move {
        let mut last_ok = tokio::time::Instant::now();
        loop {
            tokio::time::sleep(cfg.renew_every).await;
            match try_acquire(&api, &cfg).await {
                Ok(true) => last_ok = tokio::time::Instant::now(),
                Ok(false) => {
                    warn!(identity = %cfg.identity, "lease taken by another replica");
                    let _ = tx.send(true);
                    return;
                }
                Err(e) => {
                    warn!(error = %e, "lease renewal failed");
                    // Stop before the lease can expire under us, so that two leaders
                    // never act at once.
                    if last_ok.elapsed() + cfg.renew_every >= cfg.duration {
                        let _ = tx.send(true);
                        return;
                    }
                }
            }
        }
    });
    rx
}
