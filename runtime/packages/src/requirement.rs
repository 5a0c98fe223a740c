//! Validating what a client asks for before pip ever sees it.
//!
//! pip's own requirement syntax is far richer than we need (URLs, markers, extras, editable
//! installs, and anything starting with `-` is an option). We accept a deliberately small
//! subset, so the single argv entry handed to pip can only mean "this distribution, these
//! versions".

use crate::PackageError;

/// Longest accepted package name and version field, in bytes.
const MAX_LEN: usize = 100;
/// Most comma-separated clauses in a version specifier.
const MAX_CLAUSES: usize = 10;
/// PEP 440 comparison operators, longest first so `===` is not read as `==` + `=…`.
const OPERATORS: [&str; 8] = ["===", "==", "!=", "<=", ">=", "~=", "<", ">"];

const NAME_RULE: &str = "the `name` field may contain only ASCII letters, digits, '.', '_' and '-', \
     must start and end with a letter or digit, and may be at most 100 characters long";
const VERSION_RULE: &str = "the `version` field must be a version such as 1.2.3, or comma-separated \
     clauses such as >=1.0,<2, each an operator (==, !=, <=, >=, <, >, ~=, ===) directly followed \
     by a version made of letters, digits and . * + ! (at most 10 clauses, 100 characters)";

/// A validated request: a normalized distribution name and an optional specifier.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Requirement {
    /// The PEP 503-normalized name (`Foo_Bar` → `foo-bar`).
    pub name: String,
    /// A PEP 440 specifier list without spaces, e.g. `>=22,<24`; a bare version was turned into
    /// `==version`.
    pub specifier: Option<String>,
}

impl Requirement {
    /// The single argv entry given to pip, e.g. `attrs>=22,<24`.
    pub fn pip_arg(&self) -> String {
        match &self.specifier {
            Some(spec) => format!("{}{}", self.name, spec),
            None => self.name.clone(),
        }
    }
}

/// Checks a client's `name` and optional `version` and builds a [`Requirement`].
pub fn parse_requirement(name: &str, version: Option<&str>) -> Result<Requirement, PackageError> {
    let name = normalize_name(name)?;
    let specifier = match version {
        None => None,
        Some(v) => parse_specifier(v)?,
    };
    Ok(Requirement { name, specifier })
}

/// Validates a PEP 508 distribution name and returns its PEP 503 normal form: lowercase, with
/// every run of `-`, `_` and `.` replaced by a single `-`.
pub fn normalize_name(name: &str) -> Result<String, PackageError> {
    if !is_valid_name(name) {
        let mut reason = NAME_RULE.to_string();
        // The commonest mistake is `pkg==1.0` in the name field; say where that goes.
        if name.contains(['=', '<', '>', '~', '!']) {
            reason.push_str("; put version constraints in the `version` field");
        }
        return Err(PackageError::InvalidName { reason });
    }
    let mut out = String::with_capacity(name.len());
    let mut in_separator_run = false;
    for c in name.chars() {
        if matches!(c, '-' | '_' | '.') {
            if !in_separator_run {
                out.push('-');
            }
            in_separator_run = true;
        } else {
            out.push(c.to_ascii_lowercase());
            in_separator_run = false;
        }
    }
    Ok(out)
}

/// `^[A-Za-z0-9]([A-Za-z0-9._-]*[A-Za-z0-9])?$`, at most [`MAX_LEN`] bytes.
pub(crate) fn is_valid_name(name: &str) -> bool {
    let bytes = name.as_bytes();
    let (Some(first), Some(last)) = (bytes.first(), bytes.last()) else {
        return false;
    };
    bytes.len() <= MAX_LEN
        && first.is_ascii_alphanumeric()
        && last.is_ascii_alphanumeric()
        && bytes
            .iter()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
}

fn invalid_version(detail: &str) -> PackageError {
    PackageError::InvalidVersion {
        reason: format!("{detail}; {VERSION_RULE}"),
    }
}

/// Parses the `version` field. An empty (or all-blank) field means "any version".
fn parse_specifier(raw: &str) -> Result<Option<String>, PackageError> {
    if raw.len() > MAX_LEN {
        return Err(invalid_version("it is too long"));
    }
    // Only spaces and tabs are "whitespace around clauses"; a newline is always hostile here.
    let blank = |c: char| c == ' ' || c == '\t';
    if raw.trim_matches(blank).is_empty() {
        return Ok(None);
    }
    let clauses: Vec<&str> = raw.split(',').map(|c| c.trim_matches(blank)).collect();
    if clauses.len() > MAX_CLAUSES {
        return Err(invalid_version("it has too many clauses"));
    }
    // A single clause without an operator is a bare version: `1.2.3` means `==1.2.3`.
    if let [only] = clauses.as_slice()
        && only
            .chars()
            .next()
            .is_some_and(|c| c.is_ascii_alphanumeric())
    {
        check_version_text("==", only)?;
        return Ok(Some(format!("=={only}")));
    }
    let mut parts = Vec::with_capacity(clauses.len());
    for clause in clauses {
        if clause.is_empty() {
            return Err(invalid_version("it has an empty clause"));
        }
        let Some(op) = OPERATORS.iter().find(|op| clause.starts_with(**op)) else {
            return Err(invalid_version("a clause does not start with an operator"));
        };
        check_version_text(op, &clause[op.len()..])?;
        parts.push(clause);
    }
    Ok(Some(parts.join(",")))
}

