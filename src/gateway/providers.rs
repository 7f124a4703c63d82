//! Which providers the gateway forwards to, how a request path picks one, and which
//! of a provider's paths are forwarded at all. Pure: the file is parsed here, read by
//! the caller.
//!
//! The providers file (the chart renders it from `gateway.providers`):
//!
//! ```yaml
//! providers:
//!   - name: openai              # path prefix: /openai/... and Pay-i's /api/v1/proxy/openai/...
//!     kind: openai              # openai (and OpenAI-compatible), anthropic, azure
//!     baseURL: https://api.openai.com
//!     credentialFile: /etc/payi-gateway/credentials/openai   # optional
//!     unmeteredPaths:           # optional: paths the gateway refuses, allowed at a flat price
//!       - {method: POST, path: /v1/images/edits, flatPriceUSD: "0.04"}
//! ```
//!
//! A request to `/<name>/<rest>` (or `/api/v1/proxy/<name>/<rest>`, the layout Pay-i's
//! SDK uses with `PAYI_BASE_URL` pointing at the gateway) goes to `<baseURL>/<rest>`,
//! query string kept. So the OpenAI SDK's `base_url` is `<gateway>/openai/v1`, the
//! Anthropic SDK's `<gateway>/anthropic`, Azure's `azure_endpoint` `<gateway>/azure.openai`.
//!
//! **Nothing leaves unmetered by default.** Each kind has one explicit list of the
//! paths it forwards ([`Kind::listed`]: method and path relative to the base URL,
//! `{id}` for one segment, a last `*` for any below), and every request is one
//! [`PathClass`]:
//!
//! - `Metered`: one of the APIs whose usage the gateway reads from the answer (POST only);
//! - `Free`: the provider charges nothing (models, moderations, token counting, reading,
//!   deleting or cancelling a stored response);
//! - `FlatPriced`: a path the gateway refuses, allowed by an entry of the provider's
//!   `unmeteredPaths` (first match wins), each request charged that entry's flat price;
//! - `Refused`: every other path, listed as cost-bearing (batches, files, images, audio,
//!   fine-tuning, realtime, ...) or not listed at all, with a reason naming the method
//!   and path; and, whatever `unmeteredPaths` says, a path with a `.` or `..` segment or
//!   an encoded `.`, `/` or `\`, which could leave the base URL's path.
//!
//! The OpenAI and Anthropic lists are written with `/v1`; a path without it is matched
//! as if it had it, for OpenAI-compatible servers whose base path ends in their version
//! (`baseURL: https://generativelanguage.googleapis.com/v1beta/openai`). `unmeteredPaths`
//! entries are matched against the path exactly as sent.
//!
//! A Responses request with `"background": true` is answered before it runs, without
//! its usage; on the metered route it is classified again once its body is read:
//! [`Route::background_class`].

use std::collections::HashSet;

use serde::Deserialize;

use super::usage::Api;
use crate::money::{self, PicoUsd};

/// Pay-i's proxy prefix (`payi_openai_url()` and friends in its Python SDK).
pub const PAYI_PROXY_PREFIX: &str = "/api/v1/proxy/";

/// How a refusal tells the client that the path can be allowed.
const OPT_IN_HINT: &str =
    "a platform admin can allow it with unmeteredPaths in the provider's configuration (docs/ai-gateway.md)";

/// The methods an `unmeteredPaths` entry may name, besides `*` (any).
const METHODS: [&str; 7] = ["GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS"];

#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    /// OpenAI and any OpenAI-compatible endpoint: `Authorization: Bearer`.
    Openai,
    /// Anthropic's Messages API: `x-api-key`.
    Anthropic,
    /// Azure OpenAI: `api-key`, deployments in the path.
    Azure,
}

impl Kind {
    /// The header the provider's credential goes in, and how its value is written.
    pub fn credential_header(self, secret: &str) -> (&'static str, String) {
        match self {
            Kind::Openai => ("authorization", format!("Bearer {secret}")),
            Kind::Anthropic => ("x-api-key", secret.to_string()),
            Kind::Azure => ("api-key", secret.to_string()),
        }
    }

    /// Every header a client may carry a provider credential in, for this kind.
    pub fn credential_headers(self) -> &'static [&'static str] {
        match self {
            Kind::Openai => &["authorization"],
            Kind::Anthropic => &["x-api-key", "authorization"],
            Kind::Azure => &["api-key", "authorization"],
        }
    }

    /// As written in the providers file.
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Openai => "openai",
            Kind::Anthropic => "anthropic",
            Kind::Azure => "azure",
        }
    }

    /// The paths this kind forwards and what each costs; a path not listed is refused.
    pub fn listed(self) -> &'static [Listed] {
        match self {
            Kind::Openai => OPENAI,
            Kind::Anthropic => ANTHROPIC,
            Kind::Azure => AZURE,
        }
    }

    /// What the list says of a request, by its method and path segments.
    fn lookup(self, method: &str, segments: &[&str]) -> Lookup {
        let found = lookup_in(self.listed(), method, segments);
        let versionless = matches!(self, Kind::Openai | Kind::Anthropic) && segments.first() != Some(&"v1");
        if found != Lookup::Unlisted || !versionless {
            return found;
        }
        let with_version: Vec<&str> = std::iter::once("v1").chain(segments.iter().copied()).collect();
        lookup_in(self.listed(), method, &with_version)
    }
}

/// One path a kind forwards, as the provider documents it relative to its base URL.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Listed {
    /// `GET`, `POST`, ... or `*` (any method).
    pub method: &'static str,
    /// `{id}` is any one segment; a last `*` any one or more.
    pub path: &'static str,
    pub cost: Cost,
}

/// What the provider charges for a listed path, as far as the gateway can tell.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Cost {
    /// The gateway reads the usage from the answer and prices it.
    Metered(Api),
    /// The provider charges nothing.
    Free,
    /// The provider charges and the answer does not say how much (or the charge comes
    /// later, outside the request): refused unless allowed by `unmeteredPaths`.
    Unmeterable,
}

const fn metered(path: &'static str, api: Api) -> Listed {
    Listed { method: "POST", path, cost: Cost::Metered(api) }
}

const fn free(method: &'static str, path: &'static str) -> Listed {
    Listed { method, path, cost: Cost::Free }
}

