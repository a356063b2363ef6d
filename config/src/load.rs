//! YAML text to [`Sources`]: multi-document files mixing the legacy ConfigMap and CRD
//! objects (also `kind: List`, as `kubectl get -o yaml` writes), and API objects as the
//! controller receives them.
//!
//! Two kinds of failure are kept apart because callers treat them differently:
//! [`LoadError::Syntax`] (not YAML, or not the shape of any object: the file is unusable)
//! and configuration errors found while reading a well-formed object (wrong field types,
//! unknown fields), which are [`ConfigError`]s like every validation error.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, PoisonError};

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::{
    JSONSchemaProps, JSONSchemaPropsOrArray, JSONSchemaPropsOrBool,
};
use kube_core::{CustomResourceExt, Resource};
use serde::de::DeserializeOwned;
use serde_json::Value;

use crate::crd;
use crate::error::{ConfigError, ObjectRef};
use crate::legacy::{self, LegacyConfig};
use crate::model::Sources;

/// The largest YAML text read. The API server keeps no object over about 1.5 MiB (a
/// ConfigMap's data at most 1 MiB), and a file with 100,000 pools is about 15 MB: the limit
/// is far above both, and bounds what the parser allocates (several times the text).
pub const MAX_YAML_BYTES: usize = 64 << 20;

/// The deepest nesting of collections read. A ferrolb object nests 7 levels (a List's
/// items, spec, serviceAllocation, serviceSelectors, matchExpressions, values); the
/// parser refuses more than 128 levels itself, but only after reading the whole document,
/// and flow collections (`[[[...`) cost it time quadratic in their depth (100,000 levels:
/// 45 s), so they are counted before parsing.
pub const MAX_YAML_DEPTH: usize = 128;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LoadError {
    /// The text is not YAML at all.
    #[error("line {line}: {message}")]
    Syntax { line: usize, message: String },
    /// The text is past [`MAX_YAML_BYTES`] or [`MAX_YAML_DEPTH`]: refused unread.
    #[error("{0}")]
    OverLimit(String),
}

/// Refuses a text past [`MAX_YAML_BYTES`] or nesting flow collections past
/// [`MAX_YAML_DEPTH`], in one pass over it.
fn check_limits(text: &str) -> Result<(), String> {
    check_limits_of(text, MAX_YAML_BYTES, MAX_YAML_DEPTH)
}

fn check_limits_of(text: &str, max_bytes: usize, max_depth: usize) -> Result<(), String> {
    if text.len() > max_bytes {
        return Err(format!(
            "the text is {} bytes, more than the limit of {max_bytes} bytes",
            text.len()
        ));
    }
    match deep_flow_line(text, max_depth) {
        Some(line) => Err(format!(
            "line {line}: collections nested deeper than the limit of {max_depth} levels"
        )),
        None => Ok(()),
    }
}

/// The line where flow collections (`[`, `{`) first nest deeper than `max_depth`.
///
/// Counts the brackets that start a token (at the start of a line, after a space, or after
/// a flow indicator inside a flow collection) outside quoted scalars and comments: the
/// parser's flow collections, and possibly brackets in block scalars, which can only make
/// the count larger. Block
/// collections are left to the parser, which refuses them past 128 levels in linear time.
fn deep_flow_line(text: &str, max_depth: usize) -> Option<usize> {
    #[derive(PartialEq)]
    enum In {
        Plain,
        Comment,
        Single,
        Double,
    }
    let mut state = In::Plain;
    let mut depth = 0usize;
    let mut line = 1;
    let mut prev = b'\n';
    let mut escaped = false;
    for &c in text.as_bytes() {
        // Inside a flow collection its indicators end a token; elsewhere (`a[1]`, `a,[`)
        // they are part of a plain scalar.
        let token_start = matches!(prev, b' ' | b'\t' | b'\n' | b'\r')
            || (depth > 0 && matches!(prev, b'[' | b'{' | b',' | b':'));
        match state {
            In::Comment if c == b'\n' => state = In::Plain,
            In::Comment => {}
            In::Single if c == b'\'' => state = In::Plain,
            In::Single => {}
            In::Double if escaped => escaped = false,
            In::Double if c == b'\\' => escaped = true,
            In::Double if c == b'"' => state = In::Plain,
            In::Double => {}
            In::Plain => match c {
                b'#' if matches!(prev, b' ' | b'\t' | b'\n' | b'\r') => state = In::Comment,
                b'\'' if token_start => state = In::Single,
                b'"' if token_start => state = In::Double,
                b'[' | b'{' if token_start => {
                    depth += 1;
                    if depth > max_depth {
                        return Some(line);
                    }
                }
                b']' | b'}' => depth = depth.saturating_sub(1),
                _ => {}
            },
        }
        if c == b'\n' {
            line += 1;
        }
        prev = c;
    }
    None
}

