//! Outbound HTTP (`scriptbox.http`) against a real HTTP server this test starts on
//! 127.0.0.1, allowed by explicit rules in the tenants' policies. No packet goes anywhere
//! else: the private-range and metadata refusals are unit tests of the address check
//! (runtime/src/egress/address.rs); here only loopback targets are used.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::{Request, State};
use axum::response::{IntoResponse, Response};
use reqwest::StatusCode;
use scriptbox::config::Role;
use scriptbox::config::egress::{Auth, Egress, Rule};
use scriptbox_tests::{Api, TestServer, code, copy_scripts, tenant};
use serde_json::{Value, json};

const KEY_A: &str = "egress-tenant-a-0123456789";
const KEY_B: &str = "egress-tenant-b-0123456789";
const KEY_ADMIN: &str = "egress-admin-0123456789";
const SECRET: &str = "s3cret-token-from-the-host-0123";
const QUERY_SECRET: &str = "query-secret-0123456789";

/// What the test server received: method, path, query and headers of each request.
type Seen = Arc<Mutex<Vec<(String, String, String, BTreeMap<String, String>)>>>;

/// The upstream: `/echo...` answers what it got (and echoes credentials in a header),
/// `/redirect?to=URL` redirects, `/loop` redirects to itself, `/big?n=N` answers N bytes,
/// `/slow` answers after 3 s.
async fn upstream(State(seen): State<Seen>, request: Request) -> Response {
    let method = request.method().to_string();
    let path = request.uri().path().to_owned();
    let query = request.uri().query().unwrap_or("").to_owned();
    let headers: BTreeMap<String, String> = request
        .headers()
        .iter()
        .map(|(k, v)| {
            (
                k.to_string(),
                String::from_utf8_lossy(v.as_bytes()).into_owned(),
            )
        })
        .collect();
    seen.lock()
        .expect("seen")
        .push((method.clone(), path.clone(), query.clone(), headers.clone()));
    let body = axum::body::to_bytes(request.into_body(), 1 << 20)
        .await
        .unwrap_or_default();
    let param = |name: &str| {
        query
            .split('&')
            .find_map(|pair| pair.strip_prefix(&format!("{name}=")))
            .unwrap_or("")
            .to_owned()
    };
    match path.as_str() {
        "/redirect" => (
            StatusCode::FOUND,
            [(
                "location",
                param("to").replace("%3A", ":").replace("%2F", "/"),
            )],
        )
            .into_response(),
        "/loop" => (StatusCode::FOUND, [("location", "/loop".to_owned())]).into_response(),
        "/big" => "a".repeat(param("n").parse().unwrap_or(0)).into_response(),
        "/slow" => {
            tokio::time::sleep(Duration::from_secs(3)).await;
            "late".into_response()
        }
        _ => {
            let echoed = headers
                .get("x-api-token")
                .or(headers.get("authorization"))
                .cloned()
                .unwrap_or_default();
            let answer = json!({"method": method, "path": path, "query": query,
                "headers": headers, "body": String::from_utf8_lossy(&body)});
            (
                [
                    ("x-echo", echoed),
                    ("content-type", "application/json".to_owned()),
                ],
                answer.to_string(),
            )
                .into_response()
        }
    }
}

struct Upstream {
    addr: SocketAddr,
    seen: Seen,
    _task: tokio::task::JoinHandle<()>,
}

impl Upstream {
    async fn start() -> Self {
        let seen: Seen = Arc::default();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        let app = axum::Router::new()
            .fallback(upstream)
            .with_state(Arc::clone(&seen));
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Self {
            addr,
            seen,
            _task: task,
        }
    }

    fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// The last request the server got.
    fn last(&self) -> (String, String, String, BTreeMap<String, String>) {
        self.seen
            .lock()
            .expect("seen")
            .last()
            .cloned()
            .expect("a request")
    }

    fn hits(&self) -> usize {
        self.seen.lock().expect("seen").len()
    }
}

fn rule(url: String, methods: &[&str], auth: Option<Auth>) -> Rule {
    Rule {
        url,
        methods: methods.iter().map(|m| (*m).to_owned()).collect(),
        auth,
    }
}

