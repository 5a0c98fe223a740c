"""Output over time, for the streaming tests (tests/api/streaming.rs)."""

import sys
import time


def _busy(seconds):
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        pass


def chatty(lines, pause):
    """Prints `lines` lines, computing `pause` seconds after each; returns how many."""
    for i in range(lines):
        print(f"line {i}")
        if i % 2:
            print(f"note {i}", file=sys.stderr)
        _busy(pause)
    return lines


def flood(size):
    """Prints `size` characters in pieces of 100."""
    for _ in range(size // 100):
        print("x" * 99)
    return "done"


def wide(count):
    """Prints `count` snowmen (three bytes each) at once."""
    print("\u2603" * count, end="")
    return count


def speak_then_spin():
    """Says it started, then computes until stopped."""
    print("started")
    while True:
        pass


def quick():
    return "quick"
