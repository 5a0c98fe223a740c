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

Conversion (README "Conversion table"), results: None, bool, str, int (any size, exact),
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

# Integers of any size travel exactly (README "Conversion table"); fuel and the deadline bound
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

    def __init__(self, budget):
        self.budget = budget
        self.parts = None  # made on the first write: most calls print nothing

    def writable(self):
        return True

    def write(self, text):
        if not isinstance(text, str):
            raise TypeError("write() argument must be str, not " + type(text).__name__)
        size = len(text.encode("utf-8", "surrogatepass"))
        if self.parts is None:
            self.parts = []
        if size > self.budget.left:
            keep = text.encode("utf-8", "surrogatepass")[: max(self.budget.left, 0)]
            self.parts.append(keep.decode("utf-8", "ignore"))
            self.budget.left = 0
            self.budget.exceeded = True
            raise OutputLimit("output limit reached")
        self.budget.left -= size
        self.parts.append(text)
        return len(text)

    def flush(self):
        pass

    def value(self):
        return "".join(self.parts) if self.parts else ""

    def reset(self):
        self.parts = None


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


class Driver:
    def __init__(self, module_name, scripts_dir):
        self.module_name = module_name
        self.scripts_dir = scripts_dir
        self.module = None
        self.rid = 0  # the request being served (host calls carry its id)
        # Live objects by name (createObject); they live as long as this interpreter.
        self.objects = {}
        # One capture pair for the driver's life, reset per call: cheaper than new objects.
        self.budget = Budget(0)
        self.out = CappedOutput(self.budget)
        self.err = CappedOutput(self.budget)

    def load(self):
        """Import the tool script by file path under its own module name. The module name
        SCRATCH_MODULE instead makes an empty namespace: a fresh sandbox for code sent by
        the client (executeWithLogging, executeWithProfiling)."""
        import importlib.util
        import os

        if self.module_name == SCRATCH_MODULE:
            import types

            self.module = types.ModuleType("__scratch__")
            self.module.__dict__["__builtins__"] = __builtins__
            return {"ok": True, "result": {"ready": True}}

        path = os.path.join(self.scripts_dir, self.module_name + ".py")
        if not os.path.isfile(path):
            path = os.path.join(self.scripts_dir, self.module_name, "__init__.py")
        if self.scripts_dir not in sys.path:
            # Last, so a script can never shadow the stdlib or a bundled package.
            sys.path.append(self.scripts_dir)  # sibling helper modules import as usual
        if self.module_name in sys.modules:
            return error_frame(
                "load_failed",
                message="script name " + repr(self.module_name) + " shadows a module the runtime already uses",
            )
        try:
            spec = importlib.util.spec_from_file_location(self.module_name, path)
            module = importlib.util.module_from_spec(spec)
            sys.modules[self.module_name] = module
            spec.loader.exec_module(module)
        except BaseException as exc:  # SystemExit at import time is a load failure too
            sys.modules.pop(self.module_name, None)
            return error_frame("load_failed", exc, tb=exc.__traceback__.tb_next)
        self.module = module
        return {"ok": True, "result": {"ready": True}}

    def handle(self, request):
        op = request.get("op")
        if op == "call":
            return self.call(request)
        handler = self._OPS.get(op)
        if handler is None:
            return error_frame("bad_request", message="unknown op " + repr(op))
        return handler(self, request)

    def call(self, request):
        name = request.get("function")
        args = request.get("args") or []
        kwargs = request.get("kwargs") or {}
        if type(name) is not str or name.startswith("_") or not name.isidentifier():
            return error_frame("not_found", message="no public function named " + repr(name))
        try:
            fn = getattr(self.module, name, None)
        except BaseException as exc:  # a module-level __getattr__ that raises
            return error_frame("python_exception", exc, tb=exc.__traceback__)
        if fn is None or not callable(fn):
            return error_frame("not_found", message="no function named " + repr(name) + " in the tool")
        return self.captured(request, lambda: fn(*args, **kwargs))

    # The other ops. Each runs under the same capture and budget as a call; the host has
    # checked names against its grammar, the driver checks them again.

    def get_variable(self, request):
        name = request.get("name")
        if not _variable_name(name):
            return error_frame("bad_request", message="bad variable name")
        namespace = self.module.__dict__
        if name not in namespace:
            return error_frame("not_found", message="no variable named " + repr(name) + " in the tool")
        return self.captured(request, lambda: namespace[name])

    def set_variable(self, request):
        name = request.get("name")
        if not _variable_name(name):
            return error_frame("bad_request", message="bad variable name")
        value = request.get("value")

        def assign():
            setattr(self.module, name, value)
            return None

        return self.captured(request, assign)

    def functions(self, request):
        return self.captured(request, lambda: describe_functions(self.module))

    def exports(self, request):
        """get_tool_info() (the guide's discovery convention), merged with the signatures of
        the functions it lists (all public functions when it lists none)."""

        def describe():
            get_info = self.module.__dict__.get("get_tool_info")
            info = get_info() if callable(get_info) else None
            functions = [f for f in describe_functions(self.module) if f["name"] != "get_tool_info"]
            listed = info.get("functions") if isinstance(info, dict) else None
            if isinstance(listed, list):
                functions = [f for f in functions if f["name"] in listed]
            return {"tool_info": info, "functions": functions}

        return self.captured(request, describe)

    def eval_expression(self, request):
        expression = request.get("expression")
        if type(expression) is not str:
            return error_frame("bad_request", message="expression must be a string")
        namespace = self.module.__dict__
        return self.captured(request, lambda: eval(compile(expression, "<eval>", "eval"), namespace))

    def exec_code(self, request):
        code = request.get("code")
        if type(code) is not str:
            return error_frame("bad_request", message="code must be a string")
        namespace = self.module.__dict__

        def run():
            exec(compile(code, "<inject>", "exec"), namespace)
            return None

        return self.captured(request, run)

    # Live objects. A named object lives in self.objects; with only a class name the
    # original's behaviour is kept: a fresh instance for this one request.

    def _class(self, name):
        if not _public_name(name):
            return None
        cls = self.module.__dict__.get(name)
        return cls if isinstance(cls, type) else None

    def _target(self, request):
        """A function giving the object a request acts on (the live one, or a fresh instance
        made when it is called, inside the captured work), or an error frame."""
        name = request.get("object_name")
        if name is not None:
            if name not in self.objects:
                return None, error_frame("not_found", message="no live object named " + repr(name))
            obj = self.objects[name]
            return (lambda: obj), None
        cls = self._class(request.get("class_name"))
        if cls is None:
            return None, error_frame("not_found", message="no public class of that name in the tool")
        return cls, None

    def create_object(self, request):
        cls = self._class(request.get("class_name"))
        if cls is None:
            return error_frame("not_found", message="no public class of that name in the tool")
        name = request.get("object_name")
        if type(name) is not str or not name:
            return error_frame("bad_request", message="bad object name")
        if name not in self.objects and len(self.objects) >= MAX_OBJECTS:
            return error_frame("bad_request", message="the tool already holds " + str(MAX_OBJECTS) + " objects")
        args = request.get("args") or []
        kwargs = request.get("kwargs") or {}

        def make():
            self.objects[name] = cls(*args, **kwargs)
            return {"object_name": name, "class_name": cls.__name__}

        return self.captured(request, make)

    def call_method(self, request):
        target, error = self._target(request)
        if error is not None:
            return error
        method_name = request.get("method_name")
        if not _public_name(method_name):
            return error_frame("not_found", message="no public method of that name")
        args = request.get("args") or []
        kwargs = request.get("kwargs") or {}

        def run():
            method = getattr(target(), method_name, None)
            if method is None or not callable(method):
                raise AttributeError("no method " + repr(method_name))
            return method(*args, **kwargs)

        return self.captured(request, run)

    def get_attribute(self, request):
        target, error = self._target(request)
        if error is not None:
            return error
        attr = request.get("attr_name")
        if not _public_name(attr):
            return error_frame("bad_request", message="bad attribute name")
        return self.captured(request, lambda: getattr(target(), attr))

    def set_attribute(self, request):
        target, error = self._target(request)
        if error is not None:
            return error
        attr = request.get("attr_name")
        if not _public_name(attr):
            return error_frame("bad_request", message="bad attribute name")
        value = request.get("value")

        def assign():
            setattr(target(), attr, value)
            return None

        return self.captured(request, assign)

    def delete_object(self, request):
        name = request.get("object_name")
        if name not in self.objects:
            return error_frame("not_found", message="no live object named " + repr(name))
        del self.objects[name]
        return {"ok": True, "result": None}

    def list_objects(self, request):
        return {"ok": True, "result": [
            {"object_name": name, "class_name": type(obj).__name__} for name, obj in sorted(self.objects.items())
        ]}

    _OPS = {
        "get_variable": get_variable,
        "set_variable": set_variable,
        "functions": functions,
        "eval": eval_expression,
        "exec": exec_code,
        "create_object": create_object,
        "call_method": call_method,
        "get_attribute": get_attribute,
        "set_attribute": set_attribute,
        "delete_object": delete_object,
        "list_objects": list_objects,
        "exports": exports,
        "memory_stats": lambda self, request: {"ok": True, "result": memory_stats()},
        "collect": lambda self, request: {"ok": True, "result": collect()},
        "profile": lambda self, request: self.profile(request),
        "add_sys_path": lambda self, request: self.add_sys_path(request),
        "run": lambda self, request: self.run_code(request),
        "run_file": lambda self, request: self.run_file(request),
        "step": lambda self, request: self.run_step(request),
    }

    def run_step(self, request):
        """A task's script step: modules in `imports` are imported and bound by their top
        name, `args` and `inputs` bound, then `code` runs as in run_code, or the file at
        `path` as __main__ (its variable `result`)."""
        code, path = request.get("code"), request.get("path")
        imports = request.get("imports") or []
        if (type(code) is str) == (type(path) is str) or type(imports) is not list:
            return error_frame("bad_request", message="step needs code or path, and a list of imports")
        namespace = self.module.__dict__
        namespace["args"] = request.get("args")
        namespace["inputs"] = request.get("inputs")

        def run():
            import importlib

            for name in imports:
                if type(name) is not str:
                    raise TypeError("import names must be strings")
                importlib.import_module(name)
                top = name.split(".")[0]
                namespace[top] = sys.modules[top]
            if code is not None:
                return _exec_with_result(code, namespace)
            import runpy

            saved = sys.argv
            sys.argv = [path]
            try:
                done = runpy.run_path(path, init_globals=dict(namespace), run_name="__main__")
            finally:
                sys.argv = saved
            return done.get("result")

        return self.captured(request, run)

    def run_code(self, request):
        """Executes code in the namespace with `args` bound; the result is the value of the
        last statement if it is an expression, else the variable `result` (None if unset)."""
        code = request.get("code")
        if type(code) is not str:
            return error_frame("bad_request", message="code must be a string")
        namespace = self.module.__dict__
        namespace["args"] = request.get("args")

        return self.captured(request, lambda: _exec_with_result(code, namespace))

    def run_file(self, request):
        """Runs a script file as __main__ with sys.argv = [path, *argv]; the result is the
        script's variable `result` (None if unset)."""
        path = request.get("path")
        argv = request.get("argv")
        if type(path) is not str or type(argv) is not list or not all(type(a) is str for a in argv):
            return error_frame("bad_request", message="run_file needs a path and a list of strings")

        def run():
            import runpy

            saved = sys.argv
            sys.argv = [path] + argv
            try:
                namespace = runpy.run_path(path, run_name="__main__")
            finally:
                sys.argv = saved
            return namespace.get("result")

        return self.captured(request, run)

    def add_sys_path(self, request):
        path = request.get("path")
        if type(path) is not str:
            return error_frame("bad_request", message="path must be a string")
        if path not in sys.path:
            sys.path.append(path)
        return {"ok": True, "result": None}

    def profile(self, request):
        """Runs code under cProfile; the top rows by cumulative time."""
        code = request.get("code")
        top = request.get("top")
        if type(code) is not str or type(top) is not int or not 1 <= top <= 1000:
            return error_frame("bad_request", message="profile needs code and 1 <= top <= 1000")
        namespace = self.module.__dict__

        def run():
            import cProfile
            import pstats

            compiled = compile(code, "<script>", "exec")
            profiler = cProfile.Profile()
            profiler.enable()
            try:
                exec(compiled, namespace)
            finally:
                profiler.disable()
            stats = pstats.Stats(profiler)
            rows = []
            for (filename, line, name), (_cc, ncalls, tottime, cumtime, _callers) in stats.stats.items():
                rows.append({"function": name, "file": filename, "line": line, "ncalls": ncalls,
                             "tottime": round(tottime, 9), "cumtime": round(cumtime, 9)})
            rows.sort(key=lambda r: r["cumtime"], reverse=True)
            return {"total_calls": stats.total_calls, "rows": rows[:top]}

        return self.captured(request, run)

    def captured(self, request, work):
        """Runs work() with print() captured under the request's cap; the frame for its result."""
        budget, out, err = self.budget, self.out, self.err
        budget.reset(request.get("output_cap", DEFAULT_OUTPUT_CAP))
        out.reset()
        err.reset()
        tracer = None
        settings = request.get("debug")
        if type(settings) is dict:
            tracer = Tracer(settings, getattr(self.module, "__file__", None))
        saved = sys.stdout, sys.stderr
        sys.stdout, sys.stderr = out, err
        try:
            try:
                if tracer is not None:
                    sys.settrace(tracer.global_trace)
                    try:
                        value = work()
                    finally:
                        sys.settrace(None)
                else:
                    value = work()
                frame = {"ok": True, "result": to_json(value)}
            except Unserializable as exc:
                frame = error_frame("unserializable_result", message="result is not JSON-representable: " + exc.what)
            except OutputLimit:
                frame = error_frame("output_limit", message="print() output passed the call's cap")
            except BaseException as exc:
                frame = error_frame("python_exception", exc, tb=exc.__traceback__.tb_next)
        finally:
            sys.stdout, sys.stderr = saved
        if budget.exceeded:
            frame = error_frame("output_limit", message="print() output passed the call's cap")
        frame["stdout"] = out.value()
        frame["stderr"] = err.value()
        if tracer is not None:
            frame["debug"] = tracer.report()
        return frame


