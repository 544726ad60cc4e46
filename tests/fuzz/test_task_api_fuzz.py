"""Fuzz the shim's Task service on a live shim (real containerd, real VM, a running container).

Every hostile request gets an exact error, the daemon never stops serving, the real container
is untouched, and nothing leaks. `BULKHEAD_FUZZ_EXAMPLES` raises the number of cases for a
longer campaign (`pytest tests/fuzz -k task`).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from bulkhead.devenv.containerd import PrivateContainerd
from bulkhead_wire.proto import task_pb2
from bulkhead_wire.ttrpc import Code
from ctrtools import detached, exec_, task_row
from google.protobuf import any_pb2
from hostile import Call, RawTtrpc, acceptable, task_calls
from hypothesis import HealthCheck, given, settings

pytestmark = [pytest.mark.containerd, pytest.mark.vm]
EXAMPLES = int(os.environ.get("BULKHEAD_FUZZ_EXAMPLES", "300"))
SERVICE = "containerd.task.v2.Task"


def shim_socket(ctd: PrivateContainerd, cid: str) -> str:
    """The address containerd dials for this task (written by our `start`)."""
    bundle = ctd.state / "io.containerd.runtime.v2.task" / ctd.namespace / cid
    return (bundle / "address").read_text().removeprefix("unix://")


def expected_codes(cid: str) -> list[tuple[str, object, Code]]:
    """Exact codes of spec §3.7 for requests a real client can send by mistake."""
    t = task_pb2
    ghost = "ghost-container"
    spec = any_pb2.Any(type_url="types.containerd.io/opencontainers/runtime-spec/1/Process",
                       value=json.dumps({"args": ["true"], "cwd": "/"}).encode())
    return [
        *[(m, req, Code.NOT_FOUND) for m, req in (
            ("State", t.StateRequest(id=ghost)), ("Wait", t.WaitRequest(id=ghost)),
            ("Kill", t.KillRequest(id=ghost, signal=9)), ("Delete", t.DeleteRequest(id=ghost)),
            ("Pids", t.PidsRequest(id=ghost)), ("Stats", t.StatsRequest(id=ghost)),
            ("Pause", t.PauseRequest(id=ghost)), ("Resume", t.ResumeRequest(id=ghost)),
            ("Start", t.StartRequest(id=ghost)), ("CloseIO", t.CloseIORequest(id=ghost)),
            ("Update", t.UpdateTaskRequest(id=ghost)),
            ("ResizePty", t.ResizePtyRequest(id=ghost, width=80, height=24)),
            ("Exec", t.ExecProcessRequest(id=ghost, exec_id="e", spec=spec)),
            ("State", t.StateRequest(id=cid, exec_id="no-such-exec")),
            ("Kill", t.KillRequest(id=cid, exec_id="no-such-exec", signal=9)),
            ("Wait", t.WaitRequest(id=cid, exec_id="no-such-exec")),
            ("Delete", t.DeleteRequest(id=cid, exec_id="no-such-exec")),
            ("Start", t.StartRequest(id=cid, exec_id="no-such-exec")))],
        ("Exec", t.ExecProcessRequest(id=cid, exec_id="dup", spec=spec), Code.OK),
        ("Exec", t.ExecProcessRequest(id=cid, exec_id="dup", spec=spec), Code.ALREADY_EXISTS),
        ("Kill", t.KillRequest(id=cid, exec_id="dup", signal=9), Code.FAILED_PRECONDITION),
        ("Delete", t.DeleteRequest(id=cid, exec_id="dup"), Code.OK),
        ("Exec", t.ExecProcessRequest(id=cid, exec_id="../x", spec=spec), Code.INVALID_ARGUMENT),
        ("Create", t.CreateTaskRequest(id=cid, bundle="/"), Code.ALREADY_EXISTS),
        ("Create", t.CreateTaskRequest(id="../../x", bundle="/"), Code.INVALID_ARGUMENT),
        ("Resume", t.ResumeRequest(id=cid), Code.FAILED_PRECONDITION),
        ("Delete", t.DeleteRequest(id=cid), Code.FAILED_PRECONDITION),
        ("ResizePty", t.ResizePtyRequest(id=cid, width=80, height=24), Code.FAILED_PRECONDITION),
        ("Checkpoint", t.CheckpointTaskRequest(id=cid), Code.UNIMPLEMENTED),
        ("NoSuchMethod", t.StateRequest(id=cid), Code.UNIMPLEMENTED),
        ("Connect", t.ConnectRequest(id=cid), Code.OK),
        ("Shutdown", t.ShutdownRequest(id=cid), Code.OK),  # tasks remain: the shim stays
    ]


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
