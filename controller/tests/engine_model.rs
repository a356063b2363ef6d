//! The allocation engine against a model, over random histories.
//!
//! A small simulated cluster ([`Cluster`]) plays the controller's shell: it keeps
//! each Service's spec and `status` addresses, calls the engine as the run loop
//! does (a Service's own changes, configuration changes, namespace labels,
//! restarts) and writes back what the decisions say. Random sequences of
//! operations run against it, and after every step the invariants hold:
//!
//! - safety: an address is on two Services only when they share it legitimately
//!   (same sharing key, no port clash); every address is inside a pool of the
//!   configuration in force; an address never moves off a Service that stayed
//!   valid for it (across other Services' changes, label changes, invalid
//!   configurations and restarts);
//! - liveness: no Service waits while a free address it could take exists;
//! - determinism: a restart rebuilds the same assignment from status.
//!
//! `FERROLB_MODEL_CASES` sets the number of histories (default 256; `make soak`
//! runs many more). Failures shrink to a minimal history.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;

use ferrolb_config::addr::{from_u128, to_u128};
use ferrolb_config::annotations;
use ferrolb_config::{Config, Family, ServiceKey, load};
use ferrolb_controller::allocator::Proto;
use ferrolb_controller::engine::{Decision, Engine, FailReason, FamilyPolicy, ServiceView};
use proptest::prelude::*;

const NAMESPACES: [&str; 2] = ["ns0", "ns1"];
const SERVICES: usize = 6;
const POOLS: usize = 3;

/// Address ranges a pool may have: one family or both, small enough to run out.
const RANGES: [&[&str]; 6] = [
    &["198.51.100.0-198.51.100.1"],
    &["198.51.100.0-198.51.100.3"],
    &["203.0.113.0-203.0.113.1"],
    &["2001:db8::-2001:db8::1"],
    &["203.0.113.4-203.0.113.5", "2001:db8::10-2001:db8::11"],
    &["198.51.100.8-198.51.100.9", "2001:db8::20-2001:db8::20"],
];

/// Addresses a Service may request (some inside pools, one outside all).
const REQUESTABLE: [&str; 5] = [
    "198.51.100.1",
    "198.51.100.3",
    "203.0.113.4",
    "2001:db8::1",
    "192.0.2.77",
];

#[derive(Clone, Debug, PartialEq, Eq)]
struct PoolSpec {
    ranges: usize,
    auto_assign: bool,
    /// `serviceAllocation.namespaceSelectors: team=a`.
    team_a_only: bool,
}

#[derive(Clone, Debug, PartialEq, Eq)]
struct SvcSpec {
    load_balancer: bool,
    other_class: bool,
    families: (Vec<Family>, FamilyPolicy),
    request_ip: Option<usize>,
    request_pool: Option<usize>,
    share: bool,
    port: u16,
    bad_annotation: bool,
}

#[derive(Clone, Debug)]
enum Op {
    Create(usize, SvcSpec),
    Update(usize, SvcSpec),
    Delete(usize),
    /// A valid configuration with these pools (index -> spec; `None`: absent).
    Config([Option<PoolSpec>; POOLS]),
    /// An invalid configuration: the last good one stays in force.
    InvalidConfig,
    NamespaceLabel(usize, bool),
    Restart,
}

fn pool_spec() -> impl Strategy<Value = PoolSpec> {
    (
        0..RANGES.len(),
        prop::bool::weighted(0.85),
        prop::bool::weighted(0.2),
    )
        .prop_map(|(ranges, auto_assign, team_a_only)| PoolSpec {
            ranges,
            auto_assign,
            team_a_only,
        })
}

