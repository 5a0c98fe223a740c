"""Test fixture: loops forever at import time."""

while True:
    pass