def _exec_with_result(code, namespace):
    """Executes code in namespace; the value of its last statement if that is an expression,
    else the variable `result` (None if unset)."""
    import ast

    tree = ast.parse(code, "<code>", "exec")
    last = None
    if tree.body and isinstance(tree.body[-1], ast.Expr):
        last = ast.Expression(tree.body.pop().value)
    exec(compile(tree, "<code>", "exec"), namespace)
    if last is not None:
        return eval(compile(last, "<code>", "eval"), namespace)
    return namespace.get("result")


MAX_OBJECTS = 1000
# Tracing caps (enableDebug, setBreakpoint).
MAX_TRACE_LINES = 1000
MAX_BREAK_HITS = 20
MAX_LOCALS = 50
MAX_LOCAL_JSON = 1024
MAX_REPR = 200


class Tracer:
    """sys.settrace for one request: the executed lines of the tool's own script file, and a
    snapshot of the locals whenever a breakpoint line runs. Execution never stops; every
    record is capped and JSON-safe."""

    def __init__(self, settings, filename):
        self.lines_on = settings.get("trace") is True
        points = settings.get("breakpoints")
        self.breakpoints = frozenset(p for p in points if type(p) is int) if type(points) is list else frozenset()
        self.filename = filename
        self.lines = []
        self.hits = []
        self.truncated = False

    def global_trace(self, frame, event, arg):
        if self.filename is not None and frame.f_code.co_filename == self.filename:
            return self.local_trace
        return None

    def local_trace(self, frame, event, arg):
        if event == "line":
            line = frame.f_lineno
            if self.lines_on:
                if len(self.lines) < MAX_TRACE_LINES:
                    self.lines.append([frame.f_code.co_name, line])
                else:
                    self.truncated = True
            if line in self.breakpoints:
                if len(self.hits) < MAX_BREAK_HITS:
                    self.hits.append({"line": line, "function": frame.f_code.co_name,
                                      "locals": snapshot(frame.f_locals)})
                else:
                    self.truncated = True
        return self.local_trace

    def report(self):
        report = {"truncated": self.truncated}
        if self.lines_on:
            report["lines"] = self.lines
        if self.breakpoints:
            report["breakpoints"] = self.hits
        return report


