"""Guide pattern 1: a simple function call."""


def add(a: int, b: int) -> int:
    return a + b
