//! BGP advertisements, communities and BFD profiles: their normalized types and the
//! checks shared by the legacy and the custom-resource spellings.

use std::collections::BTreeSet;

use crate::error::Sink;
use crate::selector::Selector;

#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum CommunityValue {
    Standard(u16, u16),
    Large(u32, u32, u32),
}

impl std::fmt::Display for CommunityValue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            CommunityValue::Standard(a, b) => write!(f, "{a}:{b}"),
            CommunityValue::Large(a, b, c) => write!(f, "large:{a}:{b}:{c}"),
        }
    }
}

impl std::str::FromStr for CommunityValue {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let bad = || {
            format!(
                "invalid BGP community {s:?} (expected \"AA:NN\" with 16-bit numbers or \"large:A:B:C\" with 32-bit numbers)"
            )
        };
        if let Some(rest) = s.strip_prefix("large:") {
            let parts: Vec<&str> = rest.split(':').collect();
            let [a, b, c] = parts.as_slice() else {
                return Err(bad());
            };
            let p = |x: &str| x.parse::<u32>().map_err(|_| bad());
            return Ok(CommunityValue::Large(p(a)?, p(b)?, p(c)?));
        }
        let (a, b) = s.split_once(':').ok_or_else(bad)?;
        let p = |x: &str| x.parse::<u16>().map_err(|_| bad());
        Ok(CommunityValue::Standard(p(a)?, p(b)?))
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BgpAdvertisement {
    pub name: String,
    pub pools: BTreeSet<String>,
    pub aggregation_length: u8,
    pub aggregation_length_v6: u8,
    pub local_pref: Option<u32>,
    pub communities: BTreeSet<CommunityValue>,
    pub node_selectors: Vec<Selector>,
    /// Empty means every peer.
    pub peers: BTreeSet<String>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BfdProfile {
    pub name: String,
    pub receive_interval_ms: u32,
    pub transmit_interval_ms: u32,
    pub detect_multiplier: u32,
    pub echo_interval_ms: u32,
    pub echo_mode: bool,
    pub passive_mode: bool,
    pub minimum_ttl: u32,
}

/// Aggregation lengths (IPv4, IPv6), defaulting to the full address length.
pub(super) fn aggregation_lengths(
    v4: Option<i32>,
    v6: Option<i32>,
    fields: (&str, &str),
    sink: &mut Sink<'_>,
) -> (u8, u8) {
    let mut check = |v: Option<i32>, max: i32, field: &str| -> u8 {
        match v {
            None => max as u8,
            Some(n) if (0..=max).contains(&n) => n as u8,
            Some(n) => {
                sink.push(
                    field,
                    format!("aggregation length {n} is out of range 0..={max}"),
                );
                max as u8
            }
        }
    };
    (check(v4, 32, fields.0), check(v6, 128, fields.1))
}

pub(super) const CRD_BFD_FIELDS: [&str; 5] = [
    "spec.receiveInterval",
    "spec.transmitInterval",
    "spec.detectMultiplier",
    "spec.echoInterval",
    "spec.minimumTtl",
];
pub(super) const LEGACY_BFD_FIELDS: [&str; 5] = [
    "receive-interval",
    "transmit-interval",
    "detect-multiplier",
    "echo-interval",
    "minimum-ttl",
];

pub(super) fn bfd_profile(
    name: &str,
    v: [Option<u32>; 5],
    echo_mode: Option<bool>,
    passive_mode: Option<bool>,
    fields: [&str; 5],
    sink: &mut Sink<'_>,
) -> BfdProfile {
    // (default, min, max) per MetalLB's CRD.
    const LIMITS: [(u32, u32, u32); 5] = [
        (300, 10, 60000),
        (300, 10, 60000),
        (3, 2, 255),
        (50, 10, 60000),
        (254, 1, 254),
    ];
    let mut out = [0u32; 5];
    for i in 0..5 {
        let (def, min, max) = LIMITS[i];
        out[i] = match v[i] {
            None => def,
            Some(n) if (min..=max).contains(&n) => n,
            Some(n) => {
                sink.push(fields[i], format!("{n} is out of range {min}..={max}"));
                def
            }
        };
    }
    BfdProfile {
        name: name.to_string(),
        receive_interval_ms: out[0],
        transmit_interval_ms: out[1],
        detect_multiplier: out[2],
        echo_interval_ms: out[3],
        minimum_ttl: out[4],
        echo_mode: echo_mode.unwrap_or(false),
        passive_mode: passive_mode.unwrap_or(false),
    }
}
