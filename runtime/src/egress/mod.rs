//! Outbound HTTP as a host capability (`scriptbox.http` in the guest). The guest has no
//! sockets; a request it makes is a host call, and the host performs it only if the
//! owner's policy allows it:
//!
//! * a rule must cover the URL (scheme, host, port, path) and allow the method ([`rule`]);
//! * the host resolves the name itself and connects only to public addresses, unless a rule
//!   names the address ([`address`]); the address connected to is one that was checked;
//! * no `file:`, no user information, validated headers, no `Host`, a bounded body;
//! * a rule's credential is added by the host and scrubbed from the answer ([`credentials`]);
//! * redirects are followed by hand, each hop checked like a first request, at most
//!   [`MAX_REDIRECTS`];
//! * counts, bytes and time are bounded per request, per call and per minute, and every
//!   request is in the audit log (host, method, status, size; no bodies, no secrets).
//!
//! The answer is always a JSON value: `{"response": {...}}` or `{"error": {"kind",
//! "message"}}`, which the guest turns into a response or a typed exception; a refusal
//! never harms the instance.

pub mod address;
pub mod credentials;
pub mod rule;

use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use base64::Engine as _;
use serde::Serialize;
use serde_json::{Value, json};

use crate::config::egress::{Egress as Policy, METHODS};
use crate::protocol::HttpRequest;
use crate::store::audit::{AuditEntry, AuditLog};

/// Redirects followed for one request, at most.
pub const MAX_REDIRECTS: usize = 5;
/// Headers the guest may set on one request, at most.
pub const MAX_HEADERS: usize = 64;
/// Bytes of the guest's headers together, at most.
pub const MAX_HEADER_BYTES: usize = 16 << 10;
/// Headers the host sets or that would change how the request is framed or routed.
const RESERVED_HEADERS: [&str; 12] = [
    "host",
    "content-length",
    "transfer-encoding",
    "connection",
    "keep-alive",
    "upgrade",
    "te",
    "trailer",
    "expect",
    "proxy-authorization",
    "proxy-connection",
    "forwarded",
];

/// The node's HTTP client (one connection pool) and audit log, shared by every tenant.
#[derive(Clone)]
pub struct Egress {
    client: reqwest::Client,
    audit: AuditLog,
}

impl Egress {
    pub fn new(audit: AuditLog) -> anyhow::Result<Self> {
        let client = reqwest::Client::builder()
            // Never a proxy from HTTP_PROXY and the like: the policy decides where we go.
            .no_proxy()
            .redirect(reqwest::redirect::Policy::none())
            .dns_resolver(Arc::new(address::Resolver))
            .user_agent(concat!("scriptbox/", env!("CARGO_PKG_VERSION")))
            .pool_idle_timeout(Duration::from_secs(30))
            .build()?;
        Ok(Self { client, audit })
    }

    /// A tenant's egress under `policy` (already validated).
    pub fn for_tenant(&self, owner: &str, policy: &Policy) -> Result<TenantEgress, String> {
        let rules = policy
            .allow
            .iter()
            .map(rule::Compiled::new)
            .collect::<Result<Vec<_>, _>>()?;
        Ok(TenantEgress {
            owner: owner.to_owned(),
            policy: policy.clone(),
            rules,
            minute: Mutex::new((Instant::now(), 0)),
            shared: self.clone(),
        })
    }
}

/// One tenant's outbound HTTP: its rules, its per-minute budget.
pub struct TenantEgress {
    owner: String,
    policy: Policy,
    rules: Vec<rule::Compiled>,
    /// This minute's start and the requests made in it.
    minute: Mutex<(Instant, u32)>,
    shared: Egress,
}

impl std::fmt::Debug for TenantEgress {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TenantEgress")
            .field("owner", &self.owner)
            .field("rules", &self.rules.len())
            .finish()
    }
}

/// What one call's requests used (reported with the call's answer).
#[derive(Debug, Default)]
pub struct CallBudget {
    requests: AtomicU32,
    sent: AtomicU64,
    received: AtomicU64,
}

/// A call's outbound HTTP, as its answer reports it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct Usage {
    pub requests: u32,
    pub bytes_sent: u64,
    pub bytes_received: u64,
}

impl CallBudget {
    pub fn usage(&self) -> Usage {
        Usage {
            requests: self.requests.load(Ordering::Relaxed),
            bytes_sent: self.sent.load(Ordering::Relaxed),
            bytes_received: self.received.load(Ordering::Relaxed),
        }
    }
}

/// Why a request was not answered, as the guest sees it.
#[derive(Debug)]
struct Failure {
    /// `denied`, `timeout`, `too_large`, `limit`, `bad_request` or `failed`.
    kind: &'static str,
    message: String,
}

