//! The controller's decisions, with no Kubernetes client: which addresses a Service
//! should have, given the configuration and everything already allocated.
//!
//! The Kubernetes layer turns Services into [`ServiceView`]s, calls [`Engine::sync`] and
//! writes back what the returned [`Decision`] says. Everything here is deterministic and
//! tested with plain `#[test]`s.
//!
//! Stability rules (ferrolb keeps addresses where MetalLB would sometimes move them):
//! - an address stays with its Service as long as it is inside some pool and the Service
//!   does not ask for something else (another address, another pool, other families);
//! - a request that cannot be met (bad annotation, address in use, pool exhausted) leaves
//!   the current addresses in place and reports why;
//! - after a restart, [`Engine::restore`] re-registers every address found in Service
//!   status, oldest Service first, before anything new is allocated.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;
use std::sync::Arc;

use ferrolb_config::annotations::{self, ServiceAnnotations};
use ferrolb_config::model::Pool;
use ferrolb_config::{Config, Family};

use crate::allocator::{AllocError, Allocator, Proto, Sharing};
use waiting::{Considered, Waiting};

pub use ferrolb_config::ServiceKey;

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum FamilyPolicy {
    #[default]
    SingleStack,
    PreferDualStack,
    RequireDualStack,
}

/// What the engine needs to know about a Service.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ServiceView {
    pub key: ServiceKey,
    pub is_load_balancer: bool,
    pub load_balancer_class: Option<String>,
    pub labels: BTreeMap<String, String>,
    pub annotations: BTreeMap<String, String>,
    /// The deprecated `spec.loadBalancerIP`.
    pub spec_load_balancer_ip: Option<String>,
    /// `spec.ipFamilies` in order (primary first); empty means IPv4.
    pub ip_families: Vec<Family>,
    pub family_policy: FamilyPolicy,
    pub ports: BTreeSet<(Proto, u16)>,
    pub external_traffic_local: bool,
    pub selector: BTreeMap<String, String>,
    /// Addresses currently in `status.loadBalancer.ingress`.
    pub status_ips: Vec<IpAddr>,
    /// Creation time as sortable text (RFC 3339), for restore order.
    pub created: String,
}

/// What to do with a Service.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Decision {
    /// Not ours (other loadBalancerClass): leave it alone.
    Ignore,
    /// Not (or no longer) a LoadBalancer Service: addresses released; clear the status
    /// if it still shows them.
    Clear { released: Vec<IpAddr> },
    /// The Service should show exactly these addresses, from this pool.
    Assign {
        ips: Vec<IpAddr>,
        pool: String,
        /// Whether the addresses differ from what the Service had before this call.
        changed: bool,
        warnings: Vec<String>,
    },
    /// The request cannot be met. `kept` are the addresses it keeps (possibly none).
    Fail {
        reason: FailReason,
        message: String,
        kept: Vec<IpAddr>,
        pool: Option<String>,
    },
}

/// Why an allocation failed, for events and metrics.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum FailReason {
    BadAnnotation,
    BadRequest,
    UnknownPool,
    InUse,
    Exhausted,
    NoPool,
    NoConfig,
}

impl FailReason {
    pub fn as_str(self) -> &'static str {
        match self {
            FailReason::BadAnnotation => "bad-annotation",
            FailReason::BadRequest => "bad-request",
            FailReason::UnknownPool => "unknown-pool",
            FailReason::InUse => "in-use",
            FailReason::Exhausted => "exhausted",
            FailReason::NoPool => "no-pool",
            FailReason::NoConfig => "no-config",
        }
    }
}

/// What a Service asks for, parsed and checked.
#[derive(Debug)]
struct Request {
    ips: Vec<IpAddr>,
    pool: Option<String>,
    sharing: Sharing,
    warnings: Vec<String>,
}

