//! The Helm chart in `charts/payi-operator`: it lints, renders the objects the values
//! ask for, grants exactly the permissions the operator needs, rejects bad values
//! through its schema, and everything it renders is accepted by a real API server,
//! where its aggregated roles extend the built-in `view` and `edit` roles.
//!
//! Helm is built from the Go module proxy by `hack/tools/build.sh` (cached after the
//! first run). When that fails the tests fail; they never skip.

mod common;

use std::collections::BTreeSet;
use std::panic::AssertUnwindSafe;
use std::path::Path;

use futures::FutureExt;
use k8s_openapi::api::authorization::v1::SubjectAccessReview;
use k8s_openapi::api::rbac::v1::{ClusterRoleBinding, RoleBinding};
use kube::api::{DynamicObject, Patch, PatchParams, PostParams};
use kube::core::{ApiResource, GroupVersionKind};
use kube::discovery::{Scope, pinned_kind};
use kube::{Api, Client};
use serde_json::{Value, json};

use common::helm::{CHART, kind, name, ok as helm_ok, render, run as run_helm};

const FIELD_MANAGER: &str = "payi-e2e-chart";

fn repo() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn of_kind<'a>(objects: &'a [Value], k: &str) -> Vec<&'a Value> {
    objects.iter().filter(|o| kind(o) == k).collect()
}

fn one<'a>(objects: &'a [Value], k: &str, n: &str) -> &'a Value {
    objects
        .iter()
        .find(|o| kind(o) == k && name(o) == n)
        .unwrap_or_else(|| panic!("no {k} {n} rendered; got {:?}", summary(objects)))
}

fn summary(objects: &[Value]) -> Vec<String> {
    objects.iter().map(|o| format!("{}/{}", kind(o), name(o))).collect()
}

fn strings(v: &Value) -> Vec<String> {
    v.as_array().map(|a| a.iter().filter_map(|s| s.as_str().map(String::from)).collect()).unwrap_or_default()
}

/// A role's rules as the set of (apiGroup, resource, verb) it grants, so rules are
/// compared by what they allow rather than by how they happen to be grouped.
fn grants(role: &Value) -> BTreeSet<(String, String, String)> {
    let mut set = BTreeSet::new();
    for rule in role["rules"].as_array().into_iter().flatten() {
        assert!(
            rule.get("resourceNames").is_none() && rule.get("nonResourceURLs").is_none(),
            "unexpected rule shape in {}: {rule}",
            name(role)
        );
        for group in strings(&rule["apiGroups"]) {
            for resource in strings(&rule["resources"]) {
                for verb in strings(&rule["verbs"]) {
                    set.insert((group.clone(), resource.clone(), verb));
                }
            }
        }
    }
    set
}

fn expand(rules: &[(&str, &[&str], &[&str])]) -> BTreeSet<(String, String, String)> {
    let mut set = BTreeSet::new();
    for (group, resources, verbs) in rules {
        for resource in *resources {
            for verb in *verbs {
                set.insert((group.to_string(), resource.to_string(), verb.to_string()));
            }
        }
    }
    set
}

fn operator_grants() -> BTreeSet<(String, String, String)> {
    expand(&[
        ("payi.io", &["organizations", "groups"], &["get", "list", "watch", "patch"]),
        ("payi.io", &["applications"], &["get", "list", "watch", "patch", "update"]),
        ("payi.io", &["organizations/status", "groups/status", "applications/status"], &["get", "patch"]),
        ("payi.io", &["applications/finalizers"], &["update"]),
        ("", &["secrets"], &["get", "list", "watch", "create", "update"]),
        ("", &["namespaces"], &["list", "watch"]),
        ("events.k8s.io", &["events"], &["create"]),
        (
            "rbac.authorization.k8s.io",
            &["roles", "rolebindings"],
            &["get", "list", "watch", "create", "update", "delete"],
        ),
    ])
}

#[test]
fn chart_lints() {
    for strict in [false, true] {
        let mut args = vec!["lint", CHART];
        if strict {
            args.push("--strict");
        }
        let out = helm_ok(&args);
        assert!(out.contains("1 chart(s) linted, 0 chart(s) failed"), "helm {args:?}:\n{out}");
    }
}

