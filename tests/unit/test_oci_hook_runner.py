"""Host-side OCI hooks: parsed strictly, run with the state on stdin, failures named."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest
from bulkhead.sandbox.oci_hooks import ContainerHooks, HookError


def spec(**hooks: object) -> dict[str, object]:
    return {"ociVersion": "1.1.0", "annotations": {"a": "b"}, "hooks": hooks}


def test_hooks_run_in_order_with_the_state(tmp_path: Path) -> None:
    out = tmp_path / "out"
    record = {"path": "/bin/sh", "args": ["sh", "-c", f'cat >> {out}; echo " $0 $X" >> {out}'],
              "env": ["X=1"]}
    hooks = ContainerHooks.from_spec("c1", str(tmp_path), spec(
        prestart=[record], createRuntime=[dict(record, env=["X=2"])],
        poststop=[dict(record, env=["X=3"])], startContainer=[record]))
    asyncio.run(hooks.created(4242))
    asyncio.run(hooks.stopped())
    lines = out.read_text().splitlines()
    states = [json.loads(ln.rsplit(" sh ", 1)[0]) for ln in lines]
    assert [ln.rsplit(" ", 1)[1] for ln in lines] == ["1", "2", "3"]
    assert states[0] == {"ociVersion": "1.1.0", "id": "c1", "status": "creating", "pid": 4242,
                         "bundle": str(tmp_path), "annotations": {"a": "b"}}
    assert states[2]["status"] == "stopped" and states[2]["pid"] == 0


@pytest.mark.parametrize("entry,why", [
    ({"args": ["x"]}, r"hooks\.createRuntime\[0\]: no path"),
    ({"path": "bin/true"}, "is not absolute"),
    ({"path": "/bin/true", "timeout": 0}, "timeout must be a positive"),
    ({"path": "/bin/true", "args": [1]}, "lists of strings"),
])
def test_malformed_hooks_are_refused(entry: dict[str, object], why: str) -> None:
    with pytest.raises(HookError, match=why):
        ContainerHooks.from_spec("c1", "/b", spec(createRuntime=[entry]))


def test_failures_and_timeouts_name_the_hook(tmp_path: Path) -> None:
    failing = ContainerHooks.from_spec("c1", str(tmp_path), spec(createRuntime=[
        {"path": "/bin/sh", "args": ["sh", "-c", "echo no network >&2; exit 3"]}]))
    with pytest.raises(HookError, match="createRuntime hook /bin/sh: exited with status 3: "
                                        "no network"):
        asyncio.run(failing.created(1))
    slow = ContainerHooks.from_spec("c1", str(tmp_path), spec(prestart=[
        {"path": "/bin/sleep", "args": ["sleep", "10"], "timeout": 1}]))
    with pytest.raises(HookError, match="prestart hook /bin/sleep: timed out after 1 s"):
        asyncio.run(slow.created(1))
    missing = ContainerHooks.from_spec("c1", str(tmp_path), spec(prestart=[
        {"path": "/nonexistent/hook"}]))
    with pytest.raises(HookError, match="cannot start"):
        asyncio.run(missing.created(1))
    # poststart and poststop failures are only logged, as runc does
    asyncio.run(ContainerHooks.from_spec("c1", str(tmp_path), spec(poststop=[
        {"path": "/bin/false"}])).stopped())