/// The parser's own refusal of deep block nesting, said as the limit it is.
fn depth_message(message: String) -> String {
    if message.starts_with("recursion limit exceeded") {
        format!("collections nested deeper than the limit of {MAX_YAML_DEPTH} levels")
    } else {
        message
    }
}

/// What a text held.
#[derive(Debug, Default)]
pub struct Loaded {
    pub sources: Sources,
    /// Problems with individual objects (their other objects still load).
    pub errors: Vec<ConfigError>,
    /// Objects that are not configuration, skipped (e.g. a Namespace in the same file).
    pub skipped: Vec<String>,
}

/// Splits a YAML stream at document markers, keeping each document's first line number.
fn documents(text: &str) -> Vec<(usize, String)> {
    let mut docs = Vec::new();
    let mut cur = String::new();
    let mut start = 1;
    for (i, line) in text.lines().enumerate() {
        let is_marker = line == "---" || line.starts_with("--- ") || line.starts_with("---\t");
        if is_marker {
            docs.push((start, std::mem::take(&mut cur)));
            start = i + 2;
            // Content after the marker on the same line belongs to the new document.
            let rest = line[3..].trim();
            if !rest.is_empty() && !rest.starts_with('#') {
                cur.push_str(rest);
                cur.push('\n');
                start = i + 1;
            }
            continue;
        }
        if line == "..." {
            continue;
        }
        cur.push_str(line);
        cur.push('\n');
    }
    docs.push((start, cur));
    docs
}

/// Parses every document of a YAML text.
pub fn from_yaml(text: &str) -> Result<Loaded, LoadError> {
    check_limits(text).map_err(LoadError::OverLimit)?;
    let mut out = Loaded::default();
    for (first_line, doc) in documents(text) {
        let value: Value = match serde_norway::from_str::<Option<Value>>(&doc) {
            Ok(Some(v)) => v,
            Ok(None) => continue,
            Err(e) => {
                let line = e
                    .location()
                    .map_or(first_line, |l| first_line + l.line() - 1);
                return Err(LoadError::Syntax {
                    line,
                    message: depth_message(strip_location(&e.to_string())),
                });
            }
        };
        if value.is_null() {
            continue;
        }
        add_object(value, &mut out).map_err(|message| LoadError::Syntax {
            line: first_line,
            message,
        })?;
    }
    Ok(out)
}

fn strip_location(s: &str) -> String {
    match s.rfind(" at line ") {
        Some(i) => s[..i].to_string(),
        None => s.to_string(),
    }
}

