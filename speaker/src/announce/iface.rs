//! Which interfaces an address is announced on.
//!
//! Model: the kernel is read once into a list of [`IfaceFacts`] (plain data),
//! and [`skip_reason`] / [`select`] are pure functions over that list, so
//! every rule is tested without a network. [`SysfsInterfaces`] is the real
//! lister: it reads `/sys/class/net/<name>/{ifindex,flags,type,address,master}`
//! and `/proc/net/if_inet6`, which needs no capability and works in any
//! network namespace the process is in.
//!
//! The default rules are MetalLB's (`internal/layer2/announcer.go` plus the
//! `announcedInterfacesToExclude` list its manifests ship): an interface is
//! used when it is up, not loopback, not NOARP, not enslaved to a bridge or
//! bond (no `master`), and its name is not one of the virtual interfaces CNIs
//! and container runtimes create. ARP additionally needs a broadcast-capable
//! link and NDP an IPv6 link-local address, as in MetalLB. With an explicit
//! `L2Advertisement.interfaces` list, exactly the listed interfaces are used
//! when they exist and are up; the name and master rules do not apply because
//! the operator chose them. Both paths require an Ethernet link
//! (`type` 1), because the frames we build are Ethernet frames.

use std::collections::BTreeSet;
use std::fs;
use std::io;
use std::net::Ipv6Addr;
use std::path::PathBuf;

use crate::packet::MacAddr;

/// Flags from `linux/if.h`, as printed in `/sys/class/net/<if>/flags`.
pub const IFF_UP: u32 = 0x1;
pub const IFF_BROADCAST: u32 = 0x2;
pub const IFF_LOOPBACK: u32 = 0x8;
pub const IFF_NOARP: u32 = 0x80;
/// `ARPHRD_ETHER` from `linux/if_arp.h` (the `type` file).
pub const ARPHRD_ETHER: u16 = 1;

/// Name prefixes of interfaces that are never announced on by default.
/// MetalLB's shipped list is `docker cbr dummy virbr lxcbr veth lo$ cali tunl
/// flannel kube-ipvs cni nodelocaldns`; the rest are the other CNIs' virtual
/// devices (Cilium's `cilium_*`/`lxc*`, overlay tunnels, Weave), which answer
/// ARP for nothing a client on the LAN can reach.
pub const EXCLUDED_PREFIXES: &[&str] = &[
    "docker",
    "cbr",
    "dummy",
    "virbr",
    "lxcbr",
    "lxc",
    "veth",
    "cali",
    "cilium",
    "tunl",
    "flannel",
    "kube-ipvs",
    "kube-bridge",
    "cni",
    "nodelocaldns",
    "vxlan",
    "genev",
    "weave",
    "datapath",
];

/// What the announcer needs to know about one interface.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IfaceFacts {
    pub name: String,
    pub index: u32,
    pub mac: MacAddr,
    /// `IFF_UP`: administratively up (MetalLB's test; carrier is not required,
    /// so a link that flaps keeps its socket).
    pub up: bool,
    pub loopback: bool,
    pub noarp: bool,
    pub broadcast: bool,
    /// Link type is Ethernet.
    pub ethernet: bool,
    /// Enslaved to a bridge, bond, team or VRF; the master answers instead.
    pub has_master: bool,
    /// Has an fe80::/10 address, which NDP needs to be meaningful on the link.
    pub ipv6_link_local: bool,
}

