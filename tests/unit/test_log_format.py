"""Shim log lines: logrus style, with the sandbox and the request's container and exec ids."""

from __future__ import annotations

import asyncio
import logging
import re

from bulkhead.shim.log_format import LogrusFormatter, with_ids


class Req:
    id = "web"
    exec_id = "sh 1"


def record(msg: str) -> logging.LogRecord:
    return logging.LogRecord("bulkhead", logging.INFO, __file__, 1, msg, None, None)


def test_every_line_names_namespace_and_sandbox() -> None:
    line = LogrusFormatter("k8s.io", "pod-1").format(record('say "hi"\nbye'))
    assert re.fullmatch(r'time="[0-9T:.-]+Z" level=info msg="say \\"hi\\" \| bye" '
                        r'runtime=io.containerd.bulkhead.v2 namespace=k8s.io sandbox=pod-1', line)


def test_request_ids_follow_the_handler_and_its_tasks() -> None:
    fmt = LogrusFormatter("ns", "sb")
    lines: list[str] = []

    async def handler(req: Req) -> None:
        lines.append(fmt.format(record("in the handler")))
        await asyncio.create_task(later())

    async def later() -> None:  # e.g. an exit watcher started by the request
        lines.append(fmt.format(record("later")))

    async def main() -> None:
        await with_ids(handler)(Req())
        lines.append(fmt.format(record("outside")))  # the caller's context is untouched

    asyncio.run(main())
    assert lines[0].endswith('sandbox=sb container=web exec="sh 1"')
    assert lines[1].endswith('sandbox=sb container=web exec="sh 1"')
    assert lines[2].endswith("sandbox=sb")
