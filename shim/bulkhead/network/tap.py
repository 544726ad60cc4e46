"""A tap per pod interface, joined to it both ways with tc, for QEMU's `-netdev tap,fd=N`.

In the pod's namespace, everything that arrives on CNI's interface (its ingress qdisc, a u32
match-all filter, a mirred egress redirect) leaves through the tap, where QEMU reads it, and
everything QEMU writes into the tap leaves through CNI's interface the same way. The
namespace's own IP stack never sees the pod's traffic again; the guest, which takes the
interface's MAC and addresses, answers instead.
"""

from __future__ import annotations

import errno
import fcntl
import os
import struct
from contextlib import AsyncExitStack
from dataclasses import dataclass

from bulkhead_wire.netlink.model import IFNAMSIZ, Interface, NetworkError
from bulkhead_wire.netlink.netns import (
    NetnsNotFound,
    Rtnl,
    call_in_netns,
    ignore_errnos,
    link_index,
    netlink_errors,
    rtnl,
)

TUN_DEVICE = "/dev/net/tun"
TUNSETIFF = 0x400454CA
IFF_TAP = 0x0002
IFF_NO_PI = 0x1000
IFF_VNET_HDR = 0x4000  # QEMU probes this flag on fd=N and then negotiates offloads itself
IFF_TUN_EXCL = 0x8000  # fail rather than attach to a tap of that name someone else holds
TAP_FLAGS = IFF_TAP | IFF_NO_PI | IFF_VNET_HDR | IFF_TUN_EXCL
ETH_P_ALL = 0x0003
TC_H_INGRESS = 0xFFFF0000  # the ingress qdisc's handle, ffff:
U32_CLASSID = 0x10001  # pyroute2's u32 needs one; mirred steals every packet before it matters
MATCH_ALL = ["0x0/0x0+0"]
IN6_ADDR_GEN_MODE_NONE = 1


class InterfaceNotFound(NetworkError):
    """A pod interface (or its tap) is not in the namespace: never there, or removed since."""


@dataclass
class TapHandle:
    """A tap joined to a pod interface: pass `fd` to QEMU, close() it, teardown() at the end."""

    netns_path: str
    interface: str  # the pod interface (CNI's veth) the tap mirrors
    name: str  # the tap, in the same namespace
    fd: int  # /dev/net/tun with IFF_TAP | IFF_NO_PI | IFF_VNET_HDR, O_CLOEXEC; -1 once closed

    def close(self) -> None:
        """Drop the shim's copy of the fd once QEMU inherited its own (idempotent).

        The tap is not persistent: it disappears with the last open copy of the fd.
        """
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1

    async def teardown(self) -> None:
        """Remove the redirect and the tap, then close the fd (idempotent)."""
        try:
            await remove_tap_redirect(self.netns_path, self.interface, self.name)
        finally:
            self.close()


def tap_name(interface: str, ifindex: int) -> str:
    """tap<ifindex>_<interface>, cut to 15 characters: readable, and the ifindex keeps it unique."""
    return f"tap{ifindex}_{interface}"[: IFNAMSIZ - 1]


def open_tap(name: str) -> int:
    """Create the tap `name` in this thread's namespace; the returned fd is its only handle."""
    fd = os.open(TUN_DEVICE, os.O_RDWR | os.O_CLOEXEC)
    try:
        # struct ifreq: 16 bytes of name, the flags, padding to its full 40 bytes.
        fcntl.ioctl(fd, TUNSETIFF, struct.pack("16sH22x", name.encode(), TAP_FLAGS))
    except BaseException:
        os.close(fd)
        raise
    return fd


async def create_tap_redirect(netns_path: str, interface: Interface) -> TapHandle:
    """A tap for `interface` in its namespace with the interface's MTU, redirected both ways.

    The caller owns the handle. On failure nothing of it is left: not the tap, not a qdisc.
    """
    where = f"interface {interface.name} in network namespace {netns_path}"
    async with rtnl(netns_path) as ipr, AsyncExitStack() as undo:
        pod = await _pod_index(ipr, where, interface.name)
        name = tap_name(interface.name, pod)
        try:
            fd = call_in_netns(netns_path, open_tap, name)
        except OSError as exc:
            raise NetworkError(f"create tap {name} for {where}: {exc.strerror}") from None
        undo.callback(os.close, fd)  # the tap goes with its last fd
        await _join(ipr, where, interface, pod, name, undo)
        undo.pop_all()
    return TapHandle(netns_path, interface.name, name, fd)


