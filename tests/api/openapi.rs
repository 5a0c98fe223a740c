//! `GET /openapi.json` and `GET /docs` against the written API reference: every route of
//! `docs/api.md` is in the document with its method and every path of the document is in
//! `docs/api.md`, so neither can drift from the other (and the document's paths are the
//! router's, since the router is built from the same annotations); the document's error codes
//! are those of `docs/errors.md`.

use std::collections::BTreeSet;

use reqwest::StatusCode;
use scriptbox::config::Role;
use scriptbox_tests::{TestServer, copy_scripts, tenant};
use serde_json::Value;

const METHODS: [&str; 4] = ["get", "put", "post", "delete"];

/// The routes whose body is optional: their handlers read it with `OptionalJsonBody`.
const OPTIONAL_BODY: [&str; 2] = [
    "/python/clearUnusedResources",
    "/python/configurePerformance",
];

/// `docs/api.md`: the API reference, with the route table.
fn api_doc() -> String {
    std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../docs/api.md"))
        .expect("docs/api.md")
}

/// `docs/errors.md`: the error codes table.
fn errors_doc() -> String {
    std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../docs/errors.md"))
        .expect("docs/errors.md")
}

/// The `code` spans of a table cell.
fn spans(cell: &str) -> Vec<&str> {
    cell.split('`').skip(1).step_by(2).collect()
}

/// A route of the route table of `docs/api.md`, with its "body" cell.
struct DocRoute {
    method: String,
    path: String,
    body: String,
}

/// Every route of the route table of `docs/api.md`: rows beginning with "| `GET /...",
/// "| `PUT /...", "| `POST /..." or "| `DELETE /..."; a row may name a second route by its last segment
/// ("`POST /python/installPackage`, `uninstallPackage`").
fn doc_routes(doc: &str) -> Vec<DocRoute> {
    let mut routes = Vec::new();
    for line in doc.lines() {
        let Some(rest) = line.strip_prefix("| `") else {
            continue;
        };
        if !["GET /", "PUT /", "POST /", "DELETE /"]
            .iter()
            .any(|start| rest.starts_with(start))
        {
            continue;
        }
        let cells: Vec<&str> = line.split('|').map(str::trim).collect();
        let (route, body) = (cells[1], cells[2]);
        let names = spans(route);
        let (method, path) = names[0].split_once(' ').expect("`METHOD /path`");
        let mut push = |path: String| {
            routes.push(DocRoute {
                method: method.to_lowercase(),
                path,
                body: body.to_owned(),
            })
        };
        push(path.to_owned());
        for sibling in &names[1..] {
            let parent = path.rsplit_once('/').expect("a path").0;
            push(format!("{parent}/{sibling}"));
        }
    }
    routes
}

/// Every code of the table of `docs/errors.md`'s "Error codes" section, from its heading
/// (a line starting with `#` that names "Error codes", at any level) to the next heading
/// (a row may name two codes: "`a` / `b`").
fn doc_error_codes(doc: &str) -> BTreeSet<String> {
    let section: Vec<&str> = doc
        .lines()
        .skip_while(|line| !(line.starts_with('#') && line.contains("Error codes")))
        .skip(1)
        .take_while(|line| !line.starts_with('#'))
        .collect();
    assert!(
        !section.is_empty(),
        "docs/errors.md: no Error codes section"
    );
    section
        .into_iter()
        .filter(|line| line.starts_with("| `"))
        .flat_map(|line| spans(line.split('|').nth(1).unwrap_or_default()))
        .map(str::to_owned)
        .collect()
}

/// (method, path, operation) of every operation in the document.
fn operations(doc: &Value) -> Vec<(String, String, Value)> {
    let paths = doc["paths"].as_object().expect("paths");
    let mut all = Vec::new();
    for (path, item) in paths {
        let item = item.as_object().expect("path item");
        for (method, operation) in item {
            assert!(
                METHODS.contains(&method.as_str()),
                "{path}: unexpected method {method}"
            );
            all.push((method.clone(), path.clone(), operation.clone()));
        }
    }
    all
}

