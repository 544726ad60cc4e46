"""Agent failures, each carrying the gRPC status code the shim should see.

Kept free of ttrpc imports so the container logic can be tested and reused on its own.
"""

from __future__ import annotations

# gRPC status numbers (the same values as bulkhead_wire.ttrpc.Code).
UNKNOWN = 2
INVALID_ARGUMENT = 3
NOT_FOUND = 5
ALREADY_EXISTS = 6
FAILED_PRECONDITION = 9
INTERNAL = 13


class AgentError(Exception):
    """Base class; `code` is the status the RPC answers with, str(self) its message."""

    code = UNKNOWN


class InvalidArgument(AgentError):
    """The request itself is malformed (bad id, bad signal number)."""

    code = INVALID_ARGUMENT


class NotFound(AgentError):
    """The named container or process does not exist, or has already finished."""

    code = NOT_FOUND


class AlreadyExists(AgentError):
    """A container with that id is already known."""

    code = ALREADY_EXISTS


class FailedPrecondition(AgentError):
    """The object exists but is in the wrong state for the request."""

    code = FAILED_PRECONDITION


class CrunError(AgentError):
    """crun exited non-zero; the message is crun's own error text."""

    code = UNKNOWN

    def __init__(self, command: str, status: int, text: str) -> None:
        detail = text.strip() or f"exit status {status} and no error output"
        super().__init__(f"crun {command} failed: {detail}")
        self.command = command
        self.status = status
        self.text = text
