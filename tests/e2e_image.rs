//! The release artifacts, built and checked without a container engine. The image
//! from `hack/image.sh` is reproducible, has the Dockerfile's layout, is pushed by
//! `hack/image.sh push` to a registry on loopback (crane's, started and stopped here),
//! pulled back, unpacked and run as the operator against the control plane. The chart
//! pushed there by `hack/chart.sh push` installs from `oci://` (server-side dry run)
//! with the image pinned by the pushed digest.
//!
//! crane and Helm are built from the Go module proxy by `hack/tools/build.sh`; the
//! image's static binary is a release build for x86_64-unknown-linux-musl, cached in
//! target/. When any of that fails the tests fail; they never skip.

mod common;

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;

use common::process::Process;
use common::{TestEnv, app_with_reason, eventually, key_of, operator_identity};
use serde_json::Value;

/// The platform the tests build and run: the control plane's and this machine's.
const PLATFORM: &str = "linux/amd64";

fn repo() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// Runs a command in the repository and returns its stdout, failing the test with
/// its stderr when it fails.
fn run(command: &mut Command) -> String {
    let out = command
        .current_dir(repo())
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("running {command:?}: {e}"));
    assert!(
        out.status.success(),
        "{command:?} failed ({}):\n{}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("UTF-8 output").trim().to_string()
}

fn crane(args: &[&str]) -> String {
    run(Command::new(common::tools::built("crane")).args(args))
}

fn helm(args: &[&str]) -> String {
    run(Command::new(common::tools::built("helm")).args(args))
}

/// `hack/image.sh build` for the test platform into target/e2e-image/<dir>; returns
/// the directory and the image index's digest.
fn build_image(dir: &str) -> (PathBuf, String) {
    let out = repo().join("target/e2e-image").join(dir);
    run(Command::new("hack/image.sh").arg("build").env("PLATFORMS", PLATFORM).env("IMAGE_OUT", &out));
    let digest = std::fs::read_to_string(out.join("digest")).expect("hack/image.sh writes the digest");
    (out, digest.trim().to_string())
}

/// The image the tests push and run, built once per test process.
fn image() -> &'static (PathBuf, String) {
    static IMAGE: OnceLock<(PathBuf, String)> = OnceLock::new();
    IMAGE.get_or_init(|| build_image("main"))
}

/// `crane registry serve` on a free loopback port, stopped when dropped.
struct Registry {
    child: Child,
    host: String,
}

