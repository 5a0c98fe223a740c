"""Astronomy helpers: the tool the integration guide's Quick Start loads as `astro`.

calculate_altitude() gives the altitude and azimuth of a target (RA/Dec, J2000, degrees) seen
by an observer (latitude/longitude, degrees, east positive) at a UTC time. Every argument has a
default, so the guide's call with no arguments works: Vega from Greenwich, now.

Accuracy: sidereal time by the IAU 1982 GMST polynomial; no precession, nutation, aberration
or refraction, so expect errors up to a few tenths of a degree for present-day dates. Good
enough for "is it up?", not for pointing a telescope.
"""

import math
from datetime import datetime, timezone

VEGA = {"name": "Vega", "ra_deg": 279.23473479, "dec_deg": 38.78368896}
GREENWICH = {"name": "Royal Observatory Greenwich", "latitude_deg": 51.4769, "longitude_deg": -0.0005}


def _parse_utc(utc):
    if utc is None:
        return datetime.now(timezone.utc)
    if not isinstance(utc, str):
        raise TypeError("utc must be an ISO 8601 string such as '2026-11-24T22:00:00Z'")
    text = utc.strip().replace("Z", "+00:00")
    moment = datetime.fromisoformat(text)
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=timezone.utc)
    return moment.astimezone(timezone.utc)


def _julian_date(moment):
    return moment.timestamp() / 86400.0 + 2440587.5


def greenwich_sidereal_deg(utc=None):
    """Greenwich mean sidereal time in degrees for a UTC time (ISO 8601; default now)."""
    jd = _julian_date(_parse_utc(utc))
    t = (jd - 2451545.0) / 36525.0
    gmst = 280.46061837 + 360.98564736629 * (jd - 2451545.0) + 0.000387933 * t * t - t**3 / 38710000.0
    return gmst % 360.0


def _check_range(name, value, low, high):
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{name} must be a number")
    if not (low <= value <= high):
        raise ValueError(f"{name} must be between {low} and {high}")
    return float(value)


def calculate_altitude(
    ra_deg: float = VEGA["ra_deg"],
    dec_deg: float = VEGA["dec_deg"],
    latitude_deg: float = GREENWICH["latitude_deg"],
    longitude_deg: float = GREENWICH["longitude_deg"],
    utc: str = None,
) -> dict:
    """Altitude and azimuth (degrees) of a target for an observer at a UTC time."""
    ra = _check_range("ra_deg", ra_deg, 0.0, 360.0)
    dec = _check_range("dec_deg", dec_deg, -90.0, 90.0)
    lat = _check_range("latitude_deg", latitude_deg, -90.0, 90.0)
    lon = _check_range("longitude_deg", longitude_deg, -180.0, 180.0)
    moment = _parse_utc(utc)
    lst = (greenwich_sidereal_deg(moment.isoformat()) + lon) % 360.0
    hour_angle = (lst - ra) % 360.0
    h, d, p = math.radians(hour_angle), math.radians(dec), math.radians(lat)
    sin_alt = math.sin(d) * math.sin(p) + math.cos(d) * math.cos(p) * math.cos(h)
    alt = math.asin(max(-1.0, min(1.0, sin_alt)))
    az = math.atan2(-math.sin(h) * math.cos(d), math.sin(d) * math.cos(p) - math.cos(d) * math.sin(p) * math.cos(h))
    return {
        "altitude_deg": round(math.degrees(alt), 6),
        "azimuth_deg": round(math.degrees(az) % 360.0, 6),
        "hour_angle_deg": round(hour_angle, 6),
        "local_sidereal_deg": round(lst, 6),
        "above_horizon": alt > 0,
        "utc": moment.isoformat().replace("+00:00", "Z"),
        "target": {"ra_deg": ra, "dec_deg": dec},
        "observer": {"latitude_deg": lat, "longitude_deg": lon},
    }


def native_altitude(
    ra_deg: float = VEGA["ra_deg"],
    dec_deg: float = VEGA["dec_deg"],
    latitude_deg: float = GREENWICH["latitude_deg"],
    longitude_deg: float = GREENWICH["longitude_deg"],
    utc: str = None,
) -> dict:
    """As calculate_altitude, computed by the trusted native module astro_native (through the
    host). Works only when the server's administrator loaded the module and this tenant's
    policy allows astro_native.altaz; otherwise scriptbox.HostError says which is missing."""
    import scriptbox

    moment = _parse_utc(utc)
    answer = scriptbox.native(
        "astro_native",
        "altaz",
        ra_deg=ra_deg,
        dec_deg=dec_deg,
        latitude_deg=latitude_deg,
        longitude_deg=longitude_deg,
        unix_s=moment.timestamp(),
    )
    return {
        "altitude_deg": round(answer["altitude_deg"], 6),
        "azimuth_deg": round(answer["azimuth_deg"], 6),
        "above_horizon": answer["altitude_deg"] > 0,
        "utc": moment.isoformat().replace("+00:00", "Z"),
        "computed_by": "astro_native",
    }


def get_tool_info() -> dict:
    """Tool metadata for discovery."""
    return {
        "name": "astronomy_tool",
        "version": "1.0.0",
        "description": "Altitude/azimuth of a target for an observer and time",
        "functions": ["calculate_altitude", "greenwich_sidereal_deg", "native_altitude"],
    }
