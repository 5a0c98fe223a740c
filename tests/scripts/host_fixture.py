"""Fixture for host calls: the tenant's global variables and registered functions, reached
from guest code through the `scriptbox` module."""

import time

import scriptbox


def remember(name, value):
    scriptbox.set_global(name, value)
    return scriptbox.global_names()


def recall(name):
    return scriptbox.get_global(name, "missing")


def forget(name):
    return scriptbox.delete_global(name)


def via(name, *args, **kwargs):
    return scriptbox.call(name, *args, **kwargs)


def refused(action, *args):
    """Runs a host call that should be refused; the HostError's text, else a marker."""
    try:
        getattr(scriptbox, action)(*args)
    except scriptbox.HostError as exc:
        return "HostError: " + str(exc)
    return "not refused"


def add(a, b):
    return a + b


def timed(name, *args):
    """The result of a registered call and how long it took, in milliseconds."""
    started = time.monotonic()
    result = scriptbox.call(name, *args)
    return {"result": result, "ms": (time.monotonic() - started) * 1000}


def nap():
    time.sleep(30)
