//! Reading pip's failure output. A pure function over the text, so it is testable with
//! captured samples (see the tests, taken from pip 23.2 against PyPI and local wheels).
//!
//! Anything returned here may reach a client, so names, versions and reasons are re-checked
//! against small character sets and shortened; the raw output only goes to the logs.

use crate::normalize_name;

/// What went wrong, as far as pip's output tells.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PipFailure {
    /// The index could not be reached (DNS, refused/unreachable connection, proxy, TLS).
    NoNetwork,
    /// pip found no acceptable distribution for one requirement (the requested package or
    /// one of its dependencies).
    NoMatch(NoMatch),
    /// A distribution exists, but not for the sandbox's Python version.
    UnsupportedPython { name: String },
    /// The dependencies cannot be satisfied together (or clash with the built-in versions).
    Conflict { causes: Vec<String> },
    /// Anything else, with a short sanitized reason.
    Other { reason: String },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NoMatch {
    /// PEP 503-normalized name of the requirement pip could not satisfy.
    pub name: String,
    /// Its specifier as pip printed it (e.g. `==0.0.1`, `<2,>=1.20`), if any.
    pub specifier: Option<String>,
    /// pip's "from versions:" list: versions that have a wheel pip could use (for the
    /// sandbox's pure-Python target), oldest first.
    pub versions: Vec<String>,
    /// pip said it ignored some versions because of their `Requires-Python`.
    pub python_mismatch: bool,
}

/// Substrings that mean the index was not reachable. Several appear in pip's retry warnings
/// (`NewConnectionError(... Failed to establish a new connection: [Errno -2] Name or service
/// not known)`), others in the final "Could not fetch URL" line.
const NETWORK_MARKERS: [&str; 14] = [
    "NewConnectionError",
    "Failed to establish a new connection",
    "Temporary failure in name resolution",
    "Name or service not known",
    "nodename nor servname provided",
    "Network is unreachable",
    "No route to host",
    "ProxyError",
    "ConnectTimeoutError",
    "Connection to pypi.org timed out",
    "Read timed out",
    "SSLError",
    "CERTIFICATE_VERIFY_FAILED",
    "Connection refused",
];

const MAX_CAUSES: usize = 5;
const MAX_REASON: usize = 160;

/// Classifies the combined stdout and stderr of a failed `pip download`.
pub fn classify(output: &str) -> PipFailure {
    let no_match = find_no_match(output);
    // A non-empty version list proves the index answered, whatever retries happened before.
    if let Some(m) = &no_match
        && !m.versions.is_empty()
    {
        return PipFailure::NoMatch(m.clone());
    }
    if output.contains("ResolutionImpossible") || output.contains("conflicting dependencies") {
        return PipFailure::Conflict {
            causes: conflict_causes(output),
        };
    }
    if NETWORK_MARKERS.iter().any(|m| output.contains(m))
        || (output.contains("Could not fetch URL") && output.contains("connection"))
    {
        return PipFailure::NoNetwork;
    }
    if let Some(name) = python_refusal(output) {
        return PipFailure::UnsupportedPython { name };
    }
    if let Some(m) = no_match {
        return PipFailure::NoMatch(m);
    }
    PipFailure::Other {
        reason: other_reason(output),
    }
}

fn find_no_match(output: &str) -> Option<NoMatch> {
    const COULD_NOT: &str = "Could not find a version that satisfies the requirement ";
    const NO_MATCHING: &str = "No matching distribution found for ";
    const FROM_VERSIONS: &str = " (from versions: ";

    let could_not = output.lines().rev().find_map(|l| {
        let rest = &l[l.find(COULD_NOT)? + COULD_NOT.len()..];
        let cut = rest.find(FROM_VERSIONS)?;
        let list = rest[cut + FROM_VERSIONS.len()..]
            .trim_end()
            .strip_suffix(')')?;
        Some((&rest[..cut], list))
    });
    let no_matching = output.lines().rev().find_map(|l| {
        let at = l.find(NO_MATCHING)?;
        Some(l[at + NO_MATCHING.len()..].trim())
    });
    // "No matching distribution found for X" names the requirement cleanly; the other line may
    // add " (from parent)".
    let requirement = no_matching.or(could_not.map(|(req, _)| req))?;
    let (name, specifier) = split_requirement(requirement)?;
    let versions = match could_not {
        Some((_, list)) if list.trim() != "none" => list
            .split(',')
            .map(str::trim)
            .filter(|v| is_version_text(v))
            .map(str::to_string)
            .collect(),
        _ => Vec::new(),
    };
    Some(NoMatch {
        name,
        specifier,
        versions,
        python_mismatch: output.contains("require a different python version"),
    })
}

