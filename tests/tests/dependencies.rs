//! The direction of dependencies between the workspace's crates (STYLE.md section 1), after
//! firecracker's `verify_dependencies`: `cli` → {`manager`, `worker`, `netd`, `stack`} →
//! `proto`; sibling crates never import each other; nothing depends on `cli` (`rswarm`) or
//! on the dev-only `rswarm-tests`, which may itself depend on anything.
//!
//! Every kind of dependency (normal, dev, build) counts. A new workspace crate must be added
//! to [`ALLOWED`] before it can be used.

use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::process::Command;

/// Each workspace crate and the workspace crates it may depend on.
const ALLOWED: &[(&str, &[&str])] = &[
    ("rswarm-proto", &[]),
    ("rswarm-manager", &["rswarm-proto"]),
    ("rswarm-worker", &["rswarm-proto"]),
    ("rswarm-netd", &["rswarm-proto"]),
    ("rswarm-stack", &["rswarm-proto"]),
    (
        "rswarm",
        &[
            "rswarm-manager",
            "rswarm-worker",
            "rswarm-netd",
            "rswarm-stack",
            "rswarm-proto",
        ],
    ),
];

/// May depend on any workspace crate but `rswarm`; nothing may depend on it.
const DEV_ONLY: &str = "rswarm-tests";
/// The binary crate: nothing depends on it.
const CLI: &str = "rswarm";

fn metadata() -> Value {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("the tests crate is inside the workspace");
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let out = Command::new(cargo)
        .args(["metadata", "--format-version", "1", "--no-deps"])
        .current_dir(root)
        .output()
        .expect("run cargo metadata");
    assert!(
        out.status.success(),
        "cargo metadata failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("cargo metadata prints JSON")
}

/// Edges between workspace crates: (from, to) → the kinds of dependency ("normal", "dev",
/// "build").
type Edges = BTreeMap<(String, String), Vec<String>>;

/// The workspace's crates and the edges between them.
fn workspace_edges(meta: &Value) -> (BTreeSet<String>, Edges) {
    let packages = meta["packages"].as_array().expect("packages");
    let members: BTreeSet<String> = packages
        .iter()
        .filter_map(|p| p["name"].as_str().map(str::to_owned))
        .collect();
    let mut edges = Edges::new();
    for p in packages {
        let from = p["name"].as_str().expect("package name").to_owned();
        for d in p["dependencies"].as_array().expect("dependencies") {
            let to = d["name"].as_str().expect("dependency name");
            if !members.contains(to) {
                continue;
            }
            let kind = d["kind"].as_str().unwrap_or("normal").to_owned();
            edges
                .entry((from.clone(), to.to_owned()))
                .or_default()
                .push(kind);
        }
    }
    (members, edges)
}

/// Every broken rule, one line each.
fn violations(members: &BTreeSet<String>, edges: &Edges) -> Vec<String> {
    let allowed: BTreeMap<&str, &[&str]> = ALLOWED.iter().copied().collect();
    let mut bad = Vec::new();
    for m in members {
        if m != DEV_ONLY && !allowed.contains_key(m.as_str()) {
            bad.push(format!(
                "{m} is a workspace crate this test does not know: add it to ALLOWED with the crates it may use"
            ));
        }
    }
    for ((from, to), kinds) in edges {
        let kinds = kinds.join("+");
        if to == CLI {
            bad.push(format!(
                "{from} -> {to} ({kinds}): nothing may depend on the cli crate"
            ));
        } else if to == DEV_ONLY {
            bad.push(format!("{from} -> {to} ({kinds}): {DEV_ONLY} is dev-only"));
        } else if from == DEV_ONLY {
            continue;
        } else if !allowed
            .get(from.as_str())
            .is_some_and(|ok| ok.contains(&to.as_str()))
        {
            bad.push(format!(
                "{from} -> {to} ({kinds}): not an allowed edge (cli -> manager, worker, netd, stack -> proto)"
            ));
        }
    }
    bad
}

#[test]
fn workspace_dependencies_point_the_right_way() {
    let (members, edges) = workspace_edges(&metadata());
    for must in [
        "rswarm-proto",
        "rswarm-manager",
        "rswarm-worker",
        CLI,
        DEV_ONLY,
    ] {
        assert!(
            members.contains(must),
            "workspace crate {must} is missing: {members:?}"
        );
    }
    let bad = violations(&members, &edges);
    assert!(
        bad.is_empty(),
        "dependency rules broken:\n  {}",
        bad.join("\n  ")
    );
}

/// The rules are checked against a made-up graph, so that the test is known to fail on the
/// edges it is there to catch.
#[test]
fn the_rules_catch_forbidden_edges() {
    let meta = serde_json::json!({ "packages": [
        { "name": "rswarm-proto", "dependencies": [] },
        { "name": "rswarm-manager", "dependencies": [
            { "name": "rswarm-proto", "kind": null },
            { "name": "rswarm-worker", "kind": "dev" },
            { "name": "serde", "kind": null },
        ] },
        { "name": "rswarm-worker", "dependencies": [ { "name": "rswarm", "kind": null } ] },
        { "name": "rswarm", "dependencies": [ { "name": "rswarm-manager", "kind": null } ] },
        { "name": "rswarm-tests", "dependencies": [
            { "name": "rswarm-manager", "kind": null },
            { "name": "rswarm-worker", "kind": "dev" },
        ] },
        { "name": "rswarm-extra", "dependencies": [ { "name": "rswarm-tests", "kind": "dev" } ] },
    ]});
    let (members, edges) = workspace_edges(&meta);
    assert!(!edges.contains_key(&("rswarm-manager".into(), "serde".into())));
    let mut bad = violations(&members, &edges);
    bad.sort();
    let expected = [
        "rswarm-extra -> rswarm-tests (dev)",
        "rswarm-extra is a workspace crate",
        "rswarm-manager -> rswarm-worker (dev)",
        "rswarm-worker -> rswarm (normal)",
    ];
    assert_eq!(bad.len(), expected.len(), "{bad:#?}");
    for (got, want) in bad.iter().zip(expected) {
        assert!(got.starts_with(want), "{got:?} should start with {want:?}");
    }
}
