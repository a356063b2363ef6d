//! The scenarios. Each takes a [`Cluster`], works in its own namespace with
//! its own addresses (a slot of [`Settings::pool`](super::Settings::pool))
//! and configuration objects, and removes them afterwards (see
//! [`in_scope`]).

use std::net::IpAddr;

use anyhow::{Result, bail, ensure};

use super::{Cluster, Scope, in_scope, ingress_ips};
use crate::lab::eventually;

/// What running a scenario came to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Every check passed.
    Passed,
    /// Not run on this cluster, and why.
    Skipped(String),
}

/// The scenarios, in the order they run.
pub const ALL: [&str; 5] = ["l2", "requested-shared", "release", "bad-config", "legacy"];

/// Runs scenario `name` on `cluster`.
pub async fn run(cluster: &Cluster, name: &str) -> Result<Outcome> {
    match name {
        "l2" => allocation_and_l2(cluster).await,
        "requested-shared" => requested_and_shared(cluster).await,
        "release" => release(cluster).await,
        "bad-config" => bad_config(cluster).await,
        "legacy" => legacy_configmap(cluster).await,
        _ => bail!("unknown scenario {name:?} (known: {ALL:?})"),
    }
}

fn range(a: IpAddr, b: IpAddr) -> String {
    format!("{a}-{b}")
}

fn single(a: IpAddr) -> String {
    match a {
        IpAddr::V4(_) => format!("{a}/32"),
        IpAddr::V6(_) => format!("{a}/128"),
    }
}

/// (a) A pool, an L2Advertisement, an echo Deployment and a LoadBalancer
/// Service: the Service gets an address of the pool (status and pool
/// annotation), the client reaches the pods through it (several pods
/// answer), and the client's neighbour entry for the address is the MAC of
/// the node the ServiceL2Status names.
pub async fn allocation_and_l2(cluster: &Cluster) -> Result<Outcome> {
    in_scope(cluster, "l2", 0, |s: Scope| async move {
        let pool = s.object_name("pool");
        s.pool(&pool, &[range(s.addrs[0], s.addrs[2])]).await?;
        s.l2_advertisement(&s.object_name("l2"), &[&pool]).await?;
        let pods = s.echo("echo", 3).await?;
        s.step(format!("echo pods ready: {pods:?}"));
        s.service("web", "echo", &[80], &[]).await?;
        let svc = s.wait_allocated_from("web", &pool).await?;
        let ips = ingress_ips(&svc);
        ensure!(ips.len() == 1, "web has addresses {ips:?}, wanted one");
        let ip = ips[0];
        ensure!(
            s.addrs[..3].contains(&ip),
            "web got {ip}, outside its pool {:?}",
            &s.addrs[..3]
        );
        s.step(format!("web got {ip} from {pool}"));
        s.wait_event(&s.ns, "web", "IPAllocated", &ip.to_string())
            .await?;
        let node = s.wait_announced(ip, 80, &["web"], &pods).await?;
        let seen = s.spread(ip, 80, &pods, 2).await?;
        s.step(format!(
            "{ip} announced by {node}; pods answering: {seen:?}"
        ));
        Ok(())
    })
    .await?;
    Ok(Outcome::Passed)
}

/// (b) A requested address (deprecated `metallb.universe.tf/` annotations)
/// and a second Service sharing it (`metallb.io/` spellings, another port):
/// both get exactly that address, one node announces it for both, both
/// ports answer; a third Service asking for it without the sharing key is
/// refused with an event; the address stays with the survivor when the
/// first Service goes.
pub async fn requested_and_shared(cluster: &Cluster) -> Result<Outcome> {
    in_scope(cluster, "shared", 1, |s: Scope| async move {
        let pool = s.object_name("pool");
        s.pool(&pool, &[range(s.addrs[0], s.addrs[2])]).await?;
        s.l2_advertisement(&s.object_name("l2"), &[&pool]).await?;
        let pods = s.echo("echo", 2).await?;
        // Not the lowest address, so that only the request explains it.
        let want = s.addrs[2];
        let key = "ferrolb-e2e".to_owned();
        s.service(
            "first",
            "echo",
            &[80],
            &[
                ("metallb.universe.tf/loadBalancerIPs", want.to_string()),
                ("metallb.universe.tf/allow-shared-ip", key.clone()),
            ],
        )
        .await?;
        s.service(
            "second",
            "echo",
            &[8081],
            &[
                ("metallb.io/loadBalancerIPs", want.to_string()),
                ("metallb.io/allow-shared-ip", key.clone()),
            ],
        )
        .await?;
        for name in ["first", "second"] {
            let svc = s.wait_allocated_from(name, &pool).await?;
            ensure!(
                ingress_ips(&svc) == [want],
                "{name} has {:?}, requested {want}",
                ingress_ips(&svc)
            );
        }
        s.step(format!("first and second share {want}"));
        s.wait_event(
            &s.ns,
            "first",
            "DeprecatedField",
            "metallb.universe.tf/loadBalancerIPs",
        )
        .await?;
        let node = s
            .wait_announced(want, 80, &["first", "second"], &pods)
            .await?;
        s.spread(want, 80, &pods, 1).await?;
        s.spread(want, 8081, &pods, 1).await?;
        s.step(format!(
            "{want} announced by {node} for both, ports 80 and 8081 answer"
        ));

        s.service(
            "intruder",
            "echo",
            &[8082],
            &[("metallb.io/loadBalancerIPs", want.to_string())],
        )
        .await?;
        let note = s
            .wait_event(&s.ns, "intruder", "AllocationFailed", &want.to_string())
            .await?;
        let intruder = s.get_service("intruder").await?;
        ensure!(
            ingress_ips(&intruder).is_empty(),
            "intruder got {:?} without the sharing key",
            ingress_ips(&intruder)
        );
        s.step(format!("intruder refused: {note}"));

        s.delete_service("first").await?;
        let second = s.get_service("second").await?;
        ensure!(
            ingress_ips(&second) == [want],
            "second lost {want} when first went: {:?}",
            ingress_ips(&second)
        );
        s.wait_announced(want, 8081, &["second"], &pods).await?;
        Ok(())
    })
    .await?;
    Ok(Outcome::Passed)
}

