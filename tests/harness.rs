//! Test harness: starts the real scriptbox server on 127.0.0.1:0 with the real interpreter and
//! talks to it over HTTP. The engine (and its compiled interpreter, from the on-disk cache) is
//! loaded once per test binary and shared; every server gets its own data and scripts folders.

pub use scriptbox::bench::services;

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use reqwest::StatusCode;
use scriptbox::config::{Config, Quotas, Role, SOURCE_ROOT, TenantConfig};
use scriptbox::engine::Engine;
use scriptbox::server::Server;
use serde_json::{Value, json};
use tokio::sync::oneshot;

static ENGINE: OnceLock<Engine> = OnceLock::new();
static ENGINE_INIT: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// The server logs on stderr when `SCRIPTBOX_TEST_LOG` is set (an `EnvFilter`, such as
/// `info` or `scriptbox=debug`), for a failing test's details.
fn init_log() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        if let Ok(filter) = std::env::var("SCRIPTBOX_TEST_LOG") {
            let _ = tracing_subscriber::fmt()
                .with_env_filter(tracing_subscriber::EnvFilter::new(filter))
                .with_writer(std::io::stderr)
                .try_init();
        }
    });
}

/// The shared engine; the first caller fetches the interpreter if needed and loads (or, once
/// per machine, compiles) it and its images.
pub fn engine() -> Engine {
    init_log();
    if let Some(engine) = ENGINE.get() {
        return engine.clone();
    }
    let _guard = ENGINE_INIT.lock().unwrap_or_else(|p| p.into_inner());
    if let Some(engine) = ENGINE.get() {
        return engine.clone();
    }
    let config = Config::default();
    scriptbox::artifacts::ensure(&config.artifacts_dir, true).expect("fetching the interpreter");
    let engine =
        Engine::load(&config.snapshot_wasm(), &config.cache_dir).expect("loading the interpreter");
    load_images(&engine, &config);
    let _ = ENGINE.set(engine.clone());
    engine
}

/// Loads (or, once per machine, builds) the pre-initialised images into the shared engine
/// before any test server starts, so every server has them at once: tests then run on the
/// images, as a server does once they are ready, and a first build never competes with
/// running tests for the CPU. Servers find them in the engine (`Sandbox::prepare_images`).
fn load_images(engine: &Engine, config: &Config) {
    let guest = tempfile::tempdir().expect("tempdir");
    let driver = scriptbox::guest::install_driver(guest.path()).expect("driver");
    let images = scriptbox::sandbox::image::load_or_build(
        engine.wasmtime(),
        &config.plain_wasm(),
        &config.stdlib_dir(),
        &driver,
        &config.cache_dir,
    )
    .expect("building the interpreter images");
    assert!(
        engine.images().set(Ok(images)).is_ok(),
        "the images were loaded twice"
    );
}

/// A running server and a client for it (keyless, or with the key of [`TestServer::as_key`]).
pub struct TestServer {
    api: Api,
    pub scripts_dir: PathBuf,
    pub data_dir: PathBuf,
    config: Config,
    shutdown: Option<oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<anyhow::Result<()>>>,
    _dir: tempfile::TempDir,
}

impl std::ops::Deref for TestServer {
    type Target = Api;
    fn deref(&self) -> &Api {
        &self.api
    }
}

/// An HTTP client for one server, sending one API key (or none).
#[derive(Clone)]
pub struct Api {
    pub base: String,
    pub client: reqwest::Client,
    pub key: Option<String>,
}

/// A tenant for a test config: `id` with key `key`, its scripts in `scripts`.
pub fn tenant(id: &str, key: &str, scripts: &Path, role: Role) -> TenantConfig {
    TenantConfig {
        id: id.to_owned(),
        role,
        api_key_sha256: vec![scriptbox::tenants::hash_key(key)],
        scripts_dir: scripts.to_path_buf(),
        quotas: Quotas::default(),
        limits: None,
        default_limits: Default::default(),
        policy: Default::default(),
    }
}

/// Copies the example scripts and the test fixtures into `dir`.
pub fn copy_scripts(dir: &Path) {
    std::fs::create_dir_all(dir).expect("scripts dir");
    for source in ["scripts", "tests/scripts"] {
        let folder = Path::new(SOURCE_ROOT).join(source);
        for entry in std::fs::read_dir(&folder).expect("read scripts") {
            let path = entry.expect("entry").path();
            if path.extension().is_some_and(|e| e == "py") {
                std::fs::copy(&path, dir.join(path.file_name().expect("name")))
                    .expect("copy script");
            }
        }
    }
}

/// A config for tests: the example scripts plus the test fixtures, private folders.
pub fn test_config(dir: &Path) -> Config {
    let scripts = dir.join("scripts");
    copy_scripts(&scripts);
    Config {
        port: 0,
        scripts_dir: scripts,
        data_dir: dir.join("data"),
        fetch_if_missing: false,
        native: scriptbox::config::NativeConfig {
            modules_dir: dir.join("modules"),
            ..Default::default()
        },
        ..Config::default()
    }
}

