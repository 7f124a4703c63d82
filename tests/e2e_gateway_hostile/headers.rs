//! Item 1 of issue #26: one deny filter over every header that leaves for the
//! provider, forwarded ones included, and the payi key never leaves in any header.
//!
//! A real key minted by the real operator, the real `payi-operator gateway` binary,
//! and hostile requests written byte by byte on a TCP socket (so that `Host`,
//! `Connection`, `TE`, `Expect`, chunked bodies and repeated headers reach the
//! gateway exactly as a tenant would send them). The provider simulator records
//! every header it received; each request must leave exactly the headers the
//! filter allows, and the key must be in none of them.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::common::gateway::Gateway;
use crate::common::provider_sim::{ProviderSim, Recorded};
use crate::common::{self, Operator, TestEnv, app_with_reason, eventually, key_of};

const OPENAI: &str = "sk-hostile-openai-platform-0001";
const ANTHROPIC: &str = "sk-ant-hostile-platform-0002";
const AZURE: &str = "azure-hostile-platform-0003";

/// Providers at the simulator: one of each kind with the platform's credential,
/// and an OpenAI and an Anthropic one without (the tenant brings its own).
fn providers_file(dir: &Path, upstream: &str) -> PathBuf {
    let mut text = String::from("providers:\n");
    for (name, kind, credential) in [
        ("openai", "openai", Some(OPENAI)),
        ("openai-own", "openai", None),
        ("anthropic", "anthropic", Some(ANTHROPIC)),
        ("anthropic-own", "anthropic", None),
        ("azure.openai", "azure", Some(AZURE)),
    ] {
        text.push_str(&format!("  - name: {name}\n    kind: {kind}\n    baseURL: http://{upstream}\n"));
        if let Some(secret) = credential {
            let file = dir.join(format!("credential-{name}"));
            std::fs::write(&file, format!("{secret}\n")).unwrap();
            text.push_str(&format!("    credentialFile: {}\n", file.display()));
        }
    }
    let path = dir.join("providers.yaml");
    std::fs::write(&path, text).unwrap();
    path
}

/// An answer read off the socket: its status and body.
struct Raw {
    status: u16,
    body: String,
}

/// Sends `head` lines (`Name: value`, exactly as given, no header added) and a body
/// (`chunked`: in two chunks) over a fresh connection; reads one answer, skipping
/// interim 1xx answers (`Expect: 100-continue`).
async fn raw_request(addr: &str, request_line: &str, head: &[(&str, String)], body: &str, chunked: bool) -> Raw {
    let mut text = format!("{request_line}\r\n");
    for (name, value) in head {
        text.push_str(&format!("{name}: {value}\r\n"));
    }
    if chunked {
        let (a, b) = body.split_at(body.len() / 2);
        text.push_str(&format!("\r\n{:x}\r\n{a}\r\n{:x}\r\n{b}\r\n0\r\n\r\n", a.len(), b.len()));
    } else {
        text.push_str(&format!("content-length: {}\r\n\r\n{body}", body.len()));
    }
    let exchange = async {
        let mut socket = TcpStream::connect(addr).await.unwrap();
        socket.write_all(text.as_bytes()).await.unwrap();
        let mut read = Vec::new();
        let mut buf = [0u8; 8192];
        loop {
            if let Some(answer) = parse_answer(&read) {
                return answer;
            }
            let n = socket.read(&mut buf).await.unwrap();
            assert!(n > 0, "the gateway closed the connection mid-answer: {}", String::from_utf8_lossy(&read));
            read.extend_from_slice(&buf[..n]);
        }
    };
    tokio::time::timeout(Duration::from_secs(20), exchange).await.expect("the gateway answered within 20 s")
}

