"""Fuzz the shim's Task service on a live shim (real containerd, real VM, a running container).

Every hostile request gets an exact error, the daemon never stops serving, the real container
is untouched, and nothing leaks. `BULKHEAD_FUZZ_EXAMPLES` raises the number of cases for a
longer campaign (`pytest tests/fuzz -k task`).
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from bulkhead_wire.proto import task_pb2
from bulkhead_wire.ttrpc import Code
from ctrtools import detached, exec_, task_row
from harness.containerd import PrivateContainerd
from hostile import Call, RawTtrpc, acceptable, task_calls
from hypothesis import HealthCheck, given, settings
from task_codes import expected_codes

pytestmark = [pytest.mark.containerd, pytest.mark.vm]
EXAMPLES = int(os.environ.get("BULKHEAD_FUZZ_EXAMPLES", "300"))
SERVICE = "containerd.task.v2.Task"


def shim_socket(ctd: PrivateContainerd, cid: str) -> str:
    """The address containerd dials for this task (written by our `start`)."""
    bundle = ctd.state / "io.containerd.runtime.v2.task" / ctd.namespace / cid
    return (bundle / "address").read_text().removeprefix("unix://")


def test_task_service_survives_hostile_requests(containerd: PrivateContainerd, demo_image: str,
                                                no_leaks: None, tmp_path: Path) -> None:
    if containerd.version != "1.7":
        pytest.skip("fuzzed once, against containerd 1.7")
    with detached(containerd, demo_image, "sleep", "3600", prefix="fuzz") as cid:
        client = RawTtrpc.unix(shim_socket(containerd, cid), SERVICE)
        bad: list[str] = []

        @settings(max_examples=EXAMPLES, deadline=None, database=None,
                  suppress_health_check=list(HealthCheck))
        @given(task_calls(cid, str(tmp_path)))
        def one(call: Call) -> None:
            code, message = client.call(call)
            if not acceptable(code, message):
                bad.append(f"{call.method} {call.request!r:.300}: {Code(code).name} {message}")

        try:
            for method, request, want in expected_codes(cid):
                code, message = client.call(Call(method, request))  # type: ignore[arg-type]
                assert (method, Code(code)) == (method, want), message
            one()
            code, message = client.oversized()
            assert code == Code.RESOURCE_EXHAUSTED and "exceed" in message
            code, _ = client.call(Call("State", task_pb2.StateRequest(id=cid)))
            assert code == 0  # the same connection still serves
        finally:
            client.close()
        assert not bad, "\n".join(bad[:20])
        assert task_row(containerd, cid)[2] == "RUNNING"  # type: ignore[index]
        res = exec_(containerd, cid, "echo", "still-fine")
        assert (res.returncode, res.stdout) == (0, "still-fine\n"), res.stderr
