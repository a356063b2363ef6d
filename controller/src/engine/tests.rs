use super::*;
use ferrolb_config::load;

fn cfg(yaml: &str) -> Config {
    let l = load::from_yaml(yaml).unwrap();
    assert!(l.errors.is_empty(), "{:?}", l.errors);
    Config::build(&l.sources).unwrap()
}

fn pool(name: &str, addrs: &str, extra: &str) -> String {
    format!(
        "---\napiVersion: metallb.io/v1beta1\nkind: IPAddressPool\nmetadata: {{name: {name}}}\nspec:\n  addresses: {addrs}\n{extra}"
    )
}

fn svc(ns: &str, name: &str) -> ServiceView {
    ServiceView {
        key: ServiceKey::new(ns, name),
        is_load_balancer: true,
        ports: [(Proto::Tcp, 80)].into(),
        created: format!("2026-01-01T00:00:{name}"),
        ..Default::default()
    }
}

fn with_ann(mut s: ServiceView, k: &str, v: &str) -> ServiceView {
    s.annotations.insert(k.into(), v.into());
    s
}

fn ips(d: &Decision) -> Vec<String> {
    match d {
        Decision::Assign { ips, .. } => ips.iter().map(|i| i.to_string()).collect(),
        other => panic!("expected Assign, got {other:?}"),
    }
}

fn fail(d: Decision) -> (FailReason, String, Vec<IpAddr>) {
    match d {
        Decision::Fail {
            reason,
            message,
            kept,
            ..
        } => (reason, message, kept),
        other => panic!("expected Fail, got {other:?}"),
    }
}

fn engine(yaml: &str) -> Engine {
    let mut e = Engine::new(None);
    e.set_config(cfg(yaml));
    e
}

#[test]
fn lowest_address_first_and_idempotent() {
    let mut e = engine(&pool("p", "[198.51.100.10-198.51.100.12]", ""));
    let a = svc("default", "a");
    assert_eq!(ips(&e.sync(&a)), ["198.51.100.10"]);
    assert_eq!(ips(&e.sync(&svc("default", "b"))), ["198.51.100.11"]);
    match e.sync(&a) {
        Decision::Assign { changed, ips, .. } => {
            assert!(!changed);
            assert_eq!(ips[0].to_string(), "198.51.100.10");
        }
        d => panic!("{d:?}"),
    }
}

#[test]
fn exhausted_pool_fails_with_reason() {
    let mut e = engine(&pool("p", "[198.51.100.10/32]", ""));
    e.sync(&svc("default", "a"));
    let d = e.sync(&svc("default", "b"));
    let (reason, msg, kept) = fail(d);
    assert_eq!(reason, FailReason::Exhausted);
    assert!(msg.contains("no free or shareable IPv4"), "{msg}");
    assert!(kept.is_empty());
}

#[test]
fn no_config_means_no_allocation() {
    let mut e = Engine::new(None);
    assert_eq!(fail(e.sync(&svc("default", "a"))).0, FailReason::NoConfig);
}

#[test]
fn pool_annotation_and_auto_assign() {
    let yaml = pool("auto", "[198.51.100.0/30]", "")
        + &pool("manual", "[203.0.113.0/30]", "  autoAssign: false\n");
    let mut e = engine(&yaml);
    assert_eq!(ips(&e.sync(&svc("default", "a"))), ["198.51.100.0"]);
    let b = with_ann(svc("default", "b"), annotations::ADDRESS_POOL, "manual");
    assert_eq!(ips(&e.sync(&b)), ["203.0.113.0"]);
    let c = with_ann(svc("default", "c"), annotations::ADDRESS_POOL, "ghost");
    let (reason, msg, _) = fail(e.sync(&c));
    assert_eq!(reason, FailReason::UnknownPool);
    assert!(msg.contains("\"ghost\""));
    // Only the manual pool left: no automatic allocation from it.
    let mut e = engine(&pool("manual", "[203.0.113.0/30]", "  autoAssign: false\n"));
    assert_eq!(fail(e.sync(&svc("default", "d"))).0, FailReason::NoPool);
}

