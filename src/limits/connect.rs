//! How the ledger reaches its Redis, and keeps reaching it.
//!
//! - **Where** ([`Target`], parsed by [`Endpoint::parse`], pure): `redis://` or
//!   `rediss://` (TLS) for one Redis; `redis+sentinel://` or `rediss+sentinel://` for
//!   the primary that Redis Sentinel names (docs/limits.md, "High availability").
//!   TLS checks the server's certificate against a CA file when one is given (the
//!   chart mounts it from a Secret), else against the system's roots.
//! - **Staying connected** ([`Connection`]): one multiplexed connection shared by
//!   every call, and a probe task beside it. While connected the probe sends `PING`
//!   every [`PROBE_EVERY`]; while not, it dials every [`PROBE_EVERY`], so the
//!   ledger is connected again within that of Redis answering, without waiting for
//!   a request to fail first. The probe is the only dialer: a call that finds no
//!   connection wakes it and waits for the outcome of the next dial (within the
//!   call's own deadline), and a call that finds the connection dead (cut, refused,
//!   or `READONLY`: a primary Sentinel has demoted) drops it and wakes the probe.
//!   Through Sentinel, every dial asks the sentinels for the current primary, so a
//!   failover is followed at the first dial after it.

use std::path::PathBuf;
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use redis::aio::{ConnectionLike, MultiplexedConnection};
use redis::sentinel::{SentinelClient, SentinelClientBuilder, SentinelServerType};
use redis::{AsyncConnectionConfig, Client, Cmd, ConnectionAddr, RedisError, RedisFuture, TlsCertificates, Value};
use tokio::sync::{Notify, watch};

/// How often the connection is probed: a `PING` while connected, a dial while not.
/// It bounds how long fail-closed refuses after Redis answers again (the documented
/// bound is 1 s: this leaves room for the dial on a loaded node); five `PING`s a
/// second per process are nothing to Redis.
pub const PROBE_EVERY: Duration = Duration::from_millis(200);
/// A `PING` not answered within this means the connection (or, through Sentinel,
/// the primary) is gone: a new one is dialed and takes its place. Replacing a
/// connection that was only slow is harmless: calls in flight keep the old one.
pub const PING_BOUND: Duration = Duration::from_secs(1);
/// One dial: through Sentinel, asking the sentinels, checking the primary's role,
/// connecting to it (TLS and `AUTH` included).
pub const DIAL_BOUND: Duration = Duration::from_secs(2);
/// Sentinel's own port, when a sentinel's address has none.
pub const SENTINEL_PORT: u16 = 26379;

/// Where the ledger is: its URL (which may hold a password: never logged) and the
/// CA that signs its servers' certificates (PEM), when TLS is not checked against
/// the system's roots.
#[derive(Clone)]
pub struct Target {
    pub url: String,
    pub ca_file: Option<PathBuf>,
}

impl Target {
    pub fn url(url: &str) -> Self {
        Self { url: url.to_string(), ca_file: None }
    }
}

impl std::fmt::Debug for Target {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Target").field("ca_file", &self.ca_file).finish_non_exhaustive()
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    /// The URL itself is never in the message: it may hold a password.
    #[error("the ledger URL is not valid: {0}")]
    Url(String),
    #[error("the ledger URL is not valid: {0}")]
    Client(#[source] RedisError),
    #[error("reading the ledger's CA file {path}: {source}")]
    CaFile { path: PathBuf, source: std::io::Error },
    #[error("a CA file is given for the ledger but its URL is not TLS (rediss:// or rediss+sentinel://)")]
    CaWithoutTls,
    #[error("the ledger's connection needs a Tokio runtime")]
    NoRuntime,
}

/// A ledger URL, understood (pure).
#[derive(Clone, PartialEq, Eq)]
pub enum Endpoint {
    /// One Redis: the URL as given (`redis://` or `rediss://`).
    Direct { url: String, tls: bool },
    /// The primary a set of sentinels names.
    Sentinel(SentinelUrl),
}

/// `redis+sentinel://[user:password@]host[:port][,host[:port]...]/<master>[/<db>]`
/// `[?sentinelUsername=…&sentinelPassword=…]`; `rediss+sentinel://` for TLS to the
/// sentinels and the Redis servers alike. The credentials before `@` are Redis'
/// (`requirepass`/ACL); the sentinels get theirs from the query, or none.
#[derive(Clone, PartialEq, Eq)]
pub struct SentinelUrl {
    pub sentinels: Vec<(String, u16)>,
    pub master: String,
    pub db: i64,
    pub username: Option<String>,
    pub password: Option<String>,
    pub sentinel_username: Option<String>,
    pub sentinel_password: Option<String>,
    pub tls: bool,
}

impl std::fmt::Debug for Endpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{self}")
    }
}