#[derive(Debug)]
pub struct Engine {
    /// Shared, so that each sync holds it while updating the allocator without
    /// copying the whole configuration.
    config: Option<Arc<Config>>,
    alloc: Allocator<ServiceKey>,
    lb_class: Option<String>,
    namespaces: BTreeMap<String, BTreeMap<String, String>>,
    /// Services to restore from their status once a configuration is in force (a
    /// restart with no valid configuration has no pools to restore into).
    pending_restore: Vec<ServiceView>,
    /// Those of them that changed while waiting for a configuration: they are
    /// restored after the others, so a change cannot take an address from a Service
    /// that kept its state.
    changed_while_pending: BTreeSet<ServiceKey>,
    /// Services that could not be served, to try again when capacity appears.
    waiting: Waiting,
}

impl Engine {
    /// An engine for Services of `lb_class` (none: Services without a class).
    pub fn new(lb_class: Option<String>) -> Self {
        Self {
            config: None,
            alloc: Allocator::new(vec![]).expect("an empty configuration is valid"),
            lb_class,
            namespaces: BTreeMap::new(),
            pending_restore: Vec::new(),
            changed_while_pending: BTreeSet::new(),
            waiting: Waiting::default(),
        }
    }

    pub fn config(&self) -> Option<&Config> {
        self.config.as_deref()
    }

    pub fn allocator(&self) -> &Allocator<ServiceKey> {
        &self.alloc
    }

    /// Installs a validated configuration. Addresses still inside a pool stay; the
    /// others are released and returned per Service, to be cleared and reallocated.
    /// The first configuration after a restart without one restores what Services
    /// showed in their status then (see [`Engine::restore`]).
    pub fn set_config(&mut self, cfg: Config) -> BTreeMap<ServiceKey, Vec<IpAddr>> {
        let evicted = self
            .alloc
            .set_pools(cfg.pools.values().cloned().collect())
            .expect("Config::build already refused overlapping or duplicate pools");
        self.config = Some(Arc::new(cfg));
        self.waiting.config_changed();
        let pending = std::mem::take(&mut self.pending_restore);
        let changed = std::mem::take(&mut self.changed_while_pending);
        let (later, first): (Vec<ServiceView>, Vec<ServiceView>) =
            pending.into_iter().partition(|s| changed.contains(&s.key));
        self.restore(&first);
        self.restore(&later);
        evicted
    }

    pub fn set_namespace_labels(&mut self, ns: &str, labels: BTreeMap<String, String>) {
        if self.namespaces.get(ns) != Some(&labels) {
            self.waiting.namespace_changed(ns);
        }
        self.namespaces.insert(ns.to_string(), labels);
    }

    pub fn remove_namespace(&mut self, ns: &str) {
        self.namespaces.remove(ns);
    }

    /// Whether this controller handles the Service at all.
    pub fn is_ours(&self, svc: &ServiceView) -> bool {
        svc.load_balancer_class == self.lb_class
    }

    /// Re-registers the addresses that Services already show, before any allocation.
    /// Oldest Services first, so that if two claim the same address the older keeps it.
    /// Returns the Services whose status could not be restored, with the reason.
    /// Without a configuration there are no pools to restore into: the Services are
    /// kept and restored when the first configuration is set, so that a restart while
    /// the configuration is invalid moves nothing.
    pub fn restore(&mut self, svcs: &[ServiceView]) -> Vec<(ServiceKey, String)> {
        if self.config.is_none() {
            let keep: Vec<ServiceView> = svcs
                .iter()
                .filter(|s| s.is_load_balancer && self.is_ours(s) && !s.status_ips.is_empty())
                .cloned()
                .collect();
            self.pending_restore.extend(keep);
            return Vec::new();
        }
        let mut order: Vec<&ServiceView> = svcs
            .iter()
            .filter(|s| s.is_load_balancer && self.is_ours(s) && !s.status_ips.is_empty())
            .collect();
        order.sort_by(|a, b| a.created.cmp(&b.created).then(a.key.cmp(&b.key)));
        let mut failed = Vec::new();
        for s in order {
            let readable = annotations::parse(&s.annotations).ok();
            for ip in &s.status_ips {
                let sharing = match &readable {
                    Some(ann) => sharing(s, ann),
                    None => self.sharing_as_held(*ip, s),
                };
                if let Err(e) = self.alloc.assign(None, *ip, s.key.clone(), sharing) {
                    failed.push((s.key.clone(), format!("cannot keep {ip}: {e}")));
                }
            }
        }
        failed
    }