fn check_version_text(op: &str, version: &str) -> Result<(), PackageError> {
    if version.is_empty() {
        return Err(invalid_version("an operator is not followed by a version"));
    }
    if !version
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'*' | b'+' | b'!'))
    {
        return Err(invalid_version(
            "it contains a character that is not allowed",
        ));
    }
    if !version.as_bytes()[0].is_ascii_alphanumeric() {
        return Err(invalid_version(
            "a version must start with a letter or digit",
        ));
    }
    // PEP 440 allows `*` only as a trailing `.*` prefix match after == or !=.
    if version.contains('*')
        && (!(op == "==" || op == "!=")
            || !version.ends_with(".*")
            || version.matches('*').count() > 1)
    {
        return Err(invalid_version(
            "'*' is allowed only as a trailing '.*' after == or !=",
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn ok(name: &str, version: Option<&str>) -> String {
        parse_requirement(name, version).unwrap().pip_arg()
    }

    fn name_err(name: &str) -> PackageError {
        parse_requirement(name, None).unwrap_err()
    }

    fn version_err(version: &str) -> PackageError {
        parse_requirement("attrs", Some(version)).unwrap_err()
    }

    #[test]
    fn names_are_normalized() {
        assert_eq!(ok("attrs", None), "attrs");
        assert_eq!(ok("Foo_Bar", None), "foo-bar");
        assert_eq!(ok("zope.interface", None), "zope-interface");
        assert_eq!(ok("a-_.-b", None), "a-b");
        assert_eq!(ok("X", None), "x");
        assert_eq!(ok("python-dateutil", None), "python-dateutil");
        assert_eq!(ok(&"a".repeat(100), None).len(), 100);
    }

    #[test]
    fn versions_are_accepted_and_compacted() {
        assert_eq!(ok("attrs", Some("1.2.3")), "attrs==1.2.3");
        assert_eq!(ok("attrs", Some(">=22,<24")), "attrs>=22,<24");
        assert_eq!(ok("attrs", Some(" >=22 , <24 ")), "attrs>=22,<24");
        assert_eq!(ok("attrs", Some("~=1.4")), "attrs~=1.4");
        assert_eq!(ok("attrs", Some("==1.*")), "attrs==1.*");
        assert_eq!(ok("attrs", Some("!=1.5")), "attrs!=1.5");
        assert_eq!(ok("attrs", Some("===1.0+local")), "attrs===1.0+local");
        assert_eq!(ok("attrs", Some("1!2.0rc1")), "attrs==1!2.0rc1");
        assert_eq!(ok("attrs", Some("")), "attrs");
        assert_eq!(ok("attrs", Some("  ")), "attrs");
        let ten = [">=1"; 10].join(",");
        assert_eq!(ok("attrs", Some(&ten)), format!("attrs{ten}"));
    }

    #[test]
    fn hostile_names_are_refused() {
        for bad in [
            "requests; rm -rf /",
            "--index-url=http://evil",
            "-e",
            "-r/etc/passwd",
            "a b",
            "x==1",
            "x>=1",
            "pkg @ https://evil/pkg.whl",
            "https://evil/pkg.whl",
            "git+https://evil/x",
            "pkg\nfoo",
            "pkg\n",
            "pkg`id`",
            "$(id)",
            "pkg|id",
            "pkg&&id",
            "pkg[extra]",
            "../pkg",
            "/abs",
            "",
            "-",
            "pkg-",
            ".pkg",
            "pkg\0",
            "pkg\u{e9}",
            &"a".repeat(101),
        ] {
            let err = name_err(bad);
            assert_eq!(err.code(), "invalid_package_name", "{bad:?}");
            assert!(err.to_string().contains("`name` field"), "{err}");
        }
        assert!(name_err("x==1").to_string().contains("`version` field"));
    }

    #[test]
    fn hostile_versions_are_refused() {
        for bad in [
            "1.0; rm -rf /",
            ">= 1.0",
            "1.0 2.0",
            "--index-url=http://evil",
            "-1",
            "@ https://evil",
            "1.0\n",
            "1.0\r\n--pre",
            "==1.0;python_version<'4'",
            "$(id)",
            "1.0`id`",
            "==",
            ">=1,",
            ",>=1",
            ">=1,,<2",
            "=1.0",
            ">=1.*",
            "==1.*.*",
            "==*",
            "==1*",
            "1.0-post1",
            "^1.0",
            "1.0,2.0",
            &[">=1"; 11].join(","),
            &format!("=={}", "1".repeat(100)),
        ] {
            let err = version_err(bad);
            assert_eq!(err.code(), "invalid_version", "{bad:?}");
            assert!(err.to_string().contains("`version` field"), "{err}");
        }
    }
}