def snapshot(variables):
    """Locals as JSON: values that convert and stay small as themselves, others as
    {"repr": ...} (at most MAX_REPR characters); at most MAX_LOCALS names."""
    out = {}
    for name in sorted(variables)[:MAX_LOCALS]:
        value = variables[name]
        try:
            converted = to_json(value)
            if len(_ENCODE(converted)) <= MAX_LOCAL_JSON:
                out[name] = converted
                continue
        except BaseException:
            pass
        try:
            text = repr(value)[:MAX_REPR]
        except BaseException:
            text = "<unrepresentable>"
        out[name] = {"repr": text}
    return out
# The module name the host passes for a fresh, empty namespace (not a valid script name).
SCRATCH_MODULE = "-"


def _public_name(name):
    """A public identifier: what a client may name as a class, method or attribute."""
    return type(name) is str and name.isidentifier() and not name.startswith("_")


def memory_stats():
    """Python's own view of its memory: the objects the collector tracks and their sizes
    (containers and instances; untracked atoms such as ints and strs are not counted), and
    the objects frozen when a pre-initialised image was built (shared with the image, never
    walked by the collector, so not in the first two). This build's allocator keeps no block
    counts (sys.getallocatedblocks() is 0)."""
    import gc

    objects = gc.get_objects()
    return {"gc_objects": len(objects), "gc_tracked_bytes": sum(map(sys.getsizeof, objects)),
            "gc_frozen_objects": gc.get_freeze_count()}


