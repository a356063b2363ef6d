//! Leader election over a `coordination.k8s.io/v1` Lease, so that two controller
//! replicas never allocate at the same time. Writes use the Lease's resourceVersion, so
//! two candidates racing for an expired lease cannot both win.
//!
//! Expiry is judged as client-go does, on this replica's own clock: a lease held by
//! another replica is free once its record (holder, renewTime, transitions) has not
//! changed for its duration since this replica first saw it. Comparing the holder's
//! `renewTime` with the local wall clock instead would let clock skew between nodes
//! give two leaders at once (a reader ahead by more than the duration takes a live
//! lease).
//!
//! Every replica runs an [`Elector`] from the start: the standby keeps trying (and so
//! keeps proving it reaches the API, which its readiness reports), the leader keeps
//! renewing. On shutdown the leader [releases](Elector::release) the lease, so that the
//! standby takes over at its next attempt instead of waiting for the lease to expire.

use std::time::Duration;

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
use k8s_openapi::jiff::Timestamp;
use kube::Api;
use kube::api::{ObjectMeta, PostParams};
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tracing::{debug, info, warn};

#[derive(Clone, Debug)]
pub struct LeaseConfig {
    pub name: String,
    pub identity: String,
    pub duration: Duration,
    pub renew_every: Duration,
}

/// What this replica is, as far as the lease goes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    /// Another replica holds the lease (or none yet, before the first attempt).
    /// `healthy`: the API answered an attempt within the last lease duration, so this
    /// replica could take over.
    Standby { healthy: bool },
    /// This replica holds the lease and may act.
    Leader,
    /// This replica held the lease and lost it (taken, or not renewed in time): it must
    /// stop acting at once. Final.
    Lost,
}

fn now() -> MicroTime {
    MicroTime(Timestamp::now())
}

/// The lease record as last read, and when this replica first saw it (client-go's
/// observed time).
#[derive(Debug, Default)]
struct Observed(Option<(LeaseRecord, Instant)>);

/// What identifies one renewal of a lease.
type LeaseRecord = (Option<String>, Option<MicroTime>, Option<i32>);

impl Observed {
    /// Records a read of `spec` at `now`; returns when its record was first seen.
    fn see(&mut self, spec: &LeaseSpec, now: Instant) -> Instant {
        let record = (
            spec.holder_identity.clone(),
            spec.renew_time.clone(),
            spec.lease_transitions,
        );
        match &self.0 {
            Some((seen, at)) if *seen == record => *at,
            _ => {
                self.0 = Some((record, now));
                now
            }
        }
    }
}

/// Whether the lease as read lets `identity` take or keep it at `now`, its record
/// unchanged since `seen` (local monotonic time).
fn may_take(spec: &LeaseSpec, identity: &str, seen: Instant, now: Instant) -> bool {
    let holder = spec.holder_identity.as_deref().filter(|h| !h.is_empty());
    match holder {
        // Released (client-go writes "" on release) or never held.
        None => true,
        Some(h) if h == identity => true,
        Some(_) => match spec.lease_duration_seconds {
            Some(d) => {
                let d = Duration::from_secs(u64::try_from(d).unwrap_or(0));
                now.saturating_duration_since(seen) > d
            }
            None => true,
        },
    }
}

/// The lease after `identity` took or renewed it.
fn taken(mut spec: LeaseSpec, identity: &str, duration_secs: i32, at: MicroTime) -> LeaseSpec {
    let ours = spec.holder_identity.as_deref() == Some(identity);
    if !ours {
        spec.acquire_time = Some(at.clone());
        spec.lease_transitions = Some(spec.lease_transitions.unwrap_or(0) + 1);
    }
    spec.holder_identity = Some(identity.to_string());
    spec.lease_duration_seconds = Some(duration_secs);
    spec.renew_time = Some(at);
    spec
}

/// The lease handed back by its holder: no holder, so the next attempt of any other
/// replica takes it (the duration of 1 s also covers readers that only look at
/// expiry, as client-go's release does).
fn released(mut spec: LeaseSpec, at: MicroTime) -> LeaseSpec {
    spec.holder_identity = None;
    spec.lease_duration_seconds = Some(1);
    spec.renew_time = Some(at);
    spec
}

