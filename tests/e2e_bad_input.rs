//! Bad input never reaches RBAC: every manifest under `tests/corpus/` is applied to
//! the real API server and must meet the verdict its first lines state (the format
//! is described in `tests/corpus/README.md`). Most are refused by the CRD schema with a
//! message a person can act on; the few the schema cannot judge end `Ready=False`
//! with a specific reason; a few valid controls must become `Ready=True`.
//!
//! The test applies all of them, then fails once with the list of every file whose
//! outcome differs, and deletes whatever it created.

mod common;

use std::path::{Path, PathBuf};
use std::time::Duration;

use common::{Operator, TestEnv, eventually, ready_of};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::api::{DeleteParams, DynamicObject, PostParams};
use kube::core::{ApiResource, GroupVersionKind};
use kube::{Api, Client};
use serde_json::Value;

/// How long the operator may take to settle every `reason:` and `accepted` file.
const SETTLE: Duration = Duration::from_secs(60);

/// What one corpus file says must happen to it.
#[derive(Debug, Clone, PartialEq)]
enum Expect {
    Rejected(String),
    Reason(String),
    Accepted,
}

struct Case {
    file: String,
    expect: Expect,
    object: Value,
}

fn corpus_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/corpus")
}

fn parse_expect(file: &str, text: &str) -> Expect {
    let line = text
        .lines()
        .take_while(|l| l.starts_with('#'))
        .find_map(|l| l.strip_prefix("# expect: "))
        .unwrap_or_else(|| panic!("{file}: no `# expect:` line among its first comment lines"));
    if line == "accepted" {
        Expect::Accepted
    } else if let Some(fragment) = line.strip_prefix("rejected: ") {
        Expect::Rejected(fragment.to_string())
    } else if let Some(reason) = line.strip_prefix("reason: ") {
        Expect::Reason(reason.to_string())
    } else {
        panic!("{file}: unknown expectation {line:?}")
    }
}

/// Every corpus file with its placeholders filled in and its name made unique.
fn load(namespace: &str, org: &str, group: &str, run: &str) -> Vec<Case> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(corpus_dir())
        .expect("reading tests/corpus")
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .collect();
    files.sort();
    files
        .iter()
        .enumerate()
        .map(|(i, path)| {
            let file = path.file_name().unwrap().to_string_lossy().into_owned();
            let text = std::fs::read_to_string(path).unwrap();
            let expect = parse_expect(&file, &text);
            let text = text.replace("__NS__", namespace).replace("__ORG__", org).replace("__GROUP__", group);
            let mut object =
                serde_yaml::from_str::<Value>(&text).unwrap_or_else(|e| panic!("{file} is no YAML document: {e}"));
            let name = object["metadata"]["name"].as_str().unwrap_or_else(|| panic!("{file} has no name")).to_string();
            object["metadata"]["name"] = Value::from(format!("{name}-{i:02}{run}"));
            Case { file, expect, object }
        })
        .collect()
}

fn resource(kind: &str) -> ApiResource {
    ApiResource::from_gvk(&GroupVersionKind::gvk("payi.io", "v1alpha1", kind))
}

fn api_for(client: &Client, namespace: &str, kind: &str) -> Api<DynamicObject> {
    match kind {
        "Application" => Api::namespaced_with(client.clone(), namespace, &resource(kind)),
        "Organization" | "Group" => Api::all_with(client.clone(), &resource(kind)),
        other => panic!("the corpus holds a {other}, not a payi.io kind"),
    }
}

/// An object the test created and must delete.
struct Created {
    file: String,
    kind: String,
    name: String,
    expect: Expect,
}

/// The Ready condition of an object, once it reports one for its current generation.
async fn settled_ready(api: &Api<DynamicObject>, name: &str) -> Option<(String, String, String)> {
    let obj = api.get(name).await.ok()?;
    let status = obj.data.get("status")?;
    let observed = status.get("observedGeneration").and_then(Value::as_i64);
    if observed != obj.metadata.generation {
        return None;
    }
    let conditions: Vec<Condition> = serde_json::from_value(status.get("conditions")?.clone()).ok()?;
    ready_of(&conditions)
}

