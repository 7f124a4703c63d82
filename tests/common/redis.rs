//! A real Redis (Debian's `redis-server`, installed by `hack/tools/apt.sh` when
//! missing) on a loopback port, for the limits ledger: started, stopped and
//! restarted by the tests. It persists to an append-only file fsynced on every
//! write, so a restart keeps the counters, as a production ledger must.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use super::unique;
use super::verifier::{free_port, log_dir, repo};

pub struct Redis {
    child: Option<Child>,
    binary: String,
    pub addr: String,
    dir: PathBuf,
}

impl Redis {
    pub async fn start() -> Self {
        let out = Command::new("hack/tools/apt.sh")
            .arg("redis-server")
            .current_dir(repo())
            .output()
            .expect("hack/tools/apt.sh");
        assert!(out.status.success(), "installing redis-server failed:\n{}", String::from_utf8_lossy(&out.stderr));
        let binary = String::from_utf8_lossy(&out.stdout).trim().to_string();
        let dir = log_dir().join(unique("redis"));
        std::fs::create_dir_all(&dir).unwrap();
        let mut redis = Self { child: None, binary, addr: free_port(), dir };
        redis.spawn().await;
        redis
    }

    pub fn url(&self) -> String {
        format!("redis://{}", self.addr)
    }

    async fn spawn(&mut self) {
        let port = self.addr.rsplit(':').next().unwrap().to_string();
        let log = std::fs::OpenOptions::new().create(true).append(true).open(self.dir.join("redis.log")).unwrap();
        let child = Command::new(&self.binary)
            .args(["--port", &port, "--bind", "127.0.0.1", "--save", "", "--appendonly", "yes"])
            .args(["--appendfsync", "always", "--protected-mode", "no"])
            // DEBUG SLEEP makes the server slow (not down) for the ledger's fault tests.
            .args(["--enable-debug-command", "local", "--dir"])
            .arg(&self.dir)
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("starting redis-server");
        self.child = Some(child);
        let addr = self.addr.clone();
        super::eventually("redis to answer PING", || async {
            let mut stream = tokio::net::TcpStream::connect(&addr).await.ok()?;
            use tokio::io::{AsyncReadExt, AsyncWriteExt};
            stream.write_all(b"PING\r\n").await.ok()?;
            let mut buf = [0u8; 7];
            stream.read_exact(&mut buf).await.ok()?;
            (&buf == b"+PONG\r\n").then_some(())
        })
        .await;
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

    /// One command, answered as the raw reply text.
    pub async fn command(&self, args: &[&str]) -> String {
        command(&self.addr, args).await
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
