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

/// All the problems found in a configuration.
#[derive(Clone, Debug, Default, PartialEq, Eq, thiserror::Error)]
pub struct ConfigErrors(pub Vec<ConfigError>);

impl fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} configuration error(s)", self.0.len())?;
        for e in &self.0 {
            write!(f, "\n  {e}")?;
        }
        Ok(())
    }
}

impl ConfigErrors {
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub fn iter(&self) -> impl Iterator<Item = &ConfigError> {
        self.0.iter()
    }
}

/// Collects errors for one object while it is being checked.
#[derive(Debug)]
pub(crate) struct Sink<'a> {
    pub object: ObjectRef,
    pub errors: &'a mut Vec<ConfigError>,
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