#[test]
fn defaults_render_the_operator_and_no_service_monitor() {
    let objects = render("rel", "payi-system", &[]);
    let mut kinds: Vec<&str> = objects.iter().map(kind).collect();
    kinds.sort();
    assert_eq!(
        kinds,
        [
            "ClusterRole",
            "ClusterRole",
            "ClusterRole",
            "ClusterRole",
            "ClusterRoleBinding",
            "ClusterRoleBinding",
            "Deployment",
            "Deployment",
            "PodDisruptionBudget",
            "Role",
            "RoleBinding",
            "Service",
            "Service",
            "ServiceAccount",
            "ServiceAccount",
            "ValidatingAdmissionPolicy",
            "ValidatingAdmissionPolicyBinding"
        ],
        "rendered {:?}",
        summary(&objects)
    );
    for obj in &objects {
        let labels = &obj["metadata"]["labels"];
        for label in [
            "app.kubernetes.io/name",
            "app.kubernetes.io/instance",
            "app.kubernetes.io/version",
            "app.kubernetes.io/managed-by",
            "helm.sh/chart",
        ] {
            assert!(labels[label].is_string(), "{}/{} lacks label {label}", kind(obj), name(obj));
        }
        let cluster_scoped = matches!(
            kind(obj),
            "ClusterRole" | "ClusterRoleBinding" | "ValidatingAdmissionPolicy" | "ValidatingAdmissionPolicyBinding"
        );
        let namespace = obj["metadata"]["namespace"].as_str();
        assert_eq!(namespace, (!cluster_scoped).then_some("payi-system"), "{}/{}", kind(obj), name(obj));
    }

    let deployment = one(&objects, "Deployment", "rel-payi-operator");
    assert_eq!(deployment["spec"]["replicas"], 2);
    let pod = &deployment["spec"]["template"]["spec"];
    assert_eq!(pod["serviceAccountName"], "rel-payi-operator");
    assert_eq!(pod["automountServiceAccountToken"], true);
    assert_eq!(pod["securityContext"]["runAsNonRoot"], true);
    assert_eq!(pod["securityContext"]["seccompProfile"]["type"], "RuntimeDefault");
    let container = &pod["containers"][0];
    assert_eq!(container["image"], "ghcr.io/payi/payi-operator:0.1.0");
    assert_eq!(
        strings(&container["args"]),
        ["run", "--leader-election", "--http-addr=0.0.0.0:8080", "--log-format=json"]
    );
    let env: Vec<(&str, &str)> = container["env"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| (e["name"].as_str().unwrap(), e["valueFrom"]["fieldRef"]["fieldPath"].as_str().unwrap()))
        .collect();
    assert_eq!(env, [("POD_NAME", "metadata.name"), ("POD_NAMESPACE", "metadata.namespace")]);
    assert_eq!(container["ports"], json!([{"name": "http", "containerPort": 8080, "protocol": "TCP"}]));
    assert_eq!(container["livenessProbe"]["httpGet"], json!({"path": "/healthz", "port": "http"}));
    assert_eq!(container["readinessProbe"]["httpGet"], json!({"path": "/readyz", "port": "http"}));
    let security = &container["securityContext"];
    assert_eq!(security["runAsNonRoot"], true);
    assert_eq!(security["runAsUser"], 65532);
    assert_eq!(security["readOnlyRootFilesystem"], true);
    assert_eq!(security["allowPrivilegeEscalation"], false);
    assert_eq!(security["capabilities"]["drop"], json!(["ALL"]));
    assert_eq!(security["seccompProfile"]["type"], "RuntimeDefault");
    assert_eq!(
        container["resources"],
        json!({"requests": {"cpu": "50m", "memory": "128Mi"}, "limits": {"cpu": "500m", "memory": "384Mi"}})
    );

    let service = one(&objects, "Service", "rel-payi-operator");
    assert_eq!(service["spec"]["type"], "ClusterIP");
    assert_eq!(
        service["spec"]["ports"],
        json!([{"name": "http", "port": 8080, "targetPort": "http", "protocol": "TCP"}])
    );
    assert_eq!(one(&objects, "PodDisruptionBudget", "rel-payi-operator")["spec"]["minAvailable"], 1);
    check_default_verifier(&objects);
}

/// The verifier: its own ServiceAccount, no leader election, pods no operator selector matches.
fn check_default_verifier(objects: &[Value]) {
    let deployment = one(objects, "Deployment", "rel-payi-operator-verifier");
    assert_eq!(deployment["spec"]["replicas"], 2);
    let pod = &deployment["spec"]["template"]["spec"];
    assert_eq!(pod["serviceAccountName"], "rel-payi-operator-verifier");
    let container = &pod["containers"][0];
    assert_eq!(container["image"], "ghcr.io/payi/payi-operator:0.1.0");
    let args = strings(&container["args"]);
    assert_eq!(
        args,
        [
            "verifier",
            "--http-addr=0.0.0.0:8000",
            "--grpc-addr=0.0.0.0:9000",
            "--metrics-addr=0.0.0.0:8080",
            "--log-format=json"
        ]
    );
    assert!(container.get("env").is_none(), "the verifier needs no POD_NAME/POD_NAMESPACE: it elects no leader");
    let ports: Vec<(&str, i64)> = container["ports"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| (p["name"].as_str().unwrap(), p["containerPort"].as_i64().unwrap()))
        .collect();
    assert_eq!(ports, [("http", 8000), ("grpc", 9000), ("metrics", 8080)]);
    assert_eq!(container["readinessProbe"]["httpGet"], json!({"path": "/readyz", "port": "metrics"}));
    assert_eq!(container["securityContext"]["readOnlyRootFilesystem"], true);

    let selector = &deployment["spec"]["selector"]["matchLabels"];
    let operator_selector = &one(objects, "Deployment", "rel-payi-operator")["spec"]["selector"]["matchLabels"];
    let pod_labels = &deployment["spec"]["template"]["metadata"]["labels"];
    let matches = |selector: &Value| selector.as_object().unwrap().iter().all(|(k, v)| pod_labels.get(k) == Some(v));
    assert!(matches(selector));
    assert!(!matches(operator_selector), "the operator's selector {operator_selector} matches verifier pods");

    let service = one(objects, "Service", "rel-payi-operator-verifier");
    assert_eq!(service["spec"]["selector"], *selector);
    let ports: Vec<(&str, i64, &str)> = service["spec"]["ports"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| (p["name"].as_str().unwrap(), p["port"].as_i64().unwrap(), p["targetPort"].as_str().unwrap()))
        .collect();
    assert_eq!(ports, [("http", 8000, "http"), ("grpc", 9000, "grpc"), ("metrics", 8080, "metrics")]);
    one(objects, "ServiceAccount", "rel-payi-operator-verifier");
}