impl IfaceFacts {
    /// An up Ethernet link with broadcast and an IPv6 link-local address: what a
    /// node's uplink usually is (tests and tools start from it and change a field).
    pub fn ethernet(name: &str, index: u32, mac: MacAddr) -> IfaceFacts {
        IfaceFacts {
            name: name.to_string(),
            index,
            mac,
            up: true,
            loopback: false,
            noarp: false,
            broadcast: true,
            ethernet: true,
            has_master: false,
            ipv6_link_local: true,
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Family {
    V4,
    V6,
}

/// Why an interface is not used; for logs and tests.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Skip {
    NotListed,
    Down,
    NotEthernet,
    Loopback,
    NoArp,
    HasMaster,
    VirtualName(&'static str),
    NoBroadcast,
    NoIpv6LinkLocal,
}

/// `Some(reason)` when `f` must not announce addresses of `family`.
/// `explicit` is `L2Advertisement.interfaces` (`None` or empty: all suitable).
pub fn skip_reason(
    f: &IfaceFacts,
    family: Family,
    explicit: Option<&BTreeSet<String>>,
) -> Option<Skip> {
    if let Some(list) = explicit.filter(|l| !l.is_empty()) {
        if !list.contains(&f.name) {
            return Some(Skip::NotListed);
        }
        if !f.up {
            return Some(Skip::Down);
        }
        if !f.ethernet {
            return Some(Skip::NotEthernet);
        }
        return None;
    }
    if !f.up {
        return Some(Skip::Down);
    }
    if f.loopback || f.name == "lo" {
        return Some(Skip::Loopback);
    }
    if !f.ethernet {
        return Some(Skip::NotEthernet);
    }
    if f.noarp {
        return Some(Skip::NoArp);
    }
    if f.has_master {
        return Some(Skip::HasMaster);
    }
    if let Some(p) = EXCLUDED_PREFIXES.iter().find(|p| f.name.starts_with(*p)) {
        return Some(Skip::VirtualName(p));
    }
    match family {
        Family::V4 if !f.broadcast => Some(Skip::NoBroadcast),
        Family::V6 if !f.ipv6_link_local => Some(Skip::NoIpv6LinkLocal),
        _ => None,
    }
}

/// The interfaces to announce an address of `family` on, in input order.
pub fn select<'a>(
    facts: &'a [IfaceFacts],
    family: Family,
    explicit: Option<&BTreeSet<String>>,
) -> Vec<&'a IfaceFacts> {
    facts
        .iter()
        .filter(|f| skip_reason(f, family, explicit).is_none())
        .collect()
}

/// Source of interface facts; the fake in tests returns a fixed list.
pub trait InterfaceSource: Send + Sync + std::fmt::Debug {
    fn list(&self) -> io::Result<Vec<IfaceFacts>>;
}

/// Reads the interfaces of the current network namespace from sysfs/procfs.
#[derive(Clone, Debug)]
pub struct SysfsInterfaces {
    pub class_net: PathBuf,
    pub if_inet6: PathBuf,
}

impl Default for SysfsInterfaces {
    fn default() -> Self {
        SysfsInterfaces {
            class_net: PathBuf::from("/sys/class/net"),
            if_inet6: PathBuf::from("/proc/net/if_inet6"),
        }
    }
}

/// Parses a sysfs number such as `0x1003\n` or `1\n`.
pub fn parse_sysfs_number(s: &str) -> Option<u64> {
    let s = s.trim();
    match s.strip_prefix("0x") {
        Some(hex) => u64::from_str_radix(hex, 16).ok(),
        None => s.parse().ok(),
    }
}

pub fn parse_mac(s: &str) -> Option<MacAddr> {
    let mut out = [0u8; 6];
    let mut parts = s.trim().split(':');
    for b in &mut out {
        *b = u8::from_str_radix(parts.next()?, 16).ok()?;
    }
    parts.next().is_none().then_some(MacAddr(out))
}

/// Names of interfaces with an IPv6 link-local address, from the
/// `/proc/net/if_inet6` format: `address ifindex prefixlen scope flags name`.
pub fn link_local_interfaces(if_inet6: &str) -> BTreeSet<String> {
    if_inet6
        .lines()
        .filter_map(|line| {
            let mut cols = line.split_whitespace();
            let hex = cols.next()?;
            let name = cols.nth(4)?;
            let bits = u128::from_str_radix(hex, 16).ok()?;
            let ip = Ipv6Addr::from(bits);
            // fe80::/10, checked on the address rather than the scope column
            // so that the parse does not depend on scope encodings.
            ((ip.segments()[0] & 0xffc0) == 0xfe80).then(|| name.to_string())
        })
        .collect()
}

impl SysfsInterfaces {
    fn read(&self, name: &str, file: &str) -> io::Result<String> {
        fs::read_to_string(self.class_net.join(name).join(file))
    }

