import datetime

from google.protobuf import empty_pb2 as _empty_pb2
from google.protobuf import timestamp_pb2 as _timestamp_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class CheckRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class CheckResponse(_message.Message):
    __slots__ = ("agent_version", "kernel_release", "init_start_uptime", "switch_root_uptime", "agent_start_uptime", "now_uptime")
    AGENT_VERSION_FIELD_NUMBER: _ClassVar[int]
    KERNEL_RELEASE_FIELD_NUMBER: _ClassVar[int]
    INIT_START_UPTIME_FIELD_NUMBER: _ClassVar[int]
    SWITCH_ROOT_UPTIME_FIELD_NUMBER: _ClassVar[int]
    AGENT_START_UPTIME_FIELD_NUMBER: _ClassVar[int]
    NOW_UPTIME_FIELD_NUMBER: _ClassVar[int]
    agent_version: str
    kernel_release: str
    init_start_uptime: float
    switch_root_uptime: float
    agent_start_uptime: float
    now_uptime: float
    def __init__(self, agent_version: _Optional[str] = ..., kernel_release: _Optional[str] = ..., init_start_uptime: _Optional[float] = ..., switch_root_uptime: _Optional[float] = ..., agent_start_uptime: _Optional[float] = ..., now_uptime: _Optional[float] = ...) -> None: ...

class StdioStreams(_message.Message):
    __slots__ = ("stdin", "stdout", "stderr")
    STDIN_FIELD_NUMBER: _ClassVar[int]
    STDOUT_FIELD_NUMBER: _ClassVar[int]
    STDERR_FIELD_NUMBER: _ClassVar[int]
    stdin: int
    stdout: int
    stderr: int
    def __init__(self, stdin: _Optional[int] = ..., stdout: _Optional[int] = ..., stderr: _Optional[int] = ...) -> None: ...

class CreateContainerRequest(_message.Message):
    __slots__ = ("container_id", "bundle", "terminal", "stdio", "rootfs_lower")
    CONTAINER_ID_FIELD_NUMBER: _ClassVar[int]
    BUNDLE_FIELD_NUMBER: _ClassVar[int]
    TERMINAL_FIELD_NUMBER: _ClassVar[int]
    STDIO_FIELD_NUMBER: _ClassVar[int]
    ROOTFS_LOWER_FIELD_NUMBER: _ClassVar[int]
    container_id: str
    bundle: str
    terminal: bool
    stdio: StdioStreams
    rootfs_lower: str
    def __init__(self, container_id: _Optional[str] = ..., bundle: _Optional[str] = ..., terminal: _Optional[bool] = ..., stdio: _Optional[_Union[StdioStreams, _Mapping]] = ..., rootfs_lower: _Optional[str] = ...) -> None: ...

class CreateContainerResponse(_message.Message):
    __slots__ = ("pid",)
    PID_FIELD_NUMBER: _ClassVar[int]
    pid: int
    def __init__(self, pid: _Optional[int] = ...) -> None: ...

class ExecProcessRequest(_message.Message):
    __slots__ = ("container_id", "exec_id", "terminal", "stdio", "process")
    CONTAINER_ID_FIELD_NUMBER: _ClassVar[int]
    EXEC_ID_FIELD_NUMBER: _ClassVar[int]
    TERMINAL_FIELD_NUMBER: _ClassVar[int]
    STDIO_FIELD_NUMBER: _ClassVar[int]
    PROCESS_FIELD_NUMBER: _ClassVar[int]
    container_id: str
    exec_id: str
    terminal: bool
    stdio: StdioStreams
    process: bytes
    def __init__(self, container_id: _Optional[str] = ..., exec_id: _Optional[str] = ..., terminal: _Optional[bool] = ..., stdio: _Optional[_Union[StdioStreams, _Mapping]] = ..., process: _Optional[bytes] = ...) -> None: ...

class StartProcessRequest(_message.Message):
    __slots__ = ("container_id", "exec_id")
    CONTAINER_ID_FIELD_NUMBER: _ClassVar[int]
    EXEC_ID_FIELD_NUMBER: _ClassVar[int]
    container_id: str
    exec_id: str
    def __init__(self, container_id: _Optional[str] = ..., exec_id: _Optional[str] = ...) -> None: ...

