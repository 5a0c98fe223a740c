//! `astro_native`: the astronomy tool's arithmetic as a trusted native module (sidereal time
//! and the RA/Dec to altitude/azimuth transform), the same formulas as
//! `scripts/astronomy_tool.py` (IAU 1982 GMST; no precession, nutation or refraction).
//!
//! Times are Unix seconds (UTC) so no calendar parsing is needed here.

use scriptbox_module::{Value, json};

const UNIX_EPOCH_JD: f64 = 2_440_587.5;
const J2000_JD: f64 = 2_451_545.0;

fn number(args: &Value, name: &str, low: f64, high: f64) -> Result<f64, String> {
    let value = args
        .get(name)
        .and_then(Value::as_f64)
        .ok_or_else(|| format!("{name} must be a number"))?;
    if !(low..=high).contains(&value) {
        return Err(format!("{name} must be between {low} and {high}"));
    }
    Ok(value)
}

/// Greenwich mean sidereal time, degrees, for a Unix time.
fn gmst_deg(unix_s: f64) -> f64 {
    let jd = unix_s / 86_400.0 + UNIX_EPOCH_JD;
    let t = (jd - J2000_JD) / 36_525.0;
    let gmst = 280.460_618_37 + 360.985_647_366_29 * (jd - J2000_JD) + 0.000_387_933 * t * t
        - t.powi(3) / 38_710_000.0;
    gmst.rem_euclid(360.0)
}

/// `{unix_s, longitude_deg}` → `{gmst_deg, local_sidereal_deg}`.
fn sidereal_time(args: Value) -> Result<Value, String> {
    let unix_s = number(&args, "unix_s", -1e11, 1e11)?;
    let lon = number(&args, "longitude_deg", -180.0, 180.0)?;
    let gmst = gmst_deg(unix_s);
    Ok(json!({"gmst_deg": gmst, "local_sidereal_deg": (gmst + lon).rem_euclid(360.0)}))
}

/// `{ra_deg, dec_deg, latitude_deg, longitude_deg, unix_s}` → altitude, azimuth (from north
/// through east), hour angle and local sidereal time, all in degrees.
fn altaz(args: Value) -> Result<Value, String> {
    let ra = number(&args, "ra_deg", 0.0, 360.0)?;
    let dec = number(&args, "dec_deg", -90.0, 90.0)?;
    let lat = number(&args, "latitude_deg", -90.0, 90.0)?;
    let lon = number(&args, "longitude_deg", -180.0, 180.0)?;
    let unix_s = number(&args, "unix_s", -1e11, 1e11)?;
    let lst = (gmst_deg(unix_s) + lon).rem_euclid(360.0);
    let hour_angle = (lst - ra).rem_euclid(360.0);
    let (h, d, p) = (hour_angle.to_radians(), dec.to_radians(), lat.to_radians());
    let sin_alt = d.sin() * p.sin() + d.cos() * p.cos() * h.cos();
    let alt = sin_alt.clamp(-1.0, 1.0).asin();
    let az = (-h.sin() * d.cos()).atan2(d.sin() * p.cos() - d.cos() * p.sin() * h.cos());
    Ok(json!({
        "altitude_deg": alt.to_degrees(),
        "azimuth_deg": az.to_degrees().rem_euclid(360.0),
        "hour_angle_deg": hour_angle,
        "local_sidereal_deg": lst,
    }))
}

scriptbox_module::module! { functions: [sidereal_time, altaz] }

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn sidereal_time_at_j2000_matches_the_iau_value() {
        // 2000-01-01T12:00:00Z: GMST is 280.46061837 degrees by definition of the polynomial.
        let out = sidereal_time(json!({"unix_s": 946_728_000.0, "longitude_deg": 15.0})).unwrap();
        assert!((out["gmst_deg"].as_f64().unwrap() - 280.460_618_37).abs() < 1e-6);
        assert!((out["local_sidereal_deg"].as_f64().unwrap() - 295.460_618_37).abs() < 1e-6);
    }

    #[test]
    fn a_pole_star_stands_at_the_observers_latitude() {
        let out = altaz(json!({"ra_deg": 0.0, "dec_deg": 90.0, "latitude_deg": 51.5,
                               "longitude_deg": 0.0, "unix_s": 1.7e9}))
        .unwrap();
        assert!((out["altitude_deg"].as_f64().unwrap() - 51.5).abs() < 1e-9);
    }

    #[test]
    fn bad_arguments_are_named() {
        assert_eq!(
            altaz(json!({"ra_deg": "x"})).unwrap_err(),
            "ra_deg must be a number"
        );
        assert_eq!(
            sidereal_time(json!({"unix_s": 0, "longitude_deg": 200})).unwrap_err(),
            "longitude_deg must be between -180 and 180"
        );
    }
}
