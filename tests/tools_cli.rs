//! The tools' command lines, without a cluster: `--help` of every command, and
//! `payi-operator validate`'s exit codes and output formats.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

const OPERATOR: &str = env!("CARGO_BIN_EXE_payi-operator");
const PLUGIN: &str = env!("CARGO_BIN_EXE_kubectl-payi");

fn run(binary: &str, args: &[&str], stdin: Option<&str>) -> Output {
    let mut child = Command::new(binary)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        // No cluster is needed or wanted here.
        .env("KUBECONFIG", "/nonexistent")
        .spawn()
        .expect("starting the binary");
    let mut input = child.stdin.take().expect("stdin");
    input.write_all(stdin.unwrap_or("").as_bytes()).expect("writing stdin");
    drop(input);
    child.wait_with_output().expect("running the binary")
}

fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// A fresh directory under target/ for one test's manifests.
fn scratch(name: &str) -> PathBuf {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("target/tools-cli").join(name);
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

const GOOD: &str = "\
apiVersion: payi.io/v1alpha1
kind: Organization
metadata:
  name: acme
spec: {}
---
apiVersion: payi.io/v1alpha1
kind: Group
metadata:
  name: eng
spec:
  organizationRef:
    name: acme
  namespacePolicy:
    names: [team-a]
---
apiVersion: payi.io/v1alpha1
kind: Application
metadata:
  name: chat
  namespace: team-a
spec:
  groupRef:
    name: eng
";

const BAD: &str = "\
apiVersion: payi.io/v1alpha1
kind: Application
metadata:
  name: search
  namespace: team-a
spec:
  groupref:
    name: eng
";

#[test]
fn every_command_has_help() {
    for args in [vec!["--help"], vec!["validate", "--help"], vec!["run", "--help"], vec!["crd", "--help"]] {
        let out = run(OPERATOR, &args, None);
        assert!(out.status.success(), "payi-operator {args:?}");
        assert!(stdout(&out).contains("Usage:"), "payi-operator {args:?}: {}", stdout(&out));
    }
    for args in [
        vec!["--help"],
        vec!["tree", "--help"],
        vec!["whois", "--help"],
        vec!["rotate", "--help"],
        vec!["check", "--help"],
    ] {
        let out = run(PLUGIN, &args, None);
        assert!(out.status.success(), "kubectl-payi {args:?}");
        let text = stdout(&out);
        assert!(text.contains("Usage: kubectl payi"), "kubectl-payi {args:?}: {text}");
        assert!(text.contains("--context") && text.contains("--namespace"), "kubectl-payi {args:?}: {text}");
    }
    let whois = stdout(&run(PLUGIN, &["whois", "--help"], None));
    assert!(whois.contains("stdin"), "{whois}");
}

#[test]
fn validate_exit_codes() {
    let dir = scratch("exit-codes");
    std::fs::create_dir_all(dir.join("nested/.hidden")).unwrap();
    std::fs::write(dir.join("good.yaml"), GOOD).unwrap();
    std::fs::write(dir.join("nested/.hidden/ignored.yaml"), "not: [valid").unwrap();
    std::fs::write(dir.join("nested/readme.txt"), "not a manifest").unwrap();
    let clean = run(OPERATOR, &["validate", dir.to_str().unwrap()], None);
    assert_eq!(clean.status.code(), Some(0), "{}", stdout(&clean));
    assert!(stdout(&clean).ends_with("3 objects, 3 payi.io; 0 errors, 0 warnings\n"), "{}", stdout(&clean));

    std::fs::write(dir.join("nested/bad.yml"), BAD).unwrap();
    let found = run(OPERATOR, &["validate", dir.to_str().unwrap()], None);
    assert_eq!(found.status.code(), Some(1));
    let text = stdout(&found);
    let bad = dir.join("nested/bad.yml");
    assert!(text.contains(&format!("{}:6: error: spec.groupRef: Required value", bad.display())), "{text}");
    assert!(
        text.contains(&format!("{}:7: error: spec.groupref: unknown field \"spec.groupref\"", bad.display())),
        "{text}"
    );

    let unreadable = run(OPERATOR, &["validate", dir.join("missing.yaml").to_str().unwrap()], None);
    assert_eq!(unreadable.status.code(), Some(2));
    let broken = run(OPERATOR, &["validate", "-"], Some("kind: [\n"));
    assert_eq!(broken.status.code(), Some(2));
    assert!(stdout(&broken).starts_with("<stdin>:"), "{}", stdout(&broken));
    let usage = run(OPERATOR, &["validate"], None);
    assert_eq!(usage.status.code(), Some(2), "clap's usage error");
}

#[test]
fn validate_reads_stdin_lists_json_and_sarif() {
    let list = serde_json::json!({
        "apiVersion": "v1", "kind": "List",
        "items": [
            serde_yaml::from_str::<serde_json::Value>(BAD).unwrap(),
            {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "ignored"}}
        ]
    });
    let out = run(OPERATOR, &["validate", "-o", "json", "-"], Some(&list.to_string()));
    assert_eq!(out.status.code(), Some(1));
    let report: serde_json::Value = serde_json::from_str(&stdout(&out)).unwrap();
    assert_eq!(report["objects"], 2);
    assert_eq!(report["checked"], 1);
    let checks: Vec<&str> =
        report["findings"].as_array().unwrap().iter().map(|f| f["check"].as_str().unwrap()).collect();
    assert_eq!(checks, vec!["schema", "cel", "unknown-field"], "{report:#}");
    assert_eq!(report["findings"][1]["severity"], "warning");
    assert_eq!(report["findings"][0]["file"], "<stdin>");

    let out = run(OPERATOR, &["validate", "--output", "sarif", "-"], Some(BAD));
    let sarif: serde_json::Value = serde_json::from_str(&stdout(&out)).unwrap();
    assert_eq!(sarif["version"], "2.1.0");
    let results = sarif["runs"][0]["results"].as_array().unwrap();
    assert_eq!(results.len(), 3);
    let by_rule = |id: &str| results.iter().find(|r| r["ruleId"] == id).unwrap();
    assert_eq!(by_rule("cel")["level"], "warning");
    assert_eq!(by_rule("schema")["level"], "error");
    assert_eq!(by_rule("schema")["locations"][0]["physicalLocation"]["region"]["startLine"], 6);
    assert_eq!(by_rule("unknown-field")["locations"][0]["physicalLocation"]["region"]["startLine"], 7);
    let rules = sarif["runs"][0]["tool"]["driver"]["rules"].as_array().unwrap();
    assert!(rules.iter().any(|r| r["id"] == "unknown-field"));
}

#[test]
fn default_namespace_comes_from_the_flag() {
    let app = BAD.replace("  namespace: team-a\n", "").replace("groupref", "groupRef");
    let input =
        format!("{}---\n{app}", GOOD.split("---\napiVersion: payi.io/v1alpha1\nkind: Application").next().unwrap());
    let default = run(OPERATOR, &["validate", "-"], Some(&input));
    assert_eq!(default.status.code(), Some(1));
    assert!(
        stdout(&default).contains("Application default/search: namespace \"default\" is not in"),
        "{}",
        stdout(&default)
    );
    let flagged = run(OPERATOR, &["validate", "-n", "team-a", "-"], Some(&input));
    assert_eq!(flagged.status.code(), Some(0), "{}", stdout(&flagged));
}
