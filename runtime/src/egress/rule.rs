//! Matching a request's URL against a tenant's rules.

use crate::config::egress::{HostPattern, Pattern, Rule};

/// A rule, parsed once.
#[derive(Debug, Clone)]
pub struct Compiled {
    pub rule: Rule,
    pub pattern: Pattern,
}

impl Compiled {
    pub fn new(rule: &Rule) -> Result<Self, String> {
        Ok(Self {
            pattern: Pattern::parse(&rule.url)?,
            rule: rule.clone(),
        })
    }

    /// Whether the rule covers `url` (any method).
    pub fn covers(&self, url: &reqwest::Url) -> bool {
        let p = &self.pattern;
        if url.scheme() != p.scheme || url.port_or_known_default() != Some(p.port) {
            return false;
        }
        let host_ok = match (&p.host, url.host()) {
            (HostPattern::Name(name), Some(url::Host::Domain(host))) => host == name,
            (HostPattern::Below(domain), Some(url::Host::Domain(host))) => host
                .strip_suffix(domain.as_str())
                .is_some_and(|label| label.len() > 1 && label.ends_with('.')),
            (HostPattern::Address(address), Some(url::Host::Ipv4(ip))) => *address == ip,
            (HostPattern::Address(address), Some(url::Host::Ipv6(ip))) => *address == ip,
            _ => false,
        };
        let path = url.path();
        host_ok
            && if p.prefix {
                path.starts_with(&p.path)
            } else {
                path == p.path
            }
    }

    pub fn allows_method(&self, method: &str) -> bool {
        self.rule.methods.iter().any(|m| m == method)
    }

    /// Whether the rule names `ip` itself as its host.
    pub fn names_address(&self, ip: std::net::IpAddr) -> bool {
        self.pattern.host == HostPattern::Address(ip)
    }
}

/// The rule that allows `method` on `url`, or why there is none.
pub fn find<'a>(
    rules: &'a [Compiled],
    method: &str,
    url: &reqwest::Url,
) -> Result<&'a Compiled, String> {
    let covering: Vec<&Compiled> = rules.iter().filter(|r| r.covers(url)).collect();
    if covering.is_empty() {
        let host = url.host_str().unwrap_or("");
        return Err(format!(
            "no rule allows {}://{host}{}",
            url.scheme(),
            url.path()
        ));
    }
    covering
        .iter()
        .find(|r| r.allows_method(method))
        .copied()
        .ok_or_else(|| {
            format!(
                "method {method} is not allowed by rule {:?}",
                covering[0].rule.url
            )
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rules(patterns: &[(&str, &[&str])]) -> Vec<Compiled> {
        patterns
            .iter()
            .map(|(url, methods)| {
                Compiled::new(&Rule {
                    url: (*url).to_owned(),
                    methods: methods.iter().map(|m| (*m).to_owned()).collect(),
                    auth: None,
                })
                .expect("a rule")
            })
            .collect()
    }

    fn url(text: &str) -> reqwest::Url {
        reqwest::Url::parse(text).expect("a url")
    }

    #[test]
    fn hosts_ports_and_paths_match_as_written() {
        let set = rules(&[
            ("https://api.example.com/v1/*", &["GET"]),
            ("https://*.example.org/*", &["GET", "POST"]),
            ("http://127.0.0.1:8080/exact", &["GET"]),
        ]);
        for (allowed, method) in [
            ("https://api.example.com/v1/x?q=1", "GET"),
            ("https://API.example.com:443/v1/", "GET"),
            ("https://a.example.org/", "POST"),
            ("https://a.b.example.org/z", "GET"),
            ("http://127.0.0.1:8080/exact", "GET"),
        ] {
            assert!(find(&set, method, &url(allowed)).is_ok(), "{allowed}");
        }
        for (refused, method, why) in [
            ("https://api.example.com/v2/x", "GET", "no rule"),
            ("https://api.example.com/v1/../v2/x", "GET", "no rule"),
            ("https://api.example.com/v1%2F..%2Fv2", "GET", "no rule"),
            ("http://api.example.com/v1/x", "GET", "no rule"),
            ("https://api.example.com:8443/v1/x", "GET", "no rule"),
            ("https://evil-api.example.com/v1/x", "GET", "no rule"),
            ("https://api.example.com.evil.net/v1/x", "GET", "no rule"),
            ("https://example.org/", "GET", "no rule"),
            ("https://aexample.org/", "GET", "no rule"),
            ("http://127.0.0.1:8080/exact/more", "GET", "no rule"),
            ("http://127.0.0.2:8080/exact", "GET", "no rule"),
            ("https://api.example.com/v1/x", "POST", "method POST"),
        ] {
            let err = find(&set, method, &url(refused)).expect_err(refused);
            assert!(err.contains(why), "{refused}: {err}");
        }
    }
}