#[test]
fn verifier_options_rules_and_dashboard_follow_the_values() {
    let objects = render(
        "rel",
        "payi-system",
        &[
            "--set",
            "verifier.keyHeader=x-api-key",
            "--set",
            "verifier.stripKeyHeader=true",
            "--set",
            "verifier.replicaCount=5",
            "--set",
            "verifier.prometheusRule.enabled=true",
            "--set",
            "verifier.grafanaDashboard.enabled=true",
            "--set",
            "verifier.grafanaDashboard.namespace=monitoring",
        ],
    );
    let deployment = one(&objects, "Deployment", "rel-payi-operator-verifier");
    assert_eq!(deployment["spec"]["replicas"], 5);
    let args = strings(&deployment["spec"]["template"]["spec"]["containers"][0]["args"]);
    assert!(args.ends_with(&["--key-header=x-api-key".to_string(), "--strip-key-header".to_string()]), "{args:?}");

    // The PrometheusRule carries files/verifier-rules.yaml verbatim, the file promtool checks.
    let rule = one(&objects, "PrometheusRule", "rel-payi-operator-verifier");
    assert_eq!(rule["apiVersion"], "monitoring.coreos.com/v1");
    let file: Value =
        serde_yaml::from_str(&std::fs::read_to_string(repo().join(CHART).join("files/verifier-rules.yaml")).unwrap())
            .unwrap();
    assert_eq!(rule["spec"], file);
    let records: Vec<&str> =
        file["groups"][0]["rules"].as_array().unwrap().iter().filter_map(|r| r["record"].as_str()).collect();
    for level in ["application", "group", "organization"] {
        assert!(records.contains(&format!("{level}_decision:payi_gateway_requests:rate5m").as_str()), "{records:?}");
    }

    let dashboard = one(&objects, "ConfigMap", "rel-payi-operator-verifier-dashboard");
    assert_eq!(dashboard["metadata"]["namespace"], "monitoring");
    assert_eq!(dashboard["metadata"]["labels"]["grafana_dashboard"], "1");
    let json: Value =
        serde_json::from_str(dashboard["data"]["payi-gateway.json"].as_str().unwrap()).expect("the dashboard is JSON");
    let variables: Vec<&str> =
        json["templating"]["list"].as_array().unwrap().iter().map(|v| v["name"].as_str().unwrap()).collect();
    assert_eq!(variables, ["datasource", "organization", "group", "application", "use_case"]);
    // Each level's variable is narrowed by the levels above it.
    let query = |i: usize| json["templating"]["list"][i]["definition"].as_str().unwrap().to_string();
    assert!(query(2).contains("$organization"));
    assert!(query(3).contains("$organization") && query(3).contains("$group"));
    assert!(query(4).contains("$group") && query(4).contains("$application"));

    // Off: none of the verifier's objects.
    let off = render("rel", "payi-system", &["--set", "verifier.enabled=false"]);
    assert!(off.iter().all(|o| !name(o).contains("verifier")), "rendered {:?}", summary(&off));
}

#[test]
fn service_monitor_and_replicas_follow_the_values() {
    let objects = render("rel", "payi-system", &["--set", "serviceMonitor.enabled=true", "--set", "replicaCount=3"]);
    let monitors = of_kind(&objects, "ServiceMonitor");
    assert_eq!(monitors.len(), 2, "rendered {:?}", summary(&objects));
    let verifier_monitor = one(&objects, "ServiceMonitor", "rel-payi-operator-verifier");
    assert_eq!(verifier_monitor["spec"]["endpoints"][0]["port"], "metrics");
    let monitors = [one(&objects, "ServiceMonitor", "rel-payi-operator")];
    assert_eq!(monitors[0]["apiVersion"], "monitoring.coreos.com/v1");
    assert_eq!(monitors[0]["spec"]["endpoints"][0]["port"], "http");
    assert_eq!(monitors[0]["spec"]["endpoints"][0]["path"], "/metrics");
    assert_eq!(monitors[0]["spec"]["endpoints"][0]["interval"], "30s");
    assert_eq!(one(&objects, "Deployment", "rel-payi-operator")["spec"]["replicas"], 3);
    assert_eq!(of_kind(&objects, "PodDisruptionBudget").len(), 1);

    // One replica: a PodDisruptionBudget would block every node drain, so there is none.
    let single = render("rel", "payi-system", &["--set", "replicaCount=1"]);
    assert!(of_kind(&single, "PodDisruptionBudget").is_empty(), "rendered {:?}", summary(&single));
    assert!(of_kind(&single, "ServiceMonitor").is_empty());

    // Overrides and switches.
    let named = render(
        "rel",
        "payi-system",
        &["--set", "fullnameOverride=payi", "--set", "rbac.create=false", "--set", "admissionPolicy.enabled=false"],
    );
    let mut kinds: Vec<&str> = named.iter().map(kind).collect();
    kinds.sort();
    assert_eq!(
        kinds,
        ["Deployment", "Deployment", "PodDisruptionBudget", "Service", "Service", "ServiceAccount", "ServiceAccount"]
    );
    assert!(named.iter().all(|o| ["payi", "payi-verifier"].contains(&name(o))), "rendered {:?}", summary(&named));
}

