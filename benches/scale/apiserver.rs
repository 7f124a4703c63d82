//! What reached the API server, from its own `apiserver_request_total`, so the
//! figures hold for whatever operator binary was built and include every client
//! library retry.

use std::collections::BTreeMap;

use kube::Client;

/// Requests served, by (verb, resource or resource/subresource).
pub type Requests = BTreeMap<(String, String), u64>;

/// The kinds the operator reads or writes.
const RESOURCES: [&str; 7] = ["applications", "groups", "organizations", "secrets", "events", "roles", "rolebindings"];
const WRITE_VERBS: [&str; 6] = ["POST", "PUT", "PATCH", "APPLY", "DELETE", "DELETECOLLECTION"];

/// Requests served so far for the operator's kinds, every verb.
pub async fn requests(client: &Client) -> Requests {
    let request = http::Request::get("/metrics").body(Vec::new()).expect("a GET request");
    let text = client.request_text(request).await.expect("scraping the API server's /metrics");
    parse(&text)
}

fn parse(text: &str) -> Requests {
    let mut out = Requests::new();
    for line in text.lines().filter(|l| l.starts_with("apiserver_request_total{")) {
        let Some((labels, value)) = line.rsplit_once(' ') else { continue };
        let label = |name: &str| {
            let start = labels.find(&format!(",{name}=\"")).or_else(|| labels.find(&format!("{{{name}=\"")))?;
            let start = start + name.len() + 3;
            labels[start..].split('"').next()
        };
        let resource = label("resource").unwrap_or_default();
        if !RESOURCES.contains(&resource) {
            continue;
        }
        let key = match label("subresource").unwrap_or_default() {
            "" => resource.to_string(),
            sub => format!("{resource}/{sub}"),
        };
        let verb = label("verb").unwrap_or_default().to_string();
        *out.entry((verb, key)).or_default() += value.parse::<f64>().unwrap_or(0.0) as u64;
    }
    out
}

/// `after - before`, dropping what did not move.
pub fn since(after: &Requests, before: &Requests) -> Requests {
    after
        .iter()
        .map(|(k, v)| (k.clone(), v.saturating_sub(before.get(k).copied().unwrap_or(0))))
        .filter(|(_, v)| *v > 0)
        .collect()
}

/// Writes by resource.
pub fn writes(requests: &Requests) -> BTreeMap<String, u64> {
    let mut out = BTreeMap::new();
    for ((verb, resource), n) in requests {
        if WRITE_VERBS.contains(&verb.as_str()) {
            *out.entry(resource.clone()).or_default() += n;
        }
    }
    out
}

/// Requests of one verb on one resource.
pub fn count(requests: &Requests, verb: &str, resource: &str) -> u64 {
    requests.get(&(verb.to_string(), resource.to_string())).copied().unwrap_or(0)
}
