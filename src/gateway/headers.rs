//! The headers a request carries to its provider: one deny filter over every
//! header that would leave, the client's own and those it asks to have forwarded
//! (`xProxy-Forward-<name>: v`, sent as `<name>: v`, Pay-i's convention), then the
//! gateway's own. Pure: the request's headers, the provider's kind, its configured
//! credential and the key the request presented in; the headers to send out.
//!
//! A key holder is an untrusted tenant, and the gateway holds the platform's
//! provider credential, so every header name is judged after the forwarding prefix
//! is taken off (once: `xProxy-Forward-xProxy-Forward-x` is `xproxy-forward-x`,
//! denied), and a header is denied for every value it has. Denied:
//! - **what the gateway owns on the next hop**: `host` (hyper would keep a client's
//!   `Host`, so a shared ingress in front of a provider would send the platform's
//!   credential to whichever virtual host the client named), `content-length` (the
//!   body may have been rewritten), `expect` (the body is already read),
//!   `accept-encoding` (replaced by `identity`, so the usage can be read);
//! - **hop-by-hop** headers (RFC 9110 section 7.6.1, and `http2-settings`) and every
//!   name a `Connection` header lists, the client's or a forwarded one;
//! - **claims about the client, the host or the request line** that a proxy or a
//!   framework in front of the provider may believe (`forwarded`, `x-forwarded-*`,
//!   `x-real-ip`, `via`, the method and URL overrides, ...) and Envoy's control
//!   headers (`x-envoy-*`: retries, timeouts, the upstream host): the provider's only
//!   client is the gateway, and the path it asks for was classified by the gateway;
//! - **the cluster's**: `xproxy-*` and `x-payi-*` (the key, use case, user);
//! - **credentials**: `cookie` (ambient authority to the provider's host; no
//!   provider API takes one), and the credential headers of every provider kind
//!   ([`CREDENTIAL_HEADERS`]). When the provider has no configured credential, the
//!   client's own credential in its kind's own header passes (Pay-i's proxy set-up:
//!   `xProxy-Api-Key` next to `Authorization: Bearer sk-...`), but only sent directly,
//!   never forwarded, and only as a single value: two values could be read
//!   differently by an ingress and the provider behind it;
//! - `openai-organization` and `openai-project` when a credential is configured: a
//!   workload cannot pick another account or project than the platform's;
//! - **anything carrying the payi key**: the header it came in, and any header whose
//!   name or value contains the presented key (ASCII case-insensitively: bare, as
//!   `Bearer <key>`, in a list, in a cookie). An encoding of the key (base64, percent)
//!   is not looked for: a tenant who deliberately sends its own key elsewhere could
//!   as well put it in the body.
//!
//! Then the gateway adds the configured credential in the kind's header (sensitive,
//! so HTTP/2 never indexes it) and `accept-encoding: identity`.

use hyper::header::{self, HeaderMap, HeaderName, HeaderValue};

use super::providers::Kind;

/// A client header sent as `<name>` (Pay-i's convention), then filtered as any other.
pub const FORWARD_PREFIX: &str = "xproxy-forward-";

/// Headers that carry a credential to some provider or to a proxy in front of one:
/// OpenAI and Azure (Entra ID) `authorization`, Anthropic `x-api-key`, Azure
/// `api-key`, Google's `x-goog-api-key`, Azure API Management's subscription key,
/// and a proxy's `proxy-authorization`.
pub const CREDENTIAL_HEADERS: [&str; 6] =
    ["authorization", "proxy-authorization", "x-api-key", "api-key", "x-goog-api-key", "ocp-apim-subscription-key"];

/// Hop-by-hop headers (RFC 9110 section 7.6.1, and HTTP/2's upgrade settings):
/// about one connection, never forwarded either way.
pub const HOP_BY_HOP: [&str; 10] = [
    "connection",
    "keep-alive",
    "proxy-connection",
    "proxy-authenticate",
    "proxy-authorization",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
    "http2-settings",
];

/// Headers the gateway sets itself on the next hop, or that concern only the
/// client's hop: `expect: 100-continue` was answered when the body was read.
const GATEWAY_OWNED: [&str; 4] = ["host", "content-length", "expect", "accept-encoding"];

