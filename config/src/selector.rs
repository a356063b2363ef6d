//! Label selectors: validated once into [`Selector`], then matched against label maps.
//!
//! Keys and values follow Kubernetes' rules (qualified names, 63-character values), so a
//! selector that the API server would refuse is refused here with the same reason.

use std::collections::{BTreeMap, BTreeSet};

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, LabelSelectorRequirement};

use crate::error::Sink;

#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Operator {
    In(BTreeSet<String>),
    NotIn(BTreeSet<String>),
    Exists,
    DoesNotExist,
}

#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Requirement {
    pub key: String,
    pub op: Operator,
}

/// A validated label selector. The empty selector matches everything, as in Kubernetes.
#[derive(Clone, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Selector {
    pub requirements: BTreeSet<Requirement>,
}

impl Selector {
    pub fn matches(&self, labels: &BTreeMap<String, String>) -> bool {
        self.requirements.iter().all(|r| {
            let v = labels.get(&r.key);
            match &r.op {
                Operator::In(vals) => v.is_some_and(|v| vals.contains(v)),
                Operator::NotIn(vals) => v.is_none_or(|v| !vals.contains(v)),
                Operator::Exists => v.is_some(),
                Operator::DoesNotExist => v.is_none(),
            }
        })
    }

    /// Back to the API form, with `matchLabels` for single-value `In` requirements.
    pub fn to_label_selector(&self) -> LabelSelector {
        let mut match_labels = BTreeMap::new();
        let mut exprs = Vec::new();
        for r in &self.requirements {
            match &r.op {
                Operator::In(v) if v.len() == 1 && !match_labels.contains_key(&r.key) => {
                    match_labels
                        .insert(r.key.clone(), v.iter().next().cloned().unwrap_or_default());
                }
                op => {
                    let (operator, values) = match op {
                        Operator::In(v) => ("In", Some(v.iter().cloned().collect())),
                        Operator::NotIn(v) => ("NotIn", Some(v.iter().cloned().collect())),
                        Operator::Exists => ("Exists", None),
                        Operator::DoesNotExist => ("DoesNotExist", None),
                    };
                    exprs.push(LabelSelectorRequirement {
                        key: r.key.clone(),
                        operator: operator.to_string(),
                        values,
                    });
                }
            }
        }
        LabelSelector {
            match_labels: (!match_labels.is_empty()).then_some(match_labels),
            match_expressions: (!exprs.is_empty()).then_some(exprs),
        }
    }
}

/// Validates an API label selector; problems go to `sink` under `field`.
pub(crate) fn parse(sel: &LabelSelector, field: &str, sink: &mut Sink<'_>) -> Option<Selector> {
    let mut ok = true;
    let mut requirements = BTreeSet::new();
    for (k, v) in sel.match_labels.iter().flatten() {
        let f = format!("{field}.matchLabels[{k:?}]");
        ok &= check_key(k, &f, sink);
        ok &= check_value(v, &f, sink);
        requirements.insert(Requirement {
            key: k.clone(),
            op: Operator::In(BTreeSet::from([v.clone()])),
        });
    }
    for (i, e) in sel.match_expressions.iter().flatten().enumerate() {
        let f = format!("{field}.matchExpressions[{i}]");
        ok &= check_key(&e.key, &format!("{f}.key"), sink);
        let values: BTreeSet<String> = e.values.iter().flatten().cloned().collect();
        for v in &values {
            ok &= check_value(v, &format!("{f}.values"), sink);
        }
        let op = match e.operator.as_str() {
            "In" | "NotIn" if values.is_empty() => {
                sink.push(
                    format!("{f}.values"),
                    format!("operator {} needs at least one value", e.operator),
                );
                ok = false;
                continue;
            }
            "In" => Operator::In(values),
            "NotIn" => Operator::NotIn(values),
            "Exists" | "DoesNotExist" if !values.is_empty() => {
                sink.push(
                    format!("{f}.values"),
                    format!("operator {} takes no values", e.operator),
                );
                ok = false;
                continue;
            }
            "Exists" => Operator::Exists,
            "DoesNotExist" => Operator::DoesNotExist,
            other => {
                sink.push(
                    format!("{f}.operator"),
                    format!(
                        "unknown operator {other:?} (expected In, NotIn, Exists or DoesNotExist)"
                    ),
                );
                ok = false;
                continue;
            }
        };
        requirements.insert(Requirement {
            key: e.key.clone(),
            op,
        });
    }
    ok.then_some(Selector { requirements })
}

fn check_key(key: &str, field: &str, sink: &mut Sink<'_>) -> bool {
    match key_error(key) {
        None => true,
        Some(why) => {
            sink.push(field, format!("invalid label key {key:?}: {why}"));
            false
        }
    }
}

fn check_value(value: &str, field: &str, sink: &mut Sink<'_>) -> bool {
    match value_error(value) {
        None => true,
        Some(why) => {
            sink.push(field, format!("invalid label value {value:?}: {why}"));
            false
        }
    }
}

/// Kubernetes qualified name: optional DNS-1123 subdomain prefix and `/`, then a name.
pub fn key_error(key: &str) -> Option<String> {
    let (prefix, name) = match key.split_once('/') {
        Some((p, n)) => (Some(p), n),
        None => (None, key),
    };
    if let Some(e) = prefix.and_then(dns1123_subdomain_error) {
        return Some(format!("prefix {e}"));
    }
    if name.is_empty() {
        return Some("name part must not be empty".into());
    }
    value_error(name)
}

