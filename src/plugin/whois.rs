//! `kubectl payi whois`: whose key is this? Matches a key's fingerprint against
//! the keys every Application lists in its status; the key itself is read from
//! stdin only, and never printed.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::ResourceExt;
use serde::Serialize;

use crate::crd::Application;
use crate::keyring::ROTATE_ANNOTATION;

#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Owner {
    pub fingerprint: String,
    pub organization: String,
    pub group: String,
    pub application: String,
    pub namespace: String,
    /// `current` or `previous`.
    pub key: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub expires_at: Option<String>,
    pub rotate_command: String,
}

/// The Application holding the key with `fingerprint`, if any (pure).
pub fn find(applications: &[Application], fingerprint: &str) -> Option<Owner> {
    applications.iter().find_map(|app| {
        let status = app.status.as_ref()?;
        let listed = status.keys.iter().find(|k| k.fingerprint == fingerprint);
        let current = status.key_fingerprint.as_deref() == Some(fingerprint);
        if listed.is_none() && !current {
            return None;
        }
        let namespace = app.namespace().unwrap_or_default();
        let name = app.name_any();
        Some(Owner {
            fingerprint: fingerprint.to_string(),
            organization: status.organization.clone().unwrap_or_default(),
            group: app.spec.group_ref.name.clone(),
            application: name.clone(),
            namespace: namespace.clone(),
            key: if current { "current" } else { "previous" },
            expires_at: if current {
                None
            } else {
                listed.and_then(|k| k.expires_at.as_ref()).map(|t: &Time| t.0.to_string())
            },
            rotate_command: rotate_command(&namespace, &name),
        })
    })
}

/// The kubectl command that rotates an Application's key (any new annotation value does).
pub fn rotate_command(namespace: &str, name: &str) -> String {
    format!(
        "kubectl annotate applications.payi.io {name} -n {namespace} {ROTATE_ANNOTATION}=\"$(date +%s)\" --overwrite"
    )
}

pub fn render_text(owner: &Owner) -> String {
    let key = match &owner.expires_at {
        Some(at) => format!("{} (previous key, expires {at})", owner.fingerprint),
        None => format!("{} ({} key)", owner.fingerprint, owner.key),
    };
    format!(
        "Organization:  {}\nGroup:         {}\nApplication:   {}\nNamespace:     {}\nKey:           {key}\nRotate with:   {}\n",
        owner.organization, owner.group, owner.application, owner.namespace, owner.rotate_command
    )
}

/// A fingerprint from `--fingerprint`, accepted with or without the `sha256:` prefix.
pub fn normalise_fingerprint(given: &str) -> String {
    let trimmed = given.trim();
    if trimmed.starts_with("sha256:") { trimmed.to_string() } else { format!("sha256:{trimmed}") }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crd::{ApplicationSpec, ApplicationStatus, LiveKey, ParentRef};
    use k8s_openapi::jiff::Timestamp;

    fn app_with_keys() -> Application {
        let mut app = Application::new(
            "chat",
            ApplicationSpec { group_ref: ParentRef { name: "eng".into() }, ..Default::default() },
        );
        app.metadata.namespace = Some("team-a".into());
        let key = |fp: &str, expires: Option<i64>| LiveKey {
            secret_key: "PAYI_API_KEY".into(),
            fingerprint: fp.into(),
            digest: String::new(),
            created_at: Time(Timestamp::UNIX_EPOCH),
            expires_at: expires.map(|s| Time(Timestamp::from_second(s).unwrap())),
        };
        app.status = Some(ApplicationStatus {
            organization: Some("acme".into()),
            key_fingerprint: Some("sha256:new".into()),
            keys: vec![key("sha256:new", None), key("sha256:old", Some(86400))],
            ..Default::default()
        });
        app
    }

    #[test]
    fn current_and_previous_keys_are_told_apart() {
        let apps = vec![app_with_keys()];
        let current = find(&apps, "sha256:new").unwrap();
        assert_eq!((current.key, current.expires_at.as_deref()), ("current", None));
        let previous = find(&apps, "sha256:old").unwrap();
        assert_eq!(previous.key, "previous");
        assert_eq!(previous.expires_at.as_deref(), Some("1970-01-02T00:00:00Z"));
        assert!(previous.rotate_command.contains("chat -n team-a payi.io/rotate-key="));
        assert_eq!(find(&apps, "sha256:none"), None);
        assert_eq!(normalise_fingerprint(" abc "), "sha256:abc");
    }
}
