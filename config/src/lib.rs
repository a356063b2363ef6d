//! ferrolb's configuration model: MetalLB's legacy ConfigMap and MetalLB's CRDs
//! (`metallb.io`), alone or together, become one validated, normalized [`Config`].
//!
//! The crate is pure: no I/O, no API client, no runtime. The controller, the speaker and
//! the `ferrolb config` command all go through the same [`Config::build`], so a file that
//! `ferrolb config validate` accepts is exactly what the cluster components accept.
//!
//! - [`crd`]: the wire types of MetalLB's custom resources.
//! - [`legacy`]: the wire types of the legacy ConfigMap.
//! - [`model`]: the normalized configuration and its validation.
//! - [`load`]: YAML documents (files, API objects) to [`Sources`].
//! - [`convert`]: legacy ConfigMap to CRDs.
//! - [`annotations`]: Service annotations.

pub mod addr;
pub mod annotations;
pub mod convert;
pub mod crd;
pub mod duration;
pub mod error;
pub mod key;
pub mod legacy;
pub mod load;
pub mod model;
pub mod selector;

pub use addr::{Family, IpRange};
pub use error::{ConfigError, ConfigErrors, ObjectRef};
pub use key::ServiceKey;
pub use model::{Config, Sources};