/// Adds one API object (already parsed) to `out`. An `Err` means the value is not an
/// object with `apiVersion` and `kind`.
pub fn add_object(value: Value, out: &mut Loaded) -> Result<(), String> {
    let api_version = value
        .get("apiVersion")
        .and_then(Value::as_str)
        .ok_or("document has no apiVersion: not a Kubernetes object")?
        .to_string();
    let kind = value
        .get("kind")
        .and_then(Value::as_str)
        .ok_or("document has no kind: not a Kubernetes object")?
        .to_string();
    let name = value
        .pointer("/metadata/name")
        .and_then(Value::as_str)
        .unwrap_or("<unnamed>")
        .to_string();
    let object = ObjectRef::resource(&kind, &name);
    match (api_version.as_str(), kind.as_str()) {
        ("v1", "List") => {
            let items = value
                .get("items")
                .and_then(Value::as_array)
                .cloned()
                .unwrap_or_default();
            for item in items {
                add_object(item, out)?;
            }
        }
        ("v1", "ConfigMap") => {
            let ns = value
                .pointer("/metadata/namespace")
                .and_then(Value::as_str)
                .unwrap_or(legacy::DEFAULT_NAMESPACE);
            let cm = format!("{ns}/{name}");
            match value
                .pointer(&format!("/data/{}", legacy::DATA_KEY))
                .and_then(Value::as_str)
            {
                None => out.errors.push(ConfigError {
                    object: ObjectRef::ConfigMap { configmap: cm },
                    field: format!("data.{}", legacy::DATA_KEY),
                    message: "missing: the legacy configuration lives under this key".into(),
                }),
                Some(text) => match parse_legacy(text) {
                    Ok(lc) => out.sources.legacy.push((cm, lc)),
                    Err((field, message)) => out.errors.push(ConfigError {
                        object: ObjectRef::ConfigMap { configmap: cm },
                        field,
                        message,
                    }),
                },
            }
        }
        (v, k) if v.starts_with(crd::GROUP) => {
            let version = v.split_once('/').map_or("", |(_, ver)| ver);
            let (errors, sources) = (&mut out.errors, &mut out.sources);
            match (k, version) {
                ("IPAddressPool", "v1beta1") => sources.pools.extend(typed(value, &object, errors)),
                ("L2Advertisement", "v1beta1") => {
                    sources.l2_advertisements.extend(typed(value, &object, errors))
                }
                ("BGPAdvertisement", "v1beta1") => {
                    sources.bgp_advertisements.extend(typed(value, &object, errors))
                }
                ("BGPPeer", "v1beta2") => sources.bgp_peers.extend(typed(value, &object, errors)),
                ("Community", "v1beta1") => sources.communities.extend(typed(value, &object, errors)),
                ("BFDProfile", "v1beta1") => sources.bfd_profiles.extend(typed(value, &object, errors)),
                ("ServiceL2Status", "v1beta1") => {
                    out.skipped.push(format!("{kind}/{name} (status, not configuration)"))
                }
                _ => errors.push(ConfigError {
                    object: object.clone(),
                    field: "apiVersion".into(),
                    message: format!(
                        "{api_version} {kind} is not a configuration object ferrolb knows (IPAddressPool, L2Advertisement, BGPAdvertisement, Community, BFDProfile: metallb.io/v1beta1; BGPPeer: metallb.io/v1beta2)"
                    ),
                }),
            }
        }
        _ => out.skipped.push(format!("{kind}/{name} ({api_version})")),
    }
    Ok(())
}

/// Parses the legacy ConfigMap's `config` text. `Err((field, message))`.
pub fn parse_legacy(text: &str) -> Result<LegacyConfig, (String, String)> {
    check_limits(text).map_err(|message| (legacy::DATA_KEY.to_string(), message))?;
    let de = serde_norway::Deserializer::from_str(text);
    match serde_path_to_error::deserialize::<_, Option<LegacyConfig>>(de) {
        Ok(v) => Ok(v.unwrap_or_default()),
        Err(e) => {
            let path = e.path().to_string();
            let inner = e.into_inner();
            let line = inner
                .location()
                .map(|l| format!(" (line {} of data.config)", l.line()))
                .unwrap_or_default();
            let field = if path == "." || path.is_empty() {
                legacy::DATA_KEY.to_string()
            } else {
                path
            };
            Err((
                field,
                format!(
                    "{}{line}",
                    depth_message(strip_location(&inner.to_string()))
                ),
            ))
        }
    }
}

