"""Fixture for the conversion table: values made in Python, and the Python types of values
that arrived from JSON."""

import datetime
import decimal


def make(kind):
    values = {
        "bytes": b"\x00\xffhi",
        "bytearray": bytearray(b"ab"),
        "memoryview": memoryview(b"xyz"),
        "set": {3, 1, 2},
        "frozenset": frozenset(["b", "a"]),
        "mixed_set": {1, "a"},
        "datetime": datetime.datetime(2026, 11, 24, 5, 30, 1, 250000, tzinfo=datetime.timezone.utc),
        "naive_datetime": datetime.datetime(2026, 1, 2, 3, 4, 5),
        "date": datetime.date(2026, 11, 24),
        "time": datetime.time(23, 59, 58),
        "tuple": (1, (2, "three")),
        "unicode": "é 漢字 🚀 \u0000 \"quoted\"",
        "float": 0.1,
        "negative_zero": -0.0,
        "big_float": 1e308,
        "small_float": 5e-324,
        "bool": True,
        "nested_bytes": {"payload": [b"a", {"deep": b"b"}]},
        "complex": 1 + 2j,
        "decimal": decimal.Decimal("1.5"),
        "function": make,
        "self_list": _self_list(),
        "deep": _deep(150),
        "str_subclass_key": {1.5: "x"},
    }
    return values[kind]


def _self_list():
    values = [1]
    values.append(values)
    return values


def _deep(levels):
    value = []
    for _ in range(levels):
        value = [value]
    return value


def _describe(value):
    if isinstance(value, dict):
        return {"dict": {k: _describe(v) for k, v in value.items()}}
    if isinstance(value, list):
        return {"list": [_describe(v) for v in value]}
    return {type(value).__name__: repr(value)}


def describe(*args, **kwargs):
    """How the arguments arrived in Python: type names and reprs, recursively."""
    return {"args": [_describe(a) for a in args], "kwargs": {k: _describe(v) for k, v in kwargs.items()}}


def echo(value):
    return value