static NATIVE_BUILD: OnceLock<PathBuf> = OnceLock::new();

/// The native modules the tests use: the two examples and the misbehaving fixture.
pub const NATIVE_MODULES: [(&str, &str); 3] = [
    ("astro_native", "modules/astro_native"),
    ("astro_report", "modules/astro_report"),
    ("fixture_native", "tests/modules/fixture_native"),
];

/// Builds the native modules once per test binary, into their own target folder (the cargo
/// running the tests holds the lock on the usual one), and returns where the libraries are.
fn native_build() -> PathBuf {
    NATIVE_BUILD
        .get_or_init(|| {
            let target = Path::new(SOURCE_ROOT).join("target/native-modules");
            let mut command = std::process::Command::new(env!("CARGO"));
            command.current_dir(SOURCE_ROOT).arg("build").arg("--quiet");
            for (name, _) in NATIVE_MODULES {
                command.args(["-p", name]);
            }
            let status = command
                .arg("--target-dir")
                .arg(&target)
                .status()
                .expect("running cargo build for the native modules");
            assert!(status.success(), "building the native modules failed");
            target.join("debug")
        })
        .clone()
}

/// Puts native module `name` (built, with its manifest and config) into `modules_dir`.
pub fn install_native_module(modules_dir: &Path, name: &str) -> PathBuf {
    let (_, source) = NATIVE_MODULES
        .iter()
        .find(|(n, _)| *n == name)
        .expect("a known native module");
    let built = native_build();
    let folder = modules_dir.join(name);
    std::fs::create_dir_all(&folder).expect("module folder");
    for file in ["module.json", "config.json"] {
        let from = Path::new(SOURCE_ROOT).join(source).join(file);
        if from.exists() {
            std::fs::copy(&from, folder.join(file)).expect("copy manifest");
        }
    }
    let library = format!(
        "{}{name}{}",
        std::env::consts::DLL_PREFIX,
        std::env::consts::DLL_SUFFIX
    );
    std::fs::copy(built.join(&library), folder.join(&library)).expect("copy library");
    folder
}

impl TestServer {
    pub async fn start() -> Self {
        Self::start_with(|_| {}).await
    }

    /// Starts a server after `adjust` has changed the test config.
    pub async fn start_with(adjust: impl FnOnce(&mut Config)) -> Self {
        Self::start_in(|config, _| adjust(config)).await
    }

    /// As [`TestServer::start_with`]; `adjust` also gets the server's private folder (for
    /// tenants' scripts folders).
    pub async fn start_in(adjust: impl FnOnce(&mut Config, &Path)) -> Self {
        Self::start_with_kinds(adjust, scriptbox::tasks::Kinds::builtin()).await
    }

    /// As [`TestServer::start_in`], offering these task step kinds.
    pub async fn start_with_kinds(
        adjust: impl FnOnce(&mut Config, &Path),
        kinds: scriptbox::tasks::Kinds,
    ) -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut config = test_config(dir.path());
        adjust(&mut config, dir.path());
        let engine = tokio::task::spawn_blocking(engine).await.expect("engine");
        let server = Server::with_kinds(&config, engine, kinds)
            .await
            .expect("server");
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let base = format!("http://{}", listener.local_addr().expect("addr"));
        let (tx, rx) = oneshot::channel::<()>();
        let task = tokio::spawn(server.run(listener, async move {
            let _ = rx.await;
        }));
        Self {
            api: Api {
                base,
                client: reqwest::Client::new(),
                key: None,
            },
            scripts_dir: config.scripts_dir.clone(),
            data_dir: config.data_dir.clone(),
            config,
            shutdown: Some(tx),
            task: Some(task),
            _dir: dir,
        }
    }

    /// Stops this server and starts another on the same config and data folder (a restart:
    /// what the store recorded comes back, what was in memory does not).
    pub async fn restart(mut self) -> Self {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(task) = self.task.take() {
            task.await.expect("join").expect("server run");
        }
        let engine = tokio::task::spawn_blocking(engine).await.expect("engine");
        let server = Server::with_kinds(&self.config, engine, scriptbox::tasks::Kinds::builtin())
            .await
            .expect("server");
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        self.api.base = format!("http://{}", listener.local_addr().expect("addr"));
        let (tx, rx) = oneshot::channel::<()>();
        self.task = Some(tokio::spawn(server.run(listener, async move {
            let _ = rx.await;
        })));
        self.shutdown = Some(tx);
        self
    }

    /// A client for this server sending `key` in X-API-Key.
    pub fn as_key(&self, key: &str) -> Api {
        Api {
            key: Some(key.to_owned()),
            ..self.api.clone()
        }
    }

    /// Waits until `/health` says the images are `ready` (the harness loaded them into the
    /// engine, so this takes moments).
    pub async fn wait_for_images(&self) {
        for _ in 0..200 {
            let (_, body) = self.get("/health").await;
            if body["data"]["images"] == "ready" {
                return;
            }
            tokio::time::sleep(std::time::Duration::from_millis(25)).await;
        }
        panic!("the images did not become ready");
    }

    /// Stops the server gracefully and waits for it.
    pub async fn stop(mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(task) = self.task.take() {
            task.await.expect("join").expect("server run");
        }
    }
}

