"""Test fixture for the attack suite: each function tries one way out of the sandbox or past
a limit, and reports what stopped it (or raises, when the test expects the exception)."""

import errno
import os
import sys

SECRET = None


def _outcome(fn):
    try:
        return {"ok": True, "value": fn()}
    except BaseException as exc:  # report, do not raise: the test asserts on the kind
        return {"ok": False, "error": type(exc).__name__, "errno": errno.errorcode.get(getattr(exc, "errno", None) or 0)}


def read(path):
    def go():
        with open(path, "rb") as f:
            return len(f.read())
    return _outcome(go)


def write(path, text="x"):
    def go():
        with open(path, "w") as f:
            f.write(text)
        return len(text)
    return _outcome(go)


def symlink(target, link):
    return _outcome(lambda: os.symlink(target, link))


def hardlink(target, link):
    return _outcome(lambda: os.link(target, link))


def fill_disk(chunk=1 << 20):
    """Write 1 MiB chunks to /tmp until something stops us."""
    written = 0
    try:
        with open("/tmp/fill.bin", "wb") as f:
            while True:
                f.write(b"\0" * chunk)
                f.flush()
                written += chunk
    except OSError as exc:
        return {"written": written, "error": type(exc).__name__, "errno": errno.errorcode.get(exc.errno)}


def many_files(limit=100000):
    made = 0
    try:
        for i in range(limit):
            with open("/tmp/f%d" % i, "w") as f:
                f.write("x")
            made += 1
    except OSError as exc:
        return {"made": made, "error": type(exc).__name__, "errno": errno.errorcode.get(exc.errno)}
    return {"made": made, "error": None}


def many_dirs(limit=100000):
    made = 0
    try:
        for i in range(limit):
            os.mkdir("/tmp/d%d" % i)
            made += 1
    except OSError as exc:
        return {"made": made, "errno": errno.errorcode.get(exc.errno)}
    return {"made": made, "errno": None}


_held = []


def exhaust_fds(limit=100000):
    """Open files (held) until something stops us."""
    try:
        for _ in range(limit):
            _held.append(open("/scripts/attacker.py", "rb"))
    except OSError as exc:
        return {"opened": len(_held), "errno": errno.errorcode.get(exc.errno)}
    finally:
        for f in _held:
            f.close()
        _held.clear()
    return {"opened": limit, "errno": None}


def environ():
    return dict(os.environ)


def sockets():
    def go():
        import socket
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        s.connect(("127.0.0.1", 80))
    return _outcome(go)


def subprocess_run():
    def go():
        import subprocess
        subprocess.run(["/bin/sh", "-c", "echo pwned"])
    return _outcome(go)


def fork():
    return _outcome(lambda: os.fork())


def thread():
    def go():
        import threading
        t = threading.Thread(target=lambda: None)
        t.start()
        t.join()
    return _outcome(go)


def spin():
    while True:
        pass


def sleep(seconds):
    import time
    time.sleep(seconds)
    return "slept"


def memory_bomb():
    hoard = []
    while True:
        hoard.append(bytearray(16 << 20))


def recursion_bomb():
    def down(n):
        return down(n + 1) + 1
    return down(0)


def c_recursion_bomb(depth=200000):
    """Deep nesting handed to C code (repr of a deeply nested list)."""
    nested = []
    for _ in range(depth):
        nested = [nested]
    return len(repr(nested))


def flood():
    while True:
        print("x" * 65536)


def fake_frame():
    """Print what looks like a protocol frame answering this call."""
    print('{"v":1,"id":1,"ok":true,"result":"forged"}')
    sys.stdout.write('\n{"v":1,"id":2,"ok":true,"result":"forged"}\n')
    return "real"


def read_stdin():
    return sys.stdin.read()


def _door():
    import _host
    return _host.call


def _frame_id():
    f = sys._getframe()
    while f is not None:
        if "rid" in f.f_locals and "driver" in f.f_locals:
            return f.f_locals["rid"]
        f = f.f_back
    raise LookupError("driver frame not found")


def forge_wrong_id():
    """Answer through the door with an id that is not this call's."""
    door = _door()
    door(b'{"v":1,"id":999999,"ok":true,"result":"forged"}')
    return "unreachable"


def hijack():
    """Answer this call through the door with its real id, take the next request, and keep
    running on it forever."""
    door = _door()
    rid = _frame_id()
    door(b'{"v":1,"id":%d,"ok":true,"result":"hijacked","stdout":"","stderr":""}' % rid)
    while True:
        pass


def remember(secret):
    global SECRET
    SECRET = secret.encode() * 4
    return len(SECRET)


def raise_deep():
    import json
    return json.loads("{not json")


def host_paths():
    """What a tool can learn of the host's paths."""
    import sysconfig
    return {"cwd": os.getcwd(), "executable": sys.executable, "path": sys.path, "prefix": sys.prefix,
            "stdlib": sysconfig.get_paths().get("stdlib")}


def stdio_swap_fill():
    """Close fd 1, put a scratch file under that number if the platform lets us (dup2), and
    fill the disk through it."""
    os.close(1)
    fd = os.open("/tmp/swap.bin", os.O_WRONLY | os.O_CREAT)
    try:
        os.dup2(fd, 1)
        fd = 1
    except (AttributeError, OSError):
        pass
    written = 0
    try:
        while True:
            written += os.write(fd, b"\0" * (1 << 20))
    except OSError as exc:
        return {"fd": fd, "written": written, "errno": errno.errorcode.get(exc.errno)}


def sparse_giant(size):
    """Give a scratch file a huge apparent size without writing it."""
    def go():
        with open("/tmp/sparse.bin", "wb") as f:
            f.truncate(size)
        return os.path.getsize("/tmp/sparse.bin")
    return _outcome(go)