/// `name[extras]<spec> (from parent)` → (normalized name, spec without spaces).
fn split_requirement(text: &str) -> Option<(String, Option<String>)> {
    let text = text.split(" (from ").next().unwrap_or(text).trim();
    let end = text
        .find(|c: char| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-')))
        .unwrap_or(text.len());
    let name = normalize_name(&text[..end]).ok()?;
    let mut rest = &text[end..];
    if rest.starts_with('[') {
        rest = rest.find(']').map_or("", |close| &rest[close + 1..]);
    }
    let rest = rest.split(';').next().unwrap_or("");
    let spec: String = rest.chars().filter(|c| !c.is_whitespace()).collect();
    let spec_ok = !spec.is_empty()
        && spec.len() <= 100
        && spec
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b".*+!=<>~,".contains(&b));
    Some((name, spec_ok.then_some(spec)))
}

fn is_version_text(v: &str) -> bool {
    !v.is_empty()
        && v.len() <= 64
        && v.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'+' | b'!' | b'_' | b'-'))
}

/// `ERROR: Package 'oldpy' requires a different Python: 3.15.0 not in '<3.12'`
fn python_refusal(output: &str) -> Option<String> {
    output.lines().find_map(|l| {
        let rest = &l[l.find("Package '")? + "Package '".len()..];
        let (name, tail) = rest.split_once('\'')?;
        tail.contains("requires a different Python")
            .then(|| normalize_name(name).ok())
            .flatten()
    })
}

/// The indented lines after "The conflict is caused by:", e.g.
/// `The user requested numpy<2` / `The user requested (constraint) numpy==2.5.2`.
fn conflict_causes(output: &str) -> Vec<String> {
    let mut causes = Vec::new();
    let mut lines = output
        .lines()
        .skip_while(|l| !l.contains("The conflict is caused by:"));
    lines.next();
    for line in lines {
        let line = line.trim();
        if line.is_empty() || causes.len() == MAX_CAUSES {
            break;
        }
        // Our constraints file pins the interpreter's built-in distributions.
        let line = match line.strip_prefix("The user requested (constraint) ") {
            Some(pin) => format!("{pin} is built into the sandbox"),
            None => line.replace("The user requested ", "requested "),
        };
        if let Some(clean) = sanitize(&line) {
            causes.push(clean);
        }
    }
    causes
}

/// The last `ERROR:` line, with anything path- or URL-like removed.
fn other_reason(output: &str) -> String {
    output
        .lines()
        .rev()
        .find_map(|l| l.trim().strip_prefix("ERROR: "))
        .and_then(|l| {
            let words: Vec<&str> = l
                .split_whitespace()
                .map(|w| if w.contains(['/', '\\']) { "[…]" } else { w })
                .collect();
            sanitize(&words.join(" "))
        })
        .unwrap_or_else(|| "pip exited with an error".to_string())
}

/// Printable ASCII only, shortened; `None` if nothing is left.
fn sanitize(text: &str) -> Option<String> {
    let mut clean: String = text
        .chars()
        .map(|c| {
            if c == '…' || (c.is_ascii() && !c.is_ascii_control()) {
                c
            } else {
                '?'
            }
        })
        .collect();
    if clean.chars().count() > MAX_REASON {
        clean = clean.chars().take(MAX_REASON - 3).collect::<String>() + "...";
    }
    let clean = clean.trim().trim_end_matches('.').to_string();
    (!clean.is_empty()).then_some(clean)
}

#[cfg(test)]
mod tests {
    use super::*;

