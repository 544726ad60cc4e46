"""A private CNI network for one CRI-enabled test containerd: its own bridge and /24, a conflist
in the instance's dirs and host-local leases under them, so instances never share addresses, and
a teardown that leaves no device, lease, cache file or iptables rule of it behind.

The bridge is created here, with the gateway address, before containerd starts, and the bridge
plugin runs with isGateway=false and ipMasq=false: it then never turns on the host-wide
ip_forward sysctl nor adds NAT rules, pods have no default route, and nothing they send leaves
the bridge. The host reaches pods (and portmap's hostPorts) through the gateway address.
"""

from __future__ import annotations

import ipaddress
import json
import os
import shlex
import subprocess
import zlib
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

BRIDGE_PREFIX = "bhtest"
SUBNETS = ipaddress.IPv4Network("10.200.0.0/16")  # one /24 per instance: 10.200.<index>.0/24
ALIAS_PREFIX = "bulkhead-test:"  # the bridge's ifalias names the instance that owns it
CNI_CACHE_DIR = Path("/var/lib/cni")  # libcni's result cache; containerd sets no other
CNI_RESULTS_DIR = CNI_CACHE_DIR / "results"
# portmap's chains shared by every pod on the host; it creates them and never removes them.
PORTMAP_DNAT_CHAIN = "CNI-HOSTPORT-DNAT"
PORTMAP_SHARED_CHAINS = (PORTMAP_DNAT_CHAIN, "CNI-HOSTPORT-SETMARK", "CNI-HOSTPORT-MASQ")


class NetworkError(RuntimeError):
    """The test network could not be created or removed."""


@dataclass(frozen=True)
class TestNetwork:
    """One instance's bridge `bhtest<index>` with subnet 10.200.<index>.0/24."""

    __test__ = False  # not a pytest test class, whatever its name
    index: int

    @property
    def bridge(self) -> str:
        return f"{BRIDGE_PREFIX}{self.index}"

    @property
    def name(self) -> str:
        """The CNI network name (portmap's rule comments and libcni's cache files carry it)."""
        return self.bridge

    @property
    def subnet(self) -> ipaddress.IPv4Network:
        return ipaddress.IPv4Network(f"{SUBNETS.network_address + (self.index << 8)}/24")

    @property
    def gateway(self) -> ipaddress.IPv4Address:
        """The host's address on the bridge: how the host reaches pods and hostPorts."""
        return self.subnet.network_address + 1

    def conflist(self, ipam_dir: Path) -> dict[str, object]:
        """bridge + host-local (leases in ipam_dir) + portmap, as containerd loads it."""
        ipam = {
            "type": "host-local",
            "dataDir": str(ipam_dir),
            "ranges": [[{"subnet": str(self.subnet), "gateway": str(self.gateway)}]],
        }
        bridge = {
            "type": "bridge",
            "bridge": self.bridge,
            "isGateway": False,  # we own the gateway address; no host-wide ip_forward
            "ipMasq": False,  # no NAT: pods reach the bridge and nothing else
            "hairpinMode": True,
            "ipam": ipam,
        }
        portmap = {"type": "portmap", "capabilities": {"portMappings": True}}
        return {"cniVersion": "1.0.0", "name": self.name, "plugins": [bridge, portmap]}

    def write_conflist(self, conf_dir: Path, ipam_dir: Path) -> Path:
        """The only file in conf_dir, so it is the network containerd loads (max_conf_num 1)."""
        conf_dir.mkdir(parents=True, exist_ok=True)
        ipam_dir.mkdir(parents=True, exist_ok=True)
        path = conf_dir / f"10-{self.name}.conflist"
        path.write_text(json.dumps(self.conflist(ipam_dir), indent=2) + "\n")
        return path


