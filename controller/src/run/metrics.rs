//! Prometheus metrics under MetalLB's names, plus ferrolb's own.

use std::sync::Arc;

use ferrolb_config::Family;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family as MetricFamily;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

use crate::engine::Engine;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PoolLabel {
    pub pool: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PoolFamilyLabel {
    pub pool: String,
    pub family: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReasonLabel {
    pub reason: String,
}

#[derive(Debug, Default)]
pub struct Metrics {
    pub in_use: MetricFamily<PoolLabel, Gauge<f64, std::sync::atomic::AtomicU64>>,
    pub total: MetricFamily<PoolLabel, Gauge<f64, std::sync::atomic::AtomicU64>>,
    pub in_use_family: MetricFamily<PoolFamilyLabel, Gauge<f64, std::sync::atomic::AtomicU64>>,
    pub total_family: MetricFamily<PoolFamilyLabel, Gauge<f64, std::sync::atomic::AtomicU64>>,
    pub config_loaded: Gauge,
    pub config_stale: Gauge,
    pub updates: Counter,
    pub update_errors: Counter,
    pub allocation_failures: MetricFamily<ReasonLabel, Counter>,
    pub config_errors: Gauge,
    pub is_leader: Gauge,
}

impl Metrics {
    pub fn register(self: &Arc<Self>, r: &mut Registry) {
        r.register(
            "metallb_allocator_addresses_in_use_total",
            "Number of IP addresses in use, per pool",
            self.in_use.clone(),
        );
        r.register(
            "metallb_allocator_addresses_total",
            "Number of usable IP addresses, per pool",
            self.total.clone(),
        );
        r.register(
            "ferrolb_allocator_addresses_in_use",
            "Number of IP addresses in use, per pool and family",
            self.in_use_family.clone(),
        );
        r.register(
            "ferrolb_allocator_addresses",
            "Number of usable IP addresses, per pool and family",
            self.total_family.clone(),
        );
        r.register(
            "metallb_k8s_client_config_loaded_bool",
            "1 if a valid configuration has been loaded",
            self.config_loaded.clone(),
        );
        r.register(
            "metallb_k8s_client_config_stale_bool",
            "1 if the configuration in the cluster is invalid and an older one is in force",
            self.config_stale.clone(),
        );
        r.register(
            "metallb_k8s_client_updates",
            "Number of Kubernetes object updates processed",
            self.updates.clone(),
        );
        r.register(
            "metallb_k8s_client_update_errors",
            "Number of failed writes to the Kubernetes API",
            self.update_errors.clone(),
        );
        r.register(
            "ferrolb_controller_allocation_failures",
            "Allocations that could not be made, by reason",
            self.allocation_failures.clone(),
        );
        r.register(
            "ferrolb_controller_config_errors",
            "Number of errors in the configuration currently in the cluster",
            self.config_errors.clone(),
        );
        r.register(
            "ferrolb_controller_is_leader",
            "1 on the replica that holds the leader lease",
            self.is_leader.clone(),
        );
    }

    /// Refreshes the allocator gauges from the engine (f64: exact up to 2^53, close beyond).
    pub fn observe(&self, engine: &Engine) {
        let Some(cfg) = engine.config() else { return };
        self.in_use.clear();
        self.total.clear();
        self.in_use_family.clear();
        self.total_family.clear();
        for name in cfg.pools.keys() {
            let mut sum_in_use = 0f64;
            let mut sum_total = 0f64;
            for (fam, af) in [
                (Family::V4, crate::allocator::Family::V4),
                (Family::V6, crate::allocator::Family::V6),
            ] {
                let Some(st) = engine.allocator().pool_stats(name, af) else {
                    continue;
                };
                let labels = PoolFamilyLabel {
                    pool: name.clone(),
                    family: fam.to_string(),
                };
                self.in_use_family
                    .get_or_create(&labels)
                    .set(st.in_use as f64);
                self.total_family
                    .get_or_create(&labels)
                    .set(st.total as f64);
                sum_in_use += st.in_use as f64;
                sum_total += st.total as f64;
            }
            let l = PoolLabel { pool: name.clone() };
            self.in_use.get_or_create(&l).set(sum_in_use);
            self.total.get_or_create(&l).set(sum_total);
        }
    }
}
