"""Mutual proof of a per-sandbox secret on each agent channel, before any RPC or stdio byte.

On vsock any local process may connect to a guest's ports, so the agent cannot trust whoever
connects first; on virtio-serial the same exchange runs (the socket is root's already). The
secret is 32 random bytes the shim makes for each VM and hands to the agent only through a
port with no host path (the key port: a socketpair QEMU inherits), never the command line.

After the agent's HANDSHAKE_MAGIC (guest_abi), on each channel:

    agent -> shim   nonce_a (16 bytes)
    shim  -> agent  nonce_s (16) + HMAC-SHA256(key, "shim"  | channel | nonce_a | nonce_s)
    agent -> shim                  HMAC-SHA256(key, "agent" | channel | nonce_a | nonce_s)

The channel name binds each proof to its port; both nonces make every proof fresh. A peer
that fails is dropped (by the agent: it waits for the next connection; by the shim: the VM
fails to start, naming the channel).
"""

from __future__ import annotations

import hashlib
import hmac
import os

KEY_BYTES = 32
NONCE_BYTES = 16
MAC_BYTES = 32
SHIM_PROOF_BYTES = NONCE_BYTES + MAC_BYTES
KEY_REQUEST = b"?"  # the agent's ask on the key port; the shim answers with KEY_BYTES
AUTH_TIMEOUT = 10.0  # seconds a connected peer has to prove itself


class AuthError(Exception):
    """The peer on a channel did not prove the sandbox's secret."""


def new_key() -> bytes:
    """A fresh per-sandbox secret (the shim's, one per VM)."""
    return os.urandom(KEY_BYTES)


def new_nonce() -> bytes:
    return os.urandom(NONCE_BYTES)


def _mac(key: bytes, who: bytes, channel: str, nonce_a: bytes, nonce_s: bytes) -> bytes:
    msg = who + b"|" + channel.encode() + b"|" + nonce_a + nonce_s
    return hmac.new(key, msg, hashlib.sha256).digest()


def shim_proof(key: bytes, channel: str, nonce_a: bytes) -> tuple[bytes, bytes]:
    """(nonce_s, what the shim sends: nonce_s + its MAC) for the agent's nonce."""
    nonce_s = new_nonce()
    return nonce_s, nonce_s + _mac(key, b"shim", channel, nonce_a, nonce_s)


def check_shim_proof(key: bytes, channel: str, nonce_a: bytes, proof: bytes) -> bytes:
    """The shim's nonce if its proof is right; AuthError otherwise."""
    if len(proof) != SHIM_PROOF_BYTES:
        raise AuthError(f"{channel}: a proof of {len(proof)} bytes, not {SHIM_PROOF_BYTES}")
    nonce_s, mac = proof[:NONCE_BYTES], proof[NONCE_BYTES:]
    if not hmac.compare_digest(mac, _mac(key, b"shim", channel, nonce_a, nonce_s)):
        raise AuthError(f"{channel}: the host peer does not know the sandbox's secret")
    return nonce_s


def agent_proof(key: bytes, channel: str, nonce_a: bytes, nonce_s: bytes) -> bytes:
    """The agent's answer once the shim proved itself."""
    return _mac(key, b"agent", channel, nonce_a, nonce_s)


def check_agent_proof(key: bytes, channel: str, nonce_a: bytes, nonce_s: bytes,
                      proof: bytes) -> None:
    """AuthError unless the agent's answer shows it holds the same secret."""
    if not hmac.compare_digest(proof, agent_proof(key, channel, nonce_a, nonce_s)):
        raise AuthError(f"{channel}: the agent does not know the sandbox's secret")