def collect():
    """A full garbage collection: what it found, and the tracked objects before and after."""
    import gc

    before = len(gc.get_objects())
    unreachable = gc.collect()
    return {"unreachable_collected": unreachable, "gc_objects_before": before,
            "gc_objects_after": len(gc.get_objects())}


def _variable_name(name):
    """A module variable a client may read or write: an identifier, not a dunder."""
    return type(name) is str and name.isidentifier() and not name.startswith("__")


def _json_default(value):
    """A parameter default as JSON if it converts, else None with its repr beside it."""
    try:
        return to_json(value), None
    except Unserializable:
        try:
            return None, repr(value)[:200]
        except BaseException:
            return None, "<unrepresentable>"


def _annotation(annotation):
    import inspect

    if annotation is inspect.Parameter.empty:
        return None
    if isinstance(annotation, type):
        return annotation.__qualname__
    return str(annotation)[:200]


def describe_functions(module):
    """Each public callable of the tool with its signature, parameters and docstring."""
    import inspect

    described = []
    for name in sorted(vars(module)):
        if name.startswith("_"):
            continue
        fn = vars(module)[name]
        if not callable(fn) or inspect.ismodule(fn):
            continue
        if isinstance(fn, type) or getattr(fn, "__module__", None) != module.__name__:
            continue  # classes and imported helpers are not the tool's functions
        entry = {"name": name, "doc": inspect.getdoc(fn), "signature": None, "parameters": []}
        try:
            sig = inspect.signature(fn)
        except (TypeError, ValueError):
            described.append(entry)
            continue
        entry["signature"] = name + str(sig)[:1000]
        entry["returns"] = _annotation(sig.return_annotation)
        for p in sig.parameters.values():
            param = {"name": p.name, "kind": p.kind.name.lower(), "annotation": _annotation(p.annotation)}
            if p.default is not inspect.Parameter.empty:
                param["default"], repr_text = _json_default(p.default)
                if repr_text is not None:
                    param["default_repr"] = repr_text
            entry["parameters"].append(param)
        described.append(entry)
    return described


