"""The host's end of the CRI's PortForward for a VM pod.

containerd serves PortForward by dialling localhost:port inside the pod's network namespace.
For a VM pod nothing listens there: the pod's processes are in the guest. So the shim listens
on one loopback port in that namespace, an iptables REDIRECT sends every other loopback TCP
connection made in the namespace to it, and each accepted connection (its original port read
with SO_ORIGINAL_DST) is relayed through the agent to the same port on the VM's loopback.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import struct
from typing import Protocol

from bulkhead_wire.netlink.netns import call_in_netns
from bulkhead_wire.stdio.link import StreamLink
from bulkhead_wire.stdio.relay import Relay
from bulkhead_wire.ttrpc import TtrpcError

from bulkhead.agent.client import AgentClient

log = logging.getLogger(__name__)

SO_ORIGINAL_DST = 80  # linux/netfilter_ipv4.h
IPTABLES = "iptables"


def _listening_socket() -> socket.socket:
    """A TCP listener on 127.0.0.1, any port, in the namespace this thread is in."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        sock.bind(("127.0.0.1", 0))
        sock.listen(64)
        sock.setblocking(False)
    except OSError:
        sock.close()
        raise
    return sock


def original_port(conn: socket.socket) -> int:
    """The port the client dialled before the REDIRECT (sockaddr_in: family, port, ...)."""
    raw = conn.getsockopt(socket.SOL_IP, SO_ORIGINAL_DST, 16)
    port: int = struct.unpack_from("!H", raw, 2)[0]
    return port


class ForwardTarget(Protocol):
    """What a forward needs of its sandbox (the Sandbox itself; no import of it here)."""

    id: str

    @property
    def agent(self) -> AgentClient | None: ...

    @property
    def link(self) -> StreamLink | None: ...

    def new_stream(self) -> int: ...


class PortForwarder:
    """One listener per pod network namespace; relays live until either side closes."""

    def __init__(self, sandbox: ForwardTarget, netns_path: str, listener: socket.socket) -> None:
        self.sandbox = sandbox
        self.netns_path = netns_path
        self.listener = listener
        self.port: int = listener.getsockname()[1]
        self._tasks: set[asyncio.Task[None]] = set()

    @classmethod
    def start(cls, sandbox: ForwardTarget, netns_path: str) -> PortForwarder:
        """Listen in the pod's namespace now; the REDIRECT rule is added in the background
        (it is only needed once a port forward comes, and iptables takes tens of ms)."""
        forwarder = cls(sandbox, netns_path, call_in_netns(netns_path, _listening_socket))
        forwarder._spawn(forwarder._redirect_loopback())
        forwarder._spawn(forwarder._accept_loop())
        return forwarder

    def _spawn(self, coro: object) -> None:
        task: asyncio.Task[None] = asyncio.create_task(coro)  # type: ignore[arg-type]
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _redirect_loopback(self) -> None:
        """iptables in the pod's namespace: loopback TCP to any port goes to our listener."""
        argv = ["nsenter", f"--net={self.netns_path}", IPTABLES, "-w", "-t", "nat", "-A",
                "OUTPUT", "-o", "lo", "-p", "tcp", "-d", "127.0.0.1", "-j", "REDIRECT",
                "--to-ports", str(self.port)]
        try:
            proc = await asyncio.create_subprocess_exec(
                *argv, stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.DEVNULL,
                stderr=asyncio.subprocess.PIPE)
            _, err = await proc.communicate()
        except OSError as exc:
            log.warning("sandbox %s: port forwarding unavailable: %s: %s", self.sandbox.id,
                        argv[2], exc.strerror)
            return
        if proc.returncode:
            log.warning("sandbox %s: port forwarding unavailable: iptables in %s: %s",
                        self.sandbox.id, self.netns_path, err.decode(errors="replace").strip())

    async def _accept_loop(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            conn, _ = await loop.sock_accept(self.listener)
            self._spawn(self._forward(conn))

    async def _forward(self, conn: socket.socket) -> None:
        """Open the same port in the guest and relay; a refusal there closes the connection,
        which the CRI client sees as the end of the stream."""
        relay: Relay | None = None
        try:
            port = original_port(conn)
            agent, link = self.sandbox.agent, self.sandbox.link
            if agent is None or link is None or port == self.port:
                conn.close()
                return
            to_guest, from_guest = self.sandbox.new_stream(), self.sandbox.new_stream()
            relay = Relay(link, conn, from_guest)  # ours registered before the guest sends
            await agent.forward_port(port, to_guest, from_guest)
            relay.send(to_guest)  # the guest registered its end before it answered
        except (OSError, TtrpcError, ConnectionError) as exc:
            log.info("sandbox %s: port forward refused: %s", self.sandbox.id, exc)
            if relay is not None:
                relay.abort()
            else:
                conn.close()
            return
        await relay.run()

    async def close(self) -> None:
        """Stop listening and drop every relay (the namespace's rule goes with it)."""
        for task in list(self._tasks):
            task.cancel()
        with contextlib.suppress(Exception):
            await asyncio.gather(*self._tasks, return_exceptions=True)
        self.listener.close()