    /// How a Service whose annotations cannot be read shares `ip` at restore: under
    /// the key of its other holders (an annotation it broke changes nothing, and
    /// before the restart it shared the address with them), or not at all when it
    /// holds it alone. Its ports and traffic policy count as they are now.
    fn sharing_as_held(&self, ip: IpAddr, s: &ServiceView) -> Sharing {
        let key = self.alloc.holders(ip).find_map(|(_, sh)| sh.key.clone());
        sharing_under(s, key.as_deref())
    }

    /// Releases everything a deleted Service held.
    pub fn remove(&mut self, key: &ServiceKey) -> Vec<IpAddr> {
        self.pending_restore.retain(|s| s.key != *key);
        self.changed_while_pending.remove(key);
        self.waiting.done(key);
        let released = self.alloc.release(key);
        for ip in &released {
            if let Some(pool) = self.alloc.pool_of(*ip) {
                self.waiting.pool_freed(pool);
            }
        }
        released
    }

    /// The waiting Services (their last decision was a failure) that a change since
    /// then may serve, oldest first: sync each again. Empty when nothing changed.
    pub fn take_retries(&self) -> Vec<ServiceKey> {
        self.waiting.take_due()
    }

    /// Whether `key`'s last decision was a failure.
    pub fn is_waiting(&self, key: &ServiceKey) -> bool {
        self.waiting.contains(key)
    }

    /// How many Services wait, by the reason of their last failure.
    pub fn waiting_by_reason(&self) -> BTreeMap<FailReason, usize> {
        self.waiting.count_by_reason()
    }

    /// The addresses `key` holds, each with how it shares them.
    fn holdings(&self, key: &ServiceKey) -> Vec<(IpAddr, Sharing)> {
        self.alloc
            .addresses_of(key)
            .into_iter()
            .map(|ip| {
                let sharing = self
                    .alloc
                    .holders(ip)
                    .find(|(k, _)| *k == key)
                    .map(|(_, s)| s.clone())
                    .unwrap_or_default();
                (ip, sharing)
            })
            .collect()
    }

    /// Whether `svc`, served with `ips` from `pool`, lacks a family the pool has and
    /// it prefers (PreferDualStack without requested addresses).
    fn lacks_a_family(&self, svc: &ServiceView, ips: &[IpAddr], pool: &str) -> bool {
        if svc.family_policy != FamilyPolicy::PreferDualStack {
            return false;
        }
        let requested = request(svc).is_ok_and(|r| !r.ips.is_empty());
        let cfg_pool = self.config.as_deref().and_then(|c| c.pools.get(pool));
        let have: BTreeSet<Family> = ips.iter().map(Family::of).collect();
        !requested
            && wanted_families(svc, cfg_pool)
                .iter()
                .any(|f| !have.contains(f))
    }

    /// Which changes may serve `svc` after a failure.
    fn considered(&self, svc: &ServiceView) -> Considered {
        let (Some(cfg), Ok(req)) = (self.config.as_deref(), request(svc)) else {
            return Considered::ConfigOnly;
        };
        let pools: BTreeSet<String> = if !req.ips.is_empty() {
            req.ips
                .iter()
                .filter_map(|ip| self.alloc.pool_of(*ip).map(str::to_owned))
                .collect()
        } else if let Some(p) = &req.pool {
            [p.clone()].into()
        } else {
            self.candidate_pools(svc, cfg)
                .into_iter()
                .map(|p| p.name.clone())
                .collect()
        };
        Considered::Pools(pools)
    }