fn fail(kind: &'static str, message: impl Into<String>) -> Failure {
    Failure {
        kind,
        message: message.into(),
    }
}

/// A request as checked, before it is sent.
struct Prepared {
    method: reqwest::Method,
    url: reqwest::Url,
    headers: reqwest::header::HeaderMap,
    body: Vec<u8>,
    timeout: Duration,
}

impl TenantEgress {
    /// Performs `request` for a call whose usage is `budget`; the JSON the guest gets.
    pub async fn perform(&self, request: HttpRequest, budget: &CallBudget) -> Value {
        match self.run(request, budget).await {
            Ok(response) => json!({ "response": response }),
            Err(failure) => json!({"error": {"kind": failure.kind, "message": failure.message}}),
        }
    }

    async fn run(&self, request: HttpRequest, budget: &CallBudget) -> Result<Value, Failure> {
        let mut prepared = self.prepare(request)?;
        let mut redirects = 0;
        loop {
            let mut secrets = Vec::new();
            let answer = match self.hop(&prepared, budget, &mut secrets).await {
                Ok(answer) => answer,
                Err(mut failure) if redirects > 0 && failure.kind == "denied" => {
                    failure.message = format!("redirect refused: {}", failure.message);
                    return Err(failure);
                }
                Err(failure) => return Err(failure),
            };
            let next = redirect_target(&prepared, &answer);
            match next {
                Some(Ok(next)) if redirects < MAX_REDIRECTS => {
                    redirects += 1;
                    prepared = next;
                }
                Some(Ok(_)) => {
                    return Err(fail(
                        "denied",
                        format!("more than {MAX_REDIRECTS} redirects"),
                    ));
                }
                Some(Err(why)) => return Err(fail("denied", format!("redirect: {why}"))),
                None => return Ok(self.finish(answer, &prepared, &secrets)),
            }
        }
    }

    /// Checks what the guest sent: method, URL, headers, body, timeout.
    fn prepare(&self, request: HttpRequest) -> Result<Prepared, Failure> {
        let method = request.method.to_ascii_uppercase();
        if !METHODS.contains(&method.as_str()) {
            return Err(fail(
                "bad_request",
                format!("method must be one of {}", METHODS.join(", ")),
            ));
        }
        let url = parse_url(&request.url)?;
        if request.headers.len() > MAX_HEADERS {
            return Err(fail(
                "bad_request",
                format!("at most {MAX_HEADERS} headers"),
            ));
        }
        let mut headers = reqwest::header::HeaderMap::new();
        let mut size = 0;
        for (name, value) in &request.headers {
            size += name.len() + value.len();
            if size > MAX_HEADER_BYTES {
                return Err(fail(
                    "bad_request",
                    format!("headers of at most {MAX_HEADER_BYTES} bytes"),
                ));
            }
            let header = reqwest::header::HeaderName::from_bytes(name.as_bytes())
                .map_err(|_| fail("bad_request", format!("{name:?} is not a header name")))?;
            if RESERVED_HEADERS.contains(&header.as_str()) {
                return Err(fail(
                    "bad_request",
                    format!("the {header} header is set by the host"),
                ));
            }
            let value = reqwest::header::HeaderValue::from_str(value).map_err(|_| {
                fail(
                    "bad_request",
                    format!("the {header} header's value is not valid"),
                )
            })?;
            headers.append(header, value);
        }
        let body = match &request.body {
            None => Vec::new(),
            Some(text) => {
                let limit = self.policy.request_bytes;
                if text.len() as u64 > limit.saturating_mul(4) / 3 + 4 {
                    return Err(fail(
                        "too_large",
                        format!("a request body of at most {limit} bytes"),
                    ));
                }
                let body = base64::engine::general_purpose::STANDARD
                    .decode(text)
                    .map_err(|_| fail("bad_request", "the body is not base64"))?;
                if body.len() as u64 > limit {
                    return Err(fail(
                        "too_large",
                        format!("a request body of at most {limit} bytes"),
                    ));
                }
                body
            }
        };
        let most = self.policy.timeout_ms;
        let timeout = Duration::from_millis(request.timeout_ms.unwrap_or(most).clamp(1, most));
        Ok(Prepared {
            method: reqwest::Method::from_bytes(method.as_bytes())
                .map_err(|_| fail("bad_request", "not a method"))?,
            url,
            headers,
            body,
            timeout,
        })
    }

