//! A native module for the tests: each function misbehaves in one way the host must survive.

use scriptbox_module::{Value, json};

/// Returns its arguments.
fn echo(args: Value) -> Result<Value, String> {
    Ok(args)
}

/// Always an error.
fn fail(_args: Value) -> Result<Value, String> {
    Err("fixture failure".to_owned())
}

/// Panics (caught at the ABI boundary by the helper crate).
fn explode(_args: Value) -> Result<Value, String> {
    panic!("fixture panic")
}

/// Sleeps `{"ms": N}` milliseconds (at most 10 s), for the call timeout.
fn sleep(args: Value) -> Result<Value, String> {
    let ms = args["ms"]
        .as_u64()
        .ok_or("ms must be a whole number")?
        .min(10_000);
    std::thread::sleep(std::time::Duration::from_millis(ms));
    Ok(json!({"slept_ms": ms}))
}

scriptbox_module::module! { functions: [echo, fail, explode, sleep] }