async def join_tap(netns_path: str, interface: Interface, name: str) -> TapHandle:
    """Redirect `interface` both ways to the tap `name` that QEMU already holds in the same
    namespace (a lone container's VM, networked after it started); the handle has no fd."""
    where = f"interface {interface.name} in network namespace {netns_path}"
    async with rtnl(netns_path) as ipr, AsyncExitStack() as undo:
        pod = await _pod_index(ipr, where, interface.name)
        await _join(ipr, where, interface, pod, name, undo)
        undo.pop_all()
    return TapHandle(netns_path, interface.name, name, -1)


async def _pod_index(ipr: Rtnl, where: str, interface: str) -> int:
    with netlink_errors(f"look up {where}"):
        pod = await link_index(ipr, interface)
    if pod is None:
        raise InterfaceNotFound(f"{where}: no such interface")
    return pod


async def _join(ipr: Rtnl, where: str, interface: Interface, pod: int, name: str,
                undo: AsyncExitStack) -> None:
    """Bring the tap up with the interface's MTU and redirect the two into each other."""
    with netlink_errors(f"bring up tap {name} for {where}"):
        tap = await link_index(ipr, name)
        if tap is None:
            raise InterfaceNotFound(f"tap {name} for {where}: no such interface")
        # No IPv6 link-local address: the tap itself must stay silent towards the guest.
        await ipr.link("set", index=tap, mtu=interface.mtu, IFLA_AF_SPEC={"attrs": [
            ["AF_INET6", {"attrs": [["IFLA_INET6_ADDR_GEN_MODE", IN6_ADDR_GEN_MODE_NONE]]}]]})
        await ipr.link("set", index=tap, state="up")
    with netlink_errors(f"redirect {where} to tap {name}"):
        await _redirect(ipr, pod, tap, undo)
    with netlink_errors(f"redirect tap {name} to {where}"):
        await _redirect(ipr, tap, pod, undo)


async def remove_tap_redirect(netns_path: str, interface: str, tap: str | None = None) -> None:
    """Undo create_tap_redirect; whatever is already gone is skipped.

    Without `tap` its name is derived from the interface (tap_name), so crash-only cleanup
    needs no more than the namespace and the interface names, recorded before creation.
    A namespace that no longer exists took all of it along.
    """
    where = f"interface {interface} in network namespace {netns_path}"
    try:
        async with rtnl(netns_path) as ipr:
            with netlink_errors(f"remove the tap redirect of {where}"):
                pod = await link_index(ipr, interface)
                if pod is not None:
                    await _remove_ingress(ipr, pod)
                    tap = tap or tap_name(interface, pod)
                index = await link_index(ipr, tap) if tap else None
                if index is not None:
                    with ignore_errnos(errno.ENODEV):
                        await ipr.link("del", index=index)
    except NetnsNotFound:
        return


async def _redirect(ipr: Rtnl, src: int, dst: int, undo: AsyncExitStack) -> None:
    """What arrives on src leaves through dst: ingress qdisc, u32 match-all, mirred redirect.

    The qdisc is ours to remove on a later failure only once it was added (src may have had one).
    """
    await ipr.tc("add", "ingress", index=src)
    undo.push_async_callback(_remove_ingress, ipr, src)
    await ipr.tc("add-filter", "u32", index=src, parent=TC_H_INGRESS, protocol=ETH_P_ALL,
                 target=U32_CLASSID, keys=MATCH_ALL,
                 action={"kind": "mirred", "direction": "egress", "action": "redirect",
                         "ifindex": dst})


async def _remove_ingress(ipr: Rtnl, index: int) -> None:
    """Delete the ingress qdisc, and with it its filters; absent already is fine."""
    with ignore_errnos(errno.ENOENT, errno.EINVAL, errno.ENODEV):
        await ipr.tc("del", "ingress", index=index)
