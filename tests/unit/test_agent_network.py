"""Guest side of pod networking: configure() turns a namespace's lone NIC (a veth standing in
for virtio-net) into the pod's interface; the interface list travels as plain dicts."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from collections.abc import Iterator

import pytest
from bulkhead_agent.network import configure
from bulkhead_wire.netlink.model import Address, Interface, NetworkError, Route
from netns_tools import Namespaces, ip, ip_json, leftover_namespaces, path, reap_stale

root_only = pytest.mark.skipif(os.geteuid() != 0, reason="network namespaces need root")
POD = Interface(
    name="eth0", mac="0a:58:0a:4d:00:02", mtu=1400,
    addresses=(Address("10.77.0.2", 24), Address("fd00:77::2", 64)),
    routes=(Route("::", 0, "fd00:77::1", metric=1024), Route("0.0.0.0", 0, "10.77.0.1"),
            Route("10.99.0.0", 16, "10.77.0.1", metric=100),
            Route("10.77.1.0", 24, scope=253)))


@pytest.fixture
def guest() -> Iterator[str]:
    """A namespace holding lo and one NIC, nic0, down (its veth peer is in another one)."""
    reap_stale()
    made = Namespaces()
    try:
        guest, wire = made.add("guest"), made.add("wire")
        ip("link", "add", "nic0", "type", "veth", "peer", "name", "peer0", "netns", wire,
           netns=guest)
        ip("link", "set", "peer0", "up", netns=wire)
        yield guest
    finally:
        made.remove_all()
        assert leftover_namespaces() == []


def addresses(netns: str, dev: str) -> set[tuple[str, int]]:
    return {(a["local"], a["prefixlen"]) for link in ip_json("addr", "show", "dev", dev,
                                                                netns=netns)
            for a in link["addr_info"] if a.get("scope") == "global"}


def routes(netns: str, family: str) -> set[tuple[str, str, int]]:
    return {(r["dst"], r.get("gateway", ""), r.get("metric", 0))
            for r in ip_json(family, "route", "show", "table", "main", netns=netns)
            if r.get("protocol") != "kernel"}


@root_only
def test_configure_makes_the_nic_the_pod_interface(guest: str) -> None:
    for _ in range(2):  # idempotent: a reconnecting shim may send the same list again
        asyncio.run(configure([POD], path(guest)))
        links = {link["ifname"]: link for link in ip_json("link", "show", netns=guest)}
        assert set(links) == {"lo", "eth0"}  # nic0 renamed
        eth0 = links["eth0"]
        assert (eth0["address"], eth0["mtu"]) == (POD.mac, POD.mtu)
        assert "UP" in eth0["flags"] and "UP" in links["lo"]["flags"]
        assert addresses(guest, "eth0") == {("10.77.0.2", 24), ("fd00:77::2", 64)}
        assert routes(guest, "-4") == {("default", "10.77.0.1", 0),
                                       ("10.99.0.0/16", "10.77.0.1", 100),
                                       ("10.77.1.0/24", "", 0)}
        assert routes(guest, "-6") == {("default", "fd00:77::1", 1024)}
    tentative = [a for link in ip_json("addr", "show", "dev", "eth0", netns=guest)
                 for a in link["addr_info"] if a.get("tentative")]
    assert not [a for a in tentative if a["local"] == "fd00:77::2"]  # no DAD wait


@root_only
def test_more_interfaces_than_nics_names_the_missing_one(guest: str) -> None:
    net1 = Interface("net1", "0a:58:0a:4e:00:02", 1500)
    with pytest.raises(NetworkError, match="no guest NIC for pod interface.* net1"):
        asyncio.run(configure([POD, net1], path(guest)))


@root_only
def test_an_unreachable_gateway_names_the_route(guest: str) -> None:
    bad = Interface("eth0", POD.mac, 1500, (Address("10.77.0.2", 24),),
                    (Route("0.0.0.0", 0, "192.168.5.1"),))
    with pytest.raises(NetworkError, match="add route 0.0.0.0/0 via 192.168.5.1 on eth0: "
                                           "Network is unreachable"):
        asyncio.run(configure([bad], path(guest)))


def test_interfaces_travel_as_plain_dicts() -> None:
    data = POD.to_dict()
    assert data["addresses"][0] == {"ip": "10.77.0.2", "prefix_len": 24}
    assert data["routes"][1] == {"destination": "0.0.0.0", "prefix_len": 0,
                                 "gateway": "10.77.0.1", "scope": 0, "metric": 0}
    assert Interface.from_dict(data) == POD


@pytest.mark.parametrize("field, value, message", [
    ("mac", "0A:58:0A:4D:00:02", "MAC"),
    ("mtu", "1400", "MTU"),
    ("name", "a-name-too-long-for-linux", "not a valid Linux name"),
    ("name", "eth0:1", "not a valid Linux name"),
    ("addresses", [{"ip": "10.77.0.2", "prefix_len": 33}], "prefix length of 10.77.0.2"),
    ("routes", [{"destination": "10.77.0.2", "prefix_len": 24}], "host bits set"),
    ("routes", [{"destination": "::", "prefix_len": 0, "gateway": "10.0.0.1"}], "family"),
    ("routes", [{"destination": "::", "prefix_len": 0, "via": "fe80::1"}], "via"),
])
def test_a_malformed_interface_is_refused_by_name(field: str, value: object,
                                                  message: str) -> None:
    data = {**POD.to_dict(), field: value}
    with pytest.raises(NetworkError, match=f"interface '{data['name']}' from the host: .*"
                                           f"{message}"):
        Interface.from_dict(data)


def test_the_agent_loads_pyroute2_only_to_configure() -> None:
    code = ("import sys, bulkhead_agent.network; "
            "print(sorted(m for m in ('pyroute2', 'ctypes') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True, env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)})
    assert out.stdout.strip() == "[]"
