"""CRI behaviours checked for a runtime handler, shared by test_cri_runc.py (runc on every
containerd version) and test_cri_bulkhead.py (runc and Bulkhead side by side): each check runs
its own pods on the given handler and removes them again."""

from __future__ import annotations

import contextlib
import json
import random
import re
import socket
import subprocess
import time
import urllib.request
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from concurrent.futures import wait as wait_futures
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bulkhead.devenv import mounts, procs
from bulkhead.devenv.containerd import CRI_NAMESPACE, PrivateContainerd, shim_socket_path
from leaks import BULKHEAD_RUN_DIR, is_qemu, sandbox_dirs

from cri import logs, streaming
from cri import runtime_v1_pb2 as pb
from cri.client import CriClient, CriError, Pod, PodDefaults, unique
from cri.fixtures import CriEnv

HTTP_PORT = 8080
BODY = "hello from the pod"
LONG_LINE = 20000  # more than containerd's max_container_log_line_size (16384)
LOG_SPLIT = 16384
SLEEP = ["sleep", "600"]
READY_TIMEOUT = 120.0  # a VM-backed pod under TCG


@contextlib.contextmanager
def running_pod(env: CriEnv, handler: str, config: pb.PodSandboxConfig | str) -> Iterator[Pod]:
    """A pod on handler for the duration of the block; stopped and removed after it."""
    pod = env.client.run_pod(config, handler)
    try:
        yield pod
    finally:
        env.client.stop_and_remove_pod(pod.id)


def start(env: CriEnv, pod: Pod, name: str, command: list[str], **fields: Any) -> str:
    """Create and start a container of the demo image in pod; returns its id."""
    config = env.client.container_config(name, env.image, command=command, **fields)
    return env.client.create_and_start(pod, config)


def httpd(body: str = BODY, port: int = HTTP_PORT) -> list[str]:
    """busybox httpd in the foreground serving body as /index.html."""
    return ["sh", "-c", f"mkdir -p /www && echo '{body}' > /www/index.html && "
            f"exec httpd -f -p {port} -h /www"]


def wait_until(what: str, probe: Callable[[], object], timeout: float = READY_TIMEOUT) -> None:
    """Retry probe until it returns truthy (exceptions count as not yet)."""
    deadline = time.monotonic() + timeout
    last: object = None
    while time.monotonic() < deadline:
        try:
            if probe():
                return
        except Exception as exc:  # noqa: BLE001 - not ready yet, whatever the reason
            last = exc
        time.sleep(0.3)
    raise AssertionError(f"{what} not within {timeout} s (last: {last!r})")


def wait_httpd(client: CriClient, container_id: str, port: int = HTTP_PORT) -> None:
    """Until httpd answers inside the container (so later failures are the path's fault)."""
    def answered() -> bool:
        res = client.exec_sync(container_id, ["wget", "-qO-", f"http://127.0.0.1:{port}/"], 10)
        return BODY.encode() in res.stdout
    wait_until("httpd inside the pod", answered)


def http_get(url: str, timeout: float = 10.0) -> str:
    """GET without any proxy from the environment: the test talks to its own bridge only."""
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    with opener.open(url, timeout=timeout) as res:
        return str(res.read().decode())


def pod_ip(client: CriClient, pod: Pod) -> str:
    return client.pod_sandbox_status(pod.id).status.network.ip


def free_port() -> int:
    """A TCP port nothing on this host listens on now (for a hostPort)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def exec_ok(client: CriClient, container_id: str, *cmd: str) -> str:
    """ExecSync that must exit 0; returns stdout."""
    res = client.exec_sync(container_id, list(cmd), timeout=60)
    assert res.exit_code == 0, (cmd, res)
    return res.stdout.decode()


# --- lifecycle and logs ------------------------------------------------------------------------


def check_runtime(env: CriEnv) -> None:
    """Version and Status answer; both images are in CRI's store, the pause one pinned (1.7+)."""
    version = env.client.version()
    assert (version.runtime_name, version.runtime_api_version) == ("containerd", "v1")
    assert version.runtime_version.startswith(env.version + ".")
    conditions = {c.type: c for c in env.client.status().status.conditions}
    assert conditions["RuntimeReady"].status and conditions["NetworkReady"].status, conditions
    # 1.7.24+ and 2.x add ContainerdHasNoDeprecationWarnings: our configs use no deprecated key.
    assert all(c.status for c in conditions.values()), conditions
    images = {tag: image for image in env.client.list_images() for tag in image.repo_tags}
    assert {env.image, env.pause_image} <= set(images)
    assert images[env.pause_image].pinned == (env.version != "1.6")
    assert images[env.image].id.startswith("sha256:")
    status = env.client.image_status(env.image)
    assert status is not None and status.id == images[env.image].id
    assert env.client.image_status("localhost/bulkhead/absent:1") is None


LOG_SCRIPT = (f'echo hello; echo oops >&2; printf partial; sleep 1; echo " done"; '
              f'head -c {LONG_LINE} /dev/zero | tr "\\0" x; echo; printf tail-no-newline')


def check_log_file(env: CriEnv, handler: str) -> None:
    """stdout/stderr reach log_directory/log_path in the CRI format: F lines, P pieces for a
    long line and for text without a final newline; exit status Completed."""
    started = datetime.now(UTC)
    with running_pod(env, handler, "logs") as pod:
        cid = start(env, pod, "printer", ["sh", "-c", LOG_SCRIPT])
        status = env.client.wait_container(cid, timeout=READY_TIMEOUT)
        assert (status.exit_code, status.reason) == (0, "Completed"), status
        assert pod.log_directory is not None
        assert status.log_path == str(pod.log_directory / "printer.log")
        records = logs.read(status.log_path)
    assert all(started <= r.time <= datetime.now(UTC) for r in records), records
    assert logs.lines(records, "stderr") == [b"oops"]
    assert logs.lines(records, "stdout") == [b"hello", b"partial done", b"x" * LONG_LINE,
                                             b"tail-no-newline"]
    stdout = [(r.tag, len(r.content)) for r in records if r.stream == "stdout"]
    assert stdout[2:] == [("P", LOG_SPLIT), ("F", LONG_LINE - LOG_SPLIT), ("P", 15)], stdout