/// IPAddressPool status counters of the scenario's family: (assigned,
/// available).
async fn pool_counters(s: &Scope, pool: &str) -> std::result::Result<(i64, i64), String> {
    let api: kube::Api<kube::api::DynamicObject> = kube::Api::namespaced_with(
        s.cluster.kube.clone(),
        &s.cluster.settings.config_namespace,
        &super::metallb("IPAddressPool"),
    );
    let p = api.get(pool).await.map_err(|e| e.to_string())?;
    let fam = if s.addrs[0].is_ipv4() { "IPv4" } else { "IPv6" };
    let st = &p.data["status"];
    match (
        st[format!("assigned{fam}")].as_i64(),
        st[format!("available{fam}")].as_i64(),
    ) {
        (Some(a), Some(v)) => Ok((a, v)),
        _ => Err(format!("status {st}")),
    }
}

/// Waits until the scenario's IPAddressPool `pool` counts `want`
/// (assigned, available) addresses.
async fn wait_pool_counters(s: &Scope, pool: &str, want: (i64, i64)) -> Result<()> {
    let what = format!("pool status {} assigned, {} available", want.0, want.1);
    eventually(&what, s.cluster.settings.wait, || async {
        match pool_counters(s, pool).await? {
            c if c == want => Ok(()),
            c => Err(format!("assigned/available {c:?}")),
        }
    })
    .await?;
    Ok(())
}

/// (c) Releasing: a one-address pool; a second Service waits (pool
/// exhausted, with an event) until the first is deleted, then gets the
/// same address, which is announced and answers; once both are gone the
/// pool's status counts the address available again.
pub async fn release(cluster: &Cluster) -> Result<Outcome> {
    in_scope(cluster, "release", 2, |s: Scope| async move {
        let pool = s.object_name("pool");
        let only = s.addrs[0];
        s.pool(&pool, &[single(only)]).await?;
        s.l2_advertisement(&s.object_name("l2"), &[&pool]).await?;
        let pods = s.echo("echo", 2).await?;
        let from_pool = [("metallb.io/address-pool", pool.clone())];
        s.service("one", "echo", &[80], &from_pool).await?;
        let svc = s.wait_allocated_from("one", &pool).await?;
        ensure!(
            ingress_ips(&svc) == [only],
            "one has {:?}",
            ingress_ips(&svc)
        );
        s.wait_announced(only, 80, &["one"], &pods).await?;
        wait_pool_counters(&s, &pool, (1, 0)).await?;

        s.service("two", "echo", &[80], &from_pool).await?;
        let note = s
            .wait_event(&s.ns, "two", "AllocationFailed", "no free")
            .await?;
        let two = s.get_service("two").await?;
        ensure!(
            ingress_ips(&two).is_empty(),
            "two got {:?} from an exhausted pool",
            ingress_ips(&two)
        );
        s.step(format!("two waits: {note}"));

        s.delete_service("one").await?;
        let two = s.wait_allocated_from("two", &pool).await?;
        ensure!(
            ingress_ips(&two) == [only],
            "two got {:?}, wanted the released {only}",
            ingress_ips(&two)
        );
        s.wait_event(&s.ns, "two", "IPAllocated", &only.to_string())
            .await?;
        let node = s.wait_announced(only, 80, &["two"], &pods).await?;
        s.step(format!(
            "{only} released by one, now two's, announced by {node}"
        ));

        s.delete_service("two").await?;
        wait_pool_counters(&s, &pool, (0, 1)).await?;
        Ok(())
    })
    .await?;
    Ok(Outcome::Passed)
}

