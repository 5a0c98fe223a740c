"""Fixture for the pre-initialised images (tests/api/images.rs): it imports numpy, so it gets
the numpy+pandas image, and reports what a fresh instance sees."""

import os
import random
import sys

import numpy


def draws() -> list:
    """Numbers from both global generators: each fresh instance must draw its own."""
    return [float(numpy.random.rand()), random.random()]


def preloaded() -> dict:
    """What the image had imported, and that this instance's own folders are mounted."""
    return {
        "pandas": "pandas" in sys.modules,
        "driver": "_scriptbox_driver" in sys.modules,
        "scripts": sorted(n for n in os.listdir("/scripts") if n == "image_fixture.py"),
        "argv": sys.argv[1:3],
    }


def scratch_roundtrip(text: str) -> str:
    """Writes and reads back a file in the scratch folder (persistent tools only)."""
    with open("/tmp/roundtrip.txt", "w") as handle:
        handle.write(text)
    with open("/tmp/roundtrip.txt") as handle:
        return handle.read()


def grow(mib: int) -> int:
    """Holds `mib` MiB (a MemoryError past the tool's cap)."""
    block = bytearray(mib << 20)
    return len(block) >> 20


def set_options(precision: int) -> list:
    """Changes numpy's and pandas' global options; returns what they were before."""
    import pandas

    before = [numpy.get_printoptions()["precision"], pandas.get_option("display.precision")]
    numpy.set_printoptions(precision=precision)
    pandas.set_option("display.precision", precision)
    return before
