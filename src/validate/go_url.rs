//! URL parsing as Go's `net/url.ParseRequestURI` does it, because the
//! Kubernetes CEL functions `isURL` and `url` are built on it. A WHATWG parser
//! (the `url` crate) gives different verdicts: it reads `https:host` as
//! `https://host/`, where Go sees an opaque URL with no host.

/// The parts of a parsed URL the Kubernetes CEL URL library exposes.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct GoUrl {
    pub scheme: String,
    /// `host[:port]`, IPv6 literals in brackets.
    pub host: String,
    pub path: String,
    pub raw_path: String,
    pub raw_query: String,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("parse {raw:?}: {reason}")]
pub struct UrlError {
    raw: String,
    reason: String,
}

/// Go's `url.ParseRequestURI`: an absolute URL or an absolute path.
pub fn parse_request_uri(raw: &str) -> Result<GoUrl, UrlError> {
    parse(raw).map_err(|reason| UrlError { raw: raw.to_string(), reason })
}

fn parse(raw: &str) -> Result<GoUrl, String> {
    if raw.bytes().any(|b| b < b' ' || b == 0x7f) {
        return Err("net/url: invalid control character in URL".into());
    }
    if raw.is_empty() {
        return Err("empty url".into());
    }
    let mut url = GoUrl::default();
    if raw == "*" {
        url.path = "*".into();
        return Ok(url);
    }
    let (scheme, rest) = scheme_of(raw)?;
    url.scheme = scheme.to_ascii_lowercase();
    let mut rest = rest;
    if rest.ends_with('?') && rest.matches('?').count() == 1 {
        rest = &rest[..rest.len() - 1];
    } else if let Some((before, query)) = rest.split_once('?') {
        url.raw_query = query.to_string();
        rest = before;
    }
    if !rest.starts_with('/') {
        if !url.scheme.is_empty() {
            // A rootless path is opaque: no host, no path.
            return Ok(url);
        }
        return Err("invalid URI for request".into());
    }
    if !url.scheme.is_empty() && rest.starts_with("//") {
        let authority_and_path = &rest[2..];
        let (authority, path) = match authority_and_path.find('/') {
            Some(i) => (&authority_and_path[..i], &authority_and_path[i..]),
            None => (authority_and_path, ""),
        };
        url.host = parse_authority(&url.scheme, authority)?;
        rest = path;
    }
    url.path = unescape(rest, Mode::Path)?;
    url.raw_path = rest.to_string();
    Ok(url)
}

fn scheme_of(raw: &str) -> Result<(&str, &str), String> {
    for (i, c) in raw.bytes().enumerate() {
        match c {
            b'a'..=b'z' | b'A'..=b'Z' => {}
            b'0'..=b'9' | b'+' | b'-' | b'.' if i > 0 => {}
            b':' if i == 0 => return Err("missing protocol scheme".into()),
            b':' => return Ok((&raw[..i], &raw[i + 1..])),
            _ => return Ok(("", raw)),
        }
    }
    Ok(("", raw))
}

fn parse_authority(scheme: &str, authority: &str) -> Result<String, String> {
    let (userinfo, host) = match authority.rfind('@') {
        Some(i) => (Some(&authority[..i]), &authority[i + 1..]),
        None => (None, authority),
    };
    let host = parse_host(scheme, host)?;
    if let Some(userinfo) = userinfo {
        if !userinfo.chars().all(valid_userinfo_char) {
            return Err("net/url: invalid userinfo".into());
        }
        for part in userinfo.splitn(2, ':') {
            unescape(part, Mode::UserPassword)?;
        }
    }
    Ok(host)
}

fn valid_userinfo_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || "-._:~!$&'()*+,;=%@".contains(c)
}

fn parse_host(scheme: &str, host: &str) -> Result<String, String> {
    match host.rfind('[') {
        Some(i) if i > 0 => return Err("invalid IP-literal".into()),
        Some(_) => {
            let close = host.rfind(']').ok_or("missing ']' in host")?;
            let colon_port = &host[close + 1..];
            if !valid_optional_port(colon_port) {
                return Err(format!("invalid port {colon_port:?} after host"));
            }
            let literal = &host[1..close];
            let (address, zone) = match literal.find("%25") {
                Some(z) => (&literal[..z], &literal[z..]),
                None => (literal, ""),
            };
            let address = unescape(address, Mode::Host)?;
            let ip: std::net::IpAddr = address.parse().map_err(|_| format!("invalid host: {address:?}"))?;
            if ip.is_ipv4() {
                return Err("invalid IP-literal".into());
            }
            return Ok(format!("[{address}{zone}]{colon_port}"));
        }
        None => {}
    }
    if let Some(first) = host.find(':') {
        let last = host.rfind(':').unwrap_or(first);
        // Go rejects a second colon for http and https only (urlstrictcolons).
        let at = if last != first && scheme != "http" && scheme != "https" { last } else { first };
        let colon_port = &host[at..];
        if !valid_optional_port(colon_port) {
            return Err(format!("invalid port {colon_port:?} after host"));
        }
    }
    unescape(host, Mode::Host)
}

