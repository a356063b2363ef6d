//! The normalized configuration and the one path that builds it.
//!
//! [`Config::build`] takes every source at once (legacy ConfigMaps and custom resources,
//! in any mix), checks everything, and either returns a [`Config`] in which every
//! reference is resolved and every default is applied, or every error it found. Nothing
//! of a rejected configuration is used: callers keep their last good `Config`.
//!
//! A `Config` does not remember where its parts came from, so a legacy ConfigMap and the
//! CRDs that `ferrolb config convert` makes of it build equal `Config`s.
//!
//! - `types`: the normalized types and [`Sources`].
//! - `build`: the steps of [`Config::build`]; `legacy` and `resources` turn each kind
//!   of source into drafts; `overlap` finds overlapping ranges.
//! - `bgp`, `peer`: BGP advertisements, communities, BFD profiles and peers.

mod bgp;
mod build;
mod legacy;
mod overlap;
mod peer;
mod resources;
mod types;

pub use bgp::{BfdProfile, BgpAdvertisement, CommunityValue};
pub use legacy::{legacy_advertisement_name, legacy_peer_name};
pub use peer::{BgpPeer, DEFAULT_BGP_PORT, Password, PeerAsn, PeerEndpoint};
pub use types::{Config, L2Advertisement, Pool, ServiceAllocation, Sources};
