"""Test fixture: one function per limit, each with an obeyed and a violated mode."""

import time


def spin(n: int) -> int:
    """A busy loop of n iterations (fuel and deadline)."""
    total = 0
    for i in range(n):
        total += i
    return total


def spin_forever():
    while True:
        pass


def sleep(seconds: float) -> float:
    time.sleep(seconds)
    return seconds


def allocate(mb: int) -> int:
    """Hold mb MiB at once; MemoryError past the instance's cap."""
    block = bytearray(mb * 1024 * 1024)
    return len(block)


def allocate_caught(mb: int) -> str:
    try:
        allocate(mb)
        return "allocated"
    except MemoryError:
        return "MemoryError"


def shout(n: int) -> int:
    """Print n bytes of output."""
    chunk = "x" * 1023 + "\n"
    for _ in range(n // 1024):
        print(chunk, end="")
    print("y" * (n % 1024), end="")
    return n


def shout_and_swallow(n: int) -> str:
    try:
        shout(n)
    except BaseException:
        pass
    return "swallowed"


def echo(*args, **kwargs):
    return {"args": list(args), "kwargs": kwargs}


def fail(message: str = "boom"):
    raise ValueError(message)


def give(kind: str):
    import math

    values = {
        "tuple": (1, 2, 3),
        "bytes": b"abc",
        "set": {1, 2},
        "nan": math.nan,
        "inf": math.inf,
        "bigint": 2**64 + 1,
        "object": object(),
        "none": None,
        "nested": {"a": [1, {"b": (2.5, "c")}]},
        "intkey": {1: "one"},
    }
    return values[kind]


def recurse(n: int) -> int:
    return 0 if n == 0 else 1 + recurse(n - 1)


state = {"n": 0}


def bump() -> int:
    state["n"] += 1
    return state["n"]
