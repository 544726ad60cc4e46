"""Serving the collector over HTTP with prometheus_client's server (its own thread: fine here,
the monitor is not a shim), on the address `--listen` names."""

from __future__ import annotations

import ipaddress
import signal
import threading
from wsgiref.simple_server import WSGIServer

from prometheus_client import CollectorRegistry, generate_latest, start_http_server

from bulkhead.monitor.collector import SandboxCollector


class ListenError(Exception):
    """A --listen value that is not HOST:PORT, or an address that cannot be bound."""


def parse_listen(text: str) -> tuple[str, int]:
    """HOST:PORT, an IPv6 host in brackets ([::1]:9619); the host must be an IP address."""
    host, sep, port_text = text.rpartition(":")
    if not sep or not host:
        raise ListenError(f"--listen {text!r}: expected HOST:PORT, e.g. 127.0.0.1:9619")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    try:
        ipaddress.ip_address(host)
    except ValueError:
        raise ListenError(f"--listen {text!r}: {host!r} is not an IP address") from None
    if not port_text.isdigit() or not 0 <= int(port_text) <= 65535:
        raise ListenError(f"--listen {text!r}: port {port_text!r} is not a number from 0 to "
                          "65535")
    return host, int(port_text)


def registry(run_dir: str | None = None) -> CollectorRegistry:
    """A registry with only the sandbox collector (not the monitor's own process metrics)."""
    reg = CollectorRegistry(auto_describe=False)
    reg.register(SandboxCollector(run_dir))
    return reg


def exposition(run_dir: str | None = None) -> bytes:
    """One scrape's text, as the HTTP server would send it."""
    return generate_latest(registry(run_dir))


def start(host: str, port: int, run_dir: str | None = None) -> WSGIServer:
    """Listen and serve in a background thread; ListenError names an address that failed."""
    try:
        server, _ = start_http_server(port, host, registry(run_dir))
    except OSError as exc:
        raise ListenError(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from None
    return server


def serve_until_signalled(server: WSGIServer) -> None:
    """Block until SIGTERM or SIGINT, then stop the server."""
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    stop.wait()
    server.shutdown()
    server.server_close()
