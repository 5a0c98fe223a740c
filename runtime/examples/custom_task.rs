//! A custom task step kind, as the original guide's `CustomPythonTask`: a Rust user adds a
//! kind to the server's tasks and serves it.
//!
//! This one, `"sum"`, adds up numbers without running any Python: its own `values` field
//! plus whatever numbers its inputs bring from earlier steps. Run it with
//!
//! ```sh
//! cargo run -p scriptbox --example custom_task
//! curl -s localhost:8000/tasks -d '{"name": "demo", "steps": [
//!   {"id": "a", "kind": "script", "code": "[1, 2, 3]"},
//!   {"id": "total", "kind": "sum", "values": [10], "inputs": {"from_a": "a"}}]}'
//! ```
//!
//! and `GET /tasks/<task_id>` shows `total` = 16.

use std::collections::BTreeMap;
use std::sync::Arc;

use scriptbox::config::Config;
use scriptbox::server::{Server, load_engine};
use scriptbox::tasks::{Kinds, StepContext, StepFuture, Task, kinds};
use serde_json::value::RawValue;

/// Sums `values` (an array of numbers) and every number in its inputs (numbers or arrays).
pub struct Sum;

fn numbers(raw: &RawValue) -> Result<Vec<f64>, String> {
    match serde_json::from_str::<serde_json::Value>(raw.get()).map_err(|e| e.to_string())? {
        serde_json::Value::Number(n) => Ok(n.as_f64().into_iter().collect()),
        serde_json::Value::Array(items) => items
            .iter()
            .map(|v| v.as_f64().ok_or_else(|| format!("{v} is not a number")))
            .collect(),
        serde_json::Value::Null => Ok(Vec::new()),
        other => Err(format!("{other} is not a number or a list of numbers")),
    }
}

impl Task for Sum {
    fn kind(&self) -> &'static str {
        "sum"
    }

    fn validate(
        &self,
        params: &BTreeMap<String, Box<RawValue>>,
        _inputs: &[&str],
    ) -> Result<(), String> {
        kinds::only(params, &["values"])?;
        match params.get("values") {
            Some(values) => numbers(values).map(|_| ()),
            None => Ok(()),
        }
    }

    fn run<'a>(&'a self, ctx: StepContext<'a>) -> StepFuture<'a> {
        Box::pin(async move {
            let mut total = 0.0;
            for raw in ctx
                .params
                .get("values")
                .into_iter()
                .chain(ctx.inputs.values())
            {
                total += numbers(raw)?.iter().sum::<f64>();
            }
            serde_json::value::to_raw_value(&total).map_err(|e| e.to_string())
        })
    }
}

/// The server's kinds with `sum` added.
pub fn kinds_with_sum() -> Kinds {
    let mut kinds = Kinds::builtin();
    kinds.register(Arc::new(Sum));
    kinds
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let config = Config::default();
    let engine = load_engine(&config).await?;
    let server = Server::with_kinds(&config, engine, kinds_with_sum()).await?;
    let listener = tokio::net::TcpListener::bind((config.bind, config.port)).await?;
    println!(
        "serving on {} with the extra step kind \"sum\"",
        listener.local_addr()?
    );
    server
        .run(listener, async {
            let _ = tokio::signal::ctrl_c().await;
        })
        .await
}
