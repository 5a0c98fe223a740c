//! One build for the README's two commands: `cargo run -p scriptbox -- serve` must resolve
//! the same features as `cargo test --workspace` for every crate the server is built from,
//! or running the server after the tests rebuilds those crates (and the tests after the
//! server, again). runtime/Cargo.toml names the features the test-only dependencies turn
//! on; this test fails when a change to either side makes the two sets drift apart.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::process::Command;

use scriptbox::config::SOURCE_ROOT;

/// Each package's feature sets (a package built for the host and for the target may have
/// two) as `cargo tree` resolves them with `args`.
fn features(args: &[&str]) -> BTreeMap<String, BTreeSet<String>> {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_owned());
    let output = Command::new(cargo)
        .current_dir(Path::new(SOURCE_ROOT))
        .args([
            "tree",
            "--offline",
            "--locked",
            "--prefix",
            "none",
            "-f",
            "{p}|{f}",
        ])
        .args(args)
        .output()
        .expect("cargo tree runs");
    assert!(
        output.status.success(),
        "cargo tree failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let mut sets: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for line in String::from_utf8_lossy(&output.stdout).lines() {
        let line = line.trim_end_matches(" (*)");
        if let Some((package, features)) = line.split_once('|') {
            sets.entry(package.to_owned())
                .or_default()
                .insert(features.to_owned());
        }
    }
    sets
}

#[test]
fn serving_resolves_the_features_the_test_suite_does() {
    let serve = features(&["-p", "scriptbox", "-e", "normal,build"]);
    let test = features(&["--workspace"]);
    assert!(
        serve.len() > 100,
        "cargo tree listed too little: {}",
        serve.len()
    );
    let drifted: Vec<String> = serve
        .iter()
        .filter(|(package, sets)| test.get(*package) != Some(sets))
        .map(|(package, sets)| format!("{package}: serve {sets:?}, test {:?}", test.get(package)))
        .collect();
    assert!(
        drifted.is_empty(),
        "these crates would be built twice (name the test side's features in \
         runtime/Cargo.toml):\n{}",
        drifted.join("\n")
    );
}
