//! A real Redis (Debian's `redis-server`, installed by `hack/tools/apt.sh` when
//! missing) on a loopback port, for the limits ledger: started, stopped and
//! restarted by the tests. It persists to an append-only file fsynced on every
//! write, so a restart keeps the counters, as a production ledger must.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use super::unique;
use super::verifier::{free_port, log_dir, repo};

/// How a Redis is started: TLS only (no plain port), a password, a replica of another.
#[derive(Clone, Default)]
pub struct Options {
    pub tls: Option<Arc<Tls>>,
    pub password: Option<String>,
    /// The primary's address: this one replicates it.
    pub replica_of: Option<String>,
}

pub struct Redis {
    child: Option<Child>,
    binary: String,
    pub addr: String,
    dir: PathBuf,
    pub options: Options,
}

/// The path of a Debian-packaged command, installed when missing.
pub fn installed(command: &str) -> String {
    let out = Command::new("hack/tools/apt.sh").arg(command).current_dir(repo()).output().expect("hack/tools/apt.sh");
    assert!(out.status.success(), "installing {command} failed:\n{}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

impl Redis {
    pub async fn start() -> Self {
        Self::start_with(Options::default()).await
    }

    pub async fn start_with(options: Options) -> Self {
        let binary = installed("redis-server");
        let dir = log_dir().join(unique("redis"));
        std::fs::create_dir_all(&dir).unwrap();
        let mut redis = Self { child: None, binary, addr: free_port(), dir, options };
        redis.spawn().await;
        redis
    }

    /// The ledger URL of this Redis (`rediss://` when it serves TLS, with its password).
    pub fn url(&self) -> String {
        let scheme = if self.options.tls.is_some() { "rediss" } else { "redis" };
        match &self.options.password {
            Some(password) => format!("{scheme}://:{password}@{}", self.addr),
            None => format!("{scheme}://{}", self.addr),
        }
    }

    pub fn port(&self) -> &str {
        self.addr.rsplit(':').next().unwrap()
    }

    async fn spawn(&mut self) {
        let port = self.port().to_string();
        let log = std::fs::OpenOptions::new().create(true).append(true).open(self.dir.join("redis.log")).unwrap();
        let mut command = Command::new(&self.binary);
        command.args(["--bind", "127.0.0.1", "--save", "", "--appendonly", "yes"]);
        command.args(["--appendfsync", "always", "--protected-mode", "no"]);
        // DEBUG SLEEP makes the server slow (not down) for the ledger's fault tests.
        command.args(["--enable-debug-command", "local", "--dir"]).arg(&self.dir);
        match &self.options.tls {
            None => command.args(["--port", &port]),
            Some(tls) => {
                command.args(["--port", "0", "--tls-port", &port, "--tls-replication", "yes"]).args(tls.server_args())
            }
        };
        if let Some(password) = &self.options.password {
            command.args(["--requirepass", password, "--masterauth", password]);
        }
        if let Some(primary) = &self.options.replica_of {
            let (host, port) = primary.rsplit_once(':').unwrap();
            command.args(["--replicaof", host, port]);
        }
        let child = command
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("starting redis-server");
        self.child = Some(child);
        self.await_answer().await;
    }

    /// Until the server answers PING (polled every 10 ms: tests time recovery from it).
    async fn await_answer(&self) {
        let deadline = tokio::time::Instant::now() + super::TIMEOUT;
        loop {
            if self.ping().await {
                return;
            }
            assert!(tokio::time::Instant::now() < deadline, "redis at {} did not answer PING", self.addr);
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    async fn ping(&self) -> bool {
        if self.options.tls.is_some() || self.options.password.is_some() {
            return self.cli(&["PING"]).await.is_some_and(|a| a.trim() == "PONG");
        }
        let Ok(mut stream) = tokio::net::TcpStream::connect(&self.addr).await else { return false };
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let mut buf = [0u8; 7];
        stream.write_all(b"PING\r\n").await.is_ok() && stream.read_exact(&mut buf).await.is_ok() && &buf == b"+PONG\r\n"
    }

    /// One command through `redis-cli` (TLS and password as this server needs),
    /// its answer as redis-cli prints it; None when it could not connect.
    pub async fn cli(&self, args: &[&str]) -> Option<String> {
        cli(&self.addr, self.options.tls.as_deref(), self.options.password.as_deref(), args).await
    }

    /// Stops Redis (SIGTERM: it finishes its append-only file), waits `down`, starts it again.
    pub async fn restart(&mut self, down: Duration) {
        self.stop();
        tokio::time::sleep(down).await;
        self.spawn().await;
    }

    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = Command::new("kill").args(["-TERM", &child.id().to_string()]).status();
            let _ = child.wait();
        }
    }

    /// SIGKILL: no append-only file finished, no goodbye to replicas or clients.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// One command, answered as the raw reply text (plain, password-less servers).
    pub async fn command(&self, args: &[&str]) -> String {
        command(&self.addr, args).await
    }
}

/// One command through `redis-cli` to `addr`; None when it could not connect.
pub async fn cli(addr: &str, tls: Option<&Tls>, password: Option<&str>, args: &[&str]) -> Option<String> {
    let (host, port) = addr.rsplit_once(':').unwrap();
    let mut command = tokio::process::Command::new(installed_cli());
    command.args(["-h", host, "-p", port]);
    if let Some(tls) = tls {
        command.arg("--tls").arg("--cacert").arg(&tls.ca);
    }
    if let Some(password) = password {
        command.args(["--no-auth-warning", "-a", password]);
    }
    let out = tokio::time::timeout(Duration::from_secs(5), command.args(args).stdin(Stdio::null()).output())
        .await
        .ok()?
        .ok()?;
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    (out.status.success() && !text.starts_with("Could not connect")).then_some(text)
}

/// `redis-cli`, which Debian ships in redis-tools, a dependency of redis-server.
fn installed_cli() -> &'static Path {
    static CLI: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    CLI.get_or_init(|| Path::new(&installed("redis-server")).with_file_name("redis-cli"))
}

/// A throwaway CA and a server certificate it signed for 127.0.0.1 and
/// localhost, made with the openssl command line.
pub struct Tls {
    pub ca: PathBuf,
    pub cert: PathBuf,
    pub key: PathBuf,
}

impl Tls {
    pub fn generate(name: &str) -> Arc<Self> {
        let openssl = installed("openssl");
        let dir = log_dir().join(unique(name));
        std::fs::create_dir_all(&dir).unwrap();
        let run = |args: &[&str]| {
            let out = Command::new(&openssl).args(args).current_dir(&dir).output().expect("running openssl");
            assert!(out.status.success(), "openssl {args:?}: {}", String::from_utf8_lossy(&out.stderr));
        };
        let ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"];
        run(&[
            &["req", "-x509"],
            &ec[..],
            &["-keyout", "ca.key", "-out", "ca.crt", "-days", "2", "-subj", "/CN=payi test CA"],
        ]
        .concat());
        std::fs::write(
            dir.join("server.ext"),
            "subjectAltName=IP:127.0.0.1,DNS:localhost\nbasicConstraints=CA:FALSE\n\
             keyUsage=digitalSignature\nextendedKeyUsage=serverAuth,clientAuth\n",
        )
        .unwrap();
        run(&[&["req"], &ec[..], &["-keyout", "server.key", "-out", "server.csr", "-subj", "/CN=localhost"]].concat());
        run(&[
            "x509",
            "-req",
            "-in",
            "server.csr",
            "-CA",
            "ca.crt",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-out",
            "server.crt",
            "-days",
            "2",
            "-extfile",
            "server.ext",
        ]);
        Arc::new(Self { ca: dir.join("ca.crt"), cert: dir.join("server.crt"), key: dir.join("server.key") })
    }

    /// redis-server's (and redis-sentinel's) TLS settings; clients need no certificate.
    fn server_args(&self) -> Vec<String> {
        let path = |p: &Path| p.display().to_string();
        vec![
            "--tls-cert-file".into(),
            path(&self.cert),
            "--tls-key-file".into(),
            path(&self.key),
            "--tls-ca-cert-file".into(),
            path(&self.ca),
            "--tls-auth-clients".into(),
            "no".into(),
        ]
    }
}

/// Redis Sentinel (Debian's `redis-sentinel`): `count` sentinels on loopback ports
/// watching `primary` under the name [`Sentinels::MASTER`], speaking TLS when the
/// primary does, quick to decide (down after 1 s).
pub struct Sentinels {
    children: Vec<Child>,
    pub addrs: Vec<String>,
    options: Options,
}

impl Sentinels {
    pub const MASTER: &'static str = "ledger";
    pub const DOWN_AFTER_MS: u64 = 1000;

    /// Returns when every sentinel knows the primary, `replicas` replicas and the other sentinels.
    pub async fn start(primary: &Redis, count: usize, quorum: usize, replicas: usize) -> Self {
        let binary = installed("redis-sentinel");
        let options = primary.options.clone();
        let (host, port) = primary.addr.rsplit_once(':').unwrap();
        let mut sentinels = Self { children: vec![], addrs: vec![], options };
        for _ in 0..count {
            let addr = free_port();
            let dir = log_dir().join(unique("sentinel"));
            std::fs::create_dir_all(&dir).unwrap();
            let sport = addr.rsplit(':').next().unwrap();
            let mut conf = String::from("bind 127.0.0.1\nprotected-mode no\n");
            match &sentinels.options.tls {
                None => conf.push_str(&format!("port {sport}\n")),
                Some(tls) => {
                    conf.push_str(&format!("port 0\ntls-port {sport}\ntls-replication yes\n"));
                    for pair in tls.server_args().chunks(2) {
                        conf.push_str(&format!("{} {}\n", pair[0].trim_start_matches("--"), pair[1]));
                    }
                }
            }
            conf.push_str(&format!(
                "dir {}\nsentinel monitor {m} {host} {port} {quorum}\nsentinel down-after-milliseconds {m} {}\n\
                 sentinel failover-timeout {m} 10000\nsentinel parallel-syncs {m} 1\n",
                dir.display(),
                Self::DOWN_AFTER_MS,
                m = Self::MASTER,
            ));
            if let Some(password) = &sentinels.options.password {
                conf.push_str(&format!("sentinel auth-pass {} {password}\n", Self::MASTER));
            }
            let file = dir.join("sentinel.conf");
            std::fs::write(&file, conf).unwrap();
            let log = std::fs::File::create(dir.join("sentinel.log")).unwrap();
            let child = Command::new(&binary)
                .arg(&file)
                .stdin(Stdio::null())
                .stdout(log.try_clone().unwrap())
                .stderr(log)
                .spawn()
                .expect("starting redis-sentinel");
            sentinels.children.push(child);
            sentinels.addrs.push(addr);
        }
        let others = (count - 1).to_string();
        let replicas = replicas.to_string();
        super::eventually_within(
            Duration::from_secs(60),
            "every sentinel to know the replicas and the others",
            || async {
                for addr in &sentinels.addrs {
                    let known = sentinels.ask(addr, &["SENTINEL", "sentinels", Self::MASTER]).await?;
                    let seen = sentinels.ask(addr, &["SENTINEL", "replicas", Self::MASTER]).await?;
                    let count = |text: &str| text.lines().filter(|l| *l == "name").count().to_string();
                    (count(&known) == others && count(&seen) == replicas).then_some(())?;
                }
                Some(())
            },
        )
        .await;
        sentinels
    }

    /// A command to the sentinel at `addr` (sentinels have no password here).
    async fn ask(&self, addr: &str, args: &[&str]) -> Option<String> {
        cli(addr, self.options.tls.as_deref(), None, args).await
    }

    /// The primary's address as the first sentinel that answers names it.
    pub async fn primary(&self) -> Option<String> {
        for addr in &self.addrs {
            if let Some(answer) = self.ask(addr, &["SENTINEL", "get-master-addr-by-name", Self::MASTER]).await {
                let lines: Vec<&str> = answer.lines().collect();
                if let [host, port] = lines[..] {
                    return Some(format!("{host}:{port}"));
                }
            }
        }
        None
    }

    /// The ledger URL through these sentinels (`rediss+sentinel://` with TLS).
    pub fn url(&self) -> String {
        let scheme = if self.options.tls.is_some() { "rediss+sentinel" } else { "redis+sentinel" };
        let auth = self.options.password.as_ref().map(|p| format!(":{p}@")).unwrap_or_default();
        format!("{scheme}://{auth}{}/{}", self.addrs.join(","), Self::MASTER)
    }
}

impl Drop for Sentinels {
    fn drop(&mut self) {
        for child in &mut self.children {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// One Redis for the whole test process, for tests that share the in-process
/// operator (whose ledger URL is fixed when it starts). It lives as long as the
/// process: a shell holds it and stops it when the test process's end closes
/// the shell's stdin, however the process ends.
pub fn shared_url() -> &'static str {
    static URL: std::sync::OnceLock<(String, std::sync::Mutex<std::process::ChildStdin>)> = std::sync::OnceLock::new();
    &URL.get_or_init(|| {
        let out = Command::new("hack/tools/apt.sh")
            .arg("redis-server")
            .current_dir(repo())
            .output()
            .expect("hack/tools/apt.sh");
        assert!(out.status.success(), "installing redis-server failed:\n{}", String::from_utf8_lossy(&out.stderr));
        let binary = String::from_utf8_lossy(&out.stdout).trim().to_string();
        let addr = free_port();
        let port = addr.rsplit(':').next().unwrap().to_string();
        let dir = log_dir().join(unique("redis-shared"));
        std::fs::create_dir_all(&dir).unwrap();
        let script = format!(
            "'{binary}' --port {port} --bind 127.0.0.1 --save '' --appendonly no --dir '{}' >'{}/redis.log' 2>&1 & p=$!; \
             read -r _; kill $p; wait $p",
            dir.display(),
            dir.display()
        );
        // The shell outlives every test; it is reaped by init when this process ends.
        #[allow(clippy::zombie_processes)]
        let mut child =
            Command::new("bash").args(["-c", &script]).stdin(Stdio::piped()).spawn().expect("starting redis-server");
        let stdin = child.stdin.take().unwrap();
        let deadline = std::time::Instant::now() + Duration::from_secs(20);
        while std::net::TcpStream::connect(&addr).is_err() {
            assert!(std::time::Instant::now() < deadline, "the shared redis-server did not listen on {addr}");
            std::thread::sleep(Duration::from_millis(50));
        }
        (format!("redis://{addr}"), std::sync::Mutex::new(stdin))
    })
    .0
}

/// One command to the Redis at `addr` (host:port or a redis:// URL), answered as the raw reply text.
pub async fn command(addr: &str, args: &[&str]) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let addr = addr.trim_start_matches("redis://");
    let mut stream = tokio::net::TcpStream::connect(addr).await.expect("connecting to redis");
    let mut text = format!("*{}\r\n", args.len());
    for arg in args {
        text.push_str(&format!("${}\r\n{arg}\r\n", arg.len()));
    }
    stream.write_all(text.as_bytes()).await.unwrap();
    let mut buf = vec![0u8; 65536];
    let n = tokio::time::timeout(Duration::from_secs(5), stream.read(&mut buf)).await.unwrap().unwrap();
    String::from_utf8_lossy(&buf[..n]).into_owned()
}
