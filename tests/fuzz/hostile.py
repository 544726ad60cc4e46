"""Hostile and malformed requests for Bulkhead's two ttrpc services, as hypothesis strategies.

Used by tests/fuzz/test_*.py (a bounded number of cases in the suite) and by `python -m`
runs of the same modules for longer campaigns. Every request must get a reply with a status
from ALLOWED (or success), within REPLY_TIMEOUT, and the daemon must keep serving.
"""

from __future__ import annotations

import json
import socket
from dataclasses import dataclass

from bulkhead_wire.proto import agent_pb2, mount_pb2, task_pb2, ttrpc_pb2
from bulkhead_wire.ttrpc import Code, frame
from google.protobuf import any_pb2, empty_pb2
from google.protobuf.message import Message
from hypothesis import strategies as st

REPLY_TIMEOUT = 20.0
# Codes a well-behaved service may answer hostile input with. UNKNOWN is allowed only for
# errors crun itself reported (see acceptable()).
ALLOWED = {Code.OK, Code.INVALID_ARGUMENT, Code.NOT_FOUND, Code.ALREADY_EXISTS,
           Code.FAILED_PRECONDITION, Code.UNIMPLEMENTED, Code.UNAVAILABLE,
           Code.RESOURCE_EXHAUSTED, Code.OUT_OF_RANGE}

TRAVERSAL = ["..", "../..", "../../etc/passwd", "/etc/passwd", "a/../../b", ".", "a\0b",
             "x\ny", "\u202e" + "evil", "%2e%2e", "con*", ""]


def ids(real: list[str]) -> st.SearchStrategy[str]:
    """Container or exec ids: the real ones, traversal attempts, huge and odd strings."""
    return st.one_of(st.sampled_from(real + TRAVERSAL), st.text(max_size=40),
                     st.text(min_size=300, max_size=5000), st.just("z" * 70000))


def paths(scratch: str) -> st.SearchStrategy[str]:
    """Bundle or stdio paths that must never be accepted as usable."""
    return st.one_of(st.sampled_from(["", "/", "relative/bundle", "/nonexistent/bundle",
                                      "/proc/self", "../../../", f"{scratch}/no-such"]),
                     st.text(max_size=64))


def uris(scratch: str) -> st.SearchStrategy[str]:
    """stdio URIs with every scheme, none of them pointing anywhere writable that matters."""
    return st.one_of(st.just(""), paths(scratch), st.sampled_from([
        "binary:///nonexistent/logger?a=b", "binary-v2://relative", "npipe://x",
        f"file://{scratch}/logs/../out.log", "fifo:///nonexistent/fifo",
        "http://example.invalid/", "file://", "binary://"]))


def json_blobs() -> st.SearchStrategy[bytes]:
    """OCI-ish JSON with wrong types, plus plain garbage."""
    leaf = st.one_of(st.none(), st.booleans(), st.integers(), st.text(max_size=20),
                     st.floats(allow_nan=False))
    value = st.recursive(leaf, lambda c: st.lists(c, max_size=4) | st.dictionaries(
        st.text(max_size=8), c, max_size=4), max_leaves=12)
    wrong = st.fixed_dictionaries({}, optional={
        "args": value, "cwd": value, "env": value, "terminal": value, "user": value,
        "memory": value, "cpu": value})
    return st.one_of(wrong.map(lambda d: json.dumps(d).encode()), st.binary(max_size=200),
                     st.just(b"{" * 5000))


def anys() -> st.SearchStrategy[any_pb2.Any]:
    return st.builds(any_pb2.Any, type_url=st.one_of(st.text(max_size=40), st.sampled_from([
        "types.containerd.io/opencontainers/runtime-spec/1/Process",
        "types.containerd.io/opencontainers/runtime-spec/1/LinuxResources",
        "runtimeoptions.v1.Options"])), value=json_blobs())


def mounts(scratch: str) -> st.SearchStrategy[list[mount_pb2.Mount]]:
    return st.lists(st.builds(mount_pb2.Mount, type=st.sampled_from(["overlay", "bind", "x"]),
                              source=paths(scratch), target=paths(scratch),
                              options=st.lists(st.text(max_size=20), max_size=4)), max_size=3)


@dataclass(frozen=True)
class Call:
    """One request: service method name, message (or raw bytes), and a label for reports."""

    method: str
    request: Message | bytes

    def payload(self) -> bytes:
        return self.request if isinstance(self.request, bytes) else \
            self.request.SerializeToString()