#[test]
fn avoid_buggy_ips_skips_dot_zero() {
    let mut e = engine(&pool("p", "[198.51.100.0/24]", "  avoidBuggyIPs: true\n"));
    assert_eq!(ips(&e.sync(&svc("default", "a"))), ["198.51.100.1"]);
    let b = with_ann(
        svc("default", "b"),
        annotations::LOAD_BALANCER_IPS,
        "198.51.100.255",
    );
    assert_eq!(fail(e.sync(&b)).0, FailReason::BadRequest);
}

#[test]
fn requested_addresses() {
    let mut e = engine(&pool("p", "[198.51.100.0/24]", ""));
    let a = with_ann(
        svc("default", "a"),
        annotations::LOAD_BALANCER_IPS,
        "198.51.100.77",
    );
    assert_eq!(ips(&e.sync(&a)), ["198.51.100.77"]);

    let mut b = svc("default", "b");
    b.spec_load_balancer_ip = Some("198.51.100.78".into());
    match e.sync(&b) {
        Decision::Assign { ips, warnings, .. } => {
            assert_eq!(ips[0].to_string(), "198.51.100.78");
            assert!(warnings[0].contains("spec.loadBalancerIP is deprecated"));
        }
        d => panic!("{d:?}"),
    }

    let mut c = with_ann(
        svc("default", "c"),
        annotations::LOAD_BALANCER_IPS,
        "198.51.100.79",
    );
    c.spec_load_balancer_ip = Some("198.51.100.79".into());
    let (reason, msg, _) = fail(e.sync(&c));
    assert_eq!(reason, FailReason::BadRequest);
    assert!(msg.contains("both set"));

    let d = with_ann(
        svc("default", "d"),
        annotations::LOAD_BALANCER_IPS,
        "203.0.113.1",
    );
    assert!(fail(e.sync(&d)).1.contains("not in any pool"));
}

#[test]
fn same_address_without_sharing_key_is_refused() {
    let mut e = engine(&pool("p", "[198.51.100.0/24]", ""));
    let a = with_ann(
        svc("default", "a"),
        annotations::LOAD_BALANCER_IPS,
        "198.51.100.5",
    );
    e.sync(&a);
    let b = with_ann(
        svc("default", "b"),
        annotations::LOAD_BALANCER_IPS,
        "198.51.100.5",
    );
    let (reason, msg, kept) = fail(e.sync(&b));
    assert_eq!(reason, FailReason::InUse);
    assert!(msg.contains("in use by default/a"), "{msg}");
    assert!(kept.is_empty());
    // a is untouched.
    assert_eq!(ips(&e.sync(&a)), ["198.51.100.5"]);
}

#[test]
fn sharing_rules() {
    let mut e = engine(&pool("p", "[198.51.100.0/24]", ""));
    let share = |name: &str, port: u16, key: &str| {
        let mut s = with_ann(svc("default", name), annotations::ALLOW_SHARED_IP, key);
        s.ports = [(Proto::Tcp, port)].into();
        s
    };
    let a = share("a", 80, "web");
    assert_eq!(ips(&e.sync(&a)), ["198.51.100.0"]);
    // Same key, other port: shares.
    assert_eq!(ips(&e.sync(&share("b", 443, "web"))), ["198.51.100.0"]);
    // Same key, same port: cannot share, gets the next address.
    assert_eq!(ips(&e.sync(&share("c", 80, "web"))), ["198.51.100.1"]);
    // Requesting the shared address with a clashing port names the port.
    let d = with_ann(
        share("d", 443, "web"),
        annotations::LOAD_BALANCER_IPS,
        "198.51.100.0",
    );
    let (reason, msg, _) = fail(e.sync(&d));
    assert_eq!(reason, FailReason::InUse);
    assert!(msg.contains("TCP/443"), "{msg}");
    // Incompatible traffic policy.
    let mut f = share("f", 8080, "web");
    f.external_traffic_local = true;
    let f = with_ann(f, annotations::LOAD_BALANCER_IPS, "198.51.100.0");
    assert!(fail(e.sync(&f)).1.contains("externalTrafficPolicy"));
}

