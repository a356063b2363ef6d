//! Kubernetes-facing pieces that the controller and the speaker share: the cache of
//! configuration objects ([`stores`]) that feeds `ferrolb_config::Config::build`, and
//! the HTTP endpoints for metrics and probes ([`http`]).

pub mod http;
pub mod stores;
