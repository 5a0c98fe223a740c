# scriptbox guest driver, convert.py: constants, output capture, the conversion table and error frames.
# The parts are one module: runtime/src/guest.rs joins them, in the order it lists, into
# _scriptbox_driver.py; a part uses names the parts before it define.
"""scriptbox guest driver: imports one tool script, then serves the host's requests.

Runs inside the sandbox (CPython compiled to WASI, see runtime/src/sandbox/). It is mounted
read-only at /scriptbox and started as

    python /scriptbox/_scriptbox_driver.py <module_name> <scripts_dir>

Transport. Inside wasmtime the driver talks to the host through the interpreter's "door"
(`_host`, one custom import `host.call`): it hands the host a response frame and gets the
next request frame back in the same call, so the guest never blocks on stdin and tool code
that writes to file descriptors 1 and 2 cannot forge a frame. Under native CPython (the
benchmark's reference) the same loop runs over OS pipes: 4-byte little-endian length, then
the frame, on stdin/stdout.

Frames are JSON objects (protocol version 1; runtime/src/protocol/ holds the host's types):

    host -> guest   {"v": 1, "id": N, "op": "call", "function": str, "args": [...],
                     "kwargs": {...}, "output_cap": int}
                    any request may add "stream": true: print() output is then also
                    written to fds 1 and 2 as it comes (the host streams it on)
                    other ops, each with "output_cap" too:
                    {"op": "get_variable", "name": str}
                    {"op": "set_variable", "name": str, "value": <json>}
                    {"op": "functions"}
                    {"op": "eval", "expression": str}
                    {"op": "exec", "code": str}
                    {"op": "create_object", "class_name", "object_name", "args", "kwargs"}
                    {"op": "call_method", "object_name" | "class_name", "method_name",
                     "args", "kwargs"}
                    {"op": "get_attribute", "object_name" | "class_name", "attr_name"}
                    {"op": "set_attribute", "object_name" | "class_name", "attr_name", "value"}
                    {"op": "delete_object", "object_name"}
                    {"op": "list_objects"}
                    {"op": "exports"}
                    {"op": "memory_stats"}, {"op": "collect"}
                    {"op": "profile", "code": str, "top": int}
                    {"op": "add_sys_path", "path": str}
                    {"op": "run", "code": str, "args": <json>}
                    {"op": "run_file", "path": str, "argv": [str]}
                    {"op": "step", "code" | "path": str, "args", "inputs", "imports": [str]}
    guest -> host   {"v": 1, "id": N, "ok": true, "result": <json>, "stdout": str, "stderr": str}
                    {"v": 1, "id": N, "ok": false, "error": {"kind", "type", "message",
                     "traceback"}, "stdout": str, "stderr": str}
    first frame     {"v": 1, "id": 0, "ok": true, "result": {"ready": true}} after the import,
                    or ok=false with kind "load_failed".
    host call       {"v": 1, "id": N, "host": {"service": ..., ...}} from guest code during
                    request N (the `scriptbox` module, see make_guest_module); the door
                    returns {"ok": true, "result": <json>} or {"ok": false, "error": str}
                    and the request goes on.

Conversion (docs/api.md, "Conversion table"), results: None, bool, str, int (any size, exact),
finite float, list and tuple (as arrays), set and frozenset (arrays, sorted when the items
sort), dict with str keys, numpy scalars (.item()) and arrays (.tolist()), and four tagged
types as one-key objects: bytes/bytearray/memoryview {"$bytes": base64}, datetime
{"$datetime": ISO 8601}, date {"$date": ...}, time {"$time": ...}. Everything else, including
NaN and infinities, non-str dict keys, cycles and nesting deeper than MAX_DEPTH, is refused
with kind "unserializable_result" naming the type; no value is ever turned into text with
str(). Arguments: JSON values as Python's json module reads them, and a one-key object whose
key is one of the four tags (and whose value is a string) becomes that type.
"""

import io
import json
import math
import sys
import traceback

# Integers of any size travel exactly (docs/api.md, "Conversion table"); fuel and the deadline bound
# the cost of converting a huge one, so CPython's 4,300-digit guard is lifted.
if hasattr(sys, "set_int_max_str_digits"):
    sys.set_int_max_str_digits(0)

PROTOCOL = 1
MAX_DEPTH = 100
DEFAULT_OUTPUT_CAP = 1 << 20


class OutputLimit(BaseException):
    """Raised in tool code when its print() output passes the call's cap. A BaseException so
    that `except Exception` in a tool does not swallow it; the driver also remembers it."""


class Unserializable(Exception):
    def __init__(self, what):
        super().__init__(what)
        self.what = what


class CappedOutput(io.TextIOBase):
    """sys.stdout/sys.stderr during a call: keeps text up to a cap shared by both streams."""

    def __init__(self, budget, fd):
        self.budget = budget
        self.parts = None  # made on the first write: most calls print nothing
        # While the request streams (its "stream" flag), accepted text is also written to
        # this descriptor, where the host picks it up as it comes.
        self.fd = fd
        self.streaming = False

    def writable(self):
        return True

    def write(self, text):
        if not isinstance(text, str):
            raise TypeError("write() argument must be str, not " + type(text).__name__)
        data = text.encode("utf-8", "surrogatepass")
        size = len(data)
        if self.parts is None:
            self.parts = []
        if size > self.budget.left:
            keep = data[: max(self.budget.left, 0)]
            self.parts.append(keep.decode("utf-8", "ignore"))
            self.budget.left = 0
            self.budget.exceeded = True
            self.pass_on(keep)
            raise OutputLimit("output limit reached")
        self.budget.left -= size
        self.parts.append(text)
        self.pass_on(data)
        return len(text)

    def pass_on(self, data):
        if not self.streaming or not data:
            return
        import os

        view = memoryview(data)
        while view:
            view = view[os.write(self.fd, view):]

    def flush(self):
        pass

    def value(self):
        return "".join(self.parts) if self.parts else ""

    def reset(self, streaming=False):
        self.parts = None
        self.streaming = streaming


