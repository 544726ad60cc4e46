"""crun invocation: global flags, stdio, and crun's error text reaching the exception."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

import pytest
from bulkhead_agent.crun import Crun, CrunResult, error_text
from bulkhead_agent.errors import CrunError, FailedPrecondition
from bulkhead_agent.reaper import Reaper

# Logs its argv, then behaves according to the subcommand (a stand-in for crun in unit tests).
FAKE = r"""#!/bin/sh
log=
for a in "$@"; do case "$a" in --log=*) log=${a#--log=};; esac; done
echo "$*" >> "$ARGV_LOG"
for a in "$@"; do last=$a; done
case "$last" in
ok) echo "to stdout" ;;
logfail) echo 'exec: "foo": executable file not found in $PATH' >> "$log"; exit 1 ;;
stderrfail) echo "only on stderr" >&2; exit 3 ;;
silentfail) exit 4 ;;
slow) sleep 0.5; echo finished > "$ARGV_LOG.slow" ;;
esac
"""


@pytest.fixture
def fake(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    path = tmp_path / "crun"
    path.write_text(FAKE)
    path.chmod(0o755)
    monkeypatch.setenv("ARGV_LOG", str(tmp_path / "argv"))
    return path


def run(crun_path: Path, tmp_path: Path, args: list[str], **kw: object) -> CrunResult:
    async def go() -> CrunResult:
        reaper = Reaper()
        reaper.install(asyncio.get_running_loop())
        try:
            crun = Crun(reaper, str(crun_path), str(tmp_path / "logs"), root="/run/x")
            return await crun.run(args, **kw)  # type: ignore[arg-type]
        finally:
            reaper.uninstall()

    return asyncio.run(go())


def test_success_passes_global_flags_and_cleans_up(fake: Path, tmp_path: Path) -> None:
    r, w = os.pipe()
    try:
        result = run(fake, tmp_path, ["state", "ok"], stdout=w)
        os.close(w)
        w = -1
        assert os.read(r, 100) == b"to stdout\n"
    finally:
        os.close(r)
        if w >= 0:
            os.close(w)
    assert result == CrunResult(0, "")
    argv = (tmp_path / "argv").read_text().split()
    assert argv[0].startswith("--log=") and argv[1:] == ["--log-format=text", "--root=/run/x",
                                                         "state", "ok"]
    assert os.listdir(tmp_path / "logs") == []


def test_log_text_becomes_the_error_message(fake: Path, tmp_path: Path) -> None:
    with pytest.raises(CrunError) as err:
        run(fake, tmp_path, ["create", "logfail"])
    assert err.value.code == 2  # UNKNOWN
    assert str(err.value) == ('crun create failed: exec: "foo": executable file not found '
                              'in $PATH')
    assert os.listdir(tmp_path / "logs") == []


def test_stderr_is_used_when_the_log_is_empty(fake: Path, tmp_path: Path) -> None:
    with pytest.raises(CrunError, match="crun kill failed: only on stderr") as err:
        run(fake, tmp_path, ["kill", "stderrfail"])
    assert err.value.status == 3


def test_silent_failure_still_says_something(fake: Path, tmp_path: Path) -> None:
    with pytest.raises(CrunError, match="exit status 4 and no error output"):
        run(fake, tmp_path, ["delete", "silentfail"])


def test_unchecked_failure_returns_the_status(fake: Path, tmp_path: Path) -> None:
    assert run(fake, tmp_path, ["delete", "silentfail"], check=False).status == 4


def test_missing_binary_is_a_failed_precondition(tmp_path: Path) -> None:
    with pytest.raises(FailedPrecondition, match="OCI runtime .*/nope not found"):
        run(tmp_path / "nope", tmp_path, ["start", "x"])
    assert os.listdir(tmp_path / "logs") == []


def test_error_text_joins_lines() -> None:
    assert error_text("warn\n\nerr: boom\n", "ignored") == "warn; err: boom"
    assert error_text("", " from stderr \n") == "from stderr"
    assert error_text("", "") == ""


def test_cancelled_caller_still_waits_for_crun(fake: Path, tmp_path: Path) -> None:
    async def go() -> None:
        reaper = Reaper()
        reaper.install(asyncio.get_running_loop())
        try:
            crun = Crun(reaper, str(fake), str(tmp_path / "logs"))
            task = asyncio.ensure_future(crun.run(["create", "slow"]))
            await asyncio.sleep(0.1)
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
            assert (tmp_path / "argv.slow").read_text() == "finished\n"
        finally:
            reaper.uninstall()

    asyncio.run(go())
    assert os.listdir(tmp_path / "logs") == []