/// (d) Bad input: an IPAddressPool overlapping the scenario's pool, then one
/// with a reversed range, are each rejected with an `InvalidConfiguration`
/// event naming them; while they exist the last valid configuration stays
/// in force (an address only the bad pool has is refused, the existing
/// Service keeps its address and keeps answering); once they are gone the
/// configuration is live again (a new Service gets the next address).
pub async fn bad_config(cluster: &Cluster) -> Result<Outcome> {
    in_scope(cluster, "bad-config", 3, |s: Scope| async move {
        let ns_cfg = s.cluster.settings.config_namespace.clone();
        let a = &s.addrs;
        let pool = s.object_name("pool");
        s.pool(&pool, &[range(a[0], a[1])]).await?;
        s.l2_advertisement(&s.object_name("l2"), &[&pool]).await?;
        let pods = s.echo("echo", 2).await?;
        s.service("steady", "echo", &[80], &[]).await?;
        let steady = s.wait_allocated_from("steady", &pool).await?;
        let ips = ingress_ips(&steady);
        ensure!(
            ips.len() == 1 && a[..2].contains(&ips[0]),
            "steady has {ips:?}, outside {:?}",
            &a[..2]
        );
        let ip = ips[0];
        s.wait_announced(ip, 80, &["steady"], &pods).await?;

        let still_steady = |why: &'static str| {
            let s = s.clone();
            let pods = pods.clone();
            async move {
                let now = ingress_ips(&s.get_service("steady").await?);
                ensure!(now == [ip], "steady moved from {ip} to {now:?} {why}");
                s.spread(ip, 80, &pods, 1).await?;
                Ok::<(), anyhow::Error>(())
            }
        };

        // Overlap: a[1..=3] covers steady's pool's second address.
        let overlap = s.object_name("overlap");
        s.pool(&overlap, &[range(a[1], a[3])]).await?;
        let note = s
            .wait_event(&ns_cfg, &overlap, "InvalidConfiguration", "overlaps")
            .await?;
        s.step(format!("overlapping pool rejected: {note}"));
        // a[3] is only in the rejected pool: asking for it must fail.
        s.service(
            "probe",
            "echo",
            &[80],
            &[("metallb.io/loadBalancerIPs", a[3].to_string())],
        )
        .await?;
        let note = s
            .wait_event(&s.ns, "probe", "AllocationFailed", &a[3].to_string())
            .await?;
        ensure!(
            ingress_ips(&s.get_service("probe").await?).is_empty(),
            "probe got an address of a rejected pool"
        );
        s.step(format!("address of the rejected pool refused: {note}"));
        still_steady("after an overlapping pool").await?;
        s.delete_service("probe").await?;
        s.delete_metallb("IPAddressPool", &overlap).await?;

        // Reversed range.
        let reversed = s.object_name("reversed");
        s.pool(&reversed, &[range(a[3], a[2])]).await?;
        let note = s
            .wait_event(&ns_cfg, &reversed, "InvalidConfiguration", "reversed")
            .await?;
        s.step(format!("reversed range rejected: {note}"));
        still_steady("after an invalid pool").await?;
        s.delete_metallb("IPAddressPool", &reversed).await?;

        // Valid again: the pool's other address goes to a new Service.
        let other = if ip == a[0] { a[1] } else { a[0] };
        s.service("after", "echo", &[80], &[]).await?;
        let after = s.wait_allocated_from("after", &pool).await?;
        ensure!(
            ingress_ips(&after) == [other],
            "after has {:?}, wanted {other}",
            ingress_ips(&after)
        );
        s.wait_announced(other, 80, &["after"], &pods).await?;
        still_steady("at the end").await?;
        Ok(())
    })
    .await?;
    Ok(Outcome::Passed)
}

/// (e) The legacy ConfigMap: a layer-2 pool in MetalLB's ConfigMap format
/// (no L2Advertisement: `protocol: layer2` announces) serves a Service,
/// which the client reaches through the announcing node. Skipped when the
/// provider does not allow creating the ConfigMap.
pub async fn legacy_configmap(cluster: &Cluster) -> Result<Outcome> {
    if cluster.settings.legacy_configmap.is_none() {
        return Ok(Outcome::Skipped(
            "the provider does not allow the legacy ConfigMap (FERROLB_E2E_LEGACY_CONFIGMAP)"
                .to_owned(),
        ));
    }
    in_scope(cluster, "legacy", 4, |s: Scope| async move {
        let pool = s.object_name("pool");
        let a = &s.addrs;
        s.legacy_configmap(&format!(
            "address-pools:\n- name: {pool}\n  protocol: layer2\n  addresses:\n  - {}\n",
            range(a[0], a[1])
        ))
        .await?;
        let pods = s.echo("echo", 2).await?;
        s.service(
            "legacy",
            "echo",
            &[80],
            &[("metallb.io/address-pool", pool.clone())],
        )
        .await?;
        let svc = s.wait_allocated_from("legacy", &pool).await?;
        let ips = ingress_ips(&svc);
        ensure!(
            ips.len() == 1 && a[..2].contains(&ips[0]),
            "legacy has {ips:?}, outside {:?}",
            &a[..2]
        );
        let node = s.wait_announced(ips[0], 80, &["legacy"], &pods).await?;
        s.spread(ips[0], 80, &pods, 2).await?;
        s.step(format!(
            "{} from the ConfigMap's pool, announced by {node}",
            ips[0]
        ));
        Ok(())
    })
    .await?;
    Ok(Outcome::Passed)
}
