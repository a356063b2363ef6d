//! Traffic faults as data, and their nftables text: the ruleset one host's
//! namespace gets for a fault, and reading the active ones back from `nft
//! list`. Pure text: the commands that apply it are in
//! [`traffic`](super::traffic).
//!
//! A fault is one table, `inet flb_fault_<name>`, in each namespace it is
//! installed in: a base chain on `output` and/or `input` sends the matched
//! packets (the fault's port as source or destination port, to or from the
//! peers' addresses) with `goto` to chain `effect`, which counts them and
//! drops them (all, or each with a probability). A packet goes through
//! `effect` at most once per hook, so a loss rate is not applied twice. The
//! table's comment says what the fault is; removing the table removes the
//! fault.
//!
//! A delay has no nftables verdict (and this machine's kernel has no
//! `sch_netem`): its base chain is a `route` chain that marks the packets
//! with [`DELAY_MARK`], which a policy rule routes into the TUN device of a
//! relay that holds them (see [`delay`](super::delay)); the relay sends them
//! on with [`RELAYED_MARK`], which the chain lets pass.

use std::fmt;
use std::net::{Ipv4Addr, Ipv6Addr};
use std::time::Duration;

/// Prefix of the nftables table of every traffic fault.
pub const TABLE_PREFIX: &str = "flb_fault_";
/// Longest fault name.
const NAME_MAX: usize = 40;
/// Mark of the packets a delay fault routes into its relay (bits that
/// kube-proxy's 0x4000 and 0x8000 leave alone).
pub const DELAY_MARK: u32 = 0x0010_0000;
/// Mark of the packets the relay sends on: they are not marked again.
pub const RELAYED_MARK: u32 = 0x0020_0000;
/// Longest delay.
const DELAY_MAX: Duration = Duration::from_secs(10);

/// The transport protocol whose port a traffic fault matches.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transport {
    /// UDP (the speakers' membership runs on UDP 7946).
    Udp,
    /// TCP (the API server listens on TCP 6443).
    Tcp,
}

impl Transport {
    /// The name nftables uses.
    pub fn as_str(self) -> &'static str {
        match self {
            Transport::Udp => "udp",
            Transport::Tcp => "tcp",
        }
    }
}

/// What happens to the packets a traffic fault matches.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Effect {
    /// Every packet is dropped.
    Drop,
    /// Each packet is dropped with this probability, in percent (resolution
    /// 0.01 %, strictly between 0 and 100).
    Loss(f64),
    /// Each packet a host sends is held this long (whole milliseconds, at
    /// most 10 s) before it leaves; only for [`Direction::Out`].
    Delay(Duration),
}

/// Which of a host's packets a traffic fault applies to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    /// Packets the host sends to its peers. A loss rate installed on every
    /// host this way hits each packet once.
    Out,
    /// Packets the host receives from its peers.
    In,
    /// Both: the host is cut off from its peers on that port.
    Both,
}

impl Direction {
    fn arrow(self) -> &'static str {
        match self {
            Direction::Out => "->",
            Direction::In => "<-",
            Direction::Both => "<->",
        }
    }
}

/// A fault on the traffic of one port between hosts of the lab, made with
/// nftables inside the hosts' namespaces.
#[derive(Debug, Clone, PartialEq)]
pub struct TrafficFault {
    /// Its name: lowercase letters, digits and `-`, at most 40 characters.
    pub name: String,
    /// The hosts whose namespaces get the rules.
    pub hosts: Vec<String>,
    /// The other ends: the rules match packets to or from their addresses
    /// (a host is never its own peer).
    pub peers: Vec<String>,
    /// Protocol of the port.
    pub transport: Transport,
    /// The port, matched as source or destination port.
    pub port: u16,
    /// What happens to the matched packets.
    pub effect: Effect,
    /// Which packets of each host.
    pub direction: Direction,
}

