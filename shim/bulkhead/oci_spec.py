"""Reading a bundle's OCI spec (config.json) with errors that name the file and the fault.

Kept dependency-free: the shim's `start` path uses it once per container.
"""

from __future__ import annotations

import json
import os
from typing import Any


class SpecError(Exception):
    """config.json is missing or malformed; the message names the file and the field."""


def read_spec(bundle: str) -> dict[str, Any]:
    """The parsed config.json of a bundle, which must be a JSON object."""
    path = os.path.join(bundle, "config.json")
    try:
        with open(path, "rb") as f:
            spec = json.load(f)
    except FileNotFoundError:
        raise SpecError(f"{path}: no such file") from None
    except (ValueError, UnicodeDecodeError) as exc:
        raise SpecError(f"{path}: malformed OCI spec: {exc}") from None
    if not isinstance(spec, dict):
        raise SpecError(f"{path}: malformed OCI spec: the top level must be a JSON object")
    return spec