/// Where, without credentials: for logs.
impl std::fmt::Display for Endpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Endpoint::Direct { tls, .. } => write!(f, "{}", if *tls { "rediss" } else { "redis" }),
            Endpoint::Sentinel(s) => {
                let hosts: Vec<String> = s.sentinels.iter().map(|(h, p)| format!("{h}:{p}")).collect();
                write!(f, "primary {:?} of sentinels {} (tls: {})", s.master, hosts.join(","), s.tls)
            }
        }
    }
}

impl Endpoint {
    pub fn parse(url: &str) -> Result<Self, ConnectError> {
        let (scheme, rest) = url.split_once("://").ok_or_else(|| ConnectError::Url("no scheme".into()))?;
        match scheme {
            "redis" | "rediss" => Ok(Endpoint::Direct { url: url.to_string(), tls: scheme == "rediss" }),
            "redis+sentinel" | "rediss+sentinel" => {
                Ok(Endpoint::Sentinel(SentinelUrl::parse(rest, scheme == "rediss+sentinel")?))
            }
            other => Err(ConnectError::Url(format!(
                "scheme {other:?} is none of redis, rediss, redis+sentinel, rediss+sentinel"
            ))),
        }
    }

    fn tls(&self) -> bool {
        match self {
            Endpoint::Direct { tls, .. } => *tls,
            Endpoint::Sentinel(s) => s.tls,
        }
    }
}

impl SentinelUrl {
    /// `rest` is what follows `://`.
    fn parse(rest: &str, tls: bool) -> Result<Self, ConnectError> {
        let (rest, query) = rest.split_once('?').unwrap_or((rest, ""));
        let (authority, path) = rest.split_once('/').unwrap_or((rest, ""));
        let (userinfo, hosts) = match authority.rsplit_once('@') {
            Some((userinfo, hosts)) => (Some(userinfo), hosts),
            None => (None, authority),
        };
        let (username, password) = match userinfo {
            None => (None, None),
            Some(info) => {
                let (user, password) = info.split_once(':').unwrap_or((info, ""));
                (non_empty(percent_decode(user)?), non_empty(percent_decode(password)?))
            }
        };
        let sentinels = hosts.split(',').map(host_and_port).collect::<Result<Vec<_>, _>>()?;
        let mut segments = path.split('/').filter(|s| !s.is_empty());
        let master = segments
            .next()
            .map(percent_decode)
            .transpose()?
            .ok_or_else(|| ConnectError::Url("a sentinel URL names its primary: …/<master name>".into()))?;
        let db = match segments.next() {
            None => 0,
            Some(db) => db.parse().map_err(|_| ConnectError::Url(format!("database {db:?} is not a number")))?,
        };
        if segments.next().is_some() {
            return Err(ConnectError::Url("a sentinel URL's path is /<master name>[/<db>]".into()));
        }
        let (mut sentinel_username, mut sentinel_password) = (None, None);
        for pair in query.split('&').filter(|p| !p.is_empty()) {
            let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
            match name {
                "sentinelUsername" => sentinel_username = non_empty(percent_decode(value)?),
                "sentinelPassword" => sentinel_password = non_empty(percent_decode(value)?),
                other => return Err(ConnectError::Url(format!("unknown query parameter {other:?}"))),
            }
        }
        Ok(Self { sentinels, master, db, username, password, sentinel_username, sentinel_password, tls })
    }
}

fn non_empty(text: String) -> Option<String> {
    (!text.is_empty()).then_some(text)
}

/// `host`, `host:port`, `[v6]` or `[v6]:port`.
fn host_and_port(text: &str) -> Result<(String, u16), ConnectError> {
    let bad = || ConnectError::Url(format!("sentinel address {text:?} is not host[:port]"));
    let (host, port) = if let Some(v6) = text.strip_prefix('[') {
        let (host, after) = v6.split_once(']').ok_or_else(bad)?;
        (host, after.strip_prefix(':'))
    } else {
        match text.split_once(':') {
            Some((host, port)) => (host, Some(port)),
            None => (text, None),
        }
    };
    if host.is_empty() {
        return Err(bad());
    }
    let port = port.map_or(Ok(SENTINEL_PORT), |p| p.parse().map_err(|_| bad()))?;
    Ok((host.to_string(), port))
}

