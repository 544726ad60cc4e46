"""Round trips and byte-exact encodings that containerd relies on."""

from __future__ import annotations

from bulkhead.shim.events import EventPublisher
from bulkhead.shim.task import GO_ZERO_SECONDS
from bulkhead_wire.proto import (
    agent_pb2,
    events_pb2,
    events_service_pb2,
    runtimeoptions_pb2,
    task_pb2,
    ttrpc_pb2,
)
from google.protobuf import any_pb2


def test_start_response_bytes() -> None:
    """StartResponse{pid=19380} inside a Response is 12 04 08 b4 97 01 (observed from runc)."""
    inner = task_pb2.StartResponse(pid=19380).SerializeToString()
    assert ttrpc_pb2.Response(payload=inner).SerializeToString() == bytes.fromhex("120408b49701")


def test_go_zero_time_bytes() -> None:
    """exited_at of a running task is Go's zero time, 52 0b 08 80 92 b8 c3 98 fe ff ff ff 01."""
    st = task_pb2.StateResponse()
    st.exited_at.seconds = GO_ZERO_SECONDS
    assert st.SerializeToString() == bytes.fromhex("520b088092b8c398feffffff01")


def test_error_status_bytes() -> None:
    resp = ttrpc_pb2.Response()
    resp.status.code = 5
    resp.status.message = "process already finished: not found"
    assert resp.SerializeToString() == bytes.fromhex("0a27080512") + b"\x23" + \
        b"process already finished: not found"


def test_runtime_options_any_from_ctr() -> None:
    raw = bytes.fromhex("0a19") + b"runtimeoptions.v1.Options" + bytes.fromhex("1211120f") \
        + b"/etc/pylog.toml"
    msg = any_pb2.Any()
    msg.ParseFromString(raw)
    assert msg.type_url == "runtimeoptions.v1.Options"
    opts = runtimeoptions_pb2.Options.FromString(msg.value)
    assert opts.config_path == "/etc/pylog.toml"


def test_event_type_urls_are_bare_full_names() -> None:
    assert events_pb2.TaskExit.DESCRIPTOR.full_name == "containerd.events.TaskExit"
    publisher = EventPublisher("/nonexistent", "ns")
    publisher._task = object()  # type: ignore[assignment]  # queue only, no delivery
    publisher.publish("/tasks/exit", events_pb2.TaskExit(container_id="c", exit_status=137))
    req = publisher._queue.get_nowait()
    env = events_service_pb2.ForwardRequest.FromString(req.SerializeToString()).envelope
    assert env.event.type_url == "containerd.events.TaskExit"
    assert env.namespace == "ns" and env.topic == "/tasks/exit" and env.timestamp.seconds > 0
    assert events_pb2.TaskExit.FromString(env.event.value).exit_status == 137


def test_agent_api_round_trip() -> None:
    req = agent_pb2.CreateContainerRequest(container_id="c", bundle="/run/bulkhead/shared/c",
                                           stdio=agent_pb2.StdioStreams(stdout=2, stderr=3))
    again = agent_pb2.CreateContainerRequest.FromString(req.SerializeToString())
    assert again == req and again.stdio.stdin == 0