    /// Decides the addresses of one Service and updates the allocator accordingly. A
    /// failure puts the Service on the waiting list; addresses it releases (or shares
    /// differently) make the Services waiting on their pool due for a retry (see
    /// [`Engine::take_retries`]).
    pub fn sync(&mut self, svc: &ServiceView) -> Decision {
        let before = self.holdings(&svc.key);
        let decision = self.decide(svc);
        let after = self.holdings(&svc.key);
        for (ip, sharing) in &before {
            let kept_same = after.iter().any(|(i, s)| i == ip && s == sharing);
            if !kept_same && let Some(pool) = self.alloc.pool_of(*ip) {
                self.waiting.pool_freed(pool);
            }
        }
        match &decision {
            Decision::Fail { reason, .. } => {
                let considered = self.considered(svc);
                self.waiting.wait(
                    svc.key.clone(),
                    svc.created.clone(),
                    considered,
                    Some(*reason),
                );
            }
            Decision::Assign { ips, pool, .. } if self.lacks_a_family(svc, ips, pool) => {
                self.waiting.wait(
                    svc.key.clone(),
                    svc.created.clone(),
                    Considered::Pools([pool.clone()].into()),
                    None,
                );
            }
            _ => self.waiting.done(&svc.key),
        }
        decision
    }

    fn decide(&mut self, svc: &ServiceView) -> Decision {
        if !self.is_ours(svc) {
            // Moved to another class: its addresses are no longer ours to hold (its
            // status belongs to the other controller).
            self.alloc.release(&svc.key);
            return Decision::Ignore;
        }
        let current = self.alloc.addresses_of(&svc.key);
        if !svc.is_load_balancer {
            self.alloc.release(&svc.key);
            return Decision::Clear { released: current };
        }
        let Some(cfg) = self.config.clone() else {
            // Restored as it is when a configuration comes: the latest view counts.
            if let Some(pos) = self.pending_restore.iter().position(|p| p.key == svc.key) {
                if self.pending_restore[pos] != *svc {
                    self.changed_while_pending.insert(svc.key.clone());
                }
                self.pending_restore.remove(pos);
            }
            if !svc.status_ips.is_empty() {
                self.pending_restore.push(svc.clone());
            }
            return Decision::Fail {
                reason: FailReason::NoConfig,
                message: "no valid configuration loaded yet".into(),
                kept: current,
                pool: None,
            };
        };
        let current_pool = current
            .first()
            .and_then(|ip| self.alloc.pool_of(*ip))
            .map(str::to_string);
        let fail = |reason, message: String| Decision::Fail {
            reason,
            message,
            kept: current.clone(),
            pool: current_pool.clone(),
        };
        // What the Service holds may be shared with others only while its sharing
        // key, ports and traffic policy agree with theirs. A change of its own can end
        // that: it then gives the addresses up, and the other holders keep them.
        // Annotations that cannot be read change nothing.
        let sharing = match annotations::parse(&svc.annotations) {
            Ok(ann) => sharing(svc, &ann),
            // Annotations that cannot be read change nothing: the sharing key stays
            // what it was (ports and traffic policy are read as they are now).
            Err(_) => {
                let key = current.first().and_then(|ip| {
                    self.alloc
                        .holders(*ip)
                        .find(|(k, _)| **k == svc.key)
                        .and_then(|(_, s)| s.key.clone())
                });
                sharing_under(svc, key.as_deref())
            }
        };
        let shareable = current
            .iter()
            .all(|ip| self.alloc.can_hold(*ip, &svc.key, &sharing));
        if shareable {
            // Whatever else fails below, what it keeps is shared as it is now.
            for ip in &current {
                let _ = self
                    .alloc
                    .assign(None, *ip, svc.key.clone(), sharing.clone());
            }
        } else {
            self.alloc.release(&svc.key);
        }
        let fail = |reason, message: String| {
            if shareable {
                fail(reason, message)
            } else {
                Decision::Fail {
                    reason,
                    message,
                    kept: Vec::new(),
                    pool: None,
                }
            }
        };
        let req = match request(svc) {
            Ok(r) => r,
            Err((reason, msg)) => return fail(reason, msg),
        };
        if let Some(p) = &req.pool
            && !cfg.pools.contains_key(p)
        {
            return fail(
                FailReason::UnknownPool,
                format!("pool {p:?} does not exist"),
            );
        }

        // Keep what the Service has when it still fits the request.
        if let Some(pool) = current_pool.as_deref()
            && shareable
            && self.still_fits(svc, &req, &current, pool, &cfg)
        {
            let mut ips = current.clone();
            let want = wanted_families(svc, cfg.pools.get(pool));
            let have: BTreeSet<Family> = ips.iter().map(Family::of).collect();
            // PreferDualStack gains a family that became available (a Service that
            // requested its addresses gets exactly those).
            let gain = want
                .iter()
                .filter(|f| !have.contains(f) && req.ips.is_empty());
            for fam in gain {
                if let Ok(ip) =
                    self.alloc
                        .allocate_next(pool, *fam, svc.key.clone(), req.sharing.clone())
                {
                    ips.push(ip);
                }
            }
            // Re-register with the current sharing (ports may have changed).
            for ip in &current {
                if let Err(e) =
                    self.alloc
                        .assign(Some(pool), *ip, svc.key.clone(), req.sharing.clone())
                {
                    return fail(FailReason::InUse, e.to_string());
                }
            }
            sort_ips(&mut ips, svc);
            let changed = ips != current;
            return Decision::Assign {
                ips,
                pool: pool.to_string(),
                changed,
                warnings: req.warnings,
            };
        }

        // Otherwise allocate afresh; on failure, put the old addresses back.
        self.alloc.release(&svc.key);
        match self.allocate(svc, &req, &cfg) {
            Ok((mut ips, pool)) => {
                sort_ips(&mut ips, svc);
                let changed = ips != current;
                Decision::Assign {
                    ips,
                    pool,
                    changed,
                    warnings: req.warnings,
                }
            }
            Err((reason, message)) => {
                if shareable {
                    for ip in &current {
                        // These were just released by this Service, and their other
                        // holders accept its sharing as it is now.
                        let _ = self
                            .alloc
                            .assign(None, *ip, svc.key.clone(), req.sharing.clone());
                    }
                }
                fail(reason, message)
            }
        }
    }

