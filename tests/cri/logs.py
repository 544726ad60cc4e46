"""Parser for the CRI container log format containerd writes at a container's log_path:
`<RFC3339Nano timestamp> <stdout|stderr> <P|F>[:more tags] <content>` per line, where P marks
a partial piece (a split long line, or text without a newline at EOF) and F the final one."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

STREAMS = ("stdout", "stderr")
TAGS = ("P", "F")


class LogFormatError(ValueError):
    """A line that is not a CRI log record."""


@dataclass(frozen=True)
class LogRecord:
    """One line of the log file."""

    time: datetime
    stream: str
    tag: str  # "P" or "F" (only the part before the first ':' counts)
    content: bytes

    @property
    def partial(self) -> bool:
        return self.tag == "P"


def parse_line(line: bytes) -> LogRecord:
    """Split on the first three spaces; the content keeps every other byte as written."""
    parts = line.split(b" ", 3)
    if len(parts) != 4:
        raise LogFormatError(f"not a CRI log line: {line!r}")
    stamp, stream, tags, content = parts
    tag = tags.split(b":", 1)[0].decode(errors="replace")
    if stream.decode(errors="replace") not in STREAMS or tag not in TAGS:
        raise LogFormatError(f"bad stream or tag in {line!r}")
    try:
        when = datetime.fromisoformat(stamp.decode())  # 3.11 takes Z and 9 fraction digits
    except ValueError as exc:
        raise LogFormatError(f"bad timestamp in {line!r}") from exc
    return LogRecord(when, stream.decode(), tag, content)


def parse(data: bytes) -> list[LogRecord]:
    """Every record of a log file's bytes (each line ends with LF)."""
    if data and not data.endswith(b"\n"):
        raise LogFormatError(f"log does not end with a newline: {data[-80:]!r}")
    return [parse_line(line) for line in data.split(b"\n")[:-1]]


def read(path: Path | str) -> list[LogRecord]:
    return parse(Path(path).read_bytes())


def lines(records: list[LogRecord], stream: str) -> list[bytes]:
    """The stream's original lines: consecutive P pieces joined up to their F (a trailing run
    of P pieces, text that ended without a newline, is returned as it is)."""
    out: list[bytes] = []
    pending = b""
    for record in records:
        if record.stream != stream:
            continue
        pending += record.content
        if not record.partial:
            out.append(pending)
            pending = b""
    if pending:
        out.append(pending)
    return out
