"""CRI checks under load for a runtime handler: many short-lived containers whose every log
line and byte must arrive, pods started in parallel, and chaos cycles that SIGKILL a pod's VM
or shim and then require that nothing of the pod remains."""

from __future__ import annotations

import json
import random
import subprocess
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from concurrent.futures import wait as wait_futures

from bulkhead.demo import procs

from cri import logs
from cri import runtime_v1_pb2 as pb
from cri.client import CriError, Pod
from cri.fixtures import CriEnv
from cri.pod_tools import (
    READY_TIMEOUT,
    SLEEP,
    exec_ok,
    pod_ip,
    pod_leftovers,
    pod_shim_socket,
    pod_shims,
    pod_vms,
    running_pod,
    start,
    wait_until,
)

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