#[test]
fn service_allocation_order_and_selectors() {
    let yaml = pool("generic", "[198.51.100.0/28]", "")
        + &pool(
            "team",
            "[198.51.100.16/28]",
            "  serviceAllocation:\n    priority: 10\n    namespaces: [team-a]\n",
        )
        + &pool(
            "team-first",
            "[198.51.100.32/28]",
            "  serviceAllocation:\n    priority: 1\n    namespaceSelectors: [{matchLabels: {tier: gold}}]\n",
        )
        + &pool(
            "db",
            "[198.51.100.48/28]",
            "  serviceAllocation:\n    serviceSelectors: [{matchLabels: {app: db}}]\n",
        );
    let mut e = engine(&yaml);
    // Default namespace: only the generic pool matches.
    assert_eq!(ips(&e.sync(&svc("default", "a"))), ["198.51.100.0"]);
    // team-a matches "team" (priority 10) before the generic pool.
    assert_eq!(ips(&e.sync(&svc("team-a", "b"))), ["198.51.100.16"]);
    // With the gold label, team-first (priority 1) wins.
    e.set_namespace_labels("team-a", [("tier".to_string(), "gold".to_string())].into());
    assert_eq!(ips(&e.sync(&svc("team-a", "c"))), ["198.51.100.32"]);
    // Service selector.
    let mut d = svc("default", "d");
    d.labels.insert("app".into(), "db".into());
    assert_eq!(ips(&e.sync(&d)), ["198.51.100.48"]);
}

#[test]
fn dual_stack_policies() {
    let yaml = pool("dual", "[198.51.100.0/30, '2001:db8:100::/126']", "")
        + &pool("v4only", "[203.0.113.0/30]", "  autoAssign: false\n");
    let mut e = engine(&yaml);
    let mut s = svc("default", "single");
    s.ip_families = vec![Family::V6, Family::V4];
    assert_eq!(ips(&e.sync(&s)), ["2001:db8:100::"]);

    let mut r = svc("default", "require");
    r.ip_families = vec![Family::V4, Family::V6];
    r.family_policy = FamilyPolicy::RequireDualStack;
    assert_eq!(ips(&e.sync(&r)), ["198.51.100.0", "2001:db8:100::1"]);

    let r2 = with_ann(r.clone(), annotations::ADDRESS_POOL, "v4only");
    let mut r2 = r2;
    r2.key = ServiceKey::new("default", "require2");
    let (reason, msg, _) = fail(e.sync(&r2));
    assert_eq!(reason, FailReason::NoPool);
    assert!(msg.contains("no IPv6"), "{msg}");

    let mut p = with_ann(
        svc("default", "prefer"),
        annotations::ADDRESS_POOL,
        "v4only",
    );
    p.ip_families = vec![Family::V4, Family::V6];
    p.family_policy = FamilyPolicy::PreferDualStack;
    assert_eq!(ips(&e.sync(&p)), ["203.0.113.0"]);

    // The pool gains IPv6: PreferDualStack gains the family, keeping its IPv4 address.
    let yaml2 = pool("dual", "[198.51.100.0/30, '2001:db8:100::/126']", "")
        + &pool(
            "v4only",
            "[203.0.113.0/30, '2001:db8:200::/126']",
            "  autoAssign: false\n",
        );
    let evicted = e.set_config(cfg(&yaml2));
    assert!(evicted.is_empty());
    match e.sync(&p) {
        Decision::Assign { ips, changed, .. } => {
            assert!(changed);
            let ips: Vec<String> = ips.iter().map(|i| i.to_string()).collect();
            assert_eq!(ips, ["203.0.113.0", "2001:db8:200::"]);
        }
        d => panic!("{d:?}"),
    }
}

