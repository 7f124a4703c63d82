//! The key Secret's wire contract: which data keys, labels and annotations it
//! carries, how they are read back, and the body written for a desired state.
//! Everything that knows what a key Secret looks like lives here.

use std::collections::{BTreeMap, BTreeSet};

use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference, Time};
use kube::{Resource, ResourceExt};
use serde::{Deserialize, Serialize};

use crate::crd::Application;

/// Data key the workload sees as `$PAYI_API_KEY` through `envFrom`.
pub const API_KEY_FIELD: &str = "PAYI_API_KEY";
/// Data key of the key replaced by the last rotation, during its grace period.
pub const PREVIOUS_KEY_FIELD: &str = "PAYI_API_KEY_PREVIOUS";
/// Data key for the Organization's `baseURL`, present only while it is set.
pub const BASE_URL_FIELD: &str = "PAYI_BASE_URL";

pub const MANAGED_BY_LABEL: &str = "app.kubernetes.io/managed-by";
pub const APPLICATION_LABEL: &str = "payi.io/application";
/// Value of [`MANAGED_BY_LABEL`], the field manager and the Event reporter.
pub const MANAGER: &str = "payi-operator";

/// The id of the key change the Secret was last written for (`request:…`,
/// `annotation:…`, `schedule:…` or `repair:<replaced fingerprint>`), so a change
/// interrupted between the Secret write and the status write is completed
/// instead of repeated.
pub const ROTATION_ID_ANNOTATION: &str = "payi.io/rotation-id";
/// When `PAYI_API_KEY_PREVIOUS` is removed.
pub const PREVIOUS_EXPIRES_ANNOTATION: &str = "payi.io/previous-key-expires-at";
/// Which labels and annotations came from `spec.keySecret`, so that the ones
/// removed from the spec are removed from the Secret and nobody else's are.
pub const TEMPLATE_ANNOTATION: &str = "payi.io/template-keys";
/// A digest of everything the operator wrote into the Secret, with keys by
/// fingerprint. With the resourceVersion recorded in status, it lets a reconcile
/// know from the watched metadata alone that the Secret is as wanted, without
/// reading it (a restart over 10,000 converged Applications reads no Secret).
pub const CONTENT_ANNOTATION: &str = "payi.io/content";

/// Label selector for the Secrets this operator manages; nothing else is watched.
pub fn managed_selector() -> String {
    format!("{MANAGED_BY_LABEL}={MANAGER}")
}

/// Labels on everything this operator creates for an Application.
pub fn managed_labels(app: &Application) -> BTreeMap<String, String> {
    BTreeMap::from([(MANAGED_BY_LABEL.into(), MANAGER.into()), (APPLICATION_LABEL.into(), app.name_any())])
}

/// A controller reference to `app`, so deletion cascades and ownership can be checked.
pub fn controller_reference(app: &Application) -> Option<OwnerReference> {
    let mut reference = app.controller_owner_ref(&())?;
    reference.block_owner_deletion = Some(true);
    Some(reference)
}

/// Whether `obj` is controlled by `app` (by UID, so a recreated namesake is not).
pub fn controlled_by<K: Resource>(obj: &K, app: &Application) -> bool {
    let uid = app.meta().uid.as_deref();
    obj.meta().owner_references.iter().flatten().any(|r| r.controller == Some(true) && Some(r.uid.as_str()) == uid)
}

/// The key material found in an owned Secret. Deliberately not `Debug`.
#[derive(Default)]
pub struct Found {
    pub current: Option<String>,
    pub previous: Option<String>,
    pub rotation_id: Option<String>,
    pub previous_expires: Option<Time>,
    pub created: Option<Time>,
}

impl Found {
    pub fn in_secret(secret: &Secret) -> Self {
        let text = |field: &str| {
            let bytes = secret.data.as_ref()?.get(field)?;
            String::from_utf8(bytes.0.clone()).ok().filter(|k| !k.is_empty())
        };
        let annotation = |name: &str| secret.metadata.annotations.as_ref()?.get(name).cloned();
        let previous_expires = annotation(PREVIOUS_EXPIRES_ANNOTATION).and_then(|t| t.parse().ok()).map(Time);
        Self {
            current: text(API_KEY_FIELD),
            previous: text(PREVIOUS_KEY_FIELD),
            rotation_id: annotation(ROTATION_ID_ANNOTATION),
            previous_expires,
            created: secret.metadata.creation_timestamp.clone(),
        }
    }
}

/// The keys the Secret should hold, and the annotations that describe them.
pub struct Keyring {
    pub current: String,
    pub previous: Option<(String, Time)>,
    pub rotation_id: Option<String>,
}

