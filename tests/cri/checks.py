"""CRI behaviours checked for a runtime handler, shared by test_cri_runc.py (runc on every
containerd version) and test_cri_bulkhead.py (runc and Bulkhead side by side): each check runs
its own pods on the given handler and removes them again."""

from __future__ import annotations

import contextlib
import json
import re
import socket
import time
import urllib.request
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bulkhead.devenv.containerd import PrivateContainerd

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
    the bridge), and answers HTTP from the host on that address."""
    with running_pod(env, handler, "podip") as pod:
        cid = start(env, pod, "web", httpd())
        ip = pod_ip(env.client, pod)
        assert ip in {str(a) for a in env.network.subnet.hosts()} - {str(env.network.gateway)}
        wait_httpd(env.client, cid)
        assert "default" not in exec_ok(env.client, cid, "ip", "route")
        assert http_get(f"http://{ip}:{HTTP_PORT}/") == BODY + "\n"


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