#[test]
fn load_balancer_class() {
    let mut e = engine(&pool("p", "[198.51.100.0/30]", ""));
    let mut s = svc("default", "a");
    s.load_balancer_class = Some("other.example/lb".into());
    assert_eq!(e.sync(&s), Decision::Ignore);
    let mut e = Engine::new(Some("ferrolb.io/lb".into()));
    e.set_config(cfg(&pool("p", "[198.51.100.0/30]", "")));
    assert_eq!(e.sync(&svc("default", "b")), Decision::Ignore);
    let mut c = svc("default", "c");
    c.load_balancer_class = Some("ferrolb.io/lb".into());
    assert_eq!(ips(&e.sync(&c)), ["198.51.100.0"]);
}

#[test]
fn release_on_type_change_and_delete() {
    let mut e = engine(&pool("p", "[198.51.100.0/31]", ""));
    let mut a = svc("default", "a");
    e.sync(&a);
    a.is_load_balancer = false;
    match e.sync(&a) {
        Decision::Clear { released } => assert_eq!(released.len(), 1),
        d => panic!("{d:?}"),
    }
    let b = svc("default", "b");
    assert_eq!(ips(&e.sync(&b)), ["198.51.100.0"]);
    assert_eq!(e.remove(&b.key).len(), 1);
    assert_eq!(ips(&e.sync(&svc("default", "c"))), ["198.51.100.0"]);
}

#[test]
fn restore_before_allocating_and_oldest_wins() {
    let mut e = engine(&pool("p", "[198.51.100.0/29]", ""));
    let mut old = svc("default", "old");
    old.status_ips = vec!["198.51.100.3".parse().unwrap()];
    old.created = "2026-01-01T00:00:00Z".into();
    let mut young = svc("default", "young");
    young.status_ips = vec!["198.51.100.3".parse().unwrap()];
    young.created = "2026-06-01T00:00:00Z".into();
    let failed = e.restore(&[young.clone(), old.clone()]);
    assert_eq!(failed.len(), 1);
    assert_eq!(failed[0].0, young.key);
    // A new Service does not get the restored address.
    assert_eq!(ips(&e.sync(&svc("default", "new"))), ["198.51.100.0"]);
    match e.sync(&old) {
        Decision::Assign { ips, changed, .. } => {
            assert_eq!(ips[0].to_string(), "198.51.100.3");
            assert!(!changed);
        }
        d => panic!("{d:?}"),
    }
    // The loser is reallocated.
    assert_eq!(ips(&e.sync(&young)), ["198.51.100.1"]);
}

#[test]
fn config_change_keeps_addresses_inside_pools() {
    let mut e = engine(&(pool("a", "[198.51.100.0/30]", "") + &pool("b", "[203.0.113.0/30]", "")));
    let s1 = with_ann(svc("default", "s1"), annotations::ADDRESS_POOL, "a");
    let s2 = with_ann(svc("default", "s2"), annotations::ADDRESS_POOL, "b");
    let s3 = svc("default", "s3");
    e.sync(&s1);
    e.sync(&s2);
    let before3 = ips(&e.sync(&s3));
    // Pool b removed; pool a grows.
    let evicted = e.set_config(cfg(&pool("a", "[198.51.100.0/29]", "")));
    assert_eq!(evicted.keys().collect::<Vec<_>>(), [&s2.key]);
    assert_eq!(ips(&e.sync(&s3)), before3);
    assert_eq!(ips(&e.sync(&s1)), ["198.51.100.0"]);
    // s2 asks for a pool that is gone: it fails and keeps nothing.
    assert_eq!(fail(e.sync(&s2)).0, FailReason::UnknownPool);
}

