"""What CNI made in a pod's network namespace: its interfaces with their addresses and routes.

Read before the redirect takes the interfaces' traffic; the result is what the guest rebuilds
(guest-agent/bulkhead_agent/network.py).
"""

from __future__ import annotations

import socket

from bulkhead_wire.netlink.model import RT_SCOPE_LINK, Address, Interface, NetworkError, Route
from bulkhead_wire.netlink.netns import Msg, is_ethernet, netlink_errors, rtnl

IFF_UP = 0x1
IFA_F_PERMANENT = 0x80
RT_TABLE_MAIN = 254
RTN_UNICAST = 1
RTPROT_KERNEL = 2  # prefix routes the kernel derives from an address: the guest's does too
RTPROT_RA = 9  # learned from router advertisements: the guest hears them itself


async def read_pod_interfaces(netns_path: str) -> list[Interface]:
    """Every Ethernet interface that is up in the namespace, lo excluded, in ifindex order.

    Down or non-Ethernet devices (the fallback tunnels a module may put in every namespace)
    are not CNI's and could not be mirrored onto a tap; taps are ours (a second read after
    create_tap_redirect must not return them).
    """
    async with rtnl(netns_path) as ipr:
        with netlink_errors(f"read network namespace {netns_path}"):
            links = [m async for m in await ipr.link("dump")]
            addrs = [m async for m in await ipr.addr("dump")]
            routes = [m async for m in await ipr.route("dump", table=RT_TABLE_MAIN)]
    pod_links = sorted((m for m in links if _is_pod_link(m)), key=lambda m: m["index"])
    try:
        return [_interface(link, addrs, routes) for link in pod_links]
    except ValueError as exc:  # something no guest could take, e.g. a malformed route
        raise NetworkError(f"read network namespace {netns_path}: {exc}") from None


def _is_pod_link(link: Msg) -> bool:
    up = bool(link["flags"] & IFF_UP)
    return is_ethernet(link) and up and link.get(("linkinfo", "kind")) != "tun"


def _interface(link: Msg, addrs: list[Msg], routes: list[Msg]) -> Interface:
    index = link["index"]
    return Interface(
        name=link.get("ifname"), mac=link.get("address"), mtu=link.get("mtu"),
        addresses=tuple(_address(m) for m in addrs if m["index"] == index and _kept_address(m)),
        routes=tuple(_route(m) for m in routes if m.get("oif") == index and _kept_route(m)))


def _kept_address(msg: Msg) -> bool:
    """IPv4 and IPv6 addresses, except the IPv6 ones the guest's kernel makes by itself.

    Link-local ones come from the MAC, which the guest shares; SLAAC ones (not permanent)
    from router advertisements, which reach the guest through the redirect.
    """
    if msg["family"] == socket.AF_INET:
        return True
    flags = msg.get("IFA_FLAGS") or msg["flags"]
    return (msg["family"] == socket.AF_INET6 and msg["scope"] != RT_SCOPE_LINK
            and bool(flags & IFA_F_PERMANENT))


def _address(msg: Msg) -> Address:
    return Address(ip=msg.get("address"), prefix_len=msg["prefixlen"])


def _kept_route(msg: Msg) -> bool:
    return (msg["family"] in (socket.AF_INET, socket.AF_INET6) and msg["type"] == RTN_UNICAST
            and msg["proto"] not in (RTPROT_KERNEL, RTPROT_RA))


def _route(msg: Msg) -> Route:
    any_address = "::" if msg["family"] == socket.AF_INET6 else "0.0.0.0"
    return Route(destination=msg.get("dst") or any_address, prefix_len=msg["dst_len"],
                 gateway=msg.get("gateway") or "", scope=msg["scope"],
                 metric=msg.get("priority") or 0)