impl TrafficFault {
    /// Why the fault cannot be installed, if it cannot.
    pub fn check(&self) -> Result<(), String> {
        check_name(&self.name)?;
        if self.hosts.is_empty() {
            return Err(format!("fault {}: no host to install it on", self.name));
        }
        if self.peers.is_empty() {
            return Err(format!("fault {}: no peers", self.name));
        }
        match self.effect {
            Effect::Drop => {}
            Effect::Loss(p) => {
                let bp = basis_points(p);
                if !(p.is_finite() && bp > 0 && bp < 10_000) {
                    return Err(format!(
                        "fault {}: loss {p}% is not strictly between 0 and 100 (use a drop for 100%)",
                        self.name
                    ));
                }
            }
            Effect::Delay(d) => {
                if d.is_zero() || d > DELAY_MAX || d.subsec_nanos() % 1_000_000 != 0 {
                    return Err(format!(
                        "fault {}: delay {d:?} is not a whole number of milliseconds in 1 ms..={DELAY_MAX:?}",
                        self.name
                    ));
                }
                if self.direction != Direction::Out {
                    return Err(format!(
                        "fault {}: a delay applies to the packets a host sends (direction out)",
                        self.name
                    ));
                }
            }
        }
        Ok(())
    }

    /// One line saying what the fault does, from `host`'s side (the table
    /// comment).
    pub fn describe(&self, host: &str) -> String {
        let effect = match self.effect {
            Effect::Drop => "drop".to_owned(),
            Effect::Loss(p) => format!("{p}% loss of"),
            Effect::Delay(d) => format!("{} ms delay of", d.as_millis()),
        };
        let peers: Vec<&str> = self
            .peers
            .iter()
            .map(String::as_str)
            .filter(|p| *p != host)
            .collect();
        format!(
            "{effect} {}/{} {host} {} {}",
            self.transport.as_str(),
            self.port,
            self.direction.arrow(),
            peers.join(",")
        )
    }
}

/// Why `name` is not a usable fault name, if it is not.
pub fn check_name(name: &str) -> Result<(), String> {
    let ok = !name.is_empty()
        && name.len() <= NAME_MAX
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
        && name.starts_with(|c: char| c.is_ascii_alphanumeric());
    if ok {
        Ok(())
    } else {
        Err(format!(
            "fault name {name:?}: use 1 to {NAME_MAX} lowercase letters, digits and '-', starting with a letter or digit"
        ))
    }
}

/// The nftables table of fault `name`.
pub fn table_name(name: &str) -> String {
    format!("{TABLE_PREFIX}{name}")
}

/// The loss rate in hundredths of a percent.
fn basis_points(percent: f64) -> u32 {
    (percent * 100.0).round().clamp(0.0, f64::from(u32::MAX)) as u32
}

/// The nft script that installs `fault` on `host`, whose peers have the
/// addresses `peers_v4` and `peers_v6` (either may be empty, not both). One
/// script is one nftables transaction: it applies whole or not at all.
pub fn ruleset(
    fault: &TrafficFault,
    host: &str,
    peers_v4: &[Ipv4Addr],
    peers_v6: &[Ipv6Addr],
) -> String {
    let table = format!("inet {}", table_name(&fault.name));
    let mut s = String::new();
    // nft has no escape for '"' inside a comment.
    let comment = fault.describe(host).replace('"', "'");
    s.push_str(&format!(
        "add table {table} {{ comment \"{comment}\" ; }}\n"
    ));
    s.push_str(&format!("add chain {table} effect\n"));
    // The base chains: name, hook, address matched, what the chain is.
    let mut hooks: Vec<(&str, &str, &str, &str)> = match fault.direction {
        Direction::Out => vec![("out", "output", "daddr", "filter")],
        Direction::In => vec![("in", "input", "saddr", "filter")],
        Direction::Both => vec![
            ("out", "output", "daddr", "filter"),
            ("in", "input", "saddr", "filter"),
        ],
    };
    let mut guard = String::new();
    match fault.effect {
        Effect::Drop => {
            s.push_str(&format!("add rule {table} effect counter\n"));
            s.push_str(&format!("add rule {table} effect counter drop\n"));
        }
        Effect::Loss(p) => {
            s.push_str(&format!("add rule {table} effect counter\n"));
            s.push_str(&format!(
                "add rule {table} effect numgen random mod 10000 < {} counter drop\n",
                basis_points(p)
            ));
        }
        Effect::Delay(_) => {
            s.push_str(&format!(
                "add rule {table} effect counter meta mark set meta mark or {DELAY_MARK:#010x}\n"
            ));
            // A mark changed in a route chain routes the packet again.
            hooks = vec![("out", "output", "daddr", "route")];
            guard = format!("meta mark and {RELAYED_MARK:#010x} == 0 ");
        }
    }
    let v4 = set(peers_v4);
    let v6 = set(peers_v6);
    let proto = fault.transport.as_str();
    for (chain, hook, addr, kind) in hooks {
        let priority = if kind == "route" { "mangle" } else { "filter" };
        s.push_str(&format!(
            "add chain {table} {chain} {{ type {kind} hook {hook} priority {priority} ; policy accept ; }}\n"
        ));
        for (family, peers) in [("ip", &v4), ("ip6", &v6)] {
            let Some(peers) = peers else { continue };
            for port_side in ["dport", "sport"] {
                s.push_str(&format!(
                    "add rule {table} {chain} {guard}{family} {addr} {peers} {proto} {port_side} {} goto effect\n",
                    fault.port
                ));
            }
        }
    }
    s
}