fn percent_decode(text: &str) -> Result<String, ConnectError> {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = bytes.get(i + 1..i + 3).and_then(|h| std::str::from_utf8(h).ok());
            let byte = hex.and_then(|h| u8::from_str_radix(h, 16).ok());
            out.push(byte.ok_or_else(|| ConnectError::Url("a bad %-escape".into()))?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).map_err(|_| ConnectError::Url("a %-escape that is not UTF-8".into()))
}

/// What dials: one Redis, or the sentinels then the primary they name.
enum Connector {
    Direct(Box<Client>),
    Sentinel(Box<SentinelClient>),
}

impl Connector {
    fn new(endpoint: &Endpoint, ca: Option<Vec<u8>>) -> Result<Self, RedisError> {
        let certificates = ca.map(|pem| TlsCertificates { client_tls: None, root_cert: Some(pem) });
        match endpoint {
            Endpoint::Direct { url, .. } => Ok(Connector::Direct(Box::new(match certificates {
                Some(certificates) => Client::build_with_tls(url.as_str(), certificates)?,
                None => Client::open(url.as_str())?,
            }))),
            Endpoint::Sentinel(s) => {
                let sentinels = s.sentinels.iter().map(|(host, port)| {
                    if s.tls {
                        ConnectionAddr::TcpTls { host: host.clone(), port: *port, insecure: false, tls_params: None }
                    } else {
                        ConnectionAddr::Tcp(host.clone(), *port)
                    }
                });
                let mut builder = SentinelClientBuilder::new(sentinels, &s.master, SentinelServerType::Master)?
                    .set_client_to_redis_db(s.db);
                if let Some(user) = &s.username {
                    builder = builder.set_client_to_redis_username(user);
                }
                if let Some(password) = &s.password {
                    builder = builder.set_client_to_redis_password(password);
                }
                if let Some(user) = &s.sentinel_username {
                    builder = builder.set_client_to_sentinel_username(user);
                }
                if let Some(password) = &s.sentinel_password {
                    builder = builder.set_client_to_sentinel_password(password);
                }
                if s.tls {
                    builder = builder
                        .set_client_to_redis_tls_mode(redis::TlsMode::Secure)
                        .set_client_to_sentinel_tls_mode(redis::TlsMode::Secure);
                    if let Some(certificates) = certificates {
                        builder = builder
                            .set_client_to_redis_certificates(certificates.clone())
                            .set_client_to_sentinel_certificates(certificates);
                    }
                }
                Ok(Connector::Sentinel(Box::new(builder.build()?)))
            }
        }
    }

    /// A new connection, and the address it reached (for logs).
    async fn dial(&mut self, config: &AsyncConnectionConfig) -> redis::RedisResult<(MultiplexedConnection, String)> {
        let client = match self {
            Connector::Direct(client) => client.as_ref().clone(),
            Connector::Sentinel(sentinel) => sentinel.async_get_client().await?,
        };
        let addr = client.get_connection_info().addr().to_string();
        Ok((client.get_multiplexed_async_connection_with_config(config).await?, addr))
    }
}

/// The ledger's connection: cheap to clone, shared by every call (see the module doc).
#[derive(Clone)]
pub struct Connection {
    shared: Arc<Shared>,
}

/// What calls share with the probe task, which alone dials.
struct Shared {
    state: watch::Sender<State>,
    /// A call found no connection: dial now rather than at the next tick.
    wake: Arc<Notify>,
    endpoint: Endpoint,
    db: i64,
}

#[derive(Default)]
struct State {
    live: Option<Live>,
    /// Dials begun and ended, so a call can wait for a dial that began after it asked.
    begun: u64,
    ended: u64,
    /// Why the last dial failed.
    error: Option<String>,
}

#[derive(Clone)]
struct Live {
    generation: u64,
    connection: MultiplexedConnection,
}

impl Connection {
    /// Connects lazily: a Redis that is down at start is not an error, the probe
    /// keeps dialing. Errors are configuration errors (the URL, the CA file).
    /// `response` bounds each command.
    pub fn open(target: &Target, response: Duration) -> Result<Self, ConnectError> {
        let endpoint = Endpoint::parse(&target.url)?;
        let ca = match &target.ca_file {
            None => None,
            Some(_) if !endpoint.tls() => return Err(ConnectError::CaWithoutTls),
            Some(path) => {
                Some(std::fs::read(path).map_err(|source| ConnectError::CaFile { path: path.clone(), source })?)
            }
        };
        let connector = Connector::new(&endpoint, ca).map_err(ConnectError::Client)?;
        let runtime = tokio::runtime::Handle::try_current().map_err(|_| ConnectError::NoRuntime)?;
        let db = match &endpoint {
            Endpoint::Sentinel(s) => s.db,
            Endpoint::Direct { .. } => 0,
        };
        let wake = Arc::new(Notify::new());
        let shared = Arc::new(Shared { state: watch::Sender::new(State::default()), wake: wake.clone(), endpoint, db });
        let config =
            AsyncConnectionConfig::new().set_connection_timeout(Some(DIAL_BOUND)).set_response_timeout(Some(response));
        runtime.spawn(probe(Arc::downgrade(&shared), wake, connector, config));
        Ok(Self { shared })
    }
}

