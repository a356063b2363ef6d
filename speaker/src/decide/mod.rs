//! The speaker's decision core, without Kubernetes or sockets: from the API objects
//! and the membership's view it decides what this node announces, with which protocol,
//! and returns everything the shell ([`crate::run`]) must do about it.
//!
//! Two steps, so that the failover path stays short:
//!
//! 1. [`eligibility`] turns the API objects ([`inputs`]) into, per address and
//!    protocol, the nodes allowed to announce it and how. It runs only when an API
//!    object changes.
//! 2. Each protocol ([`protocol`]; [`layer2`] today) decides from that and the
//!    membership's live set what this node announces, and carries it out. It runs on
//!    every membership change and needs nothing from the API, so a dead node's
//!    addresses move as fast as the membership notices.
//!
//! [`Driver`] ties the membership and the protocols together; [`conflicts`] decides
//! what to tell people about other hosts claiming an address, and [`pace`] how often
//! the shell asks for step 1.

pub mod conflicts;
pub mod driver;
pub mod eligibility;
pub mod inputs;
pub mod layer2;
pub mod pace;
pub mod protocol;

pub use driver::{
    Driver, KeyChange, MembershipHealth, Observations, Transition, handover_wait, leave,
};
pub use eligibility::{Eligibility, Unannounced};
#[cfg(any(test, feature = "testing"))]
pub use inputs::ApiSnapshot;
pub use inputs::{ApiInputs, EXCLUDE_LABEL, NodeInfo, ServiceInfo, ServiceKey, SliceReadiness};
pub use layer2::{L2Statuses, Layer2, Layer2Observations};
pub use protocol::{AnnouncementChanges, AnnouncementProtocol, Announcing, Liveness, ProtocolName};
