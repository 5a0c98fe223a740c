//! Tenant scripts over the API (`/scripts`): upload, versions, loading by name or version,
//! the shared folder beside them, quotas in obeyed/violated pairs, bad input, and isolation
//! between tenants.

use std::io::Write as _;

use reqwest::StatusCode;
use scriptbox::config::Role;
use scriptbox_tests::{TestServer, code, copy_scripts, listed_tool as tool, tenant};
use serde_json::{Value, json};

const V1: &str = "def version():\n    return 1\n\ndef add(a, b):\n    return a + b\n";
const V2: &str = "def version():\n    return 2\n";

fn zip_of(entries: &[(&str, &[u8])]) -> Vec<u8> {
    let mut out = zip::ZipWriter::new(std::io::Cursor::new(Vec::new()));
    for (name, bytes) in entries {
        out.start_file(*name, zip::write::SimpleFileOptions::default())
            .expect("start");
        out.write_all(bytes).expect("write");
    }
    out.finish().expect("finish").into_inner()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upload_load_call_and_a_new_version_waits_for_reload() {
    let server = TestServer::start().await;
    let (status, body) = server
        .put_script("mine", Some("text/x-python"), V1.to_owned())
        .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let v1 = body["data"]["version"]
        .as_str()
        .expect("version")
        .to_owned();
    assert_eq!(v1.len(), 64, "a SHA-256: {v1}");
    assert_eq!(body["data"]["size"], V1.len());
    assert!(body["data"]["created_at"].as_f64().is_some(), "{body}");
    // The same content again: 200, the same version.
    let (status, again) = server
        .put_script("mine", Some("text/x-python"), V1.to_owned())
        .await;
    assert_eq!(status, StatusCode::OK, "{again}");
    assert_eq!(again["data"]["version"], v1.as_str());

    let loaded = server.load("mine", "t").await;
    assert_eq!(loaded["data"]["script_version"], v1.as_str());
    assert_eq!(loaded["data"]["script_source"], "tenant");
    assert_eq!(server.call_ok("t", "version", json!([])).await["result"], 1);
    assert_eq!(server.call_ok("t", "add", json!([2, 3])).await["result"], 5);

    let v2 = server.put_module("mine", V2).await;
    assert_ne!(v1, v2);
    // A running tool keeps its version until it is reloaded.
    assert_eq!(server.call_ok("t", "version", json!([])).await["result"], 1);
    let (_, list) = server.get("/python/list").await;
    assert_eq!(tool(&list, "t")["script_version"], v1.as_str());
    let (status, reloaded) = server.post("/python/reload", json!({"alias": "t"})).await;
    assert_eq!(status, StatusCode::OK, "{reloaded}");
    assert_eq!(reloaded["data"]["script_version"], v2.as_str());
    assert_eq!(server.call_ok("t", "version", json!([])).await["result"], 2);

    // Pinning: a load of the older version runs it.
    let (status, pinned) = server
        .post(
            "/python/load",
            json!({"script_name": "mine", "alias": "old", "version": v1}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{pinned}");
    assert_eq!(pinned["data"]["script_version"], v1.as_str());
    assert_eq!(
        server.call_ok("old", "version", json!([])).await["result"],
        1
    );
    let (status, unknown) = server
        .post(
            "/python/load",
            json!({"script_name": "mine", "alias": "nope", "version": "0".repeat(64)}),
        )
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{unknown}");

    // Versions, newest first, and each one's source.
    let (status, detail) = server.get("/scripts/mine").await;
    assert_eq!(status, StatusCode::OK, "{detail}");
    assert_eq!(detail["data"]["source"], "tenant");
    assert_eq!(detail["data"]["latest_version"], v2.as_str());
    let versions: Vec<&str> = detail["data"]["versions"]
        .as_array()
        .expect("versions")
        .iter()
        .filter_map(|v| v["version"].as_str())
        .collect();
    assert_eq!(versions, [v2.as_str(), v1.as_str()]);
    let (status, headers, source) = server
        .get_raw(&format!("/scripts/mine/source?version={v1}"))
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(source, V1.as_bytes());
    assert!(
        headers["content-type"]
            .to_str()
            .expect("ascii")
            .starts_with("text/x-python"),
        "{headers:?}"
    );
    assert_eq!(headers["x-script-version"], v1.as_str());
    let (_, _, latest) = server.get_raw("/scripts/mine/source").await;
    assert_eq!(latest, V2.as_bytes());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_package_brings_its_modules_and_data_files() {
    let server = TestServer::start().await;
    let package = zip_of(&[
        (
            "__init__.py",
            b"from . import helpers\nimport json, os\n\ndef greet(name):\n    \
              return helpers.hello(name)\n\ndef data():\n    \
              with open(os.path.join(os.path.dirname(__file__), 'data', 'v.json')) as f:\n        \
              return json.load(f)\n",
        ),
        (
            "helpers.py",
            b"def hello(name):\n    return 'hello ' + name\n",
        ),
        ("data/v.json", b"{\"answer\": 42}"),
    ]);
    let (status, body) = server
        .put_script("pkg", Some("application/zip"), package.clone())
        .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    server.load("pkg", "p").await;
    assert_eq!(
        server.call_ok("p", "greet", json!(["you"])).await["result"],
        "hello you"
    );
    assert_eq!(
        server.call_ok("p", "data", json!([])).await["result"],
        json!({"answer": 42})
    );
    let (status, headers, zip) = server.get_raw("/scripts/pkg/source").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(headers["content-type"], "application/zip");
    assert_eq!(zip, package);
    // One top folder named like the script is the package too.
    let foldered = zip_of(&[("pkg2/__init__.py", b"X = 7\n")]);
    let (status, body) = server
        .put_script("pkg2", Some("application/zip"), foldered)
        .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    server.load("pkg2", "p2").await;
    let (status, x) = server
        .post(
            "/python/getVariable",
            json!({"alias": "p2", "variable_name": "X"}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{x}");
    assert_eq!(x["data"]["result"], 7);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_tenants_scripts_and_the_shared_ones_side_by_side() {
    let server = TestServer::start().await;
    // `my_calc` is a shared script; the tenant's own of that name shadows it.
    let (_, before) = server.get("/scripts").await;
    let shared = before["data"]["scripts"]
        .as_array()
        .expect("scripts")
        .iter()
        .find(|s| s["name"] == "my_calc")
        .cloned()
        .expect("my_calc listed");
    assert_eq!(shared["source"], "shared");
    let (status, detail) = server.get("/scripts/my_calc").await;
    assert_eq!(status, StatusCode::OK, "{detail}");
    assert_eq!(detail["data"]["source"], "shared");
    let loaded = server.load("my_calc", "shared_calc").await;
    assert_eq!(loaded["data"]["script_source"], "shared");
    assert_eq!(loaded["data"]["script_version"], shared["latest_version"]);

    server
        .put_module("my_calc", "def add(a, b):\n    return 'mine'\n")
        .await;
    let (_, after) = server.get("/scripts").await;
    let mine: Vec<&Value> = after["data"]["scripts"]
        .as_array()
        .expect("scripts")
        .iter()
        .filter(|s| s["name"] == "my_calc")
        .collect();
    assert_eq!(mine.len(), 1, "one entry per name: {after}");
    assert_eq!(mine[0]["source"], "tenant");
    server.load("my_calc", "own_calc").await;
    assert_eq!(
        server.call_ok("own_calc", "add", json!([1, 2])).await["result"],
        "mine"
    );
    // The tool loaded before keeps the shared script.
    assert_eq!(
        server.call_ok("shared_calc", "add", json!([1, 2])).await["result"],
        3
    );
    // A shared script cannot be deleted here.
    let (status, refused) = server.delete("/scripts/counter").await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{refused}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deleting_a_script_in_use_is_refused_unless_forced() {
    let server = TestServer::start().await;
    server.put_module("gone", V1).await;
    server.load("gone", "g").await;
    let (status, refused) = server.delete("/scripts/gone").await;
    assert_eq!(status, StatusCode::CONFLICT, "{refused}");
    assert_eq!(code(&refused), "script_in_use");
    assert_eq!(refused["error"]["details"]["tools"], json!(["g"]));
    assert_eq!(server.call_ok("g", "version", json!([])).await["result"], 1);
    let (status, deleted) = server.delete("/scripts/gone?force=true").await;
    assert_eq!(status, StatusCode::OK, "{deleted}");
    assert_eq!(deleted["data"]["unloaded"], json!(["g"]));
    let (status, _) = server.get("/scripts/gone").await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (status, _) = server.call("g", "version", json!([]), json!({})).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    // Not in use: deleted at once.
    server.put_module("free", V1).await;
    let (status, _) = server.delete("/scripts/free").await;
    assert_eq!(status, StatusCode::OK);
    let (status, _) = server.delete("/scripts/free").await;
    assert_eq!(status, StatusCode::NOT_FOUND);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_uploads_are_refused_and_nothing_is_stored() {
    let server = TestServer::start_with(|config| {
        config.quotas.max_script_bytes = 200_000;
    })
    .await;
    let refused = |status: StatusCode, expected: StatusCode, code_: &str, body: &Value, what| {
        assert_eq!(status, expected, "{what}: {body}");
        assert_eq!(code(body), code_, "{what}: {body}");
    };
    let (status, body) = server
        .put_script("big", Some("text/x-python"), "#".repeat(200_001))
        .await;
    refused(
        status,
        StatusCode::PAYLOAD_TOO_LARGE,
        "payload_too_large",
        &body,
        "oversized",
    );
    let (status, body) = server
        .put_script("bin", Some("text/x-python"), vec![b'x', 0xff, 0xfe])
        .await;
    refused(
        status,
        StatusCode::BAD_REQUEST,
        "bad_request",
        &body,
        "not UTF-8",
    );
    let long = "a".repeat(65);
    for name in ["1abc", "a-b", "class", long.as_str()] {
        let (status, body) = server
            .put_script(name, Some("text/x-python"), "x = 1\n")
            .await;
        refused(status, StatusCode::BAD_REQUEST, "bad_request", &body, name);
    }
    let (status, body) = server
        .put_script(
            "broken",
            Some("text/x-python"),
            "x = 1\ndef f(:\n    pass\n",
        )
        .await;
    refused(
        status,
        StatusCode::UNPROCESSABLE_ENTITY,
        "syntax_error",
        &body,
        "syntax",
    );
    assert_eq!(body["error"]["details"]["line"], 2, "{body}");
    assert!(
        body["error"]["details"]["column"].as_u64().is_some(),
        "{body}"
    );
    assert_eq!(body["error"]["details"]["file"], "/scripts/broken.py");
    let (status, body) = server.put_script("odd", Some("image/png"), "x = 1\n").await;
    refused(
        status,
        StatusCode::UNSUPPORTED_MEDIA_TYPE,
        "unsupported_media_type",
        &body,
        "type",
    );

    // Zips: a path outside the package, a link, too many entries, a bomb, no __init__.
    let slip = zip_of(&[("__init__.py", b""), ("../evil.py", b"")]);
    let mut link = zip::ZipWriter::new(std::io::Cursor::new(Vec::new()));
    link.start_file("__init__.py", zip::write::SimpleFileOptions::default())
        .expect("start");
    link.add_symlink(
        "evil",
        "/etc/passwd",
        zip::write::SimpleFileOptions::default(),
    )
    .expect("symlink");
    let link = link.finish().expect("finish").into_inner();
    let many_names: Vec<String> = (0..1001).map(|i| format!("f{i}.txt")).collect();
    let mut many_entries: Vec<(&str, &[u8])> = vec![("__init__.py", b"")];
    many_entries.extend(many_names.iter().map(|n| (n.as_str(), &b""[..])));
    let many = zip_of(&many_entries);
    let bomb = zip_of(&[("__init__.py", b""), ("zeros.bin", &vec![0u8; 1 << 20])]);
    let no_init = zip_of(&[("helpers.py", b"")]);
    let bad_py = zip_of(&[("__init__.py", b"def (:\n")]);
    for (zip, status_, code_, what) in [
        (slip, StatusCode::BAD_REQUEST, "invalid_package", "zip slip"),
        (link, StatusCode::BAD_REQUEST, "invalid_package", "link"),
        (
            many,
            StatusCode::BAD_REQUEST,
            "invalid_package",
            "too many entries",
        ),
        (
            bomb,
            StatusCode::PAYLOAD_TOO_LARGE,
            "payload_too_large",
            "zip bomb",
        ),
        (
            no_init,
            StatusCode::BAD_REQUEST,
            "invalid_package",
            "no __init__",
        ),
        (
            bad_py,
            StatusCode::UNPROCESSABLE_ENTITY,
            "syntax_error",
            "a bad module",
        ),
    ] {
        assert!(zip.len() <= 200_000, "{what}: {} bytes", zip.len());
        let (status, body) = server.put_script("pkg", Some("application/zip"), zip).await;
        refused(status, status_, code_, &body, what);
    }
    let (_, list) = server.get("/scripts").await;
    let tenant_scripts: Vec<&Value> = list["data"]["scripts"]
        .as_array()
        .expect("scripts")
        .iter()
        .filter(|s| s["source"] == "tenant")
        .collect();
    assert!(tenant_scripts.is_empty(), "nothing stored: {list}");
    let (status, _) = server.get("/scripts/pkg").await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    // The server still serves.
    server.put_module("fine", V1).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn script_quotas_are_obeyed_and_enforced() {
    let server = TestServer::start_with(|config| {
        config.quotas.max_scripts = 2;
        config.quotas.max_script_bytes = 2048;
        config.quotas.scripts_bytes = 6000;
        config.quotas.script_versions = 2;
    })
    .await;
    // max_script_bytes: at the limit is stored, one byte more is not.
    let exact = format!("x = 1\n{}", "#".repeat(2048 - 6));
    assert_eq!(exact.len(), 2048);
    server.put_module("a", &exact).await;
    let (status, body) = server
        .put_script("a", Some("text/x-python"), format!("{exact}#"))
        .await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE, "{body}");
    // max_scripts: two names fit, a third does not; a new version of one does.
    server.put_module("b", "y = 1\n").await;
    let (status, body) = server
        .put_script("c", Some("text/x-python"), "z = 1\n")
        .await;
    assert_eq!(status, StatusCode::INSUFFICIENT_STORAGE, "{body}");
    assert_eq!(code(&body), "quota_exceeded");
    assert_eq!(body["error"]["details"]["quota"], "max_scripts");
    server.put_module("b", "y = 2\n").await;
    // script_versions: the oldest is pruned...
    server.put_module("b", "y = 3\n").await;
    let (_, detail) = server.get("/scripts/b").await;
    assert_eq!(
        detail["data"]["versions"].as_array().map(Vec::len),
        Some(2),
        "{detail}"
    );
    // ...unless a loaded tool runs it.
    server.load("b", "pinned").await;
    server.put_module("b", "y = 4\n").await;
    server.put_module("b", "y = 5\n").await;
    let (_, detail) = server.get("/scripts/b").await;
    assert_eq!(
        detail["data"]["versions"].as_array().map(Vec::len),
        Some(3),
        "{detail}"
    );
    let (status, y) = server
        .post(
            "/python/getVariable",
            json!({"alias": "pinned", "variable_name": "y"}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{y}");
    assert_eq!(y["data"]["result"], 3);
    // scripts_bytes (6000): a second big version of `a` fits (4112 bytes in all)...
    let a2 = server
        .put_module("a", &format!("w = 2\n{}", "#".repeat(2040)))
        .await;
    // ...a third too, as pruning `a`'s oldest makes room (4110)...
    server
        .put_module("a", &format!("w = 3\n{}", "#".repeat(2040)))
        .await;
    // ...but with both kept by tools, a fourth would need 6156.
    server.load("a", "hold_latest").await;
    let (status, body) = server
        .post(
            "/python/load",
            json!({"script_name": "a", "alias": "hold_a2", "version": a2}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let (status, body) = server
        .put_script(
            "a",
            Some("text/x-python"),
            format!("w = 4\n{}", "#".repeat(2040)),
        )
        .await;
    assert_eq!(status, StatusCode::INSUFFICIENT_STORAGE, "{body}");
    assert_eq!(body["error"]["details"]["quota"], "scripts_bytes");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tenant_never_sees_another_tenants_scripts() {
    let server = TestServer::start_in(|config, dir| {
        let shared = dir.join("shared");
        copy_scripts(&shared);
        config.tenants = vec![
            tenant("alice", "alice-key", &shared, Role::Tenant),
            tenant("bob", "bob-key", &shared, Role::Tenant),
        ];
    })
    .await;
    let (alice, bob) = (server.as_key("alice-key"), server.as_key("bob-key"));
    let version = alice.put_module("secret", V1).await;
    for path in [
        "/scripts/secret".to_owned(),
        "/scripts/secret/source".to_owned(),
        format!("/scripts/secret/source?version={version}"),
    ] {
        let (status, body) = bob.get(&path).await;
        assert_eq!(status, StatusCode::NOT_FOUND, "{path}: {body}");
    }
    let (status, _) = bob.delete("/scripts/secret").await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (status, body) = bob
        .post(
            "/python/load",
            json!({"script_name": "secret", "alias": "s"}),
        )
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{body}");
    let (_, list) = bob.get("/scripts").await;
    assert!(
        !list.to_string().contains("secret"),
        "bob's list names alice's script: {list}"
    );
    // Bob's own script of that name is his.
    bob.put_module("secret", V2).await;
    bob.load("secret", "s").await;
    assert_eq!(bob.call_ok("s", "version", json!([])).await["result"], 2);
    alice.load("secret", "s").await;
    assert_eq!(alice.call_ok("s", "version", json!([])).await["result"], 1);
}
