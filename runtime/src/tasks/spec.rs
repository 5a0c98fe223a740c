//! A submitted task: parsing and validation. Everything is checked at submit, so a task that
//! is accepted can only fail at run time for run-time reasons.
//!
//! ```json
//! {"name": "night", "max_concurrency": 2, "timeout_ms": 60000,
//!  "steps": [{"id": "fetch", "kind": "call", "alias": "astro", "function_name": "f",
//!             "args": [], "kwargs": {}, "timeout_ms": 5000, "retries": 2,
//!             "retry_backoff_ms": 100},
//!            {"id": "report", "kind": "script", "code": "inputs['alt'] * 2",
//!             "inputs": {"alt": "fetch.altitude"}, "optional": true}]}
//! ```
//!
//! Step fields common to every kind: `id`, `kind`, `depends_on`, `inputs`, `timeout_ms`,
//! `retries`, `retry_backoff_ms`, `optional`; the rest belong to the kind, which checks
//! them. Values are kept as raw JSON text, so integers of any size pass through exactly.
//!
//! Inputs: `{"name": "<step>"}` passes that step's whole result, `"<step>.key.0"` a part of
//! it (object keys and array indexes, dot-separated). A reference makes the step depend on
//! the one it names.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use serde::Deserialize;
use serde_json::value::RawValue;

use super::kinds::Kinds;

pub const MAX_STEPS: usize = 64;
pub const MAX_NAME: usize = 128;
pub const MAX_RETRIES: u32 = 10;
pub const MAX_BACKOFF_MS: u64 = 60_000;
pub const MAX_CONCURRENCY: usize = 16;
pub const MAX_TASK_TIMEOUT_MS: u64 = 24 * 3600 * 1000;
pub const DEFAULT_TASK_TIMEOUT_MS: u64 = 3600 * 1000;
pub const MAX_STEP_TIMEOUT_MS: u64 = 3600 * 1000;
pub const MAX_INPUTS: usize = 64;

/// Why a task was refused at submit; the message names the offending steps.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct SpecError(pub String);

fn bad(message: impl Into<String>) -> SpecError {
    SpecError(message.into())
}

/// A validated task.
#[derive(Debug, Clone)]
pub struct TaskSpec {
    pub name: String,
    pub max_concurrency: usize,
    pub timeout_ms: u64,
    /// In submit order.
    pub steps: Vec<StepSpec>,
}

/// A validated step.
#[derive(Debug, Clone)]
pub struct StepSpec {
    pub id: String,
    pub kind: String,
    /// Every step this one waits for (declared, and implied by inputs).
    pub depends_on: BTreeSet<String>,
    /// Argument name -> reference.
    pub inputs: BTreeMap<String, Reference>,
    pub timeout_ms: Option<u64>,
    pub retries: u32,
    pub retry_backoff_ms: u64,
    pub optional: bool,
    /// The kind's own fields.
    pub params: BTreeMap<String, Box<RawValue>>,
}

/// A reference into an earlier step's result.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reference {
    pub step: String,
    pub path: Vec<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct TaskBody {
    name: String,
    steps: Vec<Box<RawValue>>,
    #[serde(default = "one")]
    max_concurrency: usize,
    #[serde(default)]
    timeout_ms: Option<u64>,
}

fn one() -> usize {
    1
}

const COMMON: [&str; 8] = [
    "id",
    "kind",
    "depends_on",
    "inputs",
    "timeout_ms",
    "retries",
    "retry_backoff_ms",
    "optional",
];

/// A step id: 1-64 of `[A-Za-z0-9_-]` (no dots: they separate reference paths).
pub fn check_step_id(id: &str) -> Result<(), SpecError> {
    let ok = (1..=64).contains(&id.len())
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
    if ok {
        Ok(())
    } else {
        Err(bad(format!(
            "step id {:?} must be 1-64 letters, digits, '_' or '-'",
            clip(id)
        )))
    }
}

fn clip(text: &str) -> String {
    text.chars().take(64).collect()
}

impl Reference {
    pub fn parse(text: &str) -> Result<Self, SpecError> {
        let mut parts = text.split('.');
        let step = parts.next().unwrap_or_default().to_owned();
        check_step_id(&step)?;
        let path: Vec<String> = parts.map(str::to_owned).collect();
        if path.iter().any(|p| p.is_empty() || p.len() > 128) || path.len() > 32 {
            return Err(bad(format!(
                "input reference {:?} is malformed",
                clip(text)
            )));
        }
        Ok(Self { step, path })
    }
}