fn svc_spec() -> impl Strategy<Value = SvcSpec> {
    let families = prop_oneof![
        4 => Just((vec![Family::V4], FamilyPolicy::SingleStack)),
        2 => Just((vec![Family::V6], FamilyPolicy::SingleStack)),
        1 => Just((vec![Family::V4, Family::V6], FamilyPolicy::PreferDualStack)),
        1 => Just((vec![Family::V4, Family::V6], FamilyPolicy::RequireDualStack)),
    ];
    (
        prop::bool::weighted(0.9),
        prop::bool::weighted(0.05),
        families,
        prop::option::weighted(0.2, 0..REQUESTABLE.len()),
        prop::option::weighted(0.15, 0..POOLS + 1),
        prop::bool::weighted(0.2),
        prop::sample::select(vec![80u16, 81]),
        prop::bool::weighted(0.05),
    )
        .prop_map(
            |(load_balancer, other_class, families, request_ip, request_pool, share, port, bad)| {
                SvcSpec {
                    load_balancer,
                    other_class,
                    families,
                    request_ip,
                    request_pool,
                    share,
                    port,
                    bad_annotation: bad,
                }
            },
        )
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        6 => (0..SERVICES, svc_spec()).prop_map(|(i, s)| Op::Create(i, s)),
        3 => (0..SERVICES, svc_spec()).prop_map(|(i, s)| Op::Update(i, s)),
        4 => (0..SERVICES).prop_map(Op::Delete),
        2 => prop::array::uniform3(prop::option::weighted(0.8, pool_spec())).prop_map(Op::Config),
        1 => Just(Op::InvalidConfig),
        1 => (0..NAMESPACES.len(), any::<bool>()).prop_map(|(n, a)| Op::NamespaceLabel(n, a)),
        1 => Just(Op::Restart),
    ]
}

fn pool_name(i: usize) -> String {
    format!("p{i}")
}

fn build_config(pools: &[Option<PoolSpec>; POOLS]) -> Option<Config> {
    let mut yaml = String::new();
    for (i, p) in pools.iter().enumerate() {
        let Some(p) = p else { continue };
        let addrs: Vec<String> = RANGES[p.ranges]
            .iter()
            .map(|r| format!("\"{r}\""))
            .collect();
        yaml.push_str(&format!(
            "---\napiVersion: metallb.io/v1beta1\nkind: IPAddressPool\nmetadata: {{name: {}}}\nspec:\n  addresses: [{}]\n  autoAssign: {}\n",
            pool_name(i),
            addrs.join(", "),
            p.auto_assign
        ));
        if p.team_a_only {
            yaml.push_str(
                "  serviceAllocation:\n    namespaceSelectors:\n    - matchLabels: {team: a}\n",
            );
        }
    }
    let loaded = load::from_yaml(&yaml).expect("the model's YAML parses");
    assert!(loaded.errors.is_empty(), "{:?}", loaded.errors);
    // Pools of one configuration may overlap: such a configuration is invalid
    // and never reaches the engine, as in the controller.
    Config::build(&loaded.sources).ok()
}

#[derive(Clone, Debug)]
struct Svc {
    spec: SvcSpec,
    created: u64,
    status: Vec<IpAddr>,
}

/// The controller's shell, simulated: Services with their status, namespace
/// labels, the configuration in force, and the engine.
struct Cluster {
    engine: Engine,
    services: BTreeMap<usize, Svc>,
    team_a: [bool; 2],
    /// The last valid configuration (what a running controller keeps).
    last_good: Option<Config>,
    /// Whether the configuration objects as they are now are valid (what a
    /// restarted controller finds).
    stores_valid: bool,
    /// Services changed while no configuration was in force: the change is made
    /// when one comes (and may move them then).
    changed_without_config: BTreeSet<usize>,
    clock: u64,
}

fn key(i: usize) -> ServiceKey {
    ServiceKey::new(NAMESPACES[i % 2], format!("s{i}"))
}

impl Cluster {
    fn new() -> Cluster {
        Cluster {
            engine: Engine::new(None),
            services: BTreeMap::new(),
            team_a: [false; 2],
            last_good: None,
            stores_valid: true,
            changed_without_config: BTreeSet::new(),
            clock: 0,
        }
    }

    fn view(&self, i: usize) -> ServiceView {
        let s = &self.services[&i];
        let mut annotations = BTreeMap::new();
        if let Some(ip) = s.spec.request_ip {
            annotations.insert(
                annotations::LOAD_BALANCER_IPS.to_owned(),
                REQUESTABLE[ip].to_owned(),
            );
        }
        if let Some(p) = s.spec.request_pool {
            annotations.insert(annotations::ADDRESS_POOL.to_owned(), pool_name(p));
        }
        if s.spec.share {
            annotations.insert(annotations::ALLOW_SHARED_IP.to_owned(), "k".to_owned());
        }
        if s.spec.bad_annotation {
            annotations.insert(
                annotations::LOAD_BALANCER_IPS.to_owned(),
                "not-an-ip".into(),
            );
        }
        ServiceView {
            key: key(i),
            is_load_balancer: s.spec.load_balancer,
            load_balancer_class: s.spec.other_class.then(|| "other".to_owned()),
            annotations,
            ip_families: s.spec.families.0.clone(),
            family_policy: s.spec.families.1,
            ports: [(Proto::Tcp, s.spec.port)].into(),
            status_ips: s.status.clone(),
            created: format!("{:08}", s.created),
            ..Default::default()
        }
    }