/// One attempt to take or renew the lease; true if we hold it afterwards.
async fn try_acquire(
    api: &Api<Lease>,
    cfg: &LeaseConfig,
    observed: &mut Observed,
) -> kube::Result<bool> {
    let secs = i32::try_from(cfg.duration.as_secs()).unwrap_or(i32::MAX);
    match api.get_opt(&cfg.name).await? {
        None => {
            let mut spec = taken(LeaseSpec::default(), &cfg.identity, secs, now());
            spec.lease_transitions = Some(0);
            let lease = Lease {
                metadata: ObjectMeta {
                    name: Some(cfg.name.clone()),
                    ..Default::default()
                },
                spec: Some(spec),
            };
            match api.create(&PostParams::default(), &lease).await {
                Ok(_) => Ok(true),
                Err(kube::Error::Api(e)) if e.code == 409 => Ok(false),
                Err(e) => Err(e),
            }
        }
        Some(mut lease) => {
            let spec = lease.spec.take().unwrap_or_default();
            let read_at = Instant::now();
            let seen = observed.see(&spec, read_at);
            if !may_take(&spec, &cfg.identity, seen, read_at) {
                return Ok(false);
            }
            lease.spec = Some(taken(spec, &cfg.identity, secs, now()));
            // replace() carries the resourceVersion we read: a concurrent writer makes it fail.
            match api.replace(&cfg.name, &PostParams::default(), &lease).await {
                Ok(_) => Ok(true),
                Err(kube::Error::Api(e)) if e.code == 409 => Ok(false),
                Err(e) => Err(e),
            }
        }
    }
}

/// Takes part in the election in the background until released or dropped.
#[derive(Debug)]
pub struct Elector {
    api: Api<Lease>,
    cfg: LeaseConfig,
    role: watch::Receiver<Role>,
    task: JoinHandle<()>,
}

impl Elector {
    /// Starts trying to take the lease, and renewing it once held.
    pub fn start(api: Api<Lease>, cfg: LeaseConfig) -> Elector {
        let (tx, role) = watch::channel(Role::Standby { healthy: false });
        let task = tokio::spawn(elect(api.clone(), cfg.clone(), tx));
        Elector {
            api,
            cfg,
            role,
            task,
        }
    }

    /// This replica's role, updated as it changes.
    pub fn subscribe(&self) -> watch::Receiver<Role> {
        self.role.clone()
    }

    /// Stops taking part and, if this replica holds the lease, hands it back so that
    /// a standby takes over at its next attempt. Call only once this replica has
    /// stopped acting (its last writes are done).
    pub async fn release(self) {
        self.task.abort();
        let _ = self.task.await;
        let lease = match self.api.get_opt(&self.cfg.name).await {
            Ok(Some(l)) => l,
            Ok(None) => return,
            Err(e) => {
                warn!(error = %e, "cannot read the lease to release it");
                return;
            }
        };
        let holder = lease
            .spec
            .as_ref()
            .and_then(|s| s.holder_identity.as_deref());
        if holder != Some(self.cfg.identity.as_str()) {
            return;
        }
        let mut lease = lease;
        lease.spec = Some(released(lease.spec.take().unwrap_or_default(), now()));
        match self
            .api
            .replace(&self.cfg.name, &PostParams::default(), &lease)
            .await
        {
            Ok(_) => {
                info!(identity = %self.cfg.identity, lease = %self.cfg.name, "released the leader lease")
            }
            Err(e) => warn!(error = %e, "cannot release the lease (it will expire)"),
        }
    }
}

async fn elect(api: Api<Lease>, cfg: LeaseConfig, tx: watch::Sender<Role>) {
    let mut leader = false;
    // Last time the API answered an attempt (standby health) or renewed our lease.
    let mut last_ok: Option<Instant> = None;
    let mut observed = Observed::default();
    loop {
        match try_acquire(&api, &cfg, &mut observed).await {
            Ok(true) => {
                last_ok = Some(Instant::now());
                if !leader {
                    leader = true;
                    info!(identity = %cfg.identity, lease = %cfg.name, "became leader");
                    let _ = tx.send(Role::Leader);
                }
            }
            Ok(false) if leader => {
                warn!(identity = %cfg.identity, "lease taken by another replica");
                let _ = tx.send(Role::Lost);
                return;
            }
            Ok(false) => {
                last_ok = Some(Instant::now());
                tx.send_if_modified(|r| set(r, Role::Standby { healthy: true }));
            }
            Err(e) => {
                let stale = last_ok.is_none_or(|t| t.elapsed() + cfg.renew_every >= cfg.duration);
                if leader {
                    warn!(error = %e, "lease renewal failed");
                    // Stop before the lease can expire under us, so that two leaders
                    // never act at once.
                    if stale {
                        let _ = tx.send(Role::Lost);
                        return;
                    }
                } else {
                    debug!(error = %e, "lease attempt failed");
                    if stale && tx.send_if_modified(|r| set(r, Role::Standby { healthy: false })) {
                        warn!(error = %e, "standby cannot reach the lease: not ready");
                    }
                }
            }
        }
        tokio::time::sleep(cfg.renew_every).await;
    }
}