# Task RPCs that could stop or change the real container: only ever sent with fake ids.
TASK_DESTRUCTIVE = {"Kill", "Delete", "Pause", "Resume", "Update", "Shutdown", "CloseIO",
                    "ResizePty", "Checkpoint", "Create"}


def task_calls(real_id: str, scratch: str) -> st.SearchStrategy[Call]:
    """Hostile containerd.task.v2.Task requests; the real container only gets harmless ones."""
    any_id = ids([real_id])
    fake_id = ids([]).filter(lambda s: s != real_id)
    u = uris(scratch)
    strategies = [
        st.builds(task_pb2.CreateTaskRequest, id=fake_id, bundle=paths(scratch),
                  rootfs=mounts(scratch), terminal=st.booleans(), stdin=u, stdout=u, stderr=u,
                  checkpoint=st.text(max_size=20), options=anys()).map(lambda m: Call("Create", m)),
        st.builds(task_pb2.ExecProcessRequest, id=any_id, exec_id=ids([]),
                  terminal=st.booleans(), stdin=u, stdout=u, stderr=u,
                  spec=anys()).map(lambda m: Call("Exec", m)),
        st.builds(task_pb2.StartRequest, id=fake_id, exec_id=ids([])).map(
            lambda m: Call("Start", m)),
        st.builds(task_pb2.StateRequest, id=any_id, exec_id=ids([])).map(
            lambda m: Call("State", m)),
        st.builds(task_pb2.PidsRequest, id=any_id).map(lambda m: Call("Pids", m)),
        st.builds(task_pb2.StatsRequest, id=any_id).map(lambda m: Call("Stats", m)),
        st.builds(task_pb2.ConnectRequest, id=any_id).map(lambda m: Call("Connect", m)),
        st.builds(task_pb2.KillRequest, id=fake_id, exec_id=ids([]),
                  signal=st.integers(0, 2**32 - 1), all=st.booleans()).map(
            lambda m: Call("Kill", m)),
        st.builds(task_pb2.KillRequest, id=st.just(real_id), exec_id=ids([]).filter(bool),
                  signal=st.integers(0, 2**32 - 1)).map(lambda m: Call("Kill", m)),
        st.builds(task_pb2.DeleteRequest, id=fake_id, exec_id=ids([])).map(
            lambda m: Call("Delete", m)),
        st.builds(task_pb2.DeleteRequest, id=st.just(real_id), exec_id=ids([]).filter(bool)).map(
            lambda m: Call("Delete", m)),
        st.builds(task_pb2.ResizePtyRequest, id=any_id, exec_id=ids([]).filter(bool),
                  width=st.integers(0, 2**32 - 1), height=st.integers(0, 2**32 - 1)).map(
            lambda m: Call("ResizePty", m)),
        st.builds(task_pb2.CloseIORequest, id=fake_id, exec_id=ids([]), stdin=st.booleans()).map(
            lambda m: Call("CloseIO", m)),
        st.builds(task_pb2.UpdateTaskRequest, id=fake_id, resources=anys()).map(
            lambda m: Call("Update", m)),
        st.builds(task_pb2.PauseRequest, id=fake_id).map(lambda m: Call("Pause", m)),
        st.builds(task_pb2.ResumeRequest, id=fake_id).map(lambda m: Call("Resume", m)),
        st.builds(task_pb2.CheckpointTaskRequest, id=any_id, path=paths(scratch)).map(
            lambda m: Call("Checkpoint", m)),
        st.builds(task_pb2.WaitRequest, id=fake_id, exec_id=ids([])).map(
            lambda m: Call("Wait", m)),
        # Garbage protobuf, and valid protobuf of the wrong message, for any method name.
        st.builds(Call, st.sampled_from(sorted(TASK_DESTRUCTIVE - {"Shutdown"} | {
            "State", "Exec", "Pids", "Stats", "NoSuchMethod", ""})), st.binary(max_size=300)),
    ]
    return st.one_of(strategies)


AGENT_SAFE_IDS = ["ghost"]