/// Claims about the client, the host, or the request line, which a proxy or a
/// framework in front of the provider may act on (an allow-list by address, a
/// virtual host, a method or path other than the one the gateway classified).
const CLIENT_CLAIMS: [&str; 16] = [
    "forwarded",
    "x-original-forwarded-for",
    "via",
    "x-real-ip",
    "x-client-ip",
    "true-client-ip",
    "cf-connecting-ip",
    "x-cluster-client-ip",
    "x-original-host",
    "x-host",
    "x-original-url",
    "x-original-uri",
    "x-rewrite-url",
    "x-http-method-override",
    "x-http-method",
    "x-method-override",
];

/// Prefixes of the same kind of claims; of Envoy's control headers, which an Envoy
/// in front of a provider honours from a client inside the cluster, as the gateway
/// is (`x-envoy-retry-on` and `x-envoy-max-retries` would have the provider run, and
/// bill, a request the gateway meters once; `x-envoy-original-dst-host` picks the
/// upstream host); and of the cluster's own headers.
const DENIED_PREFIXES: [&str; 4] = ["x-forwarded-", "x-envoy-", "xproxy-", "x-payi-"];

/// OpenAI headers that pick the account and project a request is billed to.
const ACCOUNT_HEADERS: [&str; 2] = ["openai-organization", "openai-project"];

/// What decides the headers of one request to its provider.
#[derive(Clone, Copy)]
pub struct Outgoing<'a> {
    pub kind: Kind,
    /// The provider's configured credential, if any (never logged: no `Debug`).
    pub credential: Option<&'a str>,
    /// The payi key the request presented.
    pub key: Option<&'a str>,
    /// The (lowercase) header the key was read from.
    pub key_header: Option<&'a str>,
}

/// One header the client sent, with the name it would leave under.
struct Candidate<'h> {
    name: HeaderName,
    value: &'h HeaderValue,
    forwarded: bool,
}

/// The headers sent to the provider (see the module doc).
pub fn upstream_headers(incoming: &HeaderMap, outgoing: &Outgoing) -> HeaderMap {
    let candidates: Vec<Candidate> = incoming
        .iter()
        .filter_map(|(name, value)| match name.as_str().strip_prefix(FORWARD_PREFIX) {
            Some(rest) => {
                HeaderName::from_bytes(rest.as_bytes()).ok().map(|name| Candidate { name, value, forwarded: true })
            }
            None => Some(Candidate { name: name.clone(), value, forwarded: false }),
        })
        .collect();
    let listed = connection_listed(candidates.iter().filter(|c| c.name == header::CONNECTION).map(|c| c.value));
    let mut out = HeaderMap::with_capacity(candidates.len() + 2);
    for candidate in &candidates {
        let name = candidate.name.as_str();
        if denied_by_name(name, outgoing)
            || listed.iter().any(|l| l == name)
            || outgoing.key.is_some_and(|key| carries_key(candidate, key))
        {
            continue;
        }
        let is_credential = CREDENTIAL_HEADERS.contains(&name);
        if is_credential && !clients_own_credential(candidate, &candidates, outgoing) {
            continue;
        }
        let mut value = candidate.value.clone();
        value.set_sensitive(is_credential);
        out.append(candidate.name.clone(), value);
    }
    if let Some(secret) = outgoing.credential {
        let (name, value) = outgoing.kind.credential_header(secret);
        if let Ok(mut value) = HeaderValue::from_str(&value) {
            value.set_sensitive(true);
            out.insert(name, value);
        }
    }
    out.insert(header::ACCEPT_ENCODING, HeaderValue::from_static("identity"));
    out
}

/// Denied whatever its value: see the module doc.
fn denied_by_name(name: &str, outgoing: &Outgoing) -> bool {
    GATEWAY_OWNED.contains(&name)
        || HOP_BY_HOP.contains(&name)
        || CLIENT_CLAIMS.contains(&name)
        || DENIED_PREFIXES.iter().any(|prefix| name.starts_with(prefix))
        || name == "cookie"
        || outgoing.key_header == Some(name)
        || (outgoing.credential.is_some() && ACCOUNT_HEADERS.contains(&name))
}