def _refuse(obj):
    raise TypeError("not JSON: " + type_name(obj))


def _make_encoder():
    """The C encoder made once (json.dumps makes one per call), if it behaves exactly like the
    public API on a sample; otherwise the public API."""
    slow = json.JSONEncoder(ensure_ascii=False, allow_nan=False, separators=(",", ":")).encode
    try:
        from json.encoder import c_encode_basestring, c_make_encoder

        fast = c_make_encoder(None, _refuse, c_encode_basestring, None, ":", ",", False, False, False)
        sample = {"a": [1, 2.5, "\u00e9\n\"", None, True, 2**70], "b": {}}
        if "".join(fast(sample, 0)) == slow(sample):
            return lambda obj: "".join(fast(obj, 0))
    except Exception:
        pass
    return slow


def _make_decoder():
    """Request frames are compact JSON written by the host; the C scanner parses them, and
    tagged arguments become their types."""
    scan = json.JSONDecoder(object_hook=_tagged).scan_once

    def decode(raw):
        text = raw.decode("utf-8")
        try:
            value, end = scan(text, 0)
        except StopIteration:
            raise ValueError("not JSON") from None
        if end != len(text):
            raise ValueError("trailing data after the frame")
        return value

    return decode


_ENCODE = _make_encoder()
_DECODE = _make_decoder()