def check_tty_log(env: CriEnv, handler: str) -> None:
    """A TTY container logs one stream, stdout, with the pty's CR LF stripped."""
    with running_pod(env, handler, "ttylog") as pod:
        cid = start(env, pod, "tty", ["sh", "-c", "echo to-stdout; echo to-stderr >&2"],
                    tty=True)
        status = env.client.wait_container(cid, timeout=READY_TIMEOUT)
        records = logs.read(status.log_path)
    assert {r.stream for r in records} == {"stdout"}
    assert logs.lines(records, "stdout") == [b"to-stdout", b"to-stderr"]


def check_exit_codes(env: CriEnv, handler: str) -> None:
    """ContainerStatus reports exit codes and reasons: Completed, Error, a SIGKILL after the
    stop timeout (137), a TERM handler's clean exit, and StartError for a missing binary."""
    client = env.client
    with running_pod(env, handler, "exits") as pod:
        failing = start(env, pod, "fails", ["sh", "-c", "exit 3"])
        ignoring = start(env, pod, "ignores-term", SLEEP)
        trapping = start(env, pod, "traps-term",
                         ["sh", "-c", 'trap "exit 0" TERM; while :; do sleep 0.1; done'])
        status = client.wait_container(failing, timeout=READY_TIMEOUT)
        assert (status.exit_code, status.reason, status.state) == (3, "Error", pb.CONTAINER_EXITED)
        # started_at is containerd's clock after task Start returned, finished_at the shim's
        # exit time: a container that exits at once may "finish" before it "started".
        assert status.started_at > 0 and status.finished_at > status.started_at - 10**9
        client.stop_container(ignoring, timeout=1)  # PID 1 ignores SIGTERM: killed after 1 s
        assert _exit(client, ignoring) == (137, "Error")
        client.stop_container(trapping, timeout=30)
        assert _exit(client, trapping) == (0, "Completed")
        check_start_error(env, pod)


def _exit(client: CriClient, container_id: str) -> tuple[int, str]:
    status = client.container_status(container_id).status
    assert status.state == pb.CONTAINER_EXITED, status
    return status.exit_code, status.reason


def check_start_error(env: CriEnv, pod: Pod) -> None:
    """StartContainer of a missing binary fails; the container is EXITED with StartError."""
    config = env.client.container_config("missing", env.image, command=["/no/such/binary"])
    cid = env.client.create_container(pod.id, config, pod.config)
    try:
        env.client.start_container(cid)
    except CriError as exc:
        assert "no/such/binary" in exc.details, exc
    else:
        raise AssertionError("StartContainer of a missing binary succeeded")
    status = env.client.container_status(cid).status
    assert (status.state, status.reason, status.exit_code) == (pb.CONTAINER_EXITED,
                                                               "StartError", 128), status


def check_stop_and_remove(env: CriEnv, handler: str) -> None:
    """StopPodSandbox kills containers, runs CNI DEL and drops the netns; RemovePodSandbox
    forgets the pod; both are idempotent; the log file stays."""
    client = env.client
    pod = client.run_pod("stopme", handler)
    cid = start(env, pod, "sleeper", SLEEP)
    client.wait_container(cid, pb.CONTAINER_RUNNING, timeout=READY_TIMEOUT)
    status = client.pod_sandbox_status(pod.id).status
    assert status.state == pb.SANDBOX_READY and status.network.ip
    assert any(env.instance.netns_dir.iterdir())
    client.stop_pod_sandbox(pod.id)
    status = client.pod_sandbox_status(pod.id).status
    assert status.state == pb.SANDBOX_NOTREADY
    assert client.container_status(cid).status.state == pb.CONTAINER_EXITED
    assert not any(env.instance.netns_dir.iterdir())
    client.stop_pod_sandbox(pod.id)
    log_path = Path(client.container_status(cid).status.log_path)
    client.remove_pod_sandbox(pod.id)
    client.remove_pod_sandbox(pod.id)
    assert [p.id for p in client.list_pod_sandbox()] == []
    assert client.list_containers() == []
    for call in (lambda: client.pod_sandbox_status(pod.id),
                 lambda: client.container_status(cid)):
        try:
            call()
        except CriError as exc:
            assert exc.code.name == "NOT_FOUND", exc
        else:
            raise AssertionError("a removed pod or container still has a status")
    assert log_path.is_file()


# --- exec, attach, port forward ----------------------------------------------------------------


def check_exec_sync(env: CriEnv, handler: str) -> None:
    """ExecSync returns stdout, stderr and the exit code; a timeout is DEADLINE_EXCEEDED."""
    with running_pod(env, handler, "execsync") as pod:
        config = env.client.container_config("sleeper", env.image, command=SLEEP,
                                             env={"GREETING": "hi there"})
        cid = env.client.create_and_start(pod, config)
        res = env.client.exec_sync(cid, ["sh", "-c", 'echo "$GREETING"; echo err >&2; exit 3'])
        assert (res.stdout, res.stderr, res.exit_code) == (b"hi there\n", b"err\n", 3)
        try:
            env.client.exec_sync(cid, ["sleep", "30"], timeout=2)
        except CriError as exc:
            assert exc.code.name == "DEADLINE_EXCEEDED", exc
        else:
            raise AssertionError("ExecSync did not time out")
        assert exec_ok(env.client, cid, "echo", "still alive") == "still alive\n"


def check_exec_streams(env: CriEnv, handler: str) -> None:
    """Streaming Exec keeps stdout and stderr apart and reports the exit code in its status."""
    with running_pod(env, handler, "exec") as pod:
        cid = start(env, pod, "sleeper", SLEEP)
        url = env.client.exec(cid, ["sh", "-c", "echo out; echo err >&2; exit 7"])
        result = streaming.run(url)
        assert (result.stdout, result.stderr, result.exit_code) == (b"out\n", b"err\n", 7)
        assert result.channels[-1] == streaming.STATUS


