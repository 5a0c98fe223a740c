//! A tenant's outbound HTTP policy (`[tenants.policy.egress]`, or `policy.egress` through
//! the admin API): which URLs its tools may reach through `scriptbox.http`, with which
//! methods and credentials, and how much. Deny all by default. Parsed and checked here; the
//! matching and the address checks are the egress module's.

use anyhow::{bail, ensure};
use serde::{Deserialize, Serialize};

/// Most rules per tenant.
pub const MAX_RULES: usize = 256;
/// Longest rule pattern.
pub const MAX_PATTERN: usize = 2048;

#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct Egress {
    /// What may be reached; empty (the default): nothing.
    pub allow: Vec<Rule>,
    /// Requests one call may make (redirects followed count as requests).
    pub requests_per_call: u32,
    /// Requests the tenant's tools may make per minute, all together, on this node.
    pub requests_per_minute: u32,
    /// Largest response body of one request.
    pub response_bytes: u64,
    /// Response bytes one call may receive in all.
    pub call_bytes: u64,
    /// Largest request body.
    pub request_bytes: u64,
    /// The longest one request may take (it also counts against the call's deadline).
    pub timeout_ms: u64,
}

impl Default for Egress {
    fn default() -> Self {
        Self {
            allow: Vec::new(),
            requests_per_call: 20,
            requests_per_minute: 600,
            response_bytes: 8 << 20,
            call_bytes: 32 << 20,
            request_bytes: 1 << 20,
            timeout_ms: 10_000,
        }
    }
}

/// One allowance: a URL pattern, the methods it allows, and a credential the host adds.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Rule {
    /// `scheme://host[:port]/path`: scheme `http` or `https`; a host name, an address
    /// (`127.0.0.1`, `[::1]`), or `*.` and a domain (any name below it, not the domain
    /// itself); the port, or the scheme's; a path that ends in `*` matches as a prefix,
    /// otherwise exactly. An address named here may be reached even if it is private.
    pub url: String,
    /// Allowed methods (upper case); default `["GET", "HEAD"]`.
    #[serde(default = "read_methods")]
    pub methods: Vec<String>,
    /// A secret the host adds to each request this rule allows (never shown to the guest).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub auth: Option<Auth>,
}

fn read_methods() -> Vec<String> {
    vec!["GET".to_owned(), "HEAD".to_owned()]
}

/// A credential by reference: `value_from` (and `password_from`) name where the secret is,
/// `env:NAME` (an environment variable of the server) or `file:/path`. Exactly one form:
/// `{header, value_from}`, `{bearer_from}`, `{basic_user, password_from}` or
/// `{query, value_from}`.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq, Default)]
#[serde(deny_unknown_fields, default)]
pub struct Auth {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub header: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub query: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub value_from: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub bearer_from: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub basic_user: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub password_from: Option<String>,
}

/// The methods a rule may name.
pub const METHODS: [&str; 7] = ["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"];

impl Egress {
    pub fn validate(&self) -> anyhow::Result<()> {
        ensure!(
            self.allow.len() <= MAX_RULES,
            "egress.allow: at most {MAX_RULES} rules"
        );
        ensure!(
            (1..=1000).contains(&self.requests_per_call),
            "egress.requests_per_call must be 1-1000"
        );
        ensure!(
            (1..=100_000).contains(&self.requests_per_minute),
            "egress.requests_per_minute must be 1-100000"
        );
        ensure!(
            (1..=1 << 30).contains(&self.response_bytes)
                && (1..=1 << 32).contains(&self.call_bytes)
                && (1..=1 << 28).contains(&self.request_bytes),
            "egress: response_bytes (at most 1 GiB), call_bytes (4 GiB) and request_bytes \
             (256 MiB) must be above 0"
        );
        ensure!(
            (1..=600_000).contains(&self.timeout_ms),
            "egress.timeout_ms must be 1-600000"
        );
        for rule in &self.allow {
            rule.validate()?;
        }
        Ok(())
    }
}

impl Rule {
    fn validate(&self) -> anyhow::Result<()> {
        ensure!(
            self.url.len() <= MAX_PATTERN,
            "egress rule: a url of at most {MAX_PATTERN} bytes"
        );
        if let Err(why) = Pattern::parse(&self.url) {
            bail!("egress rule {:?}: {why}", self.url);
        }
        ensure!(
            !self.methods.is_empty() && self.methods.len() <= METHODS.len(),
            "egress rule {:?}: methods must name 1-{} of {}",
            self.url,
            METHODS.len(),
            METHODS.join(", ")
        );
        for method in &self.methods {
            ensure!(
                METHODS.contains(&method.as_str()),
                "egress rule {:?}: method {method:?} is not one of {}",
                self.url,
                METHODS.join(", ")
            );
        }
        if let Some(auth) = &self.auth {
            auth.validate()
                .map_err(|why| anyhow::anyhow!("egress rule {:?}: auth: {why}", self.url))?;
        }
        Ok(())
    }
}

