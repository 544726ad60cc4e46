"""The shim's half of an agent channel's opening: the agent's magic (guest_abi), then the
mutual proof of the VM's secret (bulkhead_wire.channel_auth), read byte-exact off the socket so
that nothing after it is buffered anywhere but the kernel."""

from __future__ import annotations

import asyncio
import socket

from bulkhead_wire import channel_auth
from bulkhead_wire.channel_auth import AuthError
from bulkhead_wire.guest_abi import HANDSHAKE_MAGIC


async def _read_exactly(sock: socket.socket, size: int, what: str) -> bytes:
    loop = asyncio.get_running_loop()
    out = b""
    while len(out) < size:
        chunk = await loop.sock_recv(sock, size - len(out))
        if not chunk:
            raise ConnectionResetError(f"{what} closed during the handshake")
        out += chunk
    return out


async def open_channel(sock: socket.socket, role: str, key: bytes, what: str) -> None:
    """The magic, then prove the secret and check the agent's proof; VMError-worthy errors are
    ValueError (a wrong magic) and AuthError (a wrong proof), both naming `what`."""
    magic = await _read_exactly(sock, len(HANDSHAKE_MAGIC), what)
    if magic != HANDSHAKE_MAGIC:
        raise ValueError(f"agent on {what} sent {magic!r} "
                         f"instead of the handshake {HANDSHAKE_MAGIC!r}")
    loop = asyncio.get_running_loop()
    nonce_a = await _read_exactly(sock, channel_auth.NONCE_BYTES, what)
    nonce_s, proof = channel_auth.shim_proof(key, role, nonce_a)
    await loop.sock_sendall(sock, proof)
    answer = await asyncio.wait_for(_read_exactly(sock, channel_auth.MAC_BYTES, what),
                                    channel_auth.AUTH_TIMEOUT)
    try:
        channel_auth.check_agent_proof(key, role, nonce_a, nonce_s, answer)
    except AuthError as exc:
        raise AuthError(f"{what}: {exc}") from None
