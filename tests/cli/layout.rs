//! The source tree against its map: the `# Layout` list of runtime/src/lib.rs names every
//! module in layering order, each module imports only from modules below it, the files of a
//! folder module import one another without circles, nothing below `http` and `mcp` (the edges) imports axum, and
//! no file is over 600 lines before its tests. So the map, the folders and the files keep
//! saying the same thing.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use scriptbox::config::SOURCE_ROOT;

/// The longest a source file may be, not counting its `#[cfg(test)]` part.
const MAX_LINES: usize = 600;

fn src() -> PathBuf {
    Path::new(SOURCE_ROOT).join("runtime/src")
}

/// Every `.rs` file under runtime/src, as its module path (`registry/actor.rs` is
/// `["registry", "actor"]`, `registry/mod.rs` is `["registry"]`), with its text before any
/// `#[cfg(test)]` and with line comments removed.
fn modules() -> BTreeMap<Vec<String>, String> {
    fn walk(dir: &Path, out: &mut Vec<PathBuf>) {
        for entry in std::fs::read_dir(dir).expect("read_dir") {
            let path = entry.expect("entry").path();
            if path.is_dir() {
                walk(&path, out);
            } else if path.extension().is_some_and(|e| e == "rs") {
                out.push(path);
            }
        }
    }
    let mut files = Vec::new();
    walk(&src(), &mut files);
    let mut modules = BTreeMap::new();
    for file in files {
        let relative = file.strip_prefix(src()).expect("under src");
        let mut parts: Vec<String> = relative
            .with_extension("")
            .iter()
            .map(|p| p.to_string_lossy().into_owned())
            .collect();
        if parts.last().is_some_and(|p| p == "mod") {
            parts.pop();
        }
        if parts == ["lib"] || parts == ["main"] {
            continue;
        }
        let text = std::fs::read_to_string(&file).expect("source");
        let body = text.split("#[cfg(test)]").next().unwrap_or_default();
        let code: String = body
            .lines()
            .map(|line| line.split("//").next().unwrap_or_default())
            .collect::<Vec<_>>()
            .join("\n");
        modules.insert(parts, code);
    }
    modules
}

/// The module paths a file's code names through `crate::` and `super::` paths (and
/// `use super::{a, b}` groups), resolved to the longest existing module.
fn references(
    module: &[String],
    code: &str,
    known: &BTreeSet<Vec<String>>,
) -> BTreeSet<Vec<String>> {
    let resolve = |path: &str| -> Option<Vec<String>> {
        let mut segments: Vec<&str> = path.split("::").collect();
        let mut base: Vec<String> = Vec::new();
        if segments.first() == Some(&"crate") {
            segments.remove(0);
        } else {
            base = module.to_vec();
            while segments.first() == Some(&"super") {
                base.pop();
                segments.remove(0);
            }
        }
        base.extend(segments.iter().map(|s| (*s).to_owned()));
        (1..=base.len())
            .rev()
            .map(|n| base[..n].to_vec())
            .find(|candidate| known.contains(candidate))
    };
    let mut found = BTreeSet::new();
    let bytes = code.as_bytes();
    for start in ["crate::", "super::"] {
        for (at, _) in code.match_indices(start) {
            if at > 0 && (bytes[at - 1].is_ascii_alphanumeric() || bytes[at - 1] == b'_') {
                continue;
            }
            let rest = &code[at..];
            let end = rest
                .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_' || c == ':'))
                .unwrap_or(rest.len());
            let path = rest[..end].trim_end_matches(':');
            if let Some(target) = resolve(path) {
                found.insert(target);
            }
            // `use super::{a, b::C}`: each name of the group.
            if rest[end..].starts_with('{') {
                let group = &rest[end + 1..rest[end..].find('}').map_or(end, |i| end + i)];
                for name in group.split(',') {
                    let name = name.trim().split("::").next().unwrap_or_default();
                    if let Some(target) = resolve(&format!("{path}::{name}")) {
                        found.insert(target);
                    }
                }
            }
        }
    }
    found.remove(module);
    found
}

