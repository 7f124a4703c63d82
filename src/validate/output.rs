//! The three renderings of a [`Report`]: lines for people, JSON, and SARIF
//! 2.1.0 for code-scanning UIs.

use serde_json::json;

use super::{Check, Report, Severity};

/// `file:line: severity: message` per finding, then a summary line.
pub fn text(report: &Report) -> String {
    let mut out = String::new();
    for f in &report.findings {
        out.push_str(&format!("{}:{}: {}: {}\n", f.file, f.line, f.severity.as_str(), f.message));
    }
    out.push_str(&format!(
        "{} objects, {} payi.io; {} errors, {} warnings\n",
        report.objects,
        report.checked,
        report.count(Severity::Error),
        report.count(Severity::Warning)
    ));
    out
}

pub fn json(report: &Report) -> String {
    let value = json!({
        "objects": report.objects,
        "checked": report.checked,
        "errors": report.count(Severity::Error),
        "warnings": report.count(Severity::Warning),
        "findings": report.findings,
    });
    let mut out = serde_json::to_string_pretty(&value).unwrap_or_default();
    out.push('\n');
    out
}

/// A minimal valid SARIF 2.1.0 log: one run, the checks as rules, one result per finding.
pub fn sarif(report: &Report) -> String {
    let rules: Vec<_> =
        Check::ALL.iter().map(|c| json!({ "id": c.id(), "shortDescription": { "text": c.description() } })).collect();
    let results: Vec<_> = report
        .findings
        .iter()
        .map(|f| {
            json!({
                "ruleId": f.check.id(),
                "ruleIndex": Check::ALL.iter().position(|c| *c == f.check).unwrap_or(0),
                "level": f.severity.as_str(),
                "message": { "text": f.message },
                "locations": [{
                    "physicalLocation": {
                        "artifactLocation": { "uri": uri(&f.file) },
                        "region": { "startLine": f.line.max(1) }
                    }
                }]
            })
        })
        .collect();
    let log = json!({
        "$schema": "https://json.schemastore.org/sarif-2.1.0.json",
        "version": "2.1.0",
        "runs": [{
            "tool": {
                "driver": {
                    "name": "payi-operator validate",
                    "version": env!("CARGO_PKG_VERSION"),
                    "rules": rules
                }
            },
            "results": results
        }]
    });
    let mut out = serde_json::to_string_pretty(&log).unwrap_or_default();
    out.push('\n');
    out
}

/// A relative URI reference for a file name: `./` dropped, separators as `/`, spaces escaped.
fn uri(file: &str) -> String {
    let file = file.strip_prefix("./").unwrap_or(file).replace('\\', "/");
    file.replace('%', "%25").replace(' ', "%20")
}
