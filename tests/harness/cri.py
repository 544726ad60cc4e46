"""The few CRI calls a private containerd needs to clean up after tests: list, stop and remove
every pod sandbox, so containerd itself runs CNI DEL (veths, leases, portmap rules) and removes
netns mounts, before the instance is torn down. The full CRI client (tests/cri) needs its
generated runtime_v1_pb2; these three messages are declared here in a private descriptor pool, so
the harness (and the benchmarks) need only grpcio and protobuf.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from pathlib import Path
from typing import Any

from google.protobuf import descriptor_pb2, descriptor_pool, message_factory

RUNTIME_SERVICE = "/runtime.v1.RuntimeService/"
CALL_TIMEOUT = 180.0  # stopping a VM-backed pod under TCG can take a while


@functools.cache
def _messages() -> dict[str, Any]:  # classes made at run time: no static fields
    """PodSandboxId{1: id}, Empty{}, PodSandbox{1: id} and ListPodSandboxResponse{1: items}:
    the field numbers of runtime.v1 that these calls use (message names never travel)."""
    proto = descriptor_pb2.FileDescriptorProto(name="bulkhead_harness_cri.proto",
                                               package="bulkhead.harness.cri", syntax="proto3")
    string = descriptor_pb2.FieldDescriptorProto.TYPE_STRING
    optional = descriptor_pb2.FieldDescriptorProto.LABEL_OPTIONAL
    repeated = descriptor_pb2.FieldDescriptorProto.LABEL_REPEATED
    proto.message_type.add(name="Empty")
    proto.message_type.add(name="PodSandboxId").field.add(
        name="pod_sandbox_id", number=1, type=string, label=optional)
    proto.message_type.add(name="PodSandbox").field.add(
        name="id", number=1, type=string, label=optional)
    proto.message_type.add(name="ListPodSandboxResponse").field.add(
        name="items", number=1, label=repeated,
        type=descriptor_pb2.FieldDescriptorProto.TYPE_MESSAGE,
        type_name=".bulkhead.harness.cri.PodSandbox")
    pool = descriptor_pool.DescriptorPool()
    pool.Add(proto)
    names = ("Empty", "PodSandboxId", "PodSandbox", "ListPodSandboxResponse")
    return {n: message_factory.GetMessageClass(pool.FindMessageTypeByName(
        f"bulkhead.harness.cri.{n}")) for n in names}


def _unary(channel: Any, method: str, response: str) -> Callable[..., Any]:
    return channel.unary_unary(RUNTIME_SERVICE + method,
                               request_serializer=lambda m: m.SerializeToString(),
                               response_deserializer=_messages()[response].FromString)


def remove_all_pods(address: Path, timeout: float = CALL_TIMEOUT) -> list[str]:
    """Stop and remove every pod sandbox (and so its containers) through CRI; returns problems."""
    try:
        import grpc
    except ImportError:
        return ["grpcio is not installed: pods were not removed through CRI"]
    msgs = _messages()
    problems: list[str] = []
    with grpc.insecure_channel(f"unix://{address}") as channel:
        try:
            listed = _unary(channel, "ListPodSandbox", "ListPodSandboxResponse")(
                msgs["Empty"](), timeout=30)
        except grpc.RpcError as exc:
            return [f"ListPodSandbox: {exc.code().name} {exc.details()}"]
        for item in listed.items:
            req = msgs["PodSandboxId"](pod_sandbox_id=item.id)
            for method in ("StopPodSandbox", "RemovePodSandbox"):
                try:
                    _unary(channel, method, "Empty")(req, timeout=timeout)
                except grpc.RpcError as exc:
                    problems.append(f"{method} {item.id}: {exc.code().name} {exc.details()}")
    return problems
