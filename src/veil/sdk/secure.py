"""The SDK's secure-stage side: reading the inputs the worker mounted."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any


class InputNotDeclared(LookupError):
    pass


def load_input(name: str) -> Any:
    import pandas as pd

    inputs = Path(os.environ.get("VEIL_INPUTS", "/inputs"))
    index = json.loads((inputs / "inputs.json").read_text())
    if name not in index:
        raise InputNotDeclared(f"dataset {name!r} is not an input of this job")
    frame = pd.read_parquet(inputs / index[name])
    frame.attrs["veil_view"] = "full"
    return frame
