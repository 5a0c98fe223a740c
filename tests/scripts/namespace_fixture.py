"""Test fixture for the namespace routes: variables, documented functions, a class and an
imported helper (which `functions` must leave out)."""

from math import sqrt  # noqa: F401  (imported: not one of the tool's functions)

GREETING = "hello"
COUNTS = {"a": 1}
_hidden = 42


def greet(name: str, punctuation: str = "!") -> str:
    """Greets someone."""
    return GREETING + ", " + name + punctuation


def scale(values: list, factor: float = 2.0, *extra, clamp=None, **options) -> list:
    return [v * factor for v in values]


def weird_default(marker=object()):
    return "ok"


class Telescope:
    def point(self, ra, dec):
        return [ra, dec]


class Mount:
    """A telescope mount: a class for the live-object routes."""

    def __init__(self, name="mount", slew_rate=1.0):
        self.name = name
        self.position = [0, 0]
        self.slew_rate = slew_rate

    def goto(self, ra, dec):
        self.position = [ra, dec]
        return self.position

    def _secret(self):
        return "hidden"
