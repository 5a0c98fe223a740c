"""Fixture for result caching: a function that counts how often it really ran."""

calls = 0


def square(x):
    global calls
    calls += 1
    print("computing", x)
    return {"square": x * x, "calls": calls}


def fail():
    raise ValueError("never cached")