def check_exec_tty(env: CriEnv, handler: str) -> None:
    """An interactive TTY exec: the shell sees the size sent on the resize channel and
    TERM=xterm; exit status 5 comes back."""
    with running_pod(env, handler, "tty") as pod:
        cid = start(env, pod, "sleeper", SLEEP)
        url = env.client.exec(cid, ["sh"], tty=True, stdin=True, stdout=True, stderr=False)
        with streaming.Session(url) as session:
            _resize_until_seen(session, 123, 45)
            session.write(b"echo term=$TERM; exit 5\n")
            result = session.wait(timeout=60)
    assert b"term=xterm" in result.stdout
    assert result.exit_code == 5


def _resize_until_seen(session: streaming.Session, width: int, height: int) -> None:
    """Resize, then ask stty; the resize may reach the pty after the shell starts, so repeat."""
    want = f"{height} {width}".encode()
    deadline = time.monotonic() + READY_TIMEOUT
    while time.monotonic() < deadline:
        session.resize(width, height)
        session.write(b"stty size\n")
        with contextlib.suppress(TimeoutError):
            session.read_until(want, timeout=3)
            return
    raise AssertionError(f"stty never printed {want!r}: {session.result.stdout[-300:]!r}")


def check_attach(env: CriEnv, handler: str) -> None:
    """Attach reaches a running container's stdin and stdout (which also go to its log)."""
    with running_pod(env, handler, "attach") as pod:
        cid = start(env, pod, "echoer", ["sh", "-c", "while read l; do echo got-$l; done"],
                    stdin=True)
        env.client.wait_container(cid, pb.CONTAINER_RUNNING, timeout=READY_TIMEOUT)
        url = env.client.attach(cid, stdin=True, stdout=True, stderr=True)
        with streaming.Session(url) as session:
            session.write(b"ping\n")
            assert b"got-ping" in session.read_until(b"got-ping", timeout=60)
        log_path = env.client.container_status(cid).status.log_path
        wait_until("attached output in the log",
                   lambda: b"got-ping" in logs.lines(logs.read(log_path), "stdout"), 30)


def check_port_forward(env: CriEnv, handler: str) -> None:
    """PortForward carries an HTTP exchange to a port inside the pod."""
    with running_pod(env, handler, "portfwd") as pod:
        cid = start(env, pod, "web", httpd())
        wait_httpd(env.client, cid)
        url = env.client.port_forward(pod.id, [HTTP_PORT])
        answer = streaming.forward_once(url, b"GET /index.html HTTP/1.0\r\nHost: pod\r\n\r\n")
    assert answer.startswith(b"HTTP/1.") and b" 200 " in answer.split(b"\r\n")[0], answer
    assert answer.endswith(BODY.encode() + b"\n")


# --- network -----------------------------------------------------------------------------------


def check_pod_ip(env: CriEnv, handler: str) -> None:
    """The pod gets an address in the test's own subnet, has no default route (nothing leaves
    the bridge), answers ping and HTTP from the host on that address, and reaches the bridge's
    gateway (the test's own bridge address) itself."""
    with running_pod(env, handler, "podip") as pod:
        cid = start(env, pod, "web", httpd())
        ip = pod_ip(env.client, pod)
        assert ip in {str(a) for a in env.network.subnet.hosts()} - {str(env.network.gateway)}
        wait_httpd(env.client, cid)
        assert "default" not in exec_ok(env.client, cid, "ip", "route")
        assert http_get(f"http://{ip}:{HTTP_PORT}/") == BODY + "\n"
        ping = subprocess.run(["busybox", "ping", "-c", "2", "-W", "5", ip],
                              capture_output=True, text=True, timeout=30)
        assert ping.returncode == 0 and " 0% packet loss" in ping.stdout, ping.stdout
        out = exec_ok(env.client, cid, "ping", "-c", "2", "-W", "5", str(env.network.gateway))
        assert " 0% packet loss" in out, out


def check_pods_reach_each_other(env: CriEnv, handler: str) -> None:
    """Two pods on the bridge: one fetches the other's page by pod IP."""
    with running_pod(env, handler, "server") as server, \
            running_pod(env, handler, "client") as client_pod:
        web = start(env, server, "web", httpd())
        other = start(env, client_pod, "curl", SLEEP)
        wait_httpd(env.client, web)
        url = f"http://{pod_ip(env.client, server)}:{HTTP_PORT}/"
        assert pod_ip(env.client, server) != pod_ip(env.client, client_pod)
        # (no -T: Debian's static busybox 1.35 wget segfaults with it)
        assert exec_ok(env.client, other, "wget", "-qO-", url) == BODY + "\n"


def check_host_port(env: CriEnv, handler: str) -> None:
    """portmap's hostPort on the bridge's gateway address reaches the pod's port."""
    gateway, port = str(env.network.gateway), free_port()
    mapping = pb.PortMapping(container_port=HTTP_PORT, host_port=port, host_ip=gateway)
    with running_pod(env, handler, env.client.pod_config("hostport", ports=[mapping])) as pod:
        cid = start(env, pod, "web", httpd())
        wait_httpd(env.client, cid)
        assert http_get(f"http://{gateway}:{port}/") == BODY + "\n"


def check_dns_hostname_hosts(env: CriEnv, handler: str) -> None:
    """dns_config becomes /etc/resolv.conf; hostname is the pod's (also in /etc/hostname and
    $HOSTNAME); /etc/hosts is containerd's copy of the host's."""
    dns = pb.DNSConfig(servers=[str(env.network.gateway)], searches=["a.test", "b.test"],
                       options=["ndots:2", "timeout:1"])
    config = env.client.pod_config("dns", hostname="podhost", dns=dns)
    with running_pod(env, handler, config) as pod:
        cid = start(env, pod, "sleeper", SLEEP)
        resolv = exec_ok(env.client, cid, "cat", "/etc/resolv.conf")
        assert resolv.splitlines() == ["search a.test b.test",
                                       f"nameserver {env.network.gateway}",
                                       "options ndots:2 timeout:1"]
        assert exec_ok(env.client, cid, "hostname") == "podhost\n"
        assert exec_ok(env.client, cid, "cat", "/etc/hostname") == "podhost\n"
        assert exec_ok(env.client, cid, "sh", "-c", "echo $HOSTNAME") == "podhost\n"
        assert exec_ok(env.client, cid, "cat", "/etc/hosts") == Path("/etc/hosts").read_text()


