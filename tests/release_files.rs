//! The GitHub workflows cannot run here, so what can be checked without GitHub is:
//! they parse, they trigger on what docs/release.md says, they hold the permissions
//! keyless signing and pushing need, and every `make` target they call exists. Also
//! the versions a release tag must agree with.

use std::collections::BTreeSet;
use std::path::Path;

use serde_yaml::Value;

fn read(path: &str) -> String {
    std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join(path))
        .unwrap_or_else(|e| panic!("reading {path}: {e}"))
}

fn workflow(name: &str) -> Value {
    let path = format!(".github/workflows/{name}");
    serde_yaml::from_str(&read(&path)).unwrap_or_else(|e| panic!("{path} does not parse: {e}"))
}

/// The targets the Makefile defines (`name:` at the start of a line, not `VAR :=`).
fn make_targets() -> BTreeSet<String> {
    read("Makefile")
        .lines()
        .filter(|l| !l.starts_with(['\t', '#', '.', ' ']))
        .filter_map(|l| l.split_once(':').filter(|(_, rest)| !rest.starts_with('=')).map(|(t, _)| t.trim()))
        .filter(|t| !t.is_empty() && !t.contains(['?', '=', '$']))
        .map(String::from)
        .collect()
}

/// Every `run:` script of every job's steps.
fn run_scripts(workflow: &Value) -> Vec<String> {
    let jobs = workflow["jobs"].as_mapping().expect("jobs");
    jobs.values()
        .flat_map(|job| job["steps"].as_sequence().expect("steps").iter())
        .filter_map(|step| step["run"].as_str().map(String::from))
        .collect()
}

/// The `make` targets a script calls (`make a b VAR=x` calls a and b).
fn make_calls(script: &str) -> Vec<String> {
    script
        .lines()
        .filter_map(|l| l.trim().strip_prefix("make "))
        .flat_map(|args| args.split_whitespace().take_while(|a| !a.contains('=')).map(String::from))
        .collect()
}

fn uses(workflow: &Value) -> Vec<String> {
    let jobs = workflow["jobs"].as_mapping().expect("jobs");
    jobs.values()
        .flat_map(|job| job["steps"].as_sequence().expect("steps").iter())
        .filter_map(|step| step["uses"].as_str().map(String::from))
        .collect()
}

#[test]
fn every_make_target_the_workflows_call_exists() {
    let targets = make_targets();
    for name in ["ci.yml", "release.yml"] {
        let calls: Vec<String> = run_scripts(&workflow(name)).iter().flat_map(|s| make_calls(s)).collect();
        assert!(!calls.is_empty(), "{name} calls no make target");
        for call in calls {
            assert!(targets.contains(&call), "{name} calls `make {call}`, which the Makefile lacks ({targets:?})");
        }
    }
}

#[test]
fn ci_runs_make_test_on_pull_requests() {
    let ci = workflow("ci.yml");
    assert!(ci["on"].get("pull_request").is_some(), "{:?}", ci["on"]);
    let calls: Vec<String> = run_scripts(&ci).iter().flat_map(|s| make_calls(s)).collect();
    assert_eq!(calls, ["test"]);
}

#[test]
fn release_runs_on_version_tags_tests_pushes_and_signs() {
    let release = workflow("release.yml");
    let tags = &release["on"]["push"]["tags"];
    assert_eq!(tags.as_sequence().map(|t| t.len()), Some(1), "{tags:?}");
    assert_eq!(tags[0].as_str(), Some("v*"));
    let permissions = &release["permissions"];
    assert_eq!(permissions["id-token"].as_str(), Some("write"), "cosign keyless needs the OIDC token");
    assert_eq!(permissions["packages"].as_str(), Some("write"), "pushing to ghcr.io needs packages: write");

    let calls: Vec<String> = run_scripts(&release).iter().flat_map(|s| make_calls(s)).collect();
    for needed in ["release-check", "test", "image", "sbom", "image-push", "chart-push"] {
        assert!(calls.iter().any(|c| c == needed), "release.yml does not run `make {needed}`: {calls:?}");
    }
    let position = |target: &str| calls.iter().position(|c| c == target).unwrap();
    assert!(position("test") < position("image-push"), "nothing is pushed before the tests pass");
    let scripts = run_scripts(&release).join("\n");
    assert!(scripts.contains("PLATFORMS=\"linux/amd64 linux/arm64\""), "the release builds both platforms");
    assert!(scripts.contains("cosign sign --yes"), "the image is signed");
    assert!(uses(&release).iter().any(|u| u.starts_with("sigstore/cosign-installer@")));
}

#[test]
fn the_chart_deploys_the_version_being_released() {
    let chart: Value = serde_yaml::from_str(&read("charts/payi-operator/Chart.yaml")).unwrap();
    assert_eq!(
        chart["appVersion"].as_str(),
        Some(env!("CARGO_PKG_VERSION")),
        "the chart's appVersion is the image tag it installs by default; it must be Cargo.toml's version"
    );
}

#[test]
fn the_target_list_parser_reads_this_makefile() {
    let targets = make_targets();
    for expected in ["test", "image", "image-push", "chart-push", "sbom", "release-check"] {
        assert!(targets.contains(expected), "{expected} missing from {targets:?}");
    }
    assert!(!targets.contains("VERSION"), "variables are not targets: {targets:?}");
}