#[derive(Serialize, Deserialize, Default, Debug, PartialEq, Eq)]
struct TemplateKeys {
    #[serde(default, skip_serializing_if = "BTreeSet::is_empty")]
    labels: BTreeSet<String>,
    #[serde(default, skip_serializing_if = "BTreeSet::is_empty")]
    annotations: BTreeSet<String>,
}

/// What the Secret should carry apart from key material: labels, annotations,
/// and the data fields with keys by fingerprint.
pub struct Shape {
    labels: BTreeMap<String, String>,
    annotations: BTreeMap<String, String>,
    digest: String,
}

/// The [`Shape`] for an Application whose current key has fingerprint `current`
/// and whose previous key (if any) has `previous` = (fingerprint, expiry).
pub fn shape(app: &Application, current: &str, previous: Option<(&str, &Time)>, base_url: Option<&str>) -> Shape {
    let template = app.spec.key_secret.clone().unwrap_or_default();
    let keys = TemplateKeys {
        labels: template.labels.keys().cloned().collect(),
        annotations: template.annotations.keys().cloned().collect(),
    };
    let mut labels = template.labels;
    labels.extend(managed_labels(app));
    let mut annotations = template.annotations;
    if keys != TemplateKeys::default() {
        annotations.insert(TEMPLATE_ANNOTATION.into(), serde_json::to_string(&keys).unwrap_or_default());
    }
    let mut fields = BTreeMap::from([(API_KEY_FIELD, current.to_string())]);
    if let Some((fingerprint, expires)) = previous {
        fields.insert(PREVIOUS_KEY_FIELD, fingerprint.to_string());
        annotations.insert(PREVIOUS_EXPIRES_ANNOTATION.into(), expires.0.to_string());
    }
    if let Some(url) = base_url {
        fields.insert(BASE_URL_FIELD, url.to_string());
    }
    let canonical = serde_json::to_string(&(&labels, &annotations, &fields)).unwrap_or_default();
    let digest = crate::key::fingerprint(&canonical);
    annotations.insert(CONTENT_ANNOTATION.into(), digest.clone());
    Shape { labels, annotations, digest }
}

impl Shape {
    /// Whether a Secret whose [`CONTENT_ANNOTATION`] is `written` carries this shape.
    pub fn matches(&self, written: Option<&str>) -> bool {
        written == Some(self.digest.as_str())
    }
}

/// The Secret as this operator wants it: key, optional base URL, the template's
/// labels and annotations, and a controller reference so deletion cascades.
pub fn desired(app: &Application, ring: &Keyring, base_url: Option<&str>) -> Secret {
    let previous = ring.previous.as_ref().map(|(key, expires)| (crate::key::fingerprint(key), expires));
    let current = crate::key::fingerprint(&ring.current);
    let Shape { labels, mut annotations, .. } =
        shape(app, &current, previous.as_ref().map(|(f, e)| (f.as_str(), *e)), base_url);
    let bytes = |v: &str| ByteString(v.as_bytes().to_vec());
    let mut data = BTreeMap::from([(API_KEY_FIELD.to_string(), bytes(&ring.current))]);
    if let Some((previous, _)) = &ring.previous {
        data.insert(PREVIOUS_KEY_FIELD.into(), bytes(previous));
    }
    if let Some(id) = &ring.rotation_id {
        annotations.insert(ROTATION_ID_ANNOTATION.into(), id.clone());
    }
    if let Some(url) = base_url {
        data.insert(BASE_URL_FIELD.into(), bytes(url));
    }
    Secret {
        metadata: ObjectMeta {
            name: Some(app.key_secret_name()),
            namespace: app.namespace(),
            labels: Some(labels),
            annotations: (!annotations.is_empty()).then_some(annotations),
            owner_references: controller_reference(app).map(|r| vec![r]),
            ..ObjectMeta::default()
        },
        type_: Some("Opaque".into()),
        data: Some(data),
        ..Secret::default()
    }
}

/// The keys of `map` that this operator set on the Secret: its own plus those
/// the template listed when the Secret was last written.
fn ours(current: &Secret) -> TemplateKeys {
    let annotations = current.metadata.annotations.as_ref();
    let listed = annotations.and_then(|a| a.get(TEMPLATE_ANNOTATION));
    let mut keys: TemplateKeys = listed.and_then(|v| serde_json::from_str(v).ok()).unwrap_or_default();
    keys.labels.extend([MANAGED_BY_LABEL.to_string(), APPLICATION_LABEL.to_string()]);
    keys.annotations
        .extend([TEMPLATE_ANNOTATION, PREVIOUS_EXPIRES_ANNOTATION, ROTATION_ID_ANNOTATION].map(str::to_string));
    keys
}