fn field<T: serde::de::DeserializeOwned>(
    map: &BTreeMap<String, Box<RawValue>>,
    key: &str,
    step: &str,
) -> Result<Option<T>, SpecError> {
    match map.get(key) {
        None => Ok(None),
        Some(raw) if raw.get() == "null" => Ok(None),
        Some(raw) => serde_json::from_str(raw.get())
            .map(Some)
            .map_err(|_| bad(format!("step {step:?}: field {key:?} has the wrong type"))),
    }
}

impl TaskSpec {
    /// Parses and validates a submitted task (its JSON text).
    pub fn parse(text: &str, kinds: &Kinds) -> Result<Self, SpecError> {
        let body: TaskBody =
            serde_json::from_str(text).map_err(|err| bad(format!("bad task: {err}")))?;
        if body.name.is_empty() || body.name.len() > MAX_NAME {
            return Err(bad(format!("name must be 1 to {MAX_NAME} bytes")));
        }
        if body.steps.is_empty() || body.steps.len() > MAX_STEPS {
            return Err(bad(format!("a task has 1 to {MAX_STEPS} steps")));
        }
        if !(1..=MAX_CONCURRENCY).contains(&body.max_concurrency) {
            return Err(bad(format!(
                "max_concurrency must be between 1 and {MAX_CONCURRENCY}"
            )));
        }
        let timeout_ms = body.timeout_ms.unwrap_or(DEFAULT_TASK_TIMEOUT_MS);
        if !(1..=MAX_TASK_TIMEOUT_MS).contains(&timeout_ms) {
            return Err(bad(format!(
                "timeout_ms must be between 1 and {MAX_TASK_TIMEOUT_MS}"
            )));
        }
        let mut steps = Vec::with_capacity(body.steps.len());
        for raw in &body.steps {
            steps.push(parse_step(raw, kinds)?);
        }
        let spec = Self {
            name: body.name,
            max_concurrency: body.max_concurrency,
            timeout_ms,
            steps,
        };
        spec.check_graph()?;
        Ok(spec)
    }

    /// Duplicate ids, unknown references and cycles, each naming the steps.
    fn check_graph(&self) -> Result<(), SpecError> {
        let mut seen = BTreeSet::new();
        for step in &self.steps {
            if !seen.insert(step.id.as_str()) {
                return Err(bad(format!("duplicate step id {:?}", step.id)));
            }
        }
        for step in &self.steps {
            if let Some(missing) = step.depends_on.iter().find(|d| !seen.contains(d.as_str())) {
                return Err(bad(format!(
                    "step {:?} depends on unknown step {missing:?}",
                    step.id
                )));
            }
            if step.depends_on.contains(&step.id) {
                return Err(bad(format!("step {:?} depends on itself", step.id)));
            }
        }
        let cycle = self.cycle();
        if !cycle.is_empty() {
            return Err(bad(format!(
                "the steps {} form a dependency cycle",
                cycle
                    .iter()
                    .map(|s| format!("{s:?}"))
                    .collect::<Vec<_>>()
                    .join(", ")
            )));
        }
        Ok(())
    }

    /// The steps on or behind a cycle (empty when the graph is acyclic): what Kahn's
    /// algorithm cannot order.
    fn cycle(&self) -> Vec<String> {
        let mut waiting: HashMap<&str, usize> = self
            .steps
            .iter()
            .map(|s| (s.id.as_str(), s.depends_on.len()))
            .collect();
        let mut ready: Vec<&str> = waiting
            .iter()
            .filter(|(_, n)| **n == 0)
            .map(|(id, _)| *id)
            .collect();
        while let Some(done) = ready.pop() {
            waiting.remove(done);
            for step in &self.steps {
                if step.depends_on.contains(done)
                    && let Some(n) = waiting.get_mut(step.id.as_str())
                {
                    *n -= 1;
                    if *n == 0 {
                        ready.push(step.id.as_str());
                    }
                }
            }
        }
        let mut left: Vec<String> = waiting.keys().map(|s| (*s).to_owned()).collect();
        left.sort();
        left
    }

    pub fn step(&self, id: &str) -> Option<&StepSpec> {
        self.steps.iter().find(|s| s.id == id)
    }
}

