"""The shim's half of the channel proof for tests that talk to a development agent directly
(the product's is bulkhead.vmm.channel_handshake, which works on raw sockets)."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

from bulkhead_agent.channel import KEY_FILE
from bulkhead_wire import channel_auth
from bulkhead_wire.guest_abi import HANDSHAKE_MAGIC as MAGIC


def write_key(agent_dir: Path) -> bytes:
    """A fresh secret for a development agent listening in agent_dir (0600, as root's)."""
    key = channel_auth.new_key()
    fd = os.open(agent_dir / KEY_FILE, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(key)
    return key


async def prove(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, key: bytes,
                role: str) -> None:
    """Read MAGIC, prove the secret, check the agent's proof (AuthError if wrong)."""
    assert await asyncio.wait_for(reader.readexactly(len(MAGIC)), 10) == MAGIC
    nonce_a = await reader.readexactly(channel_auth.NONCE_BYTES)
    nonce_s, proof = channel_auth.shim_proof(key, role, nonce_a)
    writer.write(proof)
    await writer.drain()
    answer = await asyncio.wait_for(reader.readexactly(channel_auth.MAC_BYTES), 10)
    channel_auth.check_agent_proof(key, role, nonce_a, nonce_s, answer)