# --- stats, resources, security ----------------------------------------------------------------


def check_stats(env: CriEnv, handler: str) -> None:
    """ContainerStats, ListContainerStats and PodSandboxStats report non-zero CPU and memory,
    eth0 traffic and a process count."""
    client = env.client
    with running_pod(env, handler, "stats") as pod:
        cid = start(env, pod, "web", httpd())
        wait_httpd(client, cid)
        http_get(f"http://{pod_ip(client, pod)}:{HTTP_PORT}/")
        stats = client.container_stats(cid)
        assert stats.attributes.id == cid and stats.attributes.metadata.name == "web"
        assert stats.cpu.usage_core_nano_seconds.value > 0, stats
        assert stats.memory.working_set_bytes.value > 0, stats
        listed = client.list_container_stats(pb.ContainerStatsFilter(pod_sandbox_id=pod.id))
        assert [s.attributes.id for s in listed] == [cid]
        linux = client.pod_sandbox_stats(pod.id).linux
        assert linux.cpu.usage_core_nano_seconds.value > 0, linux
        assert linux.memory.working_set_bytes.value > 0, linux
        assert linux.network.default_interface.name == "eth0", linux.network
        assert linux.network.default_interface.rx_bytes.value > 0, linux.network
        assert linux.process.process_count.value >= 1, linux.process
        assert cid in [c.attributes.id for c in linux.containers]


def check_update_resources(env: CriEnv, handler: str) -> None:
    """UpdateContainerResources on a running container: CRI reports the new limits and the
    container's memory cgroup enforces the new limit."""
    mib64 = 64 << 20
    with running_pod(env, handler, "update") as pod:
        cid = start(env, pod, "sleeper", SLEEP)
        env.client.wait_container(cid, pb.CONTAINER_RUNNING, timeout=READY_TIMEOUT)
        env.client.update_container_resources(cid, pb.LinuxContainerResources(
            memory_limit_in_bytes=mib64, cpu_period=100000, cpu_quota=50000))
        resources = env.client.container_status(cid).status.resources.linux
        assert (resources.memory_limit_in_bytes, resources.cpu_quota) == (mib64, 50000)
        # cgroup v2 in a Bulkhead guest, v1 for runc on this hybrid host
        limit = exec_ok(env.client, cid, "sh", "-c", "cat /sys/fs/cgroup/memory.max 2>/dev/null"
                        " || cat /sys/fs/cgroup/memory/memory.limit_in_bytes")
        assert int(limit) == mib64


def check_security_context(env: CriEnv, handler: str) -> None:
    """run_as_user/group, readonly_rootfs, dropped and added capabilities and no_new_privs
    reach the container's process."""
    security = pb.LinuxContainerSecurityContext(
        run_as_user=pb.Int64Value(value=65534), run_as_group=pb.Int64Value(value=65534),
        readonly_rootfs=True, no_new_privs=True,
        capabilities=pb.Capability(drop_capabilities=["ALL"],
                                   add_capabilities=["NET_BIND_SERVICE"]))
    script = ('id -u; id -g; grep -E "^(CapBnd|CapEff|NoNewPrivs):" /proc/self/status; '
              "touch /probe 2>/dev/null && echo rootfs-writable || echo rootfs-readonly")
    with running_pod(env, handler, "security") as pod:
        cid = start(env, pod, "restricted", ["sh", "-c", script],
                    linux=pb.LinuxContainerConfig(security_context=security))
        status = env.client.wait_container(cid, timeout=READY_TIMEOUT)
        out = logs.lines(logs.read(status.log_path), "stdout")
    assert status.exit_code == 0, status
    fields = [re.sub(rb"\s+", b" ", line) for line in out]
    # Only NET_BIND_SERVICE (bit 10) stays bounded; a non-root user has none effective.
    assert fields == [b"65534", b"65534", b"CapEff: 0000000000000000",
                      b"CapBnd: 0000000000000400", b"NoNewPrivs: 1", b"rootfs-readonly"], out


def check_mounts(env: CriEnv, handler: str, host_dir: Path) -> None:
    """Host directories mounted read-only and read-write: contents visible both ways, writes
    refused on the read-only one."""
    ro, rw = host_dir / "ro", host_dir / "rw"
    ro.mkdir()
    rw.mkdir()
    (ro / "file").write_text("from the host\n")
    mounts = [pb.Mount(container_path="/ro", host_path=str(ro), readonly=True),
              pb.Mount(container_path="/rw", host_path=str(rw))]
    script = ("cat /ro/file; echo from-container > /rw/out; "
              "touch /ro/x 2>/dev/null && echo ro-writable || echo ro-refused")
    with running_pod(env, handler, "mounts") as pod:
        cid = start(env, pod, "mounter", ["sh", "-c", script], mounts=mounts)
        status = env.client.wait_container(cid, timeout=READY_TIMEOUT)
        out = logs.lines(logs.read(status.log_path), "stdout")
    assert out == [b"from the host", b"ro-refused"], out
    assert (rw / "out").read_text() == "from-container\n"
    assert not (ro / "x").exists()


def check_reopen_log(env: CriEnv, handler: str) -> None:
    """After the log file is renamed, ReopenContainerLog makes new output go to a new file."""
    with running_pod(env, handler, "reopen") as pod:
        cid = start(env, pod, "ticker",
                    ["sh", "-c", "i=0; while :; do i=$((i+1)); echo tick-$i; sleep 0.2; done"])
        log_path = Path(env.client.container_status(cid).status.log_path)
        wait_until("first ticks", lambda: log_path.is_file() and b"tick-2" in
                   log_path.read_bytes(), READY_TIMEOUT)
        log_path.rename(log_path.with_suffix(".log.1"))
        env.client.reopen_container_log(cid)
        wait_until("ticks in the new file", lambda: log_path.is_file() and
                   len(logs.read(log_path)) >= 2, 30)
    old = logs.read(log_path.with_suffix(".log.1"))
    new = logs.read(log_path)
    assert new[0].time >= old[-1].time