    fn index_of(k: &ServiceKey) -> usize {
        k.name[1..].parse().expect("model keys are sN")
    }

    /// Syncs one Service and writes back what the decision says, as the run
    /// loop does.
    fn sync(&mut self, i: usize) {
        if !self.services.contains_key(&i) {
            return;
        }
        let decision = self.engine.sync(&self.view(i));
        if std::env::var_os("FERROLB_MODEL_DEBUG").is_some() {
            eprintln!("sync s{i} {:?} -> {decision:?}", self.view(i));
        }
        let status = &mut self.services.get_mut(&i).expect("present").status;
        match decision {
            // Another class's controller manages it now; the model's stand-in for
            // that controller gives it no address.
            Decision::Ignore => status.clear(),
            Decision::Clear { .. } => status.clear(),
            Decision::Assign { ips, .. } => *status = ips,
            Decision::Fail { reason, kept, .. } => {
                if reason != FailReason::NoConfig {
                    *status = kept;
                }
            }
        }
    }

    fn sync_all(&mut self) {
        let keys: Vec<usize> = self.services.keys().copied().collect();
        for i in keys {
            self.sync(i);
        }
    }

    /// Whatever the engine asks to retry after a change, as the run loop does.
    fn retry(&mut self) {
        for _ in 0..SERVICES * 4 {
            let keys = self.engine.take_retries();
            if keys.is_empty() {
                return;
            }
            for k in keys {
                self.sync(Self::index_of(&k));
            }
        }
        panic!("the engine kept asking for retries");
    }

    fn set_namespace(&mut self, n: usize) {
        let labels = if self.team_a[n] {
            BTreeMap::from([("team".to_owned(), "a".to_owned())])
        } else {
            BTreeMap::new()
        };
        self.engine.set_namespace_labels(NAMESPACES[n], labels);
    }

    fn apply(&mut self, op: &Op) {
        match op {
            Op::Create(i, spec) => {
                if self.services.contains_key(i) {
                    return;
                }
                self.clock += 1;
                let svc = Svc {
                    spec: spec.clone(),
                    created: self.clock,
                    status: Vec::new(),
                };
                self.services.insert(*i, svc);
                self.sync(*i);
            }
            Op::Update(i, spec) => {
                let Some(s) = self.services.get_mut(i) else {
                    return;
                };
                s.spec = spec.clone();
                if self.engine.config().is_none() {
                    self.changed_without_config.insert(*i);
                }
                self.sync(*i);
            }
            Op::Delete(i) => {
                if self.services.remove(i).is_some() {
                    self.engine.remove(&key(*i));
                }
            }
            Op::Config(pools) => match build_config(pools) {
                Some(cfg) => {
                    self.stores_valid = true;
                    self.last_good = Some(cfg.clone());
                    self.engine.set_config(cfg);
                    self.sync_all();
                }
                None => self.stores_valid = false,
            },
            Op::InvalidConfig => self.stores_valid = false,
            Op::NamespaceLabel(n, team_a) => {
                self.team_a[*n] = *team_a;
                self.set_namespace(*n);
                let keys: Vec<usize> = self
                    .services
                    .iter()
                    .filter(|(i, s)| *i % 2 == *n && s.status.is_empty())
                    .map(|(i, _)| *i)
                    .collect();
                for i in keys {
                    self.sync(i);
                }
            }
            Op::Restart => {
                self.engine = Engine::new(None);
                for n in 0..NAMESPACES.len() {
                    self.set_namespace(n);
                }
                if self.stores_valid
                    && let Some(cfg) = self.last_good.clone()
                {
                    self.engine.set_config(cfg);
                }
                let keys: Vec<usize> = self.services.keys().copied().collect();
                let views: Vec<ServiceView> = keys.iter().map(|i| self.view(*i)).collect();
                self.engine.restore(&views);
                self.sync_all();
            }
        }
        self.retry();
    }

    fn config(&self) -> Option<&Config> {
        self.engine.config()
    }
}

/// The Service `i` touched by `op`, if any.
fn touched(op: &Op) -> Option<usize> {
    match op {
        Op::Create(i, _) | Op::Update(i, _) | Op::Delete(i) => Some(*i),
        _ => None,
    }
}

