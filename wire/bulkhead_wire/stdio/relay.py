"""A TCP connection carried over two data-channel streams, one per direction (port forward).

Shared by the shim (the CRI's end, in the pod's network namespace on the host) and the agent
(the server's end, on the VM's loopback). Each side passes its peer's EOF on as a half-close,
so request/response protocols that shut down their writing side keep working.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket

from bulkhead_wire.stdio.link import Pump, StreamLink


class Relay:
    """Both streams of one connection. The inbound stream is registered at once (the peer may
    send on it from then on); the outbound one with send(), once the peer registered it."""

    def __init__(self, link: StreamLink, sock: socket.socket, inbound: int) -> None:
        sock.setblocking(False)
        self.sock = sock
        self._link = link
        self.into_socket: Pump = link.receive_into(inbound, sock.fileno())
        self.from_socket: Pump | None = None

    def send(self, outbound: int) -> None:
        """Start sending what the socket yields on `outbound`."""
        self.from_socket = self._link.send_from(outbound, self.sock.fileno())

    def abort(self) -> None:
        """Drop both streams and the connection."""
        self.into_socket.cancel()
        if self.from_socket is not None:
            self.from_socket.cancel()
        self.sock.close()

    async def run(self) -> None:
        """Copy until both directions ended (or one failed); the socket is closed afterwards."""
        assert self.from_socket is not None, "send() first"
        outbound = self.from_socket
        into = asyncio.ensure_future(self.into_socket.wait())
        out = asyncio.ensure_future(outbound.wait())
        pending = {into, out}
        try:
            while pending:
                done, pending = await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)
                if into in done:
                    if self.into_socket.progress.error:
                        return
                    with contextlib.suppress(OSError):
                        self.sock.shutdown(socket.SHUT_WR)
                if out in done and outbound.progress.error:
                    return
        finally:
            for fut in (into, out):
                fut.cancel()
            self.abort()


def start_relay(link: StreamLink, sock: socket.socket, inbound: int,
                outbound: int) -> asyncio.Task[None]:
    """Register both streams now (the side that answers a ForwardPort) and copy in a task."""
    relay = Relay(link, sock, inbound)
    try:
        relay.send(outbound)
    except BaseException:
        relay.abort()
        raise
    return asyncio.get_running_loop().create_task(relay.run())