    fn still_fits(
        &self,
        svc: &ServiceView,
        req: &Request,
        current: &[IpAddr],
        pool: &str,
        cfg: &Config,
    ) -> bool {
        // Every current address must still be in the same pool.
        if current
            .iter()
            .any(|ip| self.alloc.pool_of(*ip) != Some(pool))
        {
            return false;
        }
        if let Some(p) = &req.pool
            && p != pool
        {
            return false;
        }
        if !req.ips.is_empty() {
            let a: BTreeSet<_> = req.ips.iter().collect();
            let b: BTreeSet<_> = current.iter().collect();
            return a == b;
        }
        let have: BTreeSet<Family> = current.iter().map(Family::of).collect();
        let want = wanted_families(svc, cfg.pools.get(pool));
        // Every held family must still be wanted, and RequireDualStack needs both.
        have.is_subset(&want)
            && !(svc.family_policy == FamilyPolicy::RequireDualStack && have.len() < 2)
    }

    fn allocate(
        &mut self,
        svc: &ServiceView,
        req: &Request,
        cfg: &Config,
    ) -> Result<(Vec<IpAddr>, String), (FailReason, String)> {
        let key = &svc.key;
        if !req.ips.is_empty() {
            let mut got = Vec::new();
            let mut pool_name = None;
            for ip in &req.ips {
                let r =
                    self.alloc
                        .assign(req.pool.as_deref(), *ip, key.clone(), req.sharing.clone());
                if let Err(e) = r {
                    self.alloc.release(key);
                    let reason = match e {
                        AllocError::InUse { .. } => FailReason::InUse,
                        AllocError::WrongPool { .. } | AllocError::NotInAnyPool(_) => {
                            FailReason::BadRequest
                        }
                        _ => FailReason::BadRequest,
                    };
                    return Err((reason, format!("requested address {ip}: {e}")));
                }
                got.push(*ip);
                pool_name = self.alloc.pool_of(*ip).map(str::to_string);
            }
            // Two requested addresses from different pools would make the pool
            // annotation ambiguous; MetalLB refuses this too.
            let pools: BTreeSet<String> = got
                .iter()
                .filter_map(|ip| self.alloc.pool_of(*ip).map(str::to_string))
                .collect();
            if pools.len() > 1 {
                self.alloc.release(key);
                return Err((
                    FailReason::BadRequest,
                    format!("requested addresses come from different pools: {pools:?}"),
                ));
            }
            return Ok((got, pool_name.unwrap_or_default()));
        }

        let candidates: Vec<&Pool> = match &req.pool {
            Some(p) => cfg.pools.get(p).into_iter().collect(),
            None => self.candidate_pools(svc, cfg),
        };
        if candidates.is_empty() {
            return Err((
                FailReason::NoPool,
                "no pool with autoAssign enabled serves this Service".into(),
            ));
        }
        let considered: Vec<&str> = candidates.iter().map(|p| p.name.as_str()).collect();
        let considered = format!("pools considered: {}", considered.join(", "));
        let mut last_err = None;
        for pool in candidates {
            let want = wanted_families(svc, Some(pool));
            let needed = required_families(svc);
            if want.is_empty() || !needed.is_subset(&want) {
                last_err = Some((
                    FailReason::NoPool,
                    format!(
                        "pool {:?} has no {} addresses",
                        pool.name,
                        needed
                            .difference(&want)
                            .map(|f| f.to_string())
                            .collect::<Vec<_>>()
                            .join(" or ")
                    ),
                ));
                continue;
            }
            let mut got = Vec::new();
            let mut failed = None;
            for fam in &want {
                match self
                    .alloc
                    .allocate_next(&pool.name, *fam, key.clone(), req.sharing.clone())
                {
                    Ok(ip) => got.push(ip),
                    Err(e) => {
                        failed = Some(e);
                        break;
                    }
                }
            }
            match failed {
                None => return Ok((got, pool.name.clone())),
                Some(e) => {
                    self.alloc.release(key);
                    let reason = match e {
                        AllocError::Exhausted { .. } => FailReason::Exhausted,
                        _ => FailReason::NoPool,
                    };
                    last_err = Some((reason, e.to_string()));
                }
            }
        }
        let (reason, message) = last_err.expect("at least one candidate pool was tried");
        Err((reason, format!("{message} ({considered})")))
    }

