//! The bare client: the least any controller must send to the API server to give
//! N existing Applications a key. Per Application one Secret create and one
//! server-side apply of a status the size of the operator's, nothing read, no
//! Events, no parents; same client library, same kubeconfig and connection
//! settings as the operator process, `concurrency` requests in flight.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use futures::StreamExt;
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;
use kube::api::{Patch, PatchParams, PostParams};
use kube::{Api, Client, Resource, ResourceExt};
use payi_operator::crd::Application;
use payi_operator::key::{ApiKey, fingerprint};
use serde_json::json;

use super::sampler::Sampler;

const MANAGER: &str = "payi-bench-baseline";

pub struct Outcome {
    pub elapsed: Duration,
    /// Applications done (both writes answered) over time.
    pub samples: Vec<(f64, usize)>,
}

/// Writes what the operator would for every Application in `apps`.
pub async fn run(client: &Client, apps: Vec<Application>, concurrency: usize) -> Outcome {
    let done = Arc::new(AtomicUsize::new(0));
    let counter = done.clone();
    let started = Instant::now();
    let sampler = Sampler::start(started, move || {
        let counter = counter.clone();
        async move { Some(counter.load(Ordering::Relaxed)) }
    });
    futures::stream::iter(apps)
        .map(|app| {
            let (client, done) = (client.clone(), done.clone());
            async move {
                write_one(&client, &app).await;
                done.fetch_add(1, Ordering::Relaxed);
            }
        })
        .buffer_unordered(concurrency)
        .collect::<Vec<()>>()
        .await;
    let elapsed = started.elapsed();
    Outcome { elapsed, samples: sampler.stop().await }
}

async fn write_one(client: &Client, app: &Application) {
    let namespace = app.namespace().expect("a namespaced Application");
    let name = app.name_any();
    let key = ApiKey::mint().expect("minting a key");
    let secret_name = format!("{name}-payi-key");
    let owner = app.controller_owner_ref(&()).map(|mut r| {
        r.block_owner_deletion = Some(true);
        r
    });
    let secret: Secret = serde_json::from_value(json!({
        "metadata": {
            "name": secret_name,
            "labels": {"app.kubernetes.io/managed-by": "payi-operator", "payi.io/application": name},
            "ownerReferences": owner.map(|o| vec![o]),
        },
        "type": "Opaque",
        "stringData": {"PAYI_API_KEY": key.expose()},
    }))
    .expect("a Secret");
    let secrets: Api<Secret> = Api::namespaced(client.clone(), &namespace);
    secrets
        .create(&PostParams::default(), &secret)
        .await
        .unwrap_or_else(|e| panic!("creating Secret {secret_name}: {e}"));

    let now = serde_json::to_value(Time(Timestamp::now())).expect("a timestamp");
    let print = fingerprint(key.expose());
    let status = json!({
        "apiVersion": "payi.io/v1alpha1", "kind": "Application",
        "status": {
            "observedGeneration": app.metadata.generation,
            "conditions": [{
                "type": "Ready", "status": "True", "reason": "KeyIssued",
                "message": format!("API key is in Secret {secret_name}"),
                "lastTransitionTime": now, "observedGeneration": app.metadata.generation,
            }],
            "group": app.spec.group_ref.name,
            "organization": "bench-organization",
            "keySecretName": secret_name,
            "keyFingerprint": print,
            "keyCreatedAt": now,
            "keys": [{"secretKey": "PAYI_API_KEY", "fingerprint": print, "createdAt": now}],
        }
    });
    let apps: Api<Application> = Api::namespaced(client.clone(), &namespace);
    apps.patch_status(&name, &PatchParams::apply(MANAGER).force(), &Patch::Apply(status))
        .await
        .unwrap_or_else(|e| panic!("writing status of {name}: {e}"));
}
