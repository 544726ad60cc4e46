"""Port forward relay: a host connection reaches a loopback server through two channels'
streams and the agent's ForwardPort end, with half-close in both directions."""

from __future__ import annotations

import asyncio
import socket

import pytest
from bulkhead.sandbox.port_forward import original_port
from bulkhead_agent.port_forward import PortForwards, PortUnreachable
from bulkhead_wire.stdio.relay import Relay
from stdio_links import ENGINE_PAIRS, link_pair


@pytest.mark.parametrize("engines", ENGINE_PAIRS)
def test_a_connection_is_relayed_both_ways_with_half_close(engines: tuple[str, str]) -> None:
    async def run() -> None:
        async with link_pair(*engines, window=4096) as (host, guest):
            async def upper_echo(reader: asyncio.StreamReader,
                                 writer: asyncio.StreamWriter) -> None:
                data = await reader.read()  # until the client's half-close
                writer.write(data.upper())
                await writer.drain()
                writer.close()

            server = await asyncio.start_server(upper_echo, "127.0.0.1", 0)
            port = server.sockets[0].getsockname()[1]
            forwards = PortForwards()
            client, shim_end = socket.socketpair()
            relay = Relay(host, shim_end, inbound=2)  # the shim's order: its end first
            await forwards.open(guest, port, to_guest=1, from_guest=2)
            relay.send(1)
            task = asyncio.create_task(relay.run())
            payload = b"hello through the vm " * 5000  # more than one credit window
            loop = asyncio.get_running_loop()
            client.setblocking(False)
            await loop.sock_sendall(client, payload)
            client.shutdown(socket.SHUT_WR)
            got = b""
            while chunk := await loop.sock_recv(client, 65536):
                got += chunk
            assert got == payload.upper()
            await asyncio.wait_for(task, 5)
            client.close()
            server.close()

    asyncio.run(run())


def test_nothing_listening_is_an_error_naming_the_port() -> None:
    async def run() -> None:
        async with link_pair("python", "python") as (_, guest):
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
