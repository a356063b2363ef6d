//! ferrolb's integration crate: the lab (a Kubernetes cluster made of
//! network namespaces on one layer-2 segment, see [`lab`]) and the support
//! the e2e tests and benchmarks build on: the scenarios of [`e2e`] (any
//! cluster; on the lab through [`e2e::lab_provider`]) and the lab tests'
//! panicking helpers in [`testkit`].
//!
//! The `lab` binary drives the same library from the command line
//! (`integration/lab up|env|exec|node-fail|node-recover|restart|fault|status|down`).

pub mod e2e;
pub mod lab;
pub mod testkit;
