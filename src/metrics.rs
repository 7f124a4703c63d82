//! Prometheus metrics of the operator.

use std::time::Instant;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ControllerLabels {
    pub controller: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ErrorLabels {
    pub controller: &'static str,
    pub reason: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct KeyLabels {
    /// `minted`, `repaired` or `conflict`.
    pub event: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct GroupLabels {
    pub organization: String,
    pub group: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OrganizationLabels {
    pub organization: String,
}

pub struct Metrics {
    pub reconciles: Family<ControllerLabels, Counter>,
    pub failures: Family<ErrorLabels, Counter>,
    pub duration: Family<ControllerLabels, Histogram>,
    pub keys: Family<KeyLabels, Counter>,
    pub group_applications: Family<GroupLabels, Gauge>,
    pub group_applications_ready: Family<GroupLabels, Gauge>,
    pub organization_applications: Family<OrganizationLabels, Gauge>,
    pub organization_applications_ready: Family<OrganizationLabels, Gauge>,
}

impl Default for Metrics {
    fn default() -> Self {
        Self {
            reconciles: Family::default(),
            failures: Family::default(),
            duration: Family::new_with_constructor(|| Histogram::new(exponential_buckets(0.001, 2.0, 14))),
            keys: Family::default(),
            group_applications: Family::default(),
            group_applications_ready: Family::default(),
            organization_applications: Family::default(),
            organization_applications_ready: Family::default(),
        }
    }
}

impl Metrics {
    pub fn register(&self, registry: &mut Registry) {
        let r = registry.sub_registry_with_prefix("payi_operator");
        r.register("reconciles", "Reconciles run, by controller", self.reconciles.clone());
        r.register("reconcile_errors", "Reconciles that failed, by controller and error reason", self.failures.clone());
        r.register("reconcile_duration_seconds", "Time spent in one reconcile", self.duration.clone());
        r.register("keys", "Key lifecycle events: minted, repaired, conflict", self.keys.clone());
        r.register("group_applications", "Applications attached to a Group", self.group_applications.clone());
        r.register("group_applications_ready", "Ready Applications of a Group", self.group_applications_ready.clone());
        r.register(
            "organization_applications",
            "Applications of an Organization",
            self.organization_applications.clone(),
        );
        r.register(
            "organization_applications_ready",
            "Ready Applications of an Organization",
            self.organization_applications_ready.clone(),
        );
    }

    /// Counts a reconcile now and records its duration when the timer drops.
    pub fn start(&self, controller: &'static str) -> ReconcileTimer<'_> {
        let labels = ControllerLabels { controller };
        self.reconciles.get_or_create(&labels).inc();
        ReconcileTimer { metrics: self, labels, started: Instant::now() }
    }

    pub fn key_event(&self, event: &'static str) {
        self.keys.get_or_create(&KeyLabels { event }).inc();
    }

    /// Reconciles of `controller` so far. Reading creates no series: a standby
    /// shows none, which is how tests and people tell it from a leader.
    pub fn reconciles_of(&self, controller: &'static str) -> u64 {
        self.reconciles.get(&ControllerLabels { controller }).map_or(0, |counter| counter.get())
    }
}

pub struct ReconcileTimer<'a> {
    metrics: &'a Metrics,
    labels: ControllerLabels,
    started: Instant,
}

impl Drop for ReconcileTimer<'_> {
    fn drop(&mut self) {
        let seconds = self.started.elapsed().as_secs_f64();
        self.metrics.duration.get_or_create(&self.labels).observe(seconds);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reading_a_count_creates_no_series() {
        let metrics = Metrics::default();
        let mut registry = Registry::default();
        metrics.register(&mut registry);
        assert_eq!(metrics.reconciles_of("application"), 0);
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &registry).unwrap();
        assert!(!text.contains("controller=\"application\""), "{text}");
        let _timer = metrics.start("application");
        assert_eq!(metrics.reconciles_of("application"), 1);
    }
}