def agent_calls(scratch: str) -> st.SearchStrategy[Call]:
    """Hostile bulkhead.agent.v1.Agent requests (the VM holds no container of value)."""
    cid = ids(AGENT_SAFE_IDS)
    streams = st.builds(agent_pb2.StdioStreams, stdin=st.integers(0, 2**32 - 1),
                        stdout=st.integers(0, 2**32 - 1), stderr=st.integers(0, 2**32 - 1))
    return st.one_of([
        st.builds(agent_pb2.CreateContainerRequest, container_id=cid, bundle=paths(scratch),
                  terminal=st.booleans(), stdio=streams).map(lambda m: Call("CreateContainer", m)),
        st.builds(agent_pb2.ExecProcessRequest, container_id=cid, exec_id=cid,
                  terminal=st.booleans(), stdio=streams, process=json_blobs()).map(
            lambda m: Call("ExecProcess", m)),
        st.builds(agent_pb2.StartProcessRequest, container_id=cid, exec_id=cid).map(
            lambda m: Call("StartProcess", m)),
        st.builds(agent_pb2.WaitProcessRequest, container_id=cid, exec_id=cid).map(
            lambda m: Call("WaitProcess", m)),
        st.builds(agent_pb2.SignalProcessRequest, container_id=cid, exec_id=cid,
                  signal=st.integers(0, 2**32 - 1), all=st.booleans()).map(
            lambda m: Call("SignalProcess", m)),
        st.builds(agent_pb2.ResizePtyRequest, container_id=cid, exec_id=cid,
                  width=st.integers(0, 2**32 - 1), height=st.integers(0, 2**32 - 1)).map(
            lambda m: Call("ResizePty", m)),
        st.builds(agent_pb2.DeleteProcessRequest, container_id=cid, exec_id=cid).map(
            lambda m: Call("DeleteProcess", m)),
        st.builds(agent_pb2.ListPidsRequest, container_id=cid).map(lambda m: Call("ListPids", m)),
        st.builds(agent_pb2.ContainerRequest, container_id=cid).map(
            lambda m: Call("ContainerStats", m)),
        st.builds(agent_pb2.ContainerRequest, container_id=cid).map(
            lambda m: Call("PauseContainer", m)),
        st.builds(agent_pb2.UpdateContainerRequest, container_id=cid,
                  resources=json_blobs()).map(lambda m: Call("UpdateContainer", m)),
        st.builds(agent_pb2.RemoveContainerRequest, container_id=cid).map(
            lambda m: Call("RemoveContainer", m)),
        st.builds(Call, st.sampled_from(["CreateContainer", "ExecProcess", "SignalProcess",
                                         "UpdateContainer", "Nope"]), st.binary(max_size=300)),
        st.just(Call("Check", empty_pb2.Empty())),
    ])


def acceptable(code: int, message: str) -> bool:
    """A reply status a hostile request may get (UNKNOWN only when crun said no)."""
    if code in ALLOWED:
        return True
    return code == Code.UNKNOWN and message.startswith("crun ")


class RawTtrpc:
    """A blocking ttrpc client that sends any bytes as a payload, one call at a time."""

    def __init__(self, sock: socket.socket, service: str) -> None:
        sock.settimeout(REPLY_TIMEOUT)
        self.sock = sock
        self.service = service
        self.next_id = 1

    @classmethod
    def unix(cls, path: str, service: str) -> RawTtrpc:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.connect(path)
        return cls(sock, service)

    def call(self, call: Call) -> tuple[int, str]:
        """(status code, message) of the reply; a timeout or a closed link raises."""
        req = ttrpc_pb2.Request(service=self.service, method=call.method,
                                payload=call.payload())
        return self.send_frame(frame.encode(self.next_id, frame.TYPE_REQUEST,
                                            req.SerializeToString()))

    def send_frame(self, data: bytes) -> tuple[int, str]:
        """Send one raw frame (or a lie about its length) and read the reply to it."""
        stream = self.next_id
        self.next_id += 2
        self.sock.sendall(data)
        while True:
            length, sid, ftype, _ = frame.HEADER.unpack(self._exactly(frame.HEADER_SIZE))
            body = self._exactly(length)
            if sid == stream and ftype == frame.TYPE_RESPONSE:
                break
        resp = ttrpc_pb2.Response.FromString(body)
        if resp.HasField("status"):
            return resp.status.code, resp.status.message
        return 0, ""

    def _exactly(self, n: int) -> bytes:
        data = b""
        while len(data) < n:
            chunk = self.sock.recv(n - len(data))
            if not chunk:
                raise ConnectionError("the service closed the connection")
            data += chunk
        return data

    def oversized(self) -> tuple[int, str]:
        """A frame one byte over the 4 MiB cap: must be refused with RESOURCE_EXHAUSTED."""
        size = frame.MAX_MESSAGE + 1
        return self.send_frame(frame.HEADER.pack(size, self.next_id, frame.TYPE_REQUEST, 0)
                               + b"\0" * size)

    def close(self) -> None:
        self.sock.close()
