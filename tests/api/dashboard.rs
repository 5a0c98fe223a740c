//! The operator's page in a real browser: headless Chromium (Debian's `chromium`) driven over
//! the DevTools protocol types the admin key into the page, waits for it to read
//! `/admin/usage`, checks that the numbers it shows are the server's, and takes a
//! screenshot (`<target>/tmp/dashboard.png`).
//!
//! Without a browser the test is skipped with a message, except in CI (`CI` set), where
//! `.ci/run` installs one and a missing browser fails.

use std::io::{BufRead as _, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use base64::Engine as _;
use futures_util::{SinkExt as _, StreamExt as _};
use reqwest::StatusCode;
use scriptbox::config::Role;
use scriptbox_tests::{TestServer, copy_scripts, tenant};
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message;

const BROWSERS: [&str; 3] = ["chromium", "chromium-browser", "google-chrome"];

fn find_browser() -> Option<String> {
    if let Ok(path) = std::env::var("SCRIPTBOX_CHROMIUM") {
        return Some(path);
    }
    let path = std::env::var_os("PATH")?;
    BROWSERS.iter().find_map(|name| {
        std::env::split_paths(&path)
            .map(|dir| dir.join(name))
            .find(|candidate| candidate.is_file())
            .map(|found| found.display().to_string())
    })
}

/// The browser process, killed when the test ends (also when it fails).
struct Browser(Child);

impl Drop for Browser {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Starts headless Chromium on a loopback DevTools port; its WebSocket URL.
fn launch(binary: &str, profile: &std::path::Path) -> (Browser, String) {
    let mut child = Command::new(binary)
        .args([
            "--headless=new",
            // CI runs as root, where Chromium's own sandbox cannot start; the page is ours.
            "--no-sandbox",
            "--disable-gpu",
            "--disable-dev-shm-usage",
            "--no-first-run",
            "--no-default-browser-check",
            "--disable-extensions",
            "--disable-background-networking",
            "--remote-debugging-address=127.0.0.1",
            "--remote-debugging-port=0",
            "--window-size=1280,1100",
        ])
        .arg(format!("--user-data-dir={}", profile.display()))
        .arg("about:blank")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("chromium starts");
    let stderr = child.stderr.take().expect("stderr");
    let browser = Browser(child);
    let (found, url) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if let Some(at) = line.find("ws://") {
                let _ = found.send(line[at..].trim().to_owned());
            }
        }
    });
    let url = url
        .recv_timeout(Duration::from_secs(60))
        .expect("chromium printed its DevTools address");
    (browser, url)
}

type Socket =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// One DevTools connection: commands by id, answers awaited (events skipped).
struct DevTools {
    socket: Socket,
    next: u64,
    session: Option<String>,
}

impl DevTools {
    async fn send(&mut self, method: &str, params: Value) -> Value {
        self.next += 1;
        let id = self.next;
        let mut message = json!({"id": id, "method": method, "params": params});
        if let Some(session) = &self.session {
            message["sessionId"] = json!(session);
        }
        self.socket
            .send(Message::text(message.to_string()))
            .await
            .expect("send");
        loop {
            let frame = tokio::time::timeout(Duration::from_secs(30), self.socket.next())
                .await
                .expect("an answer in time")
                .expect("open")
                .expect("frame");
            let Message::Text(text) = frame else { continue };
            let answer: Value = serde_json::from_str(&text).expect("json");
            if answer["id"] == id {
                assert!(answer["error"].is_null(), "{method}: {answer}");
                return answer["result"].clone();
            }
        }
    }

    /// Evaluates `expression` in the page; its JSON value.
    async fn eval(&mut self, expression: &str) -> Value {
        let result = self
            .send(
                "Runtime.evaluate",
                json!({"expression": expression, "returnByValue": true, "awaitPromise": true}),
            )
            .await;
        assert!(
            result["exceptionDetails"].is_null(),
            "{expression}: {result}"
        );
        result["result"]["value"].clone()
    }

