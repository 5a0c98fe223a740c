//! Streamed answers: a call route asked with `Accept: text/event-stream` answers as
//! Server-Sent Events instead of one JSON body (docs/api.md, "Streaming").
//!
//! Events, in order: `stdout` and `stderr` (`{"text": ...}`, the guest's `print()` output as
//! it is written, at most 16 KiB of text each, flushed every 25 ms while output flows), then
//! exactly one `result` (the JSON answer would have been 2xx) or `error` (it would not),
//! whose data is that JSON answer, byte for byte, and whose `id` is that answer's status;
//! then the stream ends. A `: keep-alive`
//! comment goes out every 15 s while the guest is silent.
//!
//! The call runs inside the response body: a client that goes away drops the body, which
//! drops the call and stops its guest (the registry's watched calls), as at a deadline.

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

use axum::http::HeaderMap;
use axum::http::header::ACCEPT;
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use tokio::sync::mpsc;

use super::{audit, envelope};
use crate::sandbox::{Output, OutputSink};

/// How often a silent stream gets a comment.
pub const KEEP_ALIVE: Duration = Duration::from_secs(15);

/// The most of the final JSON answer read into its event (it is the server's own, bounded
/// by the output cap and the result frame).
const MAX_ANSWER_BYTES: usize = 64 << 20;

/// Whether the client asked for an event stream (any `Accept` that names
/// `text/event-stream`; anything else gets JSON).
pub fn wants_stream(headers: &HeaderMap) -> bool {
    headers.get_all(ACCEPT).iter().any(|value| {
        value.to_str().is_ok_and(|text| {
            text.split(',').any(|part| {
                part.split(';')
                    .next()
                    .is_some_and(|kind| kind.trim().eq_ignore_ascii_case("text/event-stream"))
            })
        })
    })
}

/// The answer of a call route: `answer(None)` as JSON, or, when the client asked for a
/// stream, an event stream of `answer(Some(sink))`'s output and then its JSON answer.
pub async fn respond<F, Fut>(headers: &HeaderMap, answer: F) -> Response
where
    F: FnOnce(Option<OutputSink>) -> Fut,
    Fut: Future<Output = Response> + Send + 'static,
{
    if !wants_stream(headers) {
        return answer(None).await;
    }
    let (sink, output) = mpsc::unbounded_channel();
    // The body is polled after the handler returned: carry the request's id and audit log.
    let call = envelope::carry_request_id(audit::carry_log(answer(Some(sink))));
    let state = State {
        phase: Phase::Running(Box::pin(call)),
        output,
    };
    let events = futures_util::stream::unfold(state, next_event);
    Sse::new(events)
        .keep_alive(KeepAlive::new().interval(KEEP_ALIVE).text("keep-alive"))
        .into_response()
}

type Call = Pin<Box<dyn Future<Output = Response> + Send>>;

enum Phase {
    Running(Call),
    /// The call answered: its output left in the channel goes out, then this event.
    Finishing(Event),
    Done,
}

struct State {
    phase: Phase,
    output: mpsc::UnboundedReceiver<Output>,
}

async fn next_event(mut state: State) -> Option<(Result<Event, Infallible>, State)> {
    loop {
        match &mut state.phase {
            Phase::Done => return None,
            Phase::Finishing(_) => {
                if let Ok(chunk) = state.output.try_recv() {
                    return Some((Ok(output_event(&chunk)), state));
                }
                let Phase::Finishing(last) = std::mem::replace(&mut state.phase, Phase::Done)
                else {
                    return None;
                };
                return Some((Ok(last), state));
            }
            Phase::Running(call) => {
                tokio::select! {
                    biased;
                    Some(chunk) = state.output.recv() => {
                        return Some((Ok(output_event(&chunk)), state));
                    }
                    response = call => {
                        state.phase = Phase::Finishing(answer_event(response).await);
                    }
                }
            }
        }
    }
}

fn output_event(chunk: &Output) -> Event {
    let data = serde_json::json!({ "text": chunk.text }).to_string();
    Event::default().event(chunk.stream.name()).data(data)
}

/// The JSON answer as the last event: `result` for a 2xx, else `error`; its `id` is the
/// status the plain answer would have had (the stream's own status is 200).
async fn answer_event(response: Response) -> Event {
    let status = response.status().as_u16().to_string();
    let name = if response.status().is_success() {
        "result"
    } else {
        "error"
    };
    let body = match axum::body::to_bytes(response.into_body(), MAX_ANSWER_BYTES).await {
        Ok(body) => body,
        Err(err) => {
            tracing::error!(cause = %err, "a streamed call's answer could not be read");
            return Event::default().event("error").id("500").data(
                r#"{"success":false,"error":{"code":"internal_error","message":"the answer could not be sent"}}"#,
            );
        }
    };
    // serde_json writes no raw newlines, but the field must never hold one.
    let text = String::from_utf8_lossy(&body).replace(['\r', '\n'], " ");
    Event::default().event(name).id(status).data(text)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn accept(value: &str) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert(ACCEPT, value.parse().expect("header"));
        headers
    }

    #[test]
    fn event_stream_is_asked_for_by_name_only() {
        assert!(wants_stream(&accept("text/event-stream")));
        assert!(wants_stream(&accept(
            "application/json;q=0.5, Text/Event-Stream;q=1"
        )));
        assert!(!wants_stream(&accept("application/json")));
        assert!(!wants_stream(&accept("*/*")));
        assert!(!wants_stream(&accept("text/event-streamx")));
        assert!(!wants_stream(&HeaderMap::new()));
    }
}