/// A credential header passes only as the client's own credential for a provider
/// without a configured one: in the kind's own header, sent directly, one value.
fn clients_own_credential(candidate: &Candidate, all: &[Candidate], outgoing: &Outgoing) -> bool {
    outgoing.credential.is_none()
        && !candidate.forwarded
        && outgoing.kind.credential_headers().contains(&candidate.name.as_str())
        && all.iter().filter(|c| c.name == candidate.name).count() == 1
}

/// Whether a header's name or value contains the key, ASCII case-insensitively.
fn carries_key(candidate: &Candidate, key: &str) -> bool {
    let key = key.trim().as_bytes();
    !key.is_empty() && (contains(candidate.name.as_str().as_bytes(), key) || contains(candidate.value.as_bytes(), key))
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.len() >= needle.len() && haystack.windows(needle.len()).any(|w| w.eq_ignore_ascii_case(needle))
}

/// The (lowercase) header names listed in `Connection` values.
fn connection_listed<'h>(values: impl Iterator<Item = &'h HeaderValue>) -> Vec<String> {
    values
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(|name| name.trim().to_ascii_lowercase())
        .filter(|name| !name.is_empty())
        .collect()
}

/// Removes hop-by-hop headers and the names `Connection` lists (a provider's
/// answer on its way back to the client).
pub fn remove_hop_by_hop(headers: &mut HeaderMap) {
    let listed = connection_listed(headers.get_all(header::CONNECTION).iter());
    for name in HOP_BY_HOP.iter().copied().chain(listed.iter().map(String::as_str)) {
        headers.remove(name);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: &str = "payi_Ab3dEf9hIjKlMnOpQrStUvWxYz0123456789AbCdEfGhIj";
    const OURS: &str = "sk-platform";

    fn map(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (k, v) in pairs {
            map.append(HeaderName::from_bytes(k.as_bytes()).unwrap(), HeaderValue::from_bytes(v.as_bytes()).unwrap());
        }
        map
    }

    fn sorted(map: &HeaderMap) -> Vec<(String, String)> {
        let mut v: Vec<_> = map
            .iter()
            .map(|(k, v)| (k.as_str().to_string(), String::from_utf8_lossy(v.as_bytes()).into_owned()))
            .collect();
        v.sort();
        v
    }

    /// One hostile header set: what the client sent, to which kind, with the
    /// platform's credential configured or not, the header the key was read from,
    /// and exactly what must leave (besides `accept-encoding: identity`).
    struct Row {
        what: &'static str,
        incoming: &'static [(&'static str, &'static str)],
        kind: Kind,
        configured: bool,
        key_header: &'static str,
        out: &'static [(&'static str, &'static str)],
    }

    const BEARER_OURS: (&str, &str) = ("authorization", "Bearer sk-platform");
    const XAPI_OURS: (&str, &str) = ("x-api-key", "sk-platform");
    const APIKEY_OURS: (&str, &str) = ("api-key", "sk-platform");
    const JSON: (&str, &str) = ("content-type", "application/json");

    // The key as the rows write it (a `const` cannot be formatted in): KEY.
    const K: &str = KEY;
    const BEARER_K: &str = "Bearer payi_Ab3dEf9hIjKlMnOpQrStUvWxYz0123456789AbCdEfGhIj";
    const LOWER_K: &str = "payi_ab3def9hijklmnopqrstuvwxyz0123456789abcdefghij";

    fn rows() -> Vec<Row> {
        use Kind::{Anthropic, Azure, Openai};
        vec![
            Row {
                what: "a forwarded Host never picks the virtual host",
                incoming: &[("xproxy-api-key", K), ("xproxy-forward-host", "other.vhost"), JSON],
                kind: Openai,
                configured: true,
                key_header: "xproxy-api-key",
                out: &[BEARER_OURS, JSON],
            },
            Row {
                what: "a direct Host and Content-Length are the gateway's",
                incoming: &[("authorization", BEARER_K), ("host", "other.vhost"), ("content-length", "999"), JSON],
                kind: Openai,
                configured: true,
                key_header: "authorization",
                out: &[BEARER_OURS, JSON],
            },
            Row {
                what: "a forwarded Authorization does not ride next to the platform key (Anthropic)",
                incoming: &[("x-api-key", K), ("xproxy-forward-authorization", "Bearer sk-tenant"), JSON],
                kind: Anthropic,
                configured: true,
                key_header: "x-api-key",
                out: &[XAPI_OURS, JSON],
            },
            Row {
                what: "a forwarded Authorization does not ride next to the platform key (Azure)",
                incoming: &[("api-key", K), ("xproxy-forward-authorization", "Bearer aad-token"), JSON],
                kind: Azure,
                configured: true,
                key_header: "api-key",
                out: &[APIKEY_OURS, JSON],
            },
            Row {
                what: "no other OpenAI account or project with the platform's credential",
                incoming: &[
                    ("authorization", BEARER_K),
                    ("openai-organization", "org-other"),
                    ("xproxy-forward-openai-project", "proj-other"),
                    ("OpenAI-Project", "proj-2"),
                ],
                kind: Openai,
                configured: true,
                key_header: "authorization",
                out: &[BEARER_OURS],
            },
            Row {
                what: "the tenant's own OpenAI account and project pass when it brings its own credential",
                incoming: &[
                    ("xproxy-api-key", K),
                    ("authorization", "Bearer sk-tenant"),
                    ("openai-organization", "org-own"),
                    ("openai-project", "proj-own"),
                ],
                kind: Openai,
                configured: false,
                key_header: "xproxy-api-key",
                out: &[
                    ("authorization", "Bearer sk-tenant"),
                    ("openai-organization", "org-own"),
                    ("openai-project", "proj-own"),
                ],
            },
            Row {
                what: "the key in xProxy-Api-Key and again in Authorization: neither leaves",
                incoming: &[("xproxy-api-key", K), ("authorization", BEARER_K), JSON],
                kind: Openai,
                configured: false,
                key_header: "xproxy-api-key",
                out: &[JSON],
            },
            Row {
                what: "the key in x-api-key to an OpenAI provider with a credential",
                incoming: &[("authorization", BEARER_K), ("x-api-key", K), JSON],
                kind: Openai,
                configured: true,
                key_header: "authorization",
                out: &[BEARER_OURS, JSON],
            },
            Row {
                what: "the key in any case and with whitespace, in any header",
                incoming: &[
                    ("xproxy-api-key", K),
                    ("authorization", "  bEaReR   payi_AB3DEF9HIJKLMNOPQRSTUVWXYZ0123456789ABCDEFGHIJ  "),
                    ("x-note", LOWER_K),
                    ("x-list", "a, payi_Ab3dEf9hIjKlMnOpQrStUvWxYz0123456789AbCdEfGhIj, b"),
                    ("x-fine", "nothing secret"),
                ],
                kind: Openai,
                configured: false,
                key_header: "xproxy-api-key",
                out: &[("x-fine", "nothing secret")],
            },
            Row {
                what: "the key forwarded under an innocent name",
                incoming: &[("authorization", BEARER_K), ("xproxy-forward-x-trace", K), ("xproxy-forward-x-ok", "t1")],
                kind: Anthropic,
                configured: true,
                key_header: "authorization",
                out: &[XAPI_OURS, ("x-ok", "t1")],
            },
            Row {
                what: "the key as a header name",
                incoming: &[
                    ("authorization", BEARER_K),
                    ("xproxy-forward-payi_ab3def9hijklmnopqrstuvwxyz0123456789abcdefghij", "1"),
                ],
                kind: Openai,
                configured: true,
                key_header: "authorization",
                out: &[BEARER_OURS],
            },
            Row {
                what: "the key in api-key to Azure without a credential: no credential leaves",
                incoming: &[("api-key", K), JSON],
                kind: Azure,
                configured: false,
                key_header: "api-key",
                out: &[JSON],
            },
            Row {
                what: "the key in a cookie",
                incoming: &[
                    ("authorization", BEARER_K),
                    ("cookie", "session=payi_Ab3dEf9hIjKlMnOpQrStUvWxYz0123456789AbCdEfGhIj"),
                ],
                kind: Openai,
                configured: true,
                key_header: "authorization",
                out: &[BEARER_OURS],
            },
            Row {
                what: "no cookie, even without the key in it",
                incoming: &[("authorization", BEARER_K), ("cookie", "__cf_bm=abc"), ("xproxy-forward-cookie", "sso=1")],
                kind: Openai,
                configured: false,
                key_header: "authorization",
                out: &[],
            },
            Row {
                what: "every kind's credential header is dropped when one is configured",
                incoming: &[
                    ("xproxy-api-key", K),
                    ("authorization", "Bearer sk-tenant"),
                    ("x-api-key", "sk-ant-tenant"),
                    ("api-key", "az-tenant"),
                    ("x-goog-api-key", "goog-tenant"),
                    ("proxy-authorization", "Basic dGVuYW50"),
                    ("ocp-apim-subscription-key", "apim-tenant"),
                ],
                kind: Openai,
                configured: true,
                key_header: "xproxy-api-key",
                out: &[BEARER_OURS],
            },
            Row {
                what: "without a credential, only the kind's own credential header passes",
                incoming: &[
                    ("xproxy-api-key", K),
                    ("x-api-key", "sk-ant-tenant"),
                    ("api-key", "az-tenant"),
                    ("x-goog-api-key", "goog-tenant"),
                    ("ocp-apim-subscription-key", "apim-tenant"),
                ],
                kind: Anthropic,
                configured: false,
                key_header: "xproxy-api-key",
                out: &[("x-api-key", "sk-ant-tenant")],
            },
            Row {
                what: "a duplicated own credential is ambiguous: neither value leaves",
                incoming: &[("xproxy-api-key", K), ("authorization", "Bearer sk-a"), ("authorization", "Bearer sk-b")],
                kind: Openai,
                configured: false,
                key_header: "xproxy-api-key",
                out: &[],
            },
            Row {
                what: "a forwarded own credential next to a direct one: only the direct one, alone, would pass",
                incoming: &[
                    ("xproxy-api-key", K),
                    ("authorization", "Bearer sk-direct"),
                    ("xproxy-forward-authorization", "Bearer sk-forwarded"),
                ],
                kind: Openai,
                configured: false,
                key_header: "xproxy-api-key",
                out: &[],
            },
            Row {
                what: "a forwarded own credential alone does not pass either",
                incoming: &[("xproxy-api-key", K), ("xproxy-forward-x-api-key", "sk-ant-forwarded")],
                kind: Anthropic,
                configured: false,
                key_header: "xproxy-api-key",
                out: &[],
            },
            Row {
                what: "a configured credential replaces duplicated client credentials",
                incoming: &[("authorization", BEARER_K), ("api-key", "a"), ("api-key", "b")],
                kind: Azure,
                configured: true,
                key_header: "authorization",
                out: &[APIKEY_OURS],
            },
            Row {
                what: "forwarded names that are themselves the cluster's, at any depth",
                incoming: &[
                    ("authorization", BEARER_K),
                    ("xproxy-forward-xproxy-api-key", "payi_other"),
                    ("xproxy-forward-xproxy-forward-host", "evil"),
                    ("xproxy-forward-x-payi-application", "someone-else"),
                    ("xproxy-forward-xproxy-usecase-name", "free"),
                    ("xproxy-forward-", "empty name"),
                ],
                kind: Openai,
                configured: true,
                key_header: "authorization",
                out: &[BEARER_OURS],
            },
            Row {
                what: "the cluster's own headers never leave",
                incoming: &[
                    ("authorization", BEARER_K),
                    ("xproxy-usecase-name", "summarize"),
                    ("xproxy-user-id", "alice"),
                    ("x-payi-application", "chat"),
                    ("x-payi-use-case", "summarize"),
                    ("xproxy-limit-ids", "l1"),
                ],
                kind: Anthropic,
                configured: true,
                key_header: "authorization",
                out: &[XAPI_OURS],
            },
            Row {
                what: "hop-by-hop headers, direct and forwarded",
                incoming: &[
                    ("authorization", BEARER_K),
                    ("te", "trailers"),
                    ("xproxy-forward-te", "trailers"),
                    ("upgrade", "websocket"),
                    ("xproxy-forward-upgrade", "h2c"),
                    ("transfer-encoding", "chunked"),
                    ("xproxy-forward-transfer-encoding", "chunked"),
                    ("keep-alive", "timeout=5"),
                    ("proxy-connection", "keep-alive"),
                    ("trailer", "x-late"),
                    ("http2-settings", "AAMAAABkAAQAAP__"),
                    JSON,
                ],
                kind: Openai,
                configured: true,
                key_header: "authorization",
                out: &[BEARER_OURS, JSON],
            },
            Row {
                what: "names a Connection header lists, including forwarded ones",
                incoming: &[
                    ("authorization", BEARER_K),
                    ("connection", "keep-alive, X-Hop"),
                    ("x-hop", "1"),
                    ("xproxy-forward-x-hop", "2"),
                    ("xproxy-forward-connection", "x-other"),
                    ("x-other", "3"),
                    ("x-stays", "4"),
                ],
                kind: Openai,
                configured: true,
                key_header: "authorization",
                out: &[BEARER_OURS, ("x-stays", "4")],
            },
            Row {
                what: "Expect and Accept-Encoding are the gateway's",
                incoming: &[
                    ("authorization", BEARER_K),
                    ("expect", "100-continue"),
                    ("accept-encoding", "gzip, br"),
                    ("xproxy-forward-accept-encoding", "br"),
                ],
                kind: Openai,
                configured: true,
                key_header: "authorization",
                out: &[BEARER_OURS],
            },
            Row {
                what: "claims about the client's address and the host",
                incoming: &[
                    ("authorization", BEARER_K),
                    ("forwarded", "for=10.0.0.1;host=admin.internal"),
                    ("x-forwarded-for", "10.0.0.1"),
                    ("x-forwarded-host", "admin.internal"),
                    ("x-forwarded-proto", "https"),
                    ("xproxy-forward-x-forwarded-for", "127.0.0.1"),
                    ("x-real-ip", "127.0.0.1"),
                    ("true-client-ip", "127.0.0.1"),
                    ("via", "1.1 tenant"),
                    ("x-original-host", "admin.internal"),
                ],
                kind: Azure,
                configured: true,
                key_header: "authorization",
                out: &[APIKEY_OURS],
            },
            Row {
                what: "an Envoy in front of the provider takes no orders from a tenant",
                incoming: &[
                    ("authorization", BEARER_K),
                    ("x-envoy-retry-on", "5xx,reset"),
                    ("x-envoy-max-retries", "10"),
                    ("xproxy-forward-x-envoy-original-dst-host", "10.0.0.9:443"),
                    ("x-envoy-upstream-rq-timeout-ms", "0"),
                    ("x-original-forwarded-for", "10.0.0.1"),
                    ("x-request-id", "req-1"),
                ],
                kind: Openai,
                configured: true,
                key_header: "authorization",
                out: &[BEARER_OURS, ("x-request-id", "req-1")],
            },
            Row {
                what: "method and URL overrides cannot change what the gateway classified",
                incoming: &[
                    ("authorization", BEARER_K),
                    ("x-http-method-override", "DELETE"),
                    ("xproxy-forward-x-http-method", "PUT"),
                    ("x-method-override", "GET"),
                    ("x-original-url", "/v1/batches"),
                    ("x-rewrite-url", "/v1/files"),
                    ("x-original-uri", "/v1/fine_tuning/jobs"),
                ],
                kind: Openai,
                configured: true,
                key_header: "authorization",
                out: &[BEARER_OURS],
            },
            Row {
                what: "ordinary headers pass, forwarded ones under their own name",
                incoming: &[
                    ("x-api-key", K),
                    ("anthropic-version", "2023-06-01"),
                    ("anthropic-beta", "prompt-caching-2024-07-31"),
                    ("user-agent", "Anthropic/Python 0.40.0"),
                    ("x-stainless-lang", "python"),
                    ("xproxy-forward-x-request-tag", "nightly"),
                    JSON,
                ],
                kind: Anthropic,
                configured: true,
                key_header: "x-api-key",
                out: &[
                    XAPI_OURS,
                    ("anthropic-beta", "prompt-caching-2024-07-31"),
                    ("anthropic-version", "2023-06-01"),
                    JSON,
                    ("user-agent", "Anthropic/Python 0.40.0"),
                    ("x-request-tag", "nightly"),
                    ("x-stainless-lang", "python"),
                ],
            },
            Row {
                what: "a duplicated ordinary header keeps both values",
                incoming: &[("authorization", BEARER_K), ("x-trace", "a"), ("xproxy-forward-x-trace", "b")],
                kind: Openai,
                configured: true,
                key_header: "authorization",
                out: &[BEARER_OURS, ("x-trace", "a"), ("x-trace", "b")],
            },
            Row {
                what: "a custom key header is dropped by name even when its value is not the bare key",
                incoming: &[("x-tenant-key", "Token payi_xyz"), ("authorization", "Bearer sk-tenant")],
                kind: Openai,
                configured: false,
                key_header: "x-tenant-key",
                out: &[("authorization", "Bearer sk-tenant")],
            },
            Row {
                what: "an own credential that carries the key is not the tenant's credential",
                incoming: &[("x-api-key", "Bearer payi_Ab3dEf9hIjKlMnOpQrStUvWxYz0123456789AbCdEfGhIj ")],
                kind: Anthropic,
                configured: false,
                key_header: "x-api-key",
                out: &[],
            },
            Row {
                what: "a Connection header cannot remove what the gateway adds",
                incoming: &[("authorization", BEARER_K), ("connection", "authorization, accept-encoding, x-api-key")],
                kind: Anthropic,
                configured: true,
                key_header: "authorization",
                out: &[XAPI_OURS],
            },
            Row {
                what: "an Azure Entra ID token passes without a configured credential, the key's header does not",
                incoming: &[("api-key", K), ("authorization", "Bearer eyJ0eXAi.aad.token")],
                kind: Azure,
                configured: false,
                key_header: "api-key",
                out: &[("authorization", "Bearer eyJ0eXAi.aad.token")],
            },
        ]
    }

    #[test]
    fn hostile_header_sets_leave_exactly_what_the_filter_allows() {
        let rows = rows();
        assert!(rows.len() >= 30, "{} rows", rows.len());
        for row in rows {
            let outgoing = Outgoing {
                kind: row.kind,
                credential: row.configured.then_some(OURS),
                key: Some(KEY),
                key_header: Some(row.key_header),
            };
            let out = upstream_headers(&map(row.incoming), &outgoing);
            let mut expected: Vec<(String, String)> =
                row.out.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
            expected.push(("accept-encoding".into(), "identity".into()));
            expected.sort();
            assert_eq!(sorted(&out), expected, "{}", row.what);
            for (name, value) in out.iter() {
                let text = String::from_utf8_lossy(value.as_bytes()).to_ascii_lowercase();
                assert!(!text.contains(&KEY.to_ascii_lowercase()), "{}: the key left in {name}", row.what);
                assert_eq!(value.is_sensitive(), CREDENTIAL_HEADERS.contains(&name.as_str()), "{}: {name}", row.what);
            }
        }
    }

    #[test]
    fn the_key_filter_ignores_an_empty_key() {
        let outgoing = Outgoing { kind: Kind::Openai, credential: Some(OURS), key: Some("  "), key_header: None };
        let out = upstream_headers(&map(&[("x-a", "1")]), &outgoing);
        assert_eq!(out.get("x-a").unwrap(), "1");
    }

    #[test]
    fn an_answer_loses_its_hop_by_hop_headers() {
        let mut answer = map(&[
            ("connection", "close, x-hop"),
            ("x-hop", "1"),
            ("transfer-encoding", "chunked"),
            ("keep-alive", "timeout=5"),
            ("content-type", "text/event-stream"),
            ("x-request-id", "req_1"),
        ]);
        remove_hop_by_hop(&mut answer);
        assert_eq!(
            sorted(&answer),
            [("content-type".to_string(), "text/event-stream".to_string()), ("x-request-id".into(), "req_1".into())]
        );
    }
}
