"""Everything one call could leave behind for the next, for the isolation tests
(tests/api/isolation.rs): each call reports what it found, then leaves its own traces."""

import builtins
import json
import os
import random
import sys

_REAL_ABS = abs
COUNT = 0


def leave_traces(tag):
    """What this call found of earlier calls, and random draws; then it changes all of it."""
    global COUNT
    seen = {
        "count": COUNT,
        "module_attr": getattr(sys.modules[__name__], "left_by", None),
        "other_module_attr": getattr(json, "left_by", None),
        "builtin_patched": builtins.abs is not _REAL_ABS,
        "builtin_added": hasattr(builtins, "left_by"),
        "env": os.environ.get("LEFT_BY"),
        "imported": "leaky_extra" in sys.modules,
        "file": os.path.exists("left_by.txt"),
        "draws": [random.getrandbits(64) for _ in range(4)],
    }
    COUNT += 1
    sys.modules[__name__].left_by = tag
    json.left_by = tag
    builtins.abs = lambda value: tag
    builtins.left_by = tag
    os.environ["LEFT_BY"] = tag
    sys.modules["leaky_extra"] = sys.modules[__name__]
    random.seed(tag)
    try:
        with open("left_by.txt", "w") as file:
            file.write(tag)
        seen["wrote_file"] = True
    except OSError:
        seen["wrote_file"] = False
    return seen


def trap_after_traces(tag, how):
    """Leaves its traces, then hits a limit: `fuel` (spins) or `memory` (allocates)."""
    leave_traces(tag)
    if how == "fuel":
        while True:
            pass
    hoard = []
    while True:
        hoard.append(bytearray(8 << 20))