#[test]
fn bad_update_keeps_current_addresses() {
    let mut e = engine(&pool("p", "[198.51.100.0/30]", ""));
    let a = svc("default", "a");
    assert_eq!(ips(&e.sync(&a)), ["198.51.100.0"]);
    // Malformed annotation: nothing moves.
    let bad = with_ann(a.clone(), annotations::LOAD_BALANCER_IPS, "not-an-ip");
    let (reason, _, kept) = fail(e.sync(&bad));
    assert_eq!(reason, FailReason::BadAnnotation);
    assert_eq!(kept, ["198.51.100.0".parse::<IpAddr>().unwrap()]);
    // Request for an address in use: nothing moves either.
    let b = with_ann(
        svc("default", "b"),
        annotations::LOAD_BALANCER_IPS,
        "198.51.100.2",
    );
    e.sync(&b);
    let clash = with_ann(a.clone(), annotations::LOAD_BALANCER_IPS, "198.51.100.2");
    let (reason, _, kept) = fail(e.sync(&clash));
    assert_eq!(reason, FailReason::InUse);
    assert_eq!(kept, ["198.51.100.0".parse::<IpAddr>().unwrap()]);
    assert_eq!(e.allocator().addresses_of(&a.key), kept);
    // A valid new request moves it.
    let good = with_ann(a.clone(), annotations::LOAD_BALANCER_IPS, "198.51.100.3");
    assert_eq!(ips(&e.sync(&good)), ["198.51.100.3"]);
}

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

fn shared(mut s: ServiceView, port: u16) -> ServiceView {
    s.annotations
        .insert(annotations::ALLOW_SHARED_IP.into(), "k".into());
    s.ports = [(Proto::Tcp, port)].into();
    s
}

/// Applies a decision to the view's status, as the controller writes it.
fn write_back(s: &mut ServiceView, d: &Decision) {
    match d {
        Decision::Assign { ips, .. } => s.status_ips = ips.clone(),
        Decision::Clear { .. } => s.status_ips.clear(),
        Decision::Fail { kept, .. } => s.status_ips = kept.clone(),
        Decision::Ignore => {}
    }
}

#[test]
fn a_deleted_service_frees_its_address_for_the_oldest_waiting_one() {
    let mut e = engine(&pool("p", "[198.51.100.10/32]", ""));
    let a = svc("default", "a");
    assert_eq!(ips(&e.sync(&a)), ["198.51.100.10"]);
    let (b, c) = (svc("default", "b"), svc("default", "c"));
    assert_eq!(fail(e.sync(&c)).0, FailReason::Exhausted);
    assert_eq!(fail(e.sync(&b)).0, FailReason::Exhausted);
    assert!(e.take_retries().is_empty(), "nothing changed yet");
    assert_eq!(e.waiting_by_reason()[&FailReason::Exhausted], 2);
    e.remove(&a.key);
    // b was created before c ("...:b" < "...:c").
    assert_eq!(e.take_retries(), [b.key.clone(), c.key.clone()]);
    assert_eq!(ips(&e.sync(&b)), ["198.51.100.10"]);
    assert_eq!(fail(e.sync(&c)).0, FailReason::Exhausted);
    assert!(e.take_retries().is_empty());
    assert!(e.is_waiting(&c.key) && !e.is_waiting(&b.key));
}

#[test]
fn a_service_moved_to_another_class_releases_its_address() {
    let mut e = engine(&pool("p", "[198.51.100.10/32]", ""));
    let mut a = svc("default", "a");
    assert_eq!(ips(&e.sync(&a)), ["198.51.100.10"]);
    let b = svc("default", "b");
    assert_eq!(fail(e.sync(&b)).0, FailReason::Exhausted);
    a.load_balancer_class = Some("other".into());
    assert_eq!(e.sync(&a), Decision::Ignore);
    assert_eq!(e.take_retries(), std::slice::from_ref(&b.key));
    assert_eq!(ips(&e.sync(&b)), ["198.51.100.10"]);
}

