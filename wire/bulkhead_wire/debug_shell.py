"""The debug shell's byte protocol on the guest's "bulkhead.debug" port (`bulkhead shell`).

Terminal bytes flow as they are both ways; in-band lines start with CONTROL_PREFIX (a NUL
first, which a terminal almost never sends): the host's session header and window sizes, and
the guest's exit status. A port cannot say reliably when one host left and the next came,
so the header (not a reconnect) is what starts a session.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

CONTROL_PREFIX = b"\0bulkhead-"  # every in-band line; then one of the three kinds:
HEADER = b"shell "  # host: + JSON {"rows", "cols", "term", "command"}
RESIZE = b"resize "  # host: + "ROWS COLS"
EXIT = b"shell-exit "  # guest: + "STATUS"
LINE_LIMIT = 4096


def header(rows: int, cols: int, term: str, command: str) -> bytes:
    body = {"rows": rows, "cols": cols, "term": term, "command": command}
    return CONTROL_PREFIX + HEADER + json.dumps(body).encode() + b"\n"


def resize(rows: int, cols: int) -> bytes:
    return CONTROL_PREFIX + RESIZE + f"{rows} {cols}\n".encode()


def exit_line(status: int) -> bytes:
    return CONTROL_PREFIX + EXIT + f"{status}\n".encode()


@dataclass(frozen=True)
class Line:
    """One in-band line, its body without CONTROL_PREFIX and newline."""

    body: bytes


@dataclass
class LineScanner:
    """Splits a byte stream into plain bytes and the lines that start with `prefix`, in
    stream order; a tail that may be the start of such a line is held until the next feed()."""

    prefix: bytes
    _held: bytes = b""

    def feed(self, data: bytes) -> list[bytes | Line]:
        """Plain byte runs and complete lines, in the order they came."""
        data, self._held = self._held + data, b""
        parts: list[bytes | Line] = []
        while data:
            at = data.find(self.prefix)
            if at < 0:
                parts.append(self._hold_partial(data))
                break
            end = data.find(b"\n", at)
            if end < 0 and len(data) - at <= LINE_LIMIT:
                parts.append(data[:at])
                self._held = data[at:]
                break
            if end < 0:  # far too long to be ours: plain bytes after all
                parts.append(data[:at + 1])
                data = data[at + 1:]
                continue
            parts += [data[:at], Line(data[at + len(self.prefix):end])]
            data = data[end + 1:]
        return [p for p in parts if p != b""]

    def _hold_partial(self, data: bytes) -> bytes:
        """Everything but a tail that is a proper start of the prefix."""
        start = data.rfind(self.prefix[:1])
        if start >= 0 and self.prefix.startswith(data[start:]):
            self._held = data[start:]
            return data[:start]
        return data


def parse_header(line: bytes) -> dict[str, object] | None:
    """A session header's JSON (None: not a header line); ValueError if it is malformed."""
    if not line.startswith(HEADER):
        return None
    value = json.loads(line[len(HEADER):])
    if not isinstance(value, dict):
        raise ValueError("debug shell header is not a JSON object")
    return value


def parse_size(line: bytes) -> tuple[int, int] | None:
    """ROWS COLS from a resize line; None for anything else."""
    parts = line[len(RESIZE):].split() if line.startswith(RESIZE) else []
    if len(parts) == 2 and all(p.isdigit() and 0 < int(p) < 10000 for p in parts):
        return int(parts[0]), int(parts[1])
    return None


def parse_exit(line: bytes) -> int | None:
    """The status of an exit line; None for anything else."""
    body = line[len(EXIT):].strip() if line.startswith(EXIT) else b""
    return int(body) if body.lstrip(b"-").isdigit() else None
