"""Network namespaces for the network tests, and a CNI-bridge-like pod network inside them.

Everything a test builds (veths, bridges, taps, qdiscs) lives in namespaces the test created,
named bhnettest-<pid>-...: deleting those namespaces removes all of it, and nothing touches the
host's own namespace. Namespaces left by a killed run are removed by the next one.
"""

from __future__ import annotations

import itertools
import json
import os
import subprocess
from dataclasses import dataclass
from typing import Any

PREFIX = "bhnettest"
NETNS_DIR = "/var/run/netns"
_counter = itertools.count()


def ip(*args: str, netns: str | None = None) -> str:
    """Run `ip [-n netns] args...`; a failure raises with ip's own message."""
    argv = ["ip", *(["-n", netns] if netns else []), *args]
    done = subprocess.run(argv, capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)}: {done.stderr.strip()}")
    return done.stdout


def ip_json(*args: str, netns: str | None = None) -> list[dict[str, Any]]:
    out = ip("-j", *args, netns=netns).strip()
    return json.loads(out) if out else []


def tc_json(*args: str, netns: str) -> list[dict[str, Any]]:
    done = subprocess.run(["tc", "-n", netns, "-j", *args], capture_output=True, text=True,
                          check=True)
    return json.loads(done.stdout) if done.stdout.strip() else []


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def reap_stale() -> None:
    """Delete test namespaces whose creating process is gone (a killed earlier run)."""
    for name in os.listdir(NETNS_DIR) if os.path.isdir(NETNS_DIR) else ():
        parts = name.split("-")
        if parts[0] == PREFIX and len(parts) > 2 and parts[1].isdigit():
            if not _pid_alive(int(parts[1])):
                subprocess.run(["ip", "netns", "del", name], capture_output=True)


def leftover_namespaces() -> list[str]:
    """This process's test namespaces that still exist."""
    mine = f"{PREFIX}-{os.getpid()}-"
    names = os.listdir(NETNS_DIR) if os.path.isdir(NETNS_DIR) else []
    return sorted(n for n in names if n.startswith(mine))


def netns_dir_made() -> bool:
    """True when `ip netns add` would make NETNS_DIR (call before it): see release_netns_dir."""
    return not os.path.lexists(NETNS_DIR)


def release_netns_dir(made: bool) -> None:
    """Undo what the first `ip netns add` does to the host (it makes NETNS_DIR and mounts it on
    itself, shared) when this test made it and no namespace is left in it."""
    if not made or not os.path.isdir(NETNS_DIR) or os.listdir(NETNS_DIR):
        return
    real = os.path.realpath(NETNS_DIR)
    with open("/proc/self/mountinfo") as f:
        mounted = any(line.split()[4] == real for line in f)
    if mounted:
        subprocess.run(["umount", real], capture_output=True, check=True)
    os.rmdir(real)


class Namespaces:
    """Creates namespaces for one test; remove_all() deletes them and all they hold."""

    def __init__(self) -> None:
        self.names: list[str] = []
        self.made_dir = netns_dir_made()

    def add(self, role: str) -> str:
        name = f"{PREFIX}-{os.getpid()}-{next(_counter)}-{role}"
        ip("netns", "add", name)
        self.names.append(name)
        return name

    def remove_all(self) -> None:
        for name in reversed(self.names):
            subprocess.run(["ip", "netns", "del", name], capture_output=True)
        self.names.clear()
        release_netns_dir(self.made_dir)


def path(netns: str) -> str:
    return f"{NETNS_DIR}/{netns}"


@dataclass(frozen=True)
class PodNet:
    """A pod namespace wired like CNI's bridge plugin does it, to a bridge in a "node" namespace.

    node: bridge cni0 (10.88.0.1/24, fd00:88::1/64) with the veth end veth0 as its port;
    pod:  eth0 (the other veth end) with 10.88.0.2/24, fd00:88::2/64, MTU 1400, a default route
          via 10.88.0.1 (and ::1), and 10.99.0.0/16 via 10.88.0.1 metric 100.
    """

    pod: str
    node: str
    mac: str = "0a:58:0a:58:00:02"
    bridge_mac: str = "0a:58:0a:58:00:01"
    ip: str = "10.88.0.2"
    gateway: str = "10.88.0.1"
    ip6: str = "fd00:88::2"
    gateway6: str = "fd00:88::1"
    mtu: int = 1400

    @property
    def pod_path(self) -> str:
        return path(self.pod)


def make_pod_net(namespaces: Namespaces) -> PodNet:
    net = PodNet(pod=namespaces.add("pod"), node=namespaces.add("node"))
    node, pod = net.node, net.pod
    ip("link", "add", "cni0", "type", "bridge", netns=node)
    ip("link", "set", "cni0", "address", net.bridge_mac, "mtu", str(net.mtu), netns=node)
    ip("addr", "add", f"{net.gateway}/24", "dev", "cni0", netns=node)
    ip("addr", "add", f"{net.gateway6}/64", "dev", "cni0", "nodad", netns=node)
    ip("link", "add", "veth0", "mtu", str(net.mtu), "type", "veth",
       "peer", "name", "eth0", "netns", pod, netns=node)
    ip("link", "set", "veth0", "master", "cni0", "up", netns=node)
    ip("link", "set", "cni0", "up", netns=node)
    ip("link", "set", "lo", "up", netns=pod)
    ip("link", "set", "eth0", "address", net.mac, "mtu", str(net.mtu), "up", netns=pod)
    ip("addr", "add", f"{net.ip}/24", "dev", "eth0", netns=pod)
    ip("addr", "add", f"{net.ip6}/64", "dev", "eth0", "nodad", netns=pod)
    ip("route", "add", "default", "via", net.gateway, "dev", "eth0", netns=pod)
    ip("route", "add", "10.99.0.0/16", "via", net.gateway, "dev", "eth0", "metric", "100",
       netns=pod)
    ip("-6", "route", "add", "default", "via", net.gateway6, "dev", "eth0", netns=pod)
    return net