#[test]
fn a_service_that_stops_sharing_gives_the_shared_address_up() {
    let mut e = engine(&pool("p", "[198.51.100.10-198.51.100.11]", ""));
    let a = shared(svc("default", "a"), 80);
    let mut b = shared(svc("default", "b"), 81);
    assert_eq!(ips(&e.sync(&a)), ["198.51.100.10"]);
    let d = e.sync(&b);
    assert_eq!(ips(&d), ["198.51.100.10"]);
    write_back(&mut b, &d);
    // b drops the sharing key and takes a's port: it may not keep a's address.
    b.annotations.clear();
    b.ports = [(Proto::Tcp, 80)].into();
    assert_eq!(ips(&e.sync(&b)), ["198.51.100.11"]);
    // With no other address free it waits, holding nothing.
    let mut e = engine(&pool("p", "[198.51.100.10/32]", ""));
    let mut b = shared(svc("default", "b"), 81);
    e.sync(&a);
    let d = e.sync(&b);
    write_back(&mut b, &d);
    b.annotations.clear();
    b.ports = [(Proto::Tcp, 80)].into();
    let (reason, _, kept) = fail(e.sync(&b));
    assert_eq!(reason, FailReason::Exhausted);
    assert!(kept.is_empty());
}

#[test]
fn an_address_kept_after_a_failed_change_is_shared_as_the_service_is_now() {
    let mut e = engine(&pool("p", "[198.51.100.10-198.51.100.11]", ""));
    let mut a = shared(svc("default", "a"), 81);
    let d = e.sync(&a);
    write_back(&mut a, &d);
    // a stops sharing and asks for something it cannot have: it keeps its address...
    a.annotations.clear();
    a.ip_families = vec![Family::V6];
    a.ports = [(Proto::Tcp, 80)].into();
    let (_, _, kept) = fail(e.sync(&a));
    assert_eq!(kept, [ip("198.51.100.10")]);
    // ...as an address it does not share any more.
    let b = shared(svc("default", "b"), 82);
    assert_eq!(ips(&e.sync(&b)), ["198.51.100.11"]);
}

#[test]
fn requested_addresses_are_exactly_what_a_service_gets_also_after_a_restart() {
    let yaml = pool("p", "[203.0.113.4/31, \"2001:db8::10/127\"]", "");
    let mut e = engine(&yaml);
    let mut a = with_ann(
        svc("default", "a"),
        annotations::LOAD_BALANCER_IPS,
        "203.0.113.4",
    );
    a.ip_families = vec![Family::V4, Family::V6];
    a.family_policy = FamilyPolicy::PreferDualStack;
    let d = e.sync(&a);
    assert_eq!(ips(&d), ["203.0.113.4"]);
    write_back(&mut a, &d);
    let mut restarted = engine(&yaml);
    assert!(restarted.restore(std::slice::from_ref(&a)).is_empty());
    assert_eq!(ips(&restarted.sync(&a)), ["203.0.113.4"]);
}

#[test]
fn a_restart_without_a_valid_configuration_keeps_addresses_for_the_first_one() {
    let yaml = pool("p", "[198.51.100.10-198.51.100.11]", "");
    let mut e = engine(&yaml);
    let mut a = svc("default", "a");
    let mut b = svc("default", "b");
    for s in [&mut b, &mut a] {
        let d = e.sync(s);
        write_back(s, &d);
    }
    assert_eq!(b.status_ips, [ip("198.51.100.10")]);
    // Restarted while the configuration is invalid: nothing to restore into yet.
    let mut e = Engine::new(None);
    assert!(e.restore(&[a.clone(), b.clone()]).is_empty());
    assert_eq!(fail(e.sync(&a)).0, FailReason::NoConfig);
    e.set_config(cfg(&yaml));
    assert_eq!(ips(&e.sync(&a)), ["198.51.100.11"]);
    assert_eq!(ips(&e.sync(&b)), ["198.51.100.10"]);
}
