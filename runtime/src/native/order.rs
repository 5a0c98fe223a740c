//! Load order of native modules: dependencies first (a depth-first topological order), with
//! errors that name the whole chain: a cycle, a missing module, or a version that does not
//! satisfy a range.

use std::collections::BTreeMap;

use super::manifest::Manifest;

/// Why a module cannot be loaded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum OrderError {
    #[error("dependency cycle: {}", .0.join(" -> "))]
    Cycle(Vec<String>),
    #[error("{} needs {missing:?}, which is not installed", .chain.join(" -> "))]
    Missing { chain: Vec<String>, missing: String },
    #[error(
        "{} needs {dependency:?} {required}, but version {found} is installed",
        .chain.join(" -> ")
    )]
    Incompatible {
        chain: Vec<String>,
        dependency: String,
        required: String,
        found: String,
    },
}

/// `target` and everything it needs, dependencies first (each once).
pub fn load_order(
    target: &str,
    modules: &BTreeMap<String, Manifest>,
) -> Result<Vec<String>, OrderError> {
    let mut order = Vec::new();
    let mut path = Vec::new();
    visit(target, modules, &mut path, &mut order)?;
    Ok(order)
}

fn visit(
    name: &str,
    modules: &BTreeMap<String, Manifest>,
    path: &mut Vec<String>,
    order: &mut Vec<String>,
) -> Result<(), OrderError> {
    if order.iter().any(|done| done == name) {
        return Ok(());
    }
    if let Some(start) = path.iter().position(|p| p == name) {
        let mut cycle = path[start..].to_vec();
        cycle.push(name.to_owned());
        return Err(OrderError::Cycle(cycle));
    }
    let Some(manifest) = modules.get(name) else {
        return Err(OrderError::Missing {
            chain: path.clone(),
            missing: name.to_owned(),
        });
    };
    path.push(name.to_owned());
    for dependency in &manifest.dependencies {
        match modules.get(&dependency.name) {
            Some(found) if !dependency.version.matches(&found.version) => {
                return Err(OrderError::Incompatible {
                    chain: path.clone(),
                    dependency: dependency.name.clone(),
                    required: dependency.version.to_string(),
                    found: found.version.to_string(),
                });
            }
            _ => visit(&dependency.name, modules, path, order)?,
        }
    }
    path.pop();
    order.push(name.to_owned());
    Ok(())
}

/// The modules that depend on `name`, directly or not (what must go before it is unloaded).
pub fn dependents(name: &str, modules: &BTreeMap<String, Manifest>) -> Vec<String> {
    let mut found: Vec<String> = Vec::new();
    let mut frontier = vec![name.to_owned()];
    while let Some(current) = frontier.pop() {
        for (other, manifest) in modules {
            if manifest.dependencies.iter().any(|d| d.name == current)
                && !found.contains(other)
                && other != name
            {
                found.push(other.clone());
                frontier.push(other.clone());
            }
        }
    }
    found.sort();
    found
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(specs: &[(&str, &str, &[&str])]) -> BTreeMap<String, Manifest> {
        specs
            .iter()
            .map(|(name, version, deps)| {
                let deps: Vec<String> = deps.iter().map(|d| format!("{d:?}")).collect();
                let text = format!(
                    r#"{{"name": "{name}", "version": "{version}", "library": "l.so",
                        "functions": ["f"], "dependencies": [{}]}}"#,
                    deps.join(", ")
                );
                (
                    (*name).to_owned(),
                    Manifest::parse(&text).expect("manifest"),
                )
            })
            .collect()
    }

    #[test]
    fn dependencies_come_first_each_once() {
        let modules = set(&[
            ("app", "1.0.0", &["report", "astro@^0.1"]),
            ("report", "0.2.0", &["astro"]),
            ("astro", "0.1.3", &[]),
        ]);
        assert_eq!(
            load_order("app", &modules).expect("order"),
            ["astro", "report", "app"]
        );
        assert_eq!(dependents("astro", &modules), ["app", "report"]);
        assert!(dependents("app", &modules).is_empty());
    }

    #[test]
    fn cycles_missing_and_incompatible_name_the_chain() {
        let cycle = set(&[
            ("a", "1.0.0", &["b"]),
            ("b", "1.0.0", &["c"]),
            ("c", "1.0.0", &["a"]),
        ]);
        assert_eq!(
            load_order("a", &cycle).expect_err("cycle").to_string(),
            "dependency cycle: a -> b -> c -> a"
        );
        let missing = set(&[("a", "1.0.0", &["b"]), ("b", "1.0.0", &["gone"])]);
        assert_eq!(
            load_order("a", &missing).expect_err("missing").to_string(),
            r#"a -> b needs "gone", which is not installed"#
        );
        let old = set(&[("a", "1.0.0", &["b@^2"]), ("b", "1.4.0", &[])]);
        assert_eq!(
            load_order("a", &old).expect_err("version").to_string(),
            r#"a needs "b" ^2, but version 1.4.0 is installed"#
        );
    }
}
