//! The `scriptbox` command's client verbs: a shell's way to a running server (`scripts push`,
//! `load`, `call`, `exec`, `tasks ...`). Beside the layers, like the bench: it only speaks
//! HTTP to a server.
//!
//! Output is for people by default (tables, the result pretty-printed, the call's stdout and
//! stderr on the terminal's, as they stream for `call` and `exec`) and the server's JSON with
//! `--json`. Exit codes: 0 success, 1 a
//! tool or sandbox error (the server's `422`: the tool raised, or hit fuel, deadline, memory
//! or output), 2 anything else that went wrong (usage, connection, a refused request); the
//! server's error code and message are printed, never a debug dump.

mod render;
mod stream;

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use serde_json::{Value, json};

/// How a verb ended, mapped to the exit code.
#[derive(Debug)]
pub enum Failure {
    /// A tool or sandbox error (exit 1).
    Tool(String),
    /// Usage, connection or a refused request (exit 2).
    Other(String),
}

impl Failure {
    pub fn exit(&self) -> ExitCode {
        let (code, text) = match self {
            Self::Tool(text) => (1, text),
            Self::Other(text) => (2, text),
        };
        eprintln!("scriptbox: {text}");
        ExitCode::from(code)
    }
}

fn other(text: impl Into<String>) -> Failure {
    Failure::Other(text.into())
}

/// Where the server is and who is asking.
#[derive(clap::Args, Debug, Clone)]
pub struct Remote {
    /// The server's base URL.
    #[arg(
        long,
        env = "SCRIPTBOX_URL",
        default_value = "http://127.0.0.1:8000",
        global = true
    )]
    pub url: String,
    /// The tenant's API key (prefer the environment variable: a key on the command line is
    /// visible to other users).
    #[arg(long, env = "SCRIPTBOX_API_KEY", hide_env_values = true, global = true)]
    pub key: Option<String>,
    /// Print the server's JSON answer instead of a human rendering.
    #[arg(long, global = true)]
    pub json: bool,
    /// Seconds to wait for an answer.
    #[arg(long, default_value_t = 120, global = true)]
    pub timeout_s: u64,
}

#[derive(clap::Subcommand, Debug)]
pub enum Scripts {
    /// Upload a module (`.py`) or a package (`.zip`) as a new version.
    Push {
        file: PathBuf,
        /// The script's name (default: the file's name without its extension).
        #[arg(long)]
        name: Option<String>,
    },
    /// The tenant's scripts and the shared ones.
    Ls,
}

#[derive(clap::Subcommand, Debug)]
pub enum Tasks {
    /// Submit a task from a JSON file (as `POST /tasks` takes it).
    Submit { file: PathBuf },
    /// The newest tasks.
    Ls {
        /// Only tasks in this state.
        #[arg(long)]
        status: Option<String>,
    },
    /// One task with its steps and history.
    Show { id: String },
}

/// The load's options.
#[derive(clap::Args, Debug)]
pub struct LoadArgs {
    /// The script (the tenant's own, or a shared one).
    pub script: String,
    /// The alias (default: the script's name).
    #[arg(long)]
    pub alias: Option<String>,
    /// `persistent` (default) or `isolated`.
    #[arg(long)]
    pub mode: Option<String>,
    #[arg(long)]
    pub fuel: Option<u64>,
    #[arg(long)]
    pub deadline_ms: Option<u64>,
    #[arg(long)]
    pub memory_bytes: Option<u64>,
    #[arg(long)]
    pub output_bytes: Option<u64>,
}

/// The client verbs.
#[derive(clap::Subcommand, Debug)]
pub enum Verb {
    /// Upload and list scripts.
    #[command(subcommand)]
    Scripts(Scripts),
    /// Load a script as a tool.
    Load(LoadArgs),
    /// The loaded tools.
    Ls,
    /// Call a tool's function; each ARG is JSON (text that is not JSON is a string).
    Call {
        alias: String,
        function: String,
        args: Vec<String>,
        /// Keyword arguments as a JSON object.
        #[arg(long)]
        kwargs: Option<String>,
    },
    /// Run code in a fresh sandbox: `-c CODE` or a file.
    Exec {
        /// The code.
        #[arg(short = 'c', conflicts_with = "file")]
        code: Option<String>,
        /// A file with the code.
        file: Option<PathBuf>,
    },
    /// Unload a tool.
    Unload { alias: String },
    /// Submit, list and show tasks.
    #[command(subcommand)]
    Tasks(Tasks),
}

