"""Test fixture: what the sandbox lets a tool see and do. Each function reports instead of
raising, so tests can assert on the exact outcome."""

import os


def read(path: str) -> dict:
    try:
        with open(path, "rb") as f:
            return {"ok": True, "bytes": len(f.read())}
    except BaseException as exc:
        return {"ok": False, "error": type(exc).__name__}


def write(path: str) -> dict:
    try:
        with open(path, "w") as f:
            f.write("x")
        return {"ok": True}
    except BaseException as exc:
        return {"ok": False, "error": type(exc).__name__}


def listdir(path: str) -> dict:
    try:
        return {"ok": True, "entries": sorted(os.listdir(path))}
    except BaseException as exc:
        return {"ok": False, "error": type(exc).__name__}


def environ() -> dict:
    return dict(os.environ)


def connect() -> dict:
    try:
        import socket

        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        s.connect(("127.0.0.1", 80))
        return {"ok": True}
    except BaseException as exc:
        return {"ok": False, "error": type(exc).__name__}


def spawn() -> dict:
    try:
        import subprocess

        subprocess.run(["/bin/sh", "-c", "true"])
        return {"ok": True}
    except BaseException as exc:
        return {"ok": False, "error": type(exc).__name__}
