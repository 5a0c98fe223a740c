//! The parts of the document that are written by hand, checked against the code: the error
//! codes against every code the HTTP layer constructs, and each mirrored schema against its
//! real type's serialisation. (The whole document is checked against docs/api.md and docs/errors.md by
//! `tests/api/openapi.rs`.)

use std::collections::BTreeSet;

use serde::Serialize;
use utoipa::PartialSchema;
use utoipa::openapi::RefOr;
use utoipa::openapi::schema::Schema;

use super::errors::ERROR_CODES;
use super::schemas::{
    CacheStatsSchema, ErrorStrategySchema, JobStatusSchema, JobViewSchema, LimitOverridesSchema,
    LimitsSchema, RoleSchema, TargetSchema, ToolInfoSchema,
};

/// The string literals that follow `ApiError::new(` / `Self::new(` in `text`: the codes.
fn constructed_codes(text: &str) -> Vec<String> {
    let mut codes = Vec::new();
    for opener in ["ApiError::new(", "Self::new("] {
        for (at, _) in text.match_indices(opener) {
            let rest = &text[at + opener.len()..];
            let Some(open) = rest.find('"') else {
                continue;
            };
            let literal = &rest[open + 1..];
            let Some(close) = literal.find('"') else {
                continue;
            };
            let code = &literal[..close];
            if !code.is_empty() && code.bytes().all(|b| b.is_ascii_lowercase() || b == b'_') {
                codes.push(code.to_owned());
            }
        }
    }
    codes
}

#[test]
fn every_constructed_error_code_is_documented() {
    let http = concat!(env!("CARGO_MANIFEST_DIR"), "/src/http");
    let root = std::fs::read_to_string(format!("{http}/mod.rs")).expect("http/mod.rs");
    // The files of the module tree (`mod x;` lines), so a file not yet wired in is skipped.
    let files: Vec<String> = root
        .lines()
        .filter_map(|line| line.trim().strip_prefix("mod ")?.strip_suffix(';'))
        .filter(|name| *name != "openapi")
        .map(|name| format!("{http}/{name}.rs"))
        .chain([format!("{http}/mod.rs")])
        .collect();
    assert!(files.len() > 10, "{files:?}");
    let documented: BTreeSet<&str> = ERROR_CODES.iter().map(|c| c.code).collect();
    assert_eq!(
        documented.len(),
        ERROR_CODES.len(),
        "a code is listed twice"
    );
    let mut seen = BTreeSet::new();
    for file in files {
        let text = std::fs::read_to_string(&file).expect("source file");
        for code in constructed_codes(&text) {
            assert!(
                documented.contains(code.as_str()),
                "{file} answers error code {code:?}, which openapi/errors.rs ERROR_CODES \
                 (and docs/errors.md) do not list"
            );
            seen.insert(code);
        }
    }
    for expected in [
        "bad_request",
        "not_found",
        "internal_error",
        "busy",
        "alias_exists",
    ] {
        assert!(
            seen.contains(expected),
            "the scan missed {expected}: {seen:?}"
        );
    }
}

/// The property names of a mirrored object schema, or the values of a mirrored enum.
fn schema_names(schema: RefOr<Schema>) -> BTreeSet<String> {
    match schema {
        RefOr::T(Schema::Object(object)) => match object.enum_values {
            Some(values) => values
                .iter()
                .filter_map(|v| v.as_str().map(str::to_owned))
                .collect(),
            None => object.properties.keys().cloned().collect(),
        },
        other => panic!(
            "not an object or enum schema: {}",
            serde_json::to_string(&other).unwrap_or_default()
        ),
    }
}

/// The keys of a value's serialisation (or, for a unit enum variant, its name).
fn serialised_names(values: &[impl Serialize]) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    for value in values {
        match serde_json::to_value(value).expect("serialisable") {
            serde_json::Value::Object(map) => names.extend(map.keys().cloned()),
            serde_json::Value::String(name) => {
                names.insert(name);
            }
            other => panic!("unexpected serialisation {other}"),
        }
    }
    names
}

