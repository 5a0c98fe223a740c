//! Calls from guest code to the host, made through the door in the middle of a request.
//!
//! Guest code (through the driver's `scriptbox` module) hands the door a frame with a `host`
//! field instead of a response; the instance hands the request to the [`HostCalls`] its
//! owner gave for this request, and the answer goes back into the guest, which carries on
//! with the fuel it had left. The time spent in the host counts against the request's
//! deadline: the instance stops the guest if the answer comes too late.
//!
//! The sandbox only routes: what a host call may do (a tenant's global variables, another
//! tool's function) is decided by whoever implements [`HostCalls`].

use std::future::Future;
use std::pin::Pin;

use serde::Serialize;
use serde_json::value::RawValue;

use crate::protocol::HostRequest;

/// The answer to a host call: a JSON value, or a message the guest raises as an error.
pub type HostReply = Result<Box<RawValue>, String>;

/// Most host calls one request may make.
pub const MAX_HOST_CALLS: u32 = 10_000;

/// Answers host calls for one request.
pub trait HostCalls: Send + Sync {
    fn handle(&self, request: HostRequest) -> Pin<Box<dyn Future<Output = HostReply> + Send + '_>>;
}

/// Refuses every host call (requests run without an owner's services).
pub struct NoHost;

impl HostCalls for NoHost {
    fn handle(
        &self,
        _request: HostRequest,
    ) -> Pin<Box<dyn Future<Output = HostReply> + Send + '_>> {
        Box::pin(async { Err("host calls are not available here".to_owned()) })
    }
}

#[derive(Serialize)]
struct ReplyFrame<'a> {
    ok: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    result: Option<&'a RawValue>,
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<&'a str>,
}

/// Links the interpreter's `host.call` import as a trap with `why`, for instances that run
/// only constant, trusted code (the image build, the bench's bare interpreter).
pub fn refuse_host_calls<T: 'static>(
    linker: &mut wasmtime::Linker<T>,
    why: &'static str,
) -> anyhow::Result<()> {
    linker
        .func_wrap(
            "host",
            "call",
            move |_: wasmtime::Caller<'_, T>,
                  _: i32,
                  _: i32,
                  _: i32,
                  _: i32|
                  -> wasmtime::Result<i32> { Err(wasmtime::Error::msg(why)) },
        )
        .map_err(anyhow::Error::from)?;
    Ok(())
}

/// The frame the guest receives for a host call's answer.
pub fn reply_frame(reply: &HostReply) -> Vec<u8> {
    let frame = match reply {
        Ok(value) => ReplyFrame {
            ok: true,
            result: Some(value),
            error: None,
        },
        Err(message) => ReplyFrame {
            ok: false,
            result: None,
            error: Some(message),
        },
    };
    serde_json::to_vec(&frame)
        .unwrap_or_else(|_| br#"{"ok":false,"error":"reply not encodable"}"#.to_vec())
}
