"""Module-level state that persists across calls of a loaded tool."""

count = 0


def increment(by: int = 1) -> int:
    global count
    count += by
    return count


def get() -> int:
    return count
