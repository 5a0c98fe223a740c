//! Distributions compiled into the sandbox's interpreter.
//!
//! For these, installPackage answers "already available" instead of downloading anything, and
//! [`crate::Fetcher`] pins them for pip (stand-in wheels plus a constraints file), so that a
//! pure-Python package depending on e.g. numpy resolves against the built-in copy instead of
//! failing (numpy has no pure-Python wheel) or making pip backtrack to an ancient release.

/// `(PEP 503-normalized name, version)`, sorted by name.
///
/// Taken from the `*.dist-info` directories at the top level of
/// `python-wasm/dist/python-stdlib.zip` (the interpreter's `lib/python315.zip`; the same list of
/// `package` lines appears in `python-wasm/dist/MANIFEST`, which additionally names C libraries
/// and build-only tools such as zlib, openblas, pybind11 and cppy that are not importable
/// distributions). The test `matches_the_interpreter_zip` re-checks it against the zip when the
/// artifacts are present; update both together when the interpreter is rebuilt.
pub const BUILT_IN: &[(&str, &str)] = &[
    ("attrs", "26.1.0"),
    ("beautifulsoup4", "4.15.0"),
    ("charset-normalizer", "3.5.2"),
    ("cloudpickle", "3.1.2"),
    ("contourpy", "1.4.0"),
    ("cycler", "0.12.1"),
    ("defusedxml", "0.7.1"),
    ("et-xmlfile", "2.0.0"),
    ("fonttools", "4.67.0"),
    ("formulaic", "1.2.2"),
    ("html5lib", "1.1"),
    ("interface-meta", "2.0.1"),
    ("jinja2", "3.1.6"),
    ("joblib", "1.6.0"),
    ("kiwisolver", "1.5.1"),
    ("lxml", "6.1.3"),
    ("markupsafe", "3.0.4"),
    ("matplotlib", "3.11.2"),
    ("more-itertools", "11.2.1"),
    ("mpmath", "1.3.0"),
    ("narwhals", "2.27.1"),
    ("networkx", "3.7"),
    ("numpy", "2.5.2"),
    ("openpyxl", "3.1.5"),
    ("packaging", "26.3"),
    ("pandas", "3.0.6"),
    ("patsy", "1.0.3"),
    ("pillow", "13.0.0"),
    ("pyparsing", "3.3.3"),
    ("pypdf", "6.21.1"),
    ("python-dateutil", "2.9.0.post0"),
    ("pyyaml", "6.0.3"),
    ("regex", "2026.9.29"),
    ("reportlab", "5.0.1"),
    ("scikit-learn", "1.9.1"),
    ("scipy", "1.18.1"),
    ("seaborn", "0.13.2"),
    ("six", "1.17.0"),
    ("soupsieve", "3.0.3"),
    ("statsmodels", "0.15.0"),
    ("sympy", "1.14.0"),
    ("tabulate", "0.10.0"),
    ("threadpoolctl", "3.7.0"),
    ("tomli-w", "1.2.0"),
    ("toolz", "1.2.0"),
    ("tqdm", "4.70.1"),
    ("typing-extensions", "4.16.0"),
    ("tzdata", "2026.5"),
    ("webencodings", "0.6.1"),
    ("wrapt", "2.5.1"),
    ("xlrd", "2.0.2"),
    ("xlsxwriter", "3.2.9"),
    ("xmltodict", "1.0.4"),
];

/// Whether a distribution (PEP 503-normalized name, see [`crate::normalize_name`]) is compiled
/// into the sandbox's interpreter.
pub fn built_in(name_normalized: &str) -> bool {
    built_in_version(name_normalized).is_some()
}

/// The version of a built-in distribution, by PEP 503-normalized name.
pub fn built_in_version(name_normalized: &str) -> Option<&'static str> {
    BUILT_IN
        .binary_search_by(|(name, _)| (*name).cmp(name_normalized))
        .ok()
        .map(|i| BUILT_IN[i].1)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::normalize_name;
    use std::path::Path;

    #[test]
    fn list_is_sorted_normalized_and_unique() {
        for pair in BUILT_IN.windows(2) {
            assert!(pair[0].0 < pair[1].0, "{pair:?}");
        }
        for (name, _) in BUILT_IN {
            assert_eq!(normalize_name(name).unwrap(), *name);
        }
    }

    #[test]
    fn lookups() {
        for name in [
            "numpy",
            "pandas",
            "scipy",
            "matplotlib",
            "scikit-learn",
            "six",
            "attrs",
        ] {
            assert!(built_in(name), "{name}");
        }
        assert_eq!(built_in_version("python-dateutil"), Some("2.9.0.post0"));
        assert!(built_in(&normalize_name("Scikit_Learn").unwrap()));
        assert!(built_in(&normalize_name("typing_extensions").unwrap()));
        assert!(built_in(&normalize_name("PyYAML").unwrap()));
        // Build-only tools and C libraries from the MANIFEST are not importable distributions.
        for name in [
            "pybind11", "cppy", "zlib", "openblas", "requests", "astropy", "", "sklearn",
        ] {
            assert!(!built_in(name), "{name}");
        }
    }

    /// Re-derives the list from the interpreter's zip when the build artifacts are present.
    #[test]
    fn matches_the_interpreter_zip() {
        let zip_path =
            Path::new(env!("CARGO_MANIFEST_DIR")).join("../../python-wasm/dist/python-stdlib.zip");
        let Ok(file) = std::fs::File::open(&zip_path) else {
            eprintln!("skipped: {} is not present", zip_path.display());
            return;
        };
        let archive = zip::ZipArchive::new(file).unwrap();
        let mut found: Vec<(String, String)> = archive
            .file_names()
            .filter_map(|n| {
                let n = n.ok()?;
                let top = n.split('/').next()?;
                let stem = top.strip_suffix(".dist-info")?;
                let (name, version) = stem.split_once('-')?;
                Some((normalize_name(name).ok()?, version.to_string()))
            })
            .collect();
        found.sort();
        found.dedup();
        let expected: Vec<(String, String)> = BUILT_IN
            .iter()
            .map(|(n, v)| (n.to_string(), v.to_string()))
            .collect();
        assert_eq!(found, expected);
    }
}