def check_annotations(env: CriEnv, handler: str) -> None:
    """Pod and container annotations matching the handler's globs reach the OCI spec."""
    config = env.client.pod_config("annotated", annotations={"bulkhead.dev/pod": "p",
                                                              "other.dev/pod": "x"})
    with running_pod(env, handler, config) as pod:
        cid = start(env, pod, "sleeper", SLEEP, annotations={"bulkhead.dev/ctr": "c"})
        info = json.loads(env.client.container_status(cid, verbose=True).info["info"])
    annotations = info["runtimeSpec"]["annotations"]
    assert annotations["bulkhead.dev/pod"] == "p" and annotations["bulkhead.dev/ctr"] == "c"
    assert "other.dev/pod" not in annotations
    assert annotations["io.kubernetes.cri.sandbox-id"] == pod.id


# --- for instance-level tests ------------------------------------------------------------------

unique_name = unique


def leave_running_pod(instance: PrivateContainerd, log_root: Path) -> None:
    """Run a pod with a hostPort and a running container on instance, and leave it running."""
    with CriClient(instance.address, PodDefaults(cgroup_parent=instance.cgroup_parent,
                                                 log_root=log_root)) as client:
        client.wait_ready()
        assert instance.network is not None
        mapping = pb.PortMapping(container_port=HTTP_PORT, host_port=free_port(),
                                 host_ip=str(instance.network.gateway))
        pod = client.run_pod(client.pod_config("left", ports=[mapping]), "runc")
        config = client.container_config("web", "docker.io/bulkhead/demo:latest",
                                         command=httpd())
        client.create_and_start(pod, config)


# --- pods of several containers, shared volumes and /dev/shm -----------------------------------


def pod_shims(env: CriEnv, pod_id: str) -> list[procs.Proc]:
    """The long-running shim(s) of this instance serving pod_id (runc's shim groups a pod's
    containers too); not the short `start`/`delete` invocations."""
    address = str(env.instance.address)
    return [p for p in procs.processes()
            if procs.has_arg_pair(p, "-address", address) and procs.has_arg_pair(p, "-id", pod_id)
            and not {"start", "delete"} & set(p.argv)]


def pod_vms(pod_id: str) -> list[procs.Proc]:
    """QEMU processes whose state lives in this pod's sandbox dir."""
    return [p for p in procs.processes() if is_qemu(p) and f"/{pod_id}/" in p.command]


def pod_state_dirs(pod_id: str) -> list[str]:
    """Bulkhead state dirs /run/bulkhead/<namespace>/<pod_id>."""
    return sorted(d for d in sandbox_dirs() if d.endswith("/" + pod_id))


def pod_shim_socket(env: CriEnv, pod_id: str) -> Path:
    return shim_socket_path(env.instance.address, CRI_NAMESPACE, pod_id)


def pod_leftovers(env: CriEnv, pod_id: str) -> list[str]:
    """What of a removed pod still exists: CRI entries, shims and their socket, VMs, state
    dirs, its mounts."""
    socket_path = pod_shim_socket(env, pod_id)
    left = [f"shim socket {socket_path}"] if socket_path.exists() else []
    left += [f"pod {p.id[:12]}" for p in env.client.list_pod_sandbox() if p.id == pod_id]
    left += [f"container {c.id[:12]}" for c in env.client.list_containers()
             if c.pod_sandbox_id == pod_id]
    left += [f"shim {p.pid}: {p.command[:120]}" for p in pod_shims(env, pod_id)]
    left += [f"qemu {p.pid}" for p in pod_vms(pod_id)]
    left += [f"state dir {d}" for d in pod_state_dirs(pod_id)]
    left += [f"mount {m.mount_point}" for m in mounts.mounts_under(BULKHEAD_RUN_DIR)
             if f"/{pod_id}" in m.mount_point]
    return left


def check_three_containers(env: CriEnv, handler: str) -> None:
    """Three containers in one pod: one shim process for the pod (and for Bulkhead one QEMU);
    StopContainer and RemoveContainer of one leave the others running and exec-able; the pod
    then stops and goes promptly, its shim and VM with it."""
    client = env.client
    with running_pod(env, handler, "trio") as pod:
        ids = [start(env, pod, f"c{i}", SLEEP) for i in range(3)]
        for cid in ids:
            client.wait_container(cid, pb.CONTAINER_RUNNING, timeout=READY_TIMEOUT)
        shims = pod_shims(env, pod.id)
        assert len(shims) == 1, [p.command for p in shims]
        if handler == "bulkhead":
            assert "bulkhead.shim.daemon" in shims[0].argv, shims[0].command
            assert len(pod_vms(pod.id)) == 1, [p.command for p in pod_vms(pod.id)]
            # where the leak checks look for its state
            assert pod_state_dirs(pod.id) == [f"{CRI_NAMESPACE}/{pod.id}"], sandbox_dirs()
        victim, survivors = ids[0], ids[1:]
        client.stop_container(victim, timeout=0)
        assert _exit(client, victim) == (137, "Error")
        for cid in survivors:
            assert client.container_status(cid).status.state == pb.CONTAINER_RUNNING
            assert exec_ok(client, cid, "echo", "alive") == "alive\n"
        client.remove_container(victim)
        listed = client.list_containers(pb.ContainerFilter(pod_sandbox_id=pod.id))
        assert sorted(c.id for c in listed) == sorted(survivors)
        for cid in survivors:
            assert exec_ok(client, cid, "cat", "/proc/1/cmdline") == "sleep\x00600\x00"
        assert [p.pid for p in pod_shims(env, pod.id)] == [shims[0].pid]
        if handler == "bulkhead":
            assert len(pod_vms(pod.id)) == 1
        began = time.monotonic()
    took = time.monotonic() - began
    assert took < 20, f"stopping and removing the pod took {took:.1f} s"
    wait_until("the pod's shim and VM to exit", lambda: not pod_leftovers(env, pod.id), 15)


