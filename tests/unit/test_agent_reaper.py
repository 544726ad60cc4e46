"""Agent reaper: exit-status encoding and routing of real child exits to their waiters."""

from __future__ import annotations

import asyncio
import os
import signal
import time

import pytest
from bulkhead_agent.reaper import ExitInfo, Reaper, exit_status
from bulkhead_agent.spawn import spawn
from hypothesis import given
from hypothesis import strategies as st

SH = "/bin/sh"


def sh(script: str) -> int:
    """Start `sh -c script` with /dev/null stdio."""
    return spawn(SH, [SH, "-c", script])


@given(st.integers(min_value=0, max_value=255))
def test_exit_code_is_passed_through(code: int) -> None:
    assert exit_status(code << 8) == code


@given(st.integers(min_value=1, max_value=64))
def test_signal_death_is_128_plus_signal(sig: int) -> None:
    assert exit_status(sig) == 128 + sig
    assert exit_status(sig | 0x80) == 128 + sig  # core dumped


def test_stopped_status_is_refused() -> None:
    with pytest.raises(ValueError):
        exit_status(0x137f)  # WIFSTOPPED(SIGSTOP)


def test_routes_exit_codes_and_signals() -> None:
    async def run() -> tuple[ExitInfo, ExitInfo, ExitInfo]:
        reaper = Reaper()
        reaper.install(asyncio.get_running_loop())
        try:
            p3 = sh("exit 3")
            p0 = sh("exit 0")
            sleeper = sh("exec sleep 30")
            f3, f0, fk = reaper.watch(p3), reaper.watch(p0), reaper.watch(sleeper)
            os.kill(sleeper, signal.SIGKILL)
            return await asyncio.wait_for(asyncio.gather(f3, f0, fk), 10)
        finally:
            reaper.uninstall()

    before = time.time_ns()
    i3, i0, ik = asyncio.run(run())
    assert (i3.status, i0.status, ik.status) == (3, 0, 137)
    assert before <= i3.exited_at_ns <= time.time_ns()


def test_exit_before_watch_is_kept_for_the_late_watcher() -> None:
    async def run() -> ExitInfo:
        reaper = Reaper()
        reaper.install(asyncio.get_running_loop())
        try:
            pid = sh("exit 5")
            time.sleep(0.3)  # block the loop: the exit is certainly in before anyone watches
            await asyncio.sleep(0.05)  # let the SIGCHLD handler run
            reaper.reap()
            fut = reaper.watch(pid)
            assert fut.done()
            return await fut
        finally:
            reaper.uninstall()

    assert asyncio.run(run()).status == 5


def test_children_that_exited_before_install_are_collected() -> None:
    pid = sh("exit 9")
    time.sleep(0.3)

    async def run() -> ExitInfo:
        reaper = Reaper()
        reaper.install(asyncio.get_running_loop())
        try:
            return await asyncio.wait_for(reaper.watch(pid), 5)
        finally:
            reaper.uninstall()

    assert asyncio.run(run()).status == 9


def test_watchers_share_one_future_and_forget_cancels() -> None:
    async def run() -> None:
        reaper = Reaper()
        reaper.install(asyncio.get_running_loop())
        try:
            pid = sh("exec sleep 30")
            a, b = reaper.watch(pid), reaper.watch(pid)
            assert a is b
            reaper.forget(pid)
            assert a.cancelled()
            os.kill(pid, signal.SIGKILL)
            for _ in range(200):  # the exit now lands among the unclaimed ones
                await asyncio.sleep(0.01)
                if pid in reaper._unclaimed:
                    break
            assert reaper._unclaimed[pid].status == 137
        finally:
            reaper.uninstall()

    asyncio.run(run())


def test_unclaimed_statuses_are_bounded() -> None:
    reaper = Reaper(max_unclaimed=2)
    for pid in (101, 102, 103):
        reaper._deliver(ExitInfo(pid, 0, 0))
    assert list(reaper._unclaimed) == [102, 103]


def test_spawned_program_gets_default_sigpipe_and_given_stdio() -> None:
    r, w = os.pipe()
    try:
        pid = spawn(SH, [SH, "-c", "grep SigIgn /proc/self/status"], stdout=w)
        os.close(w)
        w = -1
        _, status = os.waitpid(pid, 0)
        out = os.read(r, 4096).decode()
    finally:
        os.close(r)
        if w >= 0:
            os.close(w)
    assert os.waitstatus_to_exitcode(status) == 0
    ignored = int(out.split()[1], 16)
    assert not ignored & (1 << (signal.SIGPIPE - 1))