impl Shared {
    /// The live connection; when there is none, the outcome of a dial begun after
    /// this call asked for one. So the first call after Redis is back connects
    /// (not refused because an older dial failed), calls during an outage fail as
    /// fast as a dial does, and many calls share one dial. A dial that outlasts
    /// the call's own deadline still completes, for the calls after it.
    async fn live(&self) -> redis::RedisResult<Live> {
        let mut state = self.state.subscribe();
        let wanted = {
            let now = state.borrow_and_update();
            if let Some(live) = &now.live {
                return Ok(live.clone());
            }
            now.begun + 1
        };
        self.wake.notify_one();
        loop {
            state.changed().await.map_err(|_| not_connected("the ledger's connection was closed"))?;
            let now = state.borrow_and_update();
            if let Some(live) = &now.live {
                return Ok(live.clone());
            }
            if now.ended >= wanted {
                return Err(not_connected(now.error.as_deref().unwrap_or("the dial failed")));
            }
        }
    }

    /// Drops generation `generation` when `error` says it is dead, and wakes the probe.
    fn observe(&self, generation: u64, error: &RedisError) {
        if !is_dead(error) {
            return;
        }
        let dropped = self.state.send_if_modified(|state| {
            let ours = state.live.as_ref().is_some_and(|l| l.generation == generation);
            if ours {
                state.live = None;
            }
            ours
        });
        if dropped {
            tracing::warn!(ledger = %self.endpoint, %error, "ledger connection lost; connecting again");
            self.wake.notify_one();
        }
    }
}

/// Whether an answer means the connection cannot serve the ledger any more: cut,
/// refused, or talking to a server that is no longer the primary.
fn is_dead(error: &RedisError) -> bool {
    error.is_io_error()
        || error.is_connection_dropped()
        || error.is_connection_refusal()
        || matches!(error.code(), Some("READONLY" | "MASTERDOWN"))
}

fn not_connected(why: &str) -> RedisError {
    RedisError::from(std::io::Error::new(std::io::ErrorKind::NotConnected, format!("ledger not connected: {why}")))
}

/// The only dialer: probes every [`PROBE_EVERY`] (or when a call wakes it) until
/// the connection is dropped; see the module doc.
async fn probe(shared: Weak<Shared>, wake: Arc<Notify>, mut connector: Connector, config: AsyncConnectionConfig) {
    let mut generation = 0;
    // Since when dials fail: logged once per outage, with its length when it ends.
    let mut outage: Option<Instant> = None;
    loop {
        let Some(strong) = shared.upgrade() else { return };
        let live = strong.state.borrow().live.clone();
        let healthy = match live {
            None => false,
            Some(live) => {
                let mut connection = live.connection;
                let ping = redis::cmd("PING");
                match tokio::time::timeout(PING_BOUND, connection.req_packed_command(&ping)).await {
                    Ok(Ok(_)) => true,
                    Ok(Err(error)) => {
                        tracing::warn!(ledger = %strong.endpoint, %error, "ledger connection failed its probe; connecting again");
                        false
                    }
                    Err(_) => {
                        tracing::warn!(ledger = %strong.endpoint, "ledger did not answer PING within {PING_BOUND:?}; connecting again");
                        false
                    }
                }
            }
        };
        if !healthy {
            strong.state.send_modify(|s| s.begun += 1);
            let dialed = match tokio::time::timeout(DIAL_BOUND, connector.dial(&config)).await {
                Ok(result) => result.map_err(|e| e.to_string()),
                Err(_) => Err(format!("no connection within {DIAL_BOUND:?}")),
            };
            match &dialed {
                Ok((_, addr)) => {
                    let unreachable_for = outage.take().map(|at| at.elapsed());
                    tracing::info!(ledger = %strong.endpoint, %addr, generation = generation + 1, ?unreachable_for, "ledger connected");
                }
                Err(error) if outage.is_none() => {
                    outage = Some(Instant::now());
                    tracing::warn!(ledger = %strong.endpoint, %error, "ledger unreachable; dialing every {PROBE_EVERY:?}");
                }
                Err(_) => {}
            }
            strong.state.send_modify(|s| {
                s.ended += 1;
                match dialed {
                    Ok((connection, _)) => {
                        generation += 1;
                        s.live = Some(Live { generation, connection });
                        s.error = None;
                    }
                    Err(error) => {
                        s.live = None;
                        s.error = Some(error);
                    }
                }
            });
        }
        // A wake while this round ran is kept (as a permit) and ends the sleep at once.
        drop(strong);
        let woken = wake.notified();
        tokio::select! {
            _ = tokio::time::sleep(PROBE_EVERY) => {}
            _ = woken => {}
        }
    }
}