def check_shared_volume(env: CriEnv, handler: str, host_dir: Path) -> None:
    """One host directory mounted into two containers of a pod: each sees what the other
    wrote (also after an overwrite), and the host sees both."""
    volume = host_dir / "shared"
    volume.mkdir()
    mount = [pb.Mount(container_path="/data", host_path=str(volume))]
    with running_pod(env, handler, "sharedvol") as pod:
        writer = start(env, pod, "writer", SLEEP, mounts=mount)
        reader = start(env, pod, "reader", SLEEP, mounts=mount)
        exec_ok(env.client, writer, "sh", "-c", "echo first > /data/note")
        assert exec_ok(env.client, reader, "cat", "/data/note") == "first\n"
        exec_ok(env.client, writer, "sh", "-c", "echo second >> /data/note")
        assert exec_ok(env.client, reader, "cat", "/data/note") == "first\nsecond\n"
        exec_ok(env.client, reader, "sh", "-c", "echo reply > /data/reply")
        assert exec_ok(env.client, writer, "cat", "/data/reply") == "reply\n"
        (volume / "from-host").write_text("host\n")
        for cid in (writer, reader):
            assert exec_ok(env.client, cid, "cat", "/data/from-host") == "host\n"
    assert (volume / "note").read_text() == "first\nsecond\n"
    assert (volume / "reply").read_text() == "reply\n"


SHM_KIB = 64 * 1024  # containerd's sandbox /dev/shm: a 64 MiB tmpfs shared by the pod (IPC=POD)


def shm_kib(client: CriClient, container_id: str) -> int:
    """The size of /dev/shm as `df -k` sees it in the container."""
    out = exec_ok(client, container_id, "df", "-k", "/dev/shm").splitlines()
    return int(out[-1].split()[1])


def check_shm(env: CriEnv, handler: str) -> None:
    """/dev/shm is one tmpfs for the pod: a file written there in one container is read in
    another; its size is containerd's 64 MiB; it is not the rootfs."""
    with running_pod(env, handler, "shm") as pod:
        first = start(env, pod, "first", SLEEP)
        second = start(env, pod, "second", SLEEP)
        exec_ok(env.client, first, "sh", "-c", "echo shared-memory > /dev/shm/probe")
        assert exec_ok(env.client, second, "cat", "/dev/shm/probe") == "shared-memory\n"
        exec_ok(env.client, second, "rm", "/dev/shm/probe")
        assert "gone" in exec_ok(env.client, first, "sh", "-c",
                                 "test -e /dev/shm/probe && echo there || echo gone")
        for cid in (first, second):
            assert shm_kib(env.client, cid) == SHM_KIB
            shm = [line.split() for line in exec_ok(env.client, cid, "cat", "/proc/mounts")
                   .splitlines() if line.split()[1:2] == ["/dev/shm"]]
            assert shm and shm[-1][2] == "tmpfs", shm


# --- termination message -----------------------------------------------------------------------

TERMINATION_LOG = "/dev/termination-log"
TERMINATION_MESSAGE = "goodbye: 3 widgets left\n"


def check_termination_message(env: CriEnv, handler: str, host_dir: Path) -> None:
    """kubelet's terminationMessagePath: it mounts an empty host file at /dev/termination-log
    (CRI has no field for it) and, once the container exited, reads that host file itself.
    What the container wrote there must be in the host file when ContainerStatus says EXITED;
    containerd puts nothing of it in ContainerStatus.message (kubelet falls back to the file
    when message is empty)."""
    message_file = host_dir / "termination-log"
    message_file.touch(mode=0o666)
    mount = pb.Mount(container_path=TERMINATION_LOG, host_path=str(message_file))
    script = f"printf '{TERMINATION_MESSAGE.strip()}\\n' > {TERMINATION_LOG}; exit 2"
    with running_pod(env, handler, "termlog") as pod:
        cid = start(env, pod, "quitter", ["sh", "-c", script], mounts=[mount])
        status = env.client.wait_container(cid, timeout=READY_TIMEOUT)
        assert (status.exit_code, status.reason) == (2, "Error"), status
        assert status.message == "", status
        assert message_file.read_text() == TERMINATION_MESSAGE
        assert [m.container_path for m in status.mounts] == [TERMINATION_LOG]


# --- many short-lived containers ---------------------------------------------------------------

SHORT_LIVED = 100  # containers in one pod, each printing LOG_LINES and exiting at once
LOG_LINES = 40  # lines per container, half on stdout, half on stderr
LOG_PAD = 80  # filler per line: ~4 KiB per container
SHORT_LIVED_CALLERS = 1  # concurrent Create+StartContainer calls: more only slow 2 TCG cores


def _payload_line(container: int, line: int) -> bytes:
    return f"c{container:03d} l{line:02d} ".encode() + b"p" * LOG_PAD


def check_many_short_logs(env: CriEnv, handler: str, count: int = SHORT_LIVED) -> None:
    """count containers in one pod, each writing a known few KiB to stdout and stderr and
    exiting at once: every line arrives, whole and in order, in each container's log file."""
    client = env.client
    with running_pod(env, handler, "manylogs") as pod:
        def launch(k: int) -> str:
            # shell builtins only: a fork per line would cost more than the container under TCG
            script = "; ".join(f"echo {_payload_line(k, i).decode()}" + (" >&2" if i % 2 else "")
                               for i in range(LOG_LINES))
            return start(env, pod, f"short{k:03d}", ["sh", "-c", script])

        began = time.monotonic()
        with ThreadPoolExecutor(SHORT_LIVED_CALLERS) as pool:
            ids = list(pool.map(launch, range(count)))
        print(f"{count} containers created and started in {time.monotonic() - began:.1f} s")
        short = []
        for k, cid in enumerate(ids):
            status = client.wait_container(cid, timeout=READY_TIMEOUT)
            assert status.exit_code == 0, status
            records = logs.read(status.log_path)
            want = {"stdout": [_payload_line(k, i) for i in range(0, LOG_LINES, 2)],
                    "stderr": [_payload_line(k, i) for i in range(1, LOG_LINES, 2)]}
            got = {stream: logs.lines(records, stream) for stream in want}
            if got != want:
                short.append(f"{k}: stdout {sum(map(len, got['stdout']))} of "
                             f"{sum(map(len, want['stdout']))} bytes, stderr "
                             f"{sum(map(len, got['stderr']))} of "
                             f"{sum(map(len, want['stderr']))}")
    assert not short, f"{len(short)} of {count} logs incomplete:\n  " + "\n  ".join(short[:20])