/// One HTTP exchange's outcome: the status and the JSON body.
struct Answer {
    status: u16,
    body: Value,
    /// The call's output was printed as it streamed (so the answer's is not printed again).
    streamed: bool,
}

struct Client {
    http: reqwest::Client,
    remote: Remote,
}

impl Client {
    fn new(remote: Remote) -> Result<Self, Failure> {
        let http = reqwest::Client::builder()
            .no_proxy()
            .timeout(Duration::from_secs(remote.timeout_s.max(1)))
            .build()
            .map_err(|e| other(format!("cannot make an HTTP client: {e}")))?;
        if !(remote.url.starts_with("http://") || remote.url.starts_with("https://")) {
            return Err(other(format!(
                "--url {:?} is not an http(s) URL",
                remote.url
            )));
        }
        Ok(Self { http, remote })
    }

    fn request(&self, method: reqwest::Method, path: &str) -> reqwest::RequestBuilder {
        let url = format!("{}{path}", self.remote.url.trim_end_matches('/'));
        let request = self.http.request(method, url);
        match &self.remote.key {
            Some(key) => request.header("x-api-key", key),
            None => request,
        }
    }

    async fn send(&self, request: reqwest::RequestBuilder) -> Result<Answer, Failure> {
        let response = request.send().await.map_err(|e| self.unreachable(&e))?;
        self.read(response).await
    }

    fn unreachable(&self, e: &reqwest::Error) -> Failure {
        let what = if e.is_timeout() {
            "did not answer in time"
        } else {
            "could not be reached"
        };
        other(format!("the server at {} {what}", self.remote.url))
    }

    async fn read(&self, response: reqwest::Response) -> Result<Answer, Failure> {
        let status = response.status().as_u16();
        let text = response
            .text()
            .await
            .map_err(|_| other("the server's answer broke off"))?;
        let body = serde_json::from_str(&text).unwrap_or_else(|_| json!({ "raw": text }));
        Ok(Answer {
            status,
            body,
            streamed: false,
        })
    }

    async fn get(&self, path: &str) -> Result<Answer, Failure> {
        self.send(self.request(reqwest::Method::GET, path)).await
    }

    async fn post(&self, path: &str, body: Value) -> Result<Answer, Failure> {
        self.send(self.request(reqwest::Method::POST, path).json(&body))
            .await
    }
}

/// The answer's `data`, or the failure its error names.
fn data(answer: Answer) -> Result<Value, Failure> {
    if (200..300).contains(&answer.status) {
        return Ok(answer.body.get("data").cloned().unwrap_or(answer.body));
    }
    let error = &answer.body["error"];
    let code = error["code"]
        .as_str()
        .or(answer.body["error_code"].as_str())
        .unwrap_or("error");
    let message = error["message"]
        .as_str()
        .or(answer.body["error"].as_str())
        .unwrap_or("the server refused the request");
    let text = format!("{code} ({}): {message}", answer.status);
    Err(if answer.status == 422 {
        Failure::Tool(text)
    } else {
        other(text)
    })
}

/// An argument from the command line: JSON when it parses, else the text as a string.
pub fn argument(text: &str) -> Value {
    serde_json::from_str(text).unwrap_or_else(|_| Value::String(text.to_owned()))
}