#[test]
fn roles_grant_exactly_what_is_needed_and_no_wildcards() {
    for extra in [&[][..], &["--set", "serviceMonitor.enabled=true", "--set", "replicaCount=3"][..]] {
        let objects = render("rel", "payi-system", extra);
        let roles: Vec<&Value> = objects.iter().filter(|o| matches!(kind(o), "Role" | "ClusterRole")).collect();
        assert_eq!(roles.len(), 5, "rendered {:?}", summary(&objects));
        for role in &roles {
            for rule in role["rules"].as_array().expect("rules") {
                for field in ["verbs", "resources", "apiGroups"] {
                    let values = strings(&rule[field]);
                    assert!(!values.is_empty(), "{} has a rule without {field}: {rule}", name(role));
                    assert!(
                        values.iter().all(|v| !v.contains('*')),
                        "{} {} has a wildcard in {field}: {rule}",
                        kind(role),
                        name(role)
                    );
                }
            }
        }

        assert_eq!(grants(one(&objects, "ClusterRole", "rel-payi-operator")), operator_grants());
        assert_eq!(
            grants(one(&objects, "Role", "rel-payi-operator-leader-election")),
            expand(&[("coordination.k8s.io", &["leases"], &["get", "create", "update"])])
        );
        let binding = one(&objects, "ClusterRoleBinding", "rel-payi-operator");
        assert_eq!(binding["roleRef"]["name"], "rel-payi-operator");
        assert_eq!(
            binding["subjects"],
            json!([{"kind": "ServiceAccount", "name": "rel-payi-operator", "namespace": "payi-system"}])
        );

        let aggregate = |role: &Value| -> Vec<String> {
            let labels = role["metadata"]["labels"].as_object().unwrap();
            let mut to: Vec<String> = labels
                .iter()
                .filter_map(|(k, v)| {
                    let target = k.strip_prefix("rbac.authorization.k8s.io/aggregate-to-")?;
                    assert_eq!(v, "true", "{k} on {}", name(role));
                    Some(target.to_string())
                })
                .collect();
            to.sort();
            to
        };
        let view = one(&objects, "ClusterRole", "rel-payi-operator-view");
        assert_eq!(aggregate(view), ["admin", "edit", "view"]);
        assert_eq!(
            grants(view),
            expand(&[("payi.io", &["organizations", "groups", "applications"], &["get", "list", "watch"])])
        );
        let edit = one(&objects, "ClusterRole", "rel-payi-operator-edit");
        assert_eq!(aggregate(edit), ["admin", "edit"]);
        assert_eq!(
            grants(edit),
            expand(&[("payi.io", &["applications"], &["create", "update", "patch", "delete", "deletecollection"])])
        );
        assert!(aggregate(one(&objects, "ClusterRole", "rel-payi-operator")).is_empty());

        // The verifier reads the three kinds and nothing else.
        let verifier = one(&objects, "ClusterRole", "rel-payi-operator-verifier");
        assert!(aggregate(verifier).is_empty());
        assert_eq!(
            grants(verifier),
            expand(&[("payi.io", &["organizations", "groups", "applications"], &["get", "list", "watch"])])
        );
        let binding = one(&objects, "ClusterRoleBinding", "rel-payi-operator-verifier");
        assert_eq!(binding["roleRef"]["name"], "rel-payi-operator-verifier");
        assert_eq!(
            binding["subjects"],
            json!([{"kind": "ServiceAccount", "name": "rel-payi-operator-verifier", "namespace": "payi-system"}])
        );
    }
}

#[test]
fn admission_policy_binds_the_release_service_account() {
    let objects = render("rel", "payi-system", &[]);
    let policy = one(&objects, "ValidatingAdmissionPolicy", "rel-payi-operator-access-objects");
    assert_eq!(policy["apiVersion"], "admissionregistration.k8s.io/v1");
    assert_eq!(policy["spec"]["failurePolicy"], "Fail");
    assert_eq!(
        policy["spec"]["matchConditions"][0]["expression"],
        "request.userInfo.username == \"system:serviceaccount:payi-system:rel-payi-operator\""
    );
    let rules = &policy["spec"]["matchConstraints"]["resourceRules"][0];
    assert_eq!(strings(&rules["resources"]), ["roles", "rolebindings"]);
    assert_eq!(strings(&rules["operations"]), ["CREATE", "UPDATE"]);
    let binding = one(&objects, "ValidatingAdmissionPolicyBinding", "rel-payi-operator-access-objects");
    assert_eq!(binding["spec"]["policyName"], "rel-payi-operator-access-objects");
    assert_eq!(binding["spec"]["validationActions"], json!(["Deny"]));

    // A ServiceAccount the chart does not create is the one the policy names.
    let existing =
        render("rel", "payi-system", &["--set", "serviceAccount.create=false", "--set", "serviceAccount.name=ops"]);
    let policy = one(&existing, "ValidatingAdmissionPolicy", "rel-payi-operator-access-objects");
    assert_eq!(
        policy["spec"]["matchConditions"][0]["expression"],
        "request.userInfo.username == \"system:serviceaccount:payi-system:ops\""
    );

    let off = render("rel", "payi-system", &["--set", "admissionPolicy.enabled=false"]);
    assert!(of_kind(&off, "ValidatingAdmissionPolicy").is_empty(), "rendered {:?}", summary(&off));
    assert!(of_kind(&off, "ValidatingAdmissionPolicyBinding").is_empty(), "rendered {:?}", summary(&off));
}

#[test]
fn schema_rejects_bad_values() {
    for (set, complaint) in [
        ("replicaCount=abc", "/replicaCount"),
        ("replicaCount=0", "/replicaCount"),
        ("image.pullPolicy=Sometimes", "/image/pullPolicy"),
        ("serviceMonitor.interval=soon", "/serviceMonitor/interval"),
        ("notAValue=1", "notAValue"),
        ("admissionPolicy.enabled=maybe", "/admissionPolicy/enabled"),
        ("verifier.replicaCount=0", "/verifier/replicaCount"),
        ("verifier.keyHeader=x_api_key", "/verifier/keyHeader"),
        ("verifier.service.grpcPort=70000", "/verifier/service/grpcPort"),
        ("gateway.limits.redisCASecret.key=../ca", "/gateway/limits/redisCASecret/key"),
        ("gateway.limits.redisCASecret.insecure=true", "insecure"),
    ] {
        let out = run_helm(&["template", "rel", CHART, "--set", set]);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "helm template --set {set} succeeded");
        assert!(
            stderr.contains("schema") && stderr.contains(complaint),
            "helm template --set {set} failed for another reason:\n{stderr}"
        );
    }
}