SEQ_BYTES = len("".join(f"{i}\n" for i in range(1, 5001)).encode())  # `seq 1 5000`
# (command, exit code, stderr): runs to the end, exits at once after writing, killed right
# after writing, and replaced by the writer itself.
SHORT_VARIANTS = (("seq 1 5000; echo done >&2", 0, b"done"),
                  ("seq 1 5000; echo done >&2; exit 3", 3, b"done"),
                  # (PID 1 of the container ignores a SIGKILL from inside: a child shell, not
                  # exec'd by the outer one thanks to the `exit $?`, kills itself)
                  ("sh -c 'seq 1 5000; echo done >&2; kill -9 $$'; exit $?", 137,
                   b"done\nKilled"),  # the outer shell reports the child's death
                  ("exec seq 1 5000", 0, b""))


def check_short_lived_byte_counts(env: CriEnv, handler: str, count: int = 500) -> None:
    """count containers in one pod, each writing 5000 numbers to stdout and a word to stderr
    and ending at once (exit, exit code, SIGKILL, exec): every byte of both streams is in the
    container's log, counted exactly. Each container is removed once checked; two callers
    keep the pod busy."""
    client = env.client

    def one(pod: Pod, k: int) -> str:
        script, code, err = SHORT_VARIANTS[k % len(SHORT_VARIANTS)]
        cid = start(env, pod, f"count{k:03d}", ["sh", "-c", script])
        status = client.wait_container(cid, timeout=READY_TIMEOUT)
        records = logs.read(status.log_path)
        out_bytes = sum(len(line) + 1 for line in logs.lines(records, "stdout"))
        got_err = b"\n".join(logs.lines(records, "stderr"))
        client.remove_container(cid)
        if (status.exit_code, out_bytes, got_err) == (code, SEQ_BYTES, err):
            return ""
        return (f"{k} ({script!r}): exit {status.exit_code} (want {code}), stdout "
                f"{out_bytes} of {SEQ_BYTES} bytes, stderr {got_err!r}")

    with running_pod(env, handler, "bytecount") as pod:
        began = time.monotonic()
        with ThreadPoolExecutor(2) as pool:
            lost = [r for r in pool.map(lambda k: one(pod, k), range(count)) if r]
        print(f"{count} containers in {time.monotonic() - began:.1f} s")
    assert not lost, f"{len(lost)} of {count} lost output:\n  " + "\n  ".join(lost[:20])


# --- pods in parallel --------------------------------------------------------------------------

PARALLEL_PODS = 5


def _netns_path(env: CriEnv, pod: Pod) -> str:
    info = json.loads(env.client.pod_sandbox_status(pod.id, verbose=True).info["info"])
    for ns in info["runtimeSpec"]["linux"]["namespaces"]:
        if ns["type"] == "network":
            return str(ns["path"])
    raise AssertionError(f"pod {pod.id[:12]} has no network namespace path")


def _links_in(netns: str) -> dict[str, str]:
    """name -> MAC of every link in the namespace but lo."""
    out = subprocess.run(["nsenter", f"--net={netns}", "ip", "-o", "link"], check=True,
                         capture_output=True, text=True).stdout
    links = {}
    for line in out.splitlines():
        name = line.split(":")[1].strip().split("@")[0]
        mac = line.split("link/ether ")[1].split()[0] if "link/ether " in line else ""
        if name != "lo":
            links[name] = mac
    return links


def check_parallel_pods(env: CriEnv, handler: str, count: int = PARALLEL_PODS) -> None:
    """count pods started at once from threads all come up; each container sees its own pod's
    IP, MAC and hostname; for Bulkhead each pod is its own QEMU with one tap, in its own
    netns; everything goes again."""
    client = env.client
    names = [f"par{i}" for i in range(count)]

    def bring_up(name: str) -> tuple[Pod, str]:
        pod = client.run_pod(client.pod_config(name, hostname=name), handler)
        try:
            return pod, start(env, pod, "sleeper", SLEEP)
        except BaseException:
            client.stop_and_remove_pod(pod.id)
            raise

    with ThreadPoolExecutor(count) as pool:
        futures = [pool.submit(bring_up, name) for name in names]
        wait_futures(futures)
    pods = [f.result() for f in futures if f.exception() is None]
    try:
        errors = [f.exception() for f in futures if f.exception() is not None]
        assert not errors, f"{len(errors)} of {count} pods failed: {errors}"
        ips = [pod_ip(client, pod) for pod, _ in pods]
        assert len(set(ips)) == count, ips
        netnses = [_netns_path(env, pod) for pod, _ in pods]
        assert len(set(netnses)) == count, netnses
        vms: set[int] = set()
        for (pod, cid), ip, netns, name in zip(pods, ips, netnses, names, strict=True):
            assert exec_ok(client, cid, "hostname") == name + "\n"
            addresses = exec_ok(client, cid, "ip", "-o", "-4", "addr", "show", "eth0")
            assert f"inet {ip}/" in addresses, (name, ip, addresses)
            links = _links_in(netns)
            guest_mac = exec_ok(client, cid, "cat", "/sys/class/net/eth0/address").strip()
            assert links["eth0"] == guest_mac, (name, links, guest_mac)
            if handler == "bulkhead":
                taps = sorted(n for n in links if n.startswith("tap"))
                assert len(taps) == 1 and taps[0].endswith("_eth0"), (name, links)
                pids = [p.pid for p in pod_vms(pod.id)]
                assert len(pids) == 1, (name, pids)
                vms.update(pids)
            else:
                assert set(links) == {"eth0"}, (name, links)
        if handler == "bulkhead":
            assert len(vms) == count, vms
        # every pod reaches the next one by IP through the bridge
        for i, (_, cid) in enumerate(pods):
            peer = ips[(i + 1) % count]
            exec_ok(client, cid, "ping", "-c", "1", "-W", "10", peer)
    finally:
        with ThreadPoolExecutor(count) as pool:
            list(pool.map(client.stop_and_remove_pod, [pod.id for pod, _ in pods]))
    ids = [pod.id for pod, _ in pods]
    wait_until("the pods to be gone",
               lambda: not [left for i in ids for left in pod_leftovers(env, i)], 15)