impl ConnectionLike for Connection {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        Box::pin(async move {
            let mut live = self.shared.live().await?;
            let answer = live.connection.req_packed_command(cmd).await;
            if let Err(error) = &answer {
                self.shared.observe(live.generation, error);
            }
            answer
        })
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a redis::Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        Box::pin(async move {
            let mut live = self.shared.live().await?;
            let answer = live.connection.req_packed_commands(pipeline, offset, count).await;
            if let Err(error) = &answer {
                self.shared.observe(live.generation, error);
            }
            answer
        })
    }

    fn get_db(&self) -> i64 {
        self.shared.db
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sentinel(url: &str) -> SentinelUrl {
        match Endpoint::parse(url) {
            Ok(Endpoint::Sentinel(s)) => s,
            other => panic!("{url}: {other:?}"),
        }
    }

    #[test]
    fn plain_and_tls_urls_are_passed_on_as_they_are() {
        for (url, tls) in [("redis://h:6379/2", false), ("rediss://u:p@h:6380", true)] {
            assert_eq!(Endpoint::parse(url).unwrap(), Endpoint::Direct { url: url.into(), tls });
        }
    }

    #[test]
    fn sentinel_urls_name_the_sentinels_the_primary_the_database_and_both_credentials() {
        let s = sentinel(
            "rediss+sentinel://app:p%40ss@10.0.0.1:26380,sentinel-b,[fd00::1]:5/ledger/3?sentinelPassword=s%3Ds",
        );
        assert_eq!(
            s.sentinels,
            vec![("10.0.0.1".into(), 26380), ("sentinel-b".into(), SENTINEL_PORT), ("fd00::1".into(), 5)]
        );
        assert_eq!((s.master.as_str(), s.db, s.tls), ("ledger", 3, true));
        assert_eq!((s.username.as_deref(), s.password.as_deref()), (Some("app"), Some("p@ss")));
        assert_eq!((s.sentinel_username, s.sentinel_password.as_deref()), (None, Some("s=s")));

        let s = sentinel("redis+sentinel://:secret@a:1,b:2,c:3/mymaster");
        assert_eq!((s.username, s.password.as_deref(), s.db, s.tls), (None, Some("secret"), 0, false));
        assert_eq!(s.sentinels.len(), 3);
    }

    #[test]
    fn bad_urls_are_refused_without_repeating_their_password() {
        for url in [
            "http://h",
            "h:6379",
            "redis+sentinel://:pw@a:1",
            "redis+sentinel://:pw@a:1/",
            "redis+sentinel://:pw@a:x/m",
            "redis+sentinel://:pw@,/m",
            "redis+sentinel://:pw@a/m/zero",
            "redis+sentinel://:pw@a/m/0/more",
            "redis+sentinel://:pw@a/m?password=pw",
            "redis+sentinel://:p%zz@a/m",
        ] {
            let error = Endpoint::parse(url).expect_err(url).to_string();
            assert!(!error.contains("pw"), "{url}: {error}");
        }
    }

    #[test]
    fn logs_name_where_never_the_credentials() {
        let endpoint = Endpoint::parse("redis+sentinel://u:hunter2@a:1/m?sentinelPassword=hunter3").unwrap();
        let shown = format!("{endpoint} {endpoint:?}");
        assert!(!shown.contains("hunter") && shown.contains("a:1"), "{shown}");
        let target = Target { url: "rediss://:hunter2@h".into(), ca_file: None };
        assert!(!format!("{target:?}").contains("hunter"));
    }

    #[test]
    fn a_dead_connection_is_told_from_a_refusal_of_one_command() {
        let io = RedisError::from(std::io::Error::new(std::io::ErrorKind::ConnectionReset, "reset"));
        assert!(is_dead(&io));
        assert!(is_dead(&not_connected("down")));
        let readonly = RedisError::from((redis::ErrorKind::Server(redis::ServerErrorKind::ReadOnly), "readonly"));
        assert!(is_dead(&readonly), "{:?}", readonly.code());
        let script = RedisError::from((redis::ErrorKind::Server(redis::ServerErrorKind::ResponseError), "bad"));
        assert!(!is_dead(&script));
    }
}