/// Deserializes a typed object, reporting type errors and unknown fields with their path.
fn typed<T: DeserializeOwned + CustomResourceExt + Resource<DynamicType = ()>>(
    mut value: Value,
    object: &ObjectRef,
    errors: &mut Vec<ConfigError>,
) -> Option<T> {
    // An absent spec means an empty one (an L2Advertisement with no spec advertises
    // every pool); required fields inside it are still reported as missing.
    if let Some(map) = value.as_object_mut() {
        map.entry("spec")
            .or_insert_with(|| Value::Object(Default::default()));
    }
    // The API server prunes fields its schema does not know; a file does not, and an
    // unknown field there is nearly always a typo that would silently change nothing.
    if let Some(schema) = spec_schema::<T>() {
        for path in unknown_fields(value.get("spec"), &schema, "spec") {
            errors.push(ConfigError {
                object: object.clone(),
                field: path,
                message: "unknown field".into(),
            });
        }
    }
    match serde_path_to_error::deserialize::<_, T>(value) {
        Ok(t) => Some(t),
        Err(e) => {
            errors.push(ConfigError {
                object: object.clone(),
                field: e.path().to_string(),
                message: e.into_inner().to_string(),
            });
            None
        }
    }
}

/// The schema of `T`'s spec, made once per kind: making it costs far more than reading
/// an object (once per object, 100,000 pools took a minute).
fn spec_schema<T: CustomResourceExt + Resource<DynamicType = ()>>() -> Option<Arc<JSONSchemaProps>>
{
    static SCHEMAS: Mutex<BTreeMap<String, Option<Arc<JSONSchemaProps>>>> =
        Mutex::new(BTreeMap::new());
    let mut schemas = SCHEMAS.lock().unwrap_or_else(PoisonError::into_inner);
    schemas
        .entry(T::kind(&()).into_owned())
        .or_insert_with(|| {
            T::crd()
                .spec
                .versions
                .first()
                .and_then(|v| v.schema.as_ref())
                .and_then(|s| s.open_api_v3_schema.as_ref())
                .and_then(|s| s.properties.as_ref())
                .and_then(|p| p.get("spec"))
                .cloned()
                .map(Arc::new)
        })
        .clone()
}

