//! Programs `hack/tools/build.sh` builds from the Go module proxy (Helm, crane),
//! built or found in its cache once per test process.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

/// The path of `name` (`helm` or `crane`); fails the test when it cannot be built.
pub fn built(name: &'static str) -> &'static Path {
    static HELM: OnceLock<PathBuf> = OnceLock::new();
    static CRANE: OnceLock<PathBuf> = OnceLock::new();
    let cell = match name {
        "helm" => &HELM,
        "crane" => &CRANE,
        other => panic!("hack/tools/build.sh builds helm or crane, not {other}"),
    };
    cell.get_or_init(|| build(name))
}

fn build(name: &str) -> PathBuf {
    let out = Command::new("hack/tools/build.sh")
        .arg(name)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .unwrap_or_else(|e| panic!("running hack/tools/build.sh {name}: {e}"));
    assert!(
        out.status.success(),
        "hack/tools/build.sh {name} failed ({}); it builds {name} from the Go module proxy and needs Go:\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    let path = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim());
    assert!(path.is_file(), "hack/tools/build.sh {name} printed {}, which is no file", path.display());
    path
}
