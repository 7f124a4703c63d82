//! Kubernetes Events (events.k8s.io/v1), one new Event per note.
//!
//! kube-runtime's `Recorder` keeps every Event it published for six minutes so
//! that a repeat becomes a series count, and sweeps that cache on every publish.
//! At a cold start over 10,000 Applications that is 10,000 cached Events (about
//! 15 MiB, the largest part of the peak above the steady state) and a sweep of
//! the whole cache per Event. The operator publishes a note only when something
//! changed (`Note::ready_transition`, key moves), so there are no repeats to
//! count: each note is created once and forgotten.

use k8s_openapi::api::core::v1::ObjectReference;
use k8s_openapi::api::events::v1::Event;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use k8s_openapi::jiff::Timestamp;
use kube::Client;
use kube::api::{Api, PostParams};

use super::context::Note;

pub struct EventWriter {
    client: Client,
    reporter: Reporter,
}

impl EventWriter {
    pub fn new(client: Client, reporter: Reporter) -> Self {
        Self { client, reporter }
    }

    pub async fn publish(&self, note: &Note, regarding: &ObjectReference) -> Result<(), kube::Error> {
        let event = self.reporter.event(note, regarding, Timestamp::now());
        let namespace = event.metadata.namespace.as_deref().unwrap_or("default");
        let api: Api<Event> = Api::namespaced(self.client.clone(), namespace);
        api.create(&PostParams::default(), &event).await.map(|_| ())
    }
}

/// Who writes the Events: `reportingController` and `reportingInstance`.
pub struct Reporter {
    pub controller: String,
    pub instance: String,
}

impl Reporter {
    /// The Event for `note` about `regarding` at `now`. Its name is the object's
    /// name and the time in hexadecimal nanoseconds, as client-go names Events.
    pub fn event(&self, note: &Note, regarding: &ObjectReference, now: Timestamp) -> Event {
        let name = regarding.name.as_deref().unwrap_or(&self.controller);
        Event {
            action: Some("Reconcile".into()),
            reason: Some(note.reason.into()),
            note: Some(note.message.clone()),
            type_: Some(if note.warning { "Warning" } else { "Normal" }.into()),
            event_time: Some(MicroTime(now)),
            regarding: Some(regarding.clone()),
            reporting_controller: Some(self.controller.clone()),
            reporting_instance: Some(self.instance.clone()),
            metadata: ObjectMeta {
                name: Some(format!("{name}.{:x}", now.as_nanosecond())),
                namespace: regarding.namespace.clone(),
                ..Default::default()
            },
            ..Default::default()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_event_names_its_object_reason_and_reporter() {
        let event_of = |note: &Note| {
            let regarding = ObjectReference {
                kind: Some("Application".into()),
                name: Some("checkout".into()),
                namespace: Some("shop".into()),
                ..Default::default()
            };
            let reporter = Reporter { controller: "payi-operator".into(), instance: "pod-1".into() };
            reporter.event(note, &regarding, Timestamp::from_second(1_700_000_000).unwrap())
        };
        let event = event_of(&Note::warning("SecretConflict", "taken"));
        assert_eq!(event.metadata.name.as_deref(), Some("checkout.17979cfe362a0000"));
        assert_eq!(event.metadata.namespace.as_deref(), Some("shop"));
        assert_eq!(event.type_.as_deref(), Some("Warning"));
        assert_eq!(event.reason.as_deref(), Some("SecretConflict"));
        assert_eq!(event.note.as_deref(), Some("taken"));
        assert_eq!(event.reporting_instance.as_deref(), Some("pod-1"));
        assert_eq!(event_of(&Note::normal("KeyMinted", "m")).type_.as_deref(), Some("Normal"));
    }
}
