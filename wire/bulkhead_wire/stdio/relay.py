"""A TCP connection carried over two data-channel streams, one per direction (port forward).

Shared by the shim (the CRI's end, in the pod's network namespace on the host) and the agent
(the server's end, on the VM's loopback). Each side passes its peer's EOF on as a half-close,
so request/response protocols that shut down their writing side keep working.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket

from bulkhead_wire.stdio.channel import DataChannel
from bulkhead_wire.stdio.pump import pump_fd_to_stream, pump_stream_to_fd


async def relay_socket(channel: DataChannel, sock: socket.socket, inbound: int,
                       outbound: int) -> None:
    """Copy stream `inbound` into sock and sock into stream `outbound` until both ends are
    done (or one fails); sock is closed afterwards."""
    sock.setblocking(False)
    fd = sock.fileno()

    async def into_socket() -> None:
        await pump_stream_to_fd(channel, inbound, fd)
        with contextlib.suppress(OSError):
            sock.shutdown(socket.SHUT_WR)

    tasks = [asyncio.create_task(into_socket()),
             asyncio.create_task(pump_fd_to_stream(channel, fd, outbound))]
    try:
        done, pending = await asyncio.wait(tasks, return_when=asyncio.FIRST_EXCEPTION)
        for task in pending:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
    finally:
        for task in tasks:
            task.cancel()
        sock.close()
