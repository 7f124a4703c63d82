//! The metrics reference (docs/metrics.md) lists exactly what the processes
//! register, and no document names a metric that does not exist: a dashboard or
//! alert written from the docs must find its series.

use std::collections::BTreeSet;

use prometheus_client::encoding::text::encode;
use prometheus_client::registry::Registry;

/// Every metric the operator, the verifier and the gateway register, as the
/// series names a query uses (counters with `_total`), with their help text.
fn registered() -> Vec<(String, String, String)> {
    let mut registry = Registry::default();
    payi_operator::metrics::Metrics::default().register(&mut registry);
    payi_operator::verifier::metrics::Metrics::default().register(&mut registry);
    payi_operator::gateway::metrics::Metrics::default().register(&mut registry);
    payi_operator::limits::ledger::LedgerMetrics::default().register(&mut registry);
    let mut text = String::new();
    encode(&mut text, &registry).unwrap();
    let mut help = std::collections::HashMap::new();
    let mut out = vec![];
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("# HELP ") {
            let (name, text) = rest.split_once(' ').unwrap();
            help.insert(name.to_string(), text.trim_end_matches('.').to_string());
        }
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let (name, kind) = rest.split_once(' ').unwrap();
            let series = if kind == "counter" { format!("{name}_total") } else { name.to_string() };
            out.push((series, kind.to_string(), help.get(name).cloned().unwrap_or_default()));
        }
    }
    out
}

fn repo(path: &str) -> String {
    std::fs::read_to_string(std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join(path)).unwrap()
}

/// Metric names a document mentions: `payi_operator_…`, `payi_gateway_…` or
/// `payi_limit_…` words, recording rules (with a colon) left out, histogram
/// series reduced to their metric.
fn mentioned(text: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    let bytes = text.as_bytes();
    let mut i = 0;
    while let Some(at) = text[i..].find("payi_") {
        let start = i + at;
        let end = text[start..]
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_' || c == ':'))
            .map_or(text.len(), |e| start + e);
        let word = &text[start..end];
        let preceded = start > 0 && (bytes[start - 1].is_ascii_alphanumeric() || bytes[start - 1] == b'_');
        let metric = ["payi_operator_", "payi_gateway_", "payi_limit_"].iter().any(|p| word.starts_with(p));
        if !preceded && metric && !word.contains(':') {
            let word = ["_bucket", "_sum", "_count"].iter().fold(word, |w, s| w.strip_suffix(s).unwrap_or(w));
            names.insert(word.to_string());
        }
        i = end.max(start + 5);
    }
    names
}

#[test]
fn the_metrics_reference_lists_exactly_what_is_registered() {
    let registered = registered();
    let names: BTreeSet<String> = registered.iter().map(|(n, _, _)| n.clone()).collect();
    let reference = repo("docs/metrics.md");
    let listed: BTreeSet<String> = reference
        .lines()
        .filter_map(|l| l.strip_prefix("| `"))
        .filter_map(|l| l.split_once('`').map(|(name, _)| name.to_string()))
        .collect();
    let table: String =
        registered.iter().map(|(name, kind, help)| format!("| `{name}` | {kind} | {help} |\n")).collect();
    assert_eq!(listed, names, "docs/metrics.md differs from the code; its rows, generated:\n{table}");
}

#[test]
fn no_document_names_a_metric_that_does_not_exist() {
    let names: BTreeSet<String> = registered().into_iter().map(|(n, _, _)| n).collect();
    let mut documents = vec!["README.md".to_string()];
    for entry in std::fs::read_dir(std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("docs")).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "md") {
            documents.push(format!("docs/{}", path.file_name().unwrap().to_string_lossy()));
        }
    }
    let mut unknown = vec![];
    for document in &documents {
        for name in mentioned(&repo(document)) {
            // A family's name without `_total` is how PromQL users write a rate of it too.
            if !names.contains(&name) && !names.contains(&format!("{name}_total")) {
                unknown.push(format!("{document}: {name}"));
            }
        }
    }
    assert!(unknown.is_empty(), "documents name metrics the code does not register:\n{}", unknown.join("\n"));
}
