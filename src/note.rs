//! Notes: what a reconcile wants to tell a person about an object, published as
//! Kubernetes Events by the controller. Below both the controllers and the pure
//! decision modules (`keyring`), so those need nothing from `controller/`.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;

use crate::conditions::{self, Outcome};

/// Something to tell a person about an object, published as a Kubernetes Event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Note {
    pub warning: bool,
    pub reason: &'static str,
    pub message: String,
}

impl Note {
    pub fn normal(reason: &'static str, message: impl Into<String>) -> Self {
        Self { warning: false, reason, message: message.into() }
    }
    pub fn warning(reason: &'static str, message: impl Into<String>) -> Self {
        Self { warning: true, reason, message: message.into() }
    }

    /// A Warning when `Ready` turns False or changes reason while False; nothing
    /// otherwise, so a resync of an unchanged object publishes no Event.
    pub fn ready_transition(previous: &[Condition], ready: &Outcome) -> Vec<Note> {
        let before = conditions::find(previous, conditions::READY);
        let unchanged =
            before.is_some_and(|c| c.reason == ready.reason && (c.status == conditions::TRUE) == ready.status);
        if unchanged || ready.status {
            return vec![];
        }
        vec![Note::warning(ready.reason, ready.message.clone())]
    }
}