/// The API of one rendered object, resolved through discovery.
async fn api_for(client: &Client, obj: &Value) -> (Api<DynamicObject>, ApiResource, bool) {
    let api_version = obj["apiVersion"].as_str().expect("apiVersion");
    let (group, version) = api_version.split_once('/').unwrap_or(("", api_version));
    let gvk = GroupVersionKind::gvk(group, version, kind(obj));
    let (resource, caps) =
        pinned_kind(client, &gvk).await.unwrap_or_else(|e| panic!("discovering {api_version} {}: {e}", kind(obj)));
    let namespaced = caps.scope == Scope::Namespaced;
    let api = if namespaced {
        let ns = obj["metadata"]["namespace"].as_str().unwrap_or_else(|| panic!("{} has no namespace", name(obj)));
        Api::namespaced_with(client.clone(), ns, &resource)
    } else {
        Api::all_with(client.clone(), &resource)
    };
    (api, resource, namespaced)
}

async fn can(client: &Client, user: &str, verb: &str, resource: &str, group: &str, namespace: Option<&str>) -> bool {
    let review: SubjectAccessReview = serde_json::from_value(json!({
        "spec": {
            "user": user,
            "resourceAttributes": {"verb": verb, "group": group, "resource": resource, "namespace": namespace},
        }
    }))
    .unwrap();
    let api: Api<SubjectAccessReview> = Api::all(client.clone());
    let answer = api.create(&PostParams::default(), &review).await.expect("SubjectAccessReview");
    answer.status.expect("SubjectAccessReview status").allowed
}

/// Whether `user` may `verb` the status subresource of Applications in `namespace`.
async fn can_status(client: &Client, user: &str, verb: &str, namespace: &str) -> bool {
    let review: SubjectAccessReview = serde_json::from_value(json!({
        "spec": {
            "user": user,
            "resourceAttributes": {"verb": verb, "group": "payi.io", "resource": "applications",
                                   "subresource": "status", "namespace": namespace},
        }
    }))
    .unwrap();
    let api: Api<SubjectAccessReview> = Api::all(client.clone());
    let answer = api.create(&PostParams::default(), &review).await.expect("SubjectAccessReview");
    answer.status.expect("SubjectAccessReview status").allowed
}

async fn bind(client: &Client, namespace: &str, binding: &str, user: &str, cluster_role: &str) {
    let rb: RoleBinding = serde_json::from_value(json!({
        "metadata": {"name": binding},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": cluster_role},
        "subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": user}]
    }))
    .unwrap();
    Api::<RoleBinding>::namespaced(client.clone(), namespace)
        .create(&PostParams::default(), &rb)
        .await
        .unwrap_or_else(|e| panic!("creating RoleBinding {binding}: {e}"));
}

#[tokio::test]
async fn rendered_chart_applies_and_extends_the_built_in_roles() {
    // The harness installs the CRDs and creates the release namespace.
    let env = common::TestEnv::new("chart").await;
    let release = common::unique("chart");
    let values = [
        "--set",
        "verifier.grafanaDashboard.enabled=true",
        "--set",
        "gateway.enabled=true",
        "--set",
        "gateway.grafanaDashboard.enabled=true",
    ];
    let objects = render(&release, &env.namespace, &values);
    assert!(!objects.is_empty());

    // Cluster-scoped objects outlive the namespace; remember them for the clean-up,
    // which runs whether or not the checks pass.
    let mut cluster_scoped: Vec<(ApiResource, String)> = vec![];
    let outcome = AssertUnwindSafe(apply_and_check(&env, &objects, &mut cluster_scoped)).catch_unwind().await;

    common::helm::clean_up(&env, &cluster_scoped).await;
    if let Err(panic) = outcome {
        std::panic::resume_unwind(panic);
    }
}