fn valid_optional_port(port: &str) -> bool {
    port.is_empty() || (port.starts_with(':') && port[1..].bytes().all(|b| b.is_ascii_digit()))
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Mode {
    Host,
    Path,
    UserPassword,
}

/// Characters Go accepts unescaped in a host.
fn host_char_allowed(c: u8) -> bool {
    c.is_ascii_alphanumeric() || b"-_.~!$&'()*+,;=:[]<>\"".contains(&c)
}

fn unescape(s: &str, mode: Mode) -> Result<String, String> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' => {
                let hex = |b: u8| (b as char).to_digit(16);
                let (Some(hi), Some(lo)) =
                    (bytes.get(i + 1).copied().and_then(hex), bytes.get(i + 2).copied().and_then(hex))
                else {
                    let end = (i + 3).min(s.len());
                    return Err(format!("invalid URL escape {:?}", &s[i..end]));
                };
                if mode == Mode::Host && hi < 8 && &s[i..i + 3] != "%25" {
                    return Err(format!("invalid URL escape {:?}", &s[i..i + 3]));
                }
                out.push((hi * 16 + lo) as u8);
                i += 3;
            }
            c => {
                if mode == Mode::Host && c < 0x80 && !host_char_allowed(c) {
                    return Err(format!("invalid character {:?} in host name", c as char));
                }
                out.push(c);
                i += 1;
            }
        }
    }
    Ok(String::from_utf8_lossy(&out).into_owned())
}

impl GoUrl {
    /// Go's `URL.Hostname()`: the host without port, IPv6 without brackets.
    pub fn hostname(&self) -> &str {
        let host = self.split_port().0;
        host.strip_prefix('[').and_then(|h| h.strip_suffix(']')).unwrap_or(host)
    }

    /// Go's `URL.Port()`: the numeric port, or empty.
    pub fn port(&self) -> &str {
        self.split_port().1
    }

    fn split_port(&self) -> (&str, &str) {
        match self.host.rfind(':') {
            Some(i) if valid_optional_port(&self.host[i..]) => (&self.host[..i], &self.host[i + 1..]),
            _ => (&self.host, ""),
        }
    }

    /// The path as written (Go's `EscapedPath()` when the raw form is valid).
    pub fn escaped_path(&self) -> &str {
        &self.raw_path
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn absolute_urls_have_scheme_and_host() {
        let url = parse_request_uri("HTTPS://user:pw@api.pay-i.com:8443/v1?x=1").unwrap();
        assert_eq!(url.scheme, "https");
        assert_eq!(url.host, "api.pay-i.com:8443");
        assert_eq!(url.hostname(), "api.pay-i.com");
        assert_eq!(url.port(), "8443");
        assert_eq!(url.escaped_path(), "/v1");
        assert_eq!(url.raw_query, "x=1");
    }

    #[test]
    fn go_verdicts_differ_from_whatwg() {
        // Opaque: scheme, no host.
        let url = parse_request_uri("https:api.pay-i.com").unwrap();
        assert_eq!((url.scheme.as_str(), url.hostname()), ("https", ""));
        // An absolute path is a request URI.
        assert_eq!(parse_request_uri("/v1").unwrap().path, "/v1");
        assert!(parse_request_uri("api.pay-i.com").is_err());
        assert!(parse_request_uri("").is_err());
        assert!(parse_request_uri("https://exa mple.com").is_err());
        assert!(parse_request_uri("http://host:abc").is_err());
        assert!(parse_request_uri("://x").is_err());
    }

    #[test]
    fn ipv6_literals_keep_brackets_in_host_only() {
        let url = parse_request_uri("http://[::1]:80/").unwrap();
        assert_eq!(url.host, "[::1]:80");
        assert_eq!(url.hostname(), "::1");
        assert!(parse_request_uri("http://[127.0.0.1]/").is_err());
    }
}
