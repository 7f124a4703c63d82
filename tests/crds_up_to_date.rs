//! The committed CRD YAML is what the code generates, in both places it ships.

use std::path::Path;

use payi_operator::crd;

fn check(dir: &str) {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    for one in crd::all() {
        let path = root.join(dir).join(crd::file_name(&one));
        let committed = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()));
        let generated = crd::to_yaml(std::slice::from_ref(&one)).unwrap();
        assert!(
            committed == generated,
            "{} is out of date with the code; run `make crds` and commit the result",
            path.display()
        );
    }
}

#[test]
fn crds_directory_matches_the_code() {
    check("crds");
}

#[test]
fn helm_chart_crds_match_the_code() {
    check("charts/payi-operator/crds");
}