/// Whether the addresses a Service holds are what its spec asks for. One that
/// kept its addresses after a change it could not get (other families, a
/// requested address) may move once the change can be met.
fn satisfied(s: &SvcSpec, held: &[IpAddr], cfg: Option<&Config>) -> bool {
    let (fams, policy) = &s.families;
    let have: BTreeSet<Family> = held.iter().map(Family::of).collect();
    let families_ok = match policy {
        FamilyPolicy::SingleStack => have.iter().all(|f| *f == fams[0]),
        FamilyPolicy::PreferDualStack => have.iter().all(|f| fams.contains(f)),
        FamilyPolicy::RequireDualStack => have.len() == 2,
    };
    let request_ok = s
        .request_ip
        .is_none_or(|r| held == [REQUESTABLE[r].parse::<IpAddr>().expect("valid")]);
    let pool_ok = s.request_pool.is_none_or(|p| {
        held.iter().all(|ip| {
            cfg.and_then(|c| c.pool_of(*ip))
                .is_some_and(|q| q.name == pool_name(p))
        })
    });
    families_ok && request_ok && pool_ok
}

fn shares_legitimately(a: &SvcSpec, b: &SvcSpec) -> bool {
    a.share && b.share && a.port != b.port
}

/// Families `s` would take from `pool` and whether the pool can serve it at all.
fn wanted(s: &SvcSpec, pool_families: &BTreeSet<Family>) -> Option<BTreeSet<Family>> {
    let (fams, policy) = &s.families;
    let fams: Vec<Family> = match policy {
        FamilyPolicy::SingleStack => fams.iter().take(1).copied().collect(),
        _ => fams.clone(),
    };
    let want: BTreeSet<Family> = fams
        .iter()
        .filter(|f| pool_families.contains(f))
        .copied()
        .collect();
    let required: BTreeSet<Family> = match policy {
        FamilyPolicy::RequireDualStack => fams.iter().copied().collect(),
        FamilyPolicy::PreferDualStack => BTreeSet::new(),
        FamilyPolicy::SingleStack => fams.iter().take(1).copied().collect(),
    };
    (!want.is_empty() && required.is_subset(&want)).then_some(want)
}