def _printable(text):
    """Text with lone surrogates escaped, so it is valid UTF-8."""
    if type(text) is not str:
        return text
    return text.encode("utf-8", "backslashreplace").decode("utf-8")


def _sanitized(frame):
    """A frame that failed to encode as UTF-8: captured text and messages get their lone
    surrogates escaped; if the result still holds one, it is refused."""
    for key in ("stdout", "stderr"):
        frame[key] = _printable(frame.get(key, ""))
    error = frame.get("error")
    if error:
        for key in ("type", "message", "traceback"):
            if key in error:
                error[key] = _printable(error[key])
    try:
        _ENCODE(frame).encode("utf-8")
    except UnicodeEncodeError:
        frame.pop("result", None)
        frame["ok"] = False
        frame["error"] = {"kind": "unserializable_result",
                          "message": "result is not JSON-representable: str with a lone surrogate"}
    return frame


def encode(frame, rid):
    frame["v"] = PROTOCOL
    frame["id"] = rid
    try:
        try:
            return _ENCODE(frame).encode("utf-8")
        except UnicodeEncodeError:
            return _ENCODE(_sanitized(frame)).encode("utf-8")
    except BaseException as exc:  # belt and braces: to_json already vetted the result
        bad = error_frame("unserializable_result", message="result could not be encoded: " + type_name(exc))
        bad["v"], bad["id"] = PROTOCOL, rid
        return json.dumps(bad).encode()


_ID_PREFIX = b'{"v":%d,"id":' % PROTOCOL


def _request_id(raw):
    """The request's id, read from the frame's fixed prefix (the host writes `v` then `id`),
    so even a request the JSON parser refuses is answered under the right id. Plain byte
    operations: a regular expression costs noticeably more fuel per call."""
    if not raw.startswith(_ID_PREFIX):
        return 0
    end = raw.find(b",", len(_ID_PREFIX), len(_ID_PREFIX) + 21)
    digits = raw[len(_ID_PREFIX) : end]
    return int(digits) if end > 0 and digits.isdigit() else 0


class HostError(Exception):
    """A host call was refused or failed (raised in guest code by the scriptbox module)."""


HostError.__module__ = "scriptbox"


def make_guest_module(exchange, driver):
    """The `scriptbox` module tool code imports to reach its owner through the host: global
    variables shared by the owner's tools and HTTP (syncVariableToGlobal), and functions the
    owner registered (registerFunction). Each call is a frame {"v", "id", "host": {...}}
    through the door; the host answers {"ok", "result" | "error"} and the request goes on."""
    import types

    module = types.ModuleType("scriptbox")
    module.__doc__ = "Host services for scriptbox tools: global variables, registered functions, native modules."

    def host_call(service, **fields):
        fields["service"] = service
        try:
            frame = _ENCODE({"v": PROTOCOL, "id": driver.rid, "host": fields}).encode("utf-8")
        except (TypeError, ValueError, UnicodeEncodeError) as exc:
            raise TypeError("value cannot be sent to the host: " + str(exc)) from None
        reply = _DECODE(exchange(frame))
        if reply.get("ok") is True:
            return reply.get("result")
        raise HostError(str(reply.get("error") or "the host refused the call"))

    def get_global(name, default=None):
        """The owner's global variable `name`, or `default` when it is not set."""
        value = host_call("get_global", name=name)
        return default if value is None else value

    def set_global(name, value):
        """Sets the owner's global variable `name` to a JSON-convertible value."""
        host_call("set_global", name=name, value=_outbound(value))

    def delete_global(name):
        """Removes the owner's global variable `name`; whether it existed."""
        return host_call("delete_global", name=name)

    def global_names():
        """The names of the owner's global variables."""
        return host_call("global_names")

    def call(name, *args, **kwargs):
        """Calls the function the owner registered as `name` (registerFunction)."""
        return host_call("call_function", name=name, args=_outbound(list(args)), kwargs=_outbound(kwargs))

    def native(module_name, function, args=None, **kwargs):
        """Calls `function` of the trusted native module `module_name` with JSON arguments
        (`args`, or the keyword arguments as an object). Only functions the owner's policy
        allows are reached; anything else raises HostError."""
        if args is not None and kwargs:
            raise TypeError("pass either args or keyword arguments, not both")
        payload = kwargs if args is None else args
        return host_call("native", module=module_name, function=function, args=_outbound(payload))

    module.HostError = HostError
    module.get_global = get_global
    module.set_global = set_global
    module.delete_global = delete_global
    module.global_names = global_names
    module.call = call
    module.native = native
    return module


