//! Host <-> guest driver messages, protocol version 1 (the driver, `python-wasm/guest/driver/`
//! joined into `_scriptbox_driver.py`, is the other half and documents the frames).
//!
//! Frames are JSON. Values (call arguments, results) travel as raw JSON text, never re-parsed
//! into `serde_json::Value` on the host, so integers of any size reach the client exactly as
//! Python wrote them.

use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

pub const PROTOCOL_VERSION: u32 = 1;

/// A request frame, host to guest.
#[derive(Debug, Serialize)]
pub struct Request<'a> {
    pub v: u32,
    pub id: u64,
    #[serde(flatten)]
    pub op: &'a Op,
    pub output_cap: u64,
    /// Tracing for this request (enableDebug, setBreakpoint), when any is on.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub debug: Option<&'a Debug>,
    /// Whether the driver also writes the request's `print()` output to the guest's stdout
    /// and stderr descriptors as it is written (the host streams it on).
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub stream: bool,
}

/// What the driver traces during a request: executed lines of the tool's script, and the
/// locals at breakpoint lines. Results come back in the response's `debug` field.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct Debug {
    /// Record each executed line of the tool's script (capped).
    pub trace: bool,
    /// Lines of the tool's script at which the locals are captured.
    pub breakpoints: std::collections::BTreeSet<u32>,
}

impl Debug {
    /// Whether any tracing is on.
    pub fn is_on(&self) -> bool {
        self.trace || !self.breakpoints.is_empty()
    }
}

/// What the guest is asked to do. Every op runs under the call's limits.
#[derive(Debug, Clone, Serialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum Op {
    /// `function(*args, **kwargs)`.
    Call {
        function: String,
        args: Box<RawValue>,
        kwargs: Box<RawValue>,
    },
    /// A module-level variable's value.
    GetVariable { name: String },
    /// Assigns a module-level variable.
    SetVariable { name: String, value: Box<RawValue> },
    /// The tool's public functions, with signatures and docstrings.
    Functions,
    /// Evaluates an expression in the tool's namespace.
    Eval { expression: String },
    /// Executes statements in the tool's namespace.
    Exec { code: String },
    /// `object_name = class_name(*args, **kwargs)`, kept in the interpreter.
    CreateObject {
        class_name: String,
        object_name: String,
        args: Box<RawValue>,
        kwargs: Box<RawValue>,
    },
    /// A method of a live object, or of a fresh instance of a class.
    CallMethod {
        #[serde(flatten)]
        target: ObjectRef,
        method_name: String,
        args: Box<RawValue>,
        kwargs: Box<RawValue>,
    },
    /// An attribute of a live object, or of a fresh instance of a class.
    GetAttribute {
        #[serde(flatten)]
        target: ObjectRef,
        attr_name: String,
    },
    /// Assigns an attribute of a live object, or of a fresh instance of a class.
    SetAttribute {
        #[serde(flatten)]
        target: ObjectRef,
        attr_name: String,
        value: Box<RawValue>,
    },
    /// Forgets a live object.
    DeleteObject { object_name: String },
    /// The live objects, by name.
    ListObjects,
    /// `get_tool_info()` merged with the signatures of the functions it lists.
    Exports,
    /// Python's view of its memory (tracked objects and their sizes).
    MemoryStats,
    /// A full garbage collection.
    Collect,
    /// Runs code under cProfile; the `top` rows by cumulative time.
    Profile { code: String, top: u32 },
    /// Appends a (host-checked) guest path to `sys.path`.
    AddSysPath { path: String },
    /// Executes code with `args` bound; the value of a final expression (or of `result`).
    Run { code: String, args: Box<RawValue> },
    /// Runs a script file (a host-checked guest path) as `__main__` with `sys.argv`.
    RunFile { path: String, argv: Vec<String> },
    /// A task's script step: `code` (as `Run`) or the script file at `path` (as `RunFile`,
    /// its variable `result`), with `args` and `inputs` bound and `imports` imported first.
    Step {
        code: Option<String>,
        path: Option<String>,
        args: Box<RawValue>,
        inputs: Box<RawValue>,
        imports: Vec<String>,
    },
}

/// The module name that makes the driver start with an empty namespace instead of a script
/// (a fresh sandbox for client code). Not a valid script name, so no script can take it.
pub const SCRATCH_MODULE: &str = "-";

/// What an object request acts on: a live object, or (the original's behaviour) a fresh
/// instance of a class made for this request only.
#[derive(Debug, Clone, Serialize)]
#[serde(untagged)]
pub enum ObjectRef {
    Named { object_name: String },
    Fresh { class_name: String },
}

impl Op {
    /// The live object this op needs to exist, if any.
    pub fn object_needed(&self) -> Option<&str> {
        match self {
            Op::CallMethod { target, .. }
            | Op::GetAttribute { target, .. }
            | Op::SetAttribute { target, .. } => match target {
                ObjectRef::Named { object_name } => Some(object_name),
                ObjectRef::Fresh { .. } => None,
            },
            Op::DeleteObject { object_name } => Some(object_name),
            _ => None,
        }
    }
}