fn parse_step(raw: &RawValue, kinds: &Kinds) -> Result<StepSpec, SpecError> {
    let map: BTreeMap<String, Box<RawValue>> =
        serde_json::from_str(raw.get()).map_err(|_| bad("each step must be a JSON object"))?;
    let id: String = field(&map, "id", "?")?.ok_or_else(|| bad("a step has no id"))?;
    check_step_id(&id)?;
    let kind: String =
        field(&map, "kind", &id)?.ok_or_else(|| bad(format!("step {id:?} has no kind")))?;
    let Some(task) = kinds.get(&kind) else {
        return Err(bad(format!(
            "step {id:?}: unknown kind {:?} (known: {})",
            clip(&kind),
            kinds.names().join(", ")
        )));
    };
    let mut depends_on: BTreeSet<String> = field::<Vec<String>>(&map, "depends_on", &id)?
        .unwrap_or_default()
        .into_iter()
        .collect();
    if depends_on.len() > MAX_STEPS {
        return Err(bad(format!("step {id:?} has too many dependencies")));
    }
    for dep in &depends_on {
        check_step_id(dep)?;
    }
    let raw_inputs: BTreeMap<String, String> = field(&map, "inputs", &id)?.unwrap_or_default();
    if raw_inputs.len() > MAX_INPUTS {
        return Err(bad(format!(
            "step {id:?} has more than {MAX_INPUTS} inputs"
        )));
    }
    let mut inputs = BTreeMap::new();
    for (name, text) in raw_inputs {
        crate::names::check_variable(&name)
            .map_err(|err| bad(format!("step {id:?}: input name {:?}: {err}", clip(&name))))?;
        let reference = Reference::parse(&text)?;
        depends_on.insert(reference.step.clone());
        inputs.insert(name, reference);
    }
    let timeout_ms: Option<u64> = field(&map, "timeout_ms", &id)?;
    if let Some(t) = timeout_ms
        && !(1..=MAX_STEP_TIMEOUT_MS).contains(&t)
    {
        return Err(bad(format!(
            "step {id:?}: timeout_ms must be between 1 and {MAX_STEP_TIMEOUT_MS}"
        )));
    }
    let retries: u32 = field(&map, "retries", &id)?.unwrap_or(0);
    if retries > MAX_RETRIES {
        return Err(bad(format!(
            "step {id:?}: retries may be at most {MAX_RETRIES}"
        )));
    }
    let retry_backoff_ms: u64 = field(&map, "retry_backoff_ms", &id)?.unwrap_or(0);
    if retry_backoff_ms > MAX_BACKOFF_MS {
        return Err(bad(format!(
            "step {id:?}: retry_backoff_ms may be at most {MAX_BACKOFF_MS}"
        )));
    }
    let optional: bool = field(&map, "optional", &id)?.unwrap_or(false);
    let params: BTreeMap<String, Box<RawValue>> = map
        .into_iter()
        .filter(|(key, _)| !COMMON.contains(&key.as_str()))
        .collect();
    let input_names: Vec<&str> = inputs.keys().map(String::as_str).collect();
    task.validate(&params, &input_names)
        .map_err(|message| bad(format!("step {id:?}: {message}")))?;
    Ok(StepSpec {
        id,
        kind,
        depends_on,
        inputs,
        timeout_ms,
        retries,
        retry_backoff_ms,
        optional,
        params,
    })
}

/// Why a reference could not be resolved.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unresolved {
    /// The path does not exist in the result.
    Missing,
    /// Resolving would parse more than the budget allows.
    TooCostly,
}

