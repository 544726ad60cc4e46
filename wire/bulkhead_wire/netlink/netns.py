"""Reach into a pod's network namespace without moving the shim into it.

Two things must be made inside the namespace: the rtnetlink socket (a netlink socket serves
the namespace it was created in, wherever it is used afterwards) and the tap (TUNSETIFF puts
the device in the caller's namespace). Both are single syscalls, so `call_in_netns` switches
this thread into the namespace with setns(2), runs one synchronous function and switches back
with the fd of its own namespace, opened before the switch, in a `finally`. There is no await
inside: no other coroutine of the asyncio loop can run while the thread is away, and setns
moves only the calling thread, so executor threads are never affected. A round trip costs
~20 us here.

Why not a short-lived child that passes the fds back over SCM_RIGHTS: a fork of the running
asyncio program copies its loop, selector and signal wakeup fd into the child, and a fresh
interpreter costs 10-60 ms and a helper program to ship, for two syscalls. The rest (dumps,
tc, links) runs through the netlink socket from the shim's own namespace. Also here: the
small rtnetlink helpers the guest agent shares (it works in its own namespace, netns_path None).
"""

from __future__ import annotations

import errno
import importlib
import importlib.util
import os
import socket
import sys
import types
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager, contextmanager
from functools import cache
from typing import Any, TypeVar

from bulkhead_wire.netlink.model import NetworkError

CLONE_NEWNET = 0x40000000
SELF_NETNS = "/proc/thread-self/ns/net"
ARPHRD_ETHER = 1
IFF_LOOPBACK = 0x8
T = TypeVar("T")
RTNL_MODULE = "pyroute2.iproute.linux"  # AsyncIPRoute


def load_pyroute2() -> None:
    """Load the part of pyroute2 Bulkhead uses (rtnetlink), not the library: its package
    __init__ imports ~160 modules (NDB, IPDB, nftables, wireless, ...), 14 MiB in every shim.
    The package is registered without running that __init__; its submodules load as usual.

    Where ssl is blocked (shim daemon, agent: asyncio would load libssl for nothing), the rtnl
    marshal's `import ssl`, for a TLS probe Bulkhead never sends, gets an empty stand-in for
    the duration of the import; the block stays for every other module.
    """
    if RTNL_MODULE in sys.modules:
        return
    import asyncio  # noqa: F401 - binds ssl (blocked or real) before a stand-in exists

    if "pyroute2" not in sys.modules:
        spec = importlib.util.find_spec("pyroute2")
        if spec is None or spec.submodule_search_locations is None:
            raise NetworkError("pyroute2 is not installed: pod networking needs it")
        package = types.ModuleType("pyroute2", "rtnetlink parts only (see load_pyroute2)")
        package.__path__ = list(spec.submodule_search_locations)
        package.__spec__ = spec
        sys.modules["pyroute2"] = package
    blocked = "ssl" in sys.modules and sys.modules["ssl"] is None
    if blocked:
        sys.modules["ssl"] = types.ModuleType("ssl", "stand-in: TLS is never used here")
    try:
        importlib.import_module(RTNL_MODULE)
        importlib.import_module("pyroute2.netlink.exceptions")
    finally:
        if blocked:
            sys.modules["ssl"] = None  # type: ignore[assignment]
Rtnl = Any  # pyroute2.AsyncIPRoute (pyroute2 has no type information)
Msg = Any  # a pyroute2 netlink message


class NetnsNotFound(NetworkError):
    """The pod's network namespace does not exist (never created, or already removed)."""


@cache
def _setns_call() -> Callable[[int, int], int]:
    """libc setns (os.setns is Python 3.12+); ctypes only here, the guest never needs it."""
    import ctypes

    libc = ctypes.CDLL(None, use_errno=True)
    setns: Callable[[int, int], int] = libc.setns
    return setns


def _setns(fd: int, what: str) -> None:
    if _setns_call()(fd, CLONE_NEWNET) != 0:
        import ctypes

        err = ctypes.get_errno()
        reason = "not a network namespace" if err == errno.EINVAL else os.strerror(err)
        raise NetworkError(f"{what}: {reason}")


def open_netns(netns_path: str) -> int:
    """An fd of the namespace at netns_path (a /var/run/netns/... or /proc/<pid>/ns/net file)."""
    try:
        return os.open(netns_path, os.O_RDONLY | os.O_CLOEXEC)
    except FileNotFoundError:
        raise NetnsNotFound(f"network namespace {netns_path} does not exist") from None
    except OSError as exc:
        raise NetworkError(f"open network namespace {netns_path}: {exc.strerror}") from None


def call_in_netns(netns_path: str, func: Callable[..., T], *args: Any) -> T:
    """func(*args) with this thread in the namespace; back in its own one however func ends."""
    target = open_netns(netns_path)
    try:
        home = os.open(SELF_NETNS, os.O_RDONLY | os.O_CLOEXEC)
        try:
            _setns(target, f"enter network namespace {netns_path}")
            try:
                return func(*args)
            finally:
                _setns(home, f"return from network namespace {netns_path} (this thread is "
                             "stranded in it)")
        finally:
            os.close(home)
    finally:
        os.close(target)


def _rtnetlink_socket() -> socket.socket:
    return socket.socket(socket.AF_NETLINK, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC,
                         socket.NETLINK_ROUTE)


@asynccontextmanager
async def rtnl(netns_path: str | None = None) -> AsyncIterator[Rtnl]:
    """pyroute2's AsyncIPRoute on the namespace at netns_path (this thread's own if None).

    Async because shim and agent are asyncio programs: pyroute2's sync IPRoute runs its own
    loop and fails inside a running one ("This event loop is already running").
    """
    load_pyroute2()
    from pyroute2.iproute.linux import AsyncIPRoute

    fileno = None
    if netns_path is not None:
        fileno = call_in_netns(netns_path, _rtnetlink_socket).detach()
    try:
        # groups=0: no multicast subscriptions, only the replies to our own requests.
        ipr = AsyncIPRoute(fileno=fileno, groups=0)
    except BaseException:
        if fileno is not None:
            os.close(fileno)
        raise
    try:
        yield ipr
    finally:
        ipr.close()


def is_ethernet(link: Msg) -> bool:
    """An Ethernet device other than lo: what a tap (or a guest NIC) can stand in for."""
    return link["ifi_type"] == ARPHRD_ETHER and not link["flags"] & IFF_LOOPBACK


async def link_index(ipr: Rtnl, name: str) -> int | None:
    """The ifindex of link `name` in the socket's namespace, None if there is no such link."""
    with ignore_errnos(errno.ENODEV):
        links = await ipr.link("get", ifname=name)
        index: int = links[0]["index"]
        return index
    return None


@contextmanager
def ignore_errnos(*codes: int) -> Iterator[None]:
    """Netlink errors with these codes (the object is already gone, say) are no failure."""
    load_pyroute2()
    from pyroute2.netlink.exceptions import NetlinkError

    try:
        yield
    except NetlinkError as exc:
        if exc.code not in codes:
            raise


@contextmanager
def netlink_errors(what: str) -> Iterator[None]:
    """A netlink failure as a NetworkError saying `what` failed (step, namespace, interface)."""
    load_pyroute2()
    from pyroute2.netlink.exceptions import NetlinkError

    try:
        yield
    except NetlinkError as exc:
        raise NetworkError(f"{what}: {os.strerror(exc.code)}") from None
