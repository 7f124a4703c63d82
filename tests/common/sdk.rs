//! The official provider SDKs (openai, anthropic, payi from PyPI) driving the
//! gateway as its clients would: `hack/tools/sdk-venv.sh` makes (once, cached)
//! the Python environment pinned in `hack/tools/sdk/requirements.txt`, and
//! `tests/sdk/drive.py` runs one scenario and prints what the SDK returned. The
//! scenarios, the URL layout they use and the JSON they print are documented at
//! the top of drive.py.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

use serde_json::Value;

fn repo() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// The python of the SDK environment, made or found once per test process;
/// fails the test when it cannot be made (there is no skip).
pub fn python() -> PathBuf {
    static PYTHON: OnceLock<PathBuf> = OnceLock::new();
    PYTHON.get_or_init(make_venv).clone()
}

fn make_venv() -> PathBuf {
    let out = Command::new(repo().join("hack/tools/sdk-venv.sh"))
        .current_dir(repo())
        .output()
        .unwrap_or_else(|e| panic!("running hack/tools/sdk-venv.sh: {e}"));
    assert!(
        out.status.success(),
        "hack/tools/sdk-venv.sh failed ({}); it makes a Python venv with the SDKs from PyPI and needs python3:\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    let path = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim());
    assert!(path.is_file(), "hack/tools/sdk-venv.sh printed {}, which is no file", path.display());
    path
}

/// Runs `tests/sdk/drive.py <scenario>` against the gateway at `gateway_url` (its
/// root, e.g. `http://127.0.0.1:PORT`) presenting `key`, with `extra_env` (e.g.
/// `USE_CASE`, `USER_ID`, `MODEL`, `BAD_KEY`) on top, and returns the JSON it
/// printed. An HTTP error answer is a result (`"ok": false` and `"error"`); the
/// test fails when the script does (no answer at all, a timeout, a bug).
pub fn drive(gateway_url: &str, key: &str, scenario: &str, extra_env: &[(&str, &str)]) -> Value {
    let mut command = Command::new(python());
    command
        .arg(repo().join("tests/sdk/drive.py"))
        .arg(scenario)
        .current_dir(repo())
        .env("GATEWAY_URL", gateway_url)
        .env("PAYI_API_KEY", key)
        // Only what this call asks for: none of the optional inputs leak in from
        // the environment the tests run in.
        .env_remove("USE_CASE")
        .env_remove("USER_ID")
        .env_remove("BAD_KEY")
        .env_remove("MODEL")
        .env_remove("SDK_TIMEOUT")
        .env("PYTHONUNBUFFERED", "1");
    for (name, value) in extra_env {
        command.env(name, value);
    }
    let out = command.output().unwrap_or_else(|e| panic!("running tests/sdk/drive.py {scenario}: {e}"));
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "tests/sdk/drive.py {scenario} against {gateway_url} failed ({}):\nstdout:\n{stdout}\nstderr:\n{stderr}",
        out.status
    );
    serde_json::from_str(stdout.trim()).unwrap_or_else(|e| {
        panic!("tests/sdk/drive.py {scenario} printed no JSON object ({e}):\nstdout:\n{stdout}\nstderr:\n{stderr}")
    })
}
