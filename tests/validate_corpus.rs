//! The offline validator gives every manifest of the bad-input corpus
//! (tests/corpus, format in its README) the verdict the API server gives:
//! `rejected: <fragment>` files get an error containing the fragment;
//! `accepted` and `reason:` files get no schema error (a `reason:` is the
//! operator's verdict on valid input, found here, if at all, by the
//! cross-object rules).

use std::path::PathBuf;

use payi_operator::validate::schema::Schemas;
use payi_operator::validate::{Settings, input, validate};

const NS: &str = "corpus-ns";
const ORG: &str = "corpus-org";
const GROUP: &str = "corpus-group";

/// Ready=False reasons that follow from the manifests alone.
const CROSS_REASONS: [&str; 4] = ["GroupNotFound", "OrganizationNotFound", "NamespaceNotAllowed", "SecretConflict"];

#[derive(Debug)]
enum Expect {
    Rejected(String),
    Reason(String),
    Accepted,
}

fn expectation(text: &str) -> Expect {
    let line = text.lines().find_map(|l| l.strip_prefix("# expect:")).expect("an `# expect:` line").trim();
    if let Some(fragment) = line.strip_prefix("rejected:") {
        Expect::Rejected(fragment.trim().to_string())
    } else if let Some(reason) = line.strip_prefix("reason:") {
        Expect::Reason(reason.trim().to_string())
    } else {
        assert_eq!(line, "accepted", "unknown expectation");
        Expect::Accepted
    }
}

/// The corpus file with its placeholders filled, Applications put in the test
/// namespace, and the parents the placeholders name.
fn manifest_set(text: &str) -> String {
    let filled = text.replace("__NS__", NS).replace("__ORG__", ORG).replace("__GROUP__", GROUP);
    let mut object: serde_json::Value = serde_yaml::from_str(&filled).expect("corpus YAML");
    if object["kind"] == "Application" {
        object["metadata"]["namespace"] = NS.into();
    }
    let parents = format!(
        "apiVersion: v1\nkind: Namespace\nmetadata:\n  name: {NS}\n---\n\
         apiVersion: payi.io/v1alpha1\nkind: Organization\nmetadata:\n  name: {ORG}\nspec: {{}}\n---\n\
         apiVersion: payi.io/v1alpha1\nkind: Group\nmetadata:\n  name: {GROUP}\nspec:\n  organizationRef:\n    name: {ORG}\n  \
         namespacePolicy:\n    names: [{NS}]\n---\n"
    );
    format!("{parents}{}", serde_yaml::to_string(&object).expect("YAML"))
}

#[test]
fn every_corpus_manifest_gets_the_api_servers_verdict() {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/corpus");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .expect("tests/corpus")
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .collect();
    files.sort();
    assert!(!files.is_empty(), "no corpus files in {}", dir.display());
    let schemas = Schemas::from_crds(&payi_operator::crd::all());
    let settings = Settings { default_namespace: "default".into() };
    let mut failures = Vec::new();
    for file in &files {
        let text = std::fs::read_to_string(file).unwrap();
        let expect = expectation(&text);
        let name = file.file_name().unwrap().to_string_lossy().to_string();
        let mut documents = Vec::new();
        let mut errors = Vec::new();
        input::parse_text(name.as_str().into(), &manifest_set(&text), false, &mut documents, &mut errors);
        assert!(errors.is_empty(), "{name}: {errors:?}");
        let report = validate(&documents, errors, &schemas, None, &settings);
        let schema_errors: Vec<&str> = report
            .findings
            .iter()
            .filter(|f| f.check.is_schema() && f.severity == payi_operator::validate::Severity::Error)
            .map(|f| f.message.as_str())
            .collect();
        let ok = match &expect {
            Expect::Rejected(fragment) => schema_errors.iter().any(|m| m.contains(fragment.as_str())),
            // Reasons the cross-object rules can see must be seen, and named.
            Expect::Reason(reason) if CROSS_REASONS.contains(&reason.as_str()) => {
                schema_errors.is_empty() && report.findings.iter().any(|f| f.message.contains(reason.as_str()))
            }
            Expect::Reason(_) => schema_errors.is_empty(),
            Expect::Accepted => report.findings.is_empty(),
        };
        if !ok {
            let all: Vec<&str> = report.findings.iter().map(|f| f.message.as_str()).collect();
            failures.push(format!("{name}: expected {expect:?}, got {all:#?}"));
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} corpus files disagree:\n{}",
        failures.len(),
        files.len(),
        failures.join("\n")
    );
}