/// Label value: empty, or up to 63 of `[A-Za-z0-9_.-]`, starting and ending alphanumeric.
pub fn value_error(v: &str) -> Option<String> {
    if v.is_empty() {
        return None;
    }
    if v.len() > 63 {
        return Some("must be at most 63 characters".into());
    }
    let bytes = v.as_bytes();
    let alnum = |b: u8| b.is_ascii_alphanumeric();
    if !alnum(bytes[0]) || !alnum(bytes[bytes.len() - 1]) {
        return Some("must start and end with an alphanumeric character".into());
    }
    if !bytes
        .iter()
        .all(|b| alnum(*b) || matches!(b, b'-' | b'_' | b'.'))
    {
        return Some("may contain only alphanumerics, '-', '_' and '.'".into());
    }
    None
}

/// DNS-1123 label (namespace names, most object names' parts): `[a-z0-9-]{1,63}`,
/// alphanumeric at both ends.
pub fn dns1123_label_error(v: &str) -> Option<String> {
    if v.is_empty() {
        return Some("must not be empty".into());
    }
    if v.len() > 63 {
        return Some("must be at most 63 characters".into());
    }
    let b = v.as_bytes();
    let ok = |c: u8| c.is_ascii_lowercase() || c.is_ascii_digit();
    if !ok(b[0]) || !ok(b[b.len() - 1]) || !b.iter().all(|c| ok(*c) || *c == b'-') {
        return Some(
            "must consist of lower-case alphanumerics or '-', and start and end with an alphanumeric"
                .into(),
        );
    }
    None
}

/// DNS-1123 subdomain (object names): dot-separated labels, at most 253 characters.
pub fn dns1123_subdomain_error(v: &str) -> Option<String> {
    if v.is_empty() {
        return Some("must not be empty".into());
    }
    if v.len() > 253 {
        return Some("must be at most 253 characters".into());
    }
    if v.split('.').any(|l| dns1123_label_error(l).is_some()) {
        return Some("must be a lower-case DNS subdomain (e.g. 'example.com')".into());
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::{ConfigError, ErrorList, ObjectRef};

    fn sel(yaml: &str) -> (Option<Selector>, Vec<ConfigError>) {
        let ls: LabelSelector = serde_norway::from_str(yaml).unwrap();
        let mut errors = ErrorList::default();
        let mut sink = Sink {
            object: ObjectRef::resource("L2Advertisement", "x"),
            errors: &mut errors,
        };
        let s = parse(&ls, "spec.nodeSelectors[0]", &mut sink);
        (s, errors.found().to_vec())
    }

    fn labels(kv: &[(&str, &str)]) -> BTreeMap<String, String> {
        kv.iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn matches_like_kubernetes() {
        let (s, e) = sel(
            "matchLabels: {zone: a}\nmatchExpressions:\n- {key: tier, operator: NotIn, values: [db]}\n- {key: edge, operator: Exists}\n",
        );
        assert!(e.is_empty(), "{e:?}");
        let s = s.unwrap();
        assert!(s.matches(&labels(&[("zone", "a"), ("edge", "")])));
        assert!(!s.matches(&labels(&[("zone", "a"), ("edge", ""), ("tier", "db")])));
        assert!(!s.matches(&labels(&[("zone", "b"), ("edge", "")])));
        assert!(!s.matches(&labels(&[("zone", "a")])));
        assert!(Selector::default().matches(&labels(&[])));
    }

    #[test]
    fn reports_every_problem_with_its_field() {
        let (s, e) = sel(
            "matchLabels: {\"bad key!\": ok, good: \"-bad\"}\nmatchExpressions:\n- {key: a, operator: Near, values: [x]}\n- {key: b, operator: In}\n- {key: c, operator: Exists, values: [y]}\n",
        );
        assert!(s.is_none());
        let fields: Vec<&str> = e.iter().map(|e| e.field.as_str()).collect();
        assert_eq!(
            fields,
            [
                "spec.nodeSelectors[0].matchLabels[\"bad key!\"]",
                "spec.nodeSelectors[0].matchLabels[\"good\"]",
                "spec.nodeSelectors[0].matchExpressions[0].operator",
                "spec.nodeSelectors[0].matchExpressions[1].values",
                "spec.nodeSelectors[0].matchExpressions[2].values",
            ]
        );
    }

    #[test]
    fn round_trips_to_api_form() {
        let (s, _) = sel(
            "matchLabels: {zone: a}\nmatchExpressions:\n- {key: tier, operator: In, values: [db, web]}\n",
        );
        let s = s.unwrap();
        let mut errors = ErrorList::default();
        let mut sink = Sink {
            object: ObjectRef::resource("x", "y"),
            errors: &mut errors,
        };
        assert_eq!(parse(&s.to_label_selector(), "f", &mut sink), Some(s));
    }

    #[test]
    fn names() {
        assert!(key_error("example.com/zone").is_none());
        assert!(key_error("Example.com/zone").is_some());
        assert!(key_error("/zone").is_some());
        assert!(dns1123_label_error("metallb-system").is_none());
        assert!(dns1123_label_error("Metallb").is_some());
        assert!(value_error(&"a".repeat(64)).is_some());
    }
}
