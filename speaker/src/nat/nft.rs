//! [`NatTable`] through the `nft` binary: each change is one `nft -f -` script that
//! deletes and recreates the table `inet ferrolb_nat`, which nft applies as a single
//! netlink transaction (packets see the old table or the new one).
//!
//! Why the binary rather than netlink from Rust: the rules use concatenated map lookups
//! feeding payload writes with checksum updates (`tcp dport set ip daddr . tcp dport
//! map @tcp4`), which nft compiles into the right expressions and checksum flags for
//! every family and protocol; the Rust netlink crates for nftables cover only part of
//! that and would have to be checked against the kernel expression by expression. The
//! price is a process per change (a few milliseconds, off the announcement path) and
//! the binary in the image.

use std::fmt::Write as _;
use std::io::Write as _;
use std::net::IpAddr;
use std::path::PathBuf;
use std::process::{Command, Stdio};

use super::{NatError, NatRules, NatTable, Proto};

/// The table this speaker owns (family `inet`).
pub const TABLE: &str = "ferrolb_nat";

/// Drives `nft` (found on `PATH` unless given a path).
#[derive(Clone, Debug)]
pub struct NftTable {
    program: PathBuf,
}

impl Default for NftTable {
    fn default() -> Self {
        Self::new("nft")
    }
}

impl NftTable {
    pub fn new(program: impl Into<PathBuf>) -> Self {
        Self {
            program: program.into(),
        }
    }

    fn run(&self, script: &str) -> Result<(), NatError> {
        let program = self.program.display().to_string();
        let mut child = Command::new(&self.program)
            .args(["-f", "-"])
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|source| NatError::Spawn {
                program: program.clone(),
                source,
            })?;
        if let Some(mut stdin) = child.stdin.take() {
            stdin
                .write_all(script.as_bytes())
                .map_err(|source| NatError::Spawn {
                    program: program.clone(),
                    source,
                })?;
        }
        let out = child.wait_with_output().map_err(|source| NatError::Spawn {
            program: program.clone(),
            source,
        })?;
        if out.status.success() {
            Ok(())
        } else {
            Err(NatError::Failed {
                program,
                status: out.status.to_string(),
                stderr: String::from_utf8_lossy(&out.stderr).trim().to_string(),
            })
        }
    }
}

impl NatTable for NftTable {
    fn apply(&mut self, desired: &NatRules) -> Result<(), NatError> {
        self.run(&script(desired))
    }

    fn clear(&mut self) -> Result<(), NatError> {
        self.run(&script(&NatRules::default()))
    }
}

/// The nft script that makes the table say `rules`. `add` before `delete` makes the
/// delete succeed whether or not the table exists; with no entries the table is gone.
pub fn script(rules: &NatRules) -> String {
    let mut s = format!("add table inet {TABLE}\ndelete table inet {TABLE}\n");
    if rules.is_empty() {
        return s;
    }
    let mut maps = String::new();
    let mut chain = String::new();
    for v6 in [false, true] {
        let node: Option<IpAddr> = if v6 {
            rules.node_v6.map(IpAddr::V6)
        } else {
            rules.node_v4.map(IpAddr::V4)
        };
        let Some(node) = node else { continue };
        let (fam, addr_type, suffix) = if v6 {
            ("ip6", "ipv6_addr", "6")
        } else {
            ("ip", "ipv4_addr", "4")
        };
        for proto in [Proto::Tcp, Proto::Udp, Proto::Sctp] {
            let entries: Vec<_> = rules
                .entries
                .iter()
                .filter(|e| e.proto == proto && e.ip.is_ipv6() == v6)
                .collect();
            if entries.is_empty() {
                continue;
            }
            let elements: Vec<String> = entries
                .iter()
                .map(|e| format!("{} . {} : {}", e.ip, e.port, e.node_port))
                .collect();
            let p = proto.nft();
            let map = format!("{p}{suffix}");
            // Source ranges: a guarded address:port drops every source outside its
            // allowed ranges, before any rewrite.
            let guarded: Vec<String> = entries
                .iter()
                .filter(|e| e.sources.is_some())
                .map(|e| format!("{} . {}", e.ip, e.port))
                .collect();
            if !guarded.is_empty() {
                let allowed: Vec<String> = entries
                    .iter()
                    .flat_map(|e| {
                        e.sources
                            .iter()
                            .flatten()
                            .map(move |n| format!("{} . {} . {n}", e.ip, e.port))
                    })
                    .collect();
                let _ = write!(
                    maps,
                    "	set guard_{map} {{
		type {addr_type} . inet_service
		elements = {{ {} }}
	}}
",
                    guarded.join(", ")
                );
                let _ = write!(
                    maps,
                    "	set allow_{map} {{
		type {addr_type} . inet_service . {addr_type}
		flags interval
"
                );
                if !allowed.is_empty() {
                    let _ = writeln!(maps, "		elements = {{ {} }}", allowed.join(", "));
                }
                maps.push_str(
                    "	}
",
                );
                let _ = writeln!(
                    chain,
                    "		{fam} daddr . {p} dport @guard_{map} {fam} daddr . {p} dport . {fam} saddr != @allow_{map} drop"
                );
            }
            let _ = write!(
                maps,
                "\tmap {map} {{\n\t\ttype {addr_type} . inet_service : inet_service\n\t\telements = {{ {} }}\n\t}}\n",
                elements.join(", ")
            );
            // The port first: its lookup needs the original address.
            let _ = writeln!(
                chain,
                "\t\t{p} dport set {fam} daddr . {p} dport map @{map} {fam} daddr set {node}"
            );
        }
    }
    if chain.is_empty() {
        return s;
    }
    let _ = write!(
        s,
        "table inet {TABLE} {{\n{maps}\tchain prerouting {{\n\t\ttype filter hook prerouting priority mangle; policy accept;\n{chain}\t}}\n\tchain output {{\n\t\ttype route hook output priority mangle; policy accept;\n{chain}\t}}\n}}\n"
    );
    s
}
