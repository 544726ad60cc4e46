"""Opening a stdio link with the engine a setting asks for: "c" (the cffi copy engine) or
"python"; "c" falls back to "python", with a log line, where the C module cannot load."""

from __future__ import annotations

import logging
import socket

from bulkhead_wire.stdio.channel import WINDOW
from bulkhead_wire.stdio.link import LinkError, StreamLink

log = logging.getLogger(__name__)

ENGINES = ("c", "python")


def c_engine_available() -> bool:
    """True when the C copy engine (bulkhead_wire._copyengine) was built and loads."""
    from bulkhead_wire.stdio import cengine

    return cengine.available()


async def open_link(sock: socket.socket, engine: str, name: str,
                    window: int = WINDOW) -> StreamLink:
    """A link of the engine asked for on a connected data-channel socket (the link takes it)."""
    if engine not in ENGINES:
        sock.close()
        raise LinkError(f"io_engine {engine!r} is not one of {', '.join(ENGINES)}")
    if engine == "c":
        if c_engine_available():
            from bulkhead_wire.stdio.engine_link import EngineLink

            sock.setblocking(False)
            return EngineLink(sock.detach(), window)
        log.warning("%s: the C copy engine is not built here: using the Python engine", name)
    from bulkhead_wire.stdio.python_link import PythonLink

    return await PythonLink.on_socket(sock, window)


async def open_fd_link(fd: int, engine: str, name: str, window: int = WINDOW) -> StreamLink:
    """The same on a character device (a virtio-serial port opened O_RDWR); takes the fd."""
    if engine not in ENGINES:
        raise LinkError(f"io_engine {engine!r} is not one of {', '.join(ENGINES)}")
    if engine == "c":
        if c_engine_available():
            from bulkhead_wire.stdio.engine_link import EngineLink

            return EngineLink(fd, window)
        log.warning("%s: the C copy engine is not built here: using the Python engine", name)
    from bulkhead_wire.stdio.python_link import PythonLink

    return await PythonLink.on_fd(fd, window)
