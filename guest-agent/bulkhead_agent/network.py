"""The pod's network inside the VM: the NIC QEMU gives the guest becomes the pod's interface.

The host joins each pod interface (CNI's veth) to a tap with tc (bulkhead.network.tap), so the
guest's NIC is on the veth's wire; with the veth's name, MAC, MTU, addresses and routes the
guest is the pod to the rest of the network. pyroute2 loads only when configure() opens its
netlink socket (bulkhead_wire.netlink.netns.rtnl): the agent's boot under TCG is slow, and only
pods with a network need it.
"""

from __future__ import annotations

import socket
from collections.abc import Sequence

from bulkhead_wire.netlink.model import Interface, NetworkError, Route
from bulkhead_wire.netlink.netns import Rtnl, is_ethernet, link_index, netlink_errors, rtnl

IFA_F_NODAD = 0x02


async def configure(interfaces: Sequence[Interface], netns_path: str | None = None) -> None:
    """Give the guest's NICs the pod interfaces' identities, bring them and lo up, add routes.

    The i-th Ethernet NIC in ifindex order takes the i-th interface (today a VM has exactly one
    virtio-net device). Idempotent: a reconnecting shim may send the same list again.
    netns_path is for tests; the agent configures its own namespace.
    """
    async with rtnl(netns_path) as ipr:
        with netlink_errors("list the guest's network devices"):
            nics = await _ethernet_nics(ipr)
            lo = await link_index(ipr, "lo")
        if len(nics) < len(interfaces):
            missing = ", ".join(i.name for i in interfaces[len(nics):])
            raise NetworkError(f"no guest NIC for pod interface(s) {missing}: the VM has "
                               f"{len(nics)} Ethernet device(s) for {len(interfaces)}")
        if lo is not None:
            with netlink_errors("bring up lo"):
                await ipr.link("set", index=lo, state="up")
        pairs = list(zip(nics[: len(interfaces)], interfaces, strict=True))
        for nic, iface in pairs:
            await _take_identity(ipr, nic, iface)
        routes = [(nic, iface, route) for nic, iface in pairs for route in iface.routes]
        for nic, iface, route in sorted(routes, key=lambda t: _route_order(t[2])):
            with netlink_errors(f"add route {_describe(route)} on {iface.name}"):
                await ipr.route("replace", **_route_args(nic, route))


async def _ethernet_nics(ipr: Rtnl) -> list[int]:
    """Ifindexes of the Ethernet devices (not lo, not tunnels), lowest first."""
    links = [m async for m in await ipr.link("dump")]
    return sorted(m["index"] for m in links if is_ethernet(m))


async def _take_identity(ipr: Rtnl, nic: int, iface: Interface) -> None:
    """Name, MAC and MTU (with the link down only when one of them changes), up, addresses."""
    where = f"guest NIC {nic} for pod interface {iface.name}"
    with netlink_errors(f"set name, MAC {iface.mac} and MTU {iface.mtu} of {where}"):
        (link,) = await ipr.link("get", index=nic)
        current = (link.get("ifname"), link.get("address"), link.get("mtu"))
        if current != (iface.name, iface.mac, iface.mtu):
            await ipr.link("set", index=nic, state="down")
            await ipr.link("set", index=nic, ifname=iface.name, address=iface.mac,
                           mtu=iface.mtu)
        await ipr.link("set", index=nic, state="up")
    for addr in iface.addresses:
        # No DAD: CNI already checked the address on this wire, and a tentative address
        # would hold back the pod's first connections.
        flags = IFA_F_NODAD if addr.family == socket.AF_INET6 else 0
        with netlink_errors(f"add address {addr.ip}/{addr.prefix_len} to {iface.name}"):
            await ipr.addr("replace", index=nic, address=addr.ip, prefixlen=addr.prefix_len,
                           family=addr.family, flags=flags)


def _route_order(route: Route) -> tuple[bool, bool]:
    """On-link routes first (a gateway must be reachable when its route is added), defaults last."""
    return (bool(route.gateway), route.is_default)


def _route_args(nic: int, route: Route) -> dict[str, object]:
    args: dict[str, object] = {
        "family": route.family, "dst": route.destination, "dst_len": route.prefix_len,
        "oif": nic, "scope": route.scope, "priority": route.metric}
    if route.gateway:
        args["gateway"] = route.gateway
    return args


def _describe(route: Route) -> str:
    gateway = f" via {route.gateway}" if route.gateway else ""
    return f"{route.destination}/{route.prefix_len}{gateway}"