    /// Pools that may serve the Service without being named, in MetalLB's order:
    /// pools whose serviceAllocation matches it (by priority, lower first; unset
    /// last), then pools without serviceAllocation; ties by name.
    fn candidate_pools<'c>(&self, svc: &ServiceView, cfg: &'c Config) -> Vec<&'c Pool> {
        let ns_labels = self.namespaces.get(&svc.key.namespace);
        let empty = BTreeMap::new();
        let ns_labels = ns_labels.unwrap_or(&empty);
        let mut v: Vec<(&'c Pool, (u8, i64))> = cfg
            .pools
            .values()
            .filter(|p| p.auto_assign)
            .filter_map(|p| match &p.allocation {
                None => Some((p, (1, 0))),
                Some(a) => {
                    let ns_ok = a.namespaces.is_empty() && a.namespace_selectors.is_empty()
                        || a.namespaces.contains(&svc.key.namespace)
                        || a.namespace_selectors.iter().any(|s| s.matches(ns_labels));
                    let svc_ok = a.service_selectors.is_empty()
                        || a.service_selectors.iter().any(|s| s.matches(&svc.labels));
                    (ns_ok && svc_ok).then(|| (p, (0, a.priority.map_or(i64::MAX, i64::from))))
                }
            })
            .collect();
        v.sort_by(|a, b| a.1.cmp(&b.1).then(a.0.name.cmp(&b.0.name)));
        v.into_iter().map(|(p, _)| p).collect()
    }
}

/// Families the Service may hold given a pool: `spec.ipFamilies` (the primary only for
/// SingleStack) intersected with the families the pool has.
fn wanted_families(svc: &ServiceView, pool: Option<&Pool>) -> BTreeSet<Family> {
    let fams = families(svc);
    let pool_fams = pool.map(Pool::families).unwrap_or_default();
    let fams: Vec<Family> = match svc.family_policy {
        FamilyPolicy::SingleStack => fams.into_iter().take(1).collect(),
        _ => fams,
    };
    fams.into_iter().filter(|f| pool_fams.contains(f)).collect()
}

