//! End-to-end tests, one binary so the engine loads once (as in wasmtime's tests/all).

mod bad_input;
mod batch;
mod conversion;
mod debug;
mod engine_cache;
mod environment;
mod execute;
mod exports;
mod fetch;
mod guide;
mod high_level;
mod host;
mod images;
mod isolation;
mod jobs;
mod lifecycle;
mod limits;
mod memory;
mod namespace;
mod native;
mod objects;
mod openapi;
mod packages;
mod performance;
mod sandbox;
mod tasks;
