//! ferrolb under the faults that threaten a load balancer's promises: an
//! address never goes to two Services, never moves because something
//! failed, and always has exactly one announcer.
//!
//! Each test sets up 4 LoadBalancer Services on a 3-worker lab, breaks
//! something while an [`ArpWatch`] asks from the client, 10 times a second,
//! who has each address, and then checks the Services' status (as before,
//! no address on two Services), who answers ARP (exactly one MAC per
//! address, the same as before unless a node failed) and what the watch
//! saw (no round with two MACs, no move). Figures (unanswered time,
//! failover time, datagrams dropped) are printed as `figure:` lines.
//!
//! 1. The control plane killed for 20 s, with the announcing worker failed
//!    during the outage: its addresses fail over without the API, and when
//!    the API returns nothing moves.
//! 2. The controller restarted while the configuration is invalid
//!    (overlapping pools), then the configuration fixed: nothing moves. The
//!    lowest address is freed first, so a controller that allocates afresh
//!    instead of restoring moves every Service.
//! 3. 10 % loss on the membership port of every node for 60 s
//!    (`FERROLB_SOAK_SECS`): no node declared dead, no failover.
//! 4. The membership port blocked between all nodes (ignored until the
//!    speaker falls back on the API's view of node liveness).
//! 5. One node cut off the API server, not the segment: nothing moves,
//!    for 8 s (the node stays Ready) and for 60 s
//!    (`FERROLB_API_CUT_SECS`; ignored: today the node, marked NotReady,
//!    keeps announcing while others take its addresses over).
//!
//! Needs root, the Go harness and built `ferrolb-controller` and
//! `ferrolb-speaker`. Run with `--nocapture --test-threads=1`.

use std::collections::{BTreeMap, BTreeSet};
use std::net::Ipv4Addr;
use std::time::{Duration, Instant};

use ferrolb_integration::lab::{
    ActiveFault, ControlPlaneStop, Direction, Effect, Lab, eventually, topology,
};
use ferrolb_integration::testkit::{
    self as kit, APP_NS, ArpRecord, ArpWatch, CONFIG_NS, CONTROLLER_PORT, EchoService, PacketSock,
    SpeakerSetup, WORKERS, env_usize, metric, metrics, node_of_mac,
};
use k8s_openapi::api::core::v1::Service;
use kube::Client;
use kube::api::{Api, DeleteParams, ListParams};

const WAIT: Duration = Duration::from_secs(60);
const POOL: &str = "198.51.100.10-198.51.100.19";
/// Overlaps [`POOL`]: with both, the configuration is invalid.
const OVERLAPPING_POOL: &str = "198.51.100.18-198.51.100.25";
const SERVICES: [&str; 4] = ["fault-a", "fault-b", "fault-c", "fault-d"];
/// How often the watch asks who has each address.
const PERIOD: Duration = Duration::from_millis(100);
/// Upper bound of any watch.
const WATCH_LIMIT: Duration = Duration::from_secs(1800);
/// How long the control plane stays down in test 1.
const OUTAGE: Duration = Duration::from_secs(20);
/// What the speakers and the controller get to act on a change before the
/// state is judged.
const SETTLE: Duration = Duration::from_secs(10);

/// A lab with the Services announced.
struct Cluster {
    lab: Lab,
    client: Client,
    /// A packet socket on the client's `eth0`, for one-off ARP questions.
    sock: PacketSock,
}

/// What the Services show and who answers for their addresses.
#[derive(Debug, Clone, PartialEq)]
struct Snapshot {
    /// Service name -> the addresses in its status.
    statuses: BTreeMap<String, Vec<String>>,
    /// Address -> the node whose MAC answers ARP for it.
    announcers: BTreeMap<Ipv4Addr, String>,
}

impl Snapshot {
    fn addresses(&self) -> Vec<Ipv4Addr> {
        self.announcers.keys().copied().collect()
    }

    /// The worker announcing the most addresses, and those addresses.
    fn busiest_announcer(&self) -> (String, BTreeSet<Ipv4Addr>) {
        let mut by_node: BTreeMap<&str, BTreeSet<Ipv4Addr>> = BTreeMap::new();
        for (a, n) in &self.announcers {
            by_node.entry(n).or_default().insert(*a);
        }
        let (node, addrs) = by_node
            .into_iter()
            .max_by_key(|(_, a)| a.len())
            .expect("some address is announced");
        (node.to_owned(), addrs)
    }
}