const fn unmeterable(path: &'static str) -> Listed {
    Listed { method: "*", path, cost: Cost::Unmeterable }
}

/// OpenAI and OpenAI-compatible servers.
const OPENAI: &[Listed] = &[
    metered("/v1/chat/completions", Api::ChatCompletions),
    metered("/v1/completions", Api::Completions),
    metered("/v1/embeddings", Api::Embeddings),
    metered("/v1/responses", Api::Responses),
    metered("/v1/images/generations", Api::Images),
    free("GET", "/v1/models"),
    free("GET", "/v1/models/{id}"),
    free("POST", "/v1/moderations"),
    free("GET", "/v1/responses/{id}"),
    free("DELETE", "/v1/responses/{id}"),
    free("POST", "/v1/responses/{id}/cancel"),
    free("GET", "/v1/responses/{id}/input_items"),
    // Stored chat completions (`store: true`): reading them back costs nothing.
    free("GET", "/v1/chat/completions"),
    free("GET", "/v1/chat/completions/{id}"),
    free("GET", "/v1/chat/completions/{id}/messages"),
    free("DELETE", "/v1/chat/completions/{id}"),
    unmeterable("/v1/batches"),
    unmeterable("/v1/batches/*"),
    unmeterable("/v1/files"),
    unmeterable("/v1/files/*"),
    unmeterable("/v1/uploads"),
    unmeterable("/v1/uploads/*"),
    unmeterable("/v1/images/*"),
    unmeterable("/v1/audio/*"),
    unmeterable("/v1/fine_tuning/*"),
    // Also the ephemeral client secrets, with which a client would call OpenAI directly.
    unmeterable("/v1/realtime"),
    unmeterable("/v1/realtime/*"),
    unmeterable("/v1/vector_stores"),
    unmeterable("/v1/vector_stores/*"),
    unmeterable("/v1/assistants"),
    unmeterable("/v1/assistants/*"),
    unmeterable("/v1/threads"),
    unmeterable("/v1/threads/*"),
    unmeterable("/v1/evals"),
    unmeterable("/v1/evals/*"),
    unmeterable("/v1/containers"),
    unmeterable("/v1/containers/*"),
    unmeterable("/v1/videos"),
    unmeterable("/v1/videos/*"),
];

/// Anthropic.
const ANTHROPIC: &[Listed] = &[
    metered("/v1/messages", Api::Messages),
    free("POST", "/v1/messages/count_tokens"),
    free("GET", "/v1/models"),
    free("GET", "/v1/models/{id}"),
    unmeterable("/v1/messages/batches"),
    unmeterable("/v1/messages/batches/*"),
    unmeterable("/v1/files"),
    unmeterable("/v1/files/*"),
    // The legacy Text Completions API: charged, its usage is not read.
    unmeterable("/v1/complete"),
];

/// Azure OpenAI: deployments in the path (`?api-version=`), and the `/openai/v1` API.
const AZURE: &[Listed] = &[
    metered("/openai/deployments/{id}/chat/completions", Api::ChatCompletions),
    metered("/openai/deployments/{id}/completions", Api::Completions),
    metered("/openai/deployments/{id}/embeddings", Api::Embeddings),
    metered("/openai/responses", Api::Responses),
    metered("/openai/v1/chat/completions", Api::ChatCompletions),
    metered("/openai/v1/completions", Api::Completions),
    metered("/openai/v1/embeddings", Api::Embeddings),
    metered("/openai/v1/responses", Api::Responses),
    free("GET", "/openai/models"),
    free("GET", "/openai/models/{id}"),
    free("GET", "/openai/v1/models"),
    free("GET", "/openai/v1/models/{id}"),
    free("GET", "/openai/deployments"),
    free("GET", "/openai/deployments/{id}"),
    free("GET", "/openai/responses/{id}"),
    free("DELETE", "/openai/responses/{id}"),
    free("POST", "/openai/responses/{id}/cancel"),
    free("GET", "/openai/responses/{id}/input_items"),
    free("GET", "/openai/v1/responses/{id}"),
    free("DELETE", "/openai/v1/responses/{id}"),
    free("POST", "/openai/v1/responses/{id}/cancel"),
    free("GET", "/openai/v1/responses/{id}/input_items"),
    unmeterable("/openai/deployments/{id}/images/*"),
    unmeterable("/openai/deployments/{id}/audio/*"),
    // "On your data": chat completions plus a search the answer does not price.
    unmeterable("/openai/deployments/{id}/extensions/*"),
    unmeterable("/openai/batches"),
    unmeterable("/openai/batches/*"),
    unmeterable("/openai/files"),
    unmeterable("/openai/files/*"),
    unmeterable("/openai/uploads"),
    unmeterable("/openai/uploads/*"),
    unmeterable("/openai/fine_tuning/*"),
    unmeterable("/openai/realtime"),
    unmeterable("/openai/realtime/*"),
    unmeterable("/openai/vector_stores"),
    unmeterable("/openai/vector_stores/*"),
    unmeterable("/openai/assistants"),
    unmeterable("/openai/assistants/*"),
    unmeterable("/openai/threads"),
    unmeterable("/openai/threads/*"),
    unmeterable("/openai/v1/images/*"),
    unmeterable("/openai/v1/audio/*"),
    unmeterable("/openai/v1/batches"),
    unmeterable("/openai/v1/batches/*"),
    unmeterable("/openai/v1/files"),
    unmeterable("/openai/v1/files/*"),
    unmeterable("/openai/v1/uploads"),
    unmeterable("/openai/v1/uploads/*"),
    unmeterable("/openai/v1/fine_tuning/*"),
    unmeterable("/openai/v1/realtime"),
    unmeterable("/openai/v1/realtime/*"),
    unmeterable("/openai/v1/vector_stores"),
    unmeterable("/openai/v1/vector_stores/*"),
    unmeterable("/openai/v1/assistants"),
    unmeterable("/openai/v1/assistants/*"),
    unmeterable("/openai/v1/threads"),
    unmeterable("/openai/v1/threads/*"),
    unmeterable("/openai/v1/evals"),
    unmeterable("/openai/v1/evals/*"),
    unmeterable("/openai/v1/containers"),
    unmeterable("/openai/v1/containers/*"),
    unmeterable("/openai/v1/videos"),
    unmeterable("/openai/v1/videos/*"),
];