/// `{ a, b }`, or `None` for no addresses.
fn set<T: fmt::Display>(addrs: &[T]) -> Option<String> {
    if addrs.is_empty() {
        return None;
    }
    let items: Vec<String> = addrs.iter().map(ToString::to_string).collect();
    Some(format!("{{ {} }}", items.join(", ")))
}

/// Whether the text of `nft list table` is that of a delay fault (its
/// packets go to a relay).
pub fn is_delay(list_table: &str) -> bool {
    list_table.contains("type route hook output")
}

/// The fault names among the tables `nft list tables` printed.
pub fn fault_names(list_tables: &str) -> Vec<String> {
    list_tables
        .lines()
        .filter_map(|l| {
            let mut w = l.split_whitespace();
            match (w.next(), w.next(), w.next()) {
                (Some("table"), Some("inet"), Some(t)) => t.strip_prefix(TABLE_PREFIX),
                _ => None,
            }
        })
        .map(str::to_owned)
        .collect()
}

/// What `nft list table` shows of one fault's table.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TableReading {
    /// The table's comment: what the fault does.
    pub comment: String,
    /// Packets the fault matched.
    pub matched: u64,
    /// Packets it dropped.
    pub dropped: u64,
}

/// Reads the comment and the counters of chain `effect` from the text of
/// `nft list table inet flb_fault_<name>`.
pub fn read_table(text: &str) -> TableReading {
    let mut r = TableReading::default();
    let mut in_effect = false;
    for line in text.lines().map(str::trim) {
        if let Some(c) = line.strip_prefix("comment \"") {
            r.comment = c.trim_end_matches('"').to_owned();
        } else if line.starts_with("chain ") {
            in_effect = line == "chain effect {";
        } else if in_effect && let Some(packets) = counter_packets(line) {
            if line.ends_with(" drop") {
                r.dropped += packets;
            } else {
                r.matched += packets;
            }
        }
    }
    r
}

