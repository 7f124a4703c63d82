//! Prometheus metrics of the verifier: requests per Application and decision, the
//! time a decision takes, and the index's size and conflicts.
//!
//! Names and labels are a contract with the chart's recording rules
//! (`charts/payi-operator/files/verifier-rules.yaml`) and its dashboard.

use std::sync::Arc;
use std::time::Duration;

use prometheus_client::encoding::{EncodeLabelSet, EncodeLabelValue, LabelValueEncoder};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

use super::Answer;

/// A label value shared with the index, so counting a request allocates nothing.
#[derive(Clone, Debug, Default, Hash, PartialEq, Eq)]
pub struct Name(pub Arc<str>);

impl EncodeLabelValue for Name {
    fn encode(&self, encoder: &mut LabelValueEncoder) -> Result<(), std::fmt::Error> {
        EncodeLabelValue::encode(&self.0.as_ref(), encoder)
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RequestLabels {
    pub organization: Name,
    pub group: Name,
    pub application: Name,
    /// A declared use case, the open policy's catch-all, or empty (none named).
    pub use_case: Name,
    pub decision: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ProtocolLabels {
    /// `http` (forward-auth) or `grpc` (Envoy ext_authz).
    pub protocol: &'static str,
}

pub struct Metrics {
    pub requests: Family<RequestLabels, Counter>,
    pub duration: Family<ProtocolLabels, Histogram>,
    pub conflicts: Gauge,
    pub keys: Gauge,
}

impl Default for Metrics {
    fn default() -> Self {
        Self {
            requests: Family::default(),
            // 5 µs to about 80 ms: a decision is a hash and a map lookup.
            duration: Family::new_with_constructor(|| Histogram::new(exponential_buckets(0.000_005, 2.0, 15))),
            conflicts: Gauge::default(),
            keys: Gauge::default(),
        }
    }
}

impl Metrics {
    pub fn register(&self, registry: &mut Registry) {
        let r = registry.sub_registry_with_prefix("payi_gateway");
        r.register(
            "requests",
            "Key checks by Organization, Group, Application, use case and decision (allowed, missing, malformed, \
             unknown, expired, conflict, orphaned, use_case_refused, bad_header)",
            self.requests.clone(),
        );
        r.register("request_duration_seconds", "Time to decide one key check, by protocol", self.duration.clone());
        r.register(
            "digest_conflicts",
            "Key digests claimed by more than one Application; refused for all of them",
            self.conflicts.clone(),
        );
        r.register("keys", "Key digests of live Applications in the index", self.keys.clone());
    }

    /// Counts one decided request and the time it took.
    pub fn observe(&self, protocol: &'static str, answer: &Answer, took: Duration) {
        let (organization, group, application) = match &answer.attribution {
            Some(a) => (Name(a.organization.clone()), Name(a.group.clone()), Name(a.application.clone())),
            None => Default::default(),
        };
        let use_case = answer.context.label().map(|l| Name(l.clone())).unwrap_or_default();
        let labels = RequestLabels { organization, group, application, use_case, decision: answer.decision.as_str() };
        self.requests.get_or_create(&labels).inc();
        self.duration.get_or_create(&ProtocolLabels { protocol }).observe(took.as_secs_f64());
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::verifier::index::{Attribution, Decision};
    use crate::verifier::use_case::{RequestContext, Resolved};

    fn answer(decision: Decision, attribution: Option<Attribution>, use_case: Option<&str>) -> Answer {
        let use_case = use_case.map(|u| Resolved { name: u.into(), label: u.into(), version: 1 });
        Answer {
            decision,
            attribution,
            context: RequestContext { use_case, ..Default::default() },
            refusal: None,
            key_header: None,
        }
    }

    #[test]
    fn requests_are_counted_per_application_and_decision() {
        let metrics = Metrics::default();
        let mut registry = Registry::default();
        metrics.register(&mut registry);
        let attribution = Attribution {
            organization: "acme".into(),
            group: "eng".into(),
            application: "chat".into(),
            namespace: "team".into(),
            use_cases: Default::default(),
            limits: Default::default(),
        };
        let allowed = answer(Decision::Allowed, Some(attribution.clone()), None);
        metrics.observe("http", &allowed, Duration::from_micros(20));
        metrics.observe("grpc", &allowed, Duration::from_micros(20));
        metrics.observe("http", &answer(Decision::Allowed, Some(attribution), Some("draft")), Duration::ZERO);
        metrics.observe("http", &answer(Decision::Unknown, None, None), Duration::ZERO);
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &registry).unwrap();
        assert!(
            text.contains(
                r#"payi_gateway_requests_total{organization="acme",group="eng",application="chat",use_case="",decision="allowed"} 2"#
            ),
            "{text}"
        );
        assert!(
            text.contains(
                r#"payi_gateway_requests_total{organization="",group="",application="",use_case="",decision="unknown"} 1"#
            ),
            "{text}"
        );
        assert!(
            text.contains(
                r#"payi_gateway_requests_total{organization="acme",group="eng",application="chat",use_case="draft",decision="allowed"} 1"#
            ),
            "{text}"
        );
        assert!(text.contains(r#"payi_gateway_request_duration_seconds_count{protocol="http"} 3"#), "{text}");
        assert!(text.contains("payi_gateway_digest_conflicts 0"), "{text}");
    }
}