/// What a kind's list says of one request.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Lookup {
    Listed(Cost),
    /// The path is listed, for these other methods only.
    OtherMethods(Vec<&'static str>),
    Unlisted,
}

fn lookup_in(listed: &'static [Listed], method: &str, segments: &[&str]) -> Lookup {
    let mut others = Vec::new();
    for entry in listed.iter().filter(|entry| path_matches(entry.path, segments)) {
        if entry.method == "*" || entry.method == method {
            return Lookup::Listed(entry.cost);
        }
        others.push(entry.method);
    }
    if others.is_empty() { Lookup::Unlisted } else { Lookup::OtherMethods(others) }
}

/// A path's segments, without its leading `/`.
fn segments(path: &str) -> Vec<&str> {
    path.strip_prefix('/').unwrap_or(path).split('/').collect()
}

/// `pattern` (`/v1/files/{id}/content`, `/v1/fine_tuning/*`) against a path's segments:
/// `{...}` is any one non-empty segment, a last `*` any one or more.
fn path_matches(pattern: &str, segments: &[&str]) -> bool {
    let mut wanted = pattern.strip_prefix('/').unwrap_or(pattern).split('/');
    let mut given = segments.iter();
    loop {
        match (wanted.next(), given.next()) {
            (None, None) | (Some("*"), Some(_)) => return true,
            (Some(w), Some(g)) if w == *g || (is_placeholder(w) && !g.is_empty()) => {}
            _ => return false,
        }
    }
}

fn is_placeholder(segment: &str) -> bool {
    segment.len() > 2 && segment.starts_with('{') && segment.ends_with('}')
}

/// A `.` or `..` segment, or an encoded `.`, `/` or `\` (or a plain `\`): a path the
/// provider or a proxy in front of it could resolve outside the base URL's path.
fn leaves_base_path(path: &str) -> bool {
    let lower = path.to_ascii_lowercase();
    path.split('/').any(|segment| segment == "." || segment == "..")
        || ["%2e", "%2f", "%5c", "\\"].iter().any(|encoded| lower.contains(encoded))
}

/// How the gateway treats a request, decided from its method and path (and, for a
/// background Responses request, from its body: [`Route::background_class`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PathClass {
    /// An API whose usage the gateway reads from the answer and prices.
    Metered(Api),
    /// The provider charges nothing for it: forwarded, no cost.
    Free,
    /// A path the gateway cannot meter, allowed by an `unmeteredPaths` entry: each
    /// request costs `price_pico`. `rule` names the entry as written
    /// (`"POST /v1/images/edits"`); a provider has few, so it fits a metric label.
    FlatPriced { price_pico: PicoUsd, rule: String },
    /// Not forwarded; `reason`, for the client, names the method and path.
    Refused { reason: String },
}

#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Provider {
    pub name: String,
    pub kind: Kind,
    #[serde(rename = "baseURL")]
    pub base_url: String,
    /// A file holding the provider's API key (a mounted Secret); the gateway sends
    /// it instead of anything the client sent.
    #[serde(default)]
    pub credential_file: Option<String>,
    /// Paths the gateway would refuse that a platform admin allows, each request at a
    /// flat price; the first entry that matches wins.
    #[serde(default)]
    pub unmetered_paths: Vec<UnmeteredPath>,
}

/// One `unmeteredPaths` entry: `{method: POST, path: /v1/images/edits, flatPriceUSD: "0.04"}`.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct UnmeteredPath {
    /// `GET`, `POST`, `PUT`, `PATCH`, `DELETE`, `HEAD`, `OPTIONS`, or `*` for any.
    pub method: String,
    /// Relative to the base URL, matched against the path as sent: exact
    /// (`/v1/images/edits`), with `{id}` segments (`/v1/files/{id}/content`), or
    /// ending in `/*` for every path below (`/v1/fine_tuning/*`, not `/v1/fine_tuning`).
    pub path: String,
    /// USD per request, a decimal with at most 12 decimals (`"0.04"`); `"0"` forwards
    /// and counts the request at no cost. Required.
    #[serde(rename = "flatPriceUSD", default)]
    pub flat_price_usd: String,
    /// `flat_price_usd`, exact; set by [`Providers::parse`].
    #[serde(skip)]
    pub price: PicoUsd,
}

impl UnmeteredPath {
    fn matches(&self, method: &str, segments: &[&str]) -> bool {
        (self.method == "*" || self.method == method) && path_matches(&self.path, segments)
    }

    fn flat_priced(&self) -> PathClass {
        PathClass::FlatPriced { price_pico: self.price, rule: format!("{} {}", self.method, self.path) }
    }

    /// The entry's price, or why the entry is refused.
    fn check(&self, kind: Kind) -> Result<PicoUsd, String> {
        let (method, path) = (self.method.as_str(), self.path.as_str());
        if method != "*" && !METHODS.contains(&method) {
            return Err(format!("method must be one of {} or \"*\" for any", METHODS.join(", ")));
        }
        if !path.starts_with('/') || path.contains(['?', '#']) {
            return Err("path must start with '/' and have no query".into());
        }
        if leaves_base_path(path) {
            return Err("path must not have a '.' or '..' segment, or an encoded '.', '/' or '\\'".into());
        }
        let segments = segments(path);
        let last = segments.len() - 1;
        for (i, segment) in segments.iter().enumerate() {
            if segment.is_empty() {
                return Err("path must not have an empty segment (a doubled or trailing '/')".into());
            }
            if segment.contains('*') && (*segment != "*" || i != last) {
                return Err("'*' may only be the whole last segment (/v1/fine_tuning/*)".into());
            }
            if segment.contains(['{', '}']) && !is_placeholder(segment) {
                return Err("'{' and '}' may only enclose a whole segment ({id})".into());
            }
        }
        let exact = !path.contains(['*', '{']);
        if exact && method != "*" {
            match kind.lookup(method, &segments) {
                // POST /v1/responses: the background Responses requests.
                Lookup::Listed(Cost::Metered(Api::Responses)) => {}
                Lookup::Listed(Cost::Metered(_)) => {
                    return Err(format!("{method} {path} is metered already; this entry would never apply"));
                }
                Lookup::Listed(Cost::Free) => {
                    return Err(format!("{method} {path} is free already; this entry would never apply"));
                }
                _ => {}
            }
        }
        if self.flat_price_usd.is_empty() {
            return Err("flatPriceUSD is required: USD per request as a decimal string (\"0.04\"; \"0\" counts \
                        the request at no cost)"
                .into());
        }
        money::parse_scaled(&self.flat_price_usd, 12).map(PicoUsd).map_err(|e| format!("flatPriceUSD: {e}"))
    }
}