/// A response frame, guest to host. The guest is untrusted: every field is checked by the
/// sandbox before anything reaches a client.
#[derive(Debug, Deserialize)]
pub struct Response {
    pub v: u32,
    pub id: u64,
    #[serde(default)]
    pub ok: bool,
    /// Set when the frame is not a response but a call from guest code to the host
    /// ([`HostRequest`], parsed separately so a malformed one is answered, not fatal).
    #[serde(default)]
    pub host: Option<Box<RawValue>>,
    #[serde(default)]
    pub result: Option<Box<RawValue>>,
    #[serde(default)]
    pub error: Option<GuestError>,
    #[serde(default)]
    pub stdout: String,
    #[serde(default)]
    pub stderr: String,
    /// What tracing recorded, when the request asked for it.
    #[serde(default)]
    pub debug: Option<Box<RawValue>>,
}

/// A call from guest code to the host during a request (the driver's `scriptbox` module).
/// Frames: `{"service": "get_global", "name"}`, `{"service": "set_global", "name", "value"}`,
/// `{"service": "delete_global", "name"}`, `{"service": "global_names"}`,
/// `{"service": "call_function", "name", "args", "kwargs"}`.
#[derive(Debug)]
pub enum HostRequest {
    /// A value of the owner's global namespace (`null` when absent).
    GetGlobal { name: String },
    /// Sets a value of the owner's global namespace.
    SetGlobal { name: String, value: Box<RawValue> },
    /// Removes a value of the owner's global namespace.
    DeleteGlobal { name: String },
    /// The names in the owner's global namespace.
    GlobalNames,
    /// A function registered with `registerFunction`.
    CallFunction {
        name: String,
        args: Box<RawValue>,
        kwargs: Box<RawValue>,
    },
    /// A trusted native module's function (if the owner's policy allows it).
    Native {
        module: String,
        function: String,
        args: Box<RawValue>,
    },
    /// An outbound HTTP request (`scriptbox.http`), made by the host if the owner's egress
    /// policy allows it.
    Http(HttpRequest),
}

/// An outbound HTTP request as the guest asks for it: `{"service": "http", "request":
/// {"method", "url", "headers": [[name, value]...], "body": base64, "timeout_ms"}}`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HttpRequest {
    pub method: String,
    pub url: String,
    #[serde(default)]
    pub headers: Vec<(String, String)>,
    /// The body, base64-encoded.
    #[serde(default)]
    pub body: Option<String>,
    #[serde(default)]
    pub timeout_ms: Option<u64>,
}

/// A host call's frame as sent (serde's tagged enums cannot hold raw values).
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct HostFrame {
    service: String,
    name: Option<String>,
    value: Option<Box<RawValue>>,
    args: Option<Box<RawValue>>,
    kwargs: Option<Box<RawValue>>,
    module: Option<String>,
    function: Option<String>,
    request: Option<Box<RawValue>>,
}

impl HostRequest {
    /// Parses a host call's frame; the message says what is wrong with a bad one.
    pub fn parse(text: &str) -> Result<Self, String> {
        let frame: HostFrame = serde_json::from_str(text).map_err(|err| err.to_string())?;
        let name = || frame.name.clone().ok_or_else(|| "missing name".to_owned());
        Ok(match frame.service.as_str() {
            "get_global" => Self::GetGlobal { name: name()? },
            "set_global" => Self::SetGlobal {
                name: name()?,
                value: frame.value.ok_or("missing value")?,
            },
            "delete_global" => Self::DeleteGlobal { name: name()? },
            "global_names" => Self::GlobalNames,
            "call_function" => Self::CallFunction {
                name: name()?,
                args: frame.args.unwrap_or_else(empty_array),
                kwargs: frame.kwargs.unwrap_or_else(empty_object),
            },
            "native" => Self::Native {
                module: frame.module.clone().ok_or("missing module")?,
                function: frame.function.clone().ok_or("missing function")?,
                args: frame.args.unwrap_or_else(null),
            },
            "http" => {
                let request = frame.request.as_ref().ok_or("missing request")?;
                Self::Http(serde_json::from_str(request.get()).map_err(|err| err.to_string())?)
            }
            other => return Err(format!("unknown host service {other:?}")),
        })
    }
}

/// A failure the driver reports (the instance stays alive).
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
pub struct GuestError {
    pub kind: GuestErrorKind,
    #[serde(default, rename = "type", skip_serializing_if = "Option::is_none")]
    pub exc_type: Option<String>,
    #[serde(default)]
    pub message: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub traceback: Option<String>,
}

#[derive(Debug, Clone, Copy, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum GuestErrorKind {
    PythonException,
    UnserializableResult,
    OutputLimit,
    NotFound,
    LoadFailed,
    BadRequest,
}

fn constant(json: &str) -> Box<RawValue> {
    RawValue::from_string(json.to_owned()).unwrap_or_else(|_| unreachable!("valid JSON"))
}

/// `[]`, for absent args.
pub fn empty_array() -> Box<RawValue> {
    constant("[]")
}

/// `{}`, for absent kwargs.
pub fn empty_object() -> Box<RawValue> {
    constant("{}")
}

/// `null`, for a result the guest did not send.
pub fn null() -> Box<RawValue> {
    constant("null")
}
