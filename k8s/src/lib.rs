//! Kubernetes-facing pieces that the controller and the speaker share: the cache of
//! configuration objects ([`stores`]) that feeds `ferrolb_config::Config::build`, and
//! the HTTP endpoints for metrics and probes ([`http`]), the watch streams of the
//! configuration kinds ([`watch`]) and process start-up ([`process`]).

pub mod events;
pub mod http;
pub mod process;
pub mod stores;
pub mod watch;