/// The modules of the `# Layout` list of lib.rs, top to bottom.
fn map_order() -> Vec<String> {
    let lib = std::fs::read_to_string(src().join("lib.rs")).expect("lib.rs");
    let mut order = Vec::new();
    for line in lib.lines().filter(|l| l.starts_with("//! * ")) {
        let mut rest = line;
        while let Some(at) = rest.find("[`") {
            let after = &rest[at + 2..];
            let Some(end) = after.find("`]") else { break };
            order.push(after[..end].to_owned());
            rest = &after[end..];
        }
    }
    order
}

#[test]
fn the_map_names_every_module_and_only_those() {
    let lib = std::fs::read_to_string(src().join("lib.rs")).expect("lib.rs");
    let declared: BTreeSet<String> = lib
        .lines()
        .filter_map(|l| l.strip_prefix("pub mod ")?.strip_suffix(';'))
        .map(str::to_owned)
        .collect();
    let mapped: BTreeSet<String> = map_order().into_iter().collect();
    assert_eq!(
        declared, mapped,
        "lib.rs: `pub mod` lines against the # Layout list"
    );
}

#[test]
fn every_module_imports_only_from_below_it() {
    let order = map_order();
    let modules = modules();
    let known: BTreeSet<Vec<String>> = modules.keys().cloned().collect();
    let mut upward = Vec::new();
    for (module, code) in &modules {
        let top = &module[0];
        if top == "bench" {
            continue; // beside the layers: it drives the server and the sandbox from outside
        }
        let Some(rank) = order.iter().position(|m| m == top) else {
            panic!("{top} is not in the lib.rs map");
        };
        for target in references(module, code, &known) {
            let below = order.iter().position(|m| *m == target[0]);
            if target[0] != *top && below.is_none_or(|b| b <= rank) {
                upward.push(format!("{} -> {}", module.join("/"), target.join("/")));
            }
        }
    }
    assert!(
        upward.is_empty(),
        "imports against the map's order:\n{}",
        upward.join("\n")
    );
}

#[test]
fn the_files_of_a_folder_import_one_another_without_circles() {
    let modules = modules();
    let known: BTreeSet<Vec<String>> = modules.keys().cloned().collect();
    // Edges between sibling files (same parent, both files below it).
    let mut edges: BTreeMap<Vec<String>, BTreeSet<Vec<String>>> = BTreeMap::new();
    for (module, code) in &modules {
        for target in references(module, code, &known) {
            let common = module
                .iter()
                .zip(&target)
                .take_while(|(a, b)| a == b)
                .count();
            if common < module.len() && common < target.len() {
                let from = module[..=common].to_vec();
                let to = target[..=common].to_vec();
                edges.entry(from).or_default().insert(to);
            }
        }
    }
    // A circle is an edge whose target reaches back to its source.
    let reaches = |from: &Vec<String>, to: &Vec<String>| {
        let mut seen = BTreeSet::new();
        let mut stack = vec![from.clone()];
        while let Some(next) = stack.pop() {
            if &next == to {
                return true;
            }
            if seen.insert(next.clone()) {
                stack.extend(edges.get(&next).into_iter().flatten().cloned());
            }
        }
        false
    };
    let circles: Vec<String> = edges
        .iter()
        .flat_map(|(from, tos)| tos.iter().map(move |to| (from, to)))
        .filter(|(from, to)| reaches(to, from))
        .map(|(from, to)| format!("{} <-> {}", from.join("/"), to.join("/")))
        .collect();
    assert!(
        circles.is_empty(),
        "import circles:\n{}",
        circles.join("\n")
    );
}

#[test]
fn only_the_edge_imports_axum() {
    let edge = ["server", "http", "mcp"];
    let offenders: Vec<String> = modules()
        .iter()
        .filter(|(module, code)| !edge.contains(&module[0].as_str()) && code.contains("axum"))
        .map(|(module, _)| module.join("/"))
        .collect();
    assert!(offenders.is_empty(), "axum below http: {offenders:?}");
}

#[test]
fn no_file_is_over_600_lines_before_its_tests() {
    let long: Vec<String> = modules()
        .iter()
        .filter(|(_, code)| code.lines().count() > MAX_LINES)
        .map(|(module, code)| format!("{} ({} lines)", module.join("/"), code.lines().count()))
        .collect();
    assert!(long.is_empty(), "split these by concern: {long:?}");
}
