//! `kubectl payi rotate`: asks for a new key with a fresh `payi.io/rotate-key`
//! annotation and, with `--wait`, follows it until the operator has carried it out.

use std::io::Write;
use std::time::{Duration, Instant};

use k8s_openapi::jiff::Timestamp;
use kube::api::{Patch, PatchParams};
use kube::{Api, Client};
use serde::Serialize;
use serde_json::json;

use crate::crd::Application;
use crate::keyring::ROTATE_ANNOTATION;

#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Rotated {
    pub application: String,
    pub namespace: String,
    pub request: String,
    /// False when not waited for.
    pub done: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fingerprint: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub previous_fingerprint: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub previous_expires_at: Option<String>,
}

/// A request value never used before: nanoseconds since the epoch.
pub fn request_value(now: Timestamp) -> String {
    now.as_nanosecond().to_string()
}

/// The rotation's outcome as status shows it once `request` is handled (pure).
pub fn outcome(app: &Application, request: &str) -> Option<Rotated> {
    let status = app.status.as_ref()?;
    let handled = status.rotation.as_ref()?.handled_annotation.as_deref()?;
    if handled != request {
        return None;
    }
    let previous = status.keys.iter().find(|k| Some(&k.fingerprint) != status.key_fingerprint.as_ref());
    Some(Rotated {
        application: app.metadata.name.clone().unwrap_or_default(),
        namespace: app.metadata.namespace.clone().unwrap_or_default(),
        request: request.to_string(),
        done: true,
        fingerprint: status.key_fingerprint.clone(),
        previous_fingerprint: previous.map(|k| k.fingerprint.clone()),
        previous_expires_at: previous.and_then(|k| k.expires_at.as_ref()).map(|t| t.0.to_string()),
    })
}

pub fn render_text(rotated: &Rotated) -> String {
    let who = format!("{}/{}", rotated.namespace, rotated.application);
    if !rotated.done {
        return format!(
            "Requested a new key for Application {who} ({ROTATE_ANNOTATION}={}); add --wait to follow it\n",
            rotated.request
        );
    }
    let mut out = format!(
        "Rotated the key of Application {who}\nNew key:       {}\n",
        rotated.fingerprint.as_deref().unwrap_or("-")
    );
    match (&rotated.previous_fingerprint, &rotated.previous_expires_at) {
        (Some(fp), Some(at)) => out.push_str(&format!("Previous key:  {fp}, valid until {at}\n")),
        (Some(fp), None) => out.push_str(&format!("Previous key:  {fp}, removed\n")),
        _ => out.push_str("Previous key:  none kept\n"),
    }
    out
}

#[derive(Debug, thiserror::Error)]
pub enum RotateError {
    #[error("Application {0} not found")]
    NotFound(String),
    #[error("{0}")]
    Kube(#[from] kube::Error),
    #[error("the operator did not carry out the rotation within {0:?}; is it running?")]
    Timeout(Duration),
}

/// Annotates the Application; with `wait`, polls until status says the request was carried out.
pub async fn rotate(
    client: Client,
    namespace: &str,
    name: &str,
    wait: Option<Duration>,
    progress: bool,
) -> Result<Rotated, RotateError> {
    let api: Api<Application> = Api::namespaced(client, namespace);
    if api.get_opt(name).await?.is_none() {
        return Err(RotateError::NotFound(format!("{namespace}/{name}")));
    }
    let request = request_value(Timestamp::now());
    let patch = json!({ "metadata": { "annotations": { ROTATE_ANNOTATION: request } } });
    api.patch(name, &PatchParams::default(), &Patch::Merge(&patch)).await?;
    let requested = Rotated {
        application: name.to_string(),
        namespace: namespace.to_string(),
        request: request.clone(),
        done: false,
        fingerprint: None,
        previous_fingerprint: None,
        previous_expires_at: None,
    };
    let Some(timeout) = wait else {
        return Ok(requested);
    };
    let started = Instant::now();
    let mut stderr = std::io::stderr();
    loop {
        let app = api.get(name).await?;
        if let Some(done) = outcome(&app, &request) {
            if progress {
                let _ = writeln!(stderr, "\rwaiting for the operator to rotate the key... done{:10}", "");
            }
            return Ok(done);
        }
        if started.elapsed() > timeout {
            if progress {
                let _ = writeln!(stderr);
            }
            return Err(RotateError::Timeout(timeout));
        }
        if progress {
            let _ = write!(stderr, "\rwaiting for the operator to rotate the key... {}s", started.elapsed().as_secs());
            let _ = stderr.flush();
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crd::{ApplicationSpec, ApplicationStatus, LiveKey, RotationStatus};
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

    #[test]
    fn outcome_waits_for_the_request_to_be_handled() {
        let mut app = Application::new("chat", ApplicationSpec::default());
        app.metadata.namespace = Some("team-a".into());
        let key = |fp: &str, exp: Option<i64>| LiveKey {
            secret_key: "k".into(),
            fingerprint: fp.into(),
            digest: String::new(),
            created_at: Time(Timestamp::UNIX_EPOCH),
            expires_at: exp.map(|s| Time(Timestamp::from_second(s).unwrap())),
        };
        app.status = Some(ApplicationStatus {
            key_fingerprint: Some("sha256:new".into()),
            keys: vec![key("sha256:new", None), key("sha256:old", Some(60))],
            rotation: Some(RotationStatus { handled_annotation: Some("r1".into()), ..Default::default() }),
            ..Default::default()
        });
        assert_eq!(outcome(&app, "r2"), None);
        let done = outcome(&app, "r1").unwrap();
        assert_eq!(done.previous_fingerprint.as_deref(), Some("sha256:old"));
        assert!(render_text(&done).contains("valid until 1970-01-01T00:01:00Z"));
    }
}