/// The part of `result` (raw JSON) that `path` names, exactly as written. Each path segment
/// parses the text left at that level once; `budget` (bytes still allowed to be parsed) is
/// charged for it, so a step's inputs cannot make the host parse without bound.
pub fn resolve(
    result: &RawValue,
    path: &[String],
    budget: &mut usize,
) -> Result<Box<RawValue>, Unresolved> {
    let mut current: Box<RawValue> = result.to_owned();
    for key in path {
        let size = current.get().len();
        *budget = budget.checked_sub(size).ok_or(Unresolved::TooCostly)?;
        let text = current.get().trim_start();
        current = if text.starts_with('{') {
            let mut object: HashMap<String, Box<RawValue>> =
                serde_json::from_str(current.get()).map_err(|_| Unresolved::Missing)?;
            object.remove(key).ok_or(Unresolved::Missing)?
        } else if text.starts_with('[') {
            let index: usize = key.parse().map_err(|_| Unresolved::Missing)?;
            let mut array: Vec<Box<RawValue>> =
                serde_json::from_str(current.get()).map_err(|_| Unresolved::Missing)?;
            if index >= array.len() {
                return Err(Unresolved::Missing);
            }
            array.swap_remove(index)
        } else {
            return Err(Unresolved::Missing);
        };
    }
    Ok(current)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(json: &str) -> Result<TaskSpec, SpecError> {
        TaskSpec::parse(json, &Kinds::builtin())
    }

    fn call(id: &str, extra: &str) -> String {
        format!(r#"{{"id": "{id}", "kind": "call", "alias": "a", "function_name": "f"{extra}}}"#)
    }

    #[test]
    fn a_valid_dag_parses_with_implied_dependencies() {
        let json = format!(
            r#"{{"name": "t", "max_concurrency": 2, "steps": [{}, {}]}}"#,
            call("a", ""),
            call("b", r#", "inputs": {"x": "a.k.0"}"#)
        );
        let spec = parse(&json).expect("valid");
        let b = spec.step("b").expect("b");
        assert!(b.depends_on.contains("a"));
        assert_eq!(b.inputs["x"].path, vec!["k", "0"]);
    }

    #[test]
    fn cycles_duplicates_and_unknown_references_name_the_steps() {
        let cycle = format!(
            r#"{{"name": "t", "steps": [{}, {}, {}]}}"#,
            call("a", r#", "depends_on": ["c"]"#),
            call("b", r#", "depends_on": ["a"]"#),
            call("c", r#", "depends_on": ["b"]"#)
        );
        assert_eq!(
            parse(&cycle).expect_err("refused").0,
            r#"the steps "a", "b", "c" form a dependency cycle"#
        );
        let dup = format!(
            r#"{{"name": "t", "steps": [{}, {}]}}"#,
            call("a", ""),
            call("a", "")
        );
        assert_eq!(
            parse(&dup).expect_err("refused").0,
            r#"duplicate step id "a""#
        );
        let unknown = format!(
            r#"{{"name": "t", "steps": [{}]}}"#,
            call("a", r#", "inputs": {"x": "ghost.v"}"#)
        );
        assert_eq!(
            parse(&unknown).expect_err("refused").0,
            r#"step "a" depends on unknown step "ghost""#
        );
        let own = format!(
            r#"{{"name": "t", "steps": [{}]}}"#,
            call("a", r#", "depends_on": ["a"]"#)
        );
        assert_eq!(
            parse(&own).expect_err("refused").0,
            r#"step "a" depends on itself"#
        );
    }

    #[test]
    fn bounds_and_kinds_are_checked() {
        for (json, says) in [
            (r#"{"name": "t", "steps": []}"#.to_owned(), "1 to 64 steps"),
            (
                format!(
                    r#"{{"name": "t", "max_concurrency": 0, "steps": [{}]}}"#,
                    call("a", "")
                ),
                "max_concurrency",
            ),
            (
                format!(
                    r#"{{"name": "t", "steps": [{}]}}"#,
                    call("a", r#", "retries": 11"#)
                ),
                "retries may be at most 10",
            ),
            (
                r#"{"name": "t", "steps": [{"id": "a", "kind": "teleport"}]}"#.to_owned(),
                "unknown kind",
            ),
            (
                r#"{"name": "t", "steps": [{"id": "a.b", "kind": "call"}]}"#.to_owned(),
                "step id",
            ),
            (
                r#"{"name": "t", "steps": [{"id": "a", "kind": "call", "alias": "x"}]}"#.to_owned(),
                "function_name",
            ),
        ] {
            let err = parse(&json).expect_err(&json).0;
            assert!(err.contains(says), "{json}: {err}");
        }
    }

    #[test]
    fn references_resolve_exactly() {
        let result = RawValue::from_string(
            r#"{"k": [10, {"big": 123456789012345678901234567890}], "s": "x"}"#.to_owned(),
        )
        .expect("json");
        let at = |path: &[&str]| {
            let path: Vec<String> = path.iter().map(|s| (*s).to_owned()).collect();
            resolve(&result, &path, &mut 1_000_000)
                .ok()
                .map(|r| r.get().to_owned())
        };
        assert_eq!(
            at(&["k", "1", "big"]).as_deref(),
            Some("123456789012345678901234567890")
        );
        assert_eq!(at(&["s"]).as_deref(), Some(r#""x""#));
        assert_eq!(at(&["k", "5"]), None);
        assert_eq!(at(&["s", "x"]), None);
        assert_eq!(at(&["nope"]), None);
        // each level is charged its size: a small budget runs out
        let path = vec!["k".to_owned()];
        assert_eq!(
            resolve(&result, &path, &mut 10).map(|_| ()),
            Err(Unresolved::TooCostly)
        );
    }
}