impl Registry {
    fn start() -> Self {
        let mut child = Command::new(common::tools::built("crane"))
            .args(["registry", "serve", "--address", "127.0.0.1:0"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("starting crane registry serve");
        // crane picks the port and logs it: no window in which another process takes it.
        let mut lines = BufReader::new(child.stderr.take().expect("piped stderr")).lines();
        let port = lines
            .by_ref()
            .map_while(Result::ok)
            .find_map(|l| l.split("serving on port ").nth(1).map(str::to_string))
            .expect("crane registry serve reports its port");
        // Keep draining its log so the registry never blocks on a full pipe.
        std::thread::spawn(move || lines.for_each(drop));
        Self { child, host: format!("127.0.0.1:{}", port.trim()) }
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `hack/image.sh push` of the test image to `registry`; returns the pushed repo@digest.
fn push_image(registry: &Registry) -> String {
    let (out, digest) = image();
    let tag = format!("{}/payi/payi-operator:{}", registry.host, env!("CARGO_PKG_VERSION"));
    let pushed = run(Command::new("hack/image.sh")
        .args(["push", &tag])
        .env("IMAGE_OUT", out)
        .env_remove("REGISTRY_PASSWORD")
        .env_remove("GITHUB_TOKEN"));
    assert_eq!(pushed, format!("{}/payi/payi-operator@{digest}", registry.host));
    pushed
}

/// The Dockerfile's value of one instruction in its last stage (the image people run).
fn dockerfile(instruction: &str) -> String {
    let text = std::fs::read_to_string(repo().join("Dockerfile")).unwrap();
    let last_stage = text.rsplit("\nFROM ").next().unwrap();
    last_stage
        .lines()
        .find_map(|l| l.strip_prefix(&format!("{instruction} ")))
        .unwrap_or_else(|| panic!("no {instruction} in the Dockerfile's last stage"))
        .trim()
        .to_string()
}

#[test]
fn two_builds_of_one_tree_give_one_digest() {
    let (first, digest) = image();
    let (again, digest_again) = build_image("again");
    assert!(digest.starts_with("sha256:"), "{digest}");
    assert_eq!(digest, &digest_again, "two builds of the same tree differ");
    for out in [first, &again] {
        let layout: Value =
            serde_json::from_str(&std::fs::read_to_string(out.join("oci/index.json")).unwrap()).unwrap();
        assert_eq!(layout["manifests"][0]["digest"], digest.as_str(), "{layout}");
        assert_eq!(layout["manifests"][0]["mediaType"], "application/vnd.oci.image.index.v1+json");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn the_pushed_image_runs_as_the_operator() {
    let registry = Registry::start();
    let pushed = push_image(&registry);

    // The image's configuration: the Dockerfile's user, entrypoint, arguments and port.
    let config: Value = serde_json::from_str(&crane(&["config", "--platform", PLATFORM, &pushed])).unwrap();
    let c = &config["config"];
    assert_eq!(c["User"], dockerfile("USER"));
    assert_eq!(c["Entrypoint"], serde_json::from_str::<Value>(&dockerfile("ENTRYPOINT")).unwrap());
    assert_eq!(c["Cmd"], serde_json::from_str::<Value>(&dockerfile("CMD")).unwrap());
    assert!(c["ExposedPorts"].get(format!("{}/tcp", dockerfile("EXPOSE"))).is_some(), "{c}");
    assert_eq!((config["os"].as_str(), config["architecture"].as_str()), (Some("linux"), Some("amd64")));
    let labels = &c["Labels"];
    let revision = run(Command::new("git").args(["rev-parse", "HEAD"]));
    assert_eq!(labels["org.opencontainers.image.revision"], revision.as_str());
    assert_eq!(labels["org.opencontainers.image.version"], env!("CARGO_PKG_VERSION"));
    assert_eq!(labels["org.opencontainers.image.licenses"], env!("CARGO_PKG_LICENSE"));
    assert!(labels["org.opencontainers.image.source"].as_str().is_some_and(|s| s.starts_with("https://")));
    // Every time in the image is the commit's: that is what makes it reproducible.
    let commit_time = run(Command::new("git")
        .args(["log", "-1", "--format=%cd", "--date=format-local:%Y-%m-%dT%H:%M:%SZ"])
        .env("TZ", "UTC"));
    assert_eq!(labels["org.opencontainers.image.created"], commit_time.as_str());
    assert_eq!(config["created"], commit_time.as_str());

    // Pulled back and unpacked: exactly the binary and the user database, owned by root.
    let dir = repo().join("target/e2e-image/unpacked");
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(dir.join("rootfs")).unwrap();
    let tarball = dir.join("fs.tar");
    crane(&["export", "--platform", PLATFORM, &pushed, tarball.to_str().unwrap()]);
    let listing = run(Command::new("tar").args(["--list", "--verbose", "--numeric-owner", "--file"]).arg(&tarball));
    let entries: Vec<(&str, &str, &str)> = listing
        .lines()
        .map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            (f[0], f[1], *f.last().unwrap())
        })
        .collect();
    assert_eq!(
        entries,
        [
            ("drwxr-xr-x", "0/0", "etc"),
            ("-rw-r--r--", "0/0", "etc/group"),
            ("-rw-r--r--", "0/0", "etc/passwd"),
            ("-rwxr-xr-x", "0/0", "payi-operator"),
        ],
        "{listing}"
    );
    run(Command::new("tar").arg("--extract").arg("--file").arg(&tarball).arg("--directory").arg(dir.join("rootfs")));
    let passwd = std::fs::read_to_string(dir.join("rootfs/etc/passwd")).unwrap();
    assert!(passwd.contains(":65532:65532:"), "{passwd}");
    // The image has no libc or dynamic loader: a dynamically linked binary names
    // its loader (PT_INTERP) and would not start in it.
    let binary = std::fs::read(dir.join("rootfs/payi-operator")).unwrap();
    assert_eq!(&binary[..4], b"\x7fELF");
    let names_a_loader = |loader: &[u8]| binary.windows(loader.len()).any(|w| w == loader);
    assert!(!names_a_loader(b"/ld-musl-") && !names_a_loader(b"/ld-linux-"), "the binary is dynamically linked");

    // The unpacked binary, run as the chart's ServiceAccount under `make test`, issues a key.
    let env = TestEnv::new("image").await;
    let (org, group) = env.org_and_group().await;
    env.create_app("from-image", &group).await;
    let operator = Process::spawn_binary(&dir.join("rootfs/payi-operator"), "image", &[], &[]);
    let app = app_with_reason(&env, "from-image", "KeyIssued").await;
    let secret = app.status.and_then(|s| s.key_secret_name).expect("status names the Secret");
    let key = key_of(&env.secrets().get(&secret).await.unwrap());
    assert!(payi_operator::key::is_well_formed(&key));
    let (code, _) = eventually("/healthz of the image's operator", || operator.get("/healthz")).await;
    assert_eq!(code, 200);
    assert!(!operator.logs().contains(&key), "the key appears in the operator's log");
    if operator_identity().is_none() {
        eprintln!("note: PAYI_TEST_OPERATOR_AS is unset; the image's operator ran with admin rights");
    }

    // Children first, while the operator still runs to release the parents' finalizers.
    common::delete(&env.apps(), "from-image").await;
    common::delete(&env.groups(), &group).await;
    common::delete(&env.orgs(), &org).await;
    eventually("the Organization to be gone", || async {
        env.orgs().get_opt(&org).await.ok()?.is_none().then_some(())
    })
    .await;
    delete_namespace(&env).await;
}

/// The image's binary validates exactly like the build the other tests check: its
/// allocator switches for `validate` and the work spreads over all cores there
/// (src/allocator.rs), so any difference would be a bug of that switch.
#[test]
fn the_image_binary_validates_like_the_tested_build() {
    image();
    let musl = repo().join("target/x86_64-unknown-linux-musl/release/payi-operator");
    let dir = repo().join("target/e2e-image/validate");
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    for file in 0..12 {
        let documents: Vec<String> = (0..100).map(|i| application(file * 100 + i)).collect();
        std::fs::write(dir.join(format!("apps-{file:02}.yaml")), documents.join("---\n")).unwrap();
    }
    let inputs = [dir.to_str().unwrap(), "tests/corpus", "examples"];
    for format in ["text", "json"] {
        let validate = |binary: &Path| {
            let out = Command::new(binary)
                .arg("validate")
                .args(inputs)
                .args(["--output", format])
                .current_dir(repo())
                .output()
                .unwrap_or_else(|e| panic!("running {}: {e}", binary.display()));
            (out.status.code(), String::from_utf8(out.stdout).unwrap(), String::from_utf8(out.stderr).unwrap())
        };
        let image = validate(&musl);
        let tested = validate(Path::new(env!("CARGO_BIN_EXE_payi-operator")));
        assert_eq!(tested.0, Some(1), "the input has errors: {}", tested.2);
        assert!(tested.1.lines().count() > 100, "{}", tested.1);
        assert_eq!(image, tested, "--output {format}");
    }
}

/// An Application of a Group in the set; every ninth has an error the schema or a rule finds.
fn application(i: usize) -> String {
    let group = format!("group-{}", i % 5);
    let mut text = format!(
        "apiVersion: payi.io/v1alpha1\nkind: Application\nmetadata:\n  name: app-{i}\n  namespace: team\n\
         spec:\n  groupRef:\n    name: {group}\n  keyRotation:\n    every: 720h\n"
    );
    match i % 9 {
        0 => text.push_str("  keySecret:\n    name: Not_A_Name\n"),
        3 => text.push_str("  groupref:\n    name: typo\n"),
        6 => text = text.replace("720h", "5m"),
        _ => {}
    }
    if i < 5 {
        text.push_str(&format!(
            "---\napiVersion: payi.io/v1alpha1\nkind: Group\nmetadata:\n  name: {group}\nspec:\n  organizationRef:\n    name: org\n"
        ));
    }
    text
}

async fn delete_namespace(env: &TestEnv) {
    let namespaces: kube::Api<k8s_openapi::api::core::v1::Namespace> = kube::Api::all(env.client.clone());
    common::delete(&namespaces, &env.namespace).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn the_chart_installs_from_the_registry_pinned_to_the_pushed_digest() {
    let registry = Registry::start();
    let pushed = push_image(&registry);
    let (repository, digest) = pushed.split_once('@').unwrap();

    let out = repo().join("target/e2e-image/chart");
    let charts = format!("oci://{}/payi/charts", registry.host);
    let chart_ref = run(Command::new("hack/chart.sh")
        .args(["push", &charts])
        .env("PLAIN_HTTP", "1")
        .env("CHART_OUT", &out)
        .env_remove("REGISTRY_PASSWORD")
        .env_remove("GITHUB_TOKEN"));
    assert!(chart_ref.starts_with(&format!("{}/payi/charts/payi-operator@sha256:", registry.host)), "{chart_ref}");

    let chart = format!("{charts}/payi-operator");
    let version = run(Command::new("awk").args(["$1 == \"version:\" { print $2 }", "charts/payi-operator/Chart.yaml"]));
    let shown = helm(&["show", "chart", &chart, "--version", &version, "--plain-http"]);
    assert!(shown.contains("name: payi-operator"), "{shown}");

    let env = TestEnv::new("oci-chart").await;
    let release: Value = serde_json::from_str(&helm(&[
        "install",
        "payi-oci",
        &chart,
        "--version",
        &version,
        "--plain-http",
        "--namespace",
        &env.namespace,
        "--dry-run=server",
        "--set",
        &format!("image.repository={repository}"),
        "--set",
        &format!("image.digest={digest}"),
        "--output",
        "json",
    ]))
    .unwrap();
    let manifest = release["manifest"].as_str().expect("the release's manifest");
    let deployment = serde_yaml::Deserializer::from_str(manifest)
        .map(|doc| serde::Deserialize::deserialize(doc).unwrap())
        .find(|o: &Value| o["kind"] == "Deployment")
        .expect("the chart renders a Deployment");
    let containers = &deployment["spec"]["template"]["spec"]["containers"];
    assert_eq!(containers[0]["image"], pushed.as_str(), "{deployment}");
    assert_eq!(containers[0]["securityContext"]["runAsUser"], 65532);
    assert_eq!(dockerfile("USER"), "65532:65532", "the chart runs the pod as 65532, which must stay the image's user");

    // Air-gapped mirroring as docs/helm.md describes it: `crane copy` keeps both
    // digests, so `image.digest` and the signatures stay valid in the mirror.
    let chart_tag = format!("{}/payi/charts/payi-operator:{version}", registry.host);
    let mirror = format!("{}/mirror", registry.host);
    for (source, target) in [
        (chart_tag.clone(), format!("{mirror}/charts/payi-operator:{version}")),
        (format!("{repository}:{}", env!("CARGO_PKG_VERSION")), format!("{mirror}/payi-operator:mirrored")),
    ] {
        crane(&["copy", &source, &target]);
        assert_eq!(crane(&["digest", &target]), crane(&["digest", &source]), "crane copy {source} {target}");
    }
    assert_eq!(crane(&["digest", &format!("{mirror}/payi-operator:mirrored")]), digest);
    delete_namespace(&env).await;
}