    /// Counts the request against the call's and the minute's budgets.
    fn spend(&self, budget: &CallBudget) -> Result<(), Failure> {
        let made = budget.requests.fetch_add(1, Ordering::Relaxed) + 1;
        if made > self.policy.requests_per_call {
            budget.requests.fetch_sub(1, Ordering::Relaxed);
            return Err(fail(
                "limit",
                format!(
                    "at most {} requests per call",
                    self.policy.requests_per_call
                ),
            ));
        }
        let mut minute = self.minute.lock().unwrap_or_else(|p| p.into_inner());
        if minute.0.elapsed() >= Duration::from_secs(60) {
            *minute = (Instant::now(), 0);
        }
        if minute.1 >= self.policy.requests_per_minute {
            budget.requests.fetch_sub(1, Ordering::Relaxed);
            return Err(fail(
                "limit",
                format!(
                    "at most {} requests per minute",
                    self.policy.requests_per_minute
                ),
            ));
        }
        minute.1 += 1;
        Ok(())
    }

    /// One request (no redirect followed): checked against the rules and the addresses,
    /// sent with the rule's credential, its body read within the limits.
    async fn hop(
        &self,
        prepared: &Prepared,
        budget: &CallBudget,
        secrets: &mut Vec<String>,
    ) -> Result<Answer, Failure> {
        let rule = rule::find(&self.rules, prepared.method.as_str(), &prepared.url)
            .map_err(|why| fail("denied", why))?;
        check_address(rule, &prepared.url).await?;
        self.spend(budget)?;
        let mut url = prepared.url.clone();
        let mut headers = prepared.headers.clone();
        if let Some(auth) = &rule.rule.auth {
            let credential = credentials::resolve(auth).map_err(|why| {
                tracing::warn!(owner = %self.owner, rule = %rule.rule.url, %why, "egress credential");
                fail("denied", "the rule's credential is not available")
            })?;
            secrets.extend(credential.forms());
            match credential {
                credentials::Credential::Header { name, value } => {
                    let name = reqwest::header::HeaderName::from_bytes(name.as_bytes())
                        .map_err(|_| fail("denied", "the rule's credential is not usable"))?;
                    let mut value = reqwest::header::HeaderValue::from_str(&value)
                        .map_err(|_| fail("denied", "the rule's credential is not usable"))?;
                    value.set_sensitive(true);
                    headers.insert(name, value);
                }
                credentials::Credential::Query { name, value } => {
                    url.query_pairs_mut().append_pair(&name, &value);
                }
            }
        }
        let host = prepared.url.host_str().unwrap_or("").to_owned();
        let response = self
            .shared
            .client
            .request(prepared.method.clone(), url)
            .headers(headers)
            .body(prepared.body.clone())
            .timeout(prepared.timeout)
            .send()
            .await
            .map_err(|err| self.sending_failed(&host, err))?;
        budget
            .sent
            .fetch_add(prepared.body.len() as u64, Ordering::Relaxed);
        let status = response.status().as_u16();
        let headers = response.headers().clone();
        let body = self.read_body(response, budget, &host).await;
        let size = body.as_ref().map_or(0, Vec::len);
        self.audit(&host, prepared.method.as_str(), status, size);
        Ok(Answer {
            status,
            headers,
            body: body?,
        })
    }

    fn sending_failed(&self, host: &str, err: reqwest::Error) -> Failure {
        // Logged without the URL (a query credential would be in it).
        let err = err.without_url();
        tracing::info!(owner = %self.owner, %host, cause = %err, "egress request failed");
        if err.is_timeout() {
            fail("timeout", format!("{host} did not answer in time"))
        } else {
            fail("failed", format!("could not reach {host}"))
        }
    }

    /// The body, at most `response_bytes` and what is left of the call's bytes.
    async fn read_body(
        &self,
        mut response: reqwest::Response,
        budget: &CallBudget,
        host: &str,
    ) -> Result<Vec<u8>, Failure> {
        let left = self
            .policy
            .call_bytes
            .saturating_sub(budget.received.load(Ordering::Relaxed));
        let limit = self.policy.response_bytes.min(left);
        let mut body = Vec::new();
        loop {
            let chunk = match response.chunk().await {
                Ok(Some(chunk)) => chunk,
                Ok(None) => return Ok(body),
                Err(err) => return Err(self.sending_failed(host, err)),
            };
            budget
                .received
                .fetch_add(chunk.len() as u64, Ordering::Relaxed);
            if (body.len() + chunk.len()) as u64 > limit {
                let what = if limit < self.policy.response_bytes {
                    format!(
                        "the call's responses may hold at most {} bytes",
                        self.policy.call_bytes
                    )
                } else {
                    format!("a response of at most {} bytes", self.policy.response_bytes)
                };
                return Err(fail("too_large", what));
            }
            body.extend_from_slice(&chunk);
        }
    }

    fn audit(&self, host: &str, method: &str, status: u16, bytes: usize) {
        self.shared.audit.record(AuditEntry {
            at: crate::store::now(),
            tenant: self.owner.clone(),
            event: "http_request".to_owned(),
            detail: json!({"host": host, "method": method, "status": status, "bytes": bytes})
                .to_string(),
        });
    }

