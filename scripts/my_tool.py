"""Guide pattern 4 (a configuration-based tool) and the Quick Start's basic tool.

The configuration is read from a path once, at import. In the sandbox the guide's example path
does not exist, so a missing file means the built-in defaults.
"""

import json


class Tool:
    def __init__(self, config_path: str):
        self.config = self._load_config(config_path)

    @staticmethod
    def _load_config(path):
        try:
            with open(path, encoding="utf-8") as f:
                return json.load(f)
        except OSError:
            return {"mode": "default"}

    def process(self, data):
        return {"result": data, "mode": self.config.get("mode")}


tool_instance = Tool("/path/to/config.json")


def process(data):
    return tool_instance.process(data)


def process_data(data: dict) -> dict:
    """Process input data and return result."""
    return {"status": "success", "processed": data}


def get_tool_info() -> dict:
    return {
        "name": "my_tool",
        "version": "1.0.0",
        "description": "Basic data processing",
        "functions": ["process", "process_data"],
    }