impl Cluster {
    async fn up() -> Cluster {
        let (lab, client) = kit::up(kit::bare(3)).await;
        SpeakerSetup {
            pool: vec![POOL],
            replicas: 3,
            services: SERVICES.iter().map(|s| EchoService::new(s)).collect(),
            ..SpeakerSetup::default()
        }
        .run(&lab, &client)
        .await;
        let sock = PacketSock::open(kit::CLIENT_NS, topology::HOST_IF);
        Cluster { lab, client, sock }
    }

    fn services(&self) -> Api<Service> {
        Api::namespaced(self.client.clone(), APP_NS)
    }

    /// Service name -> the addresses in its status, for every LoadBalancer
    /// Service of the tests' namespace.
    async fn statuses(&self) -> Result<BTreeMap<String, Vec<String>>, String> {
        let list = self
            .services()
            .list(&ListParams::default())
            .await
            .map_err(|e| e.to_string())?;
        Ok(list
            .items
            .iter()
            .filter(|s| s.spec.as_ref().and_then(|s| s.type_.as_deref()) == Some("LoadBalancer"))
            .map(|s| (s.metadata.name.clone().unwrap_or_default(), kit::ingress(s)))
            .collect())
    }

    /// Who answers ARP for each of `addrs`: exactly one node each, or why not.
    fn announcers(&self, addrs: &[Ipv4Addr]) -> Result<BTreeMap<Ipv4Addr, String>, String> {
        let mut out = BTreeMap::new();
        for a in addrs {
            let macs = kit::arp_answerers(&self.sock, *a, 2, Duration::from_millis(150));
            let [mac] = macs.iter().copied().collect::<Vec<_>>()[..] else {
                return Err(format!("{a} answered by {macs:?}"));
            };
            let node = node_of_mac(&self.lab, mac).ok_or(format!("{a}: {mac} is no node's"))?;
            out.insert(*a, node);
        }
        Ok(out)
    }

    /// Once every Service has one address, no address is on two Services
    /// and each is announced by exactly one worker: the snapshot.
    async fn settled(&self) -> Snapshot {
        let statuses = eventually("every Service has one address", WAIT, || async {
            let st = self.statuses().await?;
            if st.values().all(|a| a.len() == 1) {
                Ok(st)
            } else {
                Err(format!("{st:?}"))
            }
        })
        .await
        .unwrap_or_else(|e| panic!("{e}"));
        assert_no_shared_address(&statuses);
        let addrs: Vec<Ipv4Addr> = statuses
            .values()
            .flatten()
            .map(|a| a.parse().expect("IPv4 address"))
            .collect();
        let announcers = eventually("one announcer per address", WAIT, || async {
            self.announcers(&addrs)
        })
        .await
        .unwrap_or_else(|e| panic!("{e}"));
        for n in announcers.values() {
            assert!(WORKERS.contains(&n.as_str()), "{n} announces");
        }
        Snapshot {
            statuses,
            announcers,
        }
    }

    /// Whether the API server leaves a request from the root namespace
    /// unanswered (5 s at most).
    async fn api_silent(&self) -> bool {
        let asked = tokio::time::timeout(
            Duration::from_secs(5),
            self.services().list(&ListParams::default()),
        )
        .await;
        !matches!(asked, Ok(Ok(_)))
    }

    /// Speaker metric `name` (no labels) on every node.
    fn speaker_metric(&self, name: &str) -> BTreeMap<String, f64> {
        kit::node_names(&self.lab)
            .into_iter()
            .map(|n| {
                let v = metric(&metrics(&self.lab, &n), name, "").unwrap_or(f64::NAN);
                (n, v)
            })
            .collect()
    }

    /// How many "member down" lines each speaker has logged.
    fn members_declared_down(&self) -> BTreeMap<String, usize> {
        kit::node_names(&self.lab)
            .into_iter()
            .map(|n| {
                let c = kit::speaker_log(&self.lab, &n)
                    .lines()
                    .filter(|l| l.contains("member down"))
                    .count();
                (n, c)
            })
            .collect()
    }