impl Auth {
    fn validate(&self) -> anyhow::Result<()> {
        let forms = [
            self.header.is_some() && self.value_from.is_some(),
            self.bearer_from.is_some(),
            self.basic_user.is_some() && self.password_from.is_some(),
            self.query.is_some() && self.value_from.is_some(),
        ];
        let set = [
            &self.header,
            &self.query,
            &self.value_from,
            &self.bearer_from,
            &self.basic_user,
            &self.password_from,
        ]
        .iter()
        .filter(|f| f.is_some())
        .count();
        let used = forms.iter().filter(|f| **f).count();
        ensure!(
            used == 1 && set == if forms[1] { 1 } else { 2 },
            "exactly one of {{header, value_from}}, {{bearer_from}}, {{basic_user, password_from}}, \
             {{query, value_from}}"
        );
        for from in [&self.value_from, &self.bearer_from, &self.password_from]
            .into_iter()
            .flatten()
        {
            secret_source(from)?;
        }
        if let Some(header) = &self.header {
            ensure!(
                reqwest::header::HeaderName::from_bytes(header.as_bytes()).is_ok()
                    && !header.eq_ignore_ascii_case("host"),
                "header {header:?} is not a header name that may be set"
            );
        }
        if let Some(query) = &self.query {
            ensure!(
                !query.is_empty()
                    && query.len() <= 64
                    && query
                        .bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b"_-.".contains(&b)),
                "query {query:?}: 1-64 of a-z A-Z 0-9 _ - ."
            );
        }
        if let Some(user) = &self.basic_user {
            ensure!(
                !user.contains(':') && !user.chars().any(char::is_control) && user.len() <= 256,
                "basic_user may not hold ':' or control characters"
            );
        }
        Ok(())
    }
}

/// Where a secret is read from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SecretSource<'a> {
    /// `env:NAME`: an environment variable of the server.
    Env(&'a str),
    /// `file:/absolute/path`: a file's content, without a trailing newline (the form
    /// container platforms mount secrets in).
    File(&'a str),
}

/// Parses a `value_from` (or `bearer_from`, `password_from`).
pub fn secret_source(from: &str) -> anyhow::Result<SecretSource<'_>> {
    if let Some(path) = from.strip_prefix("file:") {
        ensure!(
            path.starts_with('/') && path.len() <= 4096 && !path.split('/').any(|c| c == ".."),
            "{from:?}: file: takes an absolute path without .."
        );
        return Ok(SecretSource::File(path));
    }
    let Some(name) = from.strip_prefix("env:") else {
        bail!("{from:?}: a secret is named as env:NAME or file:/path");
    };
    ensure!(
        !name.is_empty()
            && name.len() <= 128
            && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_'),
        "{from:?}: NAME is 1-128 of A-Z a-z 0-9 _"
    );
    Ok(SecretSource::Env(name))
}

/// A rule's host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HostPattern {
    /// Exactly this name (lower case).
    Name(String),
    /// Any name below this domain (`*.example.org`: `a.example.org`, `a.b.example.org`).
    Below(String),
    /// Exactly this address.
    Address(std::net::IpAddr),
}

/// A parsed rule URL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pattern {
    /// `http` or `https`.
    pub scheme: String,
    pub host: HostPattern,
    pub port: u16,
    /// The path, or its prefix when `prefix`.
    pub path: String,
    pub prefix: bool,
}

fn is_domain(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 253
        && name.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && label
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
                && !label.starts_with('-')
                && !label.ends_with('-')
        })
}