    // Captured from pip 23.2.1 with `--only-binary=:all: --platform any --implementation py
    // --abi none --python-version 3.15`.
    const ASTROPY: &str = "\
ERROR: Could not find a version that satisfies the requirement astropy (from versions: none)
ERROR: No matching distribution found for astropy
";
    const ATTRS_OLD: &str = "\
ERROR: Could not find a version that satisfies the requirement attrs==0.0.1 (from versions: 15.1.0, 15.2.0, 16.0.0, 16.1.0, 16.2.0, 16.3.0, 17.1.0, 17.2.0, 17.3.0, 17.4.0, 18.1.0, 18.2.0, 19.1.0, 19.2.0, 19.3.0, 20.1.0, 20.2.0, 20.3.0, 21.1.0, 21.2.0, 21.3.0, 21.4.0, 22.1.0, 22.2.0, 23.1.0, 23.2.0, 24.1.0, 24.2.0, 24.3.0, 25.1.0, 25.2.0, 25.3.0, 25.4.0, 26.1.0)
ERROR: No matching distribution found for attrs==0.0.1
";
    const MISSING: &str = "\
ERROR: Could not find a version that satisfies the requirement no-such-package-zzq-12345 (from versions: none)
ERROR: No matching distribution found for no-such-package-zzq-12345
";
    const REFUSED: &str = "\
Looking in indexes: http://127.0.0.1:9/simple
WARNING: Retrying (Retry(total=4, connect=None, read=None, redirect=None, status=None)) after connection broken by 'NewConnectionError('<pip._vendor.urllib3.connection.HTTPConnection object at 0x7f5e2facbed0>: Failed to establish a new connection: [Errno 111] Connection refused')': /simple/iniconfig/
WARNING: Retrying (Retry(total=0, connect=None, read=None, redirect=None, status=None)) after connection broken by 'NewConnectionError('<pip._vendor.urllib3.connection.HTTPConnection object at 0x7f5e2fae8990>: Failed to establish a new connection: [Errno 111] Connection refused')': /simple/iniconfig/
ERROR: Could not find a version that satisfies the requirement iniconfig (from versions: none)
ERROR: No matching distribution found for iniconfig
";
    const DNS: &str = "\
WARNING: Retrying (Retry(total=0, connect=None, read=None, redirect=None, status=None)) after connection broken by 'NewConnectionError('<pip._vendor.urllib3.connection.HTTPSConnection object at 0x7f25a648f190>: Failed to establish a new connection: [Errno -2] Name or service not known')': /simple/iniconfig/
ERROR: Could not find a version that satisfies the requirement iniconfig (from versions: none)
ERROR: No matching distribution found for iniconfig
";
    const PROXY: &str = "\
WARNING: Retrying (Retry(total=0, connect=None, read=None, redirect=None, status=None)) after connection broken by 'ProxyError('Cannot connect to proxy.', NewConnectionError('<pip._vendor.urllib3.connection.HTTPSConnection object at 0x7fdf14bf6510>: Failed to establish a new connection: [Errno 111] Connection refused'))': /simple/iniconfig/
ERROR: Could not find a version that satisfies the requirement iniconfig (from versions: none)
ERROR: No matching distribution found for iniconfig
";
    const FETCH_URL: &str = "\
WARNING: Retrying (Retry(total=0, connect=None, read=None, redirect=None, status=None)) after connection broken by 'SSLError(SSLCertVerificationError(1, '[SSL: CERTIFICATE_VERIFY_FAILED] certificate verify failed: self-signed certificate in certificate chain (_ssl.c:1006)'))': /simple/iniconfig/
Could not fetch URL https://pypi.org/simple/iniconfig/: There was a problem confirming the ssl certificate: HTTPSConnectionPool(host='pypi.org', port=443): Max retries exceeded with url: /simple/iniconfig/ - skipping
ERROR: Could not find a version that satisfies the requirement iniconfig (from versions: none)
ERROR: No matching distribution found for iniconfig
";
    const DEPENDENCY: &str = "\
Looking in links: /tmp/local
Processing ./local/demo_pkg-1.0-py3-none-any.whl
INFO: pip is looking at multiple versions of demo-pkg to determine which version is compatible with other requirements. This could take a while.
ERROR: Could not find a version that satisfies the requirement native-dep (from demo-pkg) (from versions: none)
ERROR: No matching distribution found for native-dep
";
    const BUILT_IN_TOO_OLD: &str = "\
Looking in links: /tmp/scriptbox-pip-x/builtin
ERROR: Could not find a version that satisfies the requirement numpy<2 (from versions: 2.5.2)
ERROR: No matching distribution found for numpy<2
";
    const CONFLICT: &str = "\
Looking in links: /tmp/scriptbox-pip-x/builtin
ERROR: Cannot install numpy<2 because these package versions have conflicting dependencies.

The conflict is caused by:
    The user requested numpy<2
    The user requested (constraint) numpy==2.5.2

To fix this you could try to:
1. loosen the range of package versions you've specified
2. remove package versions to allow pip attempt to solve the dependency conflict

ERROR: ResolutionImpossible: for help visit https://pip.pypa.io/en/latest/topics/dependency-resolution/#dealing-with-dependency-conflicts
";
    const REQUIRES_PYTHON_LOCAL: &str = "\
Looking in links: /tmp/local
Processing ./local/oldpy-1.0-py3-none-any.whl
ERROR: Package 'oldpy' requires a different Python: 3.15.0 not in '<3.12'
";
    const REQUIRES_PYTHON_INDEX: &str = "\
ERROR: Ignored the following versions that require a different python version: 1.0 Requires-Python <3.12; 1.1 Requires-Python <3.13
ERROR: Could not find a version that satisfies the requirement oldpy (from versions: none)
ERROR: No matching distribution found for oldpy
";
    const DISK_FULL: &str = "\
Collecting iniconfig
ERROR: Could not install packages due to an OSError: [Errno 28] No space left on device: '/srv/tenants/abc/dl/iniconfig-2.3.1-py3-none-any.whl'
";