fn set(r: &mut Role, to: Role) -> bool {
    let changed = *r != to;
    *r = to;
    changed
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(s: &str) -> Timestamp {
        s.parse().unwrap()
    }

    fn held_by(h: &str, renewed: &str) -> LeaseSpec {
        LeaseSpec {
            holder_identity: Some(h.into()),
            lease_duration_seconds: Some(15),
            renew_time: Some(MicroTime(at(renewed))),
            lease_transitions: Some(3),
            ..Default::default()
        }
    }

    fn secs(n: u64) -> Duration {
        Duration::from_secs(n)
    }

    #[test]
    fn a_live_lease_of_another_replica_is_left_alone() {
        let t0 = Instant::now();
        let mut obs = Observed::default();
        let l = held_by("a", "2026-01-01T00:00:00Z");
        let seen = obs.see(&l, t0);
        assert!(!may_take(&l, "b", seen, t0 + secs(10)));
        assert!(may_take(&l, "a", seen, t0 + secs(10)));
        assert!(may_take(&l, "b", seen, t0 + secs(16)));
        // Re-reading the same record keeps the first sighting.
        assert_eq!(obs.see(&l, t0 + secs(16)), t0);
        // A renewal seen later starts the wait again.
        let renewed = held_by("a", "2026-01-01T00:00:14Z");
        let seen = obs.see(&renewed, t0 + secs(16));
        assert!(!may_take(&renewed, "b", seen, t0 + secs(30)));
        assert!(may_take(&renewed, "b", seen, t0 + secs(32)));
    }

    #[test]
    fn expiry_ignores_the_holders_clock() {
        // The holder's clock is an hour behind (or the reader's ahead): its renewTime
        // looks long past, but the record just changed, so the lease is live.
        let t0 = Instant::now();
        let mut obs = Observed::default();
        let l = held_by("a", "2025-12-31T23:00:00Z");
        let seen = obs.see(&l, t0);
        assert!(!may_take(&l, "b", seen, t0 + secs(1)));
        // A holder an hour ahead: the lease still expires 15 s after its last change.
        let ahead = held_by("a", "2026-01-01T01:00:00Z");
        let seen = obs.see(&ahead, t0 + secs(2));
        assert!(may_take(&ahead, "b", seen, t0 + secs(18)));
    }

    #[test]
    fn a_released_lease_is_free_at_once() {
        let t0 = Instant::now();
        let l = held_by("a", "2026-01-01T00:00:00Z");
        let r = released(l, MicroTime(at("2026-01-01T00:00:01Z")));
        assert_eq!(r.holder_identity, None);
        assert!(may_take(&r, "b", t0, t0));
        // client-go's release writes an empty holder: also free.
        let mut g = held_by("", "2026-01-01T00:00:00Z");
        assert!(may_take(&g, "b", t0, t0));
        g.holder_identity = None;
        assert!(may_take(&g, "b", t0, t0));
    }

    #[test]
    fn taking_counts_a_transition_renewing_does_not() {
        let t = MicroTime(at("2026-01-01T00:00:20Z"));
        let l = held_by("a", "2026-01-01T00:00:00Z");
        let renewed = taken(l.clone(), "a", 15, t.clone());
        assert_eq!(renewed.lease_transitions, Some(3));
        assert_eq!(renewed.renew_time, Some(t.clone()));
        let took = taken(l, "b", 15, t.clone());
        assert_eq!(took.lease_transitions, Some(4));
        assert_eq!(took.holder_identity.as_deref(), Some("b"));
        assert_eq!(took.acquire_time, Some(t));
    }
}
