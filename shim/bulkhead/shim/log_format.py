"""The shim's log lines: logrus style (containerd copies them verbatim into its own log), with
the sandbox, and the container and exec a line is about, as fields on every line."""

from __future__ import annotations

import contextvars
import logging
from collections.abc import Awaitable, Callable
from typing import Any

# Set per ttrpc request (and inherited by the tasks it starts, such as exit watchers).
CONTAINER: contextvars.ContextVar[str] = contextvars.ContextVar("container", default="")
EXEC: contextvars.ContextVar[str] = contextvars.ContextVar("exec", default="")

def _field(key: str, value: str, quote: bool = False) -> str:
    """key=value, quoted as logrus does when the value has spaces, quotes or is empty."""
    if not quote and value and not any(c in value for c in ' "=\\'):
        return f"{key}={value}"
    return f'{key}="' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


class LogrusFormatter(logging.Formatter):
    """time, level and msg first (containerd parses them), then the ids that find the line."""

    def __init__(self, namespace: str = "", sandbox: str = "") -> None:
        super().__init__()
        self.namespace, self.sandbox = namespace, sandbox

    def format(self, record: logging.LogRecord) -> str:
        ts = self.formatTime(record, "%Y-%m-%dT%H:%M:%S")
        msg = record.getMessage()
        if record.exc_info:
            msg += " " + self.formatException(record.exc_info)
        msg = msg.replace("\n", " | ")
        fields = [f'time="{ts}.{int(record.msecs):03d}Z"', f"level={record.levelname.lower()}",
                  _field("msg", msg, quote=True), "runtime=io.containerd.bulkhead.v2"]
        if self.namespace:
            fields.append(_field("namespace", self.namespace))
        if self.sandbox:
            fields.append(_field("sandbox", self.sandbox))
        if container := CONTAINER.get():
            fields.append(_field("container", container))
        if exec_id := EXEC.get():
            fields.append(_field("exec", exec_id))
        return " ".join(fields)


def with_ids(handler: Callable[[Any], Awaitable[Any]]) -> Callable[[Any], Awaitable[Any]]:
    """Wrap a Task API handler so its log lines carry the request's container and exec ids."""
    async def run(req: Any) -> Any:
        tokens = (CONTAINER.set(str(getattr(req, "id", "") or "")),
                  EXEC.set(str(getattr(req, "exec_id", "") or "")))
        try:
            return await handler(req)
        finally:  # tasks it started keep their copy of the ids
            CONTAINER.reset(tokens[0])
            EXEC.reset(tokens[1])
    return run
