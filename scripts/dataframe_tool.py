"""A tool that imports numpy and pandas at the top: what a fresh (isolated) call of a
data-science tool costs. summary() builds a small frame and describes it."""

import numpy as np
import pandas as pd


def summary(rows: int = 100) -> dict:
    """Mean and standard deviation of a synthetic altitude column."""
    frame = pd.DataFrame({"altitude_deg": np.linspace(-10.0, 80.0, rows)})
    return {
        "rows": int(len(frame)),
        "mean": float(frame["altitude_deg"].mean()),
        "std": float(frame["altitude_deg"].std()),
    }


def get_tool_info() -> dict:
    return {"name": "dataframe_tool", "version": "1.0.0", "functions": ["summary"]}
