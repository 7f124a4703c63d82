//! The metrics reference (docs/metrics.md) lists exactly what the processes
//! register, and no document names a metric that does not exist: a dashboard or
//! alert written from the docs must find its series.

use std::collections::BTreeSet;

use prometheus_client::registry::Registry;

/// Every metric the operator, the verifier and the gateway register, by name
/// without a counter's `_total` (the text encoding leaves out families that have
/// no series yet, so the names are read from the registry's descriptors).
fn registered() -> BTreeSet<String> {
    let mut registry = Registry::default();
    payi_operator::metrics::Metrics::default().register(&mut registry);
    payi_operator::verifier::metrics::Metrics::default().register(&mut registry);
    payi_operator::gateway::metrics::Metrics::default().register(&mut registry);
    payi_operator::gateway::metrics::ConnectionMetrics::default().register(&mut registry);
    payi_operator::gateway::metrics::register_budget(&mut registry, &payi_operator::gateway::budget::Budget::new(1));
    payi_operator::limits::ledger::LedgerMetrics::default().register(&mut registry);
    let text = format!("{registry:?}");
    let mut names = BTreeSet::new();
    let mut prefix = String::new();
    let mut rest = text.as_str();
    loop {
        let next_prefix = rest.find("Prefix(\"");
        let next_name = rest.find("Descriptor { name: \"");
        match (next_prefix, next_name) {
            (Some(p), n) if n.is_none_or(|n| p < n) => {
                let from = &rest[p + 8..];
                let end = from.find('"').unwrap();
                prefix = from[..end].to_string();
                rest = &from[end..];
            }
            (_, Some(n)) => {
                let from = &rest[n + 20..];
                let end = from.find('"').unwrap();
                names.insert(format!("{prefix}_{}", &from[..end]));
                rest = &from[end..];
            }
            _ => break,
        }
    }
    assert!(names.len() > 30, "the registry's descriptors were not read: {names:?}");
    names
}

/// A series name as the registry knows its metric.
fn metric(series: &str) -> String {
    series.strip_suffix("_total").unwrap_or(series).to_string()
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
    let names = registered();
    let reference = repo("docs/metrics.md");
    let listed: BTreeSet<String> = reference
        .lines()
        .filter_map(|l| l.strip_prefix("| `"))
        .filter_map(|l| l.split_once('`').map(|(name, _)| metric(name)))
        .collect();
    let missing: Vec<&String> = names.difference(&listed).collect();
    let extra: Vec<&String> = listed.difference(&names).collect();
    assert!(
        missing.is_empty() && extra.is_empty(),
        "docs/metrics.md differs from the code: not listed {missing:?}, listed but not registered {extra:?}"
    );
}

#[test]
fn no_document_names_a_metric_that_does_not_exist() {
    let names = registered();
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
            if !names.contains(&metric(&name)) {
                unknown.push(format!("{document}: {name}"));
            }
        }
    }
    assert!(unknown.is_empty(), "documents name metrics the code does not register:\n{}", unknown.join("\n"));
}