impl Pattern {
    /// Parses `scheme://host[:port]/path[*]`; the message says what is wrong.
    pub fn parse(text: &str) -> Result<Self, String> {
        let (scheme, rest) = text
            .split_once("://")
            .ok_or("a url is scheme://host/path")?;
        let default_port = match scheme {
            "http" => 80,
            "https" => 443,
            _ => return Err("the scheme must be http or https".to_owned()),
        };
        let slash = rest.find('/').ok_or("the url needs a path (at least /)")?;
        let (authority, path) = rest.split_at(slash);
        if authority.contains('@') {
            return Err("no user information in a rule".to_owned());
        }
        let (host, port) = if let Some(inner) = authority.strip_prefix('[') {
            let (v6, after) = inner.split_once(']').ok_or("an unclosed [")?;
            let address: std::net::Ipv6Addr = v6
                .parse()
                .map_err(|_| format!("{v6:?} is not an IPv6 address"))?;
            (HostPattern::Address(address.into()), after)
        } else {
            let (host, after) = match authority.find(':') {
                Some(i) => authority.split_at(i),
                None => (authority, ""),
            };
            let host = host.to_ascii_lowercase();
            let pattern = if let Ok(address) = host.parse::<std::net::Ipv4Addr>() {
                HostPattern::Address(address.into())
            } else if let Some(domain) = host.strip_prefix("*.") {
                if !is_domain(domain) || !domain.contains('.') {
                    return Err(format!(
                        "{host:?}: *. must be followed by a domain of two labels or more"
                    ));
                }
                HostPattern::Below(domain.to_owned())
            } else if is_domain(&host) {
                HostPattern::Name(host)
            } else {
                return Err(format!(
                    "{host:?} is not a host name, an address or *.domain"
                ));
            };
            (pattern, after)
        };
        let port = match port.strip_prefix(':') {
            None if port.is_empty() => default_port,
            None => return Err("unexpected text after the host".to_owned()),
            Some(digits) => digits
                .parse::<u16>()
                .ok()
                .filter(|p| *p > 0)
                .ok_or_else(|| format!("{digits:?} is not a port"))?,
        };
        if path.contains(['?', '#']) {
            return Err("a rule's path has no query or fragment".to_owned());
        }
        let (path, prefix) = match path.strip_suffix('*') {
            Some(start) => (start, true),
            None => (path, false),
        };
        if path.contains('*') {
            return Err("* only at the end of the path".to_owned());
        }
        Ok(Self {
            scheme: scheme.to_owned(),
            host,
            port,
            path: path.to_owned(),
            prefix,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn patterns_parse_or_say_why_not() {
        let p = Pattern::parse("https://api.example.com/v1/*").expect("parses");
        assert_eq!(
            (
                p.scheme.as_str(),
                &p.host,
                p.port,
                p.path.as_str(),
                p.prefix
            ),
            (
                "https",
                &HostPattern::Name("api.example.com".into()),
                443,
                "/v1/",
                true
            )
        );
        let p = Pattern::parse("http://*.Example.org:8080/exact").expect("parses");
        assert_eq!(p.host, HostPattern::Below("example.org".into()));
        assert_eq!((p.port, p.prefix), (8080, false));
        let p = Pattern::parse("http://[::1]:9/*").expect("parses");
        assert_eq!(p.host, HostPattern::Address("::1".parse().expect("ip")));
        for bad in [
            "ftp://example.com/",
            "https://example.com",
            "https://user@example.com/",
            "https://*.com/",
            "https://a*.example.com/",
            "https://example.com/a*b",
            "https://example.com:0/",
            "https://example.com:99999/",
            "https://example.com/?q=1",
            "https://exa mple.com/",
            "https://[::1/",
        ] {
            assert!(Pattern::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn auth_takes_exactly_one_form() {
        let ok = [
            Auth {
                header: Some("Authorization".into()),
                value_from: Some("env:T".into()),
                ..Auth::default()
            },
            Auth {
                bearer_from: Some("env:T".into()),
                ..Auth::default()
            },
            Auth {
                basic_user: Some("u".into()),
                password_from: Some("env:P".into()),
                ..Auth::default()
            },
            Auth {
                query: Some("key".into()),
                value_from: Some("env:K".into()),
                ..Auth::default()
            },
        ];
        for auth in ok {
            auth.validate().expect("valid");
        }
        let bad = [
            Auth::default(),
            Auth {
                header: Some("X".into()),
                ..Auth::default()
            },
            Auth {
                bearer_from: Some("env:T".into()),
                header: Some("X".into()),
                value_from: Some("env:T".into()),
                ..Auth::default()
            },
            Auth {
                bearer_from: Some("T".into()),
                ..Auth::default()
            },
            Auth {
                bearer_from: Some("env:A-B".into()),
                ..Auth::default()
            },
            Auth {
                header: Some("Host".into()),
                value_from: Some("env:T".into()),
                ..Auth::default()
            },
            Auth {
                header: Some("Bad Header".into()),
                value_from: Some("env:T".into()),
                ..Auth::default()
            },
            Auth {
                basic_user: Some("a:b".into()),
                password_from: Some("env:P".into()),
                ..Auth::default()
            },
        ];
        for auth in bad {
            assert!(auth.validate().is_err(), "{auth:?}");
        }
    }
}
