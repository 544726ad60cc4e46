"""A small stdlib WebSocket client for the URLs CRI's Exec, Attach and PortForward return.

containerd serves them with Kubernetes' streaming server; over WebSocket (subprotocol
`v4.channel.k8s.io`) every binary message starts with a channel byte:
  exec/attach: 0 stdin, 1 stdout, 2 stderr, 3 status (a JSON metav1.Status at the end),
               4 resize (JSON {"Width": w, "Height": h});
  port forward: per requested port i, channel 2i carries data and 2i+1 errors; the first
               message on each is the port number (2 bytes, little endian).
The server closes the connection when the command (or the forwarded connection) ends.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import select
import socket
import struct
import time
from dataclasses import dataclass, field
from urllib.parse import urlsplit

PROTOCOL = "v4.channel.k8s.io"
WS_GUID = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
STDIN, STDOUT, STDERR, STATUS, RESIZE = range(5)
OP_CONT, OP_TEXT, OP_BINARY, OP_CLOSE, OP_PING, OP_PONG = 0x0, 0x1, 0x2, 0x8, 0x9, 0xA


class StreamError(RuntimeError):
    """The streaming server refused the connection or broke the WebSocket protocol."""


class ChannelSocket:
    """One WebSocket connection speaking the k8s channel protocol (client side: masked)."""

    def __init__(self, sock: socket.socket, buffered: bytes = b"") -> None:
        self.sock = sock
        self._buf = buffered
        self.closed = False

    @classmethod
    def connect(cls, url: str, protocol: str = PROTOCOL, timeout: float = 30.0) -> ChannelSocket:
        """HTTP Upgrade to WebSocket on an http:// URL (containerd serves no TLS here)."""
        parts = urlsplit(url)
        if parts.scheme != "http" or parts.hostname is None:
            raise StreamError(f"unsupported streaming URL {url!r}")
        sock = socket.create_connection((parts.hostname, parts.port or 80), timeout=timeout)
        key = base64.b64encode(os.urandom(16)).decode()
        path = parts.path + (f"?{parts.query}" if parts.query else "")
        request = (f"GET {path} HTTP/1.1\r\nHost: {parts.netloc}\r\nUpgrade: websocket\r\n"
                   f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
                   f"Sec-WebSocket-Version: 13\r\nSec-WebSocket-Protocol: {protocol}\r\n\r\n")
        sock.sendall(request.encode())
        head, rest = _read_http_head(sock)
        _check_upgrade(head, key, url)
        return cls(sock, rest)

    def send(self, channel: int, data: bytes) -> None:
        """One binary message: the channel byte, then data."""
        self._send_frame(OP_BINARY, bytes([channel]) + data)

    def _send_frame(self, opcode: int, payload: bytes) -> None:
        header = bytes([0x80 | opcode])
        n = len(payload)
        if n < 126:
            header += bytes([0x80 | n])
        elif n < 1 << 16:
            header += bytes([0x80 | 126]) + struct.pack("!H", n)
        else:
            header += bytes([0x80 | 127]) + struct.pack("!Q", n)
        mask = os.urandom(4)
        masked = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
        self.sock.sendall(header + mask + masked)

    def _read_exact(self, n: int, deadline: float) -> bytes:
        while len(self._buf) < n:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError("no WebSocket data in time")
            ready, _, _ = select.select([self.sock], [], [], remaining)
            if not ready:
                continue
            chunk = self.sock.recv(65536)
            if not chunk:
                raise EOFError("connection closed")
            self._buf += chunk
        data, self._buf = self._buf[:n], self._buf[n:]
        return data

    def _read_frame(self, deadline: float) -> tuple[bool, int, bytes]:
        """(fin, opcode, payload) of the next frame."""
        b0, b1 = self._read_exact(2, deadline)
        n = b1 & 0x7F
        if n == 126:
            (n,) = struct.unpack("!H", self._read_exact(2, deadline))
        elif n == 127:
            (n,) = struct.unpack("!Q", self._read_exact(8, deadline))
        mask = self._read_exact(4, deadline) if b1 & 0x80 else b""
        payload = self._read_exact(n, deadline)
        if mask:
            payload = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
        return bool(b0 & 0x80), b0 & 0x0F, payload

    def recv(self, timeout: float = 30.0) -> tuple[int, bytes] | None:
        """The next (channel, data) message; None once the server has closed."""
        if self.closed:
            return None
        deadline = time.monotonic() + timeout
        message = b""
        while True:
            try:
                fin, opcode, payload = self._read_frame(deadline)
            except EOFError:
                self.closed = True
                return None
            if opcode == OP_CLOSE:
                self._close_reply(payload)
                return None
            if opcode == OP_PING:
                self._send_frame(OP_PONG, payload)
                continue
            if opcode == OP_PONG:
                continue
            message += payload
            if fin:
                break
        if not message:
            return self.recv(max(0.0, deadline - time.monotonic()))
        return message[0], message[1:]

    def _close_reply(self, payload: bytes) -> None:
        self.closed = True
        try:
            self._send_frame(OP_CLOSE, payload[:2])
        except OSError:
            pass

    def close(self) -> None:
        """Send a close frame (if still open) and drop the connection."""
        if not self.closed:
            self._close_reply(struct.pack("!H", 1000))
        self.sock.close()

    def __enter__(self) -> ChannelSocket:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _read_http_head(sock: socket.socket) -> tuple[str, bytes]:
    """The response head (up to the blank line) and whatever followed it."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(4096)
        if not chunk:
            raise StreamError(f"streaming server closed during the handshake: {data!r}")
        data += chunk
    head, _, rest = data.partition(b"\r\n\r\n")
    return head.decode(errors="replace"), rest


def _check_upgrade(head: str, key: str, url: str) -> None:
    lines = head.split("\r\n")
    if " 101 " not in lines[0] + " ":
        raise StreamError(f"{url}: no WebSocket upgrade: {head!r}")
    headers = {k.strip().lower(): v.strip() for k, _, v in (h.partition(":") for h in lines[1:])}
    accept = base64.b64encode(hashlib.sha1((key + WS_GUID).encode()).digest()).decode()
    if headers.get("sec-websocket-accept") != accept:
        raise StreamError(f"{url}: bad Sec-WebSocket-Accept in {head!r}")


# --- exec and attach ---------------------------------------------------------------------------


@dataclass
class StreamResult:
    """What an exec/attach session produced; status is the final metav1.Status, if any."""

    stdout: bytes = b""
    stderr: bytes = b""
    status: dict[str, object] | None = None
    channels: list[int] = field(default_factory=list)  # every channel a message came on

    @property
    def exit_code(self) -> int | None:
        """0 for Success, the ExitCode cause for NonZeroExitCode, None without a status."""
        if self.status is None:
            return None
        if self.status.get("status") == "Success":
            return 0
        details = self.status.get("details")
        causes = details.get("causes", []) if isinstance(details, dict) else []
        for cause in causes:
            if isinstance(cause, dict) and cause.get("reason") == "ExitCode":
                return int(cause.get("message", "-1"))
        return -1


class Session:
    """An exec or attach stream: write stdin, resize the terminal, read what comes back."""

    def __init__(self, url: str, timeout: float = 30.0) -> None:
        self.ws = ChannelSocket.connect(url, timeout=timeout)
        self.result = StreamResult()

    def write(self, data: bytes) -> None:
        self.ws.send(STDIN, data)

    def resize(self, width: int, height: int) -> None:
        self.ws.send(RESIZE, json.dumps({"Width": width, "Height": height}).encode())

    def _take(self, message: tuple[int, bytes]) -> None:
        channel, data = message
        self.result.channels.append(channel)
        if channel == STDOUT:
            self.result.stdout += data
        elif channel == STDERR:
            self.result.stderr += data
        elif channel == STATUS and data:
            self.result.status = json.loads(data)

    def read_until(self, needle: bytes, timeout: float = 30.0, stream: int = STDOUT) -> bytes:
        """Read until needle has appeared on stdout (or stderr); returns that stream so far."""
        deadline = time.monotonic() + timeout
        def seen() -> bytes:
            return self.result.stdout if stream == STDOUT else self.result.stderr
        while needle not in seen():
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError(f"{needle!r} not seen; got {seen()[-500:]!r}")
            message = self.ws.recv(remaining)
            if message is None:
                raise EOFError(f"stream closed before {needle!r}; got {seen()[-500:]!r}")
            self._take(message)
        return seen()

    def wait(self, timeout: float = 60.0) -> StreamResult:
        """Read until the server closes the stream (the command ended); returns everything."""
        deadline = time.monotonic() + timeout
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError(f"stream still open; so far {self.result}")
            message = self.ws.recv(remaining)
            if message is None:
                return self.result
            self._take(message)

    def close(self) -> None:
        self.ws.close()

    def __enter__(self) -> Session:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def run(url: str, stdin: bytes | None = None, timeout: float = 60.0) -> StreamResult:
    """Connect, send stdin (if any), and collect output until the command ends."""
    with Session(url, timeout=timeout) as session:
        if stdin is not None:
            session.write(stdin)
        return session.wait(timeout)


# --- port forward ------------------------------------------------------------------------------


def forward_once(url: str, request: bytes, timeout: float = 30.0) -> bytes:
    """Send request to the one port of a PortForward URL and return all the pod answered
    (until the pod's side closed the connection)."""
    with ChannelSocket.connect(url, timeout=timeout) as ws:
        deadline = time.monotonic() + timeout
        preamble: dict[int, bytes] = {}
        while len(preamble) < 2:  # the port number comes first on the data and error channels
            message = ws.recv(max(0.0, deadline - time.monotonic()))
            if message is None:
                raise StreamError("port forward closed before its preamble")
            preamble.setdefault(message[0], message[1])
        ws.send(0, request)
        answer, errors = b"", b""
        while (message := ws.recv(max(0.0, deadline - time.monotonic()))) is not None:
            channel, data = message
            if channel == 0:
                answer += data
            else:
                errors += data
        if errors:
            raise StreamError(f"port forward error: {errors.decode(errors='replace')}")
        return answer
