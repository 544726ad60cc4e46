"""A small typed CRI (runtime.v1) client over grpcio for tests: one method per RPC, plus helpers
that run a pod, create and start a container in it, and stop and remove a pod.

Methods are called by their gRPC path, so only the message classes are generated
(runtime_v1_pb2 from runtime_v1.proto). Errors surface as CriError with the gRPC code.
"""

from __future__ import annotations

import secrets
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

import grpc
from google.protobuf.message import Message

from cri import runtime_v1_pb2 as pb

RUNTIME = "runtime.v1.RuntimeService"
IMAGES = "runtime.v1.ImageService"
NOT_READY = "server is not initialized yet"
DEFAULT_NAMESPACE = "bulkhead-test"
CALL_TIMEOUT = 120.0  # a VM-backed sandbox under TCG takes a while to boot or stop
MAX_MESSAGE = 64 << 20  # ExecSync may return 16 MiB of stdout plus 16 MiB of stderr

R = TypeVar("R", bound=Message)
# What kubelet sends for an ordinary pod: pod network and IPC, a PID namespace per container
# (the proto3 default, POD, would share the pause process's PID namespace).
KUBELET_NAMESPACES = pb.NamespaceOption(network=pb.POD, pid=pb.CONTAINER, ipc=pb.POD)


class CriError(RuntimeError):
    """A CRI call failed; `code` is the gRPC status code, `details` containerd's message."""

    def __init__(self, method: str, code: grpc.StatusCode, details: str) -> None:
        super().__init__(f"{method}: {code.name}: {details}")
        self.method = method
        self.code = code
        self.details = details


@dataclass
class Pod:
    """A pod sandbox as run: its id, the config (CreateContainer needs it again) and handler."""

    id: str
    config: pb.PodSandboxConfig
    handler: str

    @property
    def name(self) -> str:
        return self.config.metadata.name

    @property
    def log_directory(self) -> Path | None:
        return Path(self.config.log_directory) if self.config.log_directory else None


@dataclass
class PodDefaults:
    """What every pod of a test environment gets unless the test says otherwise."""

    namespace: str = DEFAULT_NAMESPACE
    cgroup_parent: str = ""
    log_root: Path | None = None  # each pod logs to log_root/<pod name>-<uid>
    annotations: dict[str, str] = field(default_factory=dict)


def unique(prefix: str) -> str:
    return f"{prefix}-{secrets.token_hex(4)}"


def _serialize(message: Message) -> bytes:
    return message.SerializeToString()


def key_values(env: Mapping[str, str]) -> list[pb.KeyValue]:
    return [pb.KeyValue(key=k, value=v) for k, v in env.items()]


