"""Test fixture: raises while being imported."""

raise RuntimeError("this tool cannot start")