    /// The guest's response: scrubbed of the credentials, the body as base64.
    fn finish(&self, answer: Answer, prepared: &Prepared, secrets: &[String]) -> Value {
        let headers: Vec<(String, String)> = answer
            .headers
            .iter()
            .map(|(name, value)| {
                let value = String::from_utf8_lossy(value.as_bytes());
                (
                    name.as_str().to_owned(),
                    credentials::scrub_text(&value, secrets),
                )
            })
            .collect();
        let body = credentials::scrub(answer.body, secrets);
        json!({
            "status": answer.status,
            "headers": headers,
            "body": base64::engine::general_purpose::STANDARD.encode(body),
            "url": prepared.url.as_str(),
        })
    }
}

/// A hop's answer.
struct Answer {
    status: u16,
    headers: reqwest::header::HeaderMap,
    body: Vec<u8>,
}

/// The guest's URL, if it is one we may send: http or https, a host, no user information.
fn parse_url(text: &str) -> Result<reqwest::Url, Failure> {
    if text.len() > 8192 {
        return Err(fail("bad_request", "a URL of at most 8192 bytes"));
    }
    let mut url = reqwest::Url::parse(text)
        .map_err(|err| fail("bad_request", format!("not a URL: {err}")))?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(fail(
            "denied",
            format!("the {} scheme is not allowed", url.scheme()),
        ));
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err(fail(
            "denied",
            "no user information in URLs (a rule's auth adds credentials)",
        ));
    }
    if url.host().is_none() {
        return Err(fail("bad_request", "the URL has no host"));
    }
    url.set_fragment(None);
    Ok(url)
}

/// Refuses a URL whose host is, or resolves only to, addresses that may not be reached
/// (unless the rule names that address).
async fn check_address(rule: &rule::Compiled, url: &reqwest::Url) -> Result<(), Failure> {
    let literal = match url.host() {
        Some(url::Host::Ipv4(ip)) => Some(std::net::IpAddr::V4(ip)),
        Some(url::Host::Ipv6(ip)) => Some(std::net::IpAddr::V6(ip)),
        _ => None,
    };
    if let Some(ip) = literal {
        return match address::refusal(ip) {
            Some(why) if !rule.names_address(ip) => Err(fail(
                "denied",
                format!("{ip} is {why} (allowed only by a rule that names it)"),
            )),
            _ => Ok(()),
        };
    }
    let host = url.host_str().unwrap_or("");
    let port = url.port_or_known_default().unwrap_or(0);
    let found: Vec<std::net::SocketAddr> = match tokio::net::lookup_host((host, port)).await {
        Ok(found) => found.collect(),
        Err(_) => return Err(fail("failed", format!("{host} could not be resolved"))),
    };
    let reasons: Vec<&str> = found
        .iter()
        .filter_map(|a| address::refusal(a.ip()))
        .collect();
    match reasons.first() {
        // The client connects only to the addresses that pass (see the resolver), so a
        // name with some public addresses is reached through those.
        Some(why) if reasons.len() == found.len() => Err(fail(
            "denied",
            format!("{host} resolves to {why} (name the address in a rule to allow it)"),
        )),
        _ if found.is_empty() => Err(fail("failed", format!("{host} could not be resolved"))),
        _ => Ok(()),
    }
}

/// Where a redirect answer sends the request next: `None` for an answer that is not a
/// redirect; the next request (method and body as browsers change them), or why not.
fn redirect_target(prepared: &Prepared, answer: &Answer) -> Option<Result<Prepared, String>> {
    if !matches!(answer.status, 301 | 302 | 303 | 307 | 308) {
        return None;
    }
    let location = answer.headers.get(reqwest::header::LOCATION)?;
    let next = location
        .to_str()
        .ok()
        .and_then(|l| prepared.url.join(l).ok());
    let Some(next) = next else {
        return Some(Err("the Location is not a URL".to_owned()));
    };
    let next = match parse_url(next.as_str()) {
        Ok(url) => url,
        Err(failure) => return Some(Err(failure.message)),
    };
    let keep = matches!(answer.status, 307 | 308)
        || (prepared.method == reqwest::Method::GET || prepared.method == reqwest::Method::HEAD);
    let (method, body) = if keep {
        (prepared.method.clone(), prepared.body.clone())
    } else {
        (reqwest::Method::GET, Vec::new())
    };
    let mut headers = prepared.headers.clone();
    if next.origin() != prepared.url.origin() {
        // The guest's own credentials stay with the origin it gave them to.
        for name in [reqwest::header::AUTHORIZATION, reqwest::header::COOKIE] {
            headers.remove(name);
        }
    }
    Some(Ok(Prepared {
        method,
        url: next,
        headers,
        body,
        timeout: prepared.timeout,
    }))
}
