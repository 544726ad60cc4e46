"""The debug shell's in-band lines, split across reads at every possible point."""

from __future__ import annotations

import pytest
from bulkhead_wire import debug_shell as protocol
from bulkhead_wire.debug_shell import Line, LineScanner


def scan(stream: bytes, cut: int) -> list[bytes | Line]:
    """The parts of two reads, adjacent plain runs joined."""
    scanner = LineScanner(protocol.CONTROL_PREFIX)
    parts: list[bytes | Line] = []
    for chunk in (stream[:cut], stream[cut:]):
        for part in scanner.feed(chunk):
            if parts and isinstance(part, bytes) and isinstance(parts[-1], bytes):
                parts[-1] += part
            else:
                parts.append(part)
    return parts


STREAM = (b"$ ls\r\n" + protocol.resize(40, 120) + b"a\0b" + protocol.exit_line(3) + b"tail")


@pytest.mark.parametrize("cut", range(len(STREAM) + 1))
def test_lines_are_found_in_order_wherever_the_reads_split(cut: int) -> None:
    assert scan(STREAM, cut) == [b"$ ls\r\n", Line(b"resize 40 120"), b"a\0b",
                                 Line(b"shell-exit 3"), b"tail"]


def test_header_round_trip_and_bad_lines() -> None:
    [line] = LineScanner(protocol.CONTROL_PREFIX).feed(protocol.header(24, 80, "xterm", "id"))
    assert isinstance(line, Line)
    assert protocol.parse_header(line.body) == {"rows": 24, "cols": 80, "term": "xterm",
                                               "command": "id"}
    assert protocol.parse_size(b"resize 0 80") is None
    assert protocol.parse_size(b"shell {}") is None and protocol.parse_exit(b"resize 1 2") is None
    with pytest.raises(ValueError):
        protocol.parse_header(b"shell [1]")


def test_an_endless_control_line_is_plain_output() -> None:
    junk = protocol.CONTROL_PREFIX + b"x" * (protocol.LINE_LIMIT + 10)
    parts = LineScanner(protocol.CONTROL_PREFIX).feed(junk)
    assert b"".join(p for p in parts if isinstance(p, bytes)) == junk
