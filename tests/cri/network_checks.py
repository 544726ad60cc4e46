"""CRI network checks for a runtime handler: PortForward, the pod's IP on the test bridge from
the host and from another pod, hostPort, and the DNS, hostname and hosts files."""

from __future__ import annotations

import subprocess
from pathlib import Path

from cri import runtime_v1_pb2 as pb
from cri import streaming
from cri.fixtures import CriEnv
from cri.pod_tools import (
    BODY,
    HTTP_PORT,
    SLEEP,
    exec_ok,
    free_port,
    http_get,
    httpd,
    pod_ip,
    running_pod,
    start,
    wait_httpd,
)


def check_port_forward(env: CriEnv, handler: str) -> None:
    """PortForward carries an HTTP exchange to a port inside the pod."""
    with running_pod(env, handler, "portfwd") as pod:
        cid = start(env, pod, "web", httpd())
        wait_httpd(env.client, cid)
        url = env.client.port_forward(pod.id, [HTTP_PORT])
        answer = streaming.forward_once(url, b"GET /index.html HTTP/1.0\r\nHost: pod\r\n\r\n")
    assert answer.startswith(b"HTTP/1.") and b" 200 " in answer.split(b"\r\n")[0], answer
    assert answer.endswith(BODY.encode() + b"\n")


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