    /// A controller metric, when the controller answers.
    fn controller_metric(&self, name: &str) -> Option<f64> {
        let text = kit::try_metrics_on(&self.lab, topology::CONTROL_PLANE, CONTROLLER_PORT)?;
        metric(&text, name, "")
    }
}

fn assert_no_shared_address(statuses: &BTreeMap<String, Vec<String>>) {
    let mut owner: BTreeMap<&str, &str> = BTreeMap::new();
    for (svc, addrs) in statuses {
        for a in addrs {
            if let Some(other) = owner.insert(a, svc) {
                panic!("{a} is on {other} and {svc}: {statuses:?}");
            }
        }
    }
}

/// Prints what the watch saw of each address (as `figure:` lines, with
/// MACs named by node) and checks that no round had two answers and that
/// each address moved as often as `moves` says (0 when absent).
fn judge_watch(test: &str, lab: &Lab, rec: &ArpRecord, moves: &BTreeMap<Ipv4Addr, usize>) {
    let name = |m| node_of_mac(lab, m).unwrap_or_else(|| m.to_string());
    let mut problems = Vec::new();
    for (addr, a) in &rec.addresses {
        let who: Vec<String> = a.announcers().into_iter().map(name).collect();
        let gap = if who.is_empty() {
            "never answered".to_owned()
        } else {
            format!("longest gap {} ms", a.longest_gap.as_millis())
        };
        eprintln!(
            "figure: {test}: {addr}: unanswered {} of {} rounds ({} ms at {} ms a round), {gap}, rounds with 2+ MACs {}, announcers {who:?}",
            a.unanswered_rounds,
            a.rounds,
            u128::from(a.unanswered_rounds) * rec.period.as_millis(),
            rec.period.as_millis(),
            a.duplicate_rounds,
        );
        if a.duplicate_rounds > 0 {
            let dup: Vec<(u128, Vec<String>)> = a
                .timeline
                .iter()
                .filter(|(_, s)| s.len() > 1)
                .map(|(t, s)| (t.as_millis(), s.iter().map(|m| name(*m)).collect()))
                .collect();
            problems.push(format!(
                "{addr}: two MACs answered in {} rounds (from ms {dup:?})",
                a.duplicate_rounds
            ));
        }
        let want = moves.get(addr).copied().unwrap_or(0);
        if a.moves() != want {
            problems.push(format!(
                "{addr}: moved {} times, expected {want}: {who:?}",
                a.moves()
            ));
        }
    }
    assert!(problems.is_empty(), "{test}: {problems:#?}");
}

// ---------------------------------------------------------------------------
// 1. The control plane down for 20 s, a node failure during the outage.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_api_outage_moves_nothing_and_a_failure_during_it_fails_over() {
    let c = Cluster::up().await;
    let before = c.settled().await;
    let (victim, victim_addrs) = before.busiest_announcer();
    let watch = ArpWatch::start(&before.addresses(), PERIOD, WATCH_LIMIT);

    let t0 = Instant::now();
    kit::stop_control_plane(&c.lab, ControlPlaneStop::Crash);
    eprintln!(
        "figure: control plane stopped in {} ms",
        t0.elapsed().as_millis()
    );
    assert!(
        c.api_silent().await,
        "the API server answers after the stop"
    );
    tokio::time::sleep(Duration::from_secs(3)).await;

    // The membership needs no API: the victim's addresses go to other nodes.
    c.lab.node_fail(&victim).expect("node fail");
    let tf = Instant::now();
    let victim_list: Vec<Ipv4Addr> = victim_addrs.iter().copied().collect();
    let moved = eventually(
        "the failed node's addresses answered elsewhere",
        WAIT,
        || async {
            let now = c.announcers(&victim_list)?;
            match now.iter().find(|(_, n)| **n == victim) {
                Some((a, _)) => Err(format!("{a} still answered by {victim}")),
                None => Ok(now),
            }
        },
    )
    .await
    .unwrap_or_else(|e| panic!("{e}"));
    eprintln!(
        "figure: failover of {} address(es) from {victim} during the API outage: seen answered elsewhere {} ms after the failure (polled; the watch below has the unanswered time)",
        victim_list.len(),
        tf.elapsed().as_millis()
    );
    assert!(
        c.api_silent().await,
        "the API server answered before the failover was over"
    );

    if let Some(rest) = OUTAGE.checked_sub(t0.elapsed()) {
        tokio::time::sleep(rest).await;
    }
    kit::start_control_plane(&c.lab).await;
    eprintln!(
        "figure: API server unavailable for {} ms (stop to ready)",
        t0.elapsed().as_millis()
    );
    // The API learns about the failure, and the speakers about that.
    let tn = Instant::now();
    c.lab
        .wait_node_ready(&victim, false, Duration::from_secs(120))
        .await
        .expect("the failed node NotReady");
    eprintln!(
        "figure: the failed node NotReady {} ms after the API returned",
        tn.elapsed().as_millis()
    );
    tokio::time::sleep(SETTLE).await;

    let statuses = c.statuses().await.expect("statuses");
    assert_no_shared_address(&statuses);
    assert_eq!(statuses, before.statuses, "a Service's address changed");
    let mut expected = before.announcers.clone();
    expected.extend(moved);
    let after = c
        .announcers(&before.addresses())
        .unwrap_or_else(|e| panic!("after the outage: {e}"));
    assert_eq!(after, expected, "announcers moved after the outage");
    let rec = watch.finish();
    let moves = victim_addrs.iter().map(|a| (*a, 1)).collect();
    judge_watch("api outage", &c.lab, &rec, &moves);
    for (addr, a) in &rec.addresses {
        if !victim_addrs.contains(addr) {
            assert!(
                a.longest_gap < Duration::from_secs(1),
                "{addr} went unanswered for {:?} during the outage",
                a.longest_gap
            );
        }
    }
}

