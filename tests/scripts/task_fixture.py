"""Fixture for tasks: timed steps, a spinner, a flaky function, and a step that waits for a
file the test creates."""

import os
import time


def stamp(label, ms=0):
    started = time.time()
    if ms:
        time.sleep(ms / 1000)
    return {"label": label, "start": started, "end": time.time()}


def spin():
    while True:
        pass


def nap(seconds):
    time.sleep(seconds)
    return seconds


failures = {"n": 0}


def flaky(times):
    """Fails the first `times` calls in this instance, then answers how many it took."""
    failures["n"] += 1
    if failures["n"] <= times:
        raise RuntimeError("flaky failure " + str(failures["n"]))
    return failures["n"]


def double(x):
    return x * 2


def wait_for(name):
    """Sleeps until /scripts/<name> exists."""
    while not os.path.exists("/scripts/" + name):
        time.sleep(0.05)
    return "go"
