//! Which providers the gateway forwards to, and how a request path picks one.
//! Pure: the file is parsed here, read by the caller.
//!
//! The providers file (the chart renders it from `gateway.providers`):
//!
//! ```yaml
//! providers:
//!   - name: openai              # path prefix: /openai/... and Pay-i's /api/v1/proxy/openai/...
//!     kind: openai              # openai (and OpenAI-compatible), anthropic, azure
//!     baseURL: https://api.openai.com
//!     credentialFile: /etc/payi-gateway/credentials/openai   # optional
//! ```
//!
//! A request to `/<name>/<rest>` (or `/api/v1/proxy/<name>/<rest>`, the layout Pay-i's
//! SDK uses with `PAYI_BASE_URL` pointing at the gateway) goes to `<baseURL>/<rest>`,
//! query string kept. So the OpenAI SDK's `base_url` is `<gateway>/openai/v1`, the
//! Anthropic SDK's `<gateway>/anthropic`, Azure's `azure_endpoint` `<gateway>/azure.openai`.

use std::collections::HashSet;

use serde::Deserialize;

use super::usage::Api;

/// Pay-i's proxy prefix (`payi_openai_url()` and friends in its Python SDK).
pub const PAYI_PROXY_PREFIX: &str = "/api/v1/proxy/";

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
}

impl Providers {
    pub fn parse(text: &str) -> Result<Self, ProvidersError> {
        let providers: Providers = serde_yaml::from_str(text)?;
        let mut names = HashSet::new();
        for p in &providers.providers {
            let invalid = |why| Err(ProvidersError::Invalid { name: p.name.clone(), why });
            if p.name.is_empty() || p.name.contains('/') {
                return invalid("a name is a non-empty path segment");
            }
            if !names.insert(p.name.as_str()) {
                return invalid("names must be unique");
            }
            let url = p.base_url.as_str();
            if !(url.starts_with("http://") || url.starts_with("https://")) || url.contains('@') {
                return invalid("baseURL must be an http or https URL without user information");
            }
        }
        Ok(providers)
    }

    /// The provider a request path names, and the path to send it (with the
    /// provider's base path in front, no doubled slashes).
    pub fn route<'a>(&'a self, path_and_query: &str) -> Option<Route<'a>> {
        let path = path_and_query.strip_prefix(PAYI_PROXY_PREFIX).map_or(path_and_query, |p| p);
        let path = path.trim_start_matches('/');
        let (name, rest) = path.split_once('/').unwrap_or((path.split('?').next().unwrap_or(path), ""));
        let provider = self.providers.iter().find(|p| p.name == name)?;
        let rest = rest.trim_start_matches('/');
        let base = provider.base_url.trim_end_matches('/');
        let upstream = format!("{base}/{rest}");
        let api = api_of(provider.kind, rest.split('?').next().unwrap_or(rest));
        Some(Route { provider, upstream, api })
    }
}

/// Where one request goes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Route<'a> {
    pub provider: &'a Provider,
    /// The full upstream URL.
    pub upstream: String,
    /// The metered API, or `None` for paths whose usage is not read (e.g. `/v1/models`).
    pub api: Option<Api>,
}

/// The API a path is, by its last segments.
fn api_of(kind: Kind, path: &str) -> Option<Api> {
    let path = path.trim_end_matches('/');
    match kind {
        Kind::Anthropic if path.ends_with("/messages") || path == "messages" => Some(Api::Messages),
        Kind::Anthropic => None,
        Kind::Openai | Kind::Azure => {
            let last = path.rsplit('/').next().unwrap_or(path);
            let before = path.rsplit('/').nth(1).unwrap_or("");
            match (before, last) {
                ("chat", "completions") => Some(Api::ChatCompletions),
                (_, "completions") => Some(Api::Completions),
                (_, "embeddings") => Some(Api::Embeddings),
                (_, "responses") => Some(Api::Responses),
                _ => None,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const FILE: &str = "providers:
  - {name: openai, kind: openai, baseURL: 'https://api.openai.com/'}
  - {name: anthropic, kind: anthropic, baseURL: 'https://api.anthropic.com', credentialFile: /creds/anthropic}
  - {name: azure.openai, kind: azure, baseURL: 'https://acme.openai.azure.com'}
  - {name: vllm, kind: openai, baseURL: 'http://vllm.ai:8000/base'}
";

    fn providers() -> Providers {
        Providers::parse(FILE).unwrap()
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
            let route = p.route(path).unwrap_or_else(|| panic!("{path} has no route"));
            assert_eq!(
                (route.provider.name.as_str(), route.upstream.as_str(), route.api),
                (name, upstream, api),
                "{path}"
            );
        }
        for unknown in ["/", "/nope/v1/chat/completions", "/api/v1/proxy/nope/x", ""] {
            assert_eq!(p.route(unknown), None, "{unknown}");
        }
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
    fn credentials_go_in_each_kinds_own_header() {
        assert_eq!(Kind::Openai.credential_header("sk"), ("authorization", "Bearer sk".to_string()));
        assert_eq!(Kind::Anthropic.credential_header("sk"), ("x-api-key", "sk".to_string()));
        assert_eq!(Kind::Azure.credential_header("sk"), ("api-key", "sk".to_string()));
    }
}