/// One whole final answer at the start of `read` (content-length or chunked), if complete.
fn parse_answer(mut read: &[u8]) -> Option<Raw> {
    loop {
        let end = read.windows(4).position(|w| w == b"\r\n\r\n")? + 4;
        let head = String::from_utf8_lossy(&read[..end]).to_ascii_lowercase();
        let status: u16 = head.split(' ').nth(1)?.parse().ok()?;
        let rest = &read[end..];
        if (100..200).contains(&status) {
            read = rest;
            continue;
        }
        let header =
            |name: &str| head.lines().find_map(|l| l.strip_prefix(&format!("{name}:")).map(|v| v.trim().to_string()));
        let body = match (header("content-length"), header("transfer-encoding")) {
            (Some(length), _) => rest.get(..length.parse::<usize>().ok()?)?.to_vec(),
            (None, Some(te)) if te.contains("chunked") => {
                let mut body = vec![];
                let mut at = rest;
                loop {
                    let line_end = at.windows(2).position(|w| w == b"\r\n")?;
                    let size = usize::from_str_radix(std::str::from_utf8(&at[..line_end]).ok()?.trim(), 16).ok()?;
                    let chunk = at.get(line_end + 2..line_end + 2 + size + 2)?;
                    if size == 0 {
                        break body;
                    }
                    body.extend_from_slice(&chunk[..size]);
                    at = &at[line_end + 2 + size + 2..];
                }
            }
            _ => return None,
        };
        return Some(Raw { status, body: String::from_utf8_lossy(&body).into_owned() });
    }
}

