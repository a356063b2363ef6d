//! Validation errors. Every error names the object it is about (kind and name, or the
//! ConfigMap and the pool's name or index inside it) and the field, and validation
//! collects all of them rather than stopping at the first.

use std::fmt;

/// The object an error is about.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum ObjectRef {
    /// A custom resource, e.g. `IPAddressPool/prod`.
    Resource { kind: String, name: String },
    /// An entry of the legacy ConfigMap, e.g. `ConfigMap metallb-system/config:
    /// address-pools[1] (name "prod")`.
    Legacy {
        configmap: String,
        section: &'static str,
        index: usize,
        name: Option<String>,
    },
    /// The legacy ConfigMap as a whole (syntax errors, top-level fields).
    ConfigMap { configmap: String },
    /// A Service (annotations).
    Service { namespace: String, name: String },
}

impl ObjectRef {
    pub fn resource(kind: &str, name: &str) -> Self {
        Self::Resource {
            kind: kind.to_string(),
            name: name.to_string(),
        }
    }
}

impl fmt::Display for ObjectRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ObjectRef::Resource { kind, name } => write!(f, "{kind}/{name}"),
            ObjectRef::Legacy {
                configmap,
                section,
                index,
                name,
            } => {
                write!(f, "ConfigMap {configmap}: {section}[{index}]")?;
                if let Some(name) = name {
                    write!(f, " ({name:?})")?;
                }
                Ok(())
            }
            ObjectRef::ConfigMap { configmap } => write!(f, "ConfigMap {configmap}"),
            ObjectRef::Service { namespace, name } => write!(f, "Service {namespace}/{name}"),
        }
    }
}

/// One problem with one field of one object.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, thiserror::Error)]
#[error("{object}: {field}: {message}")]
pub struct ConfigError {
    pub object: ObjectRef,
    /// Field path in the object's own spelling (`spec.addresses[2]`, `peer-asn`).
    pub field: String,
    pub message: String,
}

/// At most this many errors are reported. A configuration wrong in thousands of places
/// (one range in every pool) needs its first errors fixed, not a list that costs the
/// controller memory and the API server one Event per error.
pub const MAX_REPORTED_ERRORS: usize = 100;

/// The problems found in a configuration: sorted, without duplicates, at most
/// [`MAX_REPORTED_ERRORS`]. When there were more, the last one reported says how many
/// more there were; [`ConfigErrors::total`] counts them all.
#[derive(Clone, Debug, Default, PartialEq, Eq, thiserror::Error)]
pub struct ConfigErrors(pub Vec<ConfigError>, Overflow);

/// The errors found beyond the reported ones.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
struct Overflow {
    omitted: usize,
    /// The last reported error as found, before its message said how many more there were.
    last: Option<Box<ConfigError>>,
}

impl fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} configuration error(s)", self.total())?;
        for e in &self.0 {
            write!(f, "\n  {e}")?;
        }
        Ok(())
    }
}

impl ConfigErrors {
    /// `errors` sorted, deduplicated and summarised (see the type).
    pub fn new(errors: impl IntoIterator<Item = ConfigError>) -> Self {
        Self::summarised(errors.into_iter().collect(), 0)
    }

    /// These errors and `more` (e.g. those found while loading the sources), summarised
    /// together as if they had been found at once.
    pub fn merged(self, more: impl IntoIterator<Item = ConfigError>) -> Self {
        let ConfigErrors(mut list, overflow) = self;
        if let Some(last) = overflow.last {
            list.pop();
            list.push(*last);
        }
        list.extend(more);
        // Every error omitted before sorts after the ones kept, so it stays omitted.
        Self::summarised(list, overflow.omitted)
    }

    fn summarised(mut list: Vec<ConfigError>, omitted: usize) -> Self {
        list.sort();
        list.dedup();
        let omitted = omitted + list.len().saturating_sub(MAX_REPORTED_ERRORS);
        list.truncate(MAX_REPORTED_ERRORS);
        let last = match list.last_mut() {
            Some(e) if omitted > 0 => {
                let found = Box::new(e.clone());
                e.message = format!("{} (and {omitted} more errors not shown)", e.message);
                Some(found)
            }
            _ => None,
        };
        ConfigErrors(list, Overflow { omitted, last })
    }