impl Api {
    /// A request with this client's key.
    pub fn request(&self, method: reqwest::Method, path: &str) -> reqwest::RequestBuilder {
        let builder = self.client.request(method, format!("{}{path}", self.base));
        match &self.key {
            Some(key) => builder.header("x-api-key", key),
            None => builder,
        }
    }

    /// POSTs a raw body (no Content-Type, like the guide's curl examples without -H).
    pub async fn post_raw(
        &self,
        path: &str,
        body: impl Into<reqwest::Body>,
    ) -> (StatusCode, Value) {
        let response = self
            .request(reqwest::Method::POST, path)
            .body(body)
            .send()
            .await
            .expect("request");
        read(response).await
    }

    pub async fn post(&self, path: &str, body: Value) -> (StatusCode, Value) {
        let response = self
            .request(reqwest::Method::POST, path)
            .json(&body)
            .send()
            .await
            .expect("request");
        read(response).await
    }

    pub async fn delete(&self, path: &str) -> (StatusCode, Value) {
        let response = self
            .request(reqwest::Method::DELETE, path)
            .send()
            .await
            .expect("request");
        read(response).await
    }

    /// `PUT /scripts/{name}` with `body` as `content_type` (none: no header).
    pub async fn put_script(
        &self,
        name: &str,
        content_type: Option<&str>,
        body: impl Into<reqwest::Body>,
    ) -> (StatusCode, Value) {
        let mut request = self
            .request(reqwest::Method::PUT, &format!("/scripts/{name}"))
            .body(body);
        if let Some(content_type) = content_type {
            request = request.header("content-type", content_type);
        }
        read(request.send().await.expect("request")).await
    }

    /// Uploads a module's source, asserting it was stored; returns its version.
    pub async fn put_module(&self, name: &str, source: &str) -> String {
        let (status, body) = self
            .put_script(name, Some("text/x-python"), source.to_owned())
            .await;
        assert!(
            status == StatusCode::CREATED || status == StatusCode::OK,
            "PUT /scripts/{name}: {status} {body}"
        );
        body["data"]["version"]
            .as_str()
            .expect("version")
            .to_owned()
    }

    /// GETs `path` and returns the status, headers and raw body.
    pub async fn get_raw(&self, path: &str) -> (StatusCode, reqwest::header::HeaderMap, Vec<u8>) {
        let response = self
            .request(reqwest::Method::GET, path)
            .send()
            .await
            .expect("request");
        let (status, headers) = (response.status(), response.headers().clone());
        let bytes = response.bytes().await.expect("body").to_vec();
        (status, headers, bytes)
    }

    pub async fn get(&self, path: &str) -> (StatusCode, Value) {
        let response = self
            .request(reqwest::Method::GET, path)
            .send()
            .await
            .expect("request");
        read(response).await
    }

    /// Loads `script` as `alias`, asserting success.
    pub async fn load(&self, script: &str, alias: &str) -> Value {
        self.load_limited(script, alias, json!(null)).await
    }

    pub async fn load_limited(&self, script: &str, alias: &str, limits: Value) -> Value {
        let (status, body) = self
            .post(
                "/python/load",
                json!({"script_name": script, "alias": alias, "limits": limits}),
            )
            .await;
        assert_eq!(status, StatusCode::OK, "load {script} as {alias}: {body}");
        body
    }

    /// Calls a function and returns (status, body).
    pub async fn call(
        &self,
        alias: &str,
        function: &str,
        args: Value,
        kwargs: Value,
    ) -> (StatusCode, Value) {
        self.post(
            "/python/call",
            json!({"alias": alias, "function_name": function, "args": args, "kwargs": kwargs}),
        )
        .await
    }

    /// Calls and asserts success; returns `data`.
    pub async fn call_ok(&self, alias: &str, function: &str, args: Value) -> Value {
        let (status, body) = self.call(alias, function, args, json!({})).await;
        assert_eq!(status, StatusCode::OK, "{alias}.{function}: {body}");
        body["data"].clone()
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(task) = self.task.take() {
            task.abort();
        }
    }
}

async fn read(response: reqwest::Response) -> (StatusCode, Value) {
    let status = response.status();
    let text = response.text().await.expect("body");
    let value = serde_json::from_str(&text).unwrap_or_else(|_| json!({ "raw": text }));
    (status, value)
}

/// The tool `alias` of a `GET /python/list` answer.
pub fn listed_tool<'a>(list: &'a Value, alias: &str) -> &'a Value {
    list["data"]["tools"]
        .as_array()
        .and_then(|tools| tools.iter().find(|t| t["alias"] == alias))
        .unwrap_or_else(|| panic!("{alias} not listed: {list}"))
}

/// The error code of an error envelope.
pub fn code(body: &Value) -> &str {
    body["error"]["code"].as_str().unwrap_or("<none>")
}