/// One hostile request: to which provider path, with which headers (besides those
/// `send` adds: the request's `Host` when the row names none, `content-type`), and
/// exactly which headers must reach the provider besides `host`, `content-length`,
/// `content-type` and `accept-encoding: identity`.
struct Row {
    what: &'static str,
    path: &'static str,
    headers: Vec<(&'static str, String)>,
    chunked: bool,
    leaves: Vec<(&'static str, String)>,
}

fn bearer(secret: &str) -> String {
    format!("Bearer {secret}")
}

fn rows(key: &str) -> Vec<Row> {
    let k = || key.to_string();
    let chat = "/openai/v1/chat/completions";
    let own = "/openai-own/v1/chat/completions";
    let messages = "/anthropic/v1/messages";
    let azure = "/azure.openai/openai/deployments/gpt-4o-mini/chat/completions?api-version=2024-10-21";
    let s = |v: &str| v.to_string();
    vec![
        Row {
            what: "Host, forwarded Host, account headers, the key in x-api-key and a cookie, smuggled names",
            path: chat,
            headers: vec![
                ("Host", s("other.vhost")),
                ("xProxy-Api-Key", k()),
                ("xProxy-Forward-Host", s("other.vhost")),
                ("OpenAI-Organization", s("org-other")),
                ("xProxy-Forward-OpenAI-Project", s("proj-other")),
                ("X-Api-Key", k()),
                ("Cookie", format!("session={key}")),
                ("xProxy-Forward-xProxy-Api-Key", k()),
                ("xProxy-Forward-x-payi-application", s("someone-else")),
                ("X-Forwarded-Host", s("admin.internal")),
                ("Forwarded", s("for=10.0.0.1;host=admin.internal")),
                ("X-HTTP-Method-Override", s("DELETE")),
                ("X-Fine", s("yes")),
                ("xProxy-Forward-X-Tag", s("nightly")),
            ],
            chunked: false,
            leaves: vec![("authorization", bearer(OPENAI)), ("x-fine", s("yes")), ("x-tag", s("nightly"))],
        },
        Row {
            what: "the key in xProxy-Api-Key and in Authorization, no credential configured: no credential leaves",
            path: own,
            headers: vec![
                ("xProxy-Api-Key", k()),
                ("Authorization", bearer(key)),
                ("x-api-key", s("sk-ant-not-this-kind")),
            ],
            chunked: false,
            leaves: vec![],
        },
        Row {
            what: "the tenant's own credential and account, no credential configured",
            path: own,
            headers: vec![
                ("xProxy-Api-Key", k()),
                ("Authorization", s("Bearer sk-tenant-own")),
                ("OpenAI-Organization", s("org-own")),
            ],
            chunked: false,
            leaves: vec![("authorization", s("Bearer sk-tenant-own")), ("openai-organization", s("org-own"))],
        },
        Row {
            what: "a duplicated own credential leaves neither value",
            path: own,
            headers: vec![
                ("xProxy-Api-Key", k()),
                ("Authorization", s("Bearer sk-a")),
                ("Authorization", s("Bearer sk-b")),
            ],
            chunked: false,
            leaves: vec![],
        },
        Row {
            what: "the key in any case, in Authorization and elsewhere",
            path: chat,
            headers: vec![
                ("Authorization", format!("bEaReR   {key}  ")),
                ("X-Note", key.to_ascii_lowercase()),
                ("X-List", format!("a, {}, b", key.to_ascii_uppercase())),
            ],
            chunked: false,
            leaves: vec![("authorization", bearer(OPENAI))],
        },
        Row {
            what: "a forwarded Authorization next to the platform's Anthropic key",
            path: messages,
            headers: vec![
                ("x-api-key", k()),
                ("xProxy-Forward-Authorization", s("Bearer sk-tenant")),
                ("anthropic-version", s("2023-06-01")),
            ],
            chunked: false,
            leaves: vec![("x-api-key", s(ANTHROPIC)), ("anthropic-version", s("2023-06-01"))],
        },
        Row {
            what: "the tenant's own Anthropic key passes without a configured one, a forwarded one does not",
            path: "/anthropic-own/v1/messages",
            headers: vec![
                ("Authorization", bearer(key)),
                ("x-api-key", s("sk-ant-tenant-own")),
                ("xProxy-Forward-api-key", s("az-tenant")),
                ("anthropic-version", s("2023-06-01")),
            ],
            chunked: false,
            leaves: vec![("x-api-key", s("sk-ant-tenant-own")), ("anthropic-version", s("2023-06-01"))],
        },
        Row {
            what: "the tenant's api-key, forwarded and direct Authorization, next to the platform's Azure key",
            path: azure,
            headers: vec![
                ("xProxy-Api-Key", k()),
                ("api-key", s("az-tenant")),
                ("xProxy-Forward-Authorization", s("Bearer aad-forwarded")),
                ("Authorization", s("Bearer aad-direct")),
                ("x-goog-api-key", s("goog")),
            ],
            chunked: false,
            leaves: vec![("api-key", s(AZURE))],
        },
        Row {
            what: "hop-by-hop headers, direct, forwarded and listed in Connection, with a chunked body",
            path: chat,
            headers: vec![
                ("Authorization", bearer(key)),
                ("Transfer-Encoding", s("chunked")),
                ("xProxy-Forward-Transfer-Encoding", s("chunked")),
                ("TE", s("trailers")),
                ("xProxy-Forward-TE", s("trailers")),
                ("Upgrade", s("h2c")),
                ("xProxy-Forward-Upgrade", s("websocket")),
                ("Connection", s("keep-alive, X-Hop")),
                ("X-Hop", s("1")),
                ("xProxy-Forward-Connection", s("x-other")),
                ("X-Other", s("2")),
                ("Keep-Alive", s("timeout=5")),
                ("Proxy-Authorization", s("Basic dGVuYW50")),
                ("Trailer", s("x-late")),
                ("X-Stays", s("3")),
            ],
            chunked: true,
            leaves: vec![("authorization", bearer(OPENAI)), ("x-stays", s("3"))],
        },
        Row {
            what: "Expect, Accept-Encoding, claims about the client, Envoy controls",
            path: chat,
            headers: vec![
                ("Authorization", bearer(key)),
                ("Expect", s("100-continue")),
                ("Accept-Encoding", s("gzip, br")),
                ("X-Forwarded-For", s("127.0.0.1")),
                ("X-Real-IP", s("127.0.0.1")),
                ("Via", s("1.1 tenant")),
                ("X-Original-URL", s("/v1/batches")),
                ("X-Envoy-Retry-On", s("5xx,reset")),
                ("xProxy-Forward-X-Envoy-Max-Retries", s("10")),
            ],
            chunked: false,
            leaves: vec![("authorization", bearer(OPENAI))],
        },
    ]
}

fn body_for(path: &str) -> String {
    match path {
        p if p.contains("/v1/messages") => json!({"model": "claude-sonnet-4-5", "max_tokens": 5,
            "messages": [{"role": "user", "content": "hostile headers"}]}),
        _ => json!({"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hostile headers"}]}),
    }
    .to_string()
}