// ---------------------------------------------------------------------------
// 2. A controller restart while the configuration is invalid.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_controller_restart_on_an_invalid_configuration_moves_nothing() {
    let c = Cluster::up().await;
    let first = c.settled().await;
    // A free address below the others: a controller that allocates afresh
    // instead of restoring gives it to one of them.
    let (lowest_svc, _) = first
        .statuses
        .iter()
        .min_by_key(|(_, a)| a[0].parse::<Ipv4Addr>().expect("IPv4"))
        .expect("Services");
    c.services()
        .delete(lowest_svc, &DeleteParams::default())
        .await
        .expect("delete the Service on the lowest address");
    eventually("the Service is gone", WAIT, || async {
        let st = c.statuses().await?;
        if st.len() == SERVICES.len() - 1 {
            Ok(())
        } else {
            Err(format!("{st:?}"))
        }
    })
    .await
    .expect("deleted");
    let before = c.settled().await;
    let watch = ArpWatch::start(&before.addresses(), PERIOD, WATCH_LIMIT);

    kit::apply_pool(&c.client, "overlapping", &[OVERLAPPING_POOL]).await;
    let rejected = || async {
        match c.controller_metric("ferrolb_controller_config_errors") {
            Some(n) if n >= 1.0 => Ok(()),
            other => Err(format!("config errors {other:?}")),
        }
    };
    eventually("the controller rejects the configuration", WAIT, rejected)
        .await
        .expect("rejected");
    c.lab.restart_controller().expect("restart the controller");
    eventually("the restarted controller rejects it too", WAIT, rejected)
        .await
        .expect("rejected after the restart");
    tokio::time::sleep(SETTLE).await;
    let during = c.statuses().await.expect("statuses");
    assert_eq!(
        during, before.statuses,
        "a Service's address changed while the configuration was invalid"
    );

    kit::metallb_api(&c.client, CONFIG_NS, "IPAddressPool")
        .delete("overlapping", &DeleteParams::default())
        .await
        .expect("delete the overlapping pool");
    eventually("the configuration is valid again", WAIT, || async {
        let loaded = c.controller_metric("metallb_k8s_client_config_loaded_bool");
        let errors = c.controller_metric("ferrolb_controller_config_errors");
        if loaded == Some(1.0) && errors == Some(0.0) {
            Ok(())
        } else {
            Err(format!("loaded {loaded:?}, errors {errors:?}"))
        }
    })
    .await
    .expect("valid");
    tokio::time::sleep(SETTLE).await;

    let statuses = c.statuses().await.expect("statuses");
    assert_no_shared_address(&statuses);
    assert_eq!(
        statuses, before.statuses,
        "a Service's address changed once the configuration was fixed"
    );
    let after = c
        .announcers(&before.addresses())
        .unwrap_or_else(|e| panic!("after the fix: {e}"));
    assert_eq!(after, before.announcers, "announcers moved");
    let rec = watch.finish();
    judge_watch(
        "controller restart, invalid configuration",
        &c.lab,
        &rec,
        &BTreeMap::new(),
    );
}

