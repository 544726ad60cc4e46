"""The guest's end of the CRI's PortForward: a connection to a port on the VM's loopback.

containerd dials localhost:port inside the pod's network namespace; on the host that
namespace holds only the veth, so the shim takes the connection and the agent makes it here,
where the pod's containers listen (they share the VM's network namespace).
"""

from __future__ import annotations

import asyncio
import logging
import socket

from bulkhead_wire.stdio.link import StreamLink
from bulkhead_wire.stdio.relay import start_relay

from bulkhead_agent.errors import AgentError, InvalidArgument

log = logging.getLogger(__name__)

# Like containerd for runc: IPv4 loopback first, then IPv6.
LOOPBACKS = ((socket.AF_INET, "127.0.0.1"), (socket.AF_INET6, "::1"))


class PortUnreachable(AgentError):
    """Nothing accepts connections on that port in the pod."""


class PortForwards:
    """Relays in flight; each ends on its own when both sides are done."""

    def __init__(self) -> None:
        self._relays: set[asyncio.Task[None]] = set()

    async def open(self, link: StreamLink, port: int, to_guest: int,
                   from_guest: int) -> None:
        """Connect to the port, then relay it in the background (both streams registered
        before the reply, so the host may send at once)."""
        if not 0 < port < 65536:
            raise InvalidArgument(f"port {port} is not a TCP port")
        sock = await connect_loopback(port)
        task = start_relay(link, sock, to_guest, from_guest)
        self._relays.add(task)
        task.add_done_callback(self._relays.discard)

    def close(self) -> None:
        """Drop every relay (the host went away)."""
        for task in list(self._relays):
            task.cancel()


async def connect_loopback(port: int) -> socket.socket:
    """A connected socket to port on 127.0.0.1, else ::1; the error names both attempts."""
    loop = asyncio.get_running_loop()
    errors = []
    for family, address in LOOPBACKS:
        sock = socket.socket(family, socket.SOCK_STREAM)
        sock.setblocking(False)
        try:
            await loop.sock_connect(sock, (address, port))
            return sock
        except OSError as exc:
            sock.close()
            errors.append(f"{address}: {exc.strerror or exc}")
    raise PortUnreachable(f"port {port} in the pod: " + "; ".join(errors))
