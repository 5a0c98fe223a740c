//! Streamed answers for the client verbs (docs/api.md, "Streaming"): the call's output on the
//! terminal as the guest writes it, then the final answer.

use std::io::Write as _;

use serde_json::{Value, json};

use super::{Answer, Client, Failure, other};

/// The most of one event the client holds (the server's pieces are 16 KiB of text, its final
/// answer bounded by the tool's output cap).
const MAX_EVENT_BYTES: usize = 64 << 20;

impl Client {
    /// POSTs `body` asking for an event stream, printing `stdout` and `stderr` pieces to the
    /// terminal's as they arrive; the final answer, with the status its event's `id` names.
    /// A server that answers JSON instead is read as [`Client::post`] would.
    pub(super) async fn post_streamed(&self, path: &str, body: Value) -> Result<Answer, Failure> {
        let request = self
            .request(reqwest::Method::POST, path)
            .header("accept", "text/event-stream")
            .json(&body);
        let mut response = request.send().await.map_err(|e| self.unreachable(&e))?;
        let is_stream = response
            .headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.starts_with("text/event-stream"));
        if !is_stream {
            return self.read(response).await;
        }
        let mut buffer = Vec::new();
        while let Some(chunk) = response
            .chunk()
            .await
            .map_err(|_| other("the server's answer broke off"))?
        {
            buffer.extend_from_slice(&chunk);
            while let Some(end) = buffer.windows(2).position(|w| w == b"\n\n") {
                let block: Vec<u8> = buffer.drain(..end + 2).collect();
                if let Some(answer) = event(&String::from_utf8_lossy(&block)) {
                    return Ok(answer);
                }
            }
            if buffer.len() > MAX_EVENT_BYTES {
                return Err(other("the server sent an event too large to read"));
            }
        }
        Err(other("the server's stream ended without an answer"))
    }
}

/// Handles one event: output is printed; the final event is the answer.
fn event(block: &str) -> Option<Answer> {
    let (mut name, mut id, mut data) = ("message", "", Vec::new());
    for line in block.lines() {
        let (field, value) = line.split_once(':').unwrap_or((line, ""));
        let value = value.strip_prefix(' ').unwrap_or(value);
        match field {
            "event" => name = value,
            "data" => data.push(value),
            "id" => id = value,
            _ => {}
        }
    }
    let data = data.join("\n");
    match name {
        "stdout" | "stderr" => {
            let text: Value = serde_json::from_str(&data).unwrap_or(Value::Null);
            let text = text["text"].as_str().unwrap_or("");
            if name == "stdout" {
                print!("{text}");
                let _ = std::io::stdout().flush();
            } else {
                eprint!("{text}");
            }
            None
        }
        "result" | "error" => {
            let fallback = if name == "result" { 200 } else { 500 };
            let status = id.parse().unwrap_or(fallback);
            let body = serde_json::from_str(&data).unwrap_or_else(|_| json!({ "raw": data }));
            Some(Answer {
                status,
                body,
                streamed: true,
            })
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_final_event_is_the_answer_with_its_status() {
        let answer = event("event: error\nid: 422\ndata: {\"error_code\":\"fuel_exhausted\"}\n\n")
            .expect("an answer");
        assert_eq!(answer.status, 422);
        assert_eq!(answer.body["error_code"], "fuel_exhausted");
        assert!(answer.streamed);
        assert!(event("event: stdout\ndata: {\"text\":\"hi\"}\n\n").is_none());
        assert!(event(": keep-alive\n\n").is_none());
        let answer = event("event: result\ndata: {\"x\":1}\n\n").expect("answer");
        assert_eq!(answer.status, 200);
    }
}