    fn facts(&self, name: &str, ll: &BTreeSet<String>) -> io::Result<IfaceFacts> {
        let bad =
            |what: &str| io::Error::new(io::ErrorKind::InvalidData, format!("{name}: {what}"));
        let flags = parse_sysfs_number(&self.read(name, "flags")?).ok_or_else(|| bad("flags"))?;
        let flags = u32::try_from(flags).map_err(|_| bad("flags"))?;
        let index = parse_sysfs_number(&self.read(name, "ifindex")?)
            .and_then(|i| u32::try_from(i).ok())
            .ok_or_else(|| bad("ifindex"))?;
        let kind = parse_sysfs_number(&self.read(name, "type")?).ok_or_else(|| bad("type"))?;
        // Interfaces without a hardware address (tun, wireguard) have an empty
        // `address`; they are not Ethernet and are skipped anyway.
        let mac = self
            .read(name, "address")
            .ok()
            .and_then(|a| parse_mac(&a))
            .unwrap_or(MacAddr::ZERO);
        Ok(IfaceFacts {
            name: name.to_string(),
            index,
            mac,
            up: flags & IFF_UP != 0,
            loopback: flags & IFF_LOOPBACK != 0,
            noarp: flags & IFF_NOARP != 0,
            broadcast: flags & IFF_BROADCAST != 0,
            ethernet: kind == u64::from(ARPHRD_ETHER),
            has_master: self.class_net.join(name).join("master").exists(),
            ipv6_link_local: ll.contains(name),
        })
    }
}

impl InterfaceSource for SysfsInterfaces {
    fn list(&self) -> io::Result<Vec<IfaceFacts>> {
        // A host without IPv6 has no if_inet6; that only means no NDP.
        let ll = fs::read_to_string(&self.if_inet6)
            .map(|s| link_local_interfaces(&s))
            .unwrap_or_default();
        let mut out = Vec::new();
        for entry in fs::read_dir(&self.class_net)? {
            let name = entry?.file_name().to_string_lossy().into_owned();
            match self.facts(&name, &ll) {
                Ok(f) => out.push(f),
                // An interface removed while we read it is simply gone.
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => return Err(e),
            }
        }
        out.sort_by_key(|f| f.index);
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn eth(name: &str) -> IfaceFacts {
        IfaceFacts::ethernet(name, 2, MacAddr([0, 0, 0x5e, 0, 0x53, 1]))
    }

    fn list(names: &[&str]) -> BTreeSet<String> {
        names.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn plain_ethernet_is_selected_for_both_families() {
        let f = eth("eth0");
        assert_eq!(skip_reason(&f, Family::V4, None), None);
        assert_eq!(skip_reason(&f, Family::V6, None), None);
    }

    #[test]
    fn each_default_rule() {
        let cases: Vec<(IfaceFacts, Skip)> = vec![
            (
                IfaceFacts {
                    up: false,
                    ..eth("eth0")
                },
                Skip::Down,
            ),
            (
                IfaceFacts {
                    loopback: true,
                    ..eth("eth0")
                },
                Skip::Loopback,
            ),
            (eth("lo"), Skip::Loopback),
            (
                IfaceFacts {
                    noarp: true,
                    ..eth("eth0")
                },
                Skip::NoArp,
            ),
            (
                IfaceFacts {
                    has_master: true,
                    ..eth("eth0")
                },
                Skip::HasMaster,
            ),
            (
                IfaceFacts {
                    ethernet: false,
                    ..eth("wg0")
                },
                Skip::NotEthernet,
            ),
        ];
        for (f, want) in cases {
            assert_eq!(skip_reason(&f, Family::V4, None), Some(want), "{f:?}");
            assert_eq!(skip_reason(&f, Family::V6, None), Some(want), "{f:?}");
        }
    }

    #[test]
    fn virtual_names_are_skipped() {
        for name in [
            "docker0",
            "cbr0",
            "dummy0",
            "virbr0",
            "lxcbr0",
            "lxc12ab",
            "veth1234",
            "cali0a1b",
            "cilium_host",
            "tunl0",
            "flannel.1",
            "kube-ipvs0",
            "kube-bridge",
            "cni0",
            "nodelocaldns",
            "vxlan.calico",
            "genev_sys_6081",
            "weave",
            "datapath",
        ] {
            assert!(
                matches!(
                    skip_reason(&eth(name), Family::V4, None),
                    Some(Skip::VirtualName(_))
                ),
                "{name}"
            );
        }
        // Prefix, not substring: a physical NIC that merely contains a word.
        for name in [
            "eth0",
            "ens3",
            "enp0s31f6",
            "bond0",
            "br0",
            "eth0.100",
            "myveth",
        ] {
            assert_eq!(skip_reason(&eth(name), Family::V4, None), None, "{name}");
        }
    }

    #[test]
    fn family_specific_rules() {
        let nobcast = IfaceFacts {
            broadcast: false,
            ..eth("eth1")
        };
        assert_eq!(
            skip_reason(&nobcast, Family::V4, None),
            Some(Skip::NoBroadcast)
        );
        assert_eq!(skip_reason(&nobcast, Family::V6, None), None);
        let noll = IfaceFacts {
            ipv6_link_local: false,
            ..eth("eth1")
        };
        assert_eq!(
            skip_reason(&noll, Family::V6, None),
            Some(Skip::NoIpv6LinkLocal)
        );
        assert_eq!(skip_reason(&noll, Family::V4, None), None);
    }

    #[test]
    fn explicit_list_uses_exactly_the_listed_up_interfaces() {
        let facts = vec![
            eth("eth0"),
            IfaceFacts {
                index: 3,
                ..eth("veth-lab")
            },
            IfaceFacts {
                index: 4,
                has_master: true,
                ..eth("eth2")
            },
            IfaceFacts {
                index: 5,
                up: false,
                ..eth("eth3")
            },
            IfaceFacts {
                index: 6,
                ethernet: false,
                ..eth("wg0")
            },
        ];
        let want = list(&["veth-lab", "eth2", "eth3", "wg0", "missing0"]);
        let names: Vec<_> = select(&facts, Family::V4, Some(&want))
            .into_iter()
            .map(|f| f.name.as_str())
            .collect();
        // Listed virtual and enslaved interfaces are used; down, non-Ethernet,
        // unlisted (eth0) and missing ones are not.
        assert_eq!(names, ["veth-lab", "eth2"]);
        assert_eq!(
            skip_reason(&facts[0], Family::V4, Some(&want)),
            Some(Skip::NotListed)
        );
        assert_eq!(
            skip_reason(&facts[3], Family::V4, Some(&want)),
            Some(Skip::Down)
        );
        assert_eq!(
            skip_reason(&facts[4], Family::V4, Some(&want)),
            Some(Skip::NotEthernet)
        );
    }

    #[test]
    fn empty_explicit_list_means_default_rules() {
        let facts = vec![eth("eth0"), eth("veth0")];
        let names: Vec<_> = select(&facts, Family::V4, Some(&BTreeSet::new()))
            .into_iter()
            .map(|f| f.name.as_str())
            .collect();
        assert_eq!(names, ["eth0"]);
    }

    #[test]
    fn parsers() {
        assert_eq!(parse_sysfs_number("0x1003\n"), Some(0x1003));
        assert_eq!(parse_sysfs_number("772\n"), Some(772));
        assert_eq!(parse_sysfs_number("zz"), None);
        assert_eq!(
            parse_mac("00:00:5e:00:53:0a\n"),
            Some(MacAddr([0, 0, 0x5e, 0, 0x53, 0x0a]))
        );
        assert_eq!(parse_mac("00:00:5e:00:53"), None);
        assert_eq!(parse_mac("00:00:5e:00:53:0a:01"), None);
        assert_eq!(parse_mac(""), None);
        let inet6 = "\
20010db8000000000000000000000001 02 40 00 80     eth0
fe80000000000000021122fffe334455 02 40 20 80     eth0
00000000000000000000000000000001 01 80 10 80       lo
fe80000000000000021122fffe334466 05 40 20 80 flb-t-x
";
        assert_eq!(link_local_interfaces(inet6), list(&["eth0", "flb-t-x"]));
    }

    #[test]
    fn sysfs_lister_reads_loopback() {
        // Every network namespace has `lo`; this checks the real file formats.
        let all = SysfsInterfaces::default()
            .list()
            .expect("read /sys/class/net");
        let lo = all.iter().find(|f| f.name == "lo").expect("lo listed");
        assert!(lo.loopback && !lo.ethernet && lo.index == 1, "{lo:?}");
        // `lo` is down in a fresh namespace, up elsewhere; never selected.
        assert!(matches!(
            skip_reason(lo, Family::V4, None),
            Some(Skip::Loopback | Skip::Down)
        ));
    }
}
