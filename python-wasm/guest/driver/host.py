# scriptbox guest driver, host.py: the `scriptbox` module guest code imports (host calls), the transports, and main.
# The parts are one module: runtime/src/guest.rs joins them, in the order it lists, into
# _scriptbox_driver.py; a part uses names the parts before it define.

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
    module.__doc__ = "Host services for scriptbox tools: global variables, registered functions, native modules, outbound HTTP (scriptbox.http)."

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
    module.http = make_http_module(host_call, HostError)
    sys.modules["scriptbox.http"] = module.http
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


class NotSnapshotable(Exception):
    """The tool's imported state cannot be copied to other instances (see `prepare`)."""


_PREPARED = None


def prepare(argv):
    """The first half of `boot`, as a turn of its own for isolated tools' memory snapshots
    (runtime/src/sandbox/snapshot.rs): imports the tool and returns, so the host can copy
    the memory of a tool imported into later instances, which then only `serve`. Raises
    NotSnapshotable when the copy would not be faithful: the import failed, or left a file
    descriptor open (the host's descriptor table is not in the copy)."""
    global _PREPARED
    sys.argv = list(argv)
    reseed()
    before = _open_descriptors()
    prepared = setup(sys.argv)
    if isinstance(prepared, int):
        raise NotSnapshotable("bad arguments")
    _PREPARED = prepared
    if prepared[2].get("ok") is not True or _open_descriptors() != before:
        raise NotSnapshotable("not a faithful copy")


def serve():
    """The second half of `boot`, after `prepare` (in this instance or in the one whose
    memory this instance was given): fresh random seeds, then the request loop."""
    reseed()
    exchange, driver, frame = _PREPARED
    return loop(exchange, driver, frame)


def _open_descriptors():
    import os

    found = []
    for fd in range(3, 64):
        try:
            os.fstat(fd)
        except OSError:
            continue
        found.append(fd)
    return found


def reseed():
    """Every instance of an image starts from one memory: generators seeded while it was
    built would give every instance the same numbers. Fresh seeds from the OS, per instance."""
    for name in ("random", "numpy.random"):
        module = sys.modules.get(name)
        if module is not None:
            module.seed()


def main(argv):
    reseed()
    prepared = setup(argv)
    if isinstance(prepared, int):
        return prepared
    return loop(*prepared)


def setup(argv):
    """Everything before the first request: the transport, the paths, the `scriptbox`
    module and the tool's import. (exchange, driver, the load frame), or an exit status."""
    close_the_sockets()
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
    return exchange, driver, driver.load()


def loop(exchange, driver, frame):
    """Answers requests until the transport ends: `frame` (the load's) goes out first."""
    rid = 0
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
