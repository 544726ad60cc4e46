"""A deliberately simple HTTP load generator: C threads, each doing one request per TCP
connection (HTTP/1.0, `Connection: close`; busybox httpd closes after every response anyway)
for a fixed duration. What it measures is connection setup + one request through the pod's
network path (veth/bridge for runc; veth, tap and a TCG-emulated virtio NIC for Bulkhead), not
the client: the client is the same for both handlers.

It only talks to the address it is given; the caller checks that it is a pod on the benchmark's
own bridge.
"""

from __future__ import annotations

import socket
import statistics
import threading
import time
from dataclasses import dataclass, field

REQUEST_TIMEOUT = 10.0


@dataclass
class LoadResult:
    """Requests answered with 200 and the expected body, failures, and per-request latency."""

    duration: float
    ok: int = 0
    errors: int = 0
    latencies: list[float] = field(default_factory=list)
    first_error: str = ""

    @property
    def rate(self) -> float:
        return self.ok / self.duration if self.duration else 0.0

    @property
    def median_latency(self) -> float:
        return statistics.median(self.latencies) if self.latencies else 0.0


def get_once(ip: str, port: int, body: bytes) -> None:
    """One GET / on a fresh connection; raises unless it answers 200 with body."""
    request = f"GET / HTTP/1.0\r\nHost: {ip}\r\nConnection: close\r\n\r\n".encode()
    with socket.create_connection((ip, port), timeout=REQUEST_TIMEOUT) as conn:
        conn.sendall(request)
        chunks = []
        while chunk := conn.recv(65536):
            chunks.append(chunk)
    response = b"".join(chunks)
    head, _, content = response.partition(b"\r\n\r\n")
    status = head.split(b"\r\n", 1)[0]
    if b" 200 " not in status + b" " or content != body:
        raise RuntimeError(f"unexpected answer {response[:120]!r}")


def wait_serving(ip: str, port: int, body: bytes, timeout: float,
                 cancel: threading.Event) -> None:
    """Retry get_once until it succeeds (the container may still be starting httpd)."""
    deadline = time.monotonic() + timeout
    last: Exception | None = None
    while time.monotonic() < deadline:
        try:
            get_once(ip, port, body)
            return
        except (OSError, RuntimeError) as exc:
            last = exc
        if cancel.wait(0.2):
            raise RuntimeError("cancelled while waiting for httpd")
    raise TimeoutError(f"httpd on {ip}:{port} not answering within {timeout:g} s: {last!r}")


def _worker(ip: str, port: int, body: bytes, end: float, result: LoadResult,
            lock: threading.Lock, cancel: threading.Event) -> None:
    ok, errors, latencies, first_error = 0, 0, [], ""
    while not cancel.is_set():
        start = time.monotonic()
        if start >= end:
            break
        try:
            get_once(ip, port, body)
        except (OSError, RuntimeError) as exc:
            errors += 1
            first_error = first_error or repr(exc)
            continue
        latencies.append(time.monotonic() - start)
        ok += 1
    with lock:
        result.ok += ok
        result.errors += errors
        result.latencies += latencies
        result.first_error = result.first_error or first_error


def run_load(ip: str, port: int, body: bytes, duration: float, concurrency: int,
             cancel: threading.Event) -> LoadResult:
    """concurrency threads requesting for duration seconds; all joined before returning,
    also when interrupted (cancel is set by whoever cleans up)."""
    lock = threading.Lock()
    start = time.monotonic()
    result = LoadResult(duration)
    threads = [threading.Thread(target=_worker, daemon=True,
                                args=(ip, port, body, start + duration, result, lock, cancel))
               for _ in range(concurrency)]
    for thread in threads:
        thread.start()
    try:
        for thread in threads:
            thread.join()
    finally:
        cancel_and_join = any(t.is_alive() for t in threads)
        if cancel_and_join:
            cancel.set()
            for thread in threads:
                thread.join(REQUEST_TIMEOUT + 1)
    result.duration = time.monotonic() - start
    return result