async fn apply_and_check(env: &common::TestEnv, objects: &[Value], cluster_scoped: &mut Vec<(ApiResource, String)>) {
    let client = &env.client;
    let ns = env.namespace.as_str();

    // Server-side apply of every rendered object: first a dry run of all of them, so
    // nothing is created unless the API server accepts everything, then for real.
    for dry_run in [true, false] {
        for obj in objects {
            let (api, resource, namespaced) = api_for(client, obj).await;
            let mut params = PatchParams::apply(FIELD_MANAGER).force();
            if dry_run {
                params = params.dry_run();
            }
            let applied = api.patch(name(obj), &params, &Patch::Apply(obj)).await.unwrap_or_else(|e| {
                panic!("server-side apply (dry run: {dry_run}) of {} {} refused: {e}", kind(obj), name(obj))
            });
            assert_eq!(applied.metadata.name.as_deref(), Some(name(obj)));
            if !dry_run && !namespaced {
                cluster_scoped.push((resource, name(obj).to_string()));
            }
        }
        for obj in objects {
            let (api, _, _) = api_for(client, obj).await;
            let exists = api.get_opt(name(obj)).await.unwrap().is_some();
            assert_eq!(
                exists,
                !dry_run,
                "{} {} exists: {exists} after apply (dry run: {dry_run})",
                kind(obj),
                name(obj)
            );
        }
    }

    // People bound to the built-in roles in the namespace, and one bound to `view`
    // cluster-wide (only a ClusterRoleBinding reaches cluster-scoped kinds).
    let viewer = common::unique("viewer");
    let editor = common::unique("editor");
    let reader = common::unique("reader");
    bind(client, ns, "viewers", &viewer, "view").await;
    bind(client, ns, "editors", &editor, "edit").await;
    let cluster_binding: ClusterRoleBinding = serde_json::from_value(json!({
        "metadata": {"name": reader},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "view"},
        "subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": reader}]
    }))
    .unwrap();
    Api::<ClusterRoleBinding>::all(client.clone()).create(&PostParams::default(), &cluster_binding).await.unwrap();
    cluster_scoped.push((ApiResource::erase::<ClusterRoleBinding>(&()), reader.clone()));

    // The clusterrole-aggregation controller copies the chart's rules into `view`
    // and `edit` asynchronously.
    common::eventually("the chart's rules to be aggregated into the built-in view and edit roles", || async {
        let viewer_lists = can(client, &viewer, "list", "applications", "payi.io", Some(ns)).await;
        let editor_creates = can(client, &editor, "create", "applications", "payi.io", Some(ns)).await;
        let reader_lists = can(client, &reader, "list", "groups", "payi.io", None).await;
        (viewer_lists && editor_creates && reader_lists).then_some(())
    })
    .await;

    // Viewers read Applications in their namespace and nothing secret; Organizations
    // and Groups are cluster-scoped, so only the cluster-wide reader sees them.
    for verb in ["get", "list", "watch"] {
        assert!(can(client, &viewer, verb, "applications", "payi.io", Some(ns)).await, "viewer cannot {verb}");
        for resource in ["organizations", "groups"] {
            assert!(!can(client, &viewer, verb, resource, "payi.io", None).await, "viewer can {verb} {resource}");
            assert!(can(client, &reader, verb, resource, "payi.io", None).await, "reader cannot {verb} {resource}");
        }
        assert!(can(client, &reader, verb, "applications", "payi.io", None).await, "reader cannot {verb} applications");
    }
    assert!(!can(client, &reader, "create", "groups", "payi.io", None).await, "reader can create groups");
    assert!(!can(client, &reader, "list", "secrets", "", None).await, "reader can list secrets");
    assert!(!can(client, &viewer, "get", "secrets", "", Some(ns)).await, "viewer can get secrets");
    assert!(
        !can(client, &viewer, "create", "applications", "payi.io", Some(ns)).await,
        "viewer can create applications"
    );

    // Editors write Applications in their namespace only, and never Groups or Organizations.
    for verb in ["create", "update", "patch", "delete", "deletecollection"] {
        assert!(
            can(client, &editor, verb, "applications", "payi.io", Some(ns)).await,
            "editor cannot {verb} applications"
        );
    }
    assert!(!can(client, &editor, "create", "applications", "payi.io", Some("default")).await);
    assert!(!can(client, &editor, "get", "secrets", "", Some("default")).await, "editor can get secrets elsewhere");
    for resource in ["groups", "organizations"] {
        for namespace in [None, Some(ns)] {
            assert!(
                !can(client, &editor, "create", resource, "payi.io", namespace).await,
                "editor can create {resource} (namespace {namespace:?})"
            );
        }
    }
    // Gateways trust the key digests in Application status, so no role of the chart
    // meant for people or for the verifier may write it: asked of the authorizer,
    // then tried for real through impersonation.
    let admin = common::unique("admin");
    bind(client, ns, "admins", &admin, "admin").await;
    common::eventually("the chart's rules to be aggregated into admin", || async {
        can(client, &admin, "create", "applications", "payi.io", Some(ns)).await.then_some(())
    })
    .await;
    let verifier_sa = objects
        .iter()
        .find(|o| kind(o) == "ServiceAccount" && name(o).ends_with("-verifier"))
        .map(|o| format!("system:serviceaccount:{ns}:{}", name(o)))
        .expect("the verifier's ServiceAccount");
    for verb in ["get", "list", "watch"] {
        for resource in ["organizations", "groups", "applications"] {
            assert!(
                can(client, &verifier_sa, verb, resource, "payi.io", None).await,
                "verifier cannot {verb} {resource}"
            );
        }
    }
    assert!(!can(client, &verifier_sa, "get", "secrets", "", Some(ns)).await, "the verifier can read Secrets");
    assert!(!can(client, &verifier_sa, "patch", "applications", "payi.io", Some(ns)).await);
    let app: payi_operator::crd::Application = serde_json::from_value(json!({
        "apiVersion": "payi.io/v1alpha1", "kind": "Application", "metadata": {"name": "status-probe"},
        "spec": {"groupRef": {"name": "none"}}
    }))
    .unwrap();
    env.apps().create(&PostParams::default(), &app).await.unwrap();
    let forged = json!({"status": {"keys": [{"secretKey": "PAYI_API_KEY", "fingerprint": "sha256:0000000000000000",
        "digest": format!("sha256:{}", "0".repeat(64)), "createdAt": "2026-01-01T00:00:00Z"}]}});
    // The gateway: the same read-only access as the verifier, no Secrets through the API.
    let gateway_sa = objects
        .iter()
        .find(|o| kind(o) == "ServiceAccount" && name(o).ends_with("-gateway"))
        .map(|o| format!("system:serviceaccount:{ns}:{}", name(o)))
        .expect("the gateway's ServiceAccount");
    for resource in ["organizations", "groups", "applications"] {
        assert!(can(client, &gateway_sa, "watch", resource, "payi.io", None).await, "gateway cannot watch {resource}");
        assert!(!can(client, &gateway_sa, "update", resource, "payi.io", Some(ns)).await);
    }
    for verb in ["get", "list"] {
        assert!(!can(client, &gateway_sa, verb, "secrets", "", Some(ns)).await, "the gateway can {verb} Secrets");
    }
    for user in [&viewer, &editor, &reader, &admin, &verifier_sa, &gateway_sa] {
        for verb in ["update", "patch"] {
            assert!(!can_status(client, user, verb, ns).await, "{user} may {verb} applications/status");
        }
        let as_user = common::client_as(user).await;
        let apps: Api<payi_operator::crd::Application> = Api::namespaced(as_user, ns);
        let attempt = apps.patch_status("status-probe", &PatchParams::default(), &Patch::Merge(&forged)).await;
        assert!(common::forbidden(attempt), "{user} wrote applications/status");
    }

    // The operator's own ServiceAccount holds exactly its ClusterRole.
    let operator_sa = of_kind(objects, "ServiceAccount")
        .into_iter()
        .find(|o| !name(o).ends_with("-verifier") && !name(o).ends_with("-gateway"));
    let operator = format!("system:serviceaccount:{ns}:{}", name(operator_sa.expect("the operator's ServiceAccount")));
    assert!(can(client, &operator, "create", "secrets", "", Some("default")).await);
    assert!(!can(client, &operator, "delete", "secrets", "", Some("default")).await);
    assert!(can(client, &operator, "update", "leases", "coordination.k8s.io", Some(ns)).await);
    assert!(!can(client, &operator, "update", "leases", "coordination.k8s.io", Some("default")).await);
}