def _ip(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    res = subprocess.run(["ip", *args], capture_output=True, text=True, timeout=30, check=False)
    if check and res.returncode != 0:
        raise NetworkError(f"ip {' '.join(args)}: {res.stderr.strip()}")
    return res


def _used_networks() -> list[ipaddress.IPv4Network]:
    """Every IPv4 network on a host interface or in its routing table."""
    nets: list[ipaddress.IPv4Network] = []
    for entry in json.loads(_ip("-j", "-4", "addr", "show").stdout or "[]"):
        for addr in entry.get("addr_info", []):
            nets.append(ipaddress.IPv4Network(f"{addr['local']}/{addr['prefixlen']}", False))
    for route in json.loads(_ip("-j", "-4", "route", "show", "table", "all").stdout or "[]"):
        dst = route.get("dst", "")
        if dst and dst != "default" and route.get("type", "unicast") == "unicast":
            nets.append(ipaddress.IPv4Network(dst if "/" in dst else f"{dst}/32", False))
    return nets


def preferred_index(owner: str) -> int:
    """Where the search for a free subnet starts: stable per instance name, spread over 256."""
    return zlib.crc32(owner.encode()) % 256


def allocate(owner: str) -> TestNetwork:
    """Create the first free bhtest<i> bridge with 10.200.<i>.1/24, trying i from the owner's
    preferred index; creating the device is the lock that keeps instances apart."""
    start = preferred_index(owner)
    for step in range(256):
        net = TestNetwork((start + step) % 256)
        if any(net.subnet.overlaps(used) for used in _used_networks()):
            continue
        if _ip("link", "add", "name", net.bridge, "type", "bridge", check=False).returncode != 0:
            continue  # another instance holds this index
        try:
            _ip("link", "set", "dev", net.bridge, "alias", ALIAS_PREFIX + owner)
            _ip("addr", "add", f"{net.gateway}/24", "dev", net.bridge)
            _ip("link", "set", "dev", net.bridge, "up")
        except NetworkError:
            _ip("link", "del", net.bridge, check=False)
            raise
        return net
    raise NetworkError("no free 10.200.<i>.0/24 subnet for a test bridge")


def owned_networks(owner: str) -> list[TestNetwork]:
    """Bridges whose alias says owner created them (to clean up after a killed run)."""
    return [TestNetwork(int(bridge.removeprefix(BRIDGE_PREFIX)))
            for bridge, name in all_test_bridges().items() if name == owner]


def all_test_bridges() -> dict[str, str]:
    """Every bhtest<i> bridge an instance made ({bridge: instance name}, from its alias)."""
    bridges = {}
    for link in json.loads(_ip("-j", "link", "show", "type", "bridge").stdout or "[]"):
        name, alias = link.get("ifname", ""), str(link.get("ifalias", ""))
        if (name.removeprefix(BRIDGE_PREFIX).isdigit() and name.startswith(BRIDGE_PREFIX)
                and alias.startswith(ALIAS_PREFIX)):
            bridges[name] = alias.removeprefix(ALIAS_PREFIX)
    return bridges


def bridge_ports(bridge: str) -> list[str]:
    """Interfaces (the pods' host-side veths) attached to the bridge."""
    res = _ip("-j", "link", "show", "master", bridge, check=False)
    if res.returncode != 0:
        return []
    return [link["ifname"] for link in json.loads(res.stdout or "[]")]


# --- iptables ---------------------------------------------------------------------------------


def _iptables(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    res = subprocess.run(["iptables", "-w", "10", *args], capture_output=True, text=True,
                         timeout=60, check=False)
    if check and res.returncode != 0:
        raise NetworkError(f"iptables {' '.join(args)}: {res.stderr.strip()}")
    return res


def nat_rules() -> list[str]:
    """The nat table as `-A CHAIN ...` lines (empty if iptables or the table is absent)."""
    try:
        res = subprocess.run(["iptables-save", "-t", "nat"], capture_output=True, text=True,
                             timeout=60, check=False)
    except OSError:
        return []
    return [line for line in res.stdout.splitlines() if line.startswith("-A ")]


def rules_of(network: TestNetwork, rules: list[str] | None = None) -> list[str]:
    """portmap's rules for this network's pods: its comments name the CNI network."""
    marker = f'name: \\"{network.name}\\"'
    return [r for r in (nat_rules() if rules is None else rules) if marker in r]


def _delete_rule(rule: str) -> None:
    """Delete one `-A CHAIN args...` rule as iptables-save printed it."""
    args = shlex.split(rule)
    _iptables("-t", "nat", "-D", *args[1:], check=False)


def _jump_target(rule: str) -> str | None:
    args = shlex.split(rule)
    for flag, value in zip(args, args[1:], strict=False):
        if flag in ("-j", "--jump"):
            return value
    return None


def remove_rules(network: TestNetwork) -> None:
    """Remove portmap's per-pod chains of this network (CNI DEL does this for pods that were
    stopped properly; this is for those that were not)."""
    chains: set[str] = set()
    for rule in rules_of(network):
        target = _jump_target(rule)
        if target and target.startswith("CNI-DN-"):
            chains.add(target)
        _delete_rule(rule)
    for chain in sorted(chains):
        _iptables("-t", "nat", "-F", chain, check=False)
        _iptables("-t", "nat", "-X", chain, check=False)


def remove_shared_chains_if_unused() -> bool:
    """Remove portmap's shared chains and their jumps when no pod on the host maps a port and no
    other test bridge exists; portmap recreates them on its next ADD."""
    rules = nat_rules()
    if any(r.startswith(f"-A {PORTMAP_DNAT_CHAIN} ") for r in rules) or all_test_bridges():
        return False
    for rule in rules:
        if _jump_target(rule) in PORTMAP_SHARED_CHAINS and rule.split()[1] not in (
            PORTMAP_SHARED_CHAINS
        ):
            _delete_rule(rule)
    existing = _iptables("-t", "nat", "-S", check=False).stdout.split("\n")
    for chain in PORTMAP_SHARED_CHAINS:
        if f"-N {chain}" in existing:
            _iptables("-t", "nat", "-F", chain, check=False)
            _iptables("-t", "nat", "-X", chain, check=False)
    return True


# --- teardown ---------------------------------------------------------------------------------


def cache_files(network: TestNetwork, sandbox_ids: Iterable[str] = ()) -> list[Path]:
    """libcni's cached results of this network, and the loopback ones of these sandboxes."""
    try:
        names = os.listdir(CNI_RESULTS_DIR)
    except OSError:
        return []
    prefixes = (f"{network.name}-",) + tuple(f"cni-loopback-{sid}-" for sid in sandbox_ids)
    return [CNI_RESULTS_DIR / n for n in sorted(names) if n.startswith(prefixes)]


def release(network: TestNetwork, sandbox_ids: Iterable[str] = ()) -> list[str]:
    """Delete the network's iptables rules, cache files and bridge; returns what stayed."""
    remove_rules(network)
    for path in cache_files(network, sandbox_ids):
        path.unlink(missing_ok=True)
    _ip("link", "del", network.bridge, check=False)
    remove_shared_chains_if_unused()
    problems = []
    if network.bridge in all_test_bridges():
        problems.append(f"bridge {network.bridge} still exists")
    problems += [f"iptables rule {r}" for r in rules_of(network)]
    return problems
