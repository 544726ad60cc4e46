"""Host side of pod networking on real namespaces: read what CNI made, join a tap to it with tc
both ways, and prove that frames really flow through the redirect (by hand through the tap fd,
and between two real IP stacks with a relay standing in for QEMU)."""

from __future__ import annotations

import asyncio
import errno
import os
import select
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from typing import Any

import pytest
from bulkhead.network.pod_netns import read_pod_interfaces
from bulkhead.network.tap import (
    InterfaceNotFound,
    TapHandle,
    create_tap_redirect,
    open_tap,
    remove_tap_redirect,
    tap_name,
)
from bulkhead_agent.network import configure
from bulkhead_wire.netlink.model import Address, Interface, NetworkError, Route
from bulkhead_wire.netlink.netns import NetnsNotFound, call_in_netns
from frames import (
    ArpReply,
    EchoReply,
    arp_request,
    icmp_echo,
    parse_arp_reply,
    parse_echo_reply,
    tap_read_until,
    tap_write,
)
from netns_tools import (
    PREFIX,
    Namespaces,
    PodNet,
    ip,
    ip_json,
    leftover_namespaces,
    make_pod_net,
    path,
    reap_stale,
    tc_json,
)

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="network namespaces need root")


@pytest.fixture
def namespaces() -> Iterator[Namespaces]:
    reap_stale()
    made = Namespaces()
    try:
        yield made
    finally:
        made.remove_all()
        assert leftover_namespaces() == []


@pytest.fixture
def net(namespaces: Namespaces) -> PodNet:
    return make_pod_net(namespaces)


@pytest.fixture
def tap(net: PodNet) -> Iterator[TapHandle]:
    (eth0,) = asyncio.run(read_pod_interfaces(net.pod_path))
    handle = asyncio.run(create_tap_redirect(net.pod_path, eth0))
    try:
        yield handle
    finally:
        asyncio.run(handle.teardown())


def pod_interface(net: PodNet) -> Interface:
    """What CNI's bridge plugin would have left in the pod (see make_pod_net)."""
    return Interface(
        name="eth0", mac=net.mac, mtu=net.mtu,
        addresses=(Address(net.ip, 24), Address(net.ip6, 64)),
        routes=(Route("0.0.0.0", 0, net.gateway), Route("10.99.0.0", 16, net.gateway, metric=100),
                Route("::", 0, net.gateway6, metric=1024)))


def links(netns: str) -> dict[str, dict[str, Any]]:
    return {link["ifname"]: link for link in ip_json("link", "show", netns=netns)}


def ingress_filters(netns: str, dev: str) -> list[dict[str, Any]]:
    return tc_json("filter", "show", "dev", dev, "ingress", netns=netns)


def has_ingress_qdisc(netns: str, dev: str) -> bool:
    return any(q["kind"] == "ingress" for q in tc_json("qdisc", "show", "dev", dev, netns=netns))


def test_read_pod_interfaces(net: PodNet) -> None:
    (eth0,) = asyncio.run(read_pod_interfaces(net.pod_path))
    expected = pod_interface(net)
    assert (eth0.name, eth0.mac, eth0.mtu, eth0.addresses) == (
        expected.name, expected.mac, expected.mtu, expected.addresses)
    # No kernel prefix routes, no link-local ones: the guest's kernel makes those itself.
    assert set(eth0.routes) == set(expected.routes)
    assert Interface.from_dict(eth0.to_dict()) == eth0


def test_read_through_a_process_namespace_path(net: PodNet) -> None:
    argv = ["ip", "netns", "exec", net.pod, "sh", "-c", "echo in; exec sleep 60"]
    with subprocess.Popen(argv, stdout=subprocess.PIPE) as holder:
        try:
            assert holder.stdout is not None and holder.stdout.readline() == b"in\n"
            proc_path = f"/proc/{holder.pid}/ns/net"
            assert asyncio.run(read_pod_interfaces(proc_path)) == asyncio.run(
                read_pod_interfaces(net.pod_path))
        finally:
            holder.kill()


def test_a_missing_namespace_is_named(namespaces: Namespaces) -> None:
    missing = path(f"{PREFIX}-{os.getpid()}-never-made")
    with pytest.raises(NetnsNotFound, match=missing):
        asyncio.run(read_pod_interfaces(missing))
    with pytest.raises(NetnsNotFound, match=missing):
        asyncio.run(create_tap_redirect(missing, Interface("eth0", "0a:58:0a:58:00:02", 1500)))