/// Runs one verb against the server.
pub async fn run(remote: Remote, verb: Verb) -> Result<(), Failure> {
    let json_out = remote.json;
    let client = Client::new(remote)?;
    let answer = match verb {
        Verb::Scripts(Scripts::Push { file, name }) => push(&client, &file, name).await?,
        Verb::Scripts(Scripts::Ls) => client.get("/scripts").await?,
        Verb::Load(args) => {
            let mut limits = serde_json::Map::new();
            for (key, value) in [
                ("fuel", args.fuel),
                ("deadline_ms", args.deadline_ms),
                ("memory_bytes", args.memory_bytes),
                ("output_bytes", args.output_bytes),
            ] {
                if let Some(value) = value {
                    limits.insert(key.to_owned(), json!(value));
                }
            }
            let mut body = json!({"script_name": args.script,
                "alias": args.alias.unwrap_or_else(|| args.script.clone())});
            if !limits.is_empty() {
                body["limits"] = Value::Object(limits);
            }
            if let Some(mode) = args.mode {
                body["mode"] = json!(mode);
            }
            client.post("/python/load", body).await?
        }
        Verb::Ls => client.get("/python/list").await?,
        Verb::Call {
            alias,
            function,
            args,
            kwargs,
        } => {
            let kwargs = match kwargs {
                None => json!({}),
                Some(text) => match serde_json::from_str::<Value>(&text) {
                    Ok(Value::Object(map)) => Value::Object(map),
                    _ => return Err(other("--kwargs must be a JSON object, e.g. '{\"x\": 1}'")),
                },
            };
            let args: Vec<Value> = args.iter().map(|a| argument(a)).collect();
            let body =
                json!({"alias": alias, "function_name": function, "args": args, "kwargs": kwargs});
            if json_out {
                client.post("/python/call", body).await?
            } else {
                client.post_streamed("/python/call", body).await?
            }
        }
        Verb::Exec { code, file } => {
            let code = match (code, file) {
                (Some(code), None) => code,
                (None, Some(file)) => std::fs::read_to_string(&file)
                    .map_err(|e| other(format!("reading {}: {e}", file.display())))?,
                _ => return Err(other("give the code with -c CODE or as a file")),
            };
            let body = json!({"code": code});
            let answer = if json_out {
                client.post("/api/python/execute", body).await?
            } else {
                client.post_streamed("/api/python/execute", body).await?
            };
            return render::execute(&answer, json_out);
        }
        Verb::Unload { alias } => {
            client
                .post("/python/unload", json!({"alias": alias}))
                .await?
        }
        Verb::Tasks(Tasks::Submit { file }) => {
            let text = std::fs::read_to_string(&file)
                .map_err(|e| other(format!("reading {}: {e}", file.display())))?;
            let task: Value = serde_json::from_str(&text)
                .map_err(|e| other(format!("{} is not JSON: {e}", file.display())))?;
            client.post("/tasks", task).await?
        }
        Verb::Tasks(Tasks::Ls { status }) => {
            let path = match status {
                Some(status) if status.bytes().all(|b| b.is_ascii_lowercase() || b == b'_') => {
                    format!("/tasks?status={status}")
                }
                Some(_) => return Err(other("--status is a task state, e.g. running")),
                None => "/tasks".to_owned(),
            };
            client.get(&path).await?
        }
        Verb::Tasks(Tasks::Show { id }) => {
            if !id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-') {
                return Err(other("a task id is letters, digits and -"));
            }
            client.get(&format!("/tasks/{id}")).await?
        }
    };
    if json_out {
        println!("{}", answer.body);
        return if (200..300).contains(&answer.status) {
            Ok(())
        } else {
            data(answer).map(drop)
        };
    }
    let (body, streamed) = (answer.body.clone(), answer.streamed);
    let value = data(answer).inspect_err(|_| render::call_output(&body, streamed))?;
    render::human(&value, streamed);
    Ok(())
}

async fn push(
    client: &Client,
    file: &std::path::Path,
    name: Option<String>,
) -> Result<Answer, Failure> {
    let bytes =
        std::fs::read(file).map_err(|e| other(format!("reading {}: {e}", file.display())))?;
    let extension = file.extension().and_then(|e| e.to_str()).unwrap_or("");
    let content_type = match extension {
        "py" => "text/x-python",
        "zip" => "application/zip",
        _ => return Err(other("a script is a .py module or a .zip package")),
    };
    let name = match name {
        Some(name) => name,
        None => file
            .file_stem()
            .and_then(|s| s.to_str())
            .ok_or_else(|| other("give the script's name with --name"))?
            .to_owned(),
    };
    crate::names::check_script(&name).map_err(|e| other(format!("{name:?}: {e}")))?;
    let request = client
        .request(reqwest::Method::PUT, &format!("/scripts/{name}"))
        .header("content-type", content_type)
        .body(bytes);
    client.send(request).await
}
