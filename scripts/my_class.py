"""Guide pattern 3: an object-oriented tool.

The class keeps its state on the instance; the module-level `calculator` and the functions
below let the plain /python/call route use one long-lived instance, so state persists across
calls of a loaded tool.
"""


class Calculator:
    def __init__(self):
        self.result = 0

    def add(self, a: int, b: int) -> int:
        self.result = a + b
        return self.result

    def get_result(self) -> int:
        return self.result


calculator = Calculator()


def add(a: int, b: int) -> int:
    return calculator.add(a, b)


def get_result() -> int:
    return calculator.get_result()
