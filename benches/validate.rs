//! Validator speed: `cargo bench --bench validate` (or `PAYI_BENCH_MANIFESTS=20000`).
//! Writes N manifests (Organizations, Groups and Applications, one file each,
//! about a tenth of them with an error) under target/validate-bench/, then times
//! reading and validating them with the library and with the release binary.
//! Figures go in docs/benchmark.md.
//!
//! Under `cargo test` (no `--bench` argument) it does nothing.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use payi_operator::validate::schema::Schemas;
use payi_operator::validate::{Settings, input, validate};

/// Writes `n` manifests: per 100, 1 Organization, 9 Groups and 90 Applications with
/// owners, a key Secret template and a rotation schedule; every tenth Application is wrong.
pub fn generate(dir: &Path, n: usize) -> std::io::Result<()> {
    let _ = std::fs::remove_dir_all(dir);
    std::fs::create_dir_all(dir)?;
    for i in 0..n {
        let block = i / 100;
        let org = format!("org-{block}");
        let group = format!("group-{block}-{}", i % 9);
        let text = match i % 100 {
            0 => format!(
                "apiVersion: payi.io/v1alpha1\nkind: Organization\nmetadata:\n  name: {org}\nspec:\n  displayName: Org {block}\n  baseURL: https://api.pay-i.com\n  owners:\n  - kind: Group\n    name: platform\n"
            ),
            1..=9 => format!(
                "apiVersion: payi.io/v1alpha1\nkind: Group\nmetadata:\n  name: group-{block}-{}\nspec:\n  organizationRef:\n    name: {org}\n  namespacePolicy:\n    names: [team-{block}]\n",
                i % 100 - 1
            ),
            k => {
                let every = if k % 10 == 0 { "30m" } else { "720h" };
                format!(
                    "apiVersion: payi.io/v1alpha1\nkind: Application\nmetadata:\n  name: app-{i}\n  namespace: team-{block}\nspec:\n  groupRef:\n    name: {group}\n  displayName: Application {i}\n  keySecret:\n    name: app-{i}-key\n    labels:\n      team: t{block}\n  keyRotation:\n    every: {every}\n    gracePeriod: 24h\n  owners:\n  - kind: ServiceAccount\n    name: deployer\n    namespace: team-{block}\n"
                )
            }
        };
        std::fs::write(dir.join(format!("{i:06}.yaml")), text)?;
    }
    Ok(())
}

fn main() {
    if !std::env::args().any(|a| a == "--bench") {
        return;
    }
    let n: usize = std::env::var("PAYI_BENCH_MANIFESTS").ok().and_then(|v| v.parse().ok()).unwrap_or(10_000);
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let dir = root.join("target/validate-bench");
    generate(&dir, n).expect("writing the manifests");
    let paths = vec![dir.display().to_string()];

    let schemas = Schemas::from_crds(&payi_operator::crd::all());
    let settings = Settings { default_namespace: "default".into() };
    for round in 1..=3 {
        let started = Instant::now();
        let (documents, errors) = input::read_all(&paths);
        let read = started.elapsed();
        let report = validate(&documents, errors, &schemas, None, &settings);
        let total = started.elapsed();
        println!(
            "library, round {round}: {n} manifests read in {read:?}, read+validated in {total:?}; {} errors",
            report.count(payi_operator::validate::Severity::Error)
        );
    }

    // The release binary cargo built for this bench, end to end: start, read, validate, print.
    let binary = env!("CARGO_BIN_EXE_payi-operator");
    for round in 1..=3 {
        let started = Instant::now();
        let out = Command::new(binary).arg("validate").arg(&dir).output().expect("running the binary");
        println!(
            "binary, round {round}: {:?} end to end (exit {:?}, {} output lines)",
            started.elapsed(),
            out.status.code(),
            String::from_utf8_lossy(&out.stdout).lines().count()
        );
    }
}
