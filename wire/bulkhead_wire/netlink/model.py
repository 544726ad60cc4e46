"""The pod's network as the host reads it in CNI's namespace and the guest rebuilds it.

Plain strings and ints, so an Interface crosses the agent API as a dict (or a protobuf message
with the same fields) unchanged. Cheap to import: the guest agent and the shim both load it.
"""

from __future__ import annotations

import ipaddress
import re
import socket
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any

IFNAMSIZ = 16  # the kernel's buffer, NUL included: a name has at most 15 characters
RT_SCOPE_UNIVERSE = 0
RT_SCOPE_LINK = 253
_MAC = re.compile(r"[0-9a-f]{2}(:[0-9a-f]{2}){5}")
_IP = ipaddress.IPv4Address | ipaddress.IPv6Address


class NetworkError(Exception):
    """A pod network step failed; the message names the namespace and the interface."""


def _check_int(what: str, value: object, low: int, high: int) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or not low <= value <= high:
        raise ValueError(f"{what} {value!r} is not an integer in [{low}, {high}]")


def _ip(what: str, value: object) -> _IP:
    """The address a string spells (a bare int would also parse: refuse it)."""
    if not isinstance(value, str):
        raise ValueError(f"{what} {value!r} is not a string")
    return ipaddress.ip_address(value)


def _valid_ifname(name: object) -> bool:
    """The kernel's dev_valid_name(), and printable."""
    return (isinstance(name, str) and 0 < len(name) < IFNAMSIZ and name not in (".", "..")
            and name.isprintable() and not any(c in name for c in "/: \t"))


def _family(ip: _IP) -> int:
    return socket.AF_INET6 if ip.version == 6 else socket.AF_INET


@dataclass(frozen=True)
class Address:
    """One address of an interface with its prefix length (10.88.0.5, 16)."""

    ip: str
    prefix_len: int

    def __post_init__(self) -> None:
        _check_int(f"prefix length of {self.ip}", self.prefix_len, 0,
                   _ip("address", self.ip).max_prefixlen)

    @property
    def family(self) -> int:
        return _family(_ip("address", self.ip))


@dataclass(frozen=True)
class Route:
    """A main-table route through the interface that holds it; no gateway means on-link."""

    destination: str  # the network address; "0.0.0.0" or "::" with prefix 0 is a default route
    prefix_len: int
    gateway: str = ""
    scope: int = RT_SCOPE_UNIVERSE  # RT_SCOPE_*: 0 universe, 253 link, 254 host
    metric: int = 0

    def __post_init__(self) -> None:
        dst = _ip("route destination", self.destination)
        _check_int(f"prefix length of route {self.destination}", self.prefix_len, 0,
                   dst.max_prefixlen)
        ipaddress.ip_network(f"{self.destination}/{self.prefix_len}")  # refuses host bits
        if self.gateway and _ip("gateway", self.gateway).version != dst.version:
            raise ValueError(f"route {self.destination}/{self.prefix_len}: gateway "
                             f"{self.gateway} is not of the destination's family")
        _check_int(f"scope of route {self.destination}", self.scope, 0, 255)
        _check_int(f"metric of route {self.destination}", self.metric, 0, 2**32 - 1)

    @property
    def family(self) -> int:
        return _family(_ip("route destination", self.destination))

    @property
    def is_default(self) -> bool:
        return self.prefix_len == 0


@dataclass(frozen=True)
class Interface:
    """One interface CNI made in the pod's namespace, as the guest must reproduce it."""

    name: str
    mac: str  # lower-case aa:bb:cc:dd:ee:ff, as netlink reports it
    mtu: int
    addresses: tuple[Address, ...] = ()
    routes: tuple[Route, ...] = ()

    def __post_init__(self) -> None:
        if not _valid_ifname(self.name):
            raise ValueError(f"interface name {self.name!r} is not a valid Linux name")
        if not isinstance(self.mac, str) or not _MAC.fullmatch(self.mac):
            raise ValueError(f"interface {self.name}: MAC {self.mac!r} is not aa:bb:cc:dd:ee:ff")
        _check_int(f"interface {self.name}: MTU", self.mtu, 68, 65535)

    def to_dict(self) -> dict[str, Any]:
        """Lists and scalars only: JSON- and protobuf-friendly."""
        return {"name": self.name, "mac": self.mac, "mtu": self.mtu,
                "addresses": [asdict(a) for a in self.addresses],
                "routes": [asdict(r) for r in self.routes]}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Interface:
        """The inverse of to_dict; a malformed entry is a NetworkError naming the interface."""
        try:
            return cls(name=data["name"], mac=data["mac"], mtu=data["mtu"],
                       addresses=tuple(Address(**a) for a in data.get("addresses", ())),
                       routes=tuple(Route(**r) for r in data.get("routes", ())))
        except (KeyError, TypeError, ValueError) as exc:
            raise NetworkError(f"interface {data.get('name')!r} from the host: "
                               f"{type(exc).__name__}: {exc}") from None
