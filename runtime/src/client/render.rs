//! How the client verbs print answers for people.

use serde_json::Value;

use super::Failure;

/// A call's stdout and stderr on the terminal's, as the tool printed them (unless they were
/// printed already as they streamed), and a traceback.
pub(super) fn call_output(value: &Value, streamed: bool) {
    let data = value.get("data").unwrap_or(value);
    let details = &value["error"]["details"];
    let sources = if streamed {
        &[][..]
    } else {
        &[data, details][..]
    };
    for source in sources {
        if let Some(out) = source["stdout"].as_str().filter(|s| !s.is_empty()) {
            print!("{out}");
        }
        if let Some(err) = source["stderr"].as_str().filter(|s| !s.is_empty()) {
            eprint!("{err}");
        }
    }
    if let Some(traceback) = details["traceback"].as_str() {
        eprint!("{traceback}");
    }
}

/// A successful answer's `data`: a table for lists, the result for a call.
pub(super) fn human(data: &Value, streamed: bool) {
    if let Some(tools) = data["tools"].as_array() {
        table(
            &["alias", "script", "mode", "calls", "resets"],
            tools
                .iter()
                .map(|t| {
                    vec![
                        text(&t["alias"]),
                        text(&t["script_name"]),
                        text(&t["mode"]),
                        text(&t["calls"]),
                        text(&t["resets"]),
                    ]
                })
                .collect(),
        );
    } else if let Some(scripts) = data["scripts"]
        .as_array()
        .filter(|s| s.iter().all(Value::is_object))
    {
        table(
            &["name", "source", "latest version", "versions"],
            scripts
                .iter()
                .map(|s| {
                    vec![
                        text(&s["name"]),
                        text(&s["source"]),
                        text(&s["latest_version"]).chars().take(12).collect(),
                        text(&s["versions"]),
                    ]
                })
                .collect(),
        );
    } else if let Some(tasks) = data["tasks"].as_array() {
        table(
            &["task", "name", "status"],
            tasks
                .iter()
                .map(|t| vec![text(&t["task_id"]), text(&t["name"]), text(&t["status"])])
                .collect(),
        );
    } else if data.get("result").is_some() && data.get("fuel_used").is_some() {
        call_output(data, streamed);
        println!("{}", pretty(&data["result"]));
    } else {
        println!("{}", pretty(data));
    }
}

/// `POST /api/python/execute`'s answer (the original's shape, not the envelope).
pub(super) fn execute(answer: &super::Answer, json: bool) -> Result<(), Failure> {
    let (status, body) = (answer.status, &answer.body);
    if json {
        println!("{body}");
    } else {
        call_output(body, answer.streamed);
    }
    if body["success"] == Value::Bool(true) {
        if !json && !body["result"].is_null() {
            println!("{}", pretty(&body["result"]));
        }
        return Ok(());
    }
    let code = body["error_code"]
        .as_str()
        .or(body["error"]["code"].as_str())
        .unwrap_or("error");
    let message = body["error"]
        .as_str()
        .or(body["error"]["message"].as_str())
        .unwrap_or("the run failed");
    let text = format!("{code} ({status}): {message}");
    Err(if status == 422 {
        Failure::Tool(text)
    } else {
        Failure::Other(text)
    })
}

fn pretty(value: &Value) -> String {
    serde_json::to_string_pretty(value).unwrap_or_else(|_| value.to_string())
}

fn text(value: &Value) -> String {
    match value {
        Value::String(s) => s.clone(),
        Value::Null => String::new(),
        other => other.to_string(),
    }
}

fn table(head: &[&str], rows: Vec<Vec<String>>) {
    let mut widths: Vec<usize> = head.iter().map(|h| h.len()).collect();
    for row in &rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let line = |cells: Vec<String>| {
        let padded: Vec<String> = cells
            .iter()
            .zip(&widths)
            .map(|(c, w)| format!("{c:<w$}"))
            .collect();
        println!("{}", padded.join("  ").trim_end());
    };
    line(head.iter().map(|h| (*h).to_owned()).collect());
    for row in rows {
        line(row);
    }
}
