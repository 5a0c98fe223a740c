//! The grammars of the names clients and operators write: aliases, script names, function
//! and variable names, native module and function names. Script names become a file name and
//! a Python module name, so they are held to a strict grammar: no paths, no traversal,
//! nothing a shell or the import system would read specially. Pure checks: every layer may
//! use them (config validates the operator's names with them).

/// Longest alias, script or function name.
pub const MAX_NAME: usize = 64;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NameError {
    #[error("{what} must be 1 to {MAX_NAME} characters")]
    Length { what: &'static str },
    #[error("{what} may only hold letters, digits and {allowed}")]
    Characters {
        what: &'static str,
        allowed: &'static str,
    },
    #[error(
        "{what} must be a Python identifier (letters, digits, underscores; not starting with a digit)"
    )]
    NotIdentifier { what: &'static str },
    #[error("{what} may not be a Python keyword")]
    Keyword { what: &'static str },
    #[error("function_name may not start with an underscore (private names are not callable)")]
    Private,
    #[error("variable_name may not start with two underscores (interpreter internals)")]
    Dunder,
}

const KEYWORDS: &[&str] = &[
    "False", "None", "True", "and", "as", "assert", "async", "await", "break", "class", "continue",
    "def", "del", "elif", "else", "except", "finally", "for", "from", "global", "if", "import",
    "in", "is", "lambda", "nonlocal", "not", "or", "pass", "raise", "return", "try", "while",
    "with", "yield",
];

fn check_length(what: &'static str, name: &str) -> Result<(), NameError> {
    if name.is_empty() || name.len() > MAX_NAME {
        return Err(NameError::Length { what });
    }
    Ok(())
}

fn check_identifier(what: &'static str, name: &str) -> Result<(), NameError> {
    check_length(what, name)?;
    let mut chars = name.chars();
    let first_ok = chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_');
    if !first_ok || !chars.all(|c| c.is_ascii_alphanumeric() || c == '_') {
        return Err(NameError::NotIdentifier { what });
    }
    if KEYWORDS.contains(&name) {
        return Err(NameError::Keyword { what });
    }
    Ok(())
}

/// A tool alias: letters, digits, `_`, `-`, `.` (not leading).
pub fn check_alias(alias: &str) -> Result<(), NameError> {
    check_length("alias", alias)?;
    let ok = alias
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'))
        && !alias.starts_with('.');
    if !ok {
        return Err(NameError::Characters {
            what: "alias",
            allowed: "'_', '-', '.' (not first)",
        });
    }
    Ok(())
}

/// A script name: a Python module name (`my_tool` for `scripts/my_tool.py`).
pub fn check_script(name: &str) -> Result<(), NameError> {
    check_identifier("script_name", name)
}

/// A public function name.
pub fn check_function(name: &str) -> Result<(), NameError> {
    check_identifier("function_name", name)?;
    if name.starts_with('_') {
        return Err(NameError::Private);
    }
    Ok(())
}

/// A module variable a client may read or write: an identifier, not a dunder (`__dict__`,
/// `__builtins__` and friends are the interpreter's, not the tool's).
pub fn check_variable(name: &str) -> Result<(), NameError> {
    check_identifier("variable_name", name)?;
    if name.starts_with("__") {
        return Err(NameError::Dunder);
    }
    Ok(())
}

/// A guest path at or below one of `roots` (guest mount points such as `/scripts`), of
/// safe characters and without `.`, `..` or empty segments, trailing slashes dropped: the
/// path as it is then kept, or `None`.
pub fn granted_guest_path(path: &str, roots: &[&str]) -> Option<String> {
    let trimmed = path.trim_end_matches('/');
    let safe = (1..=256).contains(&trimmed.len())
        && trimmed
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.' | b'/'));
    let rest = trimmed.strip_prefix('/').filter(|_| safe)?;
    let mut segments = rest.split('/');
    let root = segments.next().unwrap_or_default();
    if !roots
        .iter()
        .any(|mount| mount.trim_start_matches('/') == root)
    {
        return None;
    }
    if segments.any(|s| s.is_empty() || s == "." || s == "..") {
        return None;
    }
    Some(trimmed.to_owned())
}

/// A node's id: 1-64 of `[A-Za-z0-9_.-]`.
pub fn is_node_id(id: &str) -> bool {
    (1..=64).contains(&id.len())
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'))
}

/// A native module's name: 1-64 of `[a-z0-9_]`, starting with a letter.
pub fn is_native_module(name: &str) -> bool {
    (1..=64).contains(&name.len())
        && name.starts_with(|c: char| c.is_ascii_lowercase())
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
}

/// A native module's function name: a C identifier of 1-64 characters.
pub fn is_native_function(function: &str) -> bool {
    (1..=64).contains(&function.len())
        && function.starts_with(|c: char| c.is_ascii_alphabetic() || c == '_')
        && function
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn script_names_reject_paths_and_traversal() {
        for bad in [
            "",
            "../etc/passwd",
            "a/b",
            "a.b",
            "1abc",
            "class",
            "x y",
            "é",
            &"a".repeat(65),
        ] {
            assert!(check_script(bad).is_err(), "{bad:?} must be refused");
        }
        for good in ["astronomy_tool", "_private_ok", "A1"] {
            assert!(check_script(good).is_ok(), "{good:?} must be accepted");
        }
    }

    #[test]
    fn aliases_and_functions() {
        assert!(check_alias("astro").is_ok());
        assert!(check_alias("my-tool.v2").is_ok());
        assert!(check_alias(".hidden").is_err());
        assert!(check_alias("a/b").is_err());
        assert!(check_function("add").is_ok());
        assert_eq!(check_function("__init__"), Err(NameError::Private));
        assert!(check_function("os.system").is_err());
        assert!(check_variable("counter").is_ok());
        assert!(check_variable("_cache").is_ok());
        assert_eq!(check_variable("__builtins__"), Err(NameError::Dunder));
        assert!(check_variable("a.b").is_err());
    }
}