def _outbound(value):
    try:
        return to_json(value)
    except Unserializable as exc:
        raise TypeError("value cannot be sent to the host: " + exc.what) from None


def door_transport():
    import _host

    return _host.call


def pipe_transport():
    """Native CPython reference: length-prefixed frames over stdin/stdout."""
    stdin, stdout = sys.stdin.buffer, sys.stdout.buffer

    def exchange(frame):
        stdout.write(len(frame).to_bytes(4, "little") + frame)
        stdout.flush()
        head = stdin.read(4)
        if len(head) < 4:
            raise SystemExit(0)
        return stdin.read(int.from_bytes(head, "little"))

    return exchange


def boot(argv):
    """Entry point in a pre-initialised image (runtime/src/sandbox/image/), where this module
    was imported when the image was built: `argv` is what sys.argv is when the interpreter
    runs this file."""
    sys.argv = list(argv)
    return main(sys.argv)


def reseed():
    """Every instance of an image starts from one memory: generators seeded while it was
    built would give every instance the same numbers. Fresh seeds from the OS, per instance."""
    for name in ("random", "numpy.random"):
        module = sys.modules.get(name)
        if module is not None:
            module.seed()


def main(argv):
    reseed()
    if len(argv) < 3:
        sys.stderr.write("usage: _scriptbox_driver.py MODULE SCRIPTS_DIR [--pipes]\n")
        return 2
    exchange = pipe_transport() if "--pipes" in argv[3:] else door_transport()
    import os

    own_dir = os.path.dirname(os.path.abspath(__file__))
    sys.path[:] = [p for p in sys.path if os.path.abspath(p or ".") != own_dir]
    global SCRIPTS_PREFIX
    SCRIPTS_PREFIX = argv[2].rstrip("/") + "/"
    # addSysPath: extra guest paths the host checked, after the scripts folder
    for arg in argv[3:]:
        if arg.startswith("--path=") and arg[7:] not in sys.path:
            sys.path.append(arg[7:])
    driver = Driver(argv[1], argv[2])
    sys.modules["scriptbox"] = make_guest_module(exchange, driver)
    rid = 0
    frame = driver.load()
    while True:
        try:
            raw = exchange(encode(frame, rid))
        except SystemExit:  # the pipe transport's end of input
            raise
        except BaseException as exc:  # the door failed (memory full?): answer, the host decides
            frame = error_frame("bad_request", message="the door failed: " + type_name(exc))
            continue
        try:
            request = _DECODE(raw)
            rid = driver.rid = request.get("id", 0)
            if request.get("v") != PROTOCOL:
                frame = error_frame("bad_request", message="unsupported protocol version")
                continue
            frame = driver.handle(request) if driver.module is not None else error_frame(
                "load_failed", message="the tool script did not load"
            )
        except BadTaggedValue as exc:
            rid = _request_id(raw)
            frame = error_frame("bad_request", message="bad tagged argument: " + str(exc))
        except BaseException as exc:  # a malformed frame never ends the loop
            rid = _request_id(raw)
            frame = error_frame("bad_request", message="malformed request: " + type_name(exc))


if __name__ == "__main__":
    sys.exit(main(sys.argv))