#[test]
fn mirrored_schemas_match_the_real_types() {
    use crate::config::Role;
    use crate::jobs::{JobStatus, JobView};
    use crate::registry::{CacheStats, Target, ToolInfo};
    use crate::sandbox::{LimitOverrides, Limits};
    use crate::tenants::ErrorStrategy;

    // Exhaustive matches: a new variant stops this test compiling until its mirror has it.
    let _ = |status: JobStatus| match status {
        JobStatus::Running
        | JobStatus::Succeeded
        | JobStatus::Failed
        | JobStatus::Cancelled
        | JobStatus::Interrupted => {}
    };
    let _ = |strategy: ErrorStrategy| match strategy {
        ErrorStrategy::Throw | ErrorStrategy::ReturnDefault | ErrorStrategy::LogAndContinue => {}
    };
    let _ = |role: Role| match role {
        Role::Admin | Role::Tenant => {}
    };
    let raw = || serde_json::value::RawValue::from_string("1".to_owned()).ok();
    let limits = Limits::default();
    let cases: [(BTreeSet<String>, BTreeSet<String>, &str); 9] = [
        (
            serialised_names(&[limits]),
            schema_names(LimitsSchema::schema()),
            "Limits",
        ),
        (
            serialised_names(&[LimitOverrides::default()]),
            schema_names(LimitOverridesSchema::schema()),
            "LimitOverrides",
        ),
        (
            serialised_names(&[ToolInfo {
                alias: "a".into(),
                script_name: "s".into(),
                script_version: "v".into(),
                script_source: crate::scripts::Source::Tenant,
                limits,
                mode: crate::registry::Mode::Isolated,
                image: Some(crate::sandbox::ImageKind::Scientific),
                calls: 1,
                resets: 0,
                restored_at: Some(1.0),
            }]),
            schema_names(ToolInfoSchema::schema()),
            "ToolInfo",
        ),
        (
            serialised_names(&[JobView {
                job_id: "j".into(),
                alias: "a".into(),
                function_name: "f".into(),
                status: JobStatus::Failed,
                created_at: 1.0,
                finished_at: Some(2.0),
                result: raw(),
                error: raw(),
            }]),
            schema_names(JobViewSchema::schema()),
            "JobView",
        ),
        (
            serialised_names(&[
                JobStatus::Running,
                JobStatus::Succeeded,
                JobStatus::Failed,
                JobStatus::Cancelled,
                JobStatus::Interrupted,
            ]),
            schema_names(JobStatusSchema::schema()),
            "JobStatus",
        ),
        (
            serialised_names(&[CacheStats {
                enabled: true,
                ttl_s: 60,
                entries: 0,
                bytes: 0,
                hits: 0,
                misses: 0,
            }]),
            schema_names(CacheStatsSchema::schema()),
            "CacheStats",
        ),
        (
            serialised_names(&[
                ErrorStrategy::Throw,
                ErrorStrategy::ReturnDefault,
                ErrorStrategy::LogAndContinue,
            ]),
            schema_names(ErrorStrategySchema::schema()),
            "ErrorStrategy",
        ),
        (
            serialised_names(&[Target {
                alias: "a".into(),
                function_name: "f".into(),
            }]),
            schema_names(TargetSchema::schema()),
            "Target",
        ),
        (
            serialised_names(&[Role::Admin, Role::Tenant]),
            schema_names(RoleSchema::schema()),
            "Role",
        ),
    ];
    for (real, mirrored, name) in cases {
        assert_eq!(
            real, mirrored,
            "the {name} schema (openapi/schemas.rs) drifted"
        );
    }
}

#[test]
fn task_schemas_match_the_task_types() {
    use super::schemas::{ChangeSchema, StepStateSchema, TaskRecordSchema, TaskSummarySchema};
    use crate::store::tasks::{Change, StepState, TaskRecord, TaskSummary};

    let raw = || serde_json::value::RawValue::from_string("1".to_owned()).ok();
    let summary = TaskSummary {
        task_id: "t".into(),
        name: "n".into(),
        status: "failed".into(),
        error: Some("e".into()),
        created_at: 1.0,
        updated_at: 2.0,
    };
    let step = StepState {
        id: "s".into(),
        kind: "call".into(),
        status: "succeeded".into(),
        attempts: 1,
        result: raw(),
        error: Some("e".into()),
        started_at: Some(1.0),
        finished_at: Some(2.0),
    };
    let change = Change {
        at: 1.0,
        step_id: Some("s".into()),
        status: "running".into(),
        attempt: 1,
        error: Some("e".into()),
        node: Some("n".into()),
    };
    let record = TaskRecord {
        summary: summary.clone(),
        steps: vec![step.clone()],
        history: vec![change.clone()],
        spec: String::new(),
    };
    assert_eq!(
        serialised_names(&[summary]),
        schema_names(TaskSummarySchema::schema())
    );
    assert_eq!(
        serialised_names(&[step]),
        schema_names(StepStateSchema::schema())
    );
    assert_eq!(
        serialised_names(&[change]),
        schema_names(ChangeSchema::schema())
    );
    assert_eq!(
        serialised_names(&[record]),
        schema_names(TaskRecordSchema::schema())
    );
}

#[test]
fn the_module_status_schema_matches_the_loader_type() {
    use super::schemas::ModuleStatusSchema;
    use crate::native::{State, Status};

    // Exhaustive: a new state stops this compiling until the schema's description has it.
    let _ = |state: State| match state {
        State::Unloaded | State::Loading | State::Loaded | State::Error | State::Disabled => {}
    };
    let status = Status {
        name: "m".into(),
        state: State::Loaded,
        version: Some("1.0.0".into()),
        error: Some("e".into()),
        functions: vec!["f".into()],
        dependencies: Vec::new(),
        dependents: Vec::new(),
        calls: 1,
        failures: 0,
    };
    assert_eq!(
        serialised_names(&[status]),
        schema_names(ModuleStatusSchema::schema()),
        "the ModuleStatus schema (openapi/schemas.rs) drifted"
    );
}