# --- chaos: pods whose VM or shim gets killed --------------------------------------------------

CHAOS_CYCLES = 50
CHAOS_SEED = 20261201
CHAOS_KILL_SHARE = 0.4  # of the cycles kill something: the sandbox process (QEMU) or the shim


def _retry(what: str, call: Callable[[], None], attempts: int = 4,
           pause: float = 2.0) -> list[str]:
    """call until it succeeds; returns the errors of the attempts that failed before."""
    errors: list[str] = []
    for _ in range(attempts):
        try:
            call()
            return errors
        except CriError as exc:
            errors.append(f"{what}: {exc}"[:700])
            if len(errors) == attempts:
                raise AssertionError(f"{what} failed {attempts} times: {exc}") from exc
            time.sleep(pause)
    raise AssertionError("unreachable")


def _sandbox_victims(env: CriEnv, handler: str, pod: Pod, target: str) -> list[int]:
    if target == "shim":
        return [p.pid for p in pod_shims(env, pod.id)]
    if handler == "bulkhead":
        return [p.pid for p in pod_vms(pod.id)]
    info = json.loads(env.client.pod_sandbox_status(pod.id, verbose=True).info["info"])
    return [int(info["pid"])]  # runc: the pause process


def _chaos_cycle(env: CriEnv, handler: str, cycle: int, target: str) -> list[str]:
    """One pod's life with target ("qemu", "shim" or "") killed; the errors retried."""
    client = env.client
    pod = client.run_pod(f"chaos{cycle}", handler)
    where = f"cycle {cycle} (kill: {target or 'nothing'}, pod {pod.id[:12]})"
    try:
        cid = start(env, pod, "sleeper", SLEEP)
        client.wait_container(cid, pb.CONTAINER_RUNNING, timeout=READY_TIMEOUT)
        if target:
            victims = _sandbox_victims(env, handler, pod, target)
            assert len(victims) == 1, f"{where}: {target} processes {victims}"
            assert not procs.kill_and_wait(victims), f"{where}: {victims} survived SIGKILL"
    finally:
        failed = _retry(f"{where}: StopPodSandbox", lambda: client.stop_pod_sandbox(pod.id))
        failed += _retry(f"{where}: RemovePodSandbox", lambda: client.remove_pod_sandbox(pod.id))
    if handler == "runc" and target == "shim":
        # runc's shim unlinks its socket on a clean exit only, and neither containerd's
        # cleanup (`shim delete`) nor anything else does after a SIGKILL: the baseline leaks
        # it; Bulkhead must not.
        pod_shim_socket(env, pod.id).unlink(missing_ok=True)
    try:
        wait_until("the pod to be gone", lambda: not pod_leftovers(env, pod.id), 15)
    except AssertionError:
        raise AssertionError(f"{where}: left {pod_leftovers(env, pod.id)}") from None
    return failed


def check_chaos(env: CriEnv, handler: str, cycles: int = CHAOS_CYCLES,
                seed: int = CHAOS_SEED) -> None:
    """cycles of: run a pod with a container, SIGKILL its sandbox process (QEMU for Bulkhead,
    pause for runc) or its shim in some cycles (seeded), then StopPodSandbox and
    RemovePodSandbox (retried: a dead shim may fail the first call). After each cycle nothing
    of the pod may remain: no CRI entry, shim, VM, Bulkhead state dir or mount."""
    rng = random.Random(seed)
    retries: list[str] = []
    for cycle in range(cycles):
        target = rng.choice(["qemu", "shim"]) if rng.random() < CHAOS_KILL_SHARE else ""
        retries += _chaos_cycle(env, handler, cycle, target)
    client = env.client
    assert client.list_pod_sandbox() == [] and client.list_containers() == []
    print(f"chaos: {cycles} cycles, {len(retries)} failed calls retried", *retries, sep="\n  ")


# --- refused pods ------------------------------------------------------------------------------

SANDBOX_MEMORY = "io.kubernetes.cri.sandbox-memory"
TOO_LITTLE_MEMORY = 16 << 20


def check_small_memory_pod(env: CriEnv, handler: str) -> None:
    """A pod limited to 16 MiB (containerd passes the pod's memory limit to the runtime as the
    io.kubernetes.cri.sandbox-memory annotation): runc runs it (the pause process fits), a
    Bulkhead VM cannot, so RunPodSandbox fails naming the 32 MiB minimum and leaves nothing."""
    resources = pb.LinuxContainerResources(memory_limit_in_bytes=TOO_LITTLE_MEMORY)
    config = env.client.pod_config("tiny", linux=pb.LinuxPodSandboxConfig(resources=resources))
    if handler != "bulkhead":
        with running_pod(env, handler, config) as pod:
            info = json.loads(env.client.pod_sandbox_status(pod.id, verbose=True).info["info"])
            annotations = info["runtimeSpec"]["annotations"]
            assert annotations.get(SANDBOX_MEMORY) == str(TOO_LITTLE_MEMORY), annotations
        return
    try:
        pod_id = env.client.run_pod_sandbox(config, handler)
    except CriError as exc:
        assert "32 MiB" in exc.details, exc
    else:
        env.client.stop_and_remove_pod(pod_id)
        raise AssertionError("a Bulkhead pod of 16 MiB was run")
    assert env.client.list_pod_sandbox() == [], env.client.list_pod_sandbox()
    assert env.client.list_containers() == []
