"""Port forward relay: a host connection reaches a loopback server through two channels'
streams and the agent's ForwardPort end, with half-close in both directions."""

from __future__ import annotations

import asyncio
import socket

import pytest
from bulkhead.sandbox.port_forward import original_port
from bulkhead_agent.port_forward import PortForwards, PortUnreachable
from bulkhead_wire.stdio.relay import relay_socket
from test_stdio_channel import linked


def test_a_connection_is_relayed_both_ways_with_half_close() -> None:
    async def run() -> None:
        host, guest = await linked(window=4096)

        async def upper_echo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            data = await reader.read()  # until the client's half-close
            writer.write(data.upper())
            await writer.drain()
            writer.close()

        server = await asyncio.start_server(upper_echo, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        forwards = PortForwards()
        await forwards.open(guest, port, to_guest=1, from_guest=2)
        client, shim_end = socket.socketpair()
        relay = asyncio.create_task(relay_socket(host, shim_end, inbound=2, outbound=1))
        payload = b"hello through the vm " * 5000  # more than one credit window
        loop = asyncio.get_running_loop()
        client.setblocking(False)
        await loop.sock_sendall(client, payload)
        client.shutdown(socket.SHUT_WR)
        got = b""
        while chunk := await loop.sock_recv(client, 65536):
            got += chunk
        assert got == payload.upper()
        await asyncio.wait_for(relay, 5)
        client.close()
        server.close()
        await host.close()
        await guest.close()

    asyncio.run(run())


def test_nothing_listening_is_an_error_naming_the_port() -> None:
    async def run() -> None:
        _, guest = await linked(window=4096)
        probe = socket.socket()
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
        probe.close()  # bound once, now free: nothing listens
        with pytest.raises(PortUnreachable, match=f"port {port} in the pod: 127.0.0.1: "):
            await PortForwards().open(guest, port, 1, 2)

    asyncio.run(run())


def test_original_port_needs_a_redirected_socket() -> None:
    a, b = socket.socketpair()
    with pytest.raises(OSError):
        original_port(a)  # not an IPv4 TCP socket that went through NAT
    a.close()
    b.close()
