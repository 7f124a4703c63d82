//! `kubectl payi` against the real control plane, run as the built binary, with
//! golden output (tests/golden/plugin-*.txt; names, namespaces, fingerprints,
//! times and ages normalised). `PAYI_UPDATE_GOLDEN=1` rewrites the goldens.

mod common;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use common::{Operator, TestEnv, delete, eventually, key_of, ready_of, unique};
use kube::api::PostParams;
use payi_operator::crd::{Application, Group};
use serde_json::json;

const PLUGIN: &str = env!("CARGO_BIN_EXE_kubectl-payi");

fn kubeconfig() -> PathBuf {
    std::env::var("KUBECONFIG")
        .map(PathBuf::from)
        .unwrap_or_else(|_| Path::new(env!("CARGO_MANIFEST_DIR")).join("target/testenv/kubeconfig"))
}

fn plugin(args: &[&str], stdin: &str) -> Output {
    let mut child = Command::new(PLUGIN)
        .args(args)
        .env("KUBECONFIG", kubeconfig())
        .env_remove("NO_COLOR")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("starting kubectl-payi");
    let mut input = child.stdin.take().expect("stdin");
    input.write_all(stdin.as_bytes()).expect("writing stdin");
    drop(input);
    child.wait_with_output().expect("running kubectl-payi")
}