class StartProcessResponse(_message.Message):
    __slots__ = ("pid",)
    PID_FIELD_NUMBER: _ClassVar[int]
    pid: int
    def __init__(self, pid: _Optional[int] = ...) -> None: ...

class WaitProcessRequest(_message.Message):
    __slots__ = ("container_id", "exec_id")
    CONTAINER_ID_FIELD_NUMBER: _ClassVar[int]
    EXEC_ID_FIELD_NUMBER: _ClassVar[int]
    container_id: str
    exec_id: str
    def __init__(self, container_id: _Optional[str] = ..., exec_id: _Optional[str] = ...) -> None: ...

class WaitProcessResponse(_message.Message):
    __slots__ = ("exit_status", "exited_at", "oom_kills", "stdout_bytes", "stderr_bytes")
    EXIT_STATUS_FIELD_NUMBER: _ClassVar[int]
    EXITED_AT_FIELD_NUMBER: _ClassVar[int]
    OOM_KILLS_FIELD_NUMBER: _ClassVar[int]
    STDOUT_BYTES_FIELD_NUMBER: _ClassVar[int]
    STDERR_BYTES_FIELD_NUMBER: _ClassVar[int]
    exit_status: int
    exited_at: _timestamp_pb2.Timestamp
    oom_kills: int
    stdout_bytes: int
    stderr_bytes: int
    def __init__(self, exit_status: _Optional[int] = ..., exited_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., oom_kills: _Optional[int] = ..., stdout_bytes: _Optional[int] = ..., stderr_bytes: _Optional[int] = ...) -> None: ...

class SignalProcessRequest(_message.Message):
    __slots__ = ("container_id", "exec_id", "signal", "all")
    CONTAINER_ID_FIELD_NUMBER: _ClassVar[int]
    EXEC_ID_FIELD_NUMBER: _ClassVar[int]
    SIGNAL_FIELD_NUMBER: _ClassVar[int]
    ALL_FIELD_NUMBER: _ClassVar[int]
    container_id: str
    exec_id: str
    signal: int
    all: bool
    def __init__(self, container_id: _Optional[str] = ..., exec_id: _Optional[str] = ..., signal: _Optional[int] = ..., all: _Optional[bool] = ...) -> None: ...

class ResizePtyRequest(_message.Message):
    __slots__ = ("container_id", "exec_id", "width", "height")
    CONTAINER_ID_FIELD_NUMBER: _ClassVar[int]
    EXEC_ID_FIELD_NUMBER: _ClassVar[int]
    WIDTH_FIELD_NUMBER: _ClassVar[int]
    HEIGHT_FIELD_NUMBER: _ClassVar[int]
    container_id: str
    exec_id: str
    width: int
    height: int
    def __init__(self, container_id: _Optional[str] = ..., exec_id: _Optional[str] = ..., width: _Optional[int] = ..., height: _Optional[int] = ...) -> None: ...

class DeleteProcessRequest(_message.Message):
    __slots__ = ("container_id", "exec_id")
    CONTAINER_ID_FIELD_NUMBER: _ClassVar[int]
    EXEC_ID_FIELD_NUMBER: _ClassVar[int]
    container_id: str
    exec_id: str
    def __init__(self, container_id: _Optional[str] = ..., exec_id: _Optional[str] = ...) -> None: ...

class ListPidsRequest(_message.Message):
    __slots__ = ("container_id",)
    CONTAINER_ID_FIELD_NUMBER: _ClassVar[int]
    container_id: str
    def __init__(self, container_id: _Optional[str] = ...) -> None: ...

class ProcessPid(_message.Message):
    __slots__ = ("pid", "exec_id")
    PID_FIELD_NUMBER: _ClassVar[int]
    EXEC_ID_FIELD_NUMBER: _ClassVar[int]
    pid: int
    exec_id: str
    def __init__(self, pid: _Optional[int] = ..., exec_id: _Optional[str] = ...) -> None: ...