// ---------------------------------------------------------------------------
// 3. Packet loss on the membership port.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn membership_loss_declares_nobody_dead() {
    let soak = Duration::from_secs(env_usize("FERROLB_SOAK_SECS", 60) as u64);
    let c = Cluster::up().await;
    let before = c.settled().await;
    let nodes = kit::node_names(&c.lab);
    let takeovers = c.speaker_metric("ferrolb_speaker_takeovers_total");
    let downs = c.members_declared_down();
    let watch = ArpWatch::start(&before.addresses(), PERIOD, WATCH_LIMIT);

    kit::add_fault(
        &c.lab,
        &kit::membership_fault("membership-loss", Effect::Loss(10.0), Direction::Out),
    );
    let t0 = Instant::now();
    let mut fewest_live: BTreeMap<String, f64> = BTreeMap::new();
    while t0.elapsed() < soak {
        for (n, live) in c.speaker_metric("ferrolb_speaker_members_live") {
            let least = fewest_live.entry(n).or_insert(f64::INFINITY);
            *least = least.min(live);
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    let (matched, dropped) = kit::active_faults(&c.lab)
        .into_iter()
        .find_map(|f| match f {
            ActiveFault::Traffic {
                name,
                matched,
                dropped,
                ..
            } if name == "membership-loss" => Some((matched, dropped)),
            _ => None,
        })
        .expect("the fault in force");
    kit::remove_fault(&c.lab, "membership-loss");
    let rec = watch.finish();
    eprintln!(
        "figure: membership loss: {dropped} of {matched} datagrams dropped ({:.1} %) in {} s; fewest live members seen: {fewest_live:?}",
        100.0 * dropped as f64 / matched.max(1) as f64,
        soak.as_secs()
    );

    assert!(dropped > 0, "the fault dropped nothing");
    let all = nodes.len() as f64;
    assert!(
        fewest_live.values().all(|l| *l == all),
        "a member was declared dead: {fewest_live:?}"
    );
    assert_eq!(c.members_declared_down(), downs, "'member down' logged");
    assert_eq!(
        c.speaker_metric("ferrolb_speaker_takeovers_total"),
        takeovers,
        "takeovers"
    );
    let statuses = c.statuses().await.expect("statuses");
    assert_eq!(statuses, before.statuses);
    let after = c
        .announcers(&before.addresses())
        .unwrap_or_else(|e| panic!("after the loss: {e}"));
    assert_eq!(after, before.announcers, "announcers moved");
    judge_watch("membership loss", &c.lab, &rec, &BTreeMap::new());
}

// ---------------------------------------------------------------------------
// 4. The membership port blocked between all nodes.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs the speaker's API-liveness fallback (#12)"]
async fn a_blocked_membership_port_keeps_one_announcer_per_address_and_says_so() {
    let c = Cluster::up().await;
    let before = c.settled().await;
    kit::add_fault(
        &c.lab,
        &kit::membership_fault("membership-blocked", Effect::Drop, Direction::Both),
    );
    // Every speaker hears nobody within a few seconds.
    tokio::time::sleep(SETTLE).await;
    let watch = ArpWatch::start(&before.addresses(), PERIOD, WATCH_LIMIT);
    tokio::time::sleep(Duration::from_secs(20)).await;
    let rec = watch.finish();
    judge_watch("membership blocked", &c.lab, &rec, &BTreeMap::new());
    for (addr, a) in &rec.addresses {
        assert_eq!(a.unanswered_rounds, 0, "{addr} went unanswered");
        let who: Vec<Option<String>> = a
            .announcers()
            .into_iter()
            .map(|m| node_of_mac(&c.lab, m))
            .collect();
        assert_eq!(
            who,
            [before.announcers.get(addr).cloned()],
            "{addr} is not announced by the node that announced it before"
        );
    }
    // Reported loudly: every speaker knows it is cut off and says so.
    for (n, isolated) in c.speaker_metric("ferrolb_speaker_isolated") {
        assert_eq!(isolated, 1.0, "{n} does not report its isolation");
        let log = kit::speaker_log(&c.lab, &n);
        assert!(
            log.lines()
                .any(|l| l.contains("ERROR") && l.contains("membership")),
            "{n} logged no membership error"
        );
    }
    assert_eq!(c.statuses().await.expect("statuses"), before.statuses);
    kit::remove_fault(&c.lab, "membership-blocked");
}

// ---------------------------------------------------------------------------
// 5. One node cut off the API server, not the segment.

/// Short enough that the API never marks the node NotReady: its node
/// agent's requests lost during the cut get through at their next TCP
/// retransmission (after about 6 s for a cut of up to 6 s, 12.6 s up to 12
/// s), well within the lab's node-monitor grace period of 20 s. A 15 s cut
/// made the node NotReady for a moment 21 s after it began.
const BRIEF_CUT: Duration = Duration::from_secs(8);

/// How long after a cut ends the watch goes on at least: the longest TCP
/// retransmission back-off that can matter (12.8 s) plus the grace period.
const AFTER_CUT: Duration = Duration::from_secs(35);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_cut_off_the_api_server_briefly_moves_nothing() {
    api_cut_moves_nothing(BRIEF_CUT).await;
}

/// Longer than the grace period: the API marks the node NotReady while its
/// speaker, live in the membership, cannot learn it. Today the other
/// speakers elect new leaders for its addresses and it keeps announcing
/// them: two MACs answer (seen here for 42 s of a 60 s cut).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs a speaker fix: a node the API marks NotReady while it is live in the membership must not get a second announcer for its addresses (split brain)"]
async fn a_node_cut_off_the_api_server_past_the_grace_period_moves_nothing() {
    let cut_for = Duration::from_secs(env_usize("FERROLB_API_CUT_SECS", 60) as u64);
    api_cut_moves_nothing(cut_for).await;
}

/// One node cut off the API server for `cut_for`: no status changes, and
/// every address keeps its one announcer throughout and after.
async fn api_cut_moves_nothing(cut_for: Duration) {
    let c = Cluster::up().await;
    let before = c.settled().await;
    let (victim, _) = before.busiest_announcer();
    let watch = ArpWatch::start(&before.addresses(), PERIOD, WATCH_LIMIT);

    let fault = kit::cut_from_api(&c.lab, &victim);
    let t0 = Instant::now();
    let mut not_ready_after = None;
    let mut changed = None;
    while t0.elapsed() < cut_for {
        let st = c
            .statuses()
            .await
            .expect("statuses (the root namespace is not cut)");
        if st != before.statuses && changed.is_none() {
            changed = Some((t0.elapsed(), st));
        }
        let ready = ferrolb_integration::lab::kubeapi::node_readiness(&c.client)
            .await
            .expect("node readiness");
        if not_ready_after.is_none() && ready.get(&victim) == Some(&false) {
            not_ready_after = Some(t0.elapsed());
        }
        tokio::time::sleep(Duration::from_secs(2)).await;
    }
    kit::remove_fault(&c.lab, &fault);
    eprintln!(
        "figure: {victim} cut off the API server for {} s; NotReady after {:?}",
        cut_for.as_secs(),
        not_ready_after.map(|d| d.as_millis())
    );
    c.lab
        .wait_node_ready(&victim, true, Duration::from_secs(120))
        .await
        .expect("Ready again once reconnected");
    // Requests lost in the cut may complete only at their next TCP
    // retransmission: watch on until the grace period after it has passed.
    tokio::time::sleep(SETTLE).await;
    if let Some(rest) = (cut_for + AFTER_CUT).checked_sub(t0.elapsed()) {
        tokio::time::sleep(rest).await;
    }
    let rec = watch.finish();

    assert_eq!(changed, None, "a Service's status changed during the cut");
    let statuses = c.statuses().await.expect("statuses");
    assert_eq!(statuses, before.statuses);
    let after = c
        .announcers(&before.addresses())
        .unwrap_or_else(|e| panic!("after the cut: {e}"));
    assert_eq!(after, before.announcers, "announcers moved");
    judge_watch(
        &format!("{victim} cut off the API server"),
        &c.lab,
        &rec,
        &BTreeMap::new(),
    );
}