/// `current` changed to `desired`: data replaced whole (all of it is ours), our
/// labels and annotations set or removed, everyone else's kept. Carries
/// `current`'s resourceVersion, so a concurrent change makes the write fail
/// instead of being overwritten.
pub fn updated(current: &Secret, desired: &Secret) -> Secret {
    let ours = ours(current);
    let merge = |have: &Option<BTreeMap<String, String>>,
                 want: &Option<BTreeMap<String, String>>,
                 mine: &BTreeSet<String>| {
        let mut out: BTreeMap<String, String> =
            have.iter().flatten().filter(|(k, _)| !mine.contains(*k)).map(|(k, v)| (k.clone(), v.clone())).collect();
        out.extend(want.iter().flatten().map(|(k, v)| (k.clone(), v.clone())));
        (!out.is_empty()).then_some(out)
    };
    let mut next = current.clone();
    next.metadata.labels = merge(&current.metadata.labels, &desired.metadata.labels, &ours.labels);
    next.metadata.annotations = merge(&current.metadata.annotations, &desired.metadata.annotations, &ours.annotations);
    next.metadata.managed_fields = None;
    next.data = desired.data.clone();
    next.string_data = None;
    next
}

/// Whether `current` already is what [`updated`] would make of it.
pub fn in_sync(current: &Secret, desired: &Secret) -> bool {
    let next = updated(current, desired);
    next.data == current.data
        && next.metadata.labels == current.metadata.labels
        && next.metadata.annotations == current.metadata.annotations
        && current.string_data.is_none()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crd::{ApplicationSpec, KeySecretTemplate};

    fn app(labels: &[(&str, &str)]) -> Application {
        let template = KeySecretTemplate {
            labels: labels.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect(),
            ..Default::default()
        };
        let mut a = Application::new("svc", ApplicationSpec { key_secret: Some(template), ..Default::default() });
        a.metadata.namespace = Some("ns".into());
        a.metadata.uid = Some("u1".into());
        a
    }

    fn ring() -> Keyring {
        Keyring { current: "k".into(), previous: None, rotation_id: None }
    }

    #[test]
    fn a_removed_template_label_and_base_url_leave_and_foreign_labels_stay() {
        let before = desired(&app(&[("reload", "true")]), &ring(), Some("https://a"));
        let mut live = before.clone();
        live.metadata.labels.as_mut().unwrap().insert("someone-else".into(), "x".into());
        live.metadata.resource_version = Some("7".into());
        assert!(in_sync(&live, &before));

        let after = desired(&app(&[]), &ring(), None);
        assert!(!in_sync(&live, &after));
        let next = updated(&live, &after);
        let labels = next.metadata.labels.as_ref().unwrap();
        assert!(!labels.contains_key("reload"), "{labels:?}");
        assert_eq!(labels.get("someone-else").map(String::as_str), Some("x"));
        assert_eq!(labels.get(MANAGED_BY_LABEL).map(String::as_str), Some(MANAGER));
        assert!(!next.data.as_ref().unwrap().contains_key(BASE_URL_FIELD));
        assert_eq!(next.metadata.resource_version.as_deref(), Some("7"), "the write is conditional");
        assert!(in_sync(&next, &after), "converges in one write");
    }

    #[test]
    fn the_content_digest_follows_everything_but_key_values_and_matches_from_fingerprints() {
        let a = app(&[("reload", "true")]);
        let written = desired(&a, &ring(), Some("https://a"));
        let digest = written.metadata.annotations.as_ref().unwrap().get(CONTENT_ANNOTATION).cloned();
        let from_status = shape(&a, &crate::key::fingerprint("k"), None, Some("https://a"));
        assert!(from_status.matches(digest.as_deref()));
        assert!(!shape(&a, &crate::key::fingerprint("k"), None, None).matches(digest.as_deref()), "base URL");
        assert!(!shape(&a, &crate::key::fingerprint("other"), None, Some("https://a")).matches(digest.as_deref()));
        assert!(!shape(&app(&[]), &crate::key::fingerprint("k"), None, Some("https://a")).matches(digest.as_deref()));
    }

    #[test]
    fn ownership_is_by_uid() {
        let a = app(&[]);
        let secret = desired(&a, &ring(), None);
        assert!(controlled_by(&secret, &a));
        let mut namesake = a.clone();
        namesake.metadata.uid = Some("u2".into());
        assert!(!controlled_by(&secret, &namesake));
    }
}
