"""kill_stale: kills only a QEMU whose arguments mention the state dir, fast, without asyncio."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from bulkhead.vmm.base import PID_FILE, kill_stale, pid_gone

SHIM = str(Path(__file__).resolve().parents[2] / "shim")


@pytest.fixture
def procs() -> Iterator[list[subprocess.Popen[bytes]]]:
    """Processes a test starts; all killed and reaped afterwards."""
    started: list[subprocess.Popen[bytes]] = []
    yield started
    for p in started:
        if p.poll() is None:
            p.kill()
        p.wait()


def fake(procs: list[subprocess.Popen[bytes]], argv0: str, *args: str) -> subprocess.Popen[bytes]:
    """A sleeping python process that shows `argv0 args...` in /proc/<pid>/cmdline."""
    p = subprocess.Popen([argv0, "-c", "import time; time.sleep(60)", *args],
                         executable=sys.executable)
    procs.append(p)
    deadline = time.monotonic() + 5
    while b"time.sleep" not in Path(f"/proc/{p.pid}/cmdline").read_bytes():
        assert time.monotonic() < deadline
        time.sleep(0.01)
    return p


def test_does_not_kill_an_unrelated_sleep(tmp_path: Path,
                                          procs: list[subprocess.Popen[bytes]]) -> None:
    sleeper = subprocess.Popen(["sleep", "60"])
    procs.append(sleeper)
    (tmp_path / PID_FILE).write_text(f"{sleeper.pid}\n")
    assert kill_stale(tmp_path) is False
    assert sleeper.poll() is None and not pid_gone(sleeper.pid)


def test_does_not_kill_non_qemu_mentioning_state_dir(
        tmp_path: Path, procs: list[subprocess.Popen[bytes]]) -> None:
    p = fake(procs, "python3", str(tmp_path / "console.log"))
    (tmp_path / PID_FILE).write_text(f"{p.pid}\n")
    assert kill_stale(tmp_path) is False
    assert p.poll() is None


def test_does_not_kill_qemu_of_another_state_dir(
        tmp_path: Path, procs: list[subprocess.Popen[bytes]]) -> None:
    other = tmp_path / "other"
    mine = tmp_path / "mine"
    mine.mkdir()
    p = fake(procs, "qemu-system-x86_64", f"file,id=console,path={other}/console.log")
    (mine / PID_FILE).write_text(f"{p.pid}\n")
    assert kill_stale(mine) is False
    assert p.poll() is None


def test_kills_our_qemu_and_removes_the_record(
        tmp_path: Path, procs: list[subprocess.Popen[bytes]]) -> None:
    p = fake(procs, "/usr/bin/qemu-system-x86_64", "-chardev",
             f"file,id=console,path={tmp_path}/console.log")
    (tmp_path / PID_FILE).write_text(f"{p.pid}\n")
    (tmp_path / "ctl.sock").write_text("")
    (tmp_path / "console.log").write_text("kept")
    t0 = time.monotonic()
    assert kill_stale(tmp_path) is True
    assert time.monotonic() - t0 < 1.0
    assert pid_gone(p.pid)
    assert p.wait() == -9
    assert not (tmp_path / PID_FILE).exists() and not (tmp_path / "ctl.sock").exists()
    assert (tmp_path / "console.log").exists()
    assert kill_stale(str(tmp_path)) is False  # idempotent; delete passes a str


def test_escaped_commas_still_match(tmp_path: Path,
                                    procs: list[subprocess.Popen[bytes]]) -> None:
    state = tmp_path / "a,b"
    state.mkdir()
    p = fake(procs, "qemu-system-x86_64", f"file,id=console,path={tmp_path}/a,,b/console.log")
    (state / PID_FILE).write_text(f"{p.pid}\n")
    assert kill_stale(state) is True
    assert p.wait() == -9


@pytest.mark.parametrize("content", [None, "", "garbage\n", "1\n", "999999999\n"])
def test_missing_or_bogus_records(tmp_path: Path, content: str | None) -> None:
    if content is not None:
        (tmp_path / PID_FILE).write_text(content)
    assert kill_stale(tmp_path) is False


def test_import_does_not_pull_asyncio() -> None:
    code = ("import sys; from bulkhead.vmm import kill_stale, VMConfig, VMError; "
            "assert 'asyncio' not in sys.modules, 'asyncio imported'")
    env = dict(os.environ, PYTHONPATH=SHIM)
    subprocess.run([sys.executable, "-c", code], check=True, env=env)