fn text(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// Replaces every match of `pattern` with `with`, padded or cut to the match's
/// length, so column alignment survives normalisation.
fn same_width(text: &str, pattern: &str, with: &str) -> String {
    let re = regex::Regex::new(pattern).unwrap();
    re.replace_all(text, |c: &regex::Captures| {
        let len = c[0].chars().count();
        let mut out: String = with.chars().take(len).collect();
        while out.chars().count() < len {
            out.push(' ');
        }
        out
    })
    .into_owned()
}

/// Normalises what changes between runs: the test's random id, the namespace's,
/// fingerprints, times and ages.
fn normalise(text: &str, ids: &[&str]) -> String {
    let mut out = text.to_string();
    for id in ids {
        out = out.replace(id, &"#".repeat(id.len()));
    }
    // Ages in the tree's KEY AGE column, right after a fingerprint.
    let age = regex::Regex::new(r"(sha256:[0-9a-f]{16} +)(\d+[smhd](?:\d+[smh])? +)").unwrap();
    out = age
        .replace_all(&out, |c: &regex::Captures| format!("{}{:<width$}", &c[1], "<age>", width = c[2].len()))
        .into_owned();
    out = same_width(&out, r"sha256:[0-9a-f]{16}", "sha256:################");
    out = same_width(&out, r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?Z", "YYYY-MM-DDThh:mm:ssZ");
    out = regex::Regex::new(r#""keyAgeSeconds": \d+"#).unwrap().replace_all(&out, r#""keyAgeSeconds": 0"#).into_owned();
    regex::Regex::new(r#""request": "\d+""#).unwrap().replace_all(&out, r#""request": "<nanoseconds>""#).into_owned()
}

fn golden(name: &str, actual: &str) {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/golden").join(name);
    if std::env::var_os("PAYI_UPDATE_GOLDEN").is_some() {
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, actual).unwrap();
        return;
    }
    let expected = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("{}: {e}; run with PAYI_UPDATE_GOLDEN=1 to create it", path.display()));
    assert_eq!(actual, expected, "output differs from {}", path.display());
}

struct Fixture {
    env: TestEnv,
    id: String,
    ns_id: String,
    org: String,
    eng: String,
    mkt: String,
}

impl Fixture {
    fn name(&self, base: &str) -> String {
        format!("{base}-{}", self.id)
    }

    /// Organization with two Groups: `eng` admits the namespace and holds two
    /// Ready Applications (one with a schedule), `mkt` admits nothing and holds one.
    async fn new() -> Self {
        Operator::shared();
        let env = TestEnv::new("plugin").await;
        let id = unique("x").trim_start_matches("x-").to_string();
        let ns_id = env.namespace.trim_start_matches("plugin-").to_string();
        let org = format!("org-{id}");
        let (eng, mkt) = (format!("eng-{id}"), format!("mkt-{id}"));
        env.create_org(&org, None).await;
        env.create_group(&eng, &org).await;
        let closed: Group = serde_json::from_value(json!({
            "apiVersion": "payi.io/v1alpha1", "kind": "Group", "metadata": {"name": mkt},
            "spec": {"organizationRef": {"name": org}, "namespacePolicy": {"names": []}}
        }))
        .unwrap();
        env.groups().create(&PostParams::default(), &closed).await.unwrap();
        let fixture = Self { env, id, ns_id, org, eng, mkt };
        fixture.env.create_app(&fixture.name("chat"), &fixture.eng).await;
        let scheduled: Application = serde_json::from_value(json!({
            "apiVersion": "payi.io/v1alpha1", "kind": "Application", "metadata": {"name": fixture.name("search")},
            "spec": {"groupRef": {"name": fixture.eng}, "keyRotation": {"every": "720h"},
                     "useCases": [{"name": "rank_results", "version": 2}, {"name": "suggest"}]}
        }))
        .unwrap();
        fixture.env.apps().create(&PostParams::default(), &scheduled).await.unwrap();
        fixture.env.create_app(&fixture.name("ads"), &fixture.mkt).await;
        fixture.settled().await;
        fixture
    }

    /// Waits until every object reports the Ready condition the goldens show.
    async fn settled(&self) {
        for (app, want) in [("chat", "True"), ("search", "True"), ("ads", "False")] {
            let name = self.name(app);
            eventually(&format!("{name} Ready={want}"), || async {
                let app = self.env.apps().get(&name).await.ok()?;
                let status = app.status?;
                let scheduled = status.rotation.as_ref().and_then(|r| r.next_rotation_at.as_ref()).is_some();
                let keyed = want == "False" || status.key_fingerprint.is_some();
                let complete = keyed && (app.spec.key_rotation.is_none() || scheduled);
                (ready_of(&status.conditions)?.0 == want && complete).then_some(())
            })
            .await;
        }
        // A Group counts only the Applications of namespaces it admits: "ads" is refused by mkt.
        for (group, total, ready) in [(&self.eng, 2, 2), (&self.mkt, 0, 0)] {
            eventually(&format!("{group} counts"), || async {
                let status = self.env.groups().get(group).await.ok()?.status?;
                let counted = status.applications.total == total && status.applications.ready == ready;
                (counted && ready_of(&status.conditions).is_some()).then_some(())
            })
            .await;
        }
        eventually("organization counts", || async {
            let status = self.env.orgs().get(&self.org).await.ok()?.status?;
            (status.applications.total == 2 && ready_of(&status.conditions).is_some()).then_some(())
        })
        .await;
    }

    async fn cleanup(self) {
        for app in ["chat", "search", "ads"] {
            delete(&self.env.apps(), &self.name(app)).await;
        }
        delete(&self.env.groups(), &self.eng).await;
        delete(&self.env.groups(), &self.mkt).await;
        delete(&self.env.orgs(), &self.org).await;
    }

    fn normalise(&self, text: &str) -> String {
        normalise(text, &[&self.id, &self.ns_id])
    }
}

#[tokio::test]
async fn plugin_commands_match_their_goldens() {
    let fx = Fixture::new().await;

    // tree, plain (piped: no colour) and JSON.
    let out = plugin(&["tree", &fx.org], "");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(!text(&out).contains('\x1b'), "colour when piped");
    golden("plugin-tree.txt", &fx.normalise(&text(&out)));
    let out = plugin(&["tree", &fx.org, "-o", "json"], "");
    assert!(out.status.success());
    golden("plugin-tree.json", &fx.normalise(&text(&out)));
    let missing = plugin(&["tree", "no-such-organization"], "");
    assert_eq!(missing.status.code(), Some(1));

    // whois, from a key on stdin and from a fingerprint; never echoing the key.
    let chat = fx.name("chat");
    let secret = fx.env.secrets().get(&format!("{chat}-payi-key")).await.unwrap();
    let key = key_of(&secret);
    let out = plugin(&["whois"], &format!("{key}\n"));
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(!text(&out).contains(&key), "whois printed the key");
    golden("plugin-whois.txt", &fx.normalise(&text(&out)));
    let fingerprint = payi_operator::key::fingerprint(&key);
    let out = plugin(&["whois", "--fingerprint", &fingerprint, "-o", "json"], "");
    assert!(out.status.success());
    golden("plugin-whois.json", &fx.normalise(&text(&out)));
    let unknown = plugin(&["whois", "--fingerprint", "sha256:0000000000000000"], "");
    assert_eq!(unknown.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&unknown.stderr).contains("no Application has a key with fingerprint"));
    // Not a payi key at all: said so, with its own exit code, and nothing looked up.
    for not_a_key in ["not-a-key\n", &format!("{}x\n", &key[..key.len() - 1])] {
        let out = plugin(&["whois"], not_a_key);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(3), "{stderr}");
        assert!(stderr.contains("not a well-formed payi key"), "{stderr}");
        assert!(!stderr.contains("fingerprint sha256"), "{stderr}");
    }

    // rotate --wait, then the old key is the previous one.
    let ns = fx.env.namespace.clone();
    let out = plugin(&["rotate", &chat, "-n", &ns, "--wait"], "");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    golden("plugin-rotate.txt", &fx.normalise(&text(&out)));
    let out = plugin(&["whois"], &key);
    assert!(text(&out).contains("(previous key, expires "), "{}", text(&out));
    let out = plugin(&["rotate", &chat, "-n", &ns, "--wait", "-o", "json"], "");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    golden("plugin-rotate.json", &fx.normalise(&text(&out)));
    let out = plugin(&["rotate", &chat, "-n", &ns], "");
    assert!(text(&out).contains("add --wait to follow it"), "{}", text(&out));

    // check: the validator with the live cluster's Groups and Namespaces.
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join(format!("target/plugin-check-{}", fx.id));
    std::fs::create_dir_all(&dir).unwrap();
    let manifest = format!(
        "apiVersion: payi.io/v1alpha1\nkind: Application\nmetadata:\n  name: new-{id}\nspec:\n  groupRef:\n    name: {eng}\n\
         ---\napiVersion: payi.io/v1alpha1\nkind: Application\nmetadata:\n  name: other-{id}\nspec:\n  groupRef:\n    name: {mkt}\n\
         ---\napiVersion: payi.io/v1alpha1\nkind: Application\nmetadata:\n  name: lost-{id}\nspec:\n  groupRef:\n    name: nope-{id}\n  \
         keySecret:\n    name: {chat}-payi-key\n",
        id = fx.id,
        eng = fx.eng,
        mkt = fx.mkt,
    );
    std::fs::write(dir.join("apps.yaml"), manifest).unwrap();
    let out = plugin(&["check", "-n", &ns, dir.to_str().unwrap()], "");
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let shown = fx.normalise(&text(&out).replace(&dir.display().to_string(), "DIR"));
    golden("plugin-check.txt", &shown);
    let out = plugin(&["check", "-n", &ns, "-o", "json", dir.to_str().unwrap()], "");
    assert_eq!(out.status.code(), Some(1));
    golden("plugin-check.json", &fx.normalise(&text(&out).replace(&dir.display().to_string(), "DIR")));
    std::fs::write(dir.join("apps.yaml"), format!("apiVersion: payi.io/v1alpha1\nkind: Application\nmetadata:\n  name: new-{}\nspec:\n  groupRef:\n    name: {}\n", fx.id, fx.eng)).unwrap();
    let out = plugin(&["check", "-n", &ns, dir.to_str().unwrap()], "");
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let _ = std::fs::remove_dir_all(&dir);

    fx.cleanup().await;
}
