"""Test fixture: a tool whose discovery fails."""


def get_tool_info():
    raise RuntimeError("no info today")


def ping():
    return "pong"
