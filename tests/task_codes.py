"""The Task service's exact error codes for mistaken requests, as one table: the unit tests run
it against TaskService over fakes, the fuzz test against a live shim."""

from __future__ import annotations

import json

from bulkhead_wire.proto import task_pb2
from bulkhead_wire.ttrpc import Code
from google.protobuf import any_pb2


def expected_codes(cid: str) -> list[tuple[str, object, Code]]:
    """(method, request, code) in order: the exact codes containerd's runc shim gives
    (`cmd/containerd-shim-runc-v2/task/service.go`) for requests a client can send by mistake,
    cid being a running container without a terminal."""
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
