# scriptbox guest driver, introspect.py: tracing (enableDebug, setBreakpoint), memory statistics, function signatures.
# The parts are one module: runtime/src/guest.rs joins them, in the order it lists, into
# _scriptbox_driver.py; a part uses names the parts before it define.

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
