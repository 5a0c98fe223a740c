"""Fixture for enableDebug and setBreakpoint. Line numbers matter: edit with care."""


def total(values):
    acc = 0
    for v in values:
        acc += v
    return acc


def loop(n):
    count = 0
    while count < n:
        count += 1
    return count


def fails(x):
    handle = object()
    raise ValueError(x)