fn all_refs<'a>(value: &'a Value, out: &mut Vec<&'a str>) {
    match value {
        Value::Object(map) => {
            for (key, inner) in map {
                match (key.as_str(), inner) {
                    ("$ref", Value::String(target)) => out.push(target),
                    _ => all_refs(inner, out),
                }
            }
        }
        Value::Array(items) => items.iter().for_each(|item| all_refs(item, out)),
        _ => {}
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_document_covers_every_route_of_the_api_reference_and_no_other() {
    let server = TestServer::start().await;
    let (status, doc) = server.get("/openapi.json").await;
    assert_eq!(status, StatusCode::OK, "{doc}");
    assert!(
        doc["openapi"].as_str().is_some_and(|v| v.starts_with("3.")),
        "not OpenAPI 3: {}",
        doc["openapi"]
    );

    let routes = doc_routes(&api_doc());
    assert!(
        routes.len() > 40,
        "the route table of docs/api.md was not found"
    );
    let documented: BTreeSet<(String, String)> = operations(&doc)
        .into_iter()
        .map(|(method, path, _)| (method, path))
        .collect();
    let listed: BTreeSet<(String, String)> = routes
        .iter()
        .map(|r| (r.method.clone(), r.path.clone()))
        .collect();
    let missing: Vec<_> = listed.difference(&documented).collect();
    assert!(
        missing.is_empty(),
        "docs/api.md routes missing from the document: {missing:?}"
    );
    let unlisted: Vec<_> = documented.difference(&listed).collect();
    assert!(
        unlisted.is_empty(),
        "document routes missing from docs/api.md: {unlisted:?}"
    );

    // Request bodies: every POST that takes one documents it; an optional one
    // (`OptionalJsonBody`) is not required; a route whose body in docs/api.md is "–" (none, or
    // ignored) documents none.
    for route in routes.iter().filter(|r| r.method == "post") {
        let body = &doc["paths"][&route.path]["post"]["requestBody"];
        let optional = OPTIONAL_BODY.contains(&route.path.as_str());
        if route.body.starts_with('–') {
            assert!(body.is_null(), "{}: takes no body: {body}", route.path);
            continue;
        }
        assert!(body.is_object(), "{}: no requestBody", route.path);
        assert_eq!(
            body["required"].as_bool().unwrap_or(false),
            !optional,
            "{}: requestBody.required",
            route.path
        );
        let schema = &body["content"]["application/json"]["schema"];
        assert!(schema.is_object(), "{}: no JSON schema: {body}", route.path);
    }

    // Responses: a 2xx (but for the not-yet-available routes, which answer 501), a 4xx on
    // every route behind the key (401 at least), none on the keyless ones.
    let mut operation_ids = BTreeSet::new();
    for (method, path, operation) in operations(&doc) {
        let responses = operation["responses"].as_object().expect("responses");
        let statuses: Vec<&str> = responses.keys().map(String::as_str).collect();
        let unavailable = statuses.contains(&"501");
        assert!(
            unavailable || statuses.iter().any(|s| s.starts_with('2')),
            "{method} {path}: no 2xx response: {statuses:?}"
        );
        let keyed = operation["security"]
            .as_array()
            .is_some_and(|s| !s.is_empty());
        let keyless =
            ["/health", "/openapi.json", "/docs", "/admin/dashboard"].contains(&path.as_str());
        assert_eq!(keyed, !keyless, "{method} {path}: security");
        if keyed {
            assert!(
                statuses.iter().any(|s| s.starts_with('4')) && statuses.contains(&"401"),
                "{method} {path}: no 4xx response: {statuses:?}"
            );
        }
        for (status, response) in responses {
            if status.starts_with('4') || status.starts_with('5') {
                let schema = &response["content"]["application/json"]["schema"];
                let target = schema["$ref"].as_str().unwrap_or_default();
                // /health's 503 is its own body (the store unreachable), for proxies to read.
                if path == "/health" && status == "503" {
                    assert!(target.ends_with("/Envelope_Health"), "{schema}");
                    continue;
                }
                assert!(
                    target.ends_with("/ErrorEnvelope") || target.ends_with("/ExecuteFailure"),
                    "{method} {path} {status}: not the error envelope: {schema}"
                );
            }
        }
        let id = operation["operationId"].as_str().expect("operationId");
        assert!(
            operation_ids.insert(id.to_owned()),
            "operationId {id} twice"
        );
    }

    // The error code enum is the table of docs/errors.md.
    let codes: BTreeSet<String> = doc["components"]["schemas"]["ErrorCode"]["enum"]
        .as_array()
        .expect("ErrorCode enum")
        .iter()
        .filter_map(|c| c.as_str().map(str::to_owned))
        .collect();
    assert_eq!(
        codes,
        doc_error_codes(&errors_doc()),
        "the codes of docs/errors.md"
    );
    let envelope = &doc["components"]["schemas"]["ErrorEnvelope"];
    assert_eq!(
        envelope["properties"]["error"]["$ref"], "#/components/schemas/ErrorBody",
        "{envelope}"
    );

    // Every reference resolves.
    let mut refs = Vec::new();
    all_refs(&doc, &mut refs);
    assert!(!refs.is_empty());
    for target in refs {
        let name = target
            .strip_prefix("#/components/schemas/")
            .unwrap_or_else(|| panic!("unexpected reference {target}"));
        assert!(
            doc["components"]["schemas"][name].is_object(),
            "dangling reference {target}"
        );
    }
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_docs_page_is_self_contained_html_with_every_route() {
    let server = TestServer::start().await;
    let (_, doc) = server.get("/openapi.json").await;
    let response = server
        .request(reqwest::Method::GET, "/docs")
        .send()
        .await
        .expect("request");
    assert_eq!(response.status(), StatusCode::OK);
    let content_type = response
        .headers()
        .get(reqwest::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    assert!(content_type.starts_with("text/html"), "{content_type}");
    let page = response.text().await.expect("body");
    assert!(page.starts_with("<!DOCTYPE html>"), "{}", &page[..100]);
    for path in doc["paths"].as_object().expect("paths").keys() {
        assert!(
            page.contains(&format!("<code>{path}</code>")),
            "{path} is not on the page"
        );
    }
    for schema in ["ErrorEnvelope", "ErrorCode", "ToolInfo", "CallBody"] {
        assert!(
            page.contains(&format!("id=\"schema-{schema}\"")),
            "{schema}"
        );
    }
    for code in ["alias_exists", "payload_too_large", "object_lost"] {
        assert!(page.contains(code), "{code} is not on the page");
    }
    // No script and nothing fetched from elsewhere.
    let lower = page.to_lowercase();
    for forbidden in ["<script", "src=", "http://", "https://", "@import"] {
        assert!(
            !lower.contains(forbidden),
            "the page contains {forbidden:?}"
        );
    }
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_document_and_the_page_need_no_key() {
    const KEY: &str = "key-of-the-docs-tenant-0123456789";
    let server = TestServer::start_in(|config, dir| {
        let scripts = dir.join("scripts-docs");
        copy_scripts(&scripts);
        config.tenants = vec![tenant("docs", KEY, &scripts, Role::Tenant)];
    })
    .await;
    let (status, body) = server.get("/python/list").await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "{body}");
    for path in ["/openapi.json", "/docs", "/health"] {
        let response = server
            .request(reqwest::Method::GET, path)
            .send()
            .await
            .expect("request");
        assert_eq!(response.status(), StatusCode::OK, "{path}");
        assert!(response.headers().contains_key("x-request-id"), "{path}");
    }
    let (status, _) = server.as_key(KEY).get("/python/list").await;
    assert_eq!(status, StatusCode::OK);
    server.stop().await;
}
