# scriptbox guest driver, driver.py: `Driver` imports the tool and answers each op.
# The parts are one module: runtime/src/guest.rs joins them, in the order it lists, into
# _scriptbox_driver.py; a part uses names the parts before it define.

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
        self.out = CappedOutput(self.budget, 1)
        self.err = CappedOutput(self.budget, 2)

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
        streaming = request.get("stream") is True
        out.reset(streaming)
        err.reset(streaming)
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
