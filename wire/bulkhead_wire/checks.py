"""Checks on ids and OCI process specs received over the wire, shared by the shim and the agent.

containerd validates container ids but not exec ids, and both end up in file names (host and
guest); a hostile or broken client must get a clear error, never a path outside our dirs.
Each side turns the ValueError into its own InvalidArgument.
"""

from __future__ import annotations

from typing import Any

MAX_ID_LENGTH = 255
MAX_PROCESS_SPEC = 1 << 20  # bytes of OCI Process JSON accepted for one exec


def check_id(kind: str, value: str) -> None:
    """A non-empty name usable as one file name component; ValueError otherwise."""
    if (not value or len(value) > MAX_ID_LENGTH or "/" in value or value in (".", "..")
            or any(ord(c) < 0x20 or c == "\x7f" for c in value)):
        raise ValueError(f"invalid {kind} id {value!r}: it must be 1 to {MAX_ID_LENGTH} "
                         "printable characters, not '.' or '..', without '/'")


def parse_process_spec(raw: bytes, what: str) -> dict[str, Any]:
    """The OCI Process JSON of an exec, checked for what crun needs; ValueError otherwise."""
    if len(raw) > MAX_PROCESS_SPEC:
        raise ValueError(f"{what}: process spec of {len(raw)} bytes exceeds {MAX_PROCESS_SPEC}")
    import json  # here, not at the top: the agent imports this module during its TCG boot

    try:
        spec = json.loads(raw)
    except (ValueError, UnicodeDecodeError) as exc:
        raise ValueError(f"{what}: process spec is not valid JSON: {exc}") from None
    if not isinstance(spec, dict):
        raise ValueError(f"{what}: process spec must be a JSON object")
    args = spec.get("args")
    if not isinstance(args, list) or not args or not all(isinstance(a, str) for a in args):
        raise ValueError(f"{what}: process.args must be a non-empty list of strings")
    for key, kind in (("cwd", str), ("env", list), ("terminal", bool), ("user", dict)):
        if key in spec and not isinstance(spec[key], kind):
            raise ValueError(f"{what}: process.{key} must be a JSON {kind.__name__}")
    return spec


def to_json(value: Any) -> str:
    """JSON text of a checked spec (json imported on first use, as above)."""
    import json

    return json.dumps(value)