class CriClient:
    """CRI over containerd's gRPC socket (no TLS, no namespace header: CRI uses k8s.io)."""

    def __init__(self, address: Path | str, defaults: PodDefaults | None = None,
                 timeout: float = CALL_TIMEOUT) -> None:
        self.address = Path(address)
        self.defaults = defaults or PodDefaults()
        self.timeout = timeout
        self._channel = grpc.insecure_channel(
            f"unix://{self.address}",
            options=[("grpc.max_receive_message_length", MAX_MESSAGE),
                     ("grpc.max_send_message_length", MAX_MESSAGE)])

    def close(self) -> None:
        self._channel.close()

    def __enter__(self) -> CriClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _call(self, service: str, method: str, request: Message, response: type[R],
              timeout: float | None = None) -> R:
        path = f"/{service}/{method}"
        call = self._channel.unary_unary(path, request_serializer=_serialize,
                                         response_deserializer=response.FromString)
        try:
            result: R = call(request, timeout=timeout or self.timeout)
        except grpc.RpcError as exc:
            raise CriError(method, exc.code(), exc.details() or "") from None
        return result

    # --- readiness ------------------------------------------------------------------------------

    def wait_ready(self, timeout: float = 60.0, network: bool = True) -> pb.StatusResponse:
        """Poll Version and Status until the CRI plugin has initialised (it answers NOT_READY
        meanwhile) and RuntimeReady (and, with network, NetworkReady) are true."""
        deadline = time.monotonic() + timeout
        last = ""
        while time.monotonic() < deadline:
            try:
                self.version()
                status = self.status()
            except CriError as exc:
                if NOT_READY not in exc.details and exc.code != grpc.StatusCode.UNAVAILABLE:
                    raise
                last = str(exc)
            else:
                conditions = {c.type: c for c in status.status.conditions}
                wanted = ["RuntimeReady"] + (["NetworkReady"] if network else [])
                if all(conditions.get(w) and conditions[w].status for w in wanted):
                    return status
                last = "; ".join(f"{c.type}={c.status} {c.reason} {c.message}"
                                 for c in status.status.conditions)
            time.sleep(0.2)
        raise TimeoutError(f"CRI on {self.address} not ready within {timeout} s: {last}")

    # --- RuntimeService -------------------------------------------------------------------------

    def version(self) -> pb.VersionResponse:
        return self._call(RUNTIME, "Version", pb.VersionRequest(version="v1"), pb.VersionResponse)

    def status(self, verbose: bool = False) -> pb.StatusResponse:
        return self._call(RUNTIME, "Status", pb.StatusRequest(verbose=verbose), pb.StatusResponse)

    def run_pod_sandbox(self, config: pb.PodSandboxConfig, runtime_handler: str = "") -> str:
        req = pb.RunPodSandboxRequest(config=config, runtime_handler=runtime_handler)
        return self._call(RUNTIME, "RunPodSandbox", req, pb.RunPodSandboxResponse).pod_sandbox_id

    def stop_pod_sandbox(self, pod_id: str) -> None:
        req = pb.StopPodSandboxRequest(pod_sandbox_id=pod_id)
        self._call(RUNTIME, "StopPodSandbox", req, pb.StopPodSandboxResponse)

    def remove_pod_sandbox(self, pod_id: str) -> None:
        req = pb.RemovePodSandboxRequest(pod_sandbox_id=pod_id)
        self._call(RUNTIME, "RemovePodSandbox", req, pb.RemovePodSandboxResponse)

    def pod_sandbox_status(self, pod_id: str, verbose: bool = False) -> pb.PodSandboxStatusResponse:
        req = pb.PodSandboxStatusRequest(pod_sandbox_id=pod_id, verbose=verbose)
        return self._call(RUNTIME, "PodSandboxStatus", req, pb.PodSandboxStatusResponse)

    def list_pod_sandbox(self, filter: pb.PodSandboxFilter | None = None) -> list[pb.PodSandbox]:
        req = pb.ListPodSandboxRequest(filter=filter)
        return list(self._call(RUNTIME, "ListPodSandbox", req, pb.ListPodSandboxResponse).items)

    def create_container(self, pod_id: str, config: pb.ContainerConfig,
                         sandbox_config: pb.PodSandboxConfig) -> str:
        """sandbox_config is required: containerd 1.x dereferences it (and panics without)."""
        req = pb.CreateContainerRequest(pod_sandbox_id=pod_id, config=config,
                                        sandbox_config=sandbox_config)
        return self._call(RUNTIME, "CreateContainer", req, pb.CreateContainerResponse).container_id

    def start_container(self, container_id: str) -> None:
        req = pb.StartContainerRequest(container_id=container_id)
        self._call(RUNTIME, "StartContainer", req, pb.StartContainerResponse)

    def stop_container(self, container_id: str, timeout: int = 0) -> None:
        """timeout seconds after the stop signal, then SIGKILL (0: SIGKILL at once)."""
        req = pb.StopContainerRequest(container_id=container_id, timeout=timeout)
        self._call(RUNTIME, "StopContainer", req, pb.StopContainerResponse,
                   timeout=self.timeout + timeout)

    def remove_container(self, container_id: str) -> None:
        req = pb.RemoveContainerRequest(container_id=container_id)
        self._call(RUNTIME, "RemoveContainer", req, pb.RemoveContainerResponse)

    def list_containers(self, filter: pb.ContainerFilter | None = None) -> list[pb.Container]:
        req = pb.ListContainersRequest(filter=filter)
        return list(self._call(RUNTIME, "ListContainers", req, pb.ListContainersResponse)
                    .containers)

    def container_status(self, container_id: str,
                         verbose: bool = False) -> pb.ContainerStatusResponse:
        req = pb.ContainerStatusRequest(container_id=container_id, verbose=verbose)
        return self._call(RUNTIME, "ContainerStatus", req, pb.ContainerStatusResponse)

    def update_container_resources(self, container_id: str,
                                   linux: pb.LinuxContainerResources) -> None:
        req = pb.UpdateContainerResourcesRequest(container_id=container_id, linux=linux)
        self._call(RUNTIME, "UpdateContainerResources", req, pb.UpdateContainerResourcesResponse)

    def reopen_container_log(self, container_id: str) -> None:
        req = pb.ReopenContainerLogRequest(container_id=container_id)
        self._call(RUNTIME, "ReopenContainerLog", req, pb.ReopenContainerLogResponse)

    def exec_sync(self, container_id: str, cmd: Sequence[str],
                  timeout: int = 0) -> pb.ExecSyncResponse:
        """timeout seconds (0: none); on expiry containerd kills it: DEADLINE_EXCEEDED."""
        req = pb.ExecSyncRequest(container_id=container_id, cmd=list(cmd), timeout=timeout)
        return self._call(RUNTIME, "ExecSync", req, pb.ExecSyncResponse,
                          timeout=self.timeout + timeout)

    def exec(self, container_id: str, cmd: Sequence[str], *, tty: bool = False,
             stdin: bool = False, stdout: bool = True, stderr: bool = True) -> str:
        """The one-use streaming URL (see streaming.py); tty and stderr exclude each other."""
        req = pb.ExecRequest(container_id=container_id, cmd=list(cmd), tty=tty, stdin=stdin,
                             stdout=stdout, stderr=stderr)
        return self._call(RUNTIME, "Exec", req, pb.ExecResponse).url

    def attach(self, container_id: str, *, tty: bool = False, stdin: bool = False,
               stdout: bool = True, stderr: bool = True) -> str:
        req = pb.AttachRequest(container_id=container_id, tty=tty, stdin=stdin, stdout=stdout,
                               stderr=stderr)
        return self._call(RUNTIME, "Attach", req, pb.AttachResponse).url

    def port_forward(self, pod_id: str, ports: Iterable[int]) -> str:
        req = pb.PortForwardRequest(pod_sandbox_id=pod_id, port=list(ports))
        return self._call(RUNTIME, "PortForward", req, pb.PortForwardResponse).url

    def container_stats(self, container_id: str) -> pb.ContainerStats:
        req = pb.ContainerStatsRequest(container_id=container_id)
        return self._call(RUNTIME, "ContainerStats", req, pb.ContainerStatsResponse).stats

    def list_container_stats(self, filter: pb.ContainerStatsFilter | None = None
                             ) -> list[pb.ContainerStats]:
        req = pb.ListContainerStatsRequest(filter=filter)
        return list(self._call(RUNTIME, "ListContainerStats", req,
                               pb.ListContainerStatsResponse).stats)

    def pod_sandbox_stats(self, pod_id: str) -> pb.PodSandboxStats:
        req = pb.PodSandboxStatsRequest(pod_sandbox_id=pod_id)
        return self._call(RUNTIME, "PodSandboxStats", req, pb.PodSandboxStatsResponse).stats

    # --- ImageService ---------------------------------------------------------------------------

    def list_images(self) -> list[pb.Image]:
        return list(self._call(IMAGES, "ListImages", pb.ListImagesRequest(),
                               pb.ListImagesResponse).images)

    def image_status(self, image: str) -> pb.Image | None:
        """None when the image is absent (CRI answers OK with no image)."""
        req = pb.ImageStatusRequest(image=pb.ImageSpec(image=image))
        res = self._call(IMAGES, "ImageStatus", req, pb.ImageStatusResponse)
        return res.image if res.HasField("image") else None

    # --- helpers --------------------------------------------------------------------------------

    def pod_config(self, name: str, *, hostname: str = "", log: bool = True,
                   dns: pb.DNSConfig | None = None, ports: Sequence[pb.PortMapping] = (),
                   labels: Mapping[str, str] | None = None,
                   annotations: Mapping[str, str] | None = None,
                   linux: pb.LinuxPodSandboxConfig | None = None) -> pb.PodSandboxConfig:
        """A PodSandboxConfig with a fresh uid, this client's defaults and a log directory."""
        uid = secrets.token_hex(8)
        log_dir = ""
        if log and self.defaults.log_root is not None:
            log_dir = str(self.defaults.log_root / f"{name}-{uid}")
        linux = linux or pb.LinuxPodSandboxConfig()
        if not linux.cgroup_parent:
            linux.cgroup_parent = self.defaults.cgroup_parent
        if not linux.security_context.HasField("namespace_options"):
            linux.security_context.namespace_options.CopyFrom(KUBELET_NAMESPACES)
        return pb.PodSandboxConfig(
            metadata=pb.PodSandboxMetadata(name=name, uid=uid, namespace=self.defaults.namespace),
            hostname=hostname, log_directory=log_dir, dns_config=dns, port_mappings=list(ports),
            labels=dict(labels or {}),
            annotations={**self.defaults.annotations, **(annotations or {})}, linux=linux)

    def run_pod(self, config: pb.PodSandboxConfig | str, handler: str = "runc") -> Pod:
        """RunPodSandbox on the handler; a bare name gets pod_config(name)'s defaults."""
        pod_config = self.pod_config(config) if isinstance(config, str) else config
        return Pod(self.run_pod_sandbox(pod_config, handler), pod_config, handler)

    def container_config(self, name: str, image: str, *, command: Sequence[str] = (),
                         args: Sequence[str] = (), env: Mapping[str, str] | None = None,
                         log_path: str | None = None, tty: bool = False, stdin: bool = False,
                         stdin_once: bool = False, working_dir: str = "",
                         mounts: Sequence[pb.Mount] = (),
                         labels: Mapping[str, str] | None = None,
                         annotations: Mapping[str, str] | None = None,
                         linux: pb.LinuxContainerConfig | None = None) -> pb.ContainerConfig:
        """A ContainerConfig logging to <name>.log (relative to the pod's log directory), in
        its own PID namespace as kubelet asks unless linux says otherwise."""
        linux = linux or pb.LinuxContainerConfig()
        if not linux.security_context.HasField("namespace_options"):
            linux.security_context.namespace_options.CopyFrom(KUBELET_NAMESPACES)
        return pb.ContainerConfig(
            metadata=pb.ContainerMetadata(name=name), image=pb.ImageSpec(image=image),
            command=list(command), args=list(args), envs=key_values(env or {}),
            log_path=f"{name}.log" if log_path is None else log_path, tty=tty, stdin=stdin,
            stdin_once=stdin_once, working_dir=working_dir, mounts=list(mounts),
            labels=dict(labels or {}), annotations=dict(annotations or {}), linux=linux)

    def create_and_start(self, pod: Pod, config: pb.ContainerConfig) -> str:
        """CreateContainer (with the pod's config as sandbox_config) and StartContainer."""
        container_id = self.create_container(pod.id, config, pod.config)
        self.start_container(container_id)
        return container_id

    def stop_and_remove_pod(self, pod_id: str) -> None:
        """StopPodSandbox (kills its containers, runs CNI DEL) then RemovePodSandbox."""
        self.stop_pod_sandbox(pod_id)
        self.remove_pod_sandbox(pod_id)

    def wait_container(self, container_id: str, state: int = pb.CONTAINER_EXITED,
                       timeout: float = 60.0) -> pb.ContainerStatus:
        """Poll ContainerStatus until the container reaches state (by default: exited)."""
        deadline = time.monotonic() + timeout
        while True:
            status = self.container_status(container_id).status
            if status.state == state:
                return status
            if time.monotonic() > deadline:
                raise TimeoutError(f"container {container_id} still "
                                   f"{pb.ContainerState.Name(status.state)} after {timeout} s")
            time.sleep(0.1)
