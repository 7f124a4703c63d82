//! The operator binary as a child process, for tests that kill, restart or run several.

use std::process::{Child, Command, Stdio};

use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// An operator process, killed when dropped so a failing test leaves nothing running.
pub struct Process {
    pub name: String,
    pub child: Child,
    http: String,
    log: std::path::PathBuf,
}

impl Process {
    /// Starts `payi-operator run` with JSON logs, an HTTP port of its own, the
    /// operator kubeconfig, `extra` arguments and `env` variables.
    pub fn spawn(name: &str, extra: &[&str], env: &[(&str, &str)]) -> Self {
        Self::spawn_binary(std::path::Path::new(env!("CARGO_BIN_EXE_payi-operator")), name, extra, env)
    }

    /// [`Process::spawn`] of another build of the operator, such as the one unpacked from its image.
    pub fn spawn_binary(binary: &std::path::Path, name: &str, extra: &[&str], env: &[(&str, &str)]) -> Self {
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let http = format!("127.0.0.1:{port}");
        let logs = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("target/test-logs");
        std::fs::create_dir_all(&logs).unwrap();
        let log = logs.join(format!("leader-{name}.log"));
        let out = std::fs::File::create(&log).unwrap();
        let child = Command::new(binary)
            .args(["run", "--log-format", "json", "--http-addr", &http])
            .args(extra)
            .envs(env.iter().copied())
            .env("KUBECONFIG", super::operator_kubeconfig())
            .env("POD_NAME", name)
            .env("RUST_LOG", std::env::var("PAYI_TEST_OPERATOR_LOG").unwrap_or_else(|_| "info".into()))
            .stdout(out.try_clone().unwrap())
            .stderr(out)
            .stdin(Stdio::null())
            .spawn()
            .expect("starting the operator binary");
        Self { name: name.into(), child, http, log }
    }

    pub async fn get(&self, path: &str) -> Option<(u16, String)> {
        let mut stream = tokio::net::TcpStream::connect(&self.http).await.ok()?;
        let request = format!("GET {path} HTTP/1.1\r\nHost: {}\r\nConnection: close\r\n\r\n", self.http);
        stream.write_all(request.as_bytes()).await.ok()?;
        let mut response = String::new();
        stream.read_to_string(&mut response).await.ok()?;
        let status = response.split_whitespace().nth(1)?.parse().ok()?;
        let body = response.split_once("\r\n\r\n").map(|(_, b)| b.to_string()).unwrap_or_default();
        Some((status, body))
    }

    pub fn signal(&self, signal: &str) {
        let status = Command::new("kill").args([signal, &self.child.id().to_string()]).status().unwrap();
        assert!(status.success(), "kill {signal} {}", self.name);
    }

    pub fn logs(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Process {
    /// Waits for the process to end on its own.
    pub async fn exit_status(&mut self) -> std::process::ExitStatus {
        let deadline = std::time::Instant::now() + super::TIMEOUT;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            assert!(std::time::Instant::now() < deadline, "{} did not exit", self.name);
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        }
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