    async fn wait_for(&mut self, expression: &str) {
        let until = Instant::now() + Duration::from_secs(30);
        while self.eval(expression).await != json!(true) {
            assert!(Instant::now() < until, "the page never had {expression}");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_dashboard_shows_the_servers_numbers() {
    let Some(binary) = find_browser() else {
        assert!(
            std::env::var_os("CI").is_none(),
            "CI must have Chromium (.ci/run installs it)"
        );
        eprintln!(
            "SKIPPED the_dashboard_shows_the_servers_numbers: no Chromium found; install it \
             with `apt-get install chromium` (or set SCRIPTBOX_CHROMIUM to a Chromium binary)"
        );
        return;
    };
    let server = TestServer::start_in(|config, dir| {
        let shared = dir.join("shared");
        copy_scripts(&shared);
        config.tenants = vec![
            tenant("root", "root-key", &shared, Role::Admin),
            tenant("plain", "plain-key", &shared, Role::Tenant),
        ];
    })
    .await;
    let plain = server.as_key("plain-key");
    plain.load("stream_fixture", "busy").await;
    for _ in 0..4 {
        plain.call_ok("busy", "quick", json!([])).await;
    }
    let (status, _) = plain
        .post(
            "/python/call",
            json!({"alias": "busy", "function_name": "chatty", "args": ["x", 0]}),
        )
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);

    let profile = tempfile::tempdir().expect("profile");
    let (_browser, url) = launch(&binary, profile.path());
    let (socket, _) = tokio_tungstenite::connect_async(url.as_str())
        .await
        .expect("DevTools connects");
    let mut tools = DevTools {
        socket,
        next: 0,
        session: None,
    };
    let page = format!("{}/admin/dashboard", server.base);
    let target = tools
        .send("Target.createTarget", json!({"url": page}))
        .await;
    let attached = tools
        .send(
            "Target.attachToTarget",
            json!({"targetId": target["targetId"], "flatten": true}),
        )
        .await;
    tools.session = Some(attached["sessionId"].as_str().expect("session").to_owned());
    tools
        .wait_for("document.readyState === 'complete' && !!document.getElementById('key')")
        .await;
    // Type the key into the page, as a person would, and press the button.
    tools
        .eval("document.getElementById('key').focus(), true")
        .await;
    tools
        .send("Input.insertText", json!({"text": "root-key"}))
        .await;
    tools
        .eval("document.getElementById('connect').click(), true")
        .await;
    tools
        .wait_for("document.body.dataset.loaded === 'yes'")
        .await;
    assert_eq!(
        tools.eval("location.href.includes('root-key')").await,
        json!(false)
    );
    let shown = tools
        .eval(
            "Object.fromEntries([...document.querySelectorAll('#tenants tbody tr')].map(row => \
             [row.dataset.tenant, Object.fromEntries([...row.querySelectorAll('[data-field]')] \
             .map(td => [td.dataset.field, td.textContent]))]))",
        )
        .await;
    let (status, usage) = server.as_key("root-key").get("/admin/usage").await;
    assert_eq!(status, StatusCode::OK);
    let row = usage["data"]["tenants"]
        .as_array()
        .expect("tenants")
        .iter()
        .find(|t| t["tenant"] == "plain")
        .expect("plain")
        .clone();
    let on_page = &shown["plain"];
    assert_eq!(
        on_page["calls"],
        json!(row["since_start"]["calls"].to_string()),
        "{shown}"
    );
    assert_eq!(on_page["calls"], json!("5"));
    assert_eq!(on_page["errors"], json!("1"));
    assert_eq!(on_page["error_rate"], json!("20.0%"));
    assert_eq!(
        on_page["fuel"],
        json!(row["since_start"]["fuel"].to_string())
    );
    assert_eq!(on_page["tools"], json!("1 (busy)"));
    assert!(shown.get("root").is_some(), "{shown}");
    let hungry = tools
        .eval("document.querySelector('#hungry tbody tr').dataset.tool")
        .await;
    assert_eq!(hungry, json!("busy"));
    let picture = tools
        .send("Page.captureScreenshot", json!({"format": "png"}))
        .await;
    let png = base64::engine::general_purpose::STANDARD
        .decode(picture["data"].as_str().expect("data"))
        .expect("base64");
    assert!(png.starts_with(b"\x89PNG\r\n\x1a\n"));
    assert!(png.len() > 20_000, "a {}-byte screenshot", png.len());
    let file = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("dashboard.png");
    std::fs::write(&file, &png).expect("screenshot written");
    eprintln!("dashboard screenshot: {}", file.display());
}