impl Provider {
    /// The first `unmeteredPaths` entry that allows this request.
    fn allowed(&self, method: &str, segments: &[&str]) -> Option<&UnmeteredPath> {
        self.unmetered_paths.iter().find(|entry| entry.matches(method, segments))
    }

    /// The class of a request on this provider; `path` is relative to the base URL,
    /// with its leading `/` and without the query.
    pub fn classify(&self, method: &str, path: &str) -> PathClass {
        if leaves_base_path(path) {
            let reason = format!(
                "{method} {path} is not forwarded: a '.' or '..' segment, or an encoded '.', '/' or '\\', could \
                 reach outside the provider's base URL"
            );
            return PathClass::Refused { reason };
        }
        let segments = segments(path);
        let why = match self.kind.lookup(method, &segments) {
            Lookup::Listed(Cost::Metered(api)) => return PathClass::Metered(api),
            Lookup::Listed(Cost::Free) => return PathClass::Free,
            Lookup::Listed(Cost::Unmeterable) => "the gateway cannot meter its cost".to_string(),
            Lookup::OtherMethods(methods) => format!("the gateway forwards this path for {} only", methods.join(", ")),
            Lookup::Unlisted => format!("it is not an API the gateway knows for an {} provider", self.kind.as_str()),
        };
        match self.allowed(method, &segments) {
            Some(entry) => entry.flat_priced(),
            None => PathClass::Refused { reason: format!("{method} {path} is not forwarded: {why}; {OPT_IN_HINT}") },
        }
    }
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Providers {
    pub providers: Vec<Provider>,
}

#[derive(Debug, thiserror::Error)]
pub enum ProvidersError {
    #[error("providers file is not valid YAML for the gateway: {0}")]
    Yaml(#[from] serde_yaml::Error),
    #[error("provider {name:?}: {why}")]
    Invalid { name: String, why: &'static str },
    #[error("provider {name:?}: unmeteredPaths[{index}] ({method} {path}): {why}")]
    UnmeteredPath { name: String, index: usize, method: String, path: String, why: String },
}

impl Providers {
    pub fn parse(text: &str) -> Result<Self, ProvidersError> {
        let mut providers: Providers = serde_yaml::from_str(text)?;
        let mut names = HashSet::new();
        for p in &mut providers.providers {
            let invalid = |why| Err(ProvidersError::Invalid { name: p.name.clone(), why });
            if p.name.is_empty() || p.name.contains('/') {
                return invalid("a name is a non-empty path segment");
            }
            if !names.insert(p.name.clone()) {
                return invalid("names must be unique");
            }
            let url = p.base_url.as_str();
            if !(url.starts_with("http://") || url.starts_with("https://")) || url.contains('@') {
                return invalid("baseURL must be an http or https URL without user information");
            }
            let mut entries = HashSet::new();
            for (index, entry) in p.unmetered_paths.iter_mut().enumerate() {
                let checked = match entries.insert((entry.method.clone(), entry.path.clone())) {
                    true => entry.check(p.kind),
                    false => Err("the same method and path are listed twice".to_string()),
                };
                match checked {
                    Ok(price) => entry.price = price,
                    Err(why) => {
                        let (method, path) = (entry.method.clone(), entry.path.clone());
                        return Err(ProvidersError::UnmeteredPath { name: p.name.clone(), index, method, path, why });
                    }
                }
            }
        }
        Ok(providers)
    }

    /// The provider a request path names, the URL to send it to (the provider's
    /// base path in front, no doubled slashes, query kept), and its [`PathClass`].
    /// `None` when no provider has this name.
    pub fn route<'a>(&'a self, method: &hyper::Method, path_and_query: &str) -> Option<Route<'a>> {
        let path = path_and_query.strip_prefix(PAYI_PROXY_PREFIX).map_or(path_and_query, |p| p);
        let path = path.trim_start_matches('/');
        let (name, rest) = path.split_once('/').unwrap_or((path.split('?').next().unwrap_or(path), ""));
        let provider = self.providers.iter().find(|p| p.name == name)?;
        let rest = rest.trim_start_matches('/');
        let base = provider.base_url.trim_end_matches('/');
        let upstream = format!("{base}/{rest}");
        let path = format!("/{}", rest.split('?').next().unwrap_or(rest));
        let class = provider.classify(method.as_str(), &path);
        let api = match class {
            PathClass::Metered(api) => Some(api),
            _ => None,
        };
        Some(Route { provider, upstream, path, class, api })
    }
}

/// Where one request goes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Route<'a> {
    pub provider: &'a Provider,
    /// The full upstream URL.
    pub upstream: String,
    /// The path relative to the provider's base URL, without the query (`/v1/responses`).
    pub path: String,
    /// Whether and how the request is forwarded and charged.
    pub class: PathClass,
    /// The metered API: `Some` exactly when `class` is `Metered`.
    pub api: Option<Api>,
}