/// Families a pool must have for the Service.
fn required_families(svc: &ServiceView) -> BTreeSet<Family> {
    let fams = families(svc);
    match svc.family_policy {
        FamilyPolicy::RequireDualStack => fams.into_iter().collect(),
        // PreferDualStack is content with any one of its families.
        FamilyPolicy::PreferDualStack => BTreeSet::new(),
        FamilyPolicy::SingleStack => fams.into_iter().take(1).collect(),
    }
}

fn families(svc: &ServiceView) -> Vec<Family> {
    if svc.ip_families.is_empty() {
        vec![Family::V4]
    } else {
        svc.ip_families.clone()
    }
}

/// Primary family first, as the API lists `ipFamilies`.
fn sort_ips(ips: &mut [IpAddr], svc: &ServiceView) {
    let fams = families(svc);
    ips.sort_by_key(|ip| {
        (
            fams.iter()
                .position(|f| *f == Family::of(ip))
                .unwrap_or(usize::MAX),
            *ip,
        )
    });
}

fn sharing(svc: &ServiceView, ann: &ServiceAnnotations) -> Sharing {
    sharing_under(svc, ann.allow_shared_ip.as_deref())
}

/// How `svc` shares its addresses under sharing key `key` (none: it does not).
fn sharing_under(svc: &ServiceView, key: Option<&str>) -> Sharing {
    match key {
        None => Sharing::exclusive(),
        Some(key) => {
            // Services sharing an address reach the same nodes, so their traffic
            // policies must agree; with Local, their pods must be the same set.
            let compat = if svc.external_traffic_local {
                let sel: Vec<String> = svc
                    .selector
                    .iter()
                    .map(|(k, v)| format!("{k}={v}"))
                    .collect();
                format!("Local:{}", sel.join(","))
            } else {
                "Cluster".to_string()
            };
            Sharing::shared(key, svc.ports.iter().copied(), compat)
        }
    }
}

fn request(svc: &ServiceView) -> Result<Request, (FailReason, String)> {
    let ann = annotations::parse(&svc.annotations).map_err(|errs| {
        (
            FailReason::BadAnnotation,
            errs.iter()
                .map(|e| e.to_string())
                .collect::<Vec<_>>()
                .join("; "),
        )
    })?;
    let mut warnings: Vec<String> = ann
        .deprecated
        .iter()
        .map(|k| {
            format!(
                "annotation {k} is deprecated: use metallb.io/{}",
                k.rsplit('/').next().unwrap_or(k)
            )
        })
        .collect();
    let spec_ip = svc
        .spec_load_balancer_ip
        .as_deref()
        .filter(|s| !s.is_empty());
    let ips = match (spec_ip, ann.load_balancer_ips.is_empty()) {
        (Some(_), false) => {
            return Err((
                FailReason::BadRequest,
                "spec.loadBalancerIP and the loadBalancerIPs annotation are both set: use only the annotation".into(),
            ));
        }
        (Some(s), true) => {
            warnings.push(
                "spec.loadBalancerIP is deprecated: use the metallb.io/loadBalancerIPs annotation"
                    .into(),
            );
            vec![s.parse::<IpAddr>().map_err(|_| {
                (
                    FailReason::BadRequest,
                    format!("spec.loadBalancerIP {s:?} is not an IP address"),
                )
            })?]
        }
        (None, _) => ann.load_balancer_ips.clone(),
    };
    let allowed = match svc.family_policy {
        FamilyPolicy::SingleStack => families(svc).into_iter().take(1).collect::<Vec<_>>(),
        _ => families(svc),
    };
    for ip in &ips {
        if !allowed.contains(&Family::of(ip)) {
            return Err((
                FailReason::BadRequest,
                format!(
                    "requested address {ip} is {} but the Service's ipFamilies allow {}",
                    Family::of(ip),
                    allowed
                        .iter()
                        .map(|f| f.to_string())
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            ));
        }
    }
    if svc.family_policy == FamilyPolicy::RequireDualStack && !ips.is_empty() && ips.len() < 2 {
        return Err((
            FailReason::BadRequest,
            "RequireDualStack needs one requested address per family".into(),
        ));
    }
    Ok(Request {
        sharing: sharing(svc, &ann),
        ips,
        pool: ann.address_pool,
        warnings,
    })
}

#[cfg(test)]
mod tests;
mod waiting;