/// N of `... counter packets N bytes M ...`.
fn counter_packets(line: &str) -> Option<u64> {
    let mut w = line.split_whitespace();
    w.find(|x| *x == "packets")?;
    w.next()?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn membership_loss() -> TrafficFault {
        TrafficFault {
            name: "membership-loss".into(),
            hosts: vec!["w1-k8s".into(), "w2-k8s".into()],
            peers: vec!["w1-k8s".into(), "w2-k8s".into()],
            transport: Transport::Udp,
            port: 7946,
            effect: Effect::Loss(12.5),
            direction: Direction::Out,
        }
    }

    #[test]
    fn a_loss_goes_out_once_per_packet() {
        let f = membership_loss();
        let s = ruleset(&f, "w1-k8s", &["192.0.2.102".parse().unwrap()], &[]);
        let t = "inet flb_fault_membership-loss";
        assert_eq!(
            s,
            format!(
                "add table {t} {{ comment \"12.5% loss of udp/7946 w1-k8s -> w2-k8s\" ; }}\n\
                 add chain {t} effect\n\
                 add rule {t} effect counter\n\
                 add rule {t} effect numgen random mod 10000 < 1250 counter drop\n\
                 add chain {t} out {{ type filter hook output priority filter ; policy accept ; }}\n\
                 add rule {t} out ip daddr {{ 192.0.2.102 }} udp dport 7946 goto effect\n\
                 add rule {t} out ip daddr {{ 192.0.2.102 }} udp sport 7946 goto effect\n"
            )
        );
    }

    #[test]
    fn a_cut_drops_both_ways_in_both_families() {
        let f = TrafficFault {
            name: "api-cut-w1-k8s".into(),
            hosts: vec!["w1-k8s".into()],
            peers: vec!["m-k8s".into()],
            transport: Transport::Tcp,
            port: 6443,
            effect: Effect::Drop,
            direction: Direction::Both,
        };
        let s = ruleset(
            &f,
            "w1-k8s",
            &["192.0.2.10".parse().unwrap()],
            &["2001:db8:2::10".parse().unwrap()],
        );
        assert!(
            s.contains("comment \"drop tcp/6443 w1-k8s <-> m-k8s\""),
            "{s}"
        );
        assert!(s.contains(" effect counter drop\n"), "{s}");
        for rule in [
            "out ip daddr { 192.0.2.10 } tcp dport 6443 goto effect",
            "out ip6 daddr { 2001:db8:2::10 } tcp sport 6443 goto effect",
            "in ip saddr { 192.0.2.10 } tcp sport 6443 goto effect",
            "in ip6 saddr { 2001:db8:2::10 } tcp dport 6443 goto effect",
        ] {
            assert!(s.contains(rule), "{rule:?} missing:\n{s}");
        }
        assert!(s.contains("hook input priority filter"), "{s}");
    }

    #[test]
    fn a_delay_marks_what_was_not_relayed_yet() {
        let f = TrafficFault {
            effect: Effect::Delay(Duration::from_millis(50)),
            ..membership_loss()
        };
        let s = ruleset(&f, "w2-k8s", &["192.0.2.101".parse().unwrap()], &[]);
        let t = "inet flb_fault_membership-loss";
        assert_eq!(
            s,
            format!(
                "add table {t} {{ comment \"50 ms delay of udp/7946 w2-k8s -> w1-k8s\" ; }}\n\
                 add chain {t} effect\n\
                 add rule {t} effect counter meta mark set meta mark or 0x00100000\n\
                 add chain {t} out {{ type route hook output priority mangle ; policy accept ; }}\n\
                 add rule {t} out meta mark and 0x00200000 == 0 ip daddr {{ 192.0.2.101 }} udp dport 7946 goto effect\n\
                 add rule {t} out meta mark and 0x00200000 == 0 ip daddr {{ 192.0.2.101 }} udp sport 7946 goto effect\n"
            )
        );
        assert!(is_delay(
            "table inet flb_fault_x {\n\tchain out {\n\t\ttype route hook output priority mangle; policy accept;\n"
        ));
        assert!(!is_delay(&ruleset(&membership_loss(), "w1-k8s", &[], &[])));
    }

    #[test]
    fn bad_faults_are_refused() {
        assert!(membership_loss().check().is_ok());
        for p in [0.0, 100.0, 0.001, -5.0, f64::NAN] {
            let f = TrafficFault {
                effect: Effect::Loss(p),
                ..membership_loss()
            };
            assert!(f.check().is_err(), "loss {p} accepted");
        }
        for name in ["", "Upper", "-x", "a_b", "a b", &"x".repeat(41)] {
            assert!(check_name(name).is_err(), "{name:?} accepted");
        }
        assert!(check_name("api-cut-w1-k8s").is_ok());
        for (d, direction) in [
            (Duration::ZERO, Direction::Out),
            (Duration::from_micros(1500), Direction::Out),
            (Duration::from_secs(11), Direction::Out),
            (Duration::from_millis(50), Direction::Both),
        ] {
            let f = TrafficFault {
                effect: Effect::Delay(d),
                direction,
                ..membership_loss()
            };
            assert!(f.check().is_err(), "delay {d:?} {direction:?} accepted");
        }
        let no_peers = TrafficFault {
            peers: vec![],
            ..membership_loss()
        };
        assert!(no_peers.check().is_err());
    }

    #[test]
    fn active_tables_are_read_back() {
        let tables = "table inet ferrolb_nat\ntable inet flb_fault_a\ntable ip filter\ntable inet flb_fault_b-2\n";
        assert_eq!(fault_names(tables), ["a", "b-2"]);
        let listing = "table inet flb_fault_a {\n\
            \tcomment \"10% loss of udp/7946 w1-k8s -> m-k8s,w2-k8s\"\n\
            \tchain effect {\n\
            \t\tcounter packets 200 bytes 9000\n\
            \t\tnumgen random mod 10000 < 1000 counter packets 21 bytes 900 drop\n\
            \t}\n\
            \n\
            \tchain out {\n\
            \t\ttype filter hook output priority filter; policy accept;\n\
            \t\tip daddr { 192.0.2.10, 192.0.2.102 } udp dport 7946 goto effect\n\
            \t}\n\
            }\n";
        assert_eq!(
            read_table(listing),
            TableReading {
                comment: "10% loss of udp/7946 w1-k8s -> m-k8s,w2-k8s".into(),
                matched: 200,
                dropped: 21,
            }
        );
    }
}