/// Paths in `value` that `schema` does not declare, as the API server would prune them.
fn unknown_fields(value: Option<&Value>, schema: &JSONSchemaProps, path: &str) -> Vec<String> {
    let mut out = Vec::new();
    if schema.x_kubernetes_preserve_unknown_fields == Some(true) {
        return out;
    }
    match value {
        Some(Value::Object(map)) => {
            let additional = match &schema.additional_properties {
                Some(JSONSchemaPropsOrBool::Schema(s)) => Some(&**s),
                _ => None,
            };
            for (k, v) in map {
                let p = format!("{path}.{k}");
                match schema
                    .properties
                    .as_ref()
                    .and_then(|props| props.get(k))
                    .or(additional)
                {
                    Some(sub) => out.extend(unknown_fields(Some(v), sub, &p)),
                    None if schema.additional_properties.is_some() => {}
                    None => out.push(p),
                }
            }
        }
        Some(Value::Array(items)) => {
            if let Some(JSONSchemaPropsOrArray::Schema(sub)) = &schema.items {
                for (i, v) in items.iter().enumerate() {
                    out.extend(unknown_fields(Some(v), sub, &format!("{path}[{i}]")));
                }
            }
        }
        _ => {}
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_documents_with_line_numbers() {
        let docs = documents("a: 1\n---\nb: 2\nc: 3\n--- # comment\nd: 4\n");
        let starts: Vec<usize> = docs.iter().map(|d| d.0).collect();
        assert_eq!(starts, [1, 3, 6]);
    }

    #[test]
    fn syntax_error_has_the_file_line() {
        let text = "apiVersion: v1\nkind: List\n---\napiVersion: metallb.io/v1beta1\nkind: IPAddressPool\nspec: [unclosed\n";
        match from_yaml(text) {
            Err(LoadError::Syntax { line, .. }) => assert!((6..=7).contains(&line), "{line}"),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn type_errors_and_unknown_fields_name_the_field() {
        let text = "apiVersion: metallb.io/v1beta1\nkind: IPAddressPool\nmetadata: {name: p}\nspec:\n  addresses: [198.51.100.0/24]\n  autoassign: false\n---\napiVersion: metallb.io/v1beta1\nkind: IPAddressPool\nmetadata: {name: q}\nspec:\n  addresses: [198.51.101.0/24]\n  autoAssign: nope\n";
        let l = from_yaml(text).unwrap();
        let msgs: Vec<String> = l.errors.iter().map(|e| e.to_string()).collect();
        assert_eq!(l.sources.pools.len(), 1);
        assert!(
            msgs[0].starts_with("IPAddressPool/p: spec.autoassign: unknown field"),
            "{msgs:?}"
        );
        assert!(
            msgs[1].starts_with("IPAddressPool/q: spec.autoAssign: invalid type"),
            "{msgs:?}"
        );
    }

    #[test]
    fn legacy_type_error_names_field_and_line() {
        let err = parse_legacy("address-pools:\n- name: a\n  protocol: layer2\n  addresses: [198.51.100.1/32]\n  auto-assign: maybe\n").unwrap_err();
        assert_eq!(err.0, "address-pools[0].auto-assign");
        assert!(err.1.contains("line 5"), "{err:?}");
        let err = parse_legacy("address-pools:\n- name: a\n  protocl: layer2\n").unwrap_err();
        assert!(err.1.contains("unknown field `protocl`"), "{err:?}");
    }

    #[test]
    fn flow_nesting_past_the_limit_is_refused_before_parsing() {
        let deep = format!("a:\n  b: {}{}\n", "[".repeat(100_000), "]".repeat(100_000));
        match from_yaml(&deep) {
            Err(LoadError::OverLimit(m)) => assert_eq!(
                m,
                "line 2: collections nested deeper than the limit of 128 levels"
            ),
            other => panic!("{other:?}"),
        }
        let (field, message) =
            parse_legacy(&format!("peers: {}{}", "[".repeat(200), "]".repeat(200))).unwrap_err();
        assert_eq!(field, "config");
        assert!(message.contains("limit of 128 levels"), "{message}");
        // Block nesting is the parser's to refuse; the message names the same limit.
        let block = format!("a:\n{}x\n", "- ".repeat(200));
        match from_yaml(&block) {
            Err(LoadError::Syntax { message, .. }) => assert_eq!(
                message,
                "collections nested deeper than the limit of 128 levels"
            ),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn counts_only_brackets_that_open_flow_collections() {
        assert_eq!(deep_flow_line(&"[".repeat(128), 128), None);
        assert_eq!(
            deep_flow_line(&format!("\n{}", "{".repeat(129)), 128),
            Some(2)
        );
        let not_nesting = "a: '[[[[' # [[[[\nb: x[[[[, y]\nc: \"[[\\\"[[\"\nd: [[1], [2]]\n";
        assert_eq!(deep_flow_line(not_nesting, 2), None);
        assert_eq!(deep_flow_line(not_nesting, 1), Some(4));
    }

    #[test]
    fn text_past_the_size_limit_is_refused() {
        assert_eq!(check_limits_of("a: 1\n", 5, 1), Ok(()));
        assert_eq!(
            check_limits_of("a: 12\n", 5, 1),
            Err("the text is 6 bytes, more than the limit of 5 bytes".into())
        );
        let big = " ".repeat(MAX_YAML_BYTES + 1);
        assert!(matches!(from_yaml(&big), Err(LoadError::OverLimit(_))));
        assert_eq!(parse_legacy(&big).unwrap_err().0, "config");
    }

    #[test]
    fn lists_and_foreign_objects() {
        let text = "apiVersion: v1\nkind: List\nitems:\n- apiVersion: metallb.io/v1beta1\n  kind: L2Advertisement\n  metadata: {name: l2}\n- apiVersion: v1\n  kind: Namespace\n  metadata: {name: metallb-system}\n";
        let l = from_yaml(text).unwrap();
        assert_eq!(l.sources.l2_advertisements.len(), 1);
        assert_eq!(l.skipped, ["Namespace/metallb-system (v1)"]);
        assert!(l.errors.is_empty());
    }
}
