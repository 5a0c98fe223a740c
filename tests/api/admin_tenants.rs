//! Tenants and keys through the admin API: created with a key shown once, more keys for
//! rotation, revocation refused on the next request, deletion with everything the tenant
//! owns, the config file's tenants read-only, and all of it across a restart.

use reqwest::StatusCode;
use scriptbox::config::Role;
use scriptbox_tests::{TestServer, code, copy_scripts, tenant};
use serde_json::json;

async fn server() -> TestServer {
    TestServer::start_in(|config, dir| {
        let shared = dir.join("shared");
        copy_scripts(&shared);
        config.tenants = vec![
            tenant("root", "root-key", &shared, Role::Admin),
            tenant("plain", "plain-key", &shared, Role::Tenant),
        ];
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tenants_and_keys_through_the_api() {
    let server = server().await;
    let admin = server.as_key("root-key");
    // Only administrators.
    let (status, body) = server
        .as_key("plain-key")
        .post("/admin/tenants", json!({"id": "acme"}))
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{body}");

    let (status, created) = admin
        .post(
            "/admin/tenants",
            json!({"id": "acme", "quotas": {"max_tools": 3}}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{created}");
    assert_eq!(created["data"]["tenant"]["origin"], "api");
    let first = created["data"]["key"]["api_key"]
        .as_str()
        .expect("key")
        .to_owned();
    let first_id = created["data"]["key"]["key_id"]
        .as_str()
        .expect("id")
        .to_owned();
    assert!(first.starts_with("sbx_") && first.len() > 40, "{first}");
    // The key is not stored: no file of the store (its WAL included) holds it.
    for entry in std::fs::read_dir(&server.data_dir).expect("data dir") {
        let path = entry.expect("entry").path();
        if path.to_string_lossy().contains("scriptbox.db") {
            let stored = std::fs::read(&path).expect("store file");
            assert!(
                !stored.windows(first.len()).any(|w| w == first.as_bytes()),
                "the key itself is in {}",
                path.display()
            );
        }
    }

    let acme = server.as_key(&first);
    acme.put_module("tool", "def hi():\n    return 'acme'\n")
        .await;
    acme.load("tool", "t").await;
    assert_eq!(acme.call_ok("t", "hi", json!([])).await["result"], "acme");
    // Its quotas hold.
    acme.load("tool", "t2").await;
    acme.load("tool", "t3").await;
    let (status, body) = acme
        .post(
            "/python/load",
            json!({"script_name": "tool", "alias": "t4"}),
        )
        .await;
    assert_eq!(status, StatusCode::TOO_MANY_REQUESTS, "{body}");
    assert_eq!(code(&body), "too_many_tools");

    let (status, again) = admin.post("/admin/tenants", json!({"id": "acme"})).await;
    assert_eq!(status, StatusCode::CONFLICT, "{again}");
    assert_eq!(code(&again), "tenant_exists");
    for bad in [
        json!({"id": "Bad Id"}),
        json!({"id": "x", "quotas": {"max_tools": 0}}),
        json!({"id": "y", "nonsense": 1}),
    ] {
        let (status, body) = admin.post("/admin/tenants", bad.clone()).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{bad}: {body}");
    }

    // Rotation: a second key, then the first revoked.
    let (status, second) = admin.post("/admin/tenants/acme/keys", json!({})).await;
    assert_eq!(status, StatusCode::CREATED, "{second}");
    let second = second["data"]["api_key"].as_str().expect("key").to_owned();
    let (_, keys) = admin.get("/admin/tenants/acme/keys").await;
    assert_eq!(keys["data"].as_array().map(Vec::len), Some(2), "{keys}");
    assert!(
        !keys.to_string().contains(&first),
        "keys are never shown again: {keys}"
    );
    let (status, body) = admin
        .delete(&format!("/admin/tenants/acme/keys/{first_id}"))
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let (status, body) = acme.get("/python/list").await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "a revoked key: {body}");
    let rotated = server.as_key(&second);
    assert_eq!(
        rotated.call_ok("t", "hi", json!([])).await["result"],
        "acme"
    );

    // The config's tenants are read-only here.
    let (status, body) = admin.delete("/admin/tenants/plain").await;
    assert_eq!(status, StatusCode::CONFLICT, "{body}");
    assert_eq!(code(&body), "read_only_tenant");
    let (status, body) = admin.post("/admin/tenants/plain/keys", json!({})).await;
    assert_eq!(status, StatusCode::CONFLICT, "{body}");

    // After a restart: the tenant, its tools and the second key; the first stays revoked.
    let server = server.restart().await;
    let rotated = server.as_key(&second);
    let (status, list) = rotated.get("/python/list").await;
    assert_eq!(status, StatusCode::OK, "{list}");
    assert_eq!(list["data"]["scripts"], json!(["t", "t2", "t3"]));
    assert_eq!(
        rotated.call_ok("t", "hi", json!([])).await["result"],
        "acme"
    );
    let (status, _) = server.as_key(&first).get("/python/list").await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);

    // Deleted: its keys stop at once, and what it owned is gone.
    let admin = server.as_key("root-key");
    let (status, body) = admin.delete("/admin/tenants/acme").await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let (status, _) = rotated.get("/python/list").await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    let (status, _) = admin.delete("/admin/tenants/acme").await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    // A new tenant of the same id starts empty.
    let (status, created) = admin.post("/admin/tenants", json!({"id": "acme"})).await;
    assert_eq!(status, StatusCode::CREATED, "{created}");
    let fresh = server.as_key(created["data"]["key"]["api_key"].as_str().expect("key"));
    let (_, list) = fresh.get("/python/list").await;
    assert_eq!(list["data"]["scripts"], json!([]), "{list}");
    let (status, _) = fresh.get("/scripts/tool").await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let server = server.restart().await;
    let (_, list) = server.as_key("root-key").get("/admin/tenants").await;
    let ids: Vec<&str> = list["data"]
        .as_array()
        .expect("tenants")
        .iter()
        .filter_map(|t| t["id"].as_str())
        .collect();
    assert_eq!(ids, ["acme", "plain", "root"], "{list}");
}

/// `GET /admin/audit` until `wanted` entries of `tenant` are there (written in the
/// background), at most 2 s; the page.
async fn audit_of(admin: &scriptbox_tests::Api, tenant: &str, wanted: usize) -> serde_json::Value {
    let started = std::time::Instant::now();
    loop {
        let (status, page) = admin.get(&format!("/admin/audit?tenant={tenant}")).await;
        assert_eq!(status, StatusCode::OK, "{page}");
        if page["data"]["entries"].as_array().expect("entries").len() >= wanted {
            return page;
        }
        assert!(
            started.elapsed() < std::time::Duration::from_secs(2),
            "{page}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_audit_log_records_what_tenants_did_and_pages() {
    let server = server().await;
    let admin = server.as_key("root-key");
    let plain = server.as_key("plain-key");
    plain.load("my_calc", "calc").await;
    let (status, _) = plain.post("/python/unload", json!({"alias": "calc"})).await;
    assert_eq!(status, StatusCode::OK);
    let (status, _) = plain.get("/admin/tenants").await;
    assert_eq!(status, StatusCode::FORBIDDEN);

    let page = audit_of(&admin, "plain", 3).await;
    let entries = page["data"]["entries"].as_array().expect("entries");
    let events: Vec<&str> = entries.iter().filter_map(|e| e["event"].as_str()).collect();
    // newest first
    assert_eq!(
        events,
        ["forbidden", "tool_unloaded", "tool_loaded"],
        "{page}"
    );
    assert_eq!(entries[2]["detail"]["name"], "calc");
    assert!(entries[0]["node"].as_str().is_some_and(|n| !n.is_empty()));
    assert!(entries.iter().all(|e| e["tenant"] == "plain"));
    assert!(entries.iter().all(|e| {
        e["detail"]["request_id"]
            .as_str()
            .is_some_and(|r| !r.is_empty())
    }));

    // paging: one at a time, following next_cursor
    let (_, first) = admin.get("/admin/audit?tenant=plain&limit=1").await;
    let cursor = first["data"]["next_cursor"].as_i64().expect("cursor");
    let (_, second) = admin
        .get(&format!(
            "/admin/audit?tenant=plain&limit=1&cursor={cursor}"
        ))
        .await;
    assert_eq!(
        second["data"]["entries"][0]["event"], "tool_unloaded",
        "{second}"
    );

    // bad input, and a tenant that may not read it
    for query in ["limit=0", "limit=1001", "cursor=x", "colour=red"] {
        let (status, body) = admin.get(&format!("/admin/audit?{query}")).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{query}: {body}");
    }
    let (status, body) = plain.get("/admin/audit").await;
    assert_eq!((status, code(&body)), (StatusCode::FORBIDDEN, "forbidden"));
}
