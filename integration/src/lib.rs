//! ferrolb's integration crate: the lab (a Kubernetes cluster made of
//! network namespaces on one layer-2 segment, see [`lab`]) and the support
//! the e2e tests and benchmarks build on.
//!
//! The `lab` binary drives the same library from the command line
//! (`integration/lab up|env|exec|node-fail|node-recover|restart|status|down`).

pub mod e2e;
pub mod lab;
