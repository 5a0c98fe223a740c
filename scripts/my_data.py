"""Guide pattern 2: a dictionary return."""


def get_status() -> dict:
    return {"status": "ready", "temperature": 25.5}