    fn no_match(output: &str) -> NoMatch {
        match classify(output) {
            PipFailure::NoMatch(m) => m,
            other => panic!("expected NoMatch, got {other:?}"),
        }
    }

    #[test]
    fn nothing_pure_on_the_index() {
        let m = no_match(ASTROPY);
        assert_eq!(
            (m.name.as_str(), m.specifier, m.versions.len()),
            ("astropy", None, 0)
        );
        let m = no_match(MISSING);
        assert_eq!(m.name, "no-such-package-zzq-12345");
        assert!(m.versions.is_empty());
    }

    #[test]
    fn version_not_found() {
        let m = no_match(ATTRS_OLD);
        assert_eq!(m.name, "attrs");
        assert_eq!(m.specifier.as_deref(), Some("==0.0.1"));
        assert_eq!(m.versions.len(), 34);
        assert_eq!(m.versions.first().map(String::as_str), Some("15.1.0"));
        assert_eq!(m.versions.last().map(String::as_str), Some("26.1.0"));
        let m = no_match(BUILT_IN_TOO_OLD);
        assert_eq!(
            (m.name.as_str(), m.specifier.as_deref()),
            ("numpy", Some("<2"))
        );
        assert_eq!(m.versions, vec!["2.5.2"]);
    }

    #[test]
    fn failing_dependency_is_named() {
        let m = no_match(DEPENDENCY);
        assert_eq!(
            (m.name.as_str(), m.specifier.as_deref()),
            ("native-dep", None)
        );
    }

    #[test]
    fn network_failures() {
        for sample in [REFUSED, DNS, PROXY, FETCH_URL] {
            assert_eq!(classify(sample), PipFailure::NoNetwork, "{sample}");
        }
    }

    #[test]
    fn conflicts() {
        assert_eq!(
            classify(CONFLICT),
            PipFailure::Conflict {
                causes: vec![
                    "requested numpy<2".to_string(),
                    "numpy==2.5.2 is built into the sandbox".to_string()
                ]
            }
        );
    }

    #[test]
    fn python_version() {
        assert_eq!(
            classify(REQUIRES_PYTHON_LOCAL),
            PipFailure::UnsupportedPython {
                name: "oldpy".into()
            }
        );
        let m = no_match(REQUIRES_PYTHON_INDEX);
        assert!(m.python_mismatch && m.versions.is_empty());
    }

    #[test]
    fn other_failures_keep_no_paths() {
        let PipFailure::Other { reason } = classify(DISK_FULL) else {
            panic!("expected Other");
        };
        assert!(!reason.contains("/srv"), "{reason}");
        assert!(reason.contains("No space left on device"), "{reason}");
        assert_eq!(
            classify("something odd\n"),
            PipFailure::Other {
                reason: "pip exited with an error".into()
            }
        );
    }

    #[test]
    fn requirements_are_split_and_sanitized() {
        assert_eq!(
            split_requirement("Foo_Bar[extra]<2,>=1.20 (from demo-pkg==1.0)"),
            Some(("foo-bar".into(), Some("<2,>=1.20".into())))
        );
        assert_eq!(
            split_requirement("x; python_version < '4'"),
            Some(("x".into(), None))
        );
        assert_eq!(split_requirement("x>=1 $(id)"), Some(("x".into(), None)));
        assert_eq!(split_requirement("-x"), None);
    }
}