def test_call_in_netns_always_comes_back(net: PodNet) -> None:
    home = os.readlink("/proc/thread-self/ns/net")
    inside = call_in_netns(net.pod_path, os.stat, "/proc/thread-self/ns/net")
    assert inside.st_ino == os.stat(net.pod_path).st_ino != os.stat("/proc/self/ns/net").st_ino
    with pytest.raises(ZeroDivisionError):
        call_in_netns(net.pod_path, lambda: 1 // 0)
    assert os.readlink("/proc/thread-self/ns/net") == home
    with pytest.raises(NetworkError, match="not a network namespace"):
        call_in_netns("/proc/self/ns/uts", os.getpid)
    assert os.readlink("/proc/thread-self/ns/net") == home


def test_tap_names_fit_the_kernel_limit() -> None:
    assert tap_name("eth0", 2) == "tap2_eth0"
    assert len(tap_name("net1-long-name", 123456)) == 15


def test_tap_redirect_is_set_up_both_ways(net: PodNet, tap: TapHandle) -> None:
    in_pod = links(net.pod)
    assert tap.name == tap_name("eth0", in_pod["eth0"]["ifindex"])
    assert (tap.netns_path, tap.interface) == (net.pod_path, "eth0")
    assert in_pod[tap.name]["mtu"] == net.mtu
    assert "UP" in in_pod[tap.name]["flags"]
    for dev, target in (("eth0", tap.name), (tap.name, "eth0")):
        actions = [a for f in ingress_filters(net.pod, dev) for a in f.get("options", {})
                   .get("actions", [])]
        assert [(a["kind"], a["to_dev"], a["mirred_action"]) for a in actions] == [
            ("mirred", target, "redirect")], f"filters on {dev}"
    # A second read (a restarted shim, say) still sees CNI's interface only, not our tap.
    assert [i.name for i in asyncio.run(read_pod_interfaces(net.pod_path))] == ["eth0"]


def test_frames_flow_through_the_redirect(net: PodNet, tap: TapHandle) -> None:
    # tap -> eth0 -> node bridge: the bridge answers an ARP request sent as the guest would.
    tap_write(tap.fd, arp_request(net.mac, net.ip, net.gateway))
    def arp_from_gateway(frame: bytes) -> ArpReply | None:
        reply = parse_arp_reply(frame)
        return reply if reply and reply.sender_ip == net.gateway else None

    def our_echo_reply(frame: bytes) -> EchoReply | None:
        echo = parse_echo_reply(frame)
        return echo if echo and echo.ident == 0x4242 else None

    reply = tap_read_until(tap.fd, arp_from_gateway)
    # ... and the answer came back eth0 -> tap.
    assert (reply.sender_mac, reply.target_mac, reply.target_ip) == (
        net.bridge_mac, net.mac, net.ip)
    tap_write(tap.fd, icmp_echo(net.mac, reply.sender_mac, net.ip, net.gateway, 0x4242, 7,
                                b"through the redirect"))
    echo = tap_read_until(tap.fd, our_echo_reply)
    assert (echo.dst_mac, echo.src_ip, echo.dst_ip, echo.seq, echo.data) == (
        net.mac, net.gateway, net.ip, 7, b"through the redirect")
    # The pod namespace's own stack saw none of it: it never learnt the bridge's MAC.
    assert not [n for n in ip_json("neigh", "show", "dev", "eth0", netns=net.pod)
                if n.get("lladdr") == net.bridge_mac]


def test_teardown_removes_tap_and_qdiscs(net: PodNet) -> None:
    (eth0,) = asyncio.run(read_pod_interfaces(net.pod_path))
    handle = asyncio.run(create_tap_redirect(net.pod_path, eth0))
    name = handle.name
    asyncio.run(handle.teardown())
    assert handle.fd == -1
    assert name not in links(net.pod)
    assert not has_ingress_qdisc(net.pod, "eth0")
    asyncio.run(handle.teardown())  # idempotent
    # The namespace's own stack has the interface back: the node reaches the pod's address.
    probe = call_in_netns(path(net.node), socket.socket, socket.AF_INET, socket.SOCK_DGRAM)
    with probe:
        probe.connect((net.ip, 9))
        probe.send(b"x")  # resolves the pod's MAC through ARP
    assert any(n.get("lladdr") == net.mac and n["dst"] == net.ip
               for n in ip_json("neigh", "show", "dev", "cni0", netns=net.node))


def test_crash_only_cleanup_needs_only_the_names(net: PodNet) -> None:
    (eth0,) = asyncio.run(read_pod_interfaces(net.pod_path))
    handle = asyncio.run(create_tap_redirect(net.pod_path, eth0))  # then the shim "dies"
    try:
        asyncio.run(remove_tap_redirect(net.pod_path, "eth0"))
        assert set(links(net.pod)) == {"lo", "eth0"}
        assert not has_ingress_qdisc(net.pod, "eth0")
    finally:
        handle.close()


def test_teardown_after_the_namespace_is_gone(net: PodNet, namespaces: Namespaces) -> None:
    (eth0,) = asyncio.run(read_pod_interfaces(net.pod_path))
    handle = asyncio.run(create_tap_redirect(net.pod_path, eth0))
    ip("netns", "del", net.pod)
    asyncio.run(handle.teardown())
    assert handle.fd == -1


def test_a_vanished_interface_is_named(net: PodNet) -> None:
    gone = Interface("eth9", "0a:58:0a:58:00:09", 1500)
    with pytest.raises(InterfaceNotFound, match=f"eth9 in network namespace {net.pod_path}"):
        asyncio.run(create_tap_redirect(net.pod_path, gone))


def test_a_second_tap_for_the_same_interface_fails_cleanly(net: PodNet, tap: TapHandle) -> None:
    (eth0,) = asyncio.run(read_pod_interfaces(net.pod_path))
    with pytest.raises(NetworkError, match=f"create tap {tap.name} for interface eth0 in "
                                           f"network namespace {net.pod_path}"):
        asyncio.run(create_tap_redirect(net.pod_path, eth0))
    assert [f for f in ingress_filters(net.pod, "eth0") if f.get("options")]  # still in place


def test_a_failed_setup_leaves_nothing_behind(net: PodNet) -> None:
    subprocess.run(["tc", "-n", net.pod, "qdisc", "add", "dev", "eth0", "ingress"], check=True)
    (eth0,) = asyncio.run(read_pod_interfaces(net.pod_path))
    with pytest.raises(NetworkError, match=f"redirect interface eth0 in network namespace "
                                           f"{net.pod_path} to tap .*: File exists"):
        asyncio.run(create_tap_redirect(net.pod_path, eth0))
    assert set(links(net.pod)) == {"lo", "eth0"}
    assert has_ingress_qdisc(net.pod, "eth0")  # someone else's: left alone


class Relay(threading.Thread):
    """QEMU's part in miniature: every frame of one tap fd into the other, both ways."""

    def __init__(self, a: int, b: int) -> None:
        super().__init__(daemon=True)
        self.peer = {a: b, b: a}
        self.stop_r, self.stop_w = os.pipe()

    def run(self) -> None:
        while True:
            ready, _, _ = select.select([*self.peer, self.stop_r], [], [])
            if self.stop_r in ready:
                return
            for fd in ready:
                frame = os.read(fd, 65536)
                try:
                    os.write(self.peer[fd], frame)
                except OSError as exc:  # EIO: that tap is down (being renamed): drop, as QEMU does
                    if exc.errno != errno.EIO:
                        raise

    def stop(self) -> None:
        os.write(self.stop_w, b"x")
        self.join()
        os.close(self.stop_r)
        os.close(self.stop_w)


def tcp_round_trip(client_ns: str, server_ns: str, family: int, server_ip: str) -> str:
    """Connect from client_ns to a listener in server_ns; return the peer address it saw."""
    def listen() -> socket.socket:
        srv = socket.socket(family, socket.SOCK_STREAM)
        srv.bind((server_ip, 0))
        srv.listen()
        return srv

    def dial(port: int) -> socket.socket:
        return socket.create_connection((server_ip, port), timeout=10)

    with call_in_netns(path(server_ns), listen) as srv:
        srv.settimeout(10)
        with call_in_netns(path(client_ns), dial, srv.getsockname()[1]) as cli:
            conn, peer = srv.accept()
            with conn:
                cli.sendall(b"ping")
                assert conn.recv(4) == b"ping"
                conn.sendall(b"pong")
                assert cli.recv(4) == b"pong"
    return str(peer[0])


def test_a_guest_stack_talks_to_the_node_through_the_redirect(
        net: PodNet, namespaces: Namespaces, tap: TapHandle) -> None:
    guest = namespaces.add("guest")
    nic = call_in_netns(path(guest), open_tap, "nic0")  # the guest's virtio-net, in effect
    relay = Relay(tap.fd, nic)
    relay.start()
    try:
        asyncio.run(configure(asyncio.run(read_pod_interfaces(net.pod_path)), path(guest)))
        # Both directions, both families, between the node's and the guest's own IP stacks.
        assert tcp_round_trip(guest, net.node, socket.AF_INET, net.gateway) == net.ip
        assert tcp_round_trip(net.node, guest, socket.AF_INET, net.ip) == net.gateway
        assert tcp_round_trip(guest, net.node, socket.AF_INET6, net.gateway6) == net.ip6
        assert tcp_round_trip(net.node, guest, socket.AF_INET6, net.ip6) == net.gateway6
    finally:
        relay.stop()
        os.close(nic)


def test_pyroute2_loads_where_ssl_is_blocked() -> None:
    """Shim daemon and agent block ssl; the rtnetlink part of pyroute2 still loads (not the
    whole library), works, and the block stays."""
    code = ("import sys, asyncio; sys.modules['ssl'] = None\n"
            "from bulkhead_wire.netlink.netns import load_pyroute2, rtnl\n"
            "load_pyroute2()\n"
            "assert sys.modules['ssl'] is None, sys.modules['ssl']\n"
            "assert 'pyroute2.ndb.main' not in sys.modules\n"
            "async def links():\n"
            "    async with rtnl() as ipr:\n"
            "        return [m.get('ifname') async for m in await ipr.link('dump')]\n"
            "assert 'lo' in asyncio.run(links())\n")
    subprocess.run([sys.executable, "-c", code], check=True, env={**os.environ})
