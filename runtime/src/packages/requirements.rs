//! A tool's declared requirements (`get_tool_info()["requirements"]`) checked at load
//! against what its sandbox has, and installed when the owner allows it.

use std::sync::Arc;

use super::{InstallError, Packages, parse_requirement};
use crate::registry::Registry;

/// Why a loaded tool may not stay loaded.
#[derive(Debug, thiserror::Error)]
pub enum RequirementsError {
    /// Requirements its sandbox lacks (or that are not valid requirements), as declared.
    #[error("the tool requires packages its sandbox does not have")]
    Missing(Vec<String>),
    /// Installing a missing one failed.
    #[error(transparent)]
    Install(#[from] InstallError),
}

/// Most requirements a tool may declare.
const MAX_REQUIREMENTS: usize = 64;

/// Splits `"requests>=2,<3"` into the name and the specifier (absent when there is none).
fn split_requirement(text: &str) -> (&str, Option<&str>) {
    let text = text.trim();
    let end = text
        .find(|c: char| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-')))
        .unwrap_or(text.len());
    let rest = text[end..].trim();
    (&text[..end], (!rest.is_empty()).then_some(rest))
}

/// A specifier without the spaces people write around operators (`>= 22, < 24`).
fn compact(specifier: &str) -> String {
    specifier.chars().filter(|c| !c.is_whitespace()).collect()
}

/// The expression that reads a tool's declared requirements (constant text: nothing from a
/// client goes into it).
const REQUIREMENTS_EXPRESSION: &str = "(lambda info: info().get('requirements') \
    if callable(info) else None)(globals().get('get_tool_info'))";

/// `get_tool_info()["requirements"]` of a loaded tool, if it declares a list. Runs in the
/// tool's instance under its limits, but is not counted as one of its calls.
async fn declared_requirements(
    registry: &Arc<Registry>,
    alias: &str,
) -> Option<Vec<serde_json::Value>> {
    let report = registry
        .run_uncounted(
            alias,
            crate::protocol::Op::Eval {
                expression: REQUIREMENTS_EXPRESSION.to_owned(),
            },
            // A tool's own description should be quick; a slow one is not waited for.
            Some(std::time::Duration::from_secs(2)),
        )
        .await
        .ok()?;
    let crate::sandbox::Outcome::Answered {
        result: Some(result),
        error: None,
        ..
    } = report.outcome
    else {
        return None;
    };
    match serde_json::from_str(result.get()).ok()? {
        serde_json::Value::Array(items) => Some(items),
        _ => None,
    }
}

impl Packages {
    /// Checks a just-loaded tool's `get_tool_info()["requirements"]` against what its
    /// sandbox has (built in, or installed in the environment it mounts). With
    /// `auto_install` (the owner's package quota in bytes) missing ones are installed and the
    /// tool is reloaded to see them; otherwise they are [`RequirementsError::Missing`]. A
    /// tool without requirements, or whose discovery fails, is not held up here.
    pub async fn check_requirements(
        self: &Arc<Self>,
        registry: &Arc<Registry>,
        alias: &str,
        auto_install: Option<u64>,
    ) -> Result<(), RequirementsError> {
        let Some(declared) = declared_requirements(registry, alias).await else {
            return Ok(());
        };
        let mounted = registry.mounted_venv();
        let mut missing = Vec::new();
        let mut unparsable = Vec::new();
        for entry in declared.iter().take(MAX_REQUIREMENTS) {
            let Some(text) = entry.as_str() else {
                unparsable.push(entry.to_string());
                continue;
            };
            let (name, specifier) = split_requirement(text);
            let specifier = specifier.map(compact);
            match parse_requirement(name, specifier.as_deref()) {
                Err(_) => unparsable.push(text.to_owned()),
                Ok(requirement) => {
                    if !self
                        .available(mounted.clone(), requirement.name.clone())
                        .await
                    {
                        missing.push((text.to_owned(), requirement));
                    }
                }
            }
        }
        if missing.is_empty() && unparsable.is_empty() {
            return Ok(());
        }
        if let Some(quota_bytes) = auto_install
            && unparsable.is_empty()
        {
            let env = mounted.map(|venv| venv.name);
            for (_, requirement) in missing {
                self.install(registry, env.as_deref(), requirement, quota_bytes)
                    .await?;
            }
            registry
                .reload(alias)
                .await
                .map_err(|err| RequirementsError::Install(InstallError::Registry(err)))?;
            return Ok(());
        }
        let names = missing
            .into_iter()
            .map(|(text, _)| text)
            .chain(
                unparsable
                    .iter()
                    .map(|text| format!("{text} (not a valid requirement)")),
            )
            .collect();
        Err(RequirementsError::Missing(names))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requirements_split_into_name_and_specifier() {
        assert_eq!(split_requirement("requests"), ("requests", None));
        assert_eq!(
            split_requirement(" attrs >=22, <24 "),
            ("attrs", Some(">=22, <24"))
        );
        assert_eq!(
            split_requirement("a_b.c-d==1.0"),
            ("a_b.c-d", Some("==1.0"))
        );
        // Markers and extras are left in the specifier, where parse_requirement refuses them.
        assert_eq!(split_requirement("x; os_name"), ("x", Some("; os_name")));
    }
}