fn check(
    before: &BTreeMap<usize, Svc>,
    changed: &BTreeSet<usize>,
    cluster: &Cluster,
    op: &Op,
) -> Result<(), String> {
    // Services of another class are another controller's: their status is not ours.
    let held: BTreeMap<IpAddr, Vec<usize>> = cluster
        .services
        .iter()
        .filter(|(_, s)| !s.spec.other_class)
        .fold(BTreeMap::new(), |mut m, (i, s)| {
            for ip in &s.status {
                m.entry(*ip).or_default().push(*i);
            }
            m
        });
    // Safety: no address on two Services unless they share it. Without a valid
    // configuration the controller writes nothing: a Service that changed its
    // sharing meanwhile is reconciled when a configuration comes.
    for (ip, holders) in held.iter().filter(|_| cluster.config().is_some()) {
        for (a, b) in holders
            .iter()
            .flat_map(|a| holders.iter().map(move |b| (a, b)))
            .filter(|(a, b)| a < b)
        {
            let (sa, sb) = (&cluster.services[a].spec, &cluster.services[b].spec);
            // Annotations that cannot be read say nothing about sharing: such a
            // Service keeps what it had until they are fixed.
            if sa.bad_annotation || sb.bad_annotation {
                continue;
            }
            if !shares_legitimately(sa, sb) {
                return Err(format!("{ip} is on s{a} and s{b}, which may not share it"));
            }
        }
    }
    // Safety: every address inside a pool of the configuration in force.
    if let Some(cfg) = cluster.config() {
        for ip in held.keys() {
            if cfg.pool_of(*ip).is_none() {
                return Err(format!("{ip} is in no pool"));
            }
        }
    }
    // Stability: Services this step did not touch keep their addresses, unless a
    // new configuration took the address out of every pool.
    for (i, old) in before {
        if touched(op) == Some(*i) || changed.contains(i) {
            continue;
        }
        let Some(now) = cluster.services.get(i) else {
            continue;
        };
        if now.spec.other_class {
            continue;
        }
        for ip in &old.status {
            if now.status.contains(ip) {
                continue;
            }
            let left_pools = matches!(op, Op::Config(_))
                && cluster.config().is_none_or(|c| c.pool_of(*ip).is_none());
            let asks_elsewhere = matches!(op, Op::Config(_))
                && (old.spec.request_pool.is_some() || old.spec.request_ip.is_some());
            if !left_pools && !asks_elsewhere && satisfied(&old.spec, &old.status, cluster.config())
            {
                return Err(format!(
                    "s{i} lost {ip} ({:?} -> {:?}) though it stayed valid for it",
                    old.status, now.status
                ));
            }
        }
    }
    // Determinism: a restart rebuilds the same assignment.
    if matches!(op, Op::Restart) {
        for (i, old) in before {
            if cluster.services[i].status != old.status {
                return Err(format!(
                    "restart moved s{i}: {:?} -> {:?}",
                    old.status, cluster.services[i].status
                ));
            }
        }
    }
    // Liveness: no Service waits while a free address it could take exists.
    let Some(cfg) = cluster.config() else {
        return Ok(());
    };
    let free = |ip: IpAddr| !held.contains_key(&ip);
    let pool_has_free = |pool: &ferrolb_config::model::Pool, f: Family| {
        pool.ranges
            .iter()
            .filter(|r| r.family() == f)
            .flat_map(|r| {
                let (start, end) = (to_u128(r.start()), to_u128(r.end()));
                (start..=end).map(move |n| from_u128(f, n))
            })
            .any(free)
    };
    for (i, s) in &cluster.services {
        let spec = &s.spec;
        if !spec.load_balancer || spec.other_class || spec.bad_annotation {
            continue;
        }
        // PreferDualStack gains a family as soon as its pool has one free.
        if let Some(pool) = s.status.first().and_then(|ip| cfg.pool_of(*ip))
            && spec.families.1 == FamilyPolicy::PreferDualStack
            && spec.request_ip.is_none()
            && satisfied(spec, &s.status, Some(cfg))
        {
            let have: BTreeSet<Family> = s.status.iter().map(Family::of).collect();
            for f in &spec.families.0 {
                if !have.contains(f) && pool.families().contains(f) && pool_has_free(pool, *f) {
                    return Err(format!(
                        "s{i} lacks {f:?} while its pool {} has one free",
                        pool.name
                    ));
                }
            }
        }
        if !s.status.is_empty() {
            continue;
        }
        if let Some(r) = spec.request_ip {
            let ip: IpAddr = REQUESTABLE[r].parse().expect("valid");
            let family_ok = spec.families.1 == FamilyPolicy::PreferDualStack
                && spec.families.0.contains(&Family::of(&ip))
                || spec.families.1 == FamilyPolicy::SingleStack
                    && spec.families.0[0] == Family::of(&ip);
            let pool = cfg.pool_of(ip);
            let pool_ok = spec
                .request_pool
                .is_none_or(|p| pool.is_some_and(|q| q.name == pool_name(p)));
            if family_ok && pool.is_some() && pool_ok && free(ip) {
                return Err(format!("s{i} waits for {ip}, which is free"));
            }
            continue;
        }
        let candidates: Vec<&ferrolb_config::model::Pool> = match spec.request_pool {
            Some(p) => cfg.pools.get(&pool_name(p)).into_iter().collect(),
            None => cfg
                .pools
                .values()
                .filter(|p| p.auto_assign)
                .filter(|p| p.allocation.as_ref().is_none_or(|_| cluster.team_a[i % 2]))
                .collect(),
        };
        for pool in candidates {
            let Some(want) = wanted(spec, &pool.families()) else {
                continue;
            };
            if want.iter().all(|f| pool_has_free(pool, *f)) {
                return Err(format!(
                    "s{i} waits while pool {} has free {want:?} addresses",
                    pool.name
                ));
            }
        }
    }
    Ok(())
}

fn run(ops: &[Op]) -> Result<(), TestCaseError> {
    let mut cluster = Cluster::new();
    for (step, op) in ops.iter().enumerate() {
        let before = cluster.services.clone();
        let had_config = cluster.config().is_some();
        let changed = cluster.changed_without_config.clone();
        cluster.apply(op);
        if !had_config && cluster.config().is_some() {
            cluster.changed_without_config.clear();
        }
        check(&before, &changed, &cluster, op)
            .map_err(|e| TestCaseError::fail(format!("after step {step} ({op:?}): {e}")))?;
    }
    Ok(())
}

fn cases() -> u32 {
    std::env::var("FERROLB_MODEL_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(256)
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: cases(),
        max_shrink_iters: 20_000,
        ..ProptestConfig::default()
    })]

    #[test]
    fn engine_keeps_its_invariants(ops in prop::collection::vec(op(), 1..60)) {
        run(&ops)?;
    }
}