class Budget:
    def __init__(self, cap):
        self.left = cap
        self.exceeded = False

    def reset(self, cap):
        self.left = cap
        self.exceeded = False


# Exact types that are already JSON values (floats still need the finiteness check).
_PLAIN = frozenset([type(None), bool, int, str])


def type_name(obj):
    t = type(obj)
    module = getattr(t, "__module__", "")
    name = getattr(t, "__qualname__", t.__name__)
    return name if module in ("builtins", "") else module + "." + name


def to_json(obj, depth=0, active=None):
    """A JSON-safe copy of obj under the conversion table, or Unserializable naming the type."""
    t = type(obj)
    if t in _PLAIN:
        return obj
    if t is float:
        if math.isfinite(obj):
            return obj
        raise Unserializable("float " + repr(obj) + " (JSON has no NaN or infinity)")
    if depth >= MAX_DEPTH:
        raise Unserializable("value nested deeper than " + str(MAX_DEPTH) + " levels")
    if t.__module__ == "numpy":
        if hasattr(obj, "tolist") and t.__name__ == "ndarray":
            return to_json(obj.tolist(), depth + 1, active)
        if hasattr(obj, "item"):
            return to_json(obj.item(), depth + 1, active)
    if isinstance(obj, (bool, int, str)):  # subclasses: IntEnum, str Enum, ...
        return bool(obj) if isinstance(obj, bool) else (int(obj) if isinstance(obj, int) else str.__str__(obj))
    if isinstance(obj, float):
        return to_json(float(obj), depth, active)
    tagged = _OUT_TAGS.get(t)
    if tagged is not None:
        return tagged(obj)
    if isinstance(obj, (set, frozenset)):
        items = list(obj)
        try:
            items.sort()
        except TypeError:
            pass  # items that do not sort keep the set's order
        return to_json(items, depth, active)
    if isinstance(obj, (list, tuple, dict)):
        active = active if active is not None else set()
        if id(obj) in active:
            raise Unserializable(type_name(obj) + " that contains itself")
        active.add(id(obj))
        try:
            if isinstance(obj, dict):
                out = {}
                for k, v in obj.items():
                    if type(k) is not str:
                        raise Unserializable("dict key of type " + type_name(k) + " (keys must be str)")
                    out[k] = to_json(v, depth + 1, active)
                return out
            return [to_json(v, depth + 1, active) for v in obj]
        finally:
            active.discard(id(obj))
    raise Unserializable(type_name(obj))


def _b64(data):
    import binascii

    return {"$bytes": binascii.b2a_base64(data, newline=False).decode("ascii")}


def _iso(tag):
    return lambda value: {tag: value.isoformat()}


def _out_tags():
    """Types sent as tagged one-key objects (exact types: subclasses are refused)."""
    import datetime

    return {
        bytes: _b64,
        bytearray: _b64,
        memoryview: lambda view: _b64(view.tobytes()),
        datetime.datetime: _iso("$datetime"),
        datetime.date: _iso("$date"),
        datetime.time: _iso("$time"),
    }


_OUT_TAGS = _out_tags()


class BadTaggedValue(ValueError):
    """A tagged argument ({"$bytes": ...}) whose text does not parse."""


def _in_tags():
    import binascii
    import datetime

    return {
        "$bytes": lambda text: binascii.a2b_base64(text, strict_mode=True),
        "$datetime": datetime.datetime.fromisoformat,
        "$date": datetime.date.fromisoformat,
        "$time": datetime.time.fromisoformat,
    }


_IN_TAGS = _in_tags()


def _tagged(obj):
    """json object_hook: a one-key object {"$tag": str} becomes its type; others stay dicts."""
    if len(obj) != 1:
        return obj
    for key, value in obj.items():
        convert = _IN_TAGS.get(key)
        if convert is None or type(value) is not str:
            return obj
        try:
            return convert(value)
        except ValueError as exc:  # binascii.Error is a ValueError
            raise BadTaggedValue(key + " value " + repr(value[:40]) + " does not parse: " + str(exc)) from None
    return obj


# Frames from files under this prefix (the tool's scripts) are the only ones a traceback shows.
SCRIPTS_PREFIX = "/scripts/"


def tenant_traceback(exc, tb):
    """The traceback as the tenant should see it: only frames of its own scripts (guest paths),
    then the exception line. Driver and standard-library frames are left out, and so are
    chained exceptions, which could carry them."""
    frames = [f for f in traceback.extract_tb(tb) if f.filename.startswith(SCRIPTS_PREFIX)]
    lines = ["Traceback (most recent call last):\n"] if frames else []
    lines += traceback.format_list(frames)
    lines += traceback.format_exception_only(type(exc), exc)
    return "".join(lines)


def error_frame(kind, exc=None, message=None, tb=None):
    err = {"kind": kind}
    if exc is not None:
        try:
            err["type"] = type_name(exc)
        except BaseException:
            err["type"] = "<unnamed exception>"
        try:
            err["message"] = str(exc)
        except BaseException:
            err["message"] = "<exception message could not be rendered>"
        if tb is not None:
            try:
                err["traceback"] = tenant_traceback(exc, tb)
            except BaseException:
                err["traceback"] = ""
    if message is not None:
        err["message"] = message
    return {"ok": False, "error": err}
