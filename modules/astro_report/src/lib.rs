//! `astro_report`: a native module that depends on `astro_native`. It asks its dependency
//! (through the host, the only way one module reaches another) for a target's position and
//! says whether it is observable above the altitude its config sets.

use std::sync::atomic::{AtomicU64, Ordering};

use scriptbox_module::{Value, json};

/// The configured lowest useful altitude, as `f64` bits (set once by init).
static MIN_ALTITUDE_BITS: AtomicU64 = AtomicU64::new(0);

/// Reads `{"min_altitude_deg": <number>}` from the module's `config.json`, and checks that
/// its dependency answers (a module may call its dependencies from its init).
fn init(config: Value) -> Result<(), String> {
    let host = scriptbox_module::host().ok_or("no host table")?;
    host.call(
        "astro_native",
        "sidereal_time",
        &json!({"unix_s": 0.0, "longitude_deg": 0.0}),
    )
    .map_err(|err| format!("astro_native does not answer: {err}"))?;
    let min = match config.get("min_altitude_deg") {
        None => 0.0,
        Some(value) => value
            .as_f64()
            .filter(|v| (-90.0..=90.0).contains(v))
            .ok_or("config: min_altitude_deg must be a number between -90 and 90")?,
    };
    MIN_ALTITUDE_BITS.store(min.to_bits(), Ordering::Relaxed);
    Ok(())
}

/// The same arguments as `astro_native.altaz`; adds `observable` and the threshold.
fn report(args: Value) -> Result<Value, String> {
    let host = scriptbox_module::host().ok_or("the module is not initialised")?;
    let position = host.call("astro_native", "altaz", &args)?;
    let altitude = position["altitude_deg"]
        .as_f64()
        .ok_or("astro_native answered without an altitude")?;
    let min = f64::from_bits(MIN_ALTITUDE_BITS.load(Ordering::Relaxed));
    Ok(json!({
        "altitude_deg": altitude,
        "azimuth_deg": position["azimuth_deg"],
        "min_altitude_deg": min,
        "observable": altitude >= min,
    }))
}

scriptbox_module::module! { init: init, functions: [report] }