/// Sends one row's request; the request's own `Host` unless the row has one.
async fn send(gw: &Gateway, path: &str, headers: &[(&str, String)], chunked: bool) -> Raw {
    let mut head: Vec<(&str, String)> = vec![];
    if !headers.iter().any(|(n, _)| n.eq_ignore_ascii_case("host")) {
        head.push(("Host", gw.addr.clone()));
    }
    head.push(("Content-Type", "application/json".to_string()));
    head.extend(headers.iter().cloned());
    raw_request(&gw.addr, &format!("POST {path} HTTP/1.1"), &head, &body_for(path), chunked).await
}

fn sorted(mut pairs: Vec<(String, String)>) -> Vec<(String, String)> {
    pairs.sort();
    pairs
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn no_denied_header_and_never_the_key_reach_the_provider() {
    Operator::shared();
    let env = TestEnv::new("hostile-headers").await;
    let (_org, group) = env.org_and_group().await;
    env.create_app("tenant", &group).await;
    app_with_reason(&env, "tenant", "KeyIssued").await;
    let key = key_of(&env.secrets().get("tenant-payi-key").await.unwrap());
    let sim = ProviderSim::start().await;
    let dir = common::verifier::log_dir().join(format!("hostile-headers-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let gw = Gateway::start("hostile-headers", &providers_file(&dir, &sim.addr.to_string()), &[]).await;
    eventually("the gateway to know the key", || async {
        let plain = [("Authorization", bearer(&key))];
        (send(&gw, "/openai/v1/chat/completions", &plain, false).await.status == 200).then_some(())
    })
    .await;

    let rows = rows(&key);
    for row in &rows {
        sim.clear();
        let answer = send(&gw, row.path, &row.headers, row.chunked).await;
        assert_eq!(answer.status, 200, "{}: {}", row.what, answer.body);
        let seen: Vec<Recorded> = sim.requests();
        assert_eq!(seen.len(), 1, "{}: one request reached the provider", row.what);
        let seen = &seen[0];
        let body = body_for(row.path);
        // What the gateway sets on the next hop.
        assert_eq!(seen.header("host"), Some(sim.addr.to_string().as_str()), "{}: host", row.what);
        assert_eq!(seen.header("content-length"), Some(body.len().to_string().as_str()), "{}", row.what);
        assert_eq!(seen.raw_body, body.as_bytes(), "{}: the body as the client sent it", row.what);
        let mut expected: Vec<(String, String)> = row.leaves.iter().map(|(n, v)| (n.to_string(), v.clone())).collect();
        expected.push(("content-type".into(), "application/json".into()));
        expected.push(("accept-encoding".into(), "identity".into()));
        let others: Vec<(String, String)> =
            seen.headers.iter().filter(|(n, _)| n != "host" && n != "content-length").cloned().collect();
        assert_eq!(sorted(others), sorted(expected), "{}: exactly these headers reached the provider", row.what);
        for (name, value) in &seen.headers {
            let lower = key.to_ascii_lowercase();
            assert!(
                !value.to_ascii_lowercase().contains(&lower),
                "{}: the key reached the provider in {name}",
                row.what
            );
            assert!(!name.contains(&lower), "{}: the key reached the provider as a header name", row.what);
        }
    }
    println!("{} hostile header sets sent through the gateway; none leaked", rows.len());
    assert!(!gw.logs().contains(&key), "the key is never logged");
}