class ListPidsResponse(_message.Message):
    __slots__ = ("processes",)
    PROCESSES_FIELD_NUMBER: _ClassVar[int]
    processes: _containers.RepeatedCompositeFieldContainer[ProcessPid]
    def __init__(self, processes: _Optional[_Iterable[_Union[ProcessPid, _Mapping]]] = ...) -> None: ...

class ContainerRequest(_message.Message):
    __slots__ = ("container_id",)
    CONTAINER_ID_FIELD_NUMBER: _ClassVar[int]
    container_id: str
    def __init__(self, container_id: _Optional[str] = ...) -> None: ...

class UpdateContainerRequest(_message.Message):
    __slots__ = ("container_id", "resources")
    CONTAINER_ID_FIELD_NUMBER: _ClassVar[int]
    RESOURCES_FIELD_NUMBER: _ClassVar[int]
    container_id: str
    resources: bytes
    def __init__(self, container_id: _Optional[str] = ..., resources: _Optional[bytes] = ...) -> None: ...

class ContainerStatsResponse(_message.Message):
    __slots__ = ("metrics",)
    METRICS_FIELD_NUMBER: _ClassVar[int]
    metrics: bytes
    def __init__(self, metrics: _Optional[bytes] = ...) -> None: ...

class GuestStatsResponse(_message.Message):
    __slots__ = ("memory_total_bytes", "memory_free_bytes", "memory_available_bytes", "memory_cached_bytes", "cpu_seconds", "vcpus", "uptime_seconds", "processes")
    class CpuSecondsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: float
        def __init__(self, key: _Optional[str] = ..., value: _Optional[float] = ...) -> None: ...
    MEMORY_TOTAL_BYTES_FIELD_NUMBER: _ClassVar[int]
    MEMORY_FREE_BYTES_FIELD_NUMBER: _ClassVar[int]
    MEMORY_AVAILABLE_BYTES_FIELD_NUMBER: _ClassVar[int]
    MEMORY_CACHED_BYTES_FIELD_NUMBER: _ClassVar[int]
    CPU_SECONDS_FIELD_NUMBER: _ClassVar[int]
    VCPUS_FIELD_NUMBER: _ClassVar[int]
    UPTIME_SECONDS_FIELD_NUMBER: _ClassVar[int]
    PROCESSES_FIELD_NUMBER: _ClassVar[int]
    memory_total_bytes: int
    memory_free_bytes: int
    memory_available_bytes: int
    memory_cached_bytes: int
    cpu_seconds: _containers.ScalarMap[str, float]
    vcpus: int
    uptime_seconds: float
    processes: int
    def __init__(self, memory_total_bytes: _Optional[int] = ..., memory_free_bytes: _Optional[int] = ..., memory_available_bytes: _Optional[int] = ..., memory_cached_bytes: _Optional[int] = ..., cpu_seconds: _Optional[_Mapping[str, float]] = ..., vcpus: _Optional[int] = ..., uptime_seconds: _Optional[float] = ..., processes: _Optional[int] = ...) -> None: ...

class OOMEvent(_message.Message):
    __slots__ = ("container_id", "oom_kills")
    CONTAINER_ID_FIELD_NUMBER: _ClassVar[int]
    OOM_KILLS_FIELD_NUMBER: _ClassVar[int]
    container_id: str
    oom_kills: int
    def __init__(self, container_id: _Optional[str] = ..., oom_kills: _Optional[int] = ...) -> None: ...

class RemoveContainerRequest(_message.Message):
    __slots__ = ("container_id",)
    CONTAINER_ID_FIELD_NUMBER: _ClassVar[int]
    container_id: str
    def __init__(self, container_id: _Optional[str] = ...) -> None: ...