    /// Every error found, reported or not.
    pub fn total(&self) -> usize {
        self.0.len() + self.1.omitted
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub fn iter(&self) -> impl Iterator<Item = &ConfigError> {
        self.0.iter()
    }
}

/// Errors as they are found, in bounded memory: past a few times
/// [`MAX_REPORTED_ERRORS`], only the first ones in sorted order are kept, and the others
/// counted. (An error found twice after being dropped the first time is counted twice.)
#[derive(Debug, Default)]
pub(crate) struct ErrorList {
    found: Vec<ConfigError>,
    dropped: usize,
}

impl ErrorList {
    pub fn push(&mut self, error: ConfigError) {
        self.found.push(error);
        if self.found.len() >= 4 * MAX_REPORTED_ERRORS {
            self.found.sort();
            self.found.dedup();
            self.dropped += self.found.len().saturating_sub(MAX_REPORTED_ERRORS);
            self.found.truncate(MAX_REPORTED_ERRORS);
        }
    }

    pub fn is_empty(&self) -> bool {
        self.found.is_empty()
    }

    /// The errors in the order found (while fewer than the bound).
    #[cfg(test)]
    pub fn found(&self) -> &[ConfigError] {
        &self.found
    }

    pub fn into_errors(self) -> ConfigErrors {
        ConfigErrors::summarised(self.found, self.dropped)
    }
}

/// Collects errors for one object while it is being checked.
#[derive(Debug)]
pub(crate) struct Sink<'a> {
    pub object: ObjectRef,
    pub errors: &'a mut ErrorList,
}

impl Sink<'_> {
    pub fn push(&mut self, field: impl Into<String>, message: impl Into<String>) {
        self.errors.push(ConfigError {
            object: self.object.clone(),
            field: field.into(),
            message: message.into(),
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn error(i: usize) -> ConfigError {
        ConfigError {
            object: ObjectRef::resource("IPAddressPool", &format!("p{i:04}")),
            field: "spec.addresses[0]".into(),
            message: "bad".into(),
        }
    }

    #[test]
    fn few_errors_are_all_reported() {
        let e = ConfigErrors::new([error(2), error(1), error(2)]);
        assert_eq!(e.0, [error(1), error(2)]);
        assert_eq!(e.total(), 2);
        assert_eq!(
            e.to_string(),
            "2 configuration error(s)\n  IPAddressPool/p0001: spec.addresses[0]: bad\n  IPAddressPool/p0002: spec.addresses[0]: bad"
        );
    }

    #[test]
    fn many_errors_are_capped_and_the_last_says_how_many_more() {
        let e = ConfigErrors::new((0..1000).rev().map(error));
        assert_eq!(e.0.len(), MAX_REPORTED_ERRORS);
        assert_eq!(e.total(), 1000);
        assert_eq!(e.0[0], error(0));
        let last = e.0.last().unwrap();
        assert_eq!(last.object, error(MAX_REPORTED_ERRORS - 1).object);
        assert_eq!(last.message, "bad (and 900 more errors not shown)");
        assert!(e.to_string().starts_with("1000 configuration error(s)\n"));
    }

    #[test]
    fn merging_keeps_the_first_errors_and_the_count() {
        let e = ConfigErrors::new((100..1100).map(error));
        let merged = e.clone().merged((0..10).map(error));
        assert_eq!(merged.total(), 1010);
        assert_eq!(merged.0.len(), MAX_REPORTED_ERRORS);
        assert_eq!(merged.0[0], error(0));
        assert_eq!(merged.0[10], error(100));
        assert_eq!(merged.0.last().unwrap().object, error(189).object);
        assert_eq!(
            merged.0.last().unwrap().message,
            "bad (and 910 more errors not shown)"
        );
        // Errors after the reported ones only add to the count.
        let merged = e.merged([error(5000)]);
        assert_eq!(merged.total(), 1001);
        assert_eq!(merged.0.last().unwrap().object, error(199).object);
    }
}
