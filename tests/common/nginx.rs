//! A real nginx running `examples/gateway/nginx.conf` (the Debian package, installed
//! by `hack/tools/apt.sh` when missing), and a loopback upstream that records the
//! headers of what reaches it: the verifier's and use cases' end-to-end tests.

use std::collections::HashMap;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::verifier::{free_port, log_dir, repo, request};
use super::{eventually, unique};

/// nginx running `examples/gateway/nginx.conf`, stopped when dropped.
pub struct Nginx {
    child: Child,
    pub addr: String,
    prefix: PathBuf,
}

impl Nginx {
    pub async fn start(verifier: &str, upstream: &str) -> Self {
        let out =
            Command::new("hack/tools/apt.sh").arg("nginx").current_dir(repo()).output().expect("hack/tools/apt.sh");
        assert!(out.status.success(), "installing nginx failed:\n{}", String::from_utf8_lossy(&out.stderr));
        let nginx = String::from_utf8_lossy(&out.stdout).trim().to_string();

        let addr = free_port();
        let prefix = log_dir().join(format!("nginx-{}", unique("run")));
        std::fs::create_dir_all(&prefix).unwrap();
        let template = std::fs::read_to_string(repo().join("examples/gateway/nginx.conf")).unwrap();
        let config = template
            .replace("@PREFIX@", &prefix.to_string_lossy())
            .replace("@LISTEN@", &addr)
            .replace("@VERIFIER@", verifier)
            .replace("@UPSTREAM@", upstream);
        let conf = prefix.join("nginx.conf");
        std::fs::write(&conf, config).unwrap();
        let error_log = prefix.join("error.log");
        let child = Command::new(&nginx)
            .arg("-p")
            .arg(&prefix)
            .arg("-c")
            .arg(&conf)
            .arg("-e")
            .arg(&error_log)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("starting nginx");
        let nginx = Self { child, addr, prefix };
        let probe = nginx.addr.clone();
        eventually("nginx to listen", || async { request(&probe, "/", &[]).await.map(|_| ()) }).await;
        nginx
    }
}

impl Drop for Nginx {
    fn drop(&mut self) {
        // SIGQUIT: the master stops its workers and exits.
        let _ = Command::new("kill").args(["-QUIT", &self.child.id().to_string()]).status();
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
        eprintln!("nginx did not stop on SIGQUIT; killed it (logs in {})", self.prefix.display());
    }
}

/// A loopback upstream that answers 200 and records the headers of every request.
pub struct Upstream {
    pub addr: String,
    seen: Arc<Mutex<Vec<HashMap<String, String>>>>,
}

impl Upstream {
    pub async fn start() -> Self {
        let seen: Arc<Mutex<Vec<HashMap<String, String>>>> = Arc::default();
        let record = seen.clone();
        let app = axum::Router::new().fallback(move |headers: axum::http::HeaderMap| {
            let record = record.clone();
            async move {
                let map = headers
                    .iter()
                    .map(|(k, v)| (k.as_str().to_string(), v.to_str().unwrap_or_default().to_string()))
                    .collect();
                record.lock().unwrap().push(map);
                "upstream reached"
            }
        });
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        tokio::spawn(async move { axum::serve(listener, app).await });
        Self { addr, seen }
    }

    pub fn last(&self) -> HashMap<String, String> {
        self.seen.lock().unwrap().last().cloned().expect("a request reached the upstream")
    }

    pub fn count(&self) -> usize {
        self.seen.lock().unwrap().len()
    }
}