impl Route<'_> {
    /// The class of a request on this (metered) route whose body asks to run in the
    /// background (Responses' `"background": true`, `body::Prepared::background`): its
    /// answer comes before the work, without usage, and fetching the result later is
    /// free, so it is refused unless an `unmeteredPaths` entry allows POST on this
    /// path; then it is charged that entry's flat price.
    pub fn background_class(&self) -> PathClass {
        let path = &self.path;
        match self.provider.allowed("POST", &segments(path)) {
            Some(entry) => entry.flat_priced(),
            None => PathClass::Refused {
                reason: format!(
                    "POST {path} with \"background\": true is not forwarded: a background response is answered \
                     without its usage, so the gateway cannot meter it; a platform admin can allow it at a flat \
                     price with an unmeteredPaths entry for POST {path} in the provider's configuration \
                     (docs/ai-gateway.md)"
                ),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use hyper::Method;

    const FILE: &str = "providers:
  - {name: openai, kind: openai, baseURL: 'https://api.openai.com/'}
  - {name: anthropic, kind: anthropic, baseURL: 'https://api.anthropic.com', credentialFile: /creds/anthropic}
  - {name: azure.openai, kind: azure, baseURL: 'https://acme.openai.azure.com'}
  - {name: vllm, kind: openai, baseURL: 'http://vllm.ai:8000/base'}
";

    fn providers() -> Providers {
        Providers::parse(FILE).unwrap()
    }

    fn method(name: &str) -> Method {
        Method::from_bytes(name.as_bytes()).unwrap()
    }

    #[test]
    fn paths_pick_a_provider_in_both_layouts() {
        let p = providers();
        let cases = [
            (
                "/openai/v1/chat/completions",
                "openai",
                "https://api.openai.com/v1/chat/completions",
                Some(Api::ChatCompletions),
            ),
            (
                "/api/v1/proxy/openai/v1/chat/completions",
                "openai",
                "https://api.openai.com/v1/chat/completions",
                Some(Api::ChatCompletions),
            ),
            ("/openai/v1/completions", "openai", "https://api.openai.com/v1/completions", Some(Api::Completions)),
            ("/openai/v1/embeddings", "openai", "https://api.openai.com/v1/embeddings", Some(Api::Embeddings)),
            ("/openai/v1/responses", "openai", "https://api.openai.com/v1/responses", Some(Api::Responses)),
            ("/openai/v1/models", "openai", "https://api.openai.com/v1/models", None),
            ("/anthropic/v1/messages", "anthropic", "https://api.anthropic.com/v1/messages", Some(Api::Messages)),
            (
                "/api/v1/proxy/anthropic/v1/messages",
                "anthropic",
                "https://api.anthropic.com/v1/messages",
                Some(Api::Messages),
            ),
            (
                "/azure.openai/openai/deployments/gpt-4o/chat/completions?api-version=2024-10-21",
                "azure.openai",
                "https://acme.openai.azure.com/openai/deployments/gpt-4o/chat/completions?api-version=2024-10-21",
                Some(Api::ChatCompletions),
            ),
            (
                "/vllm/v1/chat/completions",
                "vllm",
                "http://vllm.ai:8000/base/v1/chat/completions",
                Some(Api::ChatCompletions),
            ),
        ];
        for (path, name, upstream, api) in cases {
            let route = p.route(&Method::POST, path).unwrap_or_else(|| panic!("{path} has no route"));
            assert_eq!(
                (route.provider.name.as_str(), route.upstream.as_str(), route.api),
                (name, upstream, api),
                "{path}"
            );
        }
        for unknown in ["/", "/nope/v1/chat/completions", "/api/v1/proxy/nope/x", "", "/api/v1/proxy/../openai/v1"] {
            assert_eq!(p.route(&Method::POST, unknown), None, "{unknown}");
        }
    }

    /// The class of `method path` at the provider named first in `path`, in short:
    /// `metered`, `free`, `flat <price> <rule>`, `refused`, `traversal`.
    fn class_of(p: &Providers, method_name: &str, path: &str) -> String {
        let route = p.route(&method(method_name), path).unwrap_or_else(|| panic!("{path} has no route"));
        match route.class {
            PathClass::Metered(api) => {
                assert_eq!(route.api, Some(api));
                format!("metered {api:?}")
            }
            PathClass::Free => "free".into(),
            PathClass::FlatPriced { price_pico, rule } => format!("flat {price_pico} {rule}"),
            PathClass::Refused { reason } if reason.contains("base URL") => "traversal".into(),
            PathClass::Refused { reason } => {
                let shown = route.path.clone();
                assert!(reason.starts_with(&format!("{method_name} {shown} is not forwarded: ")), "{reason}");
                assert!(reason.ends_with(OPT_IN_HINT), "{reason}");
                "refused".into()
            }
        }
    }

    #[test]
    fn every_listed_path_is_metered_free_or_refused_by_default() {
        let p = providers();
        let cases = [
            // OpenAI: metered (POST only).
            ("POST", "/openai/v1/chat/completions", "metered ChatCompletions"),
            ("POST", "/openai/v1/completions", "metered Completions"),
            ("POST", "/openai/v1/embeddings", "metered Embeddings"),
            ("POST", "/openai/v1/responses", "metered Responses"),
            ("POST", "/api/v1/proxy/openai/v1/responses?x=1", "metered Responses"),
            // OpenAI: free.
            ("GET", "/openai/v1/models", "free"),
            ("GET", "/openai/v1/models/gpt-4o", "free"),
            ("POST", "/openai/v1/moderations", "free"),
            ("GET", "/openai/v1/responses/resp_1", "free"),
            ("GET", "/openai/v1/responses/resp_1?stream=true", "free"),
            ("DELETE", "/openai/v1/responses/resp_1", "free"),
            ("POST", "/openai/v1/responses/resp_1/cancel", "free"),
            ("GET", "/openai/v1/responses/resp_1/input_items", "free"),
            ("GET", "/openai/v1/chat/completions", "free"),
            ("GET", "/openai/v1/chat/completions/c_1", "free"),
            ("GET", "/openai/v1/chat/completions/c_1/messages", "free"),
            ("DELETE", "/openai/v1/chat/completions/c_1", "free"),
            // OpenAI: cost-bearing, refused by default.
            ("POST", "/openai/v1/batches", "refused"),
            ("GET", "/openai/v1/batches/batch_1", "refused"),
            ("POST", "/openai/v1/files", "refused"),
            ("GET", "/openai/v1/files/file_1/content", "refused"),
            ("POST", "/openai/v1/uploads", "refused"),
            ("POST", "/openai/v1/images/generations", "metered Images"),
            ("POST", "/openai/v1/images/edits", "refused"),
            ("POST", "/openai/v1/audio/speech", "refused"),
            ("POST", "/openai/v1/audio/transcriptions", "refused"),
            ("POST", "/openai/v1/fine_tuning/jobs", "refused"),
            ("GET", "/openai/v1/realtime?model=gpt-realtime", "refused"),
            ("POST", "/openai/v1/realtime/client_secrets", "refused"),
            ("POST", "/openai/v1/vector_stores", "refused"),
            ("POST", "/openai/v1/assistants", "refused"),
            ("POST", "/openai/v1/threads/thread_1/runs", "refused"),
            ("POST", "/openai/v1/evals", "refused"),
            ("POST", "/openai/v1/containers", "refused"),
            ("POST", "/openai/v1/videos", "refused"),
            // OpenAI: unknown paths and wrong methods.
            ("POST", "/openai/v1/something_new", "refused"),
            ("POST", "/openai/", "refused"),
            ("POST", "/openai", "refused"),
            ("GET", "/openai/v1/embeddings", "refused"),
            ("PUT", "/openai/v1/chat/completions", "refused"),
            ("POST", "/openai/v1/models", "refused"),
            ("POST", "/openai/v1/chat/completions/", "refused"),
            ("POST", "/openai/v1//chat/completions", "refused"),
            ("GET", "/openai/v1/models/", "refused"),
            // An OpenAI-compatible server whose base path ends in its version.
            ("POST", "/vllm/chat/completions", "metered ChatCompletions"),
            ("GET", "/vllm/models", "free"),
            ("POST", "/vllm/batches", "refused"),
            ("POST", "/vllm/v2/chat/completions", "refused"),
            // Anthropic.
            ("POST", "/anthropic/v1/messages", "metered Messages"),
            ("POST", "/api/v1/proxy/anthropic/v1/messages", "metered Messages"),
            ("POST", "/anthropic/v1/messages/count_tokens", "free"),
            ("GET", "/anthropic/v1/models", "free"),
            ("GET", "/anthropic/v1/models/claude-sonnet-4-5", "free"),
            ("POST", "/anthropic/v1/messages/batches", "refused"),
            ("GET", "/anthropic/v1/messages/batches/msgbatch_1/results", "refused"),
            ("POST", "/anthropic/v1/files", "refused"),
            ("POST", "/anthropic/v1/complete", "refused"),
            ("GET", "/anthropic/v1/messages", "refused"),
            ("POST", "/anthropic/v1/chat/completions", "refused"),
            // Azure: deployments and the v1 API.
            (
                "POST",
                "/azure.openai/openai/deployments/gpt-4o/chat/completions?api-version=1",
                "metered ChatCompletions",
            ),
            ("POST", "/azure.openai/openai/deployments/gpt-35/completions?api-version=1", "metered Completions"),
            ("POST", "/azure.openai/openai/deployments/ada/embeddings?api-version=1", "metered Embeddings"),
            ("POST", "/azure.openai/openai/responses?api-version=1", "metered Responses"),
            ("POST", "/azure.openai/openai/v1/chat/completions", "metered ChatCompletions"),
            ("POST", "/azure.openai/openai/v1/completions", "metered Completions"),
            ("POST", "/azure.openai/openai/v1/embeddings", "metered Embeddings"),
            ("POST", "/azure.openai/openai/v1/responses", "metered Responses"),
            ("GET", "/azure.openai/openai/models?api-version=1", "free"),
            ("GET", "/azure.openai/openai/models/gpt-4o", "free"),
            ("GET", "/azure.openai/openai/v1/models", "free"),
            ("GET", "/azure.openai/openai/deployments?api-version=1", "free"),
            ("GET", "/azure.openai/openai/deployments/gpt-4o", "free"),
            ("GET", "/azure.openai/openai/responses/resp_1", "free"),
            ("DELETE", "/azure.openai/openai/v1/responses/resp_1", "free"),
            ("POST", "/azure.openai/openai/v1/responses/resp_1/cancel", "free"),
            ("GET", "/azure.openai/openai/v1/responses/resp_1/input_items", "free"),
            ("POST", "/azure.openai/openai/deployments/dalle/images/generations?api-version=1", "refused"),
            ("POST", "/azure.openai/openai/deployments/whisper/audio/transcriptions", "refused"),
            ("POST", "/azure.openai/openai/deployments/gpt-4o/extensions/chat/completions", "refused"),
            ("POST", "/azure.openai/openai/batches", "refused"),
            ("POST", "/azure.openai/openai/files", "refused"),
            ("POST", "/azure.openai/openai/fine_tuning/jobs", "refused"),
            ("GET", "/azure.openai/openai/realtime", "refused"),
            ("POST", "/azure.openai/openai/v1/images/generations", "refused"),
            ("POST", "/azure.openai/openai/v1/batches", "refused"),
            ("POST", "/azure.openai/v1/chat/completions", "refused"),
            ("GET", "/azure.openai/openai/deployments/gpt-4o/chat/completions", "refused"),
            // Traversal out of the base path, plain or encoded, whatever the method.
            ("POST", "/vllm/v1/../../admin", "traversal"),
            ("POST", "/vllm/./v1/chat/completions", "traversal"),
            ("GET", "/openai/v1/models/..", "traversal"),
            ("GET", "/openai/v1/models/%2e%2e/%2E%2E/batches", "traversal"),
            ("GET", "/openai/v1/models/..%2fbatches", "traversal"),
            ("GET", "/openai/v1/models/x%2Fy", "traversal"),
            ("GET", "/openai/v1/models/x%5cy", "traversal"),
            ("GET", "/openai/v1/models/x\\y", "traversal"),
        ];
        for (method_name, path, expected) in cases {
            assert_eq!(class_of(&p, method_name, path), expected, "{method_name} {path}");
        }
    }

    #[test]
    fn every_path_of_every_list_is_classified_as_listed() {
        let p = providers();
        for (provider, kind) in
            [("openai", Kind::Openai), ("anthropic", Kind::Anthropic), ("azure.openai", Kind::Azure)]
        {
            for listed in kind.listed() {
                let path = listed.path.replace("{id}", "x1").replace('*', "y1");
                let method_name = if listed.method == "*" { "PATCH" } else { listed.method };
                let expected = match listed.cost {
                    Cost::Metered(api) => format!("metered {api:?}"),
                    Cost::Free => "free".into(),
                    Cost::Unmeterable => "refused".into(),
                };
                let got = class_of(&p, method_name, &format!("/{provider}{path}"));
                assert_eq!(got, expected, "{kind:?} {method_name} {path}");
            }
        }
    }

    #[test]
    fn refusals_name_the_method_the_path_and_why() {
        let p = providers();
        let reason = |m: Method, path: &str| match p.route(&m, path).map(|r| r.class) {
            Some(PathClass::Refused { reason }) => reason,
            other => panic!("{path}: {other:?}"),
        };
        assert_eq!(
            reason(Method::POST, "/openai/v1/batches?x=1"),
            "POST /v1/batches is not forwarded: the gateway cannot meter its cost; a platform admin can allow it \
             with unmeteredPaths in the provider's configuration (docs/ai-gateway.md)"
        );
        assert_eq!(
            reason(Method::GET, "/openai/v1/embeddings"),
            format!("GET /v1/embeddings is not forwarded: the gateway forwards this path for POST only; {OPT_IN_HINT}")
        );
        assert_eq!(
            reason(Method::POST, "/anthropic/v1/new"),
            format!(
                "POST /v1/new is not forwarded: it is not an API the gateway knows for an anthropic provider; \
                 {OPT_IN_HINT}"
            )
        );
        assert_eq!(
            reason(Method::GET, "/vllm/v1/%2E%2E/admin"),
            "GET /v1/%2E%2E/admin is not forwarded: a '.' or '..' segment, or an encoded '.', '/' or '\\', could \
             reach outside the provider's base URL"
        );
    }

    const OPTED_IN: &str = "providers:
  - name: openai
    kind: openai
    baseURL: https://api.openai.com
    unmeteredPaths:
      - {method: POST, path: /v1/images/edits, flatPriceUSD: '0.04'}
      - {method: '*', path: /v1/files/*, flatPriceUSD: '0'}
      - {method: GET, path: '/v1/batches/{id}', flatPriceUSD: '0.000000000001'}
      - {method: POST, path: /v1/responses, flatPriceUSD: '1.5'}
      - {method: POST, path: /v1/moderations/*, flatPriceUSD: 0.10}
  - name: azure
    kind: azure
    baseURL: https://acme.openai.azure.com
    unmeteredPaths:
      - {method: POST, path: '/openai/deployments/{deployment}/images/generations', flatPriceUSD: '0.08'}
";

    #[test]
    fn opted_in_paths_are_flat_priced_and_the_rest_stays_refused() {
        let p = Providers::parse(OPTED_IN).unwrap();
        let cases = [
            ("POST", "/openai/v1/images/edits", "flat 0.04 POST /v1/images/edits"),
            ("POST", "/api/v1/proxy/openai/v1/images/edits?x=1", "flat 0.04 POST /v1/images/edits"),
            ("POST", "/openai/v1/images/variations", "refused"),
            ("GET", "/openai/v1/images/edits", "refused"),
            ("POST", "/openai/v1/files/file_1", "flat 0 * /v1/files/*"),
            ("DELETE", "/openai/v1/files/file_1/content", "flat 0 * /v1/files/*"),
            // `/*` is what is below, not the path itself.
            ("POST", "/openai/v1/files", "refused"),
            ("GET", "/openai/v1/batches/batch_1", "flat 0.000000000001 GET /v1/batches/{id}"),
            ("GET", "/openai/v1/batches/batch_1/x", "refused"),
            ("POST", "/openai/v1/batches", "refused"),
            // Metered and free paths keep their class; an entry does not reprice them.
            ("POST", "/openai/v1/responses", "metered Responses"),
            ("POST", "/openai/v1/moderations", "free"),
            ("POST", "/openai/v1/moderations/x", "flat 0.1 POST /v1/moderations/*"),
            // Traversal is refused whatever the entries say.
            ("POST", "/openai/v1/files/..", "traversal"),
            ("POST", "/openai/v1/files/%2e%2e", "traversal"),
            (
                "POST",
                "/azure/openai/deployments/dalle3/images/generations?api-version=1",
                "flat 0.08 POST /openai/deployments/{deployment}/images/generations",
            ),
            ("POST", "/azure/openai/v1/images/generations", "refused"),
        ];
        for (method_name, path, expected) in cases {
            assert_eq!(class_of(&p, method_name, path), expected, "{method_name} {path}");
        }
        let flat = |path: &str| match p.route(&Method::POST, path).map(|r| r.class) {
            Some(PathClass::FlatPriced { price_pico, .. }) => price_pico,
            other => panic!("{path}: {other:?}"),
        };
        assert_eq!(flat("/openai/v1/images/edits"), PicoUsd(40_000_000_000));
        assert_eq!(flat("/openai/v1/files/f"), PicoUsd::ZERO);
    }

    #[test]
    fn a_background_response_is_refused_unless_post_on_its_path_is_opted_in() {
        let refused = providers();
        let route = refused.route(&Method::POST, "/openai/v1/responses").unwrap();
        assert_eq!(route.class, PathClass::Metered(Api::Responses));
        let PathClass::Refused { reason } = route.background_class() else { panic!("not refused") };
        assert!(reason.starts_with("POST /v1/responses with \"background\": true is not forwarded"), "{reason}");
        assert!(reason.contains("unmeteredPaths entry for POST /v1/responses"), "{reason}");

        let opted = Providers::parse(OPTED_IN).unwrap();
        let route = opted.route(&Method::POST, "/openai/v1/responses").unwrap();
        assert_eq!(
            route.background_class(),
            PathClass::FlatPriced { price_pico: PicoUsd(1_500_000_000_000), rule: "POST /v1/responses".into() }
        );
        // The entry is for this path only: Azure's Responses route is not opted in.
        let route = opted.route(&Method::POST, "/azure/openai/v1/responses").unwrap();
        assert!(matches!(route.background_class(), PathClass::Refused { .. }));
    }

    #[test]
    fn bad_files_are_refused_with_the_provider_named() {
        for (text, fragment) in [
            ("providers: [{name: a, kind: openai, baseURL: 'ftp://x'}]", "baseURL"),
            ("providers: [{name: a, kind: openai, baseURL: 'https://u:p@x'}]", "user information"),
            (
                "providers: [{name: a, kind: openai, baseURL: 'https://x'}, {name: a, kind: openai, baseURL: 'https://y'}]",
                "unique",
            ),
            ("providers: [{name: 'a/b', kind: openai, baseURL: 'https://x'}]", "path segment"),
            ("providers: [{name: a, kind: gemini, baseURL: 'https://x'}]", "unknown variant"),
            ("providers: [{name: a, kind: openai, baseURL: 'https://x', extra: 1}]", "unknown field"),
        ] {
            let error = Providers::parse(text).unwrap_err().to_string();
            assert!(error.contains(fragment), "{text}: {error}");
        }
    }

    #[test]
    fn bad_unmetered_paths_are_refused_naming_the_provider_and_the_entry() {
        let entry = |e: &str| {
            format!("providers: [{{name: openai, kind: openai, baseURL: 'https://x', unmeteredPaths: [{e}]}}]")
        };
        let named = |index: usize, rule: &str, why: &str| {
            format!("provider \"openai\": unmeteredPaths[{index}] ({rule}): {why}")
        };
        let cases = [
            (
                entry("{method: post, path: /v1/batches, flatPriceUSD: '1'}"),
                named(
                    0,
                    "post /v1/batches",
                    "method must be one of GET, POST, PUT, PATCH, DELETE, HEAD, OPTIONS or \"*\" for any",
                ),
            ),
            (
                entry("{method: POST, path: v1/batches, flatPriceUSD: '1'}"),
                named(0, "POST v1/batches", "path must start with '/' and have no query"),
            ),
            (
                entry("{method: POST, path: '/v1/batches?x=1', flatPriceUSD: '1'}"),
                named(0, "POST /v1/batches?x=1", "path must start with '/' and have no query"),
            ),
            (
                entry("{method: POST, path: /v1/files/../batches, flatPriceUSD: '1'}"),
                named(
                    0,
                    "POST /v1/files/../batches",
                    "path must not have a '.' or '..' segment, or an encoded '.', '/' or '\\'",
                ),
            ),
            (
                entry("{method: POST, path: /v1/files/%2E%2E, flatPriceUSD: '1'}"),
                named(
                    0,
                    "POST /v1/files/%2E%2E",
                    "path must not have a '.' or '..' segment, or an encoded '.', '/' or '\\'",
                ),
            ),
            (
                entry("{method: POST, path: /v1//batches, flatPriceUSD: '1'}"),
                named(0, "POST /v1//batches", "path must not have an empty segment (a doubled or trailing '/')"),
            ),
            (
                entry("{method: POST, path: /v1/batches/, flatPriceUSD: '1'}"),
                named(0, "POST /v1/batches/", "path must not have an empty segment (a doubled or trailing '/')"),
            ),
            (
                entry("{method: POST, path: /v1/*/x, flatPriceUSD: '1'}"),
                named(0, "POST /v1/*/x", "'*' may only be the whole last segment (/v1/fine_tuning/*)"),
            ),
            (
                entry("{method: POST, path: /v1/files*, flatPriceUSD: '1'}"),
                named(0, "POST /v1/files*", "'*' may only be the whole last segment (/v1/fine_tuning/*)"),
            ),
            (
                entry("{method: POST, path: '/v1/files/x{id}', flatPriceUSD: '1'}"),
                named(0, "POST /v1/files/x{id}", "'{' and '}' may only enclose a whole segment ({id})"),
            ),
            (
                entry("{method: POST, path: /v1/chat/completions, flatPriceUSD: '1'}"),
                named(
                    0,
                    "POST /v1/chat/completions",
                    "POST /v1/chat/completions is metered already; this entry would never apply",
                ),
            ),
            (
                entry("{method: GET, path: /v1/models, flatPriceUSD: '1'}"),
                named(0, "GET /v1/models", "GET /v1/models is free already; this entry would never apply"),
            ),
            (
                entry("{method: POST, path: /v1/batches}"),
                named(
                    0,
                    "POST /v1/batches",
                    "flatPriceUSD is required: USD per request as a decimal string (\"0.04\"; \"0\" counts the request at no cost)",
                ),
            ),
            (
                entry("{method: POST, path: /v1/batches, flatPriceUSD: '-1'}"),
                named(
                    0,
                    "POST /v1/batches",
                    "flatPriceUSD: \"-1\" is not a decimal amount of USD (digits, at most one '.', no sign or exponent)",
                ),
            ),
            (
                entry("{method: POST, path: /v1/batches, flatPriceUSD: 1e-2}"),
                named(
                    0,
                    "POST /v1/batches",
                    "flatPriceUSD: \"1e-2\" is not a decimal amount of USD (digits, at most one '.', no sign or exponent)",
                ),
            ),
            (
                entry("{method: POST, path: /v1/batches, flatPriceUSD: '0.0000000000001'}"),
                named(0, "POST /v1/batches", "flatPriceUSD: \"0.0000000000001\" has more than 12 decimals"),
            ),
            (
                entry(
                    "{method: POST, path: /v1/batches, flatPriceUSD: '1'}, {method: POST, path: /v1/batches, flatPriceUSD: '2'}",
                ),
                named(1, "POST /v1/batches", "the same method and path are listed twice"),
            ),
        ];
        for (text, expected) in cases {
            let error = Providers::parse(&text).unwrap_err().to_string();
            assert_eq!(error, expected, "{text}");
        }
        for (text, fragment) in [
            (entry("{method: POST, path: /v1/batches, flatPriceUSD: '1', price: 2}"), "unknown field `price`"),
            (entry("{method: POST, flatPriceUSD: '1'}"), "missing field `path`"),
        ] {
            let error = Providers::parse(&text).unwrap_err().to_string();
            assert!(error.contains(fragment), "{text}: {error}");
        }
    }

    #[test]
    fn the_docs_list_every_path_of_every_kind() {
        let docs = include_str!("../../docs/ai-gateway.md");
        let section = docs.split("## Which paths are forwarded").nth(1).expect("the section is in the docs");
        let section = section.split("\n## ").next().unwrap_or(section);
        for kind in [Kind::Openai, Kind::Anthropic, Kind::Azure] {
            for listed in kind.listed() {
                let shown = match listed.method {
                    "*" => format!("`{}`", listed.path),
                    method => format!("`{method} {}`", listed.path),
                };
                assert!(section.contains(&shown), "docs/ai-gateway.md does not list {shown} ({kind:?})");
            }
        }
    }

    #[test]
    fn credentials_go_in_each_kinds_own_header() {
        assert_eq!(Kind::Openai.credential_header("sk"), ("authorization", "Bearer sk".to_string()));
        assert_eq!(Kind::Anthropic.credential_header("sk"), ("x-api-key", "sk".to_string()));
        assert_eq!(Kind::Azure.credential_header("sk"), ("api-key", "sk".to_string()));
    }
}