#[tokio::test]
async fn every_corpus_manifest_meets_its_verdict() {
    let env = TestEnv::new("corpus").await;
    let _operator = Operator::shared();
    let (org, group) = env.org_and_group().await;
    let run = format!("{:06x}", rand::random::<u32>() & 0xff_ffff);
    let cases = load(&env.namespace, &org, &group, &run);
    assert!(cases.len() >= 45, "the corpus holds only {} manifests", cases.len());

    let mut mismatches: Vec<String> = vec![];
    let mut created: Vec<Created> = vec![];
    for case in &cases {
        let kind = case.object["kind"].as_str().unwrap_or_default().to_string();
        let name = case.object["metadata"]["name"].as_str().unwrap().to_string();
        let api = api_for(&env.client, &env.namespace, &kind);
        let object: DynamicObject = serde_json::from_value(case.object.clone()).unwrap();
        let result = api.create(&PostParams::default(), &object).await;
        match (&case.expect, result) {
            (Expect::Rejected(fragment), Err(e)) => {
                let message = e.to_string();
                if !message.contains(fragment.as_str()) {
                    mismatches.push(format!("{}: rejected, but without {fragment:?}: {message}", case.file));
                }
            }
            (Expect::Rejected(_), Ok(_)) => {
                mismatches.push(format!("{}: accepted by the API server, expected a rejection", case.file));
                created.push(Created { file: case.file.clone(), kind, name, expect: case.expect.clone() });
            }
            (_, Err(e)) => mismatches.push(format!("{}: rejected by the API server: {e}", case.file)),
            (_, Ok(_)) => created.push(Created { file: case.file.clone(), kind, name, expect: case.expect.clone() }),
        }
    }

    // The operator works on the accepted objects concurrently; wait for all of
    // them together, then report the ones that did not end where they should.
    let deadline = tokio::time::Instant::now() + SETTLE;
    let mut pending: Vec<&Created> = created.iter().filter(|c| !matches!(c.expect, Expect::Rejected(_))).collect();
    let mut last_seen: std::collections::BTreeMap<String, Option<(String, String, String)>> = Default::default();
    while !pending.is_empty() && tokio::time::Instant::now() < deadline {
        let mut still = vec![];
        for c in pending {
            let ready = settled_ready(&api_for(&env.client, &env.namespace, &c.kind), &c.name).await;
            let done = match (&c.expect, &ready) {
                (Expect::Accepted, Some((status, _, _))) => status == "True",
                (Expect::Reason(want), Some((status, reason, _))) => status == "False" && reason == want,
                _ => false,
            };
            last_seen.insert(c.file.clone(), ready);
            if !done {
                still.push(c);
            }
        }
        pending = still;
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    for c in pending {
        let seen = last_seen.get(&c.file).cloned().flatten();
        let seen = seen.map_or("no Ready condition for its generation".to_string(), |(s, r, m)| {
            format!("Ready={s} reason={r} message={m:?}")
        });
        mismatches.push(format!("{}: expected {:?} within {SETTLE:?}, got {seen}", c.file, c.expect));
    }

    // Clean up: children first, so the parents' finalizers can let go, and wait
    // while this process's operator still runs to remove those finalizers.
    let mut doomed: Vec<(&str, String)> = created.iter().map(|c| (c.kind.as_str(), c.name.clone())).collect();
    doomed.extend([("Group", group.clone()), ("Organization", org.clone())]);
    for kind in ["Application", "Group", "Organization"] {
        for (_, name) in doomed.iter().filter(|(k, _)| *k == kind) {
            let api = api_for(&env.client, &env.namespace, kind);
            let _ = api.delete(name, &DeleteParams::background()).await;
        }
        eventually(&format!("the corpus' {kind}s to be deleted"), || async {
            for (_, name) in doomed.iter().filter(|(k, _)| *k == kind) {
                if api_for(&env.client, &env.namespace, kind).get_opt(name).await.ok()?.is_some() {
                    return None;
                }
            }
            Some(())
        })
        .await;
    }
    let namespaces: Api<k8s_openapi::api::core::v1::Namespace> = Api::all(env.client.clone());
    common::delete(&namespaces, &env.namespace).await;

    assert!(
        mismatches.is_empty(),
        "{} of {} corpus manifests did not meet their verdict:\n  {}",
        mismatches.len(),
        cases.len(),
        mismatches.join("\n  ")
    );
}

/// The corpus format is shared with the offline validator: keep every file exact.
#[test]
fn corpus_files_follow_the_format() {
    let mut problems = vec![];
    let mut count = 0;
    for entry in std::fs::read_dir(corpus_dir()).unwrap() {
        let path = entry.unwrap().path();
        let file = path.file_name().unwrap().to_string_lossy().into_owned();
        if path.extension().is_none_or(|e| e != "yaml") {
            continue;
        }
        count += 1;
        let text = std::fs::read_to_string(&path).unwrap();
        let digits = file.chars().take_while(char::is_ascii_digit).count();
        let name_ok = digits >= 2 && file[digits..].starts_with('-') && file.len() > digits + 6;
        if !name_ok {
            problems.push(format!("{file}: not named NN-short-name.yaml (two or more digits)"));
        }
        let header: Vec<&str> = text.lines().take_while(|l| l.starts_with('#')).collect();
        let expects = header.iter().filter(|l| l.starts_with("# expect: ")).count();
        if expects != 1 || !header.first().is_some_and(|l| l.starts_with("# expect: ")) {
            problems.push(format!("{file}: must start with exactly one `# expect:` line"));
        }
        if header.iter().any(|l| !l.starts_with("# expect: ") && !l.starts_with("# why: ")) {
            problems.push(format!("{file}: only `# expect:` and `# why:` comment lines are allowed at the top"));
        }
        let docs = serde_yaml::Deserializer::from_str(&text).count();
        if docs != 1 {
            problems.push(format!("{file}: holds {docs} YAML documents, not one"));
        }
        let value = serde_yaml::from_str::<Value>(&text).unwrap_or_default();
        if !matches!(value["kind"].as_str(), Some("Organization" | "Group" | "Application"))
            || value["apiVersion"] != "payi.io/v1alpha1"
        {
            problems.push(format!("{file}: not a payi.io/v1alpha1 Organization, Group or Application"));
        }
        if value["metadata"].get("namespace").is_some() {
            problems.push(format!("{file}: sets metadata.namespace, which the test sets"));
        }
    }
    let reasons = std::fs::read_dir(corpus_dir())
        .unwrap()
        .filter_map(|e| std::fs::read_to_string(e.unwrap().path()).ok())
        .filter(|t| t.starts_with("# expect: reason: "))
        .count();
    assert!(reasons <= 3, "{reasons} files expect a reason; the schema should judge all but a few");
    assert!(count >= 45, "only {count} corpus files");
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}
