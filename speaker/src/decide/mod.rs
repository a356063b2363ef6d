//! The speaker's decisions, without Kubernetes or sockets: [`state`] (who may announce
//! each address, and the election), [`driver`] (the membership and the announcer tied
//! to them), [`conflicts`] (what to report about other hosts claiming an address) and
//! [`pace`] (how often API changes are acted on).

pub mod conflicts;
pub mod driver;
pub mod pace;
pub mod state;
