//! Service annotations, in MetalLB's current (`metallb.io/`) and deprecated
//! (`metallb.universe.tf/`) spellings.
//!
//! Both spellings are honoured; when both are present they must agree. Which deprecated
//! keys were used is reported so that callers can emit a warning event.

use std::collections::BTreeMap;
use std::net::IpAddr;

use crate::addr::Family;
use crate::selector::dns1123_subdomain_error;

pub const LOAD_BALANCER_IPS: &str = "metallb.io/loadBalancerIPs";
pub const ADDRESS_POOL: &str = "metallb.io/address-pool";
pub const ALLOW_SHARED_IP: &str = "metallb.io/allow-shared-ip";
/// Written by the controller: the pool the Service's addresses came from.
pub const IP_ALLOCATED_FROM_POOL: &str = "metallb.io/ip-allocated-from-pool";

const DEPRECATED_PREFIX: &str = "metallb.universe.tf/";

/// The allocation requests a Service makes through annotations.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ServiceAnnotations {
    /// Requested addresses: at most one per family.
    pub load_balancer_ips: Vec<IpAddr>,
    pub address_pool: Option<String>,
    pub allow_shared_ip: Option<String>,
    /// Deprecated keys that were used, for a warning.
    pub deprecated: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("annotation {key}: {message}")]
pub struct AnnotationError {
    pub key: String,
    pub message: String,
}

fn lookup<'a>(
    ann: &'a BTreeMap<String, String>,
    key: &str,
    deprecated: &mut Vec<String>,
    errors: &mut Vec<AnnotationError>,
) -> Option<(&'a str, String)> {
    let suffix = key
        .strip_prefix("metallb.io/")
        .expect("current keys use metallb.io/");
    let old_key = format!("{DEPRECATED_PREFIX}{suffix}");
    let new = ann.get(key);
    let old = ann.get(&old_key);
    if old.is_some() {
        deprecated.push(old_key.clone());
    }
    match (new, old) {
        (Some(n), Some(o)) if n.trim() != o.trim() => {
            errors.push(AnnotationError {
                key: key.to_string(),
                message: format!("{key}={n:?} and the deprecated {old_key}={o:?} disagree"),
            });
            None
        }
        (Some(n), _) => Some((n.as_str(), key.to_string())),
        (None, Some(o)) => Some((o.as_str(), old_key)),
        (None, None) => None,
    }
}

/// Reads the annotations that concern allocation. All problems are returned.
pub fn parse(ann: &BTreeMap<String, String>) -> Result<ServiceAnnotations, Vec<AnnotationError>> {
    let mut out = ServiceAnnotations::default();
    let mut errors = Vec::new();

    if let Some((v, key)) = lookup(ann, LOAD_BALANCER_IPS, &mut out.deprecated, &mut errors) {
        let mut fams = BTreeMap::new();
        for part in v.split(',').map(str::trim) {
            match part.parse::<IpAddr>() {
                Err(_) => errors.push(AnnotationError {
                    key: key.clone(),
                    message: format!("{part:?} is not an IP address"),
                }),
                Ok(ip) => {
                    if let Some(prev) = fams.insert(Family::of(&ip), ip) {
                        errors.push(AnnotationError {
                            key: key.clone(),
                            message: format!(
                                "two {} addresses ({prev} and {ip}): at most one per family",
                                Family::of(&ip)
                            ),
                        });
                    }
                    out.load_balancer_ips.push(ip);
                }
            }
        }
    }
    if let Some((v, key)) = lookup(ann, ADDRESS_POOL, &mut out.deprecated, &mut errors) {
        let v = v.trim();
        if v.is_empty() {
            errors.push(AnnotationError {
                key,
                message: "empty pool name".into(),
            });
        } else if v.contains(char::is_whitespace) || v.contains(',') {
            errors.push(AnnotationError {
                key,
                message: format!("{v:?} is not a pool name (one name, no spaces or commas)"),
            });
        } else {
            out.address_pool = Some(v.to_string());
        }
    }
    if let Some((v, key)) = lookup(ann, ALLOW_SHARED_IP, &mut out.deprecated, &mut errors) {
        let v = v.trim();
        if v.is_empty() {
            errors.push(AnnotationError {
                key,
                message: "empty sharing key".into(),
            });
        } else {
            out.allow_shared_ip = Some(v.to_string());
        }
    }
    if errors.is_empty() {
        Ok(out)
    } else {
        Err(errors)
    }
}

/// Whether a pool name could be an object name (legacy names need not be).
pub fn is_crd_pool_name(name: &str) -> bool {
    dns1123_subdomain_error(name).is_none()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ann(kv: &[(&str, &str)]) -> BTreeMap<String, String> {
        kv.iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn reads_current_and_deprecated_forms() {
        let a = parse(&ann(&[
            (LOAD_BALANCER_IPS, "198.51.100.5, 2001:db8::5"),
            ("metallb.universe.tf/address-pool", "prod"),
            (ALLOW_SHARED_IP, "web"),
        ]))
        .unwrap();
        assert_eq!(a.load_balancer_ips.len(), 2);
        assert_eq!(a.address_pool.as_deref(), Some("prod"));
        assert_eq!(a.allow_shared_ip.as_deref(), Some("web"));
        assert_eq!(a.deprecated, ["metallb.universe.tf/address-pool"]);
    }

    #[test]
    fn malformed_values_name_the_annotation() {
        let e = parse(&ann(&[
            (LOAD_BALANCER_IPS, "198.51.100.5,198.51.100.6,nope"),
            (ADDRESS_POOL, "a b"),
            (ALLOW_SHARED_IP, " "),
        ]))
        .unwrap_err();
        let msgs: Vec<String> = e.iter().map(|e| e.to_string()).collect();
        assert_eq!(msgs.len(), 4, "{msgs:?}");
        assert!(msgs[0].contains("at most one per family"));
        assert!(msgs[1].contains("\"nope\" is not an IP address"));
        assert!(msgs[2].starts_with("annotation metallb.io/address-pool"));
        assert!(msgs[3].contains("empty sharing key"));
    }

    #[test]
    fn disagreeing_spellings_are_an_error() {
        let e = parse(&ann(&[
            (ADDRESS_POOL, "a"),
            ("metallb.universe.tf/address-pool", "b"),
        ]))
        .unwrap_err();
        assert!(e[0].message.contains("disagree"));
        assert!(
            parse(&ann(&[
                (ADDRESS_POOL, "a"),
                ("metallb.universe.tf/address-pool", "a")
            ]))
            .is_ok()
        );
    }
}
