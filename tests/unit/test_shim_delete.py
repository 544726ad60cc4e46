"""`delete` against processes and sockets that vanish between its look and its action (it runs
concurrently with the daemon's own exit and with other `delete`s of the same sandbox)."""

from __future__ import annotations

import os
import signal
from pathlib import Path

import pytest
from bulkhead.shim import delete


def test_stop_daemon_tolerates_a_daemon_that_exits_before_the_kill(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """Still our daemon at the check, gone at the SIGKILL: that is success, not an error."""
    killed: list[tuple[int, int]] = []

    def gone(pid: int, signum: int) -> None:
        killed.append((pid, signum))
        raise ProcessLookupError(pid)

    monkeypatch.setattr(delete, "DAEMON_EXIT_GRACE", 0.0)
    monkeypatch.setattr(delete, "_is_our_daemon", lambda pid, sandbox_id: True)
    monkeypatch.setattr(os, "kill", gone)
    delete._stop_daemon(4242, "sb")
    assert killed == [(4242, signal.SIGKILL)]


def test_stop_daemon_leaves_a_process_that_is_not_ours(monkeypatch: pytest.MonkeyPatch) -> None:
    def never(pid: int, signum: int) -> None:
        raise AssertionError("signalled a process that is not the sandbox's daemon")

    monkeypatch.setattr(delete, "DAEMON_EXIT_GRACE", 0.0)
    monkeypatch.setattr(os, "kill", never)
    delete._stop_daemon(os.getpid(), "no-such-sandbox")


def test_stale_socket_removed_by_someone_else_meanwhile(tmp_path: Path,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    """Another `delete` unlinks the socket between our probe and our unlink."""
    sock = tmp_path / "shim.sock"
    sock.touch()

    def probe_then_lose(path: str) -> bool:
        os.unlink(path)
        return False

    monkeypatch.setattr(delete, "shim_listening", probe_then_lose)
    delete._remove_stale_socket(str(sock))
    assert not sock.exists()


def test_stale_socket_is_removed(tmp_path: Path) -> None:
    sock = tmp_path / "shim.sock"
    sock.touch()  # nobody listens on it
    delete._remove_stale_socket(str(sock))
    assert not sock.exists()