class SetupSandboxRequest(_message.Message):
    __slots__ = ("entropy", "wall_clock", "hostname", "mount_share", "sysctls", "io_engine", "debug_shell")
    class SysctlsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    ENTROPY_FIELD_NUMBER: _ClassVar[int]
    WALL_CLOCK_FIELD_NUMBER: _ClassVar[int]
    HOSTNAME_FIELD_NUMBER: _ClassVar[int]
    MOUNT_SHARE_FIELD_NUMBER: _ClassVar[int]
    SYSCTLS_FIELD_NUMBER: _ClassVar[int]
    IO_ENGINE_FIELD_NUMBER: _ClassVar[int]
    DEBUG_SHELL_FIELD_NUMBER: _ClassVar[int]
    entropy: bytes
    wall_clock: _timestamp_pb2.Timestamp
    hostname: str
    mount_share: bool
    sysctls: _containers.ScalarMap[str, str]
    io_engine: str
    debug_shell: bool
    def __init__(self, entropy: _Optional[bytes] = ..., wall_clock: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., hostname: _Optional[str] = ..., mount_share: _Optional[bool] = ..., sysctls: _Optional[_Mapping[str, str]] = ..., io_engine: _Optional[str] = ..., debug_shell: _Optional[bool] = ...) -> None: ...

class SetupSandboxResponse(_message.Message):
    __slots__ = ("io_engine",)
    IO_ENGINE_FIELD_NUMBER: _ClassVar[int]
    io_engine: str
    def __init__(self, io_engine: _Optional[str] = ...) -> None: ...

class PodAddress(_message.Message):
    __slots__ = ("ip", "prefix_len")
    IP_FIELD_NUMBER: _ClassVar[int]
    PREFIX_LEN_FIELD_NUMBER: _ClassVar[int]
    ip: str
    prefix_len: int
    def __init__(self, ip: _Optional[str] = ..., prefix_len: _Optional[int] = ...) -> None: ...

class PodRoute(_message.Message):
    __slots__ = ("destination", "prefix_len", "gateway", "scope", "metric")
    DESTINATION_FIELD_NUMBER: _ClassVar[int]
    PREFIX_LEN_FIELD_NUMBER: _ClassVar[int]
    GATEWAY_FIELD_NUMBER: _ClassVar[int]
    SCOPE_FIELD_NUMBER: _ClassVar[int]
    METRIC_FIELD_NUMBER: _ClassVar[int]
    destination: str
    prefix_len: int
    gateway: str
    scope: int
    metric: int
    def __init__(self, destination: _Optional[str] = ..., prefix_len: _Optional[int] = ..., gateway: _Optional[str] = ..., scope: _Optional[int] = ..., metric: _Optional[int] = ...) -> None: ...

class PodInterface(_message.Message):
    __slots__ = ("name", "mac", "mtu", "addresses", "routes")
    NAME_FIELD_NUMBER: _ClassVar[int]
    MAC_FIELD_NUMBER: _ClassVar[int]
    MTU_FIELD_NUMBER: _ClassVar[int]
    ADDRESSES_FIELD_NUMBER: _ClassVar[int]
    ROUTES_FIELD_NUMBER: _ClassVar[int]
    name: str
    mac: str
    mtu: int
    addresses: _containers.RepeatedCompositeFieldContainer[PodAddress]
    routes: _containers.RepeatedCompositeFieldContainer[PodRoute]
    def __init__(self, name: _Optional[str] = ..., mac: _Optional[str] = ..., mtu: _Optional[int] = ..., addresses: _Optional[_Iterable[_Union[PodAddress, _Mapping]]] = ..., routes: _Optional[_Iterable[_Union[PodRoute, _Mapping]]] = ...) -> None: ...

class ForwardPortRequest(_message.Message):
    __slots__ = ("port", "to_guest_stream", "from_guest_stream")
    PORT_FIELD_NUMBER: _ClassVar[int]
    TO_GUEST_STREAM_FIELD_NUMBER: _ClassVar[int]
    FROM_GUEST_STREAM_FIELD_NUMBER: _ClassVar[int]
    port: int
    to_guest_stream: int
    from_guest_stream: int
    def __init__(self, port: _Optional[int] = ..., to_guest_stream: _Optional[int] = ..., from_guest_stream: _Optional[int] = ...) -> None: ...

class ConfigureNetworkRequest(_message.Message):
    __slots__ = ("interfaces",)
    INTERFACES_FIELD_NUMBER: _ClassVar[int]
    interfaces: _containers.RepeatedCompositeFieldContainer[PodInterface]
    def __init__(self, interfaces: _Optional[_Iterable[_Union[PodInterface, _Mapping]]] = ...) -> None: ...