/// A server where tenant `a` has `egress` and tenant `b` has none; both have the fixture
/// loaded as `net` (with `limits` for `a`'s).
async fn server(egress: Egress, limits: Value) -> (TestServer, Api, Api) {
    let server = TestServer::start_in(|config, dir| {
        let scripts = dir.join("scripts-shared");
        copy_scripts(&scripts);
        let mut a = tenant("a", KEY_A, &scripts, Role::Tenant);
        a.policy.egress = egress;
        let b = tenant("b", KEY_B, &scripts, Role::Tenant);
        let ops = tenant("ops", KEY_ADMIN, &scripts, Role::Admin);
        config.tenants = vec![a, b, ops];
    })
    .await;
    let (a, b) = (server.as_key(KEY_A), server.as_key(KEY_B));
    a.load_limited("egress_fixture", "net", limits).await;
    b.load("egress_fixture", "net").await;
    (server, a, b)
}

async fn fetch(api: &Api, url: &str, kwargs: Value) -> Value {
    let (status, body) = api.call("net", "fetch", json!([url]), kwargs).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    body["data"]["result"].clone()
}

fn denied(result: &Value, why: &str) {
    assert_eq!(result["error"], "Denied", "{result}");
    assert_eq!(result["is_host_error"], true);
    let message = result["message"].as_str().unwrap_or("");
    assert!(message.contains(why), "{message:?} should say {why:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rules_decide_what_is_reached_and_nothing_else_is() {
    let up = Upstream::start().await;
    let egress = Egress {
        allow: vec![
            rule(up.url("/echo/*"), &["GET", "POST"], None),
            rule(up.url("/redirect"), &["GET"], None),
            rule(up.url("/loop"), &["GET"], None),
            rule(up.url("/big"), &["GET"], None),
            // A name, not the address: it resolves to loopback, which needs the address.
            rule(
                format!("http://localhost:{}/*", up.addr.port()),
                &["GET"],
                None,
            ),
            rule(
                format!("http://*.example.test:{}/*", up.addr.port()),
                &["GET"],
                None,
            ),
        ],
        ..Egress::default()
    };
    let (_server, a, b) = server(egress, json!(null)).await;

    // Obeyed: a path under the prefix, an allowed method; the answer as sent.
    let got = fetch(&a, &up.url("/echo/x?q=1"), json!({})).await;
    assert_eq!(got["status"], 200, "{got}");
    let echoed: Value = serde_json::from_str(got["text"].as_str().expect("text")).expect("json");
    assert_eq!(
        (echoed["path"].as_str(), echoed["query"].as_str()),
        (Some("/echo/x"), Some("q=1"))
    );
    let (status, body) = a
        .call(
            "net",
            "post_json",
            json!([up.url("/echo/p"), {"n": [1, 2]}]),
            json!({}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["data"]["result"]["method"], "POST");
    assert_eq!(body["data"]["result"]["body"], r#"{"n": [1, 2]}"#);
    assert_eq!(
        body["data"]["result"]["headers"]["content-type"],
        "application/json"
    );
    // The call's answer reports its outbound requests.
    assert_eq!(body["data"]["egress"]["requests"], 1, "{body}");
    assert!(
        body["data"]["egress"]["bytes_received"]
            .as_u64()
            .unwrap_or(0)
            > 0
    );
    let (_, body) = a
        .call("net", "unpack", json!([up.url("/echo/u")]), json!({}))
        .await;
    assert_eq!(body["data"]["result"][0], 200, "{body}");

    let before = up.hits();
    // Violated: outside the prefix, a method the rule does not name, another port.
    denied(
        &fetch(&a, &up.url("/other"), json!({})).await,
        "no rule allows",
    );
    denied(
        &fetch(&a, &up.url("/echo"), json!({})).await,
        "no rule allows",
    );
    denied(
        &fetch(&a, &up.url("/echo/x"), json!({"method": "DELETE"})).await,
        "method DELETE",
    );
    let other_port = format!("http://127.0.0.1:{}/echo/x", up.addr.port() ^ 1);
    denied(&fetch(&a, &other_port, json!({})).await, "no rule allows");
    // Another loopback address is not the one the rules name.
    let other_address = format!("http://127.0.0.2:{}/echo/x", up.addr.port());
    denied(
        &fetch(&a, &other_address, json!({})).await,
        "no rule allows",
    );
    // A name that resolves to 127.0.0.1, allowed by name only: refused at the address.
    let by_name = format!("http://localhost:{}/echo/x", up.addr.port());
    denied(&fetch(&a, &by_name, json!({})).await, "loopback");
    // The wildcard does not cover its own domain.
    // (refused by the rules, before any name is resolved)
    let apex = format!("http://example.test:{}/", up.addr.port());
    denied(&fetch(&a, &apex, json!({})).await, "no rule allows");
    // No file:, no user information.
    denied(&fetch(&a, "file:///etc/passwd", json!({})).await, "scheme");
    let userinfo = format!("http://user:pw@{}/echo/x", up.addr);
    denied(&fetch(&a, &userinfo, json!({})).await, "user information");
    // A redirect to a disallowed URL is refused; to an allowed one followed; loops end.
    let to_denied = format!("{}?to={}", up.url("/redirect"), by_name);
    denied(&fetch(&a, &to_denied, json!({})).await, "redirect refused");
    let to_echo = format!("{}?to={}", up.url("/redirect"), up.url("/echo/after"));
    let hits = up.hits();
    let got = fetch(&a, &to_echo, json!({})).await;
    assert_eq!(
        (got["status"].as_u64(), got["url"].as_str()),
        (Some(200), Some(up.url("/echo/after").as_str())),
        "{got}"
    );
    assert_eq!(up.hits(), hits + 2);
    denied(
        &fetch(&a, &up.url("/loop"), json!({})).await,
        "more than 5 redirects",
    );
    // The refused requests never reached the server (the redirects' first hops did).
    let reached: Vec<String> = up.seen.lock().expect("seen")[before..]
        .iter()
        .map(|(_, path, _, _)| path.clone())
        .collect();
    assert!(
        reached
            .iter()
            .all(|p| ["/redirect", "/echo/after", "/loop"].contains(&p.as_str())),
        "{reached:?}"
    );

    // Headers the host sets, and malformed ones, are refused before anything is sent.
    for headers in [
        json!({"Host": "x"}),
        json!({"bad header": "x"}),
        json!({"x-ok": "a\nb"}),
    ] {
        let got = fetch(&a, &up.url("/echo/h"), json!({"headers": headers})).await;
        assert_eq!(got["error"], "InvalidRequest", "{headers}: {got}");
    }
    // Tenant b has no rules: the same URL is refused (another tenant's rules do not apply).
    let hits = up.hits();
    denied(
        &fetch(&b, &up.url("/echo/x"), json!({})).await,
        "not allowed",
    );
    assert_eq!(up.hits(), hits);
    // The guest's own sockets have no network, and say where to go.
    let (_, body) = a
        .call("net", "sockets", json!([up.addr.port()]), json!({}))
        .await;
    let message = body["data"]["result"].as_str().unwrap_or("");
    assert!(message.contains("scriptbox.http"), "{body}");
    assert_eq!(up.hits(), hits);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn credentials_are_added_by_the_host_and_never_seen_by_the_guest() {
    let up = Upstream::start().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let secret_file = dir.path().join("token");
    std::fs::write(&secret_file, format!("{SECRET}\n")).expect("secret");
    let query_file = dir.path().join("query");
    std::fs::write(&query_file, QUERY_SECRET).expect("secret");
    let header = Auth {
        header: Some("X-Api-Token".into()),
        value_from: Some(format!("file:{}", secret_file.display())),
        ..Auth::default()
    };
    let query = Auth {
        query: Some("key".into()),
        value_from: Some(format!("file:{}", query_file.display())),
        ..Auth::default()
    };
    let missing = Auth {
        bearer_from: Some("env:SCRIPTBOX_TEST_NO_SUCH_SECRET".into()),
        ..Auth::default()
    };
    let egress = Egress {
        allow: vec![
            rule(up.url("/echo/h*"), &["GET"], Some(header)),
            rule(up.url("/echo/q*"), &["GET"], Some(query)),
            rule(up.url("/echo/m*"), &["GET"], Some(missing)),
            rule(up.url("/echo/plain*"), &["GET"], None),
            rule(up.url("/redirect"), &["GET"], None),
        ],
        ..Egress::default()
    };
    let (server, a, _) = server(egress, json!(null)).await;
    // The header form: the server got it; the guest reads neither the echo nor the header.
    let (status, body) = a
        .call(
            "net",
            "everything_seen",
            json!([up.url("/echo/h")]),
            json!({}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let seen = up.last();
    assert_eq!(seen.3.get("x-api-token").map(String::as_str), Some(SECRET));
    let text = body.to_string();
    assert!(!text.contains(SECRET), "{text}");
    assert!(text.contains("[redacted]"), "{text}");
    // The guest cannot override the host's credential header.
    let got = fetch(
        &a,
        &up.url("/echo/h"),
        json!({"headers": {"X-Api-Token": "mine"}}),
    )
    .await;
    let seen = up.last();
    assert_eq!(
        seen.3.get("x-api-token").map(String::as_str),
        Some(SECRET),
        "{got}"
    );
    // The query form: sent, scrubbed from the echo, and not in the URL the guest reads.
    let (_, body) = a
        .call(
            "net",
            "everything_seen",
            json!([up.url("/echo/q?x=1")]),
            json!({}),
        )
        .await;
    let seen = up.last();
    assert_eq!(seen.2, format!("x=1&key={QUERY_SECRET}"));
    assert!(!body.to_string().contains(QUERY_SECRET), "{body}");
    // A redirect from a rule without a credential to one with it: the credential is the
    // target rule's, added by the host; a redirect elsewhere does not carry it.
    let hop = format!("{}?to={}", up.url("/redirect"), up.url("/echo/plain"));
    let got = fetch(&a, &hop, json!({})).await;
    let seen = up.last();
    assert_eq!(
        (seen.1.as_str(), seen.3.get("x-api-token")),
        ("/echo/plain", None),
        "{got}"
    );
    // A credential the server does not have: refused, without naming more than the rule.
    let hits = up.hits();
    let got = fetch(&a, &up.url("/echo/m"), json!({})).await;
    denied(&got, "credential is not available");
    assert_eq!(up.hits(), hits);
    // The audit log has each request (host, method, status, size), and no secret.
    let admin = server.as_key(KEY_ADMIN);
    let started = Instant::now();
    let page = loop {
        let (status, page) = admin.get("/admin/audit?tenant=a&limit=100").await;
        assert_eq!(status, StatusCode::OK, "{page}");
        let requests = page["data"]["entries"]
            .as_array()
            .expect("entries")
            .iter()
            .filter(|e| e["event"] == "http_request")
            .count();
        if requests >= 5 {
            break page;
        }
        assert!(started.elapsed() < Duration::from_secs(2), "{page}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let entry = page["data"]["entries"]
        .as_array()
        .expect("entries")
        .iter()
        .find(|e| e["event"] == "http_request")
        .expect("an entry");
    assert_eq!(entry["detail"]["host"], "127.0.0.1", "{entry}");
    assert_eq!(entry["detail"]["method"], "GET");
    assert!(entry["detail"]["status"].is_u64() && entry["detail"]["bytes"].is_u64());
    let text = page.to_string();
    assert!(
        !text.contains(SECRET) && !text.contains(QUERY_SECRET),
        "{text}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn counts_sizes_and_time_are_bounded() {
    let up = Upstream::start().await;
    let egress = Egress {
        allow: vec![
            rule(up.url("/echo/*"), &["GET", "POST"], None),
            rule(up.url("/big"), &["GET"], None),
            rule(up.url("/slow"), &["GET"], None),
        ],
        requests_per_call: 3,
        response_bytes: 1000,
        call_bytes: 1500,
        request_bytes: 100,
        timeout_ms: 500,
        ..Egress::default()
    };
    let (_server, a, _) = server(egress, json!({"deadline_ms": 2000})).await;
    // Requests per call: 3 answered, the 4th refused; the next call starts afresh.
    for _ in 0..2 {
        let (_, body) = a
            .call("net", "repeat", json!([up.url("/echo/r"), 5]), json!({}))
            .await;
        let result = &body["data"]["result"];
        assert_eq!(
            (result[0].as_u64(), result[1].as_str()),
            (Some(3), Some("LimitExceeded")),
            "{body}"
        );
        assert_eq!(body["data"]["egress"]["requests"], 3);
    }
    // Response size: at the limit answered, past it refused.
    let got = fetch(&a, &format!("{}?n=1000", up.url("/big")), json!({})).await;
    assert_eq!(got["text"].as_str().map(str::len), Some(1000), "{got}");
    let got = fetch(&a, &format!("{}?n=1001", up.url("/big")), json!({})).await;
    assert_eq!(got["error"], "TooLarge", "{got}");
    // Bytes per call: two answers of 800 are more than 1500 together.
    let (_, body) = a
        .call(
            "net",
            "repeat",
            json!([format!("{}?n=800", up.url("/big")), 2]),
            json!({}),
        )
        .await;
    assert_eq!(body["data"]["result"][1], "TooLarge", "{body}");
    // Request body size.
    let got = fetch(
        &a,
        &up.url("/echo/b"),
        json!({"method": "POST", "body": "x".repeat(100)}),
    )
    .await;
    assert_eq!(got["status"], 200, "{got}");
    let got = fetch(
        &a,
        &up.url("/echo/b"),
        json!({"method": "POST", "body": "x".repeat(101)}),
    )
    .await;
    assert_eq!(got["error"], "TooLarge", "{got}");
    // The timeout: the policy's 500 ms, whatever the guest asks for.
    let started = Instant::now();
    let got = fetch(&a, &up.url("/slow"), json!({"timeout": 30})).await;
    assert_eq!(got["error"], "Timeout", "{got}");
    assert!(
        started.elapsed() < Duration::from_millis(1500),
        "{:?}",
        started.elapsed()
    );
    // A shorter one the guest asks for holds.
    let started = Instant::now();
    let got = fetch(&a, &up.url("/slow"), json!({"timeout": 0.1})).await;
    assert_eq!(got["error"], "Timeout", "{got}");
    assert!(
        started.elapsed() < Duration::from_millis(450),
        "{:?}",
        started.elapsed()
    );
    // The tool still answers after every refusal.
    let got = fetch(&a, &up.url("/echo/ok"), json!({})).await;
    assert_eq!(got["status"], 200, "{got}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn time_spent_on_http_counts_against_the_deadline() {
    let up = Upstream::start().await;
    let egress = Egress {
        allow: vec![rule(up.url("/slow"), &["GET"], None)],
        ..Egress::default()
    };
    // The request may take 10 s, the call only 1 s: the call ends at its deadline.
    let (_server, a, _) = server(egress, json!({"deadline_ms": 1000})).await;
    let started = Instant::now();
    let (status, body) = a
        .call("net", "fetch", json!([up.url("/slow")]), json!({}))
        .await;
    let took = started.elapsed();
    assert_eq!(
        (status, code(&body)),
        (StatusCode::UNPROCESSABLE_ENTITY, "deadline_exceeded"),
        "{body}"
    );
    assert!(took < Duration::from_millis(2500), "{took:?}");
    // and the tool answers again afterwards
    let (status, body) = a
        .call("net", "unpack", json!(["http://127.0.0.1:1/x"]), json!({}))
        .await;
    assert_eq!(
        status,
        StatusCode::UNPROCESSABLE_ENTITY,
        "a refused request raises: {body}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_per_minute_budget_is_the_tenants_across_calls() {
    let up = Upstream::start().await;
    let egress = Egress {
        allow: vec![rule(up.url("/echo/*"), &["GET"], None)],
        requests_per_minute: 4,
        ..Egress::default()
    };
    let (_server, a, b) = server(egress, json!(null)).await;
    let (_, body) = a
        .call("net", "repeat", json!([up.url("/echo/m"), 3]), json!({}))
        .await;
    assert_eq!(body["data"]["result"][0], 3, "{body}");
    // the next call has its own per-call budget, but only one request left this minute
    let (_, body) = a
        .call("net", "repeat", json!([up.url("/echo/m"), 3]), json!({}))
        .await;
    let result = &body["data"]["result"];
    assert_eq!(
        (result[0].as_u64(), result[1].as_str()),
        (Some(1), Some("LimitExceeded")),
        "{body}"
    );
    assert!(
        result[2].as_str().is_some_and(|m| m.contains("per minute")),
        "{body}"
    );
    // another tenant's budget (and rules) are its own
    denied(
        &fetch(&b, &up.url("/echo/m"), json!({})).await,
        "not allowed",
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_administrator_sets_a_tenants_egress_through_the_api() {
    let up = Upstream::start().await;
    let (server, _, _) = server(Egress::default(), json!(null)).await;
    let admin = server.as_key(KEY_ADMIN);
    // a malformed rule is refused, naming it
    for bad in [
        json!({"allow": [{"url": "ftp://x/"}]}),
        json!({"allow": [{"url": "https://*.com/"}]}),
        json!({"allow": [{"url": up.url("/*"), "methods": ["BREW"]}]}),
        json!({"allow": [{"url": up.url("/*"), "auth": {"bearer_from": "TOKEN"}}]}),
        json!({"requests_per_call": 0}),
        json!({"surprise": true}),
    ] {
        let (status, body) = admin
            .post(
                "/admin/tenants",
                json!({"id": "net2", "policy": {"egress": bad}}),
            )
            .await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{bad}: {body}");
    }
    let egress = json!({"allow": [{"url": up.url("/echo/*")}]});
    let (status, body) = admin
        .post(
            "/admin/tenants",
            json!({"id": "net2", "policy": {"egress": egress}}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let key = body["data"]["key"]["api_key"].as_str().expect("key");
    let net2 = server.as_key(key);
    let (status, body) = net2
        .put_script(
            "egress_fixture",
            Some("text/x-python"),
            include_str!("../scripts/egress_fixture.py"),
        )
        .await;
    assert!(status.is_success(), "{body}");
    net2.load("egress_fixture", "net").await;
    let got = fetch(&net2, &up.url("/echo/api"), json!({})).await;
    assert_eq!(got["status"], 200, "{got}");
    denied(
        &fetch(&net2, &up.url("/other"), json!({})).await,
        "no rule allows",
    );
}