#[test]
fn the_gateway_renders_only_when_enabled_with_read_only_rbac_and_its_files() {
    let off = render("rel", "payi-system", &[]);
    assert!(off.iter().all(|o| !name(o).contains("gateway")), "gateway objects by default: {:?}", summary(&off));

    let objects = render(
        "rel",
        "payi-system",
        &[
            "--set",
            "gateway.enabled=true",
            "--set",
            "gateway.replicaCount=3",
            "--set",
            "gateway.providers[0].name=openai",
            "--set",
            "gateway.providers[0].kind=openai",
            "--set",
            "gateway.providers[0].baseURL=https://api.openai.com",
            "--set",
            "gateway.providers[0].credentialSecret.name=openai-key",
            "--set",
            "gateway.providers[0].credentialSecret.key=api-key",
            "--set",
            "gateway.providers[0].unmeteredPaths[0].method=POST",
            "--set",
            "gateway.providers[0].unmeteredPaths[0].path=/v1/images/edits",
            "--set-string",
            "gateway.providers[0].unmeteredPaths[0].flatPriceUSD=0.04",
            "--set",
            "gateway.prices.providers.openai.my-model.input=1",
            "--set",
            "gateway.prices.providers.openai.my-model.output=2",
            "--set",
            "gateway.prometheusRule.enabled=true",
            "--set",
            "gateway.grafanaDashboard.enabled=true",
        ],
    );
    let deployment = one(&objects, "Deployment", "rel-payi-operator-gateway");
    assert_eq!(deployment["spec"]["replicas"], 3);
    let pod = &deployment["spec"]["template"]["spec"];
    assert_eq!(pod["serviceAccountName"], "rel-payi-operator-gateway");
    assert_eq!(
        pod["terminationGracePeriodSeconds"], 45,
        "preStopSeconds 5 + drainSeconds 25 + 2 x settleSeconds 5 + 5: no charge is cut off by SIGKILL"
    );
    let container = &pod["containers"][0];
    // Endpoints stop routing to the pod before its listener closes.
    assert_eq!(container["lifecycle"]["preStop"], json!({"sleep": {"seconds": 5}}));
    let args = strings(&container["args"]);
    assert_eq!(args[0], "gateway");
    for arg in [
        "--providers-file=/etc/payi-gateway/config/providers.yaml",
        "--max-bytes-in-flight=67108864",
        "--prices-file=/etc/payi-gateway/config/prices.yaml",
        "--drain-seconds=25",
        "--settle-seconds=5",
        "--max-connections=4096",
        "--connection-idle-ms=120000",
    ] {
        assert!(args.iter().any(|a| a == arg), "{arg} not in {args:?}");
    }
    assert!(container.get("env").is_none_or(|e| !e.to_string().contains("POD_NAME")), "no leader election");
    assert_eq!(container["readinessProbe"]["httpGet"], json!({"path": "/readyz", "port": "metrics"}));
    assert_eq!(container["securityContext"]["readOnlyRootFilesystem"], true);
    // The credential is a mounted Secret at the path the providers file names.
    let volumes = pod["volumes"].to_string();
    assert!(volumes.contains("\"secretName\":\"openai-key\""), "{volumes}");
    let config = one(&objects, "ConfigMap", "rel-payi-operator-gateway");
    let providers: Value = serde_yaml::from_str(config["data"]["providers.yaml"].as_str().unwrap()).unwrap();
    assert_eq!(providers["providers"][0]["credentialFile"], "/etc/payi-gateway/credentials/openai/api-key");
    let parsed =
        payi_operator::gateway::providers::Providers::parse(config["data"]["providers.yaml"].as_str().unwrap());
    let parsed = parsed.expect("the gateway reads the rendered providers file");
    let opted_in = parsed.providers[0].classify("POST", "/v1/images/edits");
    assert!(
        matches!(opted_in, payi_operator::gateway::providers::PathClass::FlatPriced { .. }),
        "the opt-in reaches the gateway: {opted_in:?}"
    );
    let prices = payi_operator::gateway::pricing::PriceTable::parse(config["data"]["prices.yaml"].as_str().unwrap());
    assert!(prices.unwrap().lookup("openai", "my-model").is_some(), "the rendered price table parses");
    let mounts = container["volumeMounts"].to_string();
    assert!(mounts.contains("/etc/payi-gateway/credentials/openai"), "{mounts}");

    // Read-only on the three kinds; no Secrets, no writes.
    let role = one(&objects, "ClusterRole", "rel-payi-operator-gateway");
    let want = expand(&[("payi.io", &["organizations", "groups", "applications"], &["get", "list", "watch"])]);
    assert_eq!(grants(role), want);
    let binding = one(&objects, "ClusterRoleBinding", "rel-payi-operator-gateway");
    assert_eq!(binding["subjects"][0]["name"], "rel-payi-operator-gateway");
    assert!(of_kind(&objects, "Role").iter().all(|r| !name(r).contains("gateway")));

    let service = one(&objects, "Service", "rel-payi-operator-gateway");
    assert_eq!(service["spec"]["selector"], deployment["spec"]["selector"]["matchLabels"]);
    one(&objects, "ServiceAccount", "rel-payi-operator-gateway");

    // The PrometheusRule is files/gateway-rules.yaml verbatim (the file promtool tests).
    let rule = one(&objects, "PrometheusRule", "rel-payi-operator-gateway");
    let file: Value =
        serde_yaml::from_str(&std::fs::read_to_string(repo().join(CHART).join("files/gateway-rules.yaml")).unwrap())
            .unwrap();
    assert_eq!(rule["spec"], file);
    let records: Vec<&str> =
        file["groups"][0]["rules"].as_array().unwrap().iter().filter_map(|r| r["record"].as_str()).collect();
    for level in ["use_case", "application", "group", "organization"] {
        for what in ["tokens", "cost_usd"] {
            let record = format!("{level}:payi_gateway_{what}:rate5m");
            assert!(records.contains(&record.as_str()), "{record} not in {records:?}");
        }
    }
    assert!(!args.iter().any(|a| a.starts_with("--limits")), "no ledger configured, no limit flags: {args:?}");

    // Limits: the ledger URL from a Secret, the policy flags, the alert rules verbatim.
    let limits = render(
        "rel",
        "payi-system",
        &[
            "--set",
            "gateway.enabled=true",
            "--set",
            "gateway.limits.redisURLSecret.name=ledger",
            "--set",
            "gateway.limits.failClosed=true",
            "--set",
            "gateway.limits.prometheusRule.enabled=true",
        ],
    );
    let container =
        &one(&limits, "Deployment", "rel-payi-operator-gateway")["spec"]["template"]["spec"]["containers"][0];
    let limit_args = strings(&container["args"]);
    assert!(limit_args.contains(&"--limits-fail-closed".to_string()), "{limit_args:?}");
    assert_eq!(
        container["env"][0],
        json!({"name": "PAYI_GATEWAY_LIMITS_REDIS_URL", "valueFrom": {"secretKeyRef": {"name": "ledger", "key": "url"}}})
    );
    let operator = &one(&limits, "Deployment", "rel-payi-operator")["spec"]["template"]["spec"]["containers"][0];
    let env = operator["env"].as_array().unwrap();
    assert!(
        env.iter().any(|e| e["name"] == "PAYI_LIMITS_REDIS_URL" && e["valueFrom"]["secretKeyRef"]["name"] == "ledger"),
        "the operator reads the same ledger for limits status: {env:?}"
    );
    assert!(!limit_args.iter().any(|a| a.starts_with("--limits-redis-ca-file")), "no CA Secret, system roots");
    assert!(operator.get("volumeMounts").is_none(), "no CA Secret, nothing mounted in the operator");

    // TLS: the CA from a Secret, mounted read-only into the gateway and the operator,
    // both pointed at the same file.
    let tls = render(
        "rel",
        "payi-system",
        &[
            "--set",
            "gateway.enabled=true",
            "--set",
            "gateway.limits.redisURLSecret.name=ledger",
            "--set",
            "gateway.limits.redisCASecret.name=ledger-ca",
            "--set",
            "gateway.limits.redisCASecret.key=ca.pem",
        ],
    );
    for deployment in ["rel-payi-operator-gateway", "rel-payi-operator"] {
        let pod = &one(&tls, "Deployment", deployment)["spec"]["template"]["spec"];
        let container = &pod["containers"][0];
        assert!(
            strings(&container["args"]).contains(&"--limits-redis-ca-file=/etc/payi-ledger-ca/ca.pem".to_string()),
            "{deployment}: {:?}",
            container["args"]
        );
        let mounts = container["volumeMounts"].as_array().unwrap();
        assert!(
            mounts.contains(&json!({"name": "ledger-ca", "mountPath": "/etc/payi-ledger-ca", "readOnly": true})),
            "{deployment}: {mounts:?}"
        );
        let volumes = pod["volumes"].as_array().unwrap();
        assert!(
            volumes.contains(&json!({"name": "ledger-ca",
                "secret": {"secretName": "ledger-ca", "items": [{"key": "ca.pem", "path": "ca.pem"}]}})),
            "{deployment}: {volumes:?}"
        );
    }
    // A CA without a ledger configures nothing.
    let ca_only = render(
        "rel",
        "payi-system",
        &["--set", "gateway.enabled=true", "--set", "gateway.limits.redisCASecret.name=ledger-ca"],
    );
    for deployment in ["rel-payi-operator-gateway", "rel-payi-operator"] {
        let pod = &one(&ca_only, "Deployment", deployment)["spec"]["template"]["spec"];
        let args = strings(&pod["containers"][0]["args"]);
        assert!(!args.iter().any(|a| a.starts_with("--limits-redis-ca-file")), "{deployment}: {args:?}");
        let volumes = pod["volumes"].as_array().map(|v| v.iter().any(|v| v["name"] == "ledger-ca"));
        assert_ne!(volumes, Some(true), "{deployment}: a CA volume without a ledger");
    }

    let alerts = one(&limits, "PrometheusRule", "rel-payi-operator-gateway-limits");
    let file: Value =
        serde_yaml::from_str(&std::fs::read_to_string(repo().join(CHART).join("files/limits-rules.yaml")).unwrap())
            .unwrap();
    assert_eq!(alerts["spec"], file);

    let dashboards =
        of_kind(&objects, "ConfigMap").into_iter().filter(|c| name(c).contains("gateway-dashboard")).count();
    assert_eq!(dashboards, 1, "{:?}", summary(&objects));
}
