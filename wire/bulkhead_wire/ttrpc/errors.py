"""Status codes (gRPC numbering) and the exception that carries one across the wire."""

from __future__ import annotations

import enum


class Code(enum.IntEnum):
    """gRPC status codes, as ttrpc and containerd's errdefs use them."""

    OK = 0
    CANCELLED = 1
    UNKNOWN = 2
    INVALID_ARGUMENT = 3
    DEADLINE_EXCEEDED = 4
    NOT_FOUND = 5
    ALREADY_EXISTS = 6
    PERMISSION_DENIED = 7
    RESOURCE_EXHAUSTED = 8
    FAILED_PRECONDITION = 9
    ABORTED = 10
    OUT_OF_RANGE = 11
    UNIMPLEMENTED = 12
    INTERNAL = 13
    UNAVAILABLE = 14
    DATA_LOSS = 15
    UNAUTHENTICATED = 16


class TtrpcError(Exception):
    """An RPC failure with a status code; raised by handlers and by the client on error replies."""

    def __init__(self, code: Code | int, message: str) -> None:
        super().__init__(message)
        try:
            self.code: Code = Code(code)
        except ValueError:
            self.code = Code.UNKNOWN
        self.message = message

    def __str__(self) -> str:
        return f"{self.message} ({self.code.name.lower()})"


PEER_MESSAGE_CHARS = 1024  # what a peer's error text may take of logs and of replies we relay


def peer_message(text: str, limit: int = PEER_MESSAGE_CHARS) -> str:
    """A peer's error text made safe to log and relay: control characters escaped (no forged
    log lines) and cut to `limit`, saying how much was cut."""
    clean = "".join(c if c.isprintable() else repr(c)[1:-1] for c in text[:limit])
    if len(text) > limit:
        clean += f"... ({len(text) - limit} more characters)"
    return clean


class ConnectionClosed(ConnectionError):
    """The peer went away while calls were outstanding."""
