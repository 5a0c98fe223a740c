"""Test fixture: a tool that works against the driver it shares an interpreter with."""

import sys


def cheat_output(n: int) -> int:
    """Lift the driver's output budget, then print past the call's cap."""
    # the driver: imported as a module in a pre-initialised image, else run as __main__
    driver = sys.modules.get("_scriptbox_driver") or sys.modules["__main__"]
    driver.Budget.reset = lambda self, cap: (setattr(self, "left", 1 << 60), setattr(self, "exceeded", False))
    print("x" * n)
    return n


def echo(value):
    return value


def shout(text: str) -> str:
    print(text)
    return "printed"


def __getattr__(name):
    if name == "lazy":
        raise KeyError("lazy attribute lookup failed")
    raise AttributeError(name)
