//! ferrolb controller: hands out LoadBalancer addresses from configured pools.
//!
//! [`allocator`] is the pure bookkeeping core (no I/O, no Kubernetes types);
//! the kube-facing reconcilers are built on top of it.

pub mod allocator;
pub mod engine;
pub mod run;
