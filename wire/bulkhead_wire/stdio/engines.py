"""Opening a stdio link with the engine a setting asks for: "c" (the cffi copy engine) or
"python"; "c" falls back to "python", with a log line, where the C module cannot load."""

from __future__ import annotations

import logging
import os
import socket

from bulkhead_wire.stdio.channel import WINDOW
from bulkhead_wire.stdio.link import LinkError, StreamLink

log = logging.getLogger(__name__)

ENGINES = ("c", "python")


def c_engine_available() -> bool:
    """True when the C copy engine (bulkhead_wire._copyengine) was built and loads."""
    from bulkhead_wire.stdio import cengine

    return cengine.available()


async def open_link(channel: socket.socket | int, engine: str, name: str,
                    window: int = WINDOW) -> StreamLink:
    """A link of the engine asked for on a data channel: a connected socket, or the fd of a
    character device (a virtio-serial port opened O_RDWR, non-blocking). The link takes it."""
    if engine not in ENGINES:
        if isinstance(channel, socket.socket):
            channel.close()
        else:
            os.close(channel)
        raise LinkError(f"io_engine {engine!r} is not one of {', '.join(ENGINES)}")
    if engine == "c" and not c_engine_available():
        log.warning("%s: the C copy engine is not built here: using the Python engine", name)
        engine = "python"
    if engine == "c":
        from bulkhead_wire.stdio.engine_link import EngineLink

        if isinstance(channel, socket.socket):
            channel.setblocking(False)
            channel = channel.detach()
        return EngineLink(channel, window)
    from bulkhead_wire.stdio.python_link import PythonLink

    return await PythonLink.open(channel, window)
